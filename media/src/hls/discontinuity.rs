//! `#EXT-X-DISCONTINUITY` where a publisher reconnected (RFC 8216 §4.3.2.3): hlssink2 does not
//! write it, so the segments that start after a reconnect are remembered here and the tag is
//! added to each media playlist on its way to the store, with `#EXT-X-DISCONTINUITY-SEQUENCE`
//! counting those that left the live window (§4.3.3.3).
//!
//! Which segment: the one the segmenter opens at the new source's first keyframe. Segments
//! opened before it (one may hold the old source's last frames, flushed when that keyframe
//! arrives) are not marked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// One rendition's reconnect marks.
#[derive(Debug, Default)]
pub struct Marks {
    /// A reconnect happened; the new source's first keyframe has not reached the segmenter.
    armed: AtomicBool,
    /// Running time (ns) of that keyframe, until the segment starting there opens.
    starts_at: Mutex<Option<u64>>,
    /// The segment hlssink2 asked a stream for last: the one it opens next.
    requested: Mutex<String>,
    /// Segment names (basenames) that start after a reconnect, oldest first.
    marked: Mutex<Vec<String>>,
}

/// Marked segments kept; older ones only count toward the discontinuity sequence.
const MAX_MARKS: usize = 256;
/// Running times of a keyframe and of the segment it starts may differ by rounding.
const TOLERANCE_NS: u64 = 1_000_000;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Marks {
    /// The publisher reconnected; its first keyframe is on its way.
    pub fn reconnected(&self) {
        self.armed.store(true, Ordering::Relaxed);
    }

    /// A keyframe at `running_time` reaches the segmenter: true if it is the new source's
    /// first, where a segment must start (the caller asks the segmenter to split there).
    pub fn keyframe_arrives(&self, running_time: u64) -> bool {
        if self.armed.swap(false, Ordering::Relaxed) {
            *lock(&self.starts_at) = Some(running_time);
            return true;
        }
        false
    }

    /// hlssink2 asks for the stream of segment `name`, which it opens next.
    pub fn segment_requested(&self, name: &str) {
        let mut r = lock(&self.requested);
        r.clear();
        r.push_str(name);
    }

    /// The segmenter opened the requested segment, starting at `running_time`
    /// ("splitmuxsink-fragment-opened"): marked if it starts at the new source's first keyframe.
    pub fn segment_opened(&self, running_time: u64) {
        let mut starts_at = lock(&self.starts_at);
        if starts_at.is_some_and(|t| running_time + TOLERANCE_NS >= t) {
            *starts_at = None;
            let name = lock(&self.requested).clone();
            let mut m = lock(&self.marked);
            m.push(name);
            if m.len() > MAX_MARKS {
                m.remove(0);
            }
        }
    }

    pub fn apply(&self, playlist: &str) -> String {
        mark(playlist, &lock(&self.marked))
    }
}

/// `playlist` with the tag before each segment in `marked` and the discontinuity sequence.
/// Segment names sort in the order they were written.
pub fn mark(playlist: &str, marked: &[String]) -> String {
    if marked.is_empty() {
        return playlist.to_owned();
    }
    let lines: Vec<&str> = playlist.lines().collect();
    let first_segment = lines.iter().find(|l| !l.is_empty() && !l.starts_with('#'));
    let gone = first_segment.map_or(0, |first| {
        marked.iter().filter(|m| m.as_str() < *first).count()
    });
    let mut out = String::with_capacity(playlist.len() + 64);
    for (i, line) in lines.iter().enumerate() {
        // The #EXTINF line belongs to the URI line after it.
        let starts_marked_segment = line.starts_with("#EXTINF")
            && lines
                .get(i + 1)
                .is_some_and(|uri| marked.iter().any(|m| m == uri));
        if starts_marked_segment {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        out.push_str(line);
        out.push('\n');
        if line.starts_with("#EXT-X-MEDIA-SEQUENCE:") && gone > 0 {
            out.push_str(&format!("#EXT-X-DISCONTINUITY-SEQUENCE:{gone}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAYLIST: &str = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-MEDIA-SEQUENCE:3\n#EXT-X-TARGETDURATION:2\n\n#EXTINF:2,\nseg-1-00003.ts\n#EXTINF:1.2,\nseg-1-00004.ts\n#EXTINF:2,\nseg-1-00005.ts\n";

    #[test]
    fn tag_before_the_segment_that_starts_with_the_new_source() {
        let marks = Marks::default();
        let open = |name: &str, at: u64| {
            marks.segment_requested(name);
            marks.segment_opened(at);
        };
        open("seg-1-00003.ts", 6_000_000_000); // no reconnect yet
        marks.reconnected();
        assert!(marks.keyframe_arrives(8_000_000_000));
        assert!(
            !marks.keyframe_arrives(10_000_000_000),
            "only the first keyframe"
        );
        // The old source's last frames, flushed when the new keyframe arrived.
        open("seg-1-00004.ts", 7_600_000_000);
        open("seg-1-00005.ts", 8_000_000_000);
        let p = marks.apply(PLAYLIST);
        assert!(
            p.contains("seg-1-00004.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:2,\nseg-1-00005.ts\n"),
            "{p}"
        );
        assert_eq!(p.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
        assert!(!p.contains("DISCONTINUITY-SEQUENCE"));
    }

    #[test]
    fn marks_that_left_the_window_count_in_the_sequence() {
        let p = mark(
            PLAYLIST,
            &["seg-1-00001.ts".into(), "seg-1-00004.ts".into()],
        );
        assert!(
            p.contains("#EXT-X-MEDIA-SEQUENCE:3\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n"),
            "{p}"
        );
        assert!(
            p.contains("#EXT-X-DISCONTINUITY\n#EXTINF:1.2,\nseg-1-00004.ts"),
            "{p}"
        );
        assert_eq!(mark(PLAYLIST, &[]), PLAYLIST);
    }
}
