//! Scenarios: publishers (WHIP, RTMP), WebRTC viewers, HLS viewers and chat clients against one
//! server, ramped up at a fixed rate under a hard cap, held for a duration, then stopped — it
//! always ends by itself. Sampled every second into a timeline (sessions, latency percentiles,
//! loss, bitrate, HLS stalls, server CPU and RSS); summarised at the end.
//!
//! A scenario comes from a TOML file or from flags (`glint-loadtest run`); `capacity` mode
//! ([`capacity`]) keeps adding WebRTC viewers until quality degrades.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::hls::{HlsViewConfig, HlsViewerStats, Rendition};
use crate::peer::{publish, view, PublishConfig, PublisherHandle, ViewConfig, ViewerHandle};
use crate::stats::{LatencyHistogram, LatencyRecorder};
use crate::{procfs, rtmp};

/// Most sessions of all kinds one run may open, whatever the scenario says.
pub const HARD_CAP: usize = 20_000;
/// Longest run.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PublisherKind {
    #[default]
    Whip,
    Rtmp,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherSpec {
    #[serde(default)]
    pub kind: PublisherKind,
    /// WHIP: the stream name (RTMP: the key names it; used to wait for it to go live).
    pub stream: String,
    pub key: String,
}

/// What publishers send over WHIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Media {
    /// The built-in 720p clip at ~2.5 Mbit/s (real video a browser can decode).
    #[default]
    Clip,
    /// Small synthetic frames whose every payload viewers verify byte for byte.
    Synthetic,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    pub server: String,
    /// Held this long once every session is started.
    pub duration_secs: u64,
    /// Sessions started per second during the ramp.
    pub ramp_per_sec: f64,
    /// At most this many viewers and chat clients in all (never more than [`HARD_CAP`]).
    pub max_sessions: usize,
    /// The stream viewers watch.
    pub stream: String,
    pub webrtc_viewers: usize,
    pub hls_viewers: usize,
    pub hls_rendition: Rendition,
    /// HLS viewers play LL-HLS parts with blocking reloads (hls.js's low-latency mode).
    pub hls_low_latency: bool,
    pub chat_clients: usize,
    /// Chat messages per second (all senders together).
    pub chat_rate: f64,
    pub publishers: Vec<PublisherSpec>,
    pub media: Media,
    /// The server's process id, when it runs on this machine: CPU and RSS are sampled.
    pub server_pid: Option<u32>,
    pub connect_timeout_secs: u64,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            server: "http://127.0.0.1:8080".into(),
            duration_secs: 30,
            ramp_per_sec: 50.0,
            max_sessions: 5000,
            stream: "demo".into(),
            webrtc_viewers: 0,
            hls_viewers: 0,
            hls_rendition: Rendition::Lowest,
            hls_low_latency: false,
            chat_clients: 0,
            chat_rate: 10.0,
            publishers: Vec::new(),
            media: Media::Clip,
            server_pid: None,
            connect_timeout_secs: 10,
        }
    }
}

impl Scenario {
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let s: Scenario = toml::from_str(text).map_err(|e| e.to_string())?;
        s.validate()?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.duration_secs == 0 || Duration::from_secs(self.duration_secs) > MAX_DURATION {
            return Err(format!("duration_secs: 1–{}", MAX_DURATION.as_secs()));
        }
        if !(self.ramp_per_sec > 0.0 && self.ramp_per_sec <= 10_000.0) {
            return Err("ramp_per_sec: (0, 10000]".into());
        }
        if !(self.chat_rate > 0.0 && self.chat_rate <= 10_000.0) {
            return Err("chat_rate: (0, 10000]".into());
        }
        let sessions = self.webrtc_viewers + self.hls_viewers + self.chat_clients;
        if sessions > self.max_sessions.min(HARD_CAP) {
            return Err(format!(
                "{sessions} sessions exceed the cap of {}",
                self.max_sessions.min(HARD_CAP)
            ));
        }
        if sessions == 0 && self.publishers.is_empty() {
            return Err("nothing to run: no viewers, chat clients or publishers".into());
        }
        Ok(())
    }
}

/// One second of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Point {
    /// Seconds since the run started.
    pub t: f64,
    pub webrtc_connected: usize,
    pub hls_playing: usize,
    pub publishers_up: usize,
    /// Glass-to-glass latency of the frames that arrived in this second.
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// Video packets lost / expected in this second, in percent.
    pub video_loss_pct: Option<f64>,
    /// Media received by all WebRTC viewers in this second.
    pub webrtc_rx_mbps: f64,
    pub hls_stalls: u64,
    pub server_cpu_pct: Option<f64>,
    pub server_rss_mib: Option<f64>,
    pub harness_cpu_pct: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WebrtcSummary {
    pub started: usize,
    pub connected: usize,
    pub failed: usize,
    pub connect_p50_ms: Option<f64>,
    pub connect_p95_ms: Option<f64>,
    /// From the WHEP request to the first keyframe.
    pub first_keyframe_p50_ms: Option<f64>,
    pub first_keyframe_p95_ms: Option<f64>,
    pub video_packets: u64,
    pub video_lost: u64,
    pub video_loss_pct: f64,
    /// Gaps in video longer than a freeze threshold (see `TrackCounter`).
    pub freezes: u64,
    /// NACKs the viewers sent for missing video, in all.
    pub nacks_sent: u64,
    /// Video interarrival jitter across viewers (each viewer's last report).
    pub jitter_p50_ms: Option<f64>,
    pub jitter_p95_ms: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// Mean media bitrate per connected viewer over the hold.
    pub rx_mbps_per_viewer: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HlsSummary {
    pub started: usize,
    pub playing: usize,
    pub failed: usize,
    pub startup_p50_ms: Option<f64>,
    pub startup_p95_ms: Option<f64>,
    pub segments: u64,
    /// LL-HLS parts (low-latency viewers).
    pub parts: u64,
    pub stalls: u64,
    pub stalled_ms: f64,
    pub behind_live_edge_mean_ms: Option<f64>,
    pub rx_mbps_per_viewer: Option<f64>,
    pub errors: u64,
    /// Why viewers gave up, with counts.
    pub failures: std::collections::BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServerSummary {
    pub cpu_pct_mean: Option<f64>,
    /// Server CPU time per RTP packet it forwarded during the hold (from /metrics).
    pub cpu_us_per_forwarded_packet: Option<f64>,
    pub packets_forwarded: Option<u64>,
    pub rss_mib_max: Option<f64>,
    pub rss_kib_per_viewer: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct ScenarioReport {
    pub scenario: Scenario,
    pub whip_publishers_up: usize,
    pub rtmp_publishers_up: usize,
    pub webrtc: WebrtcSummary,
    pub hls: HlsSummary,
    pub chat: Option<crate::chat::ChatReport>,
    pub server: ServerSummary,
    /// The harness's own CPU (percent of one core) and RSS, for judging the numbers above.
    pub harness_cpu_pct_mean: Option<f64>,
    pub harness_rss_mib_max: Option<f64>,
    pub ramp_secs: f64,
    pub hold_secs: f64,
    pub timeline: Vec<Point>,
}

/// Everything a run holds while it runs.
struct Sessions {
    webrtc: Vec<ViewerHandle>,
    webrtc_failed: usize,
    hls: Vec<(Arc<Mutex<HlsViewerStats>>, tokio::task::JoinHandle<()>)>,
    hls_stop: watch::Sender<bool>,
    latency: Arc<LatencyRecorder>,
}

/// Counters read each second, to difference.
#[derive(Debug, Clone, Default)]
struct Totals {
    video_packets: u64,
    video_lost: u64,
    webrtc_bytes: u64,
    hls_bytes: u64,
    hls_stalls: u64,
    latency: LatencyHistogram,
    server: Option<procfs::ProcSample>,
    harness: Option<procfs::ProcSample>,
    at: Option<Instant>,
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1000.0)
}

/// Lost packets as a percentage of those sent (received + lost); `None` when none were.
fn loss_pct(lost: u64, received: u64) -> Option<f64> {
    (lost + received > 0).then(|| lost as f64 * 100.0 / (lost + received) as f64)
}

/// The per-second samples of a run: each point is what changed since the previous sample.
struct Timeline {
    started: Instant,
    server_pid: Option<u32>,
    progress: Option<Progress>,
    /// The latest totals (the previous sample's, before `tick`).
    last: Totals,
    points: Vec<Point>,
}

impl Timeline {
    /// Points are timed from `started` (the run's start).
    fn new(
        started: Instant,
        sessions: &Sessions,
        server_pid: Option<u32>,
        progress: Option<Progress>,
    ) -> Self {
        Timeline {
            started,
            server_pid,
            progress,
            last: sessions.totals(server_pid),
            points: Vec::new(),
        }
    }

    /// Sample now: one point, shown as progress.
    fn tick(&mut self, sessions: &Sessions, publishers_up: usize) -> &Point {
        let now = sessions.totals(self.server_pid);
        let point = sessions.point(self.started, &self.last, &now, publishers_up);
        if let Some(p) = &self.progress {
            p(&point);
        }
        self.last = now;
        self.points.push(point);
        &self.points[self.points.len() - 1]
    }
}

impl Sessions {
    /// WebRTC viewers connected and not ended.
    fn webrtc_connected(&self) -> usize {
        self.webrtc
            .iter()
            .filter(|v| {
                let s = v.stats();
                s.connected_after.is_some() && s.ended.is_none()
            })
            .count()
    }

    fn new(hls_stop: watch::Sender<bool>) -> Self {
        Sessions {
            webrtc: Vec::new(),
            webrtc_failed: 0,
            hls: Vec::new(),
            hls_stop,
            latency: Arc::default(),
        }
    }

    /// How this run's WebRTC viewers connect: one shared DTLS certificate (generating one per
    /// peer costs the harness CPU and says nothing about the server), no BYE detection (it
    /// copies every packet), patterns checked only for synthetic media, latency recorded here.
    fn viewer_config(
        &self,
        server: &str,
        stream: &str,
        http: &reqwest::Client,
        media: Media,
        connect_timeout: Duration,
    ) -> ViewConfig {
        ViewConfig {
            connect_timeout,
            http: Some(http.clone()),
            dtls_cert: str0m::crypto::from_feature_flags()
                .dtls_provider
                .generate_certificate(),
            detect_bye: false,
            check_patterns: media == Media::Synthetic,
            latency: Some(self.latency.clone()),
            ..ViewConfig::new(server, stream)
        }
    }

    fn totals(&self, server_pid: Option<u32>) -> Totals {
        let mut t = Totals {
            latency: self.latency.snapshot(),
            server: server_pid.and_then(|p| procfs::sample(p).ok()),
            harness: procfs::sample(std::process::id()).ok(),
            at: Some(Instant::now()),
            ..Totals::default()
        };
        for v in &self.webrtc {
            let s = v.stats();
            t.video_packets += s.video.packets;
            t.video_lost += s.video.lost;
            t.webrtc_bytes += s.video.bytes + s.audio.bytes;
        }
        for (s, _) in &self.hls {
            let s = s.lock().unwrap_or_else(|e| e.into_inner());
            t.hls_bytes += s.bytes;
            t.hls_stalls += s.stalls;
        }
        t
    }

    fn point(&self, started: Instant, prev: &Totals, now: &Totals, publishers_up: usize) -> Point {
        let secs = match (prev.at, now.at) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64().max(1e-3),
            _ => 1.0,
        };
        let window = now.latency.since(&prev.latency);
        let packets = now.video_packets.saturating_sub(prev.video_packets);
        let lost = now.video_lost.saturating_sub(prev.video_lost);
        let cpu_pct = |a: &Option<procfs::ProcSample>, b: &Option<procfs::ProcSample>| match (a, b)
        {
            (Some(a), Some(b)) => Some(b.cpu.saturating_sub(a.cpu).as_secs_f64() * 100.0 / secs),
            _ => None,
        };
        Point {
            t: started.elapsed().as_secs_f64(),
            webrtc_connected: self.webrtc_connected(),
            hls_playing: self
                .hls
                .iter()
                .filter(|(s, _)| {
                    let s = s.lock().unwrap_or_else(|e| e.into_inner());
                    s.startup.is_some() && s.failed.is_none()
                })
                .count(),
            publishers_up,
            latency_p50_ms: ms(window.percentile(50.0)),
            latency_p95_ms: ms(window.percentile(95.0)),
            latency_p99_ms: ms(window.percentile(99.0)),
            video_loss_pct: loss_pct(lost, packets),
            webrtc_rx_mbps: now.webrtc_bytes.saturating_sub(prev.webrtc_bytes) as f64 * 8.0
                / secs
                / 1e6,
            hls_stalls: now.hls_stalls,
            server_cpu_pct: cpu_pct(&prev.server, &now.server),
            server_rss_mib: now.server.map(|s| s.rss_kib as f64 / 1024.0),
            harness_cpu_pct: cpu_pct(&prev.harness, &now.harness),
        }
    }
}

/// A `glint_*` counter from the server's `/metrics`.
pub async fn metric(http: &reqwest::Client, server: &str, name: &str) -> Option<u64> {
    let text = http
        .get(format!("{}/metrics", server.trim_end_matches('/')))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("glint_{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Is `stream` live (per `/api/live`)?
async fn is_live(http: &reqwest::Client, server: &str, stream: &str) -> bool {
    let Ok(resp) = http
        .get(format!("{}/api/live", server.trim_end_matches('/')))
        .send()
        .await
    else {
        return false;
    };
    let live: serde_json::Value = resp.json().await.unwrap_or_default();
    live.as_array()
        .is_some_and(|a| a.iter().any(|s| s["name"] == stream && s["live"] == true))
}

/// Progress on stderr: one line a second.
pub type Progress = Box<dyn Fn(&Point) + Send + Sync>;

/// Runs `scenario` to the end and reports.
pub async fn run(scenario: Scenario, progress: Option<Progress>) -> Result<ScenarioReport, String> {
    scenario.validate()?;
    let started = Instant::now();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| e.to_string())?;
    let connect_timeout = Duration::from_secs(scenario.connect_timeout_secs);
    // Publishers first; viewers need something to watch.
    let mut publishers = Publishers::start(
        &scenario.publishers,
        &scenario.server,
        &http,
        scenario.media,
        connect_timeout,
    )
    .await?;

    let (hls_stop, hls_stop_rx) = watch::channel(false);
    let mut sessions = Sessions::new(hls_stop);
    let view_cfg = sessions.viewer_config(
        &scenario.server,
        &scenario.stream,
        &http,
        scenario.media,
        connect_timeout,
    );
    let master = format!(
        "{}/hls/{}/master.m3u8",
        scenario.server.trim_end_matches('/'),
        scenario.stream
    );

    // Chat runs beside, for as long as the rest.
    let chat = (scenario.chat_clients > 0).then(|| {
        let load = crate::chat::ChatLoad {
            server: scenario.server.clone(),
            readers: scenario.chat_clients,
            // The server lets a user send 5 messages per 5 s: senders to spare at that limit.
            senders: ((scenario.chat_rate * 1.5).ceil() as usize + 1).clamp(1, 1000),
            rate: scenario.chat_rate,
            duration: Duration::from_secs(scenario.duration_secs),
            server_pid: None,
            ramp: scenario.ramp_per_sec.max(100.0),
            reader_servers: Vec::new(),
            other_pids: Vec::new(),
        };
        tokio::spawn(crate::chat::run(load))
    });

    // Ramp: WebRTC and HLS viewers interleaved at the ramp rate.
    let ramp_started = Instant::now();
    let mut timeline = Timeline::new(started, &sessions, scenario.server_pid, progress);
    let mut next_point = Instant::now() + Duration::from_secs(1);
    let gap = Duration::from_secs_f64(1.0 / scenario.ramp_per_sec);
    let (mut webrtc_left, mut hls_left) = (scenario.webrtc_viewers, scenario.hls_viewers);
    let mut next_start = Instant::now();
    while webrtc_left + hls_left > 0 {
        if webrtc_left * scenario.hls_viewers.max(1) >= hls_left * scenario.webrtc_viewers.max(1)
            && webrtc_left > 0
        {
            webrtc_left -= 1;
            match view(view_cfg.clone()).await {
                Ok(v) => sessions.webrtc.push(v),
                Err(_) => sessions.webrtc_failed += 1,
            }
        } else {
            hls_left -= 1;
            let stats = Arc::new(Mutex::new(HlsViewerStats::default()));
            let cfg = HlsViewConfig {
                rendition: scenario.hls_rendition,
                low_latency: scenario.hls_low_latency,
                ..HlsViewConfig::new(&master, http.clone())
            };
            let task = tokio::spawn(crate::hls::watch(cfg, stats.clone(), hls_stop_rx.clone()));
            sessions.hls.push((stats, task));
        }
        next_start += gap;
        tokio::time::sleep_until(next_start.into()).await;
        if Instant::now() >= next_point {
            next_point += Duration::from_secs(1);
            timeline.tick(&sessions, publishers.up());
        }
    }
    let ramp_secs = ramp_started.elapsed().as_secs_f64();

    // Hold.
    let hold_started = Instant::now();
    let hold_end = hold_started + Duration::from_secs(scenario.duration_secs);
    let hold_totals = sessions.totals(scenario.server_pid);
    let forwarded_before = metric(&http, &scenario.server, "rtp_packets_forwarded_total").await;
    let mut ticker = tokio::time::interval_at(next_point.into(), Duration::from_secs(1));
    while Instant::now() < hold_end {
        tokio::select! {
            () = tokio::time::sleep_until(hold_end.into()) => break,
            _ = ticker.tick() => {
                timeline.tick(&sessions, publishers.up());
            }
        }
    }
    let hold_secs = hold_started.elapsed().as_secs_f64();
    let end_totals = sessions.totals(scenario.server_pid);
    let forwarded_after = metric(&http, &scenario.server, "rtp_packets_forwarded_total").await;
    let (whip_up, rtmp_up) = publishers.up_by_kind();

    // Summaries, then stop everything.
    let webrtc = summarize_webrtc(&sessions, &hold_totals, &end_totals, hold_secs);
    let hls = summarize_hls(&sessions, &hold_totals, &end_totals, hold_secs);
    let timeline = timeline.points;
    let server = summarize_server(
        &timeline,
        &hold_totals,
        &end_totals,
        forwarded_before
            .zip(forwarded_after)
            .map(|(a, b)| b.saturating_sub(a)),
        webrtc.connected + hls.playing,
    );
    let harness_cpu: Vec<f64> = timeline.iter().filter_map(|p| p.harness_cpu_pct).collect();
    let harness_rss_mib_max = procfs::sample(std::process::id())
        .ok()
        .map(|s| s.rss_kib as f64 / 1024.0);
    let _ = sessions.hls_stop.send(true);
    for (_, task) in sessions.hls {
        let _ = task.await;
    }
    let stops = sessions.webrtc.into_iter().map(|v| v.stop());
    futures_util::future::join_all(stops).await;
    let chat = match chat {
        Some(task) => match task.await {
            Ok(Ok(report)) => Some(report),
            Ok(Err(e)) => return Err(format!("chat: {e}")),
            Err(e) => return Err(format!("chat: {e}")),
        },
        None => None,
    };
    publishers.stop().await;
    Ok(ScenarioReport {
        scenario,
        whip_publishers_up: whip_up,
        rtmp_publishers_up: rtmp_up,
        webrtc,
        hls,
        chat,
        server,
        harness_cpu_pct_mean: mean(&harness_cpu),
        harness_rss_mib_max,
        ramp_secs,
        hold_secs,
        timeline,
    })
}

/// A run's publishers, started and on air.
struct Publishers {
    whip: Vec<PublisherHandle>,
    rtmp: Vec<rtmp::RtmpPublisher>,
}

impl Publishers {
    /// Start `specs` and wait (≤ 20 s) until each one's stream is live.
    async fn start(
        specs: &[PublisherSpec],
        server: &str,
        http: &reqwest::Client,
        media: Media,
        connect_timeout: Duration,
    ) -> Result<Self, String> {
        let clip = (media == Media::Clip).then(crate::clip::builtin);
        let mut started = Publishers {
            whip: Vec::new(),
            rtmp: Vec::new(),
        };
        for p in specs {
            if let Err(e) = started.add(p, server, http, &clip, connect_timeout).await {
                started.stop().await;
                return Err(e);
            }
        }
        for p in specs {
            if !wait_live(http, server, &p.stream).await {
                started.stop().await;
                return Err(format!("stream {} did not go live", p.stream));
            }
        }
        Ok(started)
    }

    async fn add(
        &mut self,
        p: &PublisherSpec,
        server: &str,
        http: &reqwest::Client,
        clip: &Option<Arc<crate::clip::Clip>>,
        connect_timeout: Duration,
    ) -> Result<(), String> {
        match p.kind {
            PublisherKind::Whip => {
                let cfg = PublishConfig {
                    clip: clip.clone(),
                    connect_timeout,
                    http: Some(http.clone()),
                    ..PublishConfig::new(server, &p.stream, &p.key)
                };
                let handle = publish(cfg)
                    .await
                    .map_err(|e| format!("WHIP publisher {}: {e}", p.stream))?;
                handle
                    .wait_connected(connect_timeout)
                    .await
                    .map_err(|e| format!("WHIP publisher {} did not connect: {e}", p.stream))?;
                self.whip.push(handle);
            }
            PublisherKind::Rtmp => {
                let base = rtmp::base_for(http, server)
                    .await
                    .map_err(|e| e.to_string())?;
                self.rtmp
                    .push(rtmp::publish(&base, &p.key).map_err(|e| e.to_string())?);
            }
        }
        Ok(())
    }

    /// (WHIP, RTMP) publishers still sending.
    fn up_by_kind(&mut self) -> (usize, usize) {
        let whip = self
            .whip
            .iter()
            .filter(|p| {
                let s = p.stats();
                s.connected_after.is_some() && s.ended.is_none()
            })
            .count();
        let rtmp = self
            .rtmp
            .iter_mut()
            .map(|p| p.running())
            .filter(|&r| r)
            .count();
        (whip, rtmp)
    }

    fn up(&mut self) -> usize {
        let (w, r) = self.up_by_kind();
        w + r
    }

    async fn stop(self) {
        for p in self.whip {
            let _ = p.stop().await;
        }
        for p in self.rtmp {
            p.stop().await;
        }
    }
}

/// Wait (≤ 20 s) until `stream` is live; false if it never was.
async fn wait_live(http: &reqwest::Client, server: &str, stream: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !is_live(http, server, stream).await {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    true
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn summarize_webrtc(
    s: &Sessions,
    before: &Totals,
    after: &Totals,
    hold_secs: f64,
) -> WebrtcSummary {
    let stats: Vec<_> = s.webrtc.iter().map(|v| v.stats()).collect();
    let connect: Vec<Duration> = stats.iter().filter_map(|s| s.connected_after).collect();
    let keyframe: Vec<Duration> = stats
        .iter()
        .filter_map(|s| s.first_keyframe_after)
        .collect();
    let connect_d = crate::report::Distribution::of(connect.iter().copied());
    let keyframe_d = crate::report::Distribution::of(keyframe.iter().copied());
    let jitter = crate::report::Distribution::of(
        stats
            .iter()
            .filter_map(|s| s.video_jitter_us)
            .map(Duration::from_micros),
    );
    let packets: u64 = stats.iter().map(|s| s.video.packets).sum();
    let lost: u64 = stats.iter().map(|s| s.video.lost).sum();
    let latency = after.latency.since(&before.latency);
    let connected = connect.len();
    WebrtcSummary {
        started: s.webrtc.len() + s.webrtc_failed,
        connected,
        failed: s.webrtc_failed + stats.iter().filter(|s| s.connected_after.is_none()).count(),
        connect_p50_ms: connect_d.median_ms,
        connect_p95_ms: connect_d.p95_ms,
        first_keyframe_p50_ms: keyframe_d.median_ms,
        first_keyframe_p95_ms: keyframe_d.p95_ms,
        video_packets: packets,
        video_lost: lost,
        video_loss_pct: loss_pct(lost, packets).unwrap_or(0.0),
        freezes: stats.iter().map(|s| s.video.stalls).sum(),
        nacks_sent: stats.iter().map(|s| s.video_nacks_sent).sum(),
        jitter_p50_ms: jitter.median_ms,
        jitter_p95_ms: jitter.p95_ms,
        latency_p50_ms: ms(latency.percentile(50.0)),
        latency_p95_ms: ms(latency.percentile(95.0)),
        latency_p99_ms: ms(latency.percentile(99.0)),
        rx_mbps_per_viewer: (connected > 0 && hold_secs > 0.0).then(|| {
            after.webrtc_bytes.saturating_sub(before.webrtc_bytes) as f64 * 8.0
                / hold_secs
                / 1e6
                / connected as f64
        }),
    }
}

fn summarize_hls(s: &Sessions, before: &Totals, after: &Totals, hold_secs: f64) -> HlsSummary {
    let stats: Vec<HlsViewerStats> = s
        .hls
        .iter()
        .map(|(s, _)| s.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .collect();
    let startup = crate::report::Distribution::of(stats.iter().filter_map(|s| s.startup));
    let behind: Vec<f64> = stats
        .iter()
        .filter_map(|s| s.behind_live_edge)
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    let playing = stats
        .iter()
        .filter(|s| s.startup.is_some() && s.failed.is_none())
        .count();
    HlsSummary {
        started: stats.len(),
        playing,
        failed: stats.iter().filter(|s| s.failed.is_some()).count(),
        startup_p50_ms: startup.median_ms,
        startup_p95_ms: startup.p95_ms,
        segments: stats.iter().map(|s| s.segments).sum(),
        parts: stats.iter().map(|s| s.parts).sum(),
        stalls: stats.iter().map(|s| s.stalls).sum(),
        stalled_ms: stats.iter().map(|s| s.stalled.as_secs_f64() * 1000.0).sum(),
        behind_live_edge_mean_ms: mean(&behind),
        errors: stats.iter().map(|s| s.errors).sum(),
        failures: stats.iter().filter_map(|s| s.failed.clone()).fold(
            std::collections::BTreeMap::new(),
            |mut m, f| {
                *m.entry(f).or_insert(0) += 1;
                m
            },
        ),
        rx_mbps_per_viewer: (playing > 0 && hold_secs > 0.0).then(|| {
            after.hls_bytes.saturating_sub(before.hls_bytes) as f64 * 8.0
                / hold_secs
                / 1e6
                / playing as f64
        }),
    }
}

fn summarize_server(
    timeline: &[Point],
    before: &Totals,
    after: &Totals,
    forwarded: Option<u64>,
    viewers: usize,
) -> ServerSummary {
    let cpu: Vec<f64> = timeline.iter().filter_map(|p| p.server_cpu_pct).collect();
    let (cpu_us_per_forwarded_packet, rss_kib_per_viewer) = match (before.server, after.server) {
        (Some(a), Some(b)) => (
            forwarded
                .filter(|&n| n > 0)
                .map(|n| b.cpu.saturating_sub(a.cpu).as_secs_f64() * 1e6 / n as f64),
            (viewers > 0).then(|| b.rss_kib as f64 / viewers as f64),
        ),
        _ => (None, None),
    };
    ServerSummary {
        cpu_pct_mean: mean(&cpu),
        cpu_us_per_forwarded_packet,
        packets_forwarded: forwarded,
        rss_mib_max: timeline
            .iter()
            .filter_map(|p| p.server_rss_mib)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v)))),
        rss_kib_per_viewer,
    }
}

impl ScenarioReport {
    /// The summary as a text table.
    pub fn human(&self) -> String {
        use std::fmt::Write;
        let f = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.1}"));
        let mut out = String::new();
        let w = &self.webrtc;
        let h = &self.hls;
        let _ = writeln!(
            out,
            "ramp {:.1} s, hold {:.1} s; publishers up: {} WHIP, {} RTMP",
            self.ramp_secs, self.hold_secs, self.whip_publishers_up, self.rtmp_publishers_up
        );
        let _ = writeln!(out, "{:<28} {:>12}", "", "value");
        let mut row = |k: &str, v: String| {
            let _ = writeln!(out, "{k:<28} {v:>12}");
        };
        if w.started > 0 {
            row(
                "WebRTC viewers connected",
                format!("{}/{}", w.connected, w.started),
            );
            row(
                "  connect p50/p95 ms",
                format!("{}/{}", f(w.connect_p50_ms), f(w.connect_p95_ms)),
            );
            row(
                "  first keyframe p50/p95 ms",
                format!(
                    "{}/{}",
                    f(w.first_keyframe_p50_ms),
                    f(w.first_keyframe_p95_ms)
                ),
            );
            row(
                "  latency p50/p95/p99 ms",
                format!(
                    "{}/{}/{}",
                    f(w.latency_p50_ms),
                    f(w.latency_p95_ms),
                    f(w.latency_p99_ms)
                ),
            );
            row("  video loss %", format!("{:.3}", w.video_loss_pct));
            row("  freezes", w.freezes.to_string());
            row("  NACKs sent", w.nacks_sent.to_string());
            row(
                "  jitter p50/p95 ms",
                format!("{}/{}", f(w.jitter_p50_ms), f(w.jitter_p95_ms)),
            );
            row("  Mbit/s per viewer", f(w.rx_mbps_per_viewer));
        }
        if h.started > 0 {
            row(
                "HLS viewers playing",
                format!("{}/{}", h.playing, h.started),
            );
            row(
                "  startup p50/p95 ms",
                format!("{}/{}", f(h.startup_p50_ms), f(h.startup_p95_ms)),
            );
            row(
                "  stalls (ms stalled)",
                format!("{} ({:.0})", h.stalls, h.stalled_ms),
            );
            row("  behind live edge ms", f(h.behind_live_edge_mean_ms));
            row("  Mbit/s per viewer", f(h.rx_mbps_per_viewer));
        }
        if let Some(c) = &self.chat {
            row(
                "chat deliveries",
                format!("{}/{}", c.deliveries, c.deliveries_expected),
            );
            row(
                "  latency p50/p99 ms",
                format!("{:.1}/{:.1}", c.latency_p50_ms, c.latency_p99_ms),
            );
        }
        let s = &self.server;
        row("server CPU % (mean)", f(s.cpu_pct_mean));
        row(
            "  µs per forwarded packet",
            s.cpu_us_per_forwarded_packet
                .map_or("—".into(), |v| format!("{v:.2}")),
        );
        row("  RSS MiB (max)", f(s.rss_mib_max));
        row("harness CPU % (mean)", f(self.harness_cpu_pct_mean));
        out
    }
}

/// `capacity` mode: WebRTC viewers added in steps until quality degrades.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapacityConfig {
    pub server: String,
    pub stream: String,
    /// Publishers started first (usually one WHIP publisher of the clip).
    pub publishers: Vec<PublisherSpec>,
    pub media: Media,
    /// Viewers added per step, and how long each step is held before it is judged.
    pub step: usize,
    pub step_secs: u64,
    /// Stop here even if quality holds.
    pub max_viewers: usize,
    /// Degraded: video loss above this (percent) ...
    pub max_loss_pct: f64,
    /// ... or glass-to-glass p95 above this (ms), over a step's hold.
    pub max_p95_ms: f64,
    pub server_pid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapacityStep {
    pub viewers: usize,
    pub connected: usize,
    pub video_loss_pct: f64,
    pub latency_p95_ms: Option<f64>,
    pub server_cpu_pct: Option<f64>,
    pub server_rss_mib: Option<f64>,
    pub rx_mbps_per_viewer: Option<f64>,
    pub ok: bool,
}

#[derive(Debug, Serialize)]
pub struct CapacityReport {
    pub config: CapacityConfig,
    /// Viewers in the last step whose quality held (0 if the first step failed).
    pub capacity: usize,
    /// Why it stopped.
    pub stopped_because: String,
    pub steps: Vec<CapacityStep>,
    pub timeline: Vec<Point>,
}

/// Runs `capacity` mode to the first degraded step (or `max_viewers`).
pub async fn capacity(
    cfg: CapacityConfig,
    progress: Option<Progress>,
) -> Result<CapacityReport, String> {
    if cfg.step == 0 || cfg.step_secs < 3 || cfg.max_viewers == 0 || cfg.max_viewers > HARD_CAP {
        return Err(format!(
            "step ≥ 1, step_secs ≥ 3, 1 ≤ max_viewers ≤ {HARD_CAP}"
        ));
    }
    let started = Instant::now();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let mut publishers = Publishers::start(
        &cfg.publishers,
        &cfg.server,
        &http,
        cfg.media,
        Duration::from_secs(10),
    )
    .await?;
    if !wait_live(&http, &cfg.server, &cfg.stream).await {
        publishers.stop().await;
        return Err(format!("stream {} is not live", cfg.stream));
    }
    let (hls_stop, _) = watch::channel(false);
    let mut sessions = Sessions::new(hls_stop);
    let view_cfg = sessions.viewer_config(
        &cfg.server,
        &cfg.stream,
        &http,
        cfg.media,
        Duration::from_secs(10),
    );
    let mut steps = Vec::new();
    let mut timeline = Timeline::new(started, &sessions, cfg.server_pid, progress);
    let mut capacity = 0;
    let stopped_because = loop {
        let target =
            (sessions.webrtc.len() + sessions.webrtc_failed + cfg.step).min(cfg.max_viewers);
        while sessions.webrtc.len() + sessions.webrtc_failed < target {
            match view(view_cfg.clone()).await {
                Ok(v) => sessions.webrtc.push(v),
                Err(_) => sessions.webrtc_failed += 1,
            }
        }
        // Let the new viewers connect and settle, then judge the rest of the step.
        let settle = Duration::from_secs(2);
        let step_start = Instant::now();
        let hold_end = step_start + Duration::from_secs(cfg.step_secs);
        let mut judged_from: Option<Totals> = None;
        let mut cpu = Vec::new();
        while Instant::now() < hold_end {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let point = timeline.tick(&sessions, publishers.up());
            if judged_from.is_some() {
                cpu.extend(point.server_cpu_pct);
            } else if step_start.elapsed() >= settle {
                judged_from = Some(timeline.last.clone());
            }
        }
        let prev = &timeline.last;
        let from = judged_from.unwrap_or_else(|| prev.clone());
        let secs = from.at.map_or(1.0, |a| {
            prev.at
                .map_or(1.0, |b| b.duration_since(a).as_secs_f64().max(1e-3))
        });
        let packets = prev.video_packets.saturating_sub(from.video_packets);
        let lost = prev.video_lost.saturating_sub(from.video_lost);
        let loss = loss_pct(lost, packets).unwrap_or(100.0); // nothing arrived: degraded
        let p95 = ms(prev.latency.since(&from.latency).percentile(95.0));
        let connected = sessions.webrtc_connected();
        let viewers = sessions.webrtc.len() + sessions.webrtc_failed;
        let ok = loss <= cfg.max_loss_pct
            && p95.is_some_and(|p| p <= cfg.max_p95_ms)
            && connected == viewers;
        steps.push(CapacityStep {
            viewers,
            connected,
            video_loss_pct: loss,
            latency_p95_ms: p95,
            server_cpu_pct: mean(&cpu),
            server_rss_mib: prev.server.map(|s| s.rss_kib as f64 / 1024.0),
            rx_mbps_per_viewer: (connected > 0).then(|| {
                prev.webrtc_bytes.saturating_sub(from.webrtc_bytes) as f64 * 8.0
                    / secs
                    / 1e6
                    / connected as f64
            }),
            ok,
        });
        if !ok {
            break format!(
                "at {viewers} viewers: {connected} connected, loss {loss:.2} %, p95 {}",
                p95.map_or("—".into(), |p| format!("{p:.0} ms"))
            );
        }
        capacity = viewers;
        if viewers >= cfg.max_viewers {
            break format!("reached max_viewers ({})", cfg.max_viewers);
        }
    };
    let stops = sessions.webrtc.into_iter().map(|v| v.stop());
    futures_util::future::join_all(stops).await;
    publishers.stop().await;
    Ok(CapacityReport {
        config: cfg,
        capacity,
        stopped_because,
        steps,
        timeline: timeline.points,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_parse_and_are_bounded() {
        let s = Scenario::from_toml(
            r#"
            server = "http://127.0.0.1:9"
            duration_secs = 5
            webrtc_viewers = 10
            hls_viewers = 5
            hls_rendition = "highest"
            [[publishers]]
            stream = "demo"
            key = "k"
            [[publishers]]
            kind = "rtmp"
            stream = "other"
            key = "k2"
            "#,
        )
        .unwrap();
        assert_eq!(s.publishers[0].kind, PublisherKind::Whip);
        assert_eq!(s.publishers[1].kind, PublisherKind::Rtmp);
        assert_eq!(s.hls_rendition, Rendition::Highest);
        assert_eq!(s.media, Media::Clip);
        for bad in [
            "duration_secs = 0\nwebrtc_viewers = 1",
            "duration_secs = 99999\nwebrtc_viewers = 1",
            "webrtc_viewers = 30000",
            "max_sessions = 10\nwebrtc_viewers = 11",
            "ramp_per_sec = 0\nwebrtc_viewers = 1",
            "",
            "webrtc_viewers = 1\nbogus = 1",
        ] {
            assert!(Scenario::from_toml(bad).is_err(), "{bad:?}");
        }
    }
}
