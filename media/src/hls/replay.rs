//! Replays: when a stream ends, its broadcast stays watchable as video on demand.
//!
//! While live, each rendition's [`Recording`] reads every media playlist hlssink2 writes and
//! keeps each segment it lists (name, duration, discontinuity), so segments that slide out of
//! the live window are still known. With replays on, those segments are not deleted; when the
//! stream ends, a VOD playlist per rendition and a master playlist are written under
//! `<stream>/videos/<epoch>/`, pointing at the live segments (`../../<rendition>/seg-<epoch>-N.ts`).
//! The platform stores a [`Replay`] record and, when it expires, [`Replays::delete`] removes its
//! objects by prefix.

use std::collections::HashSet;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use super::store::SegmentStore;

/// A finished broadcast kept as a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    pub stream: String,
    /// Unix time in milliseconds when its HLS started; names its segments and its folder.
    pub epoch: u64,
    pub ended_at_ms: u64,
    /// Sum of the segment durations.
    pub duration_ms: u64,
    /// Rendition names (`source`, `720p`, ...).
    pub renditions: Vec<String>,
}

impl Replay {
    /// Its folder, relative to the HLS root.
    pub fn dir(stream: &str, epoch: u64) -> String {
        format!("{stream}/videos/{epoch}")
    }

    /// Its master playlist, relative to the HLS root.
    pub fn master_path(&self) -> String {
        format!("{}/master.m3u8", Self::dir(&self.stream, self.epoch))
    }

    /// Its last thumbnail, relative to the HLS root.
    pub fn thumbnail_path(&self) -> String {
        format!("{}/thumb.jpg", Self::dir(&self.stream, self.epoch))
    }

    /// Object prefixes that hold everything of this replay.
    pub fn prefixes(&self) -> Vec<String> {
        prefixes(&self.stream, self.epoch, &self.renditions)
    }
}

/// Object prefixes of the broadcast of `stream` that started at `epoch`: its segments in each
/// rendition's folder, and its VOD folder.
fn prefixes(stream: &str, epoch: u64, renditions: &[String]) -> Vec<String> {
    let mut p: Vec<String> = renditions
        .iter()
        .map(|r| format!("{stream}/{r}/{}", segment_prefix(epoch)))
        .collect();
    p.push(format!("{}/", Replay::dir(stream, epoch)));
    p
}

/// Segment names of the broadcast that started at `epoch`: `seg-<epoch>-00000.ts`, ...
pub fn segment_prefix(epoch: u64) -> String {
    format!("seg-{epoch}-")
}

/// Deletes replays from the store.
#[derive(Clone)]
pub struct Replays {
    pub(crate) store: Arc<dyn SegmentStore>,
}

impl Replays {
    /// Delete every object of the broadcast of `stream` that started at `epoch`; an error
    /// leaves it for the next try.
    pub async fn delete(
        &self,
        stream: &str,
        epoch: u64,
        renditions: &[String],
    ) -> Result<(), String> {
        for prefix in prefixes(stream, epoch, renditions) {
            self.store.delete_prefix(&prefix).await?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    uri: String,
    seconds: f64,
    discontinuity: bool,
}

/// Every segment one rendition's live playlists listed, in order.
#[derive(Debug, Default)]
pub struct Recording {
    entries: Mutex<(Vec<Entry>, HashSet<String>)>,
}

/// A broadcast keeps at most this many segments per rendition (2 s segments: 2.3 days).
const MAX_SEGMENTS: usize = 100_000;

impl Recording {
    /// A media playlist as it goes to the store: remember the segments not seen before.
    pub fn observe(&self, playlist: &str) {
        let mut guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (entries, seen) = &mut *guard;
        let mut discontinuity = false;
        let mut seconds = None;
        for line in playlist.lines().map(str::trim) {
            if line == "#EXT-X-DISCONTINUITY" {
                discontinuity = true;
            } else if let Some(inf) = line.strip_prefix("#EXTINF:") {
                seconds = inf.split(',').next().and_then(|s| s.trim().parse().ok());
            } else if !line.is_empty() && !line.starts_with('#') {
                if let Some(s) = seconds.take() {
                    if entries.len() < MAX_SEGMENTS && seen.insert(line.to_owned()) {
                        entries.push(Entry {
                            uri: line.to_owned(),
                            seconds: s,
                            discontinuity,
                        });
                    }
                }
                discontinuity = false;
            }
        }
    }

    pub fn segments(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .len()
    }

    pub fn duration_ms(&self) -> u64 {
        let guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        (guard.0.iter().map(|e| e.seconds).sum::<f64>() * 1000.0).round() as u64
    }

    /// The VOD media playlist; segment URIs get `uri_prefix` in front.
    pub fn vod_playlist(&self, uri_prefix: &str) -> String {
        let guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entries = &guard.0;
        let target = entries
            .iter()
            .map(|e| e.seconds.ceil() as u64)
            .max()
            .unwrap_or(1)
            .max(1);
        let mut p = format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:0\n"
        );
        for e in entries {
            if e.discontinuity {
                p.push_str("#EXT-X-DISCONTINUITY\n");
            }
            let _ = writeln!(p, "#EXTINF:{:.3},\n{uri_prefix}{}", e.seconds, e.uri);
        }
        p.push_str("#EXT-X-ENDLIST\n");
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(first: u32, n: u32, marked: Option<u32>) -> String {
        let mut p = format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-MEDIA-SEQUENCE:{first}\n#EXT-X-TARGETDURATION:2\n\n"
        );
        for i in first..first + n {
            if marked == Some(i) {
                p.push_str("#EXT-X-DISCONTINUITY\n");
            }
            p += &format!("#EXTINF:2.0000000000000000,\nseg-7-{i:05}.ts\n");
        }
        p
    }

    #[test]
    fn keeps_segments_that_left_the_live_window() {
        let r = Recording::default();
        for first in 0..10 {
            r.observe(&live(first, 3, Some(5)));
        }
        assert_eq!(r.segments(), 12);
        assert_eq!(r.duration_ms(), 24_000);
        let vod = r.vod_playlist("../../720p/");
        assert!(vod.starts_with("#EXTM3U\n"));
        assert!(vod.contains("#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-TARGETDURATION:2\n"));
        assert!(vod.contains("#EXTINF:2.000,\n../../720p/seg-7-00000.ts\n"));
        assert!(vod.contains("#EXT-X-DISCONTINUITY\n#EXTINF:2.000,\n../../720p/seg-7-00005.ts\n"));
        assert_eq!(vod.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
        assert!(vod.ends_with("../../720p/seg-7-00011.ts\n#EXT-X-ENDLIST\n"));
    }

    #[test]
    fn garbage_and_empty_playlists_add_nothing() {
        let r = Recording::default();
        r.observe("");
        r.observe("not a playlist\n#EXTINF:abc,\nx.ts\n");
        assert_eq!(r.segments(), 0);
        assert!(r.vod_playlist("").contains("#EXT-X-TARGETDURATION:1\n"));
    }

    #[test]
    fn a_replay_names_its_objects() {
        let r = Replay {
            stream: "demo".into(),
            epoch: 17,
            ended_at_ms: 0,
            duration_ms: 0,
            renditions: vec!["source".into(), "360p".into()],
        };
        assert_eq!(r.master_path(), "demo/videos/17/master.m3u8");
        assert_eq!(
            r.prefixes(),
            [
                "demo/source/seg-17-",
                "demo/360p/seg-17-",
                "demo/videos/17/"
            ]
        );
    }
}
