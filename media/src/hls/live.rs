//! Live renditions as glint serves them: the Low-Latency HLS origin.
//!
//! Each live rendition's [`Playlist`] sits in a `tokio::sync::watch` channel written by its
//! stream's packager; `/hls/` requests read it here. A blocking playlist reload
//! (`?_HLS_msn=M&_HLS_part=P`, RFC 8216bis §6.2.5.2) and a request for the part the playlist
//! hints at (`#EXT-X-PRELOAD-HINT`) wait on the channel until the part exists, at most three
//! target durations (then 503, as the spec says). Recent parts, segments and initialization
//! segments come from memory; anything else (older segments, replays, finished streams) from
//! the store, which keeps receiving standard segments and playlists for CDNs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::watch;

use super::playlist::{LastPart, Name, Playlist, Reload};
use crate::metrics::Metrics;

/// Why a media playlist request is not answered with a playlist from memory.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PlaylistError {
    /// Not a live rendition (or low latency off): the store has what there is.
    #[error("not a live rendition")]
    NotLive,
    /// `_HLS_part` without `_HLS_msn`, a value that is not a number.
    #[error("bad blocking reload query: {0}")]
    BadQuery(&'static str),
    /// Further ahead than the live edge allows (§6.2.5.2).
    #[error("_HLS_msn/_HLS_part too far ahead of the live edge")]
    TooFar,
    /// What was asked for did not come within three target durations.
    #[error("the requested part did not arrive in time")]
    Timeout,
}

/// One live stream's renditions.
pub struct LiveStream {
    /// `seg-<epoch>-`: names of this broadcast's objects.
    pub(crate) prefix: String,
    pub(crate) renditions: Vec<(String, watch::Sender<Playlist>)>,
    /// Its master playlist, once every rendition has something to play.
    pub(crate) master: Mutex<Option<Bytes>>,
}

impl LiveStream {
    fn rendition(&self, name: &str) -> Option<&watch::Sender<Playlist>> {
        self.renditions
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, tx)| tx)
    }

    /// `#EXT-X-RENDITION-REPORT`s for every rendition but `of`.
    fn reports(&self, of: &str) -> Vec<(String, LastPart)> {
        self.renditions
            .iter()
            .filter(|(n, _)| n != of)
            .filter_map(|(n, tx)| {
                let last = tx.borrow().last_part()?;
                Some((format!("../{n}/index.m3u8"), last))
            })
            .collect()
    }
}

/// The registry of live streams; cheap to clone.
#[derive(Clone, Default)]
pub struct LiveHls {
    streams: Arc<Mutex<HashMap<String, Arc<LiveStream>>>>,
    /// Serve LL-HLS playlists (on by default); off, media playlists come from the store.
    low_latency: bool,
    metrics: Arc<Metrics>,
}

/// Counts a request waiting for a part while it lives (`glint_hls_blocked_requests`).
struct Waiting<'a>(&'a Metrics);

impl<'a> Waiting<'a> {
    fn new(m: &'a Metrics) -> Self {
        Metrics::add(&m.hls_blocked_requests, 1);
        Self(m)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        Metrics::sub(&self.0.hls_blocked_requests, 1);
    }
}

/// Blocking requests wait at most this many target durations (§6.2.5.2: "three times").
const WAIT_TARGETS: u32 = 3;

impl LiveHls {
    pub fn new(low_latency: bool, metrics: Arc<Metrics>) -> Self {
        Self {
            streams: Arc::default(),
            low_latency,
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<LiveStream>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add(&self, stream: &str, live: Arc<LiveStream>) {
        self.lock().insert(stream.to_owned(), live);
    }

    /// Removes `live` (not a newer broadcast of the same stream).
    pub(crate) fn remove(&self, stream: &str, live: &Arc<LiveStream>) {
        let mut streams = self.lock();
        if streams.get(stream).is_some_and(|l| Arc::ptr_eq(l, live)) {
            streams.remove(stream);
        }
    }

    fn get(&self, stream: &str) -> Option<Arc<LiveStream>> {
        self.lock().get(stream).cloned()
    }

    pub fn master(&self, stream: &str) -> Option<Bytes> {
        let live = self.get(stream)?;
        let m = live.master.lock().unwrap_or_else(|e| e.into_inner());
        m.clone()
    }

    /// The Low-Latency media playlist of a live rendition; `query` is the request's query
    /// string (`_HLS_msn`, `_HLS_part`; others are ignored).
    pub async fn media_playlist(
        &self,
        stream: &str,
        rendition: &str,
        query: Option<&str>,
    ) -> Result<String, PlaylistError> {
        if !self.low_latency {
            return Err(PlaylistError::NotLive);
        }
        let live = self.get(stream).ok_or(PlaylistError::NotLive)?;
        let tx = live.rendition(rendition).ok_or(PlaylistError::NotLive)?;
        let blocking = parse_query(query.unwrap_or(""))?;
        let mut rx = tx.subscribe();
        let (target, has_media) = {
            let pl = rx.borrow_and_update();
            (pl.target_duration, pl.has_media())
        };
        if !has_media {
            return Err(PlaylistError::NotLive);
        }
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(u64::from(target * WAIT_TARGETS));
        let mut waiting = None;
        loop {
            let state = {
                let pl = rx.borrow_and_update();
                blocking.map_or(Reload::Ready, |(msn, part)| pl.reload(msn, part))
            };
            match state {
                Reload::Ready => {
                    let reports = live.reports(rendition);
                    return Ok(rx.borrow().render_low_latency(&reports));
                }
                Reload::TooFar => return Err(PlaylistError::TooFar),
                Reload::Wait => {
                    waiting.get_or_insert_with(|| Waiting::new(&self.metrics));
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                // The stream ended: the store has its last playlist.
                Ok(Err(_)) => return Err(PlaylistError::NotLive),
                Err(_) => return Err(PlaylistError::Timeout),
            }
        }
    }

    /// A part, segment or initialization segment of a live rendition from memory (`None`: ask
    /// the store). The part the playlist hints at is waited for.
    pub async fn object(&self, stream: &str, rendition: &str, name: &str) -> Option<Vec<Bytes>> {
        let live = self.get(stream)?;
        let tx = live.rendition(rendition)?;
        let name = Name::parse(&live.prefix, name)?;
        let mut rx = tx.subscribe();
        let target = rx.borrow().target_duration;
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(u64::from(target * WAIT_TARGETS));
        let mut waiting = None;
        loop {
            {
                let pl = rx.borrow_and_update();
                match name {
                    Name::Init(k) => return pl.init(k).map(|b| vec![b.clone()]),
                    Name::Segment(msn) => {
                        return pl
                            .segment(msn)
                            .map(|s| s.parts.iter().map(|p| p.bytes.clone()).collect())
                    }
                    Name::Part(msn, n) => {
                        if let Some(b) = pl.part(msn, n) {
                            return Some(vec![b.clone()]);
                        }
                        // Only a part about to exist is waited for.
                        if pl.reload(msn, Some(n as u64)) != Reload::Wait {
                            return None;
                        }
                        waiting.get_or_insert_with(|| Waiting::new(&self.metrics));
                    }
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return None,
            }
        }
    }
}

/// `_HLS_msn` and `_HLS_part` of a query string.
pub(crate) fn parse_query(query: &str) -> Result<Option<(u64, Option<u64>)>, PlaylistError> {
    let (mut msn, mut part) = (None, None);
    for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        match k {
            "_HLS_msn" => msn = Some(v.parse().map_err(|_| PlaylistError::BadQuery("_HLS_msn"))?),
            "_HLS_part" => {
                part = Some(
                    v.parse()
                        .map_err(|_| PlaylistError::BadQuery("_HLS_part"))?,
                )
            }
            _ => {}
        }
    }
    match (msn, part) {
        (None, Some(_)) => Err(PlaylistError::BadQuery("_HLS_part without _HLS_msn")),
        (None, None) => Ok(None),
        (Some(m), p) => Ok(Some((m, p))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::playlist::Part;

    fn part() -> Part {
        Part {
            duration: 0.5,
            independent: true,
            bytes: Bytes::from_static(b"part"),
        }
    }

    fn live() -> (LiveHls, watch::Sender<Playlist>) {
        let hls = LiveHls::new(true, Arc::default());
        let mut pl = Playlist::new("seg-1-".into(), 1, 0.5, 6);
        pl.add_init(Bytes::from_static(b"init"));
        pl.open_segment(false, 0);
        pl.push_part(part());
        let (tx, _) = watch::channel(pl);
        let stream = Arc::new(LiveStream {
            prefix: "seg-1-".into(),
            renditions: vec![("source".into(), tx.clone())],
            master: Mutex::new(None),
        });
        hls.add("demo", stream);
        (hls, tx)
    }

    #[test]
    fn queries_read() {
        assert_eq!(parse_query(""), Ok(None));
        assert_eq!(parse_query("_HLS_msn=4"), Ok(Some((4, None))));
        assert_eq!(
            parse_query("x=1&_HLS_msn=4&_HLS_part=2"),
            Ok(Some((4, Some(2))))
        );
        assert!(parse_query("_HLS_part=2").is_err());
        assert!(parse_query("_HLS_msn=-1").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocking_reload_waits_for_its_part() {
        let (hls, tx) = live();
        let h = hls.clone();
        let waiting = tokio::spawn(async move {
            h.media_playlist("demo", "source", Some("_HLS_msn=0&_HLS_part=1"))
                .await
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert_eq!(
            hls.metrics
                .hls_blocked_requests
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        tx.send_modify(|pl| {
            pl.push_part(part());
        });
        let text = waiting.await.unwrap().unwrap();
        assert!(text.contains("seg-1-00000.1.m4s"), "{text}");
        // Too far ahead: at once.
        assert_eq!(
            hls.media_playlist("demo", "source", Some("_HLS_msn=9"))
                .await,
            Err(PlaylistError::TooFar)
        );
        // Never comes: 503 after three target durations.
        assert_eq!(
            hls.media_playlist("demo", "source", Some("_HLS_msn=1&_HLS_part=0"))
                .await,
            Err(PlaylistError::Timeout)
        );
        assert_eq!(
            hls.media_playlist("other", "source", None).await,
            Err(PlaylistError::NotLive)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_hinted_part_is_waited_for() {
        let (hls, tx) = live();
        assert_eq!(
            hls.object("demo", "source", "seg-1-00000.0.m4s").await,
            Some(vec![Bytes::from_static(b"part")])
        );
        assert_eq!(
            hls.object("demo", "source", "seg-1-init0.mp4").await,
            Some(vec![Bytes::from_static(b"init")])
        );
        let h = hls.clone();
        let waiting =
            tokio::spawn(async move { h.object("demo", "source", "seg-1-00000.1.m4s").await });
        tokio::task::yield_now().await;
        tx.send_modify(|pl| {
            pl.push_part(part());
        });
        assert!(waiting.await.unwrap().is_some());
        assert_eq!(
            hls.object("demo", "source", "seg-1-00009.0.m4s").await,
            None
        );
        assert_eq!(
            hls.object("demo", "source", "seg-2-00000.0.m4s").await,
            None
        );
    }
}
