//! One rendition's media playlist as data: its segments, the parts of the recent ones and of the
//! segment being cut, discontinuities, program date-times and initialization segments. The
//! segmenter writes it; it renders the standard playlist (stored for CDNs) and the Low-Latency
//! one (served by glint, RFC 8216bis §4.4.3.7–4.4.3.8 and §4.4.5), and decides blocking playlist
//! reloads (§6.2.5.2) without a clock: the HTTP side waits, this says whether the wait is over.
//!
//! Object names: segment `<prefix><msn:05>.m4s`, its parts `<prefix><msn:05>.<n>.m4s`,
//! initialization segments `<prefix>init<k>.mp4`, where `<prefix>` is `seg-<epoch>-`, unique per
//! broadcast (everything is cached as immutable).

use std::collections::VecDeque;
use std::fmt::Write;

use bytes::Bytes;

/// Parts are listed for segments this many target durations from the end (RFC 8216bis
/// §4.4.3.8: a server should drop them beyond three); their bytes stay one segment longer.
const PART_HORIZON_TARGETS: f64 = 3.0;

/// A partial segment: one fMP4 chunk (moof + mdat).
#[derive(Debug, Clone)]
pub struct Part {
    pub duration: f64,
    /// Starts with a keyframe.
    pub independent: bool,
    pub bytes: Bytes,
}

/// A segment: its parts in order; the segment's bytes are their concatenation.
#[derive(Debug, Clone)]
pub struct Segment {
    pub msn: u64,
    pub duration: f64,
    /// Starts after a publisher reconnect (`#EXT-X-DISCONTINUITY`).
    pub discontinuity: bool,
    /// Wall-clock time of its first frame, Unix ms.
    pub date_ms: u64,
    /// Its initialization segment's index (`init<k>.mp4`).
    pub init: u32,
    /// Kept while the segment is recent (listed with parts, served from memory); emptied after.
    pub parts: Vec<Part>,
}

impl Segment {
    pub fn bytes_len(&self) -> usize {
        self.parts.iter().map(|p| p.bytes.len()).sum()
    }
}

/// What a blocking playlist reload request is answered with (RFC 8216bis §6.2.5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The playlist has what was asked for (or more): answer now.
    Ready,
    /// Not yet: hold the request.
    Wait,
    /// Further ahead than the spec lets a client ask: 400.
    TooFar,
}

/// Where the rendition's latest part is: for other renditions' `#EXT-X-RENDITION-REPORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastPart {
    pub msn: u64,
    pub part: u64,
}

#[derive(Debug)]
pub struct Playlist {
    /// `seg-<epoch>-`.
    prefix: String,
    /// `#EXT-X-TARGETDURATION` (whole seconds).
    pub target_duration: u32,
    /// `#EXT-X-PART-INF:PART-TARGET`, seconds.
    pub part_target: f64,
    /// Segments listed in the live playlist.
    window: usize,
    /// Complete segments, oldest first; the last `window` are listed.
    segments: VecDeque<Segment>,
    /// The segment being cut: its parts so far.
    open: Option<Segment>,
    /// Discontinuities of segments that left the window (`#EXT-X-DISCONTINUITY-SEQUENCE`).
    discontinuity_sequence: u64,
    /// Initialization segments by index; the newest is what new segments use.
    inits: Vec<Bytes>,
    /// The stream ended: `#EXT-X-ENDLIST`.
    pub ended: bool,
}

impl Playlist {
    pub fn new(prefix: String, target_duration: u32, part_target: f64, window: usize) -> Self {
        Self {
            prefix,
            target_duration: target_duration.max(1),
            part_target,
            window: window.max(1),
            segments: VecDeque::new(),
            open: None,
            discontinuity_sequence: 0,
            inits: Vec::new(),
            ended: false,
        }
    }

    pub fn segment_name(&self, msn: u64) -> String {
        format!("{}{msn:05}.m4s", self.prefix)
    }

    pub fn part_name(&self, msn: u64, part: usize) -> String {
        format!("{}{msn:05}.{part}.m4s", self.prefix)
    }

    pub fn init_name(&self, index: u32) -> String {
        format!("{}init{index}.mp4", self.prefix)
    }

    /// A new initialization segment (codec configuration changed); the next segment opened
    /// uses it. Its index.
    pub fn add_init(&mut self, bytes: Bytes) -> u32 {
        self.inits.push(bytes);
        (self.inits.len() - 1) as u32
    }

    pub fn has_init(&self) -> bool {
        !self.inits.is_empty()
    }

    fn current_init(&self) -> u32 {
        self.inits.len().saturating_sub(1) as u32
    }

    /// The next segment's media sequence number.
    fn next_msn(&self) -> u64 {
        match (&self.open, self.segments.back()) {
            (Some(o), _) => o.msn + 1,
            (None, Some(s)) => s.msn + 1,
            (None, None) => 0,
        }
    }

    /// A segment starts (the previous one must have been closed).
    pub fn open_segment(&mut self, discontinuity: bool, date_ms: u64) {
        debug_assert!(self.open.is_none());
        self.open = Some(Segment {
            msn: self.next_msn(),
            duration: 0.0,
            discontinuity,
            date_ms,
            init: self.current_init(),
            parts: Vec::new(),
        });
    }

    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// A part of the open segment is complete. Its name.
    pub fn push_part(&mut self, part: Part) -> Option<String> {
        let open = self.open.as_mut()?;
        open.duration += part.duration;
        open.parts.push(part);
        let (msn, n) = (open.msn, open.parts.len() - 1);
        Some(self.part_name(msn, n))
    }

    /// The open segment is complete: listed from now on. Returns it (its name is
    /// [`Playlist::segment_name`] of its msn) and the segments that left the window.
    pub fn close_segment(&mut self) -> Option<(&Segment, Vec<Segment>)> {
        let seg = self.open.take().filter(|s| !s.parts.is_empty())?;
        self.segments.push_back(seg);
        let mut gone = Vec::new();
        // Two beyond the window stay a little (a player that just read the previous playlist
        // may still ask for them), as hlssink2's max-files did.
        while self.segments.len() > self.window + 2 {
            if let Some(s) = self.segments.pop_front() {
                gone.push(s);
            }
        }
        for s in &gone {
            if s.discontinuity {
                self.discontinuity_sequence += 1;
            }
        }
        // Parts (and their bytes) only for the recent segments.
        let horizon = PART_HORIZON_TARGETS * self.target_duration as f64;
        let mut from_end = 0.0;
        for s in self.segments.iter_mut().rev() {
            if from_end > horizon + self.target_duration as f64 {
                if s.parts.is_empty() {
                    break;
                }
                s.parts = Vec::new();
            }
            from_end += s.duration;
        }
        self.segments.back().map(|s| (s, gone))
    }

    /// Segments listed in the live playlist (the window), oldest first.
    fn listed(&self) -> impl Iterator<Item = &Segment> {
        let skip = self.segments.len().saturating_sub(self.window);
        self.segments.iter().skip(skip)
    }

    /// The first listed segment's discontinuity sequence: those that left the window, and the
    /// kept-but-unlisted ones before the window.
    fn discontinuity_sequence(&self) -> u64 {
        let skip = self.segments.len().saturating_sub(self.window);
        self.discontinuity_sequence
            + self
                .segments
                .iter()
                .take(skip)
                .filter(|s| s.discontinuity)
                .count() as u64
    }

    pub fn segment(&self, msn: u64) -> Option<&Segment> {
        let first = self.segments.front()?.msn;
        let s = self.segments.get(msn.checked_sub(first)? as usize)?;
        Some(s).filter(|s| !s.parts.is_empty())
    }

    /// A part's bytes, from a recent or the open segment.
    pub fn part(&self, msn: u64, part: usize) -> Option<&Bytes> {
        let s = match &self.open {
            Some(o) if o.msn == msn => o,
            _ => self.segment(msn)?,
        };
        s.parts.get(part).map(|p| &p.bytes)
    }

    pub fn init(&self, index: u32) -> Option<&Bytes> {
        self.inits.get(index as usize)
    }

    /// The part a client may ask for before it exists (`#EXT-X-PRELOAD-HINT`).
    pub fn next_part(&self) -> (u64, usize) {
        match &self.open {
            Some(o) => (o.msn, o.parts.len()),
            None => (self.next_msn(), 0),
        }
    }

    pub fn last_part(&self) -> Option<LastPart> {
        match (&self.open, self.segments.back()) {
            (Some(o), _) if !o.parts.is_empty() => Some(LastPart {
                msn: o.msn,
                part: o.parts.len() as u64 - 1,
            }),
            (_, Some(s)) if !s.parts.is_empty() => Some(LastPart {
                msn: s.msn,
                part: s.parts.len() as u64 - 1,
            }),
            _ => None,
        }
    }

    /// Something to play: a part (LL-HLS players) or a segment (the others).
    pub fn has_media(&self) -> bool {
        self.last_part().is_some() || !self.segments.is_empty()
    }

    pub fn has_segment(&self) -> bool {
        !self.segments.is_empty()
    }

    /// §6.2.5.2: may a request for `_HLS_msn=msn` (and `_HLS_part=part`) be answered now?
    pub fn reload(&self, msn: u64, part: Option<u64>) -> Reload {
        if self.ended {
            return Reload::Ready;
        }
        let last_complete = self.segments.back().map(|s| s.msn);
        let done = |m: u64| last_complete.is_some_and(|l| l >= m);
        let ready = match part {
            None => done(msn),
            Some(p) => {
                if done(msn.saturating_add(1)) {
                    true
                } else if let Some(s) = self.segments.back().filter(|s| s.msn == msn) {
                    // Part p of a complete segment, or "later": the next segment's first part.
                    (p as usize) < s.parts.len().max(1)
                        || self.open.as_ref().is_some_and(|o| !o.parts.is_empty())
                } else {
                    self.open
                        .as_ref()
                        .is_some_and(|o| o.msn == msn && o.parts.len() as u64 > p)
                }
            }
        };
        if ready {
            return Reload::Ready;
        }
        // "Too far": beyond the last segment plus two, or beyond the last part by the
        // Advance Part Limit (three divided by the part target when it is under a second).
        let last = self.last_part().unwrap_or(LastPart { msn: 0, part: 0 });
        if msn > last.msn + 2 {
            return Reload::TooFar;
        }
        if let Some(p) = part {
            let per_segment = (self.target_duration as f64 / self.part_target).ceil() as u64;
            let limit = if self.part_target < 1.0 {
                (3.0 / self.part_target) as u64
            } else {
                3
            };
            let ahead = (msn - last.msn.min(msn)) * per_segment + p;
            if ahead > last.part + limit {
                return Reload::TooFar;
            }
        }
        Reload::Wait
    }

    fn header(&self, out: &mut String, version: u32) {
        let first = self.listed().next().map_or(self.next_msn(), |s| s.msn);
        let _ = write!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:{version}\n#EXT-X-TARGETDURATION:{}\n",
            self.target_duration
        );
        let _ = write!(
            out,
            "#EXT-X-MEDIA-SEQUENCE:{first}\n#EXT-X-DISCONTINUITY-SEQUENCE:{}\n",
            self.discontinuity_sequence()
        );
    }

    /// `#EXT-X-DISCONTINUITY`, `#EXT-X-MAP` (first segment or a new init) and
    /// `#EXT-X-PROGRAM-DATE-TIME` before a segment.
    fn segment_tags(&self, out: &mut String, s: &Segment, map: &mut Option<u32>) {
        if s.discontinuity && map.is_some() {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if *map != Some(s.init) {
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", self.init_name(s.init));
            *map = Some(s.init);
        }
        out.push_str("#EXT-X-PROGRAM-DATE-TIME:");
        push_date(out, s.date_ms);
        out.push('\n');
    }

    /// The standard playlist: whole segments only (what the store keeps for CDNs).
    pub fn render_standard(&self) -> String {
        let mut out = String::with_capacity(1024);
        self.header(&mut out, 6);
        let mut map = None;
        for s in self.listed() {
            self.segment_tags(&mut out, s, &mut map);
            let _ = write!(
                out,
                "#EXTINF:{:.5},\n{}\n",
                s.duration,
                self.segment_name(s.msn)
            );
        }
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }

    /// The Low-Latency playlist: parts of the recent segments and of the open one, the
    /// preload hint, and `reports` (other renditions' URIs and last parts).
    pub fn render_low_latency(&self, reports: &[(String, LastPart)]) -> String {
        let mut out = String::with_capacity(4096);
        // Version 6 as the standard one: nothing here needs more (only EXT-X-SKIP needs 9), and
        // a player that knows no LL-HLS reads this playlist as a standard one.
        self.header(&mut out, 6);
        let part_hold_back = 3.0 * self.part_target;
        let _ = write!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={part_hold_back:.3}\n#EXT-X-PART-INF:PART-TARGET={:.3}\n",
            self.part_target
        );
        let mut map = None;
        // Parts of segments within three target durations of the end (§4.4.3.8).
        let horizon = PART_HORIZON_TARGETS * self.target_duration as f64;
        let mut from_end: f64 = self.open.as_ref().map_or(0.0, |o| o.duration)
            + self.listed().map(|s| s.duration).sum::<f64>();
        for s in self.listed() {
            from_end -= s.duration;
            self.segment_tags(&mut out, s, &mut map);
            if from_end < horizon {
                self.parts(&mut out, s);
            }
            let _ = write!(
                out,
                "#EXTINF:{:.5},\n{}\n",
                s.duration,
                self.segment_name(s.msn)
            );
        }
        if let Some(o) = &self.open {
            if !o.parts.is_empty() {
                self.segment_tags(&mut out, o, &mut map);
                self.parts(&mut out, o);
            }
        }
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        } else {
            let (msn, n) = self.next_part();
            let _ = writeln!(
                out,
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
                self.part_name(msn, n)
            );
        }
        for (uri, last) in reports {
            let _ = writeln!(
                out,
                "#EXT-X-RENDITION-REPORT:URI=\"{uri}\",LAST-MSN={},LAST-PART={}",
                last.msn, last.part
            );
        }
        out
    }

    fn parts(&self, out: &mut String, s: &Segment) {
        for (n, p) in s.parts.iter().enumerate() {
            let _ = writeln!(
                out,
                "#EXT-X-PART:DURATION={:.5},URI=\"{}\"{}",
                p.duration,
                self.part_name(s.msn, n),
                if p.independent {
                    ",INDEPENDENT=YES"
                } else {
                    ""
                }
            );
        }
    }
}

/// What a name under a rendition's folder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    Segment(u64),
    Part(u64, usize),
    Init(u32),
}

impl Name {
    /// `seg-<epoch>-00005.m4s`, `seg-<epoch>-00005.2.m4s`, `seg-<epoch>-init0.mp4`, of the
    /// broadcast whose prefix is `prefix`.
    pub fn parse(prefix: &str, name: &str) -> Option<Name> {
        let rest = name.strip_prefix(prefix)?;
        if let Some(k) = rest
            .strip_prefix("init")
            .and_then(|r| r.strip_suffix(".mp4"))
        {
            return k.parse().ok().map(Name::Init);
        }
        let stem = rest.strip_suffix(".m4s")?;
        match stem.split_once('.') {
            Some((msn, part)) => Some(Name::Part(msn.parse().ok()?, part.parse().ok()?)),
            None => stem.parse().ok().map(Name::Segment),
        }
    }
}

/// RFC 3339 UTC with milliseconds (`2026-12-01T15:30:00.123Z`).
fn push_date(out: &mut String, unix_ms: u64) {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    );
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(d: f64, independent: bool) -> Part {
        Part {
            duration: d,
            independent,
            bytes: Bytes::from_static(b"moof"),
        }
    }

    /// `segments` complete 2 s segments of six 1/3 s parts, then `open_parts` parts.
    fn playlist(segments: u64, open_parts: usize) -> Playlist {
        let mut p = Playlist::new("seg-7-".into(), 2, 0.334, 6);
        p.add_init(Bytes::from_static(b"init"));
        for s in 0..segments {
            p.open_segment(s == 3, 1_764_600_000_000 + s * 2000);
            for n in 0..6 {
                p.push_part(part(1.0 / 3.0, n == 0));
            }
            p.close_segment();
        }
        if open_parts > 0 {
            p.open_segment(false, 1_764_600_000_000 + segments * 2000);
            for n in 0..open_parts {
                p.push_part(part(1.0 / 3.0, n == 0));
            }
        }
        p
    }

    #[test]
    fn dates_are_rfc3339() {
        let mut s = String::new();
        push_date(&mut s, 1_764_603_000_123);
        assert_eq!(s, "2025-12-01T15:30:00.123Z");
        s.clear();
        push_date(&mut s, 951_782_400_000); // a leap day
        assert_eq!(s, "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn the_standard_playlist_lists_whole_segments() {
        let p = playlist(3, 2);
        let text = p.render_standard();
        assert!(
            text.starts_with(
                "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
            ),
            "{text}"
        );
        assert_eq!(text.matches("#EXTINF:2.00000,\n").count(), 3);
        assert_eq!(
            text.matches("#EXT-X-MAP:URI=\"seg-7-init0.mp4\"").count(),
            1
        );
        assert!(!text.contains("#EXT-X-PART"));
        assert!(text.ends_with("seg-7-00002.m4s\n"));
        assert!(!text.contains("ENDLIST"));
    }

    #[test]
    fn the_low_latency_playlist_lists_parts_and_a_preload_hint() {
        let p = playlist(3, 2);
        let report = LastPart { msn: 3, part: 1 };
        let text = p.render_low_latency(&[("../360p/index.m3u8".into(), report)]);
        assert!(text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.002\n#EXT-X-PART-INF:PART-TARGET=0.334\n"), "{text}");
        assert!(text.contains("#EXT-X-PART:DURATION=0.33333,URI=\"seg-7-00003.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.33333,URI=\"seg-7-00003.1.m4s\"\n"), "{text}");
        assert!(text.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg-7-00003.2.m4s\"\n"));
        assert!(text.ends_with(
            "#EXT-X-RENDITION-REPORT:URI=\"../360p/index.m3u8\",LAST-MSN=3,LAST-PART=1\n"
        ));
        // The open segment's date comes before its parts.
        let open = text.find("seg-7-00003.0.m4s").unwrap();
        assert!(text[..open].ends_with("#EXT-X-PROGRAM-DATE-TIME:2025-12-01T14:40:06.000Z\n#EXT-X-PART:DURATION=0.33333,URI=\""), "{text}");
    }

    #[test]
    fn parts_are_listed_for_recent_segments_only() {
        let p = playlist(8, 1);
        let text = p.render_low_latency(&[]);
        // Window of six (2..=7); parts kept for ~4 target durations back.
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:2\n"));
        assert!(!text.contains("seg-7-00004.5.m4s"), "{text}");
        assert!(text.contains("seg-7-00005.0.m4s"));
        assert!(text.contains("seg-7-00007.5.m4s"));
        assert!(p.part(2, 0).is_none() && p.part(7, 5).is_some() && p.part(8, 0).is_some());
        assert!(p.segment(7).is_some() && p.segment(1).is_none());
    }

    #[test]
    fn discontinuities_are_tagged_and_counted_when_they_leave() {
        let p = playlist(3, 0);
        let text = p.render_standard();
        assert!(
            !text.contains("#EXT-X-DISCONTINUITY\n"),
            "segment 3 not yet there: {text}"
        );
        let p = playlist(6, 0);
        let text = p.render_standard();
        assert!(text.contains("#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2025-12-01T14:40:06.000Z\n#EXTINF:2.00000,\nseg-7-00003.m4s\n"), "{text}");
        assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:0\n"));
        let p = playlist(11, 0);
        let text = p.render_standard();
        assert!(
            text.contains("#EXT-X-MEDIA-SEQUENCE:5\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n"),
            "{text}"
        );
        assert!(!text.contains("#EXT-X-DISCONTINUITY\n"));
    }

    #[test]
    fn blocking_reloads_wait_for_the_part_asked_for() {
        let p = playlist(3, 2);
        // Have: segments 0-2, parts 0-1 of segment 3.
        assert_eq!(p.reload(2, None), Reload::Ready);
        assert_eq!(p.reload(3, None), Reload::Wait);
        assert_eq!(p.reload(3, Some(1)), Reload::Ready);
        assert_eq!(p.reload(3, Some(2)), Reload::Wait);
        assert_eq!(p.reload(2, Some(9)), Reload::Ready, "later parts exist");
        assert_eq!(p.reload(4, Some(0)), Reload::Wait);
        assert_eq!(
            p.reload(6, Some(0)),
            Reload::TooFar,
            "beyond the last msn + 2"
        );
        assert_eq!(
            p.reload(3, Some(20)),
            Reload::TooFar,
            "beyond the advance part limit"
        );
        assert_eq!(p.reload(5, None), Reload::Wait);
        let closed = playlist(4, 0);
        assert_eq!(
            closed.reload(3, Some(6)),
            Reload::Wait,
            "next segment's first part"
        );
        assert_eq!(closed.reload(4, Some(0)), Reload::Wait);
        let mut ended = playlist(4, 0);
        ended.ended = true;
        assert_eq!(ended.reload(5, Some(0)), Reload::Ready);
    }

    #[test]
    fn names_read_back() {
        let p = playlist(0, 0);
        for n in [Name::Segment(12), Name::Part(12, 3), Name::Init(1)] {
            let name = match n {
                Name::Segment(m) => p.segment_name(m),
                Name::Part(m, k) => p.part_name(m, k),
                Name::Init(k) => p.init_name(k),
            };
            assert_eq!(Name::parse("seg-7-", &name), Some(n), "{name}");
        }
        assert_eq!(Name::parse("seg-7-", "seg-8-00001.m4s"), None);
        assert_eq!(Name::parse("seg-7-", "seg-7-x.m4s"), None);
        assert_eq!(Name::parse("seg-7-", "seg-7-00001.ts"), None);
    }
}
