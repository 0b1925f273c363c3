//! WHEP viewer: offers recvonly Opus + H.264 + VP8, then counts what arrives per kind,
//! checks every payload's pattern, times connection and first keyframe, and notices when
//! the tracks end; records glass-to-glass latency from the publisher's capture-time SEI.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, Url};
use str0m::change::SdpAnswer;
use str0m::config::DtlsCert;
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::rtp::rtcp::Rtcp;
use str0m::rtp::{RawPacket, RtpPacket};
use str0m::{Event, Rtc};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::driver::{Command, Driver, Role};
use super::{bind, build_rtc, wait_for, Codecs};
use crate::codec::{self, h264, VideoCodec};
use crate::error::{Error, Result};
use crate::signal::{self, Endpoint};
use crate::stats::{EndReason, LatencyHistogram, LatencyRecorder, TrackCounter, ViewerStats};

/// With `request_keyframes`, how often a viewer repeats its PLI until a keyframe arrives.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// How a viewer connects.
#[derive(Debug, Clone)]
pub struct ViewConfig {
    /// Server base URL, e.g. `http://127.0.0.1:8080`.
    pub server: String,
    pub stream: String,
    /// Sent as `Authorization: Bearer {token}` when set.
    pub token: Option<String>,
    /// Local IP to bind the UDP socket to and announce as the only (host) candidate.
    pub local_ip: IpAddr,
    /// ICE + DTLS must be up this long after the POST started.
    pub connect_timeout: Duration,
    /// Timeout of each HTTP request.
    pub http_timeout: Duration,
    /// Behave like a browser decoder: when video starts without a keyframe, send PLI, and
    /// again every [`KEYFRAME_REQUEST_INTERVAL`] until one arrives. Off by default so the
    /// time to first keyframe measures the server's own join behaviour.
    pub request_keyframes: bool,
    /// Notice RTCP BYE. Needs str0m's raw packet events, which copy every packet: on by
    /// default for tests, worth turning off for a thousand viewers.
    pub detect_bye: bool,
    /// Shared client for many peers; a new one is built when `None`.
    pub http: Option<Client>,
    /// Shared DTLS certificate for many peers; generated per peer when `None`.
    pub dtls_cert: Option<DtlsCert>,
    /// Simulated network loss: drop every Nth SRTP/SRTCP datagram before str0m sees it
    /// (str0m then NACKs the missing video; audio is not retransmitted).
    pub drop_every_nth_rtp: Option<u32>,
    /// Check each payload against the synthetic publisher's pattern (off for a clip, whose
    /// payloads are real video).
    pub check_patterns: bool,
    /// Where glass-to-glass latency (from the publisher's capture-time SEI) is recorded;
    /// several viewers may share one. A recorder of its own when `None`.
    pub latency: Option<Arc<LatencyRecorder>>,
}

impl ViewConfig {
    /// Defaults: no token, 127.0.0.1, 10 s connect timeout, BYE detection on.
    pub fn new(server: impl Into<String>, stream: impl Into<String>) -> Self {
        ViewConfig {
            server: server.into(),
            stream: stream.into(),
            token: None,
            local_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            connect_timeout: Duration::from_secs(10),
            http_timeout: Duration::from_secs(10),
            request_keyframes: false,
            detect_bye: true,
            http: None,
            dtls_cert: None,
            drop_every_nth_rtp: None,
            check_patterns: true,
            latency: None,
        }
    }
}

/// A running viewer. Dropping it stops the peer without DELETE; call [`Self::stop`].
#[derive(Debug)]
pub struct ViewerHandle {
    resource_url: Url,
    token: Option<String>,
    http: Client,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<Result<()>>,
    stats: watch::Receiver<ViewerStats>,
    latency: Arc<LatencyRecorder>,
}

/// Starts a WHEP viewer: returns once the server answered `201 Created` and the answer is
/// applied; connection and media show up in [`ViewerHandle::stats`].
pub async fn view(cfg: ViewConfig) -> Result<ViewerHandle> {
    let post_started = Instant::now();
    let http = super::http_client(cfg.http.clone(), cfg.http_timeout)?;
    let endpoint = signal::endpoint_url(&cfg.server, Endpoint::Whep, &cfg.stream)?;
    let socket = bind(cfg.local_ip).await?;
    let mut rtc = build_rtc(&socket, Codecs::ALL, cfg.detect_bye, cfg.dtls_cert.clone())?;

    let mut change = rtc.sdp_api();
    let audio_mid = change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let video_mid = change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = change
        .apply()
        .ok_or_else(|| Error::Negotiation("str0m produced no offer".into()))?;

    let token = cfg.token.as_deref();
    let session = signal::post_offer(&http, &endpoint, token, offer.to_sdp_string()).await?;
    let applied = SdpAnswer::from_sdp_string(&session.answer)
        .map_err(|e| Error::Sdp(e.to_string()))
        .and_then(|answer| {
            rtc.sdp_api()
                .accept_answer(pending, answer)
                .map_err(|e| Error::Sdp(e.to_string()))
        });
    if let Err(e) = applied {
        // Do not leave a half-made session behind on the server.
        let _ = signal::delete(&http, &session.resource_url, token).await;
        return Err(e);
    }

    let (stats_tx, stats_rx) = watch::channel(ViewerStats::default());
    let latency = cfg.latency.clone().unwrap_or_default();
    let role = Viewer {
        post_started,
        check_patterns: cfg.check_patterns,
        latency: latency.clone(),
        unix_clock: crate::source::unix_clock(),
        audio_mid,
        video_mid,
        request_keyframes: cfg.request_keyframes,
        base: ViewerStats::default(),
        video: TrackCounter::default(),
        audio: TrackCounter::default(),
        pt_codecs: Vec::new(),
        scratch: Vec::new(),
        last_keyframe_request: None,
        last_keyframe_time: None,
        published: stats_tx,
        dirty: false,
    };
    let driver = Driver {
        rtc,
        socket,
        role,
        connect_deadline: post_started + cfg.connect_timeout,
        drop_every_nth_rtp: cfg.drop_every_nth_rtp,
        rtp_seen: 0,
    };
    let (commands, task) = driver.spawn();
    Ok(ViewerHandle {
        resource_url: session.resource_url,
        token: cfg.token,
        http,
        commands,
        task,
        stats: stats_rx,
        latency,
    })
}

impl ViewerHandle {
    /// Glass-to-glass latency recorded so far (shared with other viewers if configured so).
    pub fn latency(&self) -> LatencyHistogram {
        self.latency.snapshot()
    }

    /// The session URL from `Location`, made absolute.
    pub fn resource_url(&self) -> &Url {
        &self.resource_url
    }

    /// Latest counters.
    pub fn stats(&self) -> ViewerStats {
        self.stats.borrow().clone()
    }

    /// A receiver that changes whenever the counters do.
    pub fn subscribe(&self) -> watch::Receiver<ViewerStats> {
        self.stats.clone()
    }

    /// Waits until `pred` holds for the counters, at most `timeout`; fails early if the
    /// peer ends first.
    pub async fn wait_until(
        &self,
        pred: impl FnMut(&ViewerStats) -> bool,
        timeout: Duration,
    ) -> Result<ViewerStats> {
        wait_for(self.stats.clone(), pred, timeout, |s| s.ended.clone()).await
    }

    /// Waits until ICE and DTLS are up.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<ViewerStats> {
        self.wait_until(|s| s.connected_after.is_some(), timeout)
            .await
    }

    /// Waits until at least `count` video packets arrived.
    pub async fn wait_video_packets(&self, count: u64, timeout: Duration) -> Result<ViewerStats> {
        self.wait_until(|s| s.video.packets >= count, timeout).await
    }

    /// Waits until the tracks ended (BYE, DTLS close, ICE loss) and returns why.
    pub async fn wait_ended(&self, timeout: Duration) -> Result<EndReason> {
        let stats = self.wait_until(|s| s.ended.is_some(), timeout).await?;
        Ok(stats.ended.unwrap_or(EndReason::Stopped))
    }

    /// Sends a PLI for the video track (RFC 4585 §6.3.1).
    pub async fn request_keyframe(&self) -> Result<()> {
        self.commands
            .send(Command::RequestKeyframe)
            .await
            .map_err(|_| Error::PeerEnded {
                reason: self.stats.borrow().ended.clone(),
            })
    }

    /// DELETEs the session, then closes the peer. Returns the final counters, or the
    /// DELETE error (the peer is closed either way).
    /// Disappear without a word, as a phone that loses its network does: no DELETE, no BYE,
    /// the socket just goes quiet. The server has to notice on its own (ICE consent).
    pub fn vanish(self) -> ViewerStats {
        self.task.abort();
        let stats = self.stats.borrow().clone();
        stats
    }

    pub async fn stop(self) -> Result<ViewerStats> {
        let deleted = signal::delete(&self.http, &self.resource_url, self.token.as_deref()).await;
        super::shut_down(self.commands, self.task).await;
        let stats = self.stats.borrow().clone();
        deleted.map(|()| stats)
    }
}

struct Viewer {
    post_started: Instant,
    check_patterns: bool,
    latency: Arc<LatencyRecorder>,
    /// Unix time at an instant, for capture times.
    unix_clock: (Instant, u64),
    audio_mid: Mid,
    video_mid: Mid,
    request_keyframes: bool,
    /// Everything but the track counters.
    base: ViewerStats,
    video: TrackCounter,
    audio: TrackCounter,
    /// Payload type to codec, filled on first sight of each PT.
    pt_codecs: Vec<(Pt, Option<Codec>)>,
    /// Reused buffer for undoing H.264 emulation prevention.
    scratch: Vec<u8>,
    last_keyframe_request: Option<Instant>,
    /// RTP time of the last keyframe counted.
    last_keyframe_time: Option<u32>,
    published: watch::Sender<ViewerStats>,
    dirty: bool,
}

impl Viewer {
    fn codec_of(&mut self, rtc: &Rtc, pt: Pt) -> Option<Codec> {
        if let Some((_, codec)) = self.pt_codecs.iter().find(|(p, _)| *p == pt) {
            return *codec;
        }
        let codec = rtc
            .codec_config()
            .find(|p| p.pt() == pt)
            .map(|p| p.spec().codec);
        self.pt_codecs.push((pt, codec));
        codec
    }

    fn on_rtp(&mut self, rtc: &mut Rtc, packet: RtpPacket, now: Instant) {
        let since_post = now.saturating_duration_since(self.post_started);
        let ssrc = *packet.header.ssrc;
        let seq = *packet.seq_no;
        let rtp_time = packet.header.timestamp;
        let payload = &packet.payload[..];
        let video_codec = match self.codec_of(rtc, packet.header.payload_type) {
            Some(Codec::H264) => VideoCodec::H264,
            Some(Codec::Vp8) => VideoCodec::Vp8,
            Some(Codec::Opus) => {
                let check = if self.check_patterns {
                    codec::check_audio(payload)
                } else {
                    codec::Check::NoPattern
                };
                self.audio
                    .record(ssrc, seq, rtp_time, payload.len(), check, false, since_post);
                self.dirty = true;
                return;
            }
            // Not a payload type we offered: nothing to check it against.
            _ => return,
        };
        if video_codec == VideoCodec::H264 {
            if let Some(captured) = h264::parse_capture_sei(payload) {
                let now_us = crate::source::unix_micros_at(self.unix_clock, now);
                self.latency
                    .record(Duration::from_micros(now_us.saturating_sub(captured)));
            }
        }
        let check = if self.check_patterns {
            codec::check_video(video_codec, payload, &mut self.scratch)
        } else {
            codec::Check::NoPattern
        };
        let keyframe = codec::is_keyframe(video_codec, payload);
        // A keyframe spans packets (STAP-A with SPS, then the IDR's first fragment): count
        // it once per RTP timestamp.
        let new_keyframe = keyframe && self.last_keyframe_time != Some(packet.header.timestamp);
        if new_keyframe {
            self.last_keyframe_time = Some(packet.header.timestamp);
        }
        self.video.record(
            ssrc,
            seq,
            rtp_time,
            payload.len(),
            check,
            new_keyframe,
            since_post,
        );
        self.base.video_codec.get_or_insert(video_codec);
        if keyframe {
            self.base.first_keyframe_after.get_or_insert(since_post);
        } else if self.request_keyframes && self.base.first_keyframe_after.is_none() {
            let due = self
                .last_keyframe_request
                .is_none_or(|at| now.saturating_duration_since(at) >= KEYFRAME_REQUEST_INTERVAL);
            if due {
                self.send_pli(rtc);
                self.last_keyframe_request = Some(now);
            }
        }
        self.dirty = true;
    }

    fn send_pli(&mut self, rtc: &mut Rtc) {
        let mut api = rtc.direct_api();
        if let Some(stream) = api.stream_rx_by_mid(self.video_mid, None) {
            stream.request_keyframe(KeyframeRequestKind::Pli);
            self.base.keyframe_requests_sent += 1;
            self.dirty = true;
        }
    }

    fn snapshot(&self) -> ViewerStats {
        ViewerStats {
            video: self.video.snapshot(),
            audio: self.audio.snapshot(),
            ..self.base.clone()
        }
    }
}

impl Role for Viewer {
    fn on_event(&mut self, rtc: &mut Rtc, event: Event, now: Instant) {
        match event {
            Event::RtpPacket(packet) => self.on_rtp(rtc, packet, now),
            Event::StreamPaused(p) if p.paused => {
                if p.mid == self.video_mid {
                    self.video.record_stall();
                } else if p.mid == self.audio_mid {
                    self.audio.record_stall();
                }
                self.dirty = true;
            }
            Event::MediaIngressStats(s) if s.mid == self.video_mid => {
                self.base.video_nacks_sent = s.nacks;
                self.base.video_jitter_us = Some(u64::from(s.jitter) * 1000 / 90); // 90 kHz
                self.dirty = true;
            }
            Event::RawPacket(raw) => {
                // RFC 3550 §6.6: BYE says the source is leaving.
                if let RawPacket::RtcpRx(Rtcp::Goodbye(_)) = *raw {
                    self.base.bye_received = true;
                    self.base.ended.get_or_insert(EndReason::Bye);
                    self.dirty = true;
                }
            }
            _ => {}
        }
    }

    fn request_keyframe(&mut self, rtc: &mut Rtc) {
        self.send_pli(rtc);
    }

    fn connected(&mut self, now: Instant) {
        self.base.connected_after = Some(now.saturating_duration_since(self.post_started));
        self.dirty = true;
    }

    fn end(&mut self, reason: EndReason) {
        self.base.ended.get_or_insert(reason);
        self.dirty = true;
    }

    fn publish(&mut self) {
        if std::mem::take(&mut self.dirty) {
            self.published.send_replace(self.snapshot());
        }
    }
}
