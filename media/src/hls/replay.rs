//! Replays: when a stream ends, its broadcast stays watchable as video on demand.
//!
//! While live, each rendition's packager tells its [`Recording`] of every segment it lists
//! (name, duration, discontinuity, initialization segment), so segments that slide out of the
//! live window are still known. With replays on, those segments are not deleted; when the
//! stream ends, a VOD playlist per rendition and a master playlist are written under
//! `<stream>/videos/<epoch>/`, pointing at the live segments (`../../<rendition>/seg-<epoch>-N.m4s`, and their `seg-<epoch>-init<k>.mp4`).
//! The platform stores a [`Replay`] record and, when it expires, [`Replays::delete`] removes its
//! objects by prefix.
//!
//! A broadcast keeps at most [`ReplayBudget`]'s bytes of segments (all renditions together):
//! once a segment would go over, it and every later one are not kept (they are deleted as they
//! leave the live window, as with replays off), so the replay is the broadcast's beginning and
//! live HLS goes on. At start the platform looks for broadcasts whose objects are in the store
//! but that have no replay record (the server died mid-broadcast, or before recording it):
//! [`Replays::stored`] lists them, [`Replays::delete`] removes them.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::store::{SegmentStore, StoreError};
use crate::metrics::Metrics;

/// Bytes of segments one broadcast keeps for its replay, by default: 32 GB, about 10 hours of
/// a 720p source at 4.5 Mbit/s with the default ladder (480p and 360p re-encoded, ~3 GB/hour).
pub const DEFAULT_MAX_BYTES: u64 = 32_000_000_000;

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

/// Object names of the broadcast that started at `epoch`: `seg-<epoch>-00000.m4s`,
/// `seg-<epoch>-init0.mp4`, ... (`.ts` before fMP4).
pub fn segment_prefix(epoch: u64) -> String {
    format!("seg-{epoch}-")
}

/// Deletes replays from the store.
#[derive(Clone)]
pub struct Replays {
    pub(crate) store: Arc<dyn SegmentStore>,
}

impl Replays {
    /// Replays in `store` (the media core makes its own; tests give theirs).
    pub fn new(store: Arc<dyn SegmentStore>) -> Self {
        Self { store }
    }

    /// Delete every object of the broadcast of `stream` that started at `epoch`; an error
    /// leaves it for the next try.
    pub async fn delete(
        &self,
        stream: &str,
        epoch: u64,
        renditions: &[String],
    ) -> Result<(), StoreError> {
        for prefix in prefixes(stream, epoch, renditions) {
            self.store.delete_prefix(&prefix).await?;
        }
        Ok(())
    }

    /// Every broadcast that has segments or a VOD folder in the store.
    pub async fn stored(&self) -> Result<Vec<StoredBroadcast>, StoreError> {
        Ok(stored_broadcasts(&self.store.list("").await?))
    }
}

/// A broadcast with objects in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBroadcast {
    pub stream: String,
    pub epoch: u64,
    /// Renditions it has segments of.
    pub renditions: Vec<String>,
}

/// Group object paths by broadcast: `<stream>/<rendition>/seg-<epoch>-<n>.m4s` (or `.mp4`,
/// `.ts`) and
/// `<stream>/videos/<epoch>/<file>`; other objects (live playlists, thumbnails) are not part of
/// one.
pub fn stored_broadcasts(paths: &[String]) -> Vec<StoredBroadcast> {
    let mut found: BTreeMap<(String, u64), BTreeSet<String>> = BTreeMap::new();
    for path in paths {
        let parts: Vec<&str> = path.split('/').collect();
        match parts[..] {
            [stream, "videos", epoch, _] => {
                if let Ok(epoch) = epoch.parse() {
                    found.entry((stream.to_owned(), epoch)).or_default();
                }
            }
            [stream, rendition, file] => {
                let epoch = file
                    .strip_prefix("seg-")
                    .and_then(|f| f.split_once('-'))
                    .filter(|(_, rest)| [".m4s", ".mp4", ".ts"].iter().any(|e| rest.ends_with(e)))
                    .and_then(|(epoch, _)| epoch.parse().ok());
                if let Some(epoch) = epoch {
                    found
                        .entry((stream.to_owned(), epoch))
                        .or_default()
                        .insert(rendition.to_owned());
                }
            }
            _ => {}
        }
    }
    found
        .into_iter()
        .map(|((stream, epoch), renditions)| StoredBroadcast {
            stream,
            epoch,
            renditions: renditions.into_iter().collect(),
        })
        .collect()
}

/// How many bytes of segments one broadcast may keep, shared by its renditions.
#[derive(Debug)]
pub struct ReplayBudget {
    stream: String,
    max_bytes: u64,
    used_bytes: AtomicU64,
    full: AtomicBool,
    metrics: Arc<Metrics>,
}

impl ReplayBudget {
    pub fn new(stream: &str, max_bytes: u64, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            stream: stream.to_owned(),
            max_bytes,
            used_bytes: AtomicU64::new(0),
            full: AtomicBool::new(false),
            metrics,
        })
    }

    /// A segment of `bytes` was written: may it be kept? Once one is refused, every later one
    /// is (a replay is one unbroken stretch from the start).
    fn admit(&self, bytes: u64) -> bool {
        if !self.full.load(Ordering::Acquire) {
            let used = self.used_bytes.fetch_add(bytes, Ordering::AcqRel) + bytes;
            if used <= self.max_bytes {
                return true;
            }
            if !self.full.swap(true, Ordering::AcqRel) {
                tracing::warn!(stream = %self.stream, max_bytes = self.max_bytes, "broadcast reached its replay size cap: later segments are not kept (live HLS goes on)");
            }
        }
        Metrics::add(&self.metrics.hls_replay_segments_not_kept, 1);
        false
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    uri: String,
    seconds: f64,
    discontinuity: bool,
    /// Its initialization segment (`#EXT-X-MAP`).
    init: String,
}

#[derive(Debug, Default)]
struct Entries {
    /// Kept segments its playlists listed, in order.
    listed: Vec<Entry>,
    listed_names: HashSet<String>,
    /// Kept segments written but not listed yet.
    kept: HashSet<String>,
    /// A playlist listed a segment (kept or not): the rendition is playing live.
    listed_any: bool,
}

/// Every kept segment one rendition's live playlists listed, in order.
#[derive(Debug)]
pub struct Recording {
    entries: Mutex<Entries>,
    budget: Arc<ReplayBudget>,
}

impl Default for Recording {
    /// No size cap.
    fn default() -> Self {
        Self::new(ReplayBudget::new("", u64::MAX, Arc::default()))
    }
}

/// A broadcast keeps at most this many segments per rendition (2 s segments: 2.3 days).
const MAX_SEGMENTS: usize = 100_000;

impl Recording {
    /// Segments count against `budget`, shared by the broadcast's renditions.
    pub fn new(budget: Arc<ReplayBudget>) -> Self {
        Self {
            entries: Mutex::default(),
            budget,
        }
    }

    /// The segment `name` (`seg-<epoch>-<n>.m4s`) of `bytes` was written: is it kept for the
    /// replay? Only kept segments are listed in it; the others are deleted when they leave the
    /// live window.
    pub fn segment_written(&self, name: &str, bytes: u64) -> bool {
        let mut e = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if e.kept.contains(name) || e.listed_names.contains(name) {
            return true; // written again (hlssink2 does not, but once is enough)
        }
        if e.listed.len() + e.kept.len() >= MAX_SEGMENTS || !self.budget.admit(bytes) {
            return false;
        }
        e.kept.insert(name.to_owned());
        true
    }

    /// Was the segment `name` kept for the replay?
    pub fn is_kept(&self, name: &str) -> bool {
        let e = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        e.kept.contains(name) || e.listed_names.contains(name)
    }

    /// The live playlist listed the segment `name` (after [`Recording::segment_written`]):
    /// remembered for the replay if it was kept.
    pub fn listed(&self, name: &str, seconds: f64, discontinuity: bool, init: &str) {
        let mut e = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        e.listed_any = true;
        if e.kept.remove(name) {
            e.listed_names.insert(name.to_owned());
            e.listed.push(Entry {
                uri: name.to_owned(),
                seconds,
                discontinuity,
                init: init.to_owned(),
            });
        }
    }

    /// Has a live playlist listed a segment yet (whether or not it is kept)?
    pub fn live(&self) -> bool {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .listed_any
    }

    pub fn segments(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .listed
            .len()
    }

    pub fn duration_ms(&self) -> u64 {
        let guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        (guard.listed.iter().map(|e| e.seconds).sum::<f64>() * 1000.0).round() as u64
    }

    /// The VOD media playlist; segment URIs get `uri_prefix` in front.
    pub fn vod_playlist(&self, uri_prefix: &str) -> String {
        let guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entries = &guard.listed;
        let target = entries
            .iter()
            .map(|e| e.seconds.ceil() as u64)
            .max()
            .unwrap_or(1)
            .max(1);
        let mut p = format!(
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:0\n"
        );
        let mut map: Option<&str> = None;
        for e in entries {
            if e.discontinuity && map.is_some() {
                p.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if map != Some(e.init.as_str()) {
                let _ = writeln!(p, "#EXT-X-MAP:URI=\"{uri_prefix}{}\"", e.init);
                map = Some(&e.init);
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

    /// Segment `i` as the packager lists it: 2 s, the init changes at 8.
    fn list(r: &Recording, i: u32, marked: Option<u32>) {
        let init = if i < 8 {
            "seg-7-init0.mp4"
        } else {
            "seg-7-init1.mp4"
        };
        r.listed(&format!("seg-7-{i:05}.m4s"), 2.0, marked == Some(i), init);
    }

    #[test]
    fn keeps_segments_that_left_the_live_window() {
        let r = Recording::default();
        for i in 0..12 {
            r.segment_written(&format!("seg-7-{i:05}.m4s"), 1000);
            list(&r, i, Some(5));
        }
        assert_eq!(r.segments(), 12);
        assert_eq!(r.duration_ms(), 24_000);
        let vod = r.vod_playlist("../../720p/");
        assert!(vod.starts_with("#EXTM3U\n"));
        assert!(vod.contains("#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-TARGETDURATION:2\n"));
        assert!(vod.contains("#EXT-X-MAP:URI=\"../../720p/seg-7-init0.mp4\"\n#EXTINF:2.000,\n../../720p/seg-7-00000.m4s\n"), "{vod}");
        assert!(vod.contains("#EXT-X-DISCONTINUITY\n#EXTINF:2.000,\n../../720p/seg-7-00005.m4s\n"));
        assert!(vod.contains("#EXT-X-MAP:URI=\"../../720p/seg-7-init1.mp4\"\n#EXTINF:2.000,\n../../720p/seg-7-00008.m4s\n"));
        assert_eq!(vod.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
        assert!(vod.ends_with("../../720p/seg-7-00011.m4s\n#EXT-X-ENDLIST\n"));
    }

    #[test]
    fn a_broadcast_over_its_size_cap_keeps_its_beginning_only() {
        let metrics = Arc::new(Metrics::default());
        let budget = ReplayBudget::new("demo", 5000, metrics.clone());
        let (source, low) = (
            Recording::new(budget.clone()),
            Recording::new(budget.clone()),
        );
        let mut kept = Vec::new();
        for i in 0..6 {
            let name = format!("seg-7-{i:05}.m4s");
            // 1000 + 500 bytes per segment across two renditions: 3 segments fit in 5000.
            kept.push((
                source.segment_written(&name, 1000),
                low.segment_written(&name, 500),
            ));
            list(&source, i, None);
            list(&low, i, None);
        }
        assert_eq!(
            kept,
            [
                (true, true),
                (true, true),
                (true, true),
                (false, false),
                (false, false),
                (false, false)
            ]
        );
        // A small segment after the cap is not kept either: the replay has no holes.
        assert!(source.live());
        assert!(!low.segment_written("seg-7-00099.m4s", 1));
        assert_eq!((source.segments(), low.segments()), (3, 3));
        assert!(source.is_kept("seg-7-00002.m4s"));
        assert!(!source.is_kept("seg-7-00003.m4s"));
        assert!(source
            .vod_playlist("")
            .ends_with("seg-7-00002.m4s\n#EXT-X-ENDLIST\n"));
        assert_eq!(
            metrics.hls_replay_segments_not_kept.load(Ordering::Relaxed),
            7
        );
    }

    #[test]
    fn a_rendition_with_nothing_kept_is_still_live() {
        let r = Recording::new(ReplayBudget::new("demo", 0, Arc::default()));
        assert!(!r.live());
        assert!(!r.segment_written("seg-7-00000.m4s", 1000));
        list(&r, 0, None);
        assert!(r.live(), "its live playlist lists a segment");
        assert_eq!(r.segments(), 0, "none kept");
    }

    #[test]
    fn broadcasts_are_found_by_their_objects() {
        let paths: Vec<String> = [
            "demo/master.m3u8",
            "demo/thumb.jpg",
            "demo/source/index.m3u8",
            "demo/source/seg-17-init0.mp4",
            "demo/source/seg-17-00000.m4s",
            "demo/source/seg-17-00001.m4s",
            "demo/360p/seg-17-00000.m4s",
            "demo/source/seg-20-00000.ts",
            "demo/videos/17/master.m3u8",
            "demo/videos/9/source.m3u8",
            "other/source/seg-x-00000.ts",
            "other/source/seg-5.ts",
        ]
        .map(String::from)
        .to_vec();
        let found = stored_broadcasts(&paths);
        let b = |stream: &str, epoch, r: &[&str]| StoredBroadcast {
            stream: stream.into(),
            epoch,
            renditions: r.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            found,
            [
                b("demo", 9, &[]),
                b("demo", 17, &["360p", "source"]),
                b("demo", 20, &["source"]),
            ]
        );
    }

    #[test]
    fn segments_not_written_are_not_listed() {
        let r = Recording::default();
        r.listed("seg-7-00000.m4s", 2.0, false, "seg-7-init0.mp4");
        assert_eq!(r.segments(), 0);
        assert!(r.live());
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
