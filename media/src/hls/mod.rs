//! HLS for mass audiences: every live stream (WHIP or RTMP) is also turned into an HLS ladder.
//!
//! - `probe.rs`: the input's picture size from its first keyframe (so the ladder never upscales).
//! - `ladder.rs`: which renditions a stream gets, and its master playlist.
//! - `transcoder.rs`: the GStreamer pipeline per stream (source passed through, ladder encoded,
//!   audio as AAC, keyframes aligned), encoded frames out of an `appsink` per rendition.
//! - `packager.rs`: a stream's renditions' segmenters; parts to the live registry, segments and
//!   standard playlists to the store.
//! - `segmenter.rs`: frames → fMP4 parts (~1/3 s) and segments (closed at the keyframe that
//!   ends them); `fmp4.rs`: the boxes.
//! - `playlist.rs`: a media playlist as data, rendered standard or Low-Latency, and blocking
//!   reloads decided; `live.rs`: the live renditions glint serves as LL-HLS origin.
//! - `replay.rs`: a finished broadcast kept as video on demand, and its deletion when it expires.
//! - `store.rs`: where objects go (a local directory by default), written by the uploader
//!   (parallel writes, segments before the playlists that name them, backpressure).
//! - `s3.rs`: S3 (or a compatible service) as the store.
//!
//! The SFU hands each live stream's RTP to an [`HlsTap`] (a copy per packet, never blocking:
//! a full queue drops and counts). The tap's task waits for the first keyframe, measures the
//! frame rate over ten frames, plans the renditions, and starts the packager and the
//! transcoder. When the stream goes offline the tap is dropped: the packager ends its
//! playlists with `#EXT-X-ENDLIST`, and (replays on) the broadcast's VOD playlists are written
//! and the [`Replay`] is announced on a channel of its own
//! ([`crate::MediaHandle::subscribe_replays`]): the SFU's stream events know nothing of HLS.

pub mod fmp4;
pub mod ladder;
pub mod live;
pub mod packager;
pub mod playlist;
pub mod probe;
pub mod replay;
pub mod s3;
pub mod segmenter;
pub mod store;
pub mod transcoder;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rtc::rtp;
use rtc::shared::marshal::Marshal;
use tokio::sync::{broadcast, mpsc};
use tracing::{info, warn};

use crate::codec::{self, MediaKind, PayloadFormat};
use crate::metrics::Metrics;
use crate::sfu::StreamTap;
use ladder::{Input, Rendition, Rung};
pub use live::{LiveHls, PlaylistError};
use replay::{Recording, Replay, ReplayBudget, Replays};
use store::{Kind, LocalDir, Uploads};
use transcoder::{AudioInput, Settings, Transcoder, VideoInput};

#[derive(Debug, Clone)]
pub struct HlsConfig {
    /// Local directory the objects are written to (served at `/hls/`).
    pub dir: PathBuf,
    pub segment: Duration,
    /// Segments in a live media playlist.
    pub window: u32,
    pub ladder: Vec<Rung>,
    pub audio_kbps: u32,
    /// Store in S3 instead of `dir`.
    pub s3: Option<s3::S3Config>,
    /// Keep each broadcast as a replay (its segments are not deleted when they leave the live
    /// window; the platform deletes the replay when it expires).
    pub replays: bool,
    /// Bytes of segments one broadcast keeps for its replay; beyond, segments are deleted as
    /// they leave the live window.
    pub replay_max_bytes: u64,
    /// Objects written to the store at once.
    pub upload_concurrency: usize,
    /// Streams whose HLS encodes video (a ladder) at once. Each 720p input's default ladder
    /// takes most of a core, and accounts are free: beyond this, an H.264 stream gets its
    /// source rendition only (passed through, no encoding) and a VP8 stream no HLS (its
    /// WebRTC viewers are not affected).
    pub max_ladders: usize,
    /// glint serves Low-Latency HLS playlists and parts of live streams at `/hls/` (blocking
    /// reloads need it as origin). Off, `/hls/` serves the store's standard playlists only.
    pub low_latency: bool,
}

impl HlsConfig {
    /// 2 s segments, a 6-segment live window, the default ladder, AAC at 128 kbit/s, replays
    /// of up to 32 GB, 8 parallel uploads.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            segment: Duration::from_secs(2),
            window: 6,
            ladder: ladder::default_ladder(),
            audio_kbps: 128,
            s3: None,
            replays: true,
            replay_max_bytes: replay::DEFAULT_MAX_BYTES,
            upload_concurrency: store::DEFAULT_UPLOAD_CONCURRENCY,
            max_ladders: default_max_ladders(),
            low_latency: true,
        }
    }
}

/// One ladder per core by default (docs/benchmarks.md: ~80 % of a core each for 720p).
pub fn default_max_ladders() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Starts a transcoder task per live stream; owned by the media thread, whose loop calls
/// [`Hls::tap`], but its tasks run on the runtime it was made on (the main one): a transcoder
/// task waits on GStreamer and the store, and must not hold up the media loop.
pub struct Hls {
    /// Where the transcoder tasks are spawned.
    runtime: tokio::runtime::Handle,
    config: Arc<HlsConfig>,
    store: Arc<dyn store::SegmentStore>,
    uploads: Uploads,
    metrics: Arc<Metrics>,
    /// Where finished broadcasts are announced.
    replays: broadcast::Sender<Replay>,
    /// Permits to encode a ladder (`HlsConfig::max_ladders`).
    ladders: Arc<tokio::sync::Semaphore>,
    /// Live renditions, served by the binary's `/hls/`.
    live: LiveHls,
}

/// RTP packets a stream's tap may queue for its transcoder task.
const TAP_QUEUE: usize = 4096;
/// Payload types of the pipeline's RTP caps. Publishers negotiate their own (Chromium, str0m
/// and OBS differ), so the tap rewrites each packet's to these: rtpjitterbuffer drops packets
/// whose payload type differs from its caps.
pub(crate) const VIDEO_CAPS_PT: u8 = 96;
pub(crate) const AUDIO_CAPS_PT: u8 = 111;
/// Packets kept from the first keyframe while the frame rate is measured.
const MAX_PENDING: usize = 4096;
/// Frames measured for the frame rate.
const FPS_FRAMES: usize = 10;
/// How long (90 kHz video clock) a ladder waits for the stream's audio before starting without.
const AUDIO_WAIT_90KHZ: u64 = 90_000 * 3 / 2;

impl Hls {
    /// `replays`: where finished broadcasts are announced (replays on). Its tasks (the
    /// uploader now, a transcoder per stream later) run on the runtime this is called on.
    pub async fn new(
        config: HlsConfig,
        metrics: Arc<Metrics>,
        replays: broadcast::Sender<Replay>,
    ) -> Self {
        let store: Arc<dyn store::SegmentStore> = match &config.s3 {
            Some(c) => {
                info!(bucket = %c.bucket, endpoint = ?c.endpoint, prefix = %c.prefix, "HLS objects go to S3");
                Arc::new(s3::S3Store::new(c).await)
            }
            None => Arc::new(LocalDir::new(config.dir.clone())),
        };
        let limits = store::UploadLimits {
            concurrency: config.upload_concurrency,
            ..store::UploadLimits::default()
        };
        let uploads = store::spawn_uploader(store.clone(), metrics.clone(), limits);
        Self {
            runtime: tokio::runtime::Handle::current(),
            store,
            ladders: Arc::new(tokio::sync::Semaphore::new(config.max_ladders)),
            live: LiveHls::new(config.low_latency, metrics.clone()),
            config: Arc::new(config),
            uploads,
            metrics,
            replays,
        }
    }

    /// The live renditions, for the HTTP side.
    pub fn live(&self) -> LiveHls {
        self.live.clone()
    }

    /// Deletes expired replays.
    pub fn replays(&self) -> Replays {
        Replays {
            store: self.store.clone(),
        }
    }

    /// The segment duration: how often publishers are asked for a keyframe.
    pub fn segment(&self) -> Duration {
        self.config.segment
    }

    /// A tap for `stream`, with its transcoder task (on [`Hls`]'s runtime, not the caller's).
    pub fn tap(&self, stream: &str) -> HlsTap {
        let (tx, rx) = mpsc::channel(TAP_QUEUE);
        self.runtime.spawn(run(
            stream.to_owned(),
            Shared {
                config: self.config.clone(),
                uploads: self.uploads.clone(),
                metrics: self.metrics.clone(),
                replays: self.replays.clone(),
                ladders: self.ladders.clone(),
                live: self.live.clone(),
            },
            rx,
        ));
        HlsTap {
            tx,
            metrics: self.metrics.clone(),
        }
    }
}

enum TapMsg {
    Packet(TapPacket),
    /// An ingest publisher's AAC frame as it came, on the video RTP clock.
    Aac {
        config: Bytes,
        frame: Bytes,
        video_ts: u32,
    },
    /// The publisher reconnected: what follows is a new source.
    NewSource,
}

struct TapPacket {
    kind: MediaKind,
    format: PayloadFormat,
    timestamp: u32,
    keyframe: bool,
    /// The keyframe's picture size and H.264 profile-level-id, when it carries them.
    size: Option<(probe::Size, Option<String>)>,
    packet: rtp::Packet,
}

impl TapPacket {
    /// The packet as the transcoder's `appsrc` takes it: marshalled, with the payload type its
    /// caps name.
    fn into_rtp(self) -> Option<Bytes> {
        let mut rtp = self.packet.marshal().ok()?;
        let pt = match self.kind {
            MediaKind::Video => VIDEO_CAPS_PT,
            MediaKind::Audio => AUDIO_CAPS_PT,
        };
        // RFC 3550 §5.1: the second byte is the marker bit and the 7-bit payload type.
        if let Some(b) = rtp.get_mut(1) {
            *b = (*b & 0x80) | pt;
        }
        Some(rtp.freeze())
    }
}

/// One stream's RTP, copied to its transcoder task.
pub struct HlsTap {
    tx: mpsc::Sender<TapMsg>,
    metrics: Arc<Metrics>,
}

impl StreamTap for HlsTap {
    fn rtp(
        &mut self,
        kind: MediaKind,
        format: PayloadFormat,
        packet: &rtp::Packet,
        keyframe: bool,
    ) {
        let size = if keyframe {
            picture_size(format, &packet.payload)
        } else {
            None
        };
        let p = TapPacket {
            kind,
            format,
            timestamp: packet.header.timestamp,
            keyframe,
            size,
            // Marshalled on the HLS task (`TapPacket::into_rtp`), not on the media thread:
            // the clone shares the payload and, without extensions, allocates nothing.
            packet: packet.clone(),
        };
        if self.tx.try_send(TapMsg::Packet(p)).is_err() {
            Metrics::add(&self.metrics.hls_packets_dropped, 1);
        }
    }

    fn source_changed(&mut self) {
        let _ = self.tx.try_send(TapMsg::NewSource);
    }

    fn aac(&mut self, config: &Bytes, frame: Bytes, video_ts: u32) {
        let msg = TapMsg::Aac {
            config: config.clone(),
            frame,
            video_ts,
        };
        if self.tx.try_send(msg).is_err() {
            Metrics::add(&self.metrics.hls_packets_dropped, 1);
        }
    }
}

/// A measured frame rate, snapped to the common one it is close to (RTMP's millisecond clock
/// makes 30 fps measure 30.03).
fn snap_fps(measured: f64) -> f64 {
    const COMMON: [f64; 9] = [15.0, 23.976, 24.0, 25.0, 29.97, 30.0, 50.0, 59.94, 60.0];
    COMMON
        .into_iter()
        .min_by(|a, b| (a - measured).abs().total_cmp(&(b - measured).abs()))
        .filter(|c| (c - measured).abs() / c < 0.01)
        .unwrap_or_else(|| measured.clamp(1.0, 120.0))
}

fn picture_size(format: PayloadFormat, payload: &[u8]) -> Option<(probe::Size, Option<String>)> {
    match format {
        PayloadFormat::H264 => {
            let sps = codec::h264_sps(payload)?;
            let pli = sps
                .get(1..4)
                .map(|p| format!("{:02x}{:02x}{:02x}", p[0], p[1], p[2]));
            Some((probe::h264_sps_size(sps)?, pli))
        }
        PayloadFormat::Vp8 => {
            let start = codec::vp8_frame_start(payload)?;
            Some((probe::vp8_keyframe_size(&payload[start..])?, None))
        }
        _ => None,
    }
}

/// One stream's transcoder task: runs until the tap is dropped.
/// What every stream's transcoder task shares (from [`Hls`]).
struct Shared {
    config: Arc<HlsConfig>,
    uploads: Uploads,
    metrics: Arc<Metrics>,
    replays: broadcast::Sender<Replay>,
    ladders: Arc<tokio::sync::Semaphore>,
    live: LiveHls,
}

async fn run(stream: String, shared: Shared, mut rx: mpsc::Receiver<TapMsg>) {
    let Shared {
        config,
        uploads,
        metrics,
        replays,
        ladders,
        live,
    } = shared;
    // Held while this stream's HLS encodes video.
    let mut ladder_permit: Option<tokio::sync::OwnedSemaphorePermit> = None;
    let mut pending: Vec<TapPacket> = Vec::new();
    let mut input: Option<(PayloadFormat, probe::Size, Option<String>)> = None;
    let mut frame_times: Vec<u32> = Vec::new();
    let mut saw_audio = false;
    // An ingest publisher's AAC (config, pending frames): HLS takes it as it came instead of
    // re-encoding the Opus made of it for WebRTC.
    let mut aac: Option<Bytes> = None;
    let mut pending_aac: Vec<(Bytes, u32)> = Vec::new();
    let mut running: Option<Transcoder> = None;
    let mut packager: Option<tokio::task::JoinHandle<()>> = None;
    let mut recordings: Vec<(String, Arc<Recording>)> = Vec::new();
    let mut planned: Vec<Rendition> = Vec::new();
    let mut epoch = 0u64;
    let mut failed = false;
    let mut pushed = 0u64;
    while let Some(msg) = rx.recv().await {
        if failed {
            continue;
        }
        let p = match msg {
            TapMsg::Packet(p) => p,
            TapMsg::Aac {
                config,
                frame,
                video_ts,
            } => {
                saw_audio = true;
                if let Some(t) = &running {
                    if !t.push_aac(&config, frame, video_ts) {
                        Metrics::add(&metrics.hls_packets_dropped, 1);
                    }
                } else if input.is_some() && pending_aac.len() < MAX_PENDING {
                    pending_aac.push((frame, video_ts));
                }
                aac = Some(config);
                continue;
            }
            TapMsg::NewSource => {
                if let Some(t) = &running {
                    info!(%stream, "publisher reconnected: HLS discontinuity");
                    t.discontinuity();
                }
                continue;
            }
        };
        if let Some(t) = &running {
            let kind = p.kind;
            let ok = match (kind, p.into_rtp()) {
                (MediaKind::Video, Some(rtp)) => t.push_video(rtp),
                (MediaKind::Audio, Some(rtp)) => t.push_audio(rtp),
                (_, None) => false,
            };
            if !ok {
                Metrics::add(&metrics.hls_packets_dropped, 1);
            }
            pushed += 1;
            if pushed.is_multiple_of(256) {
                if let Some(e) = t.error() {
                    warn!(%stream, error = %e, "HLS transcoder failed; no HLS for this stream until it restarts");
                    failed = true;
                    running = None;
                    ladder_permit = None;
                    Metrics::sub(&metrics.hls_transcoders, 1);
                }
            }
            continue;
        }
        match p.kind {
            MediaKind::Audio => {
                saw_audio = true;
                if input.is_some() && pending.len() < MAX_PENDING {
                    pending.push(p);
                }
                continue;
            }
            MediaKind::Video => {
                if input.is_none() {
                    let Some((size, pli)) = p.size.clone().filter(|_| p.keyframe) else {
                        continue; // start at a keyframe that says its size
                    };
                    input = Some((p.format, size, pli));
                    frame_times.push(p.timestamp);
                    pending.push(p);
                    continue;
                }
                if frame_times.last() != Some(&p.timestamp) {
                    frame_times.push(p.timestamp);
                }
                if pending.len() < MAX_PENDING {
                    pending.push(p);
                }
            }
        }
        if frame_times.len() <= FPS_FRAMES {
            continue;
        }
        // A publisher's audio may start a little after its video (RTMP's AAC goes through a
        // transcoder first); a ladder built without it would stay silent.
        let waited = frame_times
            .last()
            .map_or(0, |last| last.wrapping_sub(frame_times[0]));
        if !saw_audio && u64::from(waited) < AUDIO_WAIT_90KHZ {
            continue;
        }
        let Some((format, size, pli)) = input.clone() else {
            continue;
        };
        let span = frame_times[FPS_FRAMES].wrapping_sub(frame_times[0]);
        let fps = if span > 0 {
            snap_fps(90_000.0 * FPS_FRAMES as f64 / span as f64)
        } else {
            30.0
        };
        let video = match format {
            PayloadFormat::Vp8 => VideoInput::Vp8,
            _ => VideoInput::H264,
        };
        let input = Input {
            size,
            fps,
            h264_profile_level_id: if video == VideoInput::H264 { pli } else { None },
        };
        let mut renditions = ladder::plan(&input, &config.ladder);
        if renditions.iter().any(|r| !r.passthrough) {
            ladder_permit = ladders.clone().try_acquire_owned().ok();
            if ladder_permit.is_none() {
                Metrics::add(&metrics.hls_ladders_refused, 1);
                if input.h264_profile_level_id.is_none() {
                    warn!(%stream, max = config.max_ladders, "HLS ladders at their limit; this stream (VP8) gets no HLS, WebRTC only");
                    failed = true;
                    continue;
                }
                warn!(%stream, max = config.max_ladders, "HLS ladders at their limit; this stream gets its source rendition only");
                renditions = ladder::plan(&input, &[]);
            }
        }
        let master: Bytes = ladder::master_playlist(&renditions, config.audio_kbps, |name| {
            format!("{name}/index.m3u8")
        })
        .into();
        epoch = unix_ms();
        let budget = ReplayBudget::new(&stream, config.replay_max_bytes, metrics.clone());
        recordings = renditions
            .iter()
            .map(|r| (r.name.clone(), Arc::new(Recording::new(budget.clone()))))
            .collect();
        let specs = renditions
            .iter()
            .zip(&recordings)
            .map(|(r, (_, recording))| packager::RenditionSpec {
                name: r.name.clone(),
                fps: r.fps,
                recording: recording.clone(),
            })
            .collect();
        let (to_packager, handle) = packager::spawn(
            &stream,
            &replay::segment_prefix(epoch),
            specs,
            master,
            packager::Settings {
                segment: config.segment,
                window: config.window,
                with_audio: saw_audio || aac.is_some(),
                keep_segments: config.replays,
                epoch_unix_ms: epoch,
                metrics: metrics.clone(),
            },
            uploads.clone(),
            live.clone(),
        );
        packager = Some(handle);
        let settings = Settings {
            segment: config.segment,
            audio_kbps: config.audio_kbps,
            audio: match (&aac, saw_audio) {
                (Some(asc), _) => AudioInput::Aac(asc.clone()),
                (None, true) => AudioInput::Opus,
                (None, false) => AudioInput::None,
            },
        };
        let audio_label = match settings.audio {
            AudioInput::Aac(_) => "aac as it came",
            AudioInput::Opus => "opus → aac",
            AudioInput::None => "none",
        };
        match Transcoder::start(
            video,
            &renditions,
            &settings,
            &stream,
            to_packager,
            uploads.clone(),
            metrics.clone(),
        ) {
            Ok(t) => {
                info!(%stream, ?size, fps = format!("{fps:.1}"), renditions = ?renditions.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), audio = audio_label, "HLS ladder started");
                Metrics::add(&metrics.hls_transcoders, 1);
                for p in pending.drain(..) {
                    match (p.kind, p.into_rtp()) {
                        (MediaKind::Video, Some(rtp)) => t.push_video(rtp),
                        (MediaKind::Audio, Some(rtp)) => t.push_audio(rtp),
                        (_, None) => false,
                    };
                }
                if let Some(asc) = &aac {
                    for (frame, ts) in pending_aac.drain(..) {
                        t.push_aac(asc, frame, ts);
                    }
                }
                running = Some(t);
                planned = renditions;
            }
            Err(e) => {
                warn!(%stream, error = %e, "HLS transcoder could not start");
                failed = true;
            }
        }
    }
    if let Some(t) = running {
        Metrics::sub(&metrics.hls_transcoders, 1);
        let thumbnail = tokio::task::spawn_blocking(move || {
            t.finish(Duration::from_secs(5));
            t.thumbnail()
            // dropped here: the pipeline goes, and with it the packager's last senders
        })
        .await
        .ok()
        .flatten();
        if let Some(p) = packager.take() {
            let _ = p.await;
        }
        info!(%stream, "HLS ladder ended");
        if config.replays {
            if let Some(replay) = store_replay(
                &stream,
                epoch,
                &recordings,
                thumbnail,
                &planned,
                &config,
                &uploads,
            ) {
                info!(%stream, epoch, duration_ms = replay.duration_ms, "replay stored");
                let _ = replays.send(replay);
            }
        }
    }
    // Its encoders are done: another stream may have them.
    drop(ladder_permit);
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Write a finished broadcast's VOD playlists (and its last thumbnail) beside its segments.
fn store_replay(
    stream: &str,
    epoch: u64,
    recordings: &[(String, Arc<Recording>)],
    thumbnail: Option<Bytes>,
    renditions: &[Rendition],
    config: &HlsConfig,
    uploads: &Uploads,
) -> Option<Replay> {
    let duration_ms = recordings.iter().map(|(_, r)| r.duration_ms()).max()?;
    if duration_ms == 0 {
        return None;
    }
    let replay = Replay {
        stream: stream.to_owned(),
        epoch,
        ended_at_ms: unix_ms(),
        duration_ms,
        renditions: recordings.iter().map(|(name, _)| name.clone()).collect(),
    };
    let dir = Replay::dir(stream, epoch);
    for (name, r) in recordings {
        uploads.put(
            format!("{dir}/{name}.m3u8"),
            r.vod_playlist(&format!("../../{name}/")).into(),
            Kind::Playlist,
        );
    }
    uploads.put(
        replay.master_path(),
        ladder::master_playlist(renditions, config.audio_kbps, |name| format!("{name}.m3u8"))
            .into(),
        Kind::Playlist,
    );
    if let Some(jpeg) = thumbnail {
        uploads.put(replay.thumbnail_path(), jpeg, Kind::Image);
    }
    Some(replay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_rates_snap_to_common_ones() {
        assert_eq!(snap_fps(30.03), 30.0);
        assert_eq!(snap_fps(29.97), 29.97);
        assert_eq!(snap_fps(59.9), 59.94);
        assert_eq!(snap_fps(12.5), 12.5);
    }
}
