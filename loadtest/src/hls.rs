//! HLS viewers: fetch the master playlist, pick a rendition, poll its live playlist and download
//! segments at real-time pace, like a player. Each viewer keeps a playback model: it starts
//! playing when its first segment is in, the playhead then advances with the clock while media
//! is buffered, and it stalls when the buffer runs dry. Measured: startup time, stalls, how far
//! behind the live edge it plays, bytes and errors.
//!
//! With `low_latency` a viewer plays a Low-Latency HLS playlist as hls.js does in its low-latency
//! mode: it starts at the newest segment's first part, then asks for each next part with a
//! blocking playlist reload (`_HLS_msn`/`_HLS_part`) and downloads every part as soon as it is
//! listed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Client, Url};
use serde::Serialize;

/// Which rendition of the ladder a viewer watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rendition {
    /// The smallest bandwidth (a phone on a poor network).
    #[default]
    Lowest,
    /// The largest (a desktop on a good network).
    Highest,
}

#[derive(Debug, Clone)]
pub struct HlsViewConfig {
    /// The master playlist, e.g. `http://127.0.0.1:8080/hls/demo/master.m3u8`.
    pub master_url: String,
    pub rendition: Rendition,
    /// Give up if no segment arrived this long after starting.
    pub startup_timeout: Duration,
    /// Segments of the live window a player starts behind the newest (hls.js: 3).
    pub start_segments_from_end: usize,
    /// Segments buffered before playback starts (players keep a cushion against late segments).
    pub start_buffer_segments: usize,
    /// Play the playlist's LL-HLS parts with blocking reloads (when it has parts).
    pub low_latency: bool,
    pub http: Client,
}

impl HlsViewConfig {
    pub fn new(master_url: impl Into<String>, http: Client) -> Self {
        HlsViewConfig {
            master_url: master_url.into(),
            rendition: Rendition::Lowest,
            startup_timeout: Duration::from_secs(30),
            start_segments_from_end: 3,
            start_buffer_segments: 2,
            low_latency: false,
            http,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HlsViewerStats {
    /// From start to playback starting (the start buffer downloaded).
    #[serde(serialize_with = "crate::stats::ser_opt_ms")]
    pub startup: Option<Duration>,
    pub segments: u64,
    /// LL-HLS parts downloaded (low-latency viewers).
    pub parts: u64,
    pub bytes: u64,
    pub playlist_loads: u64,
    pub errors: u64,
    /// Times the buffer ran dry after playback started, and for how long in all.
    pub stalls: u64,
    #[serde(serialize_with = "crate::stats::ser_ms")]
    pub stalled: Duration,
    /// Media time between the playhead and the end of the newest segment listed.
    #[serde(serialize_with = "crate::stats::ser_opt_ms")]
    pub behind_live_edge: Option<Duration>,
    /// The rendition's bandwidth from the master playlist.
    pub bandwidth: Option<u64>,
    /// Gave up (no playlist, or no segment within the startup timeout).
    pub failed: Option<String>,
}

/// A media playlist's parts we use.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylist {
    pub target_duration: Duration,
    pub media_sequence: u64,
    /// (duration, URI) in order.
    pub segments: Vec<(Duration, String)>,
    /// LL-HLS parts listed, in order (those of the segment being made last).
    pub parts: Vec<ListedPart>,
    pub ended: bool,
}

/// An LL-HLS part (`#EXT-X-PART`): its segment's media sequence number and its index there.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedPart {
    pub msn: u64,
    pub index: usize,
    pub duration: Duration,
    pub uri: String,
}

/// The variants of a master playlist: (bandwidth, URI).
pub fn parse_master(text: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut bandwidth = None;
    for line in text.lines().map(str::trim) {
        if let Some(attrs) = line.strip_prefix("#EXT-X-STREAM-INF:") {
            bandwidth = attrs
                .split(',')
                .find_map(|a| a.strip_prefix("BANDWIDTH="))
                .and_then(|b| b.parse().ok());
        } else if !line.is_empty() && !line.starts_with('#') {
            if let Some(b) = bandwidth.take() {
                out.push((b, line.to_owned()));
            }
        }
    }
    out
}

pub fn parse_media(text: &str) -> Option<MediaPlaylist> {
    if !text.starts_with("#EXTM3U") {
        return None;
    }
    let mut p = MediaPlaylist {
        target_duration: Duration::from_secs(2),
        media_sequence: 0,
        segments: Vec::new(),
        parts: Vec::new(),
        ended: false,
    };
    let mut next_duration = None;
    let mut part_index = 0;
    for line in text.lines().map(str::trim) {
        if let Some(attrs) = line.strip_prefix("#EXT-X-PART:") {
            let attr = |name: &str| {
                attrs.split(',').find_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    (k == name).then(|| v.trim_matches('"').to_owned())
                })
            };
            let secs: f64 = attr("DURATION")?.parse().ok()?;
            p.parts.push(ListedPart {
                msn: p.media_sequence + p.segments.len() as u64,
                index: part_index,
                duration: Duration::from_secs_f64(secs.max(0.0)),
                uri: attr("URI")?,
            });
            part_index += 1;
            continue;
        }
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            p.target_duration = Duration::from_secs(v.parse().ok()?);
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            p.media_sequence = v.parse().ok()?;
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            let secs: f64 = v.split(',').next()?.parse().ok()?;
            next_duration = Some(Duration::from_secs_f64(secs.max(0.0)));
        } else if line == "#EXT-X-ENDLIST" {
            p.ended = true;
        } else if !line.is_empty() && !line.starts_with('#') {
            p.segments.push((next_duration.take()?, line.to_owned()));
            part_index = 0;
        }
    }
    Some(p)
}

/// The playback model: media time buffered and played, in wall-clock terms.
#[derive(Debug)]
struct Playback {
    /// Media time downloaded (from the first segment's start).
    buffered: Duration,
    /// Media time played, as of `at`.
    played: Duration,
    at: Instant,
    stalled_since: Option<Instant>,
}

impl Playback {
    /// Advance the playhead to `now`; a dry buffer is a stall.
    fn advance(&mut self, now: Instant, stats: &mut HlsViewerStats) {
        let elapsed = now.saturating_duration_since(self.at);
        self.at = now;
        if self.stalled_since.is_some() {
            return;
        }
        let ahead = self.buffered.saturating_sub(self.played);
        if elapsed <= ahead {
            self.played += elapsed;
        } else {
            self.played = self.buffered;
            stats.stalls += 1;
            self.stalled_since = Some(now - (elapsed - ahead));
        }
    }

    fn add(&mut self, duration: Duration, now: Instant, stats: &mut HlsViewerStats) {
        self.advance(now, stats);
        self.buffered += duration;
        if let Some(since) = self.stalled_since.take() {
            stats.stalled += now.saturating_duration_since(since);
        }
    }

    fn ahead(&self) -> Duration {
        self.buffered.saturating_sub(self.played)
    }
}

/// Watch until `stop` says so (or the stream ends); `stats` is updated as it goes.
pub async fn watch(
    cfg: HlsViewConfig,
    stats: Arc<Mutex<HlsViewerStats>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let started = Instant::now();
    let update = |f: &mut dyn FnMut(&mut HlsViewerStats)| {
        let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s);
    };
    let fail = |why: String| update(&mut |s| s.failed = Some(why.clone()));
    let Ok(master_url) = Url::parse(&cfg.master_url) else {
        return fail(format!("bad URL {}", cfg.master_url));
    };
    // The master playlist appears a few seconds after the stream goes live.
    let variants = loop {
        match get_text(&cfg.http, &master_url).await {
            Ok(text) => {
                let v = parse_master(&text);
                if !v.is_empty() {
                    break v;
                }
            }
            Err(_) => update(&mut |s| s.errors += 1),
        }
        if started.elapsed() > cfg.startup_timeout {
            return fail("no master playlist".into());
        }
        if sleep_or_stop(Duration::from_millis(500), &mut stop).await {
            return;
        }
    };
    let (bandwidth, uri) = match cfg.rendition {
        Rendition::Lowest => variants.iter().min_by_key(|v| v.0),
        Rendition::Highest => variants.iter().max_by_key(|v| v.0),
    }
    .cloned()
    .unwrap_or_default();
    update(&mut |s| s.bandwidth = Some(bandwidth));
    let Ok(media_url) = master_url.join(&uri) else {
        return fail(format!("bad variant URI {uri}"));
    };

    if cfg.low_latency {
        return watch_parts(&cfg, &media_url, started, &stats, &mut stop).await;
    }
    let mut next_seq: Option<u64> = None;
    let mut playback: Option<Playback> = None;
    // Media downloaded before playback starts, and how many segments.
    let mut start_buffer = (Duration::ZERO, 0usize);
    let mut target = Duration::from_secs(2);
    loop {
        let now = Instant::now();
        let playlist = match get_text(&cfg.http, &media_url)
            .await
            .map(|t| parse_media(&t))
        {
            Ok(Some(p)) => p,
            _ => {
                update(&mut |s| s.errors += 1);
                if playback.is_none() && started.elapsed() > cfg.startup_timeout {
                    return fail("no media playlist".into());
                }
                if sleep_or_stop(target / 2, &mut stop).await {
                    return;
                }
                continue;
            }
        };
        target = playlist.target_duration;
        update(&mut |s| s.playlist_loads += 1);
        let first_listed = playlist.media_sequence;
        let last_listed = first_listed + playlist.segments.len() as u64;
        let seq = *next_seq.get_or_insert_with(|| {
            last_listed
                .saturating_sub(cfg.start_segments_from_end as u64)
                .max(first_listed)
        });
        // Fetch what is listed and due while less than two target durations are buffered.
        let mut seq = seq.max(first_listed);
        while seq < last_listed && playback.as_ref().is_none_or(|p| p.ahead() < target * 2) {
            let (duration, uri) = &playlist.segments[(seq - first_listed) as usize];
            let Ok(url) = media_url.join(uri) else { break };
            match get_bytes(&cfg.http, &url).await {
                Ok(n) => {
                    let now = Instant::now();
                    update(&mut |s| {
                        s.segments += 1;
                        s.bytes += n;
                    });
                    let need = cfg.start_buffer_segments.max(1);
                    arrived(
                        &mut playback,
                        &mut start_buffer,
                        need,
                        *duration,
                        now,
                        started,
                        &stats,
                    );
                }
                Err(_) => {
                    update(&mut |s| s.errors += 1);
                    break;
                }
            }
            seq += 1;
        }
        next_seq = Some(seq);
        if let Some(p) = &mut playback {
            let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
            p.advance(Instant::now(), &mut s);
            // The live edge: the end of the newest listed segment, in the viewer's media time.
            let unfetched: Duration = playlist.segments
                [(seq - first_listed).min(playlist.segments.len() as u64) as usize..]
                .iter()
                .map(|(d, _)| *d)
                .sum();
            s.behind_live_edge = Some(p.ahead() + unfetched);
        } else if started.elapsed() > cfg.startup_timeout {
            return fail("no segment within the startup timeout".into());
        }
        if playlist.ended && seq >= last_listed {
            return;
        }
        // Reload about every half target duration (RFC 8216 §6.3.4 allows waiting a whole one).
        let wait = (target / 2).saturating_sub(now.elapsed());
        if sleep_or_stop(wait, &mut stop).await {
            return finish(&mut playback, &stats);
        }
    }
}

/// Parts buffered before a low-latency viewer starts playing (about one second).
const START_PARTS: usize = 3;

/// A low-latency viewer of the media playlist at `media_url`: the next part is asked for with a
/// blocking reload; each part is downloaded as soon as it is listed.
async fn watch_parts(
    cfg: &HlsViewConfig,
    media_url: &Url,
    started: Instant,
    stats: &Mutex<HlsViewerStats>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) {
    let update = |f: &mut dyn FnMut(&mut HlsViewerStats)| {
        let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s);
    };
    // The next part wanted: (msn, index).
    let mut next: Option<(u64, usize)> = None;
    let mut playback: Option<Playback> = None;
    let mut start_buffer = (Duration::ZERO, 0usize);
    loop {
        let mut url = media_url.clone();
        if let Some((msn, part)) = next {
            url.set_query(Some(&format!("_HLS_msn={msn}&_HLS_part={part}")));
        }
        let text = tokio::select! {
            t = get_text(&cfg.http, &url) => t,
            _ = stop.changed() => return finish(&mut playback, stats),
        };
        let Some(playlist) = text.ok().and_then(|t| parse_media(&t)) else {
            update(&mut |s| s.errors += 1);
            if playback.is_none() && started.elapsed() > cfg.startup_timeout {
                return update(&mut |s| s.failed = Some("no media playlist".into()));
            }
            if sleep_or_stop(Duration::from_millis(200), stop).await {
                return finish(&mut playback, stats);
            }
            next = None; // too far ahead (400) or lost: start again from the playlist
            continue;
        };
        update(&mut |s| s.playlist_loads += 1);
        if playlist.parts.is_empty() {
            return update(&mut |s| {
                s.failed = Some("the playlist has no parts (not LL-HLS)".into())
            });
        }
        // Start at the newest segment's first part.
        let (mut msn, mut index) = *next.get_or_insert_with(|| {
            playlist
                .parts
                .iter()
                .rev()
                .find(|p| p.index == 0)
                .map_or((playlist.parts[0].msn, playlist.parts[0].index), |p| {
                    (p.msn, 0)
                })
        });
        for part in &playlist.parts {
            // The segment of the wanted part ended before it: the next one's first part.
            if part.msn > msn && part.index == 0 && index > 0 {
                (msn, index) = (part.msn, 0);
            }
            if (part.msn, part.index) != (msn, index) {
                continue;
            }
            let Ok(part_url) = media_url.join(&part.uri) else {
                break;
            };
            match get_bytes(&cfg.http, &part_url).await {
                Ok(n) => {
                    let now = Instant::now();
                    update(&mut |s| {
                        s.parts += 1;
                        s.bytes += n;
                    });
                    let d = part.duration;
                    arrived(
                        &mut playback,
                        &mut start_buffer,
                        START_PARTS,
                        d,
                        now,
                        started,
                        stats,
                    );
                }
                Err(_) => {
                    update(&mut |s| s.errors += 1);
                    break;
                }
            }
            index += 1;
        }
        next = Some((msn, index));
        if let Some(p) = &mut playback {
            let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
            p.advance(Instant::now(), &mut s);
            // Every listed part is fetched: the live edge is the end of what is buffered.
            s.behind_live_edge = Some(p.ahead());
        } else if started.elapsed() > cfg.startup_timeout {
            return update(&mut |s| s.failed = Some("no part within the startup timeout".into()));
        }
        if playlist.ended {
            return finish(&mut playback, stats);
        }
    }
}

/// Media of `duration` arrived at `now`: into the buffer of a playing viewer, or into the start
/// buffer, which starts playback once it holds `need` pieces (segments or parts).
fn arrived(
    playback: &mut Option<Playback>,
    start_buffer: &mut (Duration, usize),
    need: usize,
    duration: Duration,
    now: Instant,
    started: Instant,
    stats: &Mutex<HlsViewerStats>,
) {
    let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
    match playback {
        Some(p) => p.add(duration, now, &mut s),
        None => {
            start_buffer.0 += duration;
            start_buffer.1 += 1;
            if start_buffer.1 >= need {
                s.startup = Some(now - started);
                *playback = Some(Playback {
                    buffered: start_buffer.0,
                    played: Duration::ZERO,
                    at: now,
                    stalled_since: None,
                });
            }
        }
    }
}

/// The viewer stops: a stall in progress ends now.
fn finish(playback: &mut Option<Playback>, stats: &Mutex<HlsViewerStats>) {
    if let Some(p) = playback {
        let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
        p.advance(Instant::now(), &mut s);
        if let Some(since) = p.stalled_since.take() {
            s.stalled += since.elapsed();
        }
    }
}

/// Sleep `d`, or return true at once when told to stop.
async fn sleep_or_stop(d: Duration, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

async fn get_text(http: &Client, url: &Url) -> Result<String, reqwest::Error> {
    http.get(url.clone())
        .send()
        .await?
        .error_for_status()?
        .text()
        .await
}

async fn get_bytes(http: &Client, url: &Url) -> Result<u64, reqwest::Error> {
    let mut resp = http.get(url.clone()).send().await?.error_for_status()?;
    let mut n = 0;
    while let Some(chunk) = resp.chunk().await? {
        n += chunk.len() as u64;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_latency_playlists_list_their_parts() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:4\n\
            #EXT-X-PART:DURATION=1.00000,URI=\"s4.0.m4s\",INDEPENDENT=YES\n\
            #EXT-X-PART:DURATION=1.00000,URI=\"s4.1.m4s\"\n#EXTINF:2.00000,\ns4.m4s\n\
            #EXT-X-PART:DURATION=0.33300,URI=\"s5.0.m4s\",INDEPENDENT=YES\n\
            #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s5.1.m4s\"\n";
        let p = parse_media(text).unwrap();
        assert_eq!(p.segments.len(), 1);
        let parts: Vec<(u64, usize, &str)> = p
            .parts
            .iter()
            .map(|p| (p.msn, p.index, p.uri.as_str()))
            .collect();
        assert_eq!(
            parts,
            [(4, 0, "s4.0.m4s"), (4, 1, "s4.1.m4s"), (5, 0, "s5.0.m4s")]
        );
        assert_eq!(p.parts[2].duration, Duration::from_millis(333));
    }

    #[test]
    fn playlists_parse() {
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\n360p/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=3000000\nsource/index.m3u8\n";
        assert_eq!(
            parse_master(master),
            vec![
                (800_000, "360p/index.m3u8".into()),
                (3_000_000, "source/index.m3u8".into())
            ]
        );
        let media = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2.000,\nseg7.ts\n#EXTINF:1.5,\nseg8.ts\n";
        let p = parse_media(media).unwrap();
        assert_eq!(p.media_sequence, 7);
        assert_eq!(p.target_duration, Duration::from_secs(2));
        assert_eq!(
            p.segments[1],
            (Duration::from_millis(1500), "seg8.ts".into())
        );
        assert!(!p.ended);
        assert!(parse_media("<html>").is_none());
        assert!(parse_media("#EXTM3U\n#EXT-X-TARGETDURATION:x\n").is_none());
    }

    #[test]
    fn the_playback_model_stalls_when_the_buffer_runs_dry() {
        let t0 = Instant::now();
        let mut stats = HlsViewerStats::default();
        let mut p = Playback {
            buffered: Duration::ZERO,
            played: Duration::ZERO,
            at: t0,
            stalled_since: None,
        };
        let s = Duration::from_secs(1);
        p.add(2 * s, t0, &mut stats);
        p.advance(t0 + s, &mut stats);
        assert_eq!(p.ahead(), s);
        p.add(s, t0 + s, &mut stats); // 3 s buffered, 1 played
        p.advance(t0 + 4 * s, &mut stats); // ran dry at t0 + 3 s
        assert_eq!(stats.stalls, 1);
        p.add(2 * s, t0 + 5 * s, &mut stats); // resumes after 2 s of stall
        assert_eq!(stats.stalled, 2 * s);
        p.advance(t0 + 6 * s, &mut stats);
        assert_eq!(p.ahead(), s);
        assert_eq!(stats.stalls, 1);
    }
}
