//! WHIP publisher: offers sendonly Opus + H.264 (or VP8), then writes synthetic RTP at
//! 30 fps / 50 packets per second and answers PLI/FIR with a keyframe on the next frame.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, Url};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::rtp::Ssrc;
use str0m::{Event, Rtc};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::driver::{Command, Driver, MediaWrite, Role};
use super::{bind, build_rtc, wait_for, Codecs};
use crate::clip::Clip;
use crate::codec::VideoCodec;
use crate::error::{Error, Result};
use crate::signal::{self, Endpoint};
use crate::source::{AudioSource, MediaPacket, VideoShape, VideoSource};
use crate::stats::{EndReason, PublisherStats};

/// How a synthetic publisher connects and what it sends.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    /// Server base URL, e.g. `http://127.0.0.1:8080`.
    pub server: String,
    pub stream: String,
    /// Stream key, sent as `Authorization: Bearer {key}`.
    pub key: String,
    /// Local IP to bind the UDP socket to and announce as the only (host) candidate.
    pub local_ip: IpAddr,
    pub video_codec: VideoCodec,
    pub video_shape: VideoShape,
    /// Time between periodic keyframes; PLI/FIR also trigger one on the next frame.
    pub keyframe_interval: Duration,
    /// Opus payload bytes per 20 ms packet, TOC byte included.
    pub audio_payload_bytes: usize,
    /// ICE + DTLS must be up this long after the POST started.
    pub connect_timeout: Duration,
    /// Timeout of each HTTP request.
    pub http_timeout: Duration,
    /// Shared client for many peers; a new one is built when `None`.
    pub http: Option<Client>,
    /// Loop this pre-encoded clip (H.264 + Opus) instead of synthetic payloads.
    pub clip: Option<Arc<Clip>>,
    /// H.264: a capture-time SEI before every frame, for viewers' glass-to-glass latency.
    pub capture_time: bool,
}

impl PublishConfig {
    /// Defaults: H.264, keyframe every 2 s, 127.0.0.1, 10 s connect timeout.
    pub fn new(
        server: impl Into<String>,
        stream: impl Into<String>,
        key: impl Into<String>,
    ) -> Self {
        PublishConfig {
            server: server.into(),
            stream: stream.into(),
            key: key.into(),
            local_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            video_codec: VideoCodec::H264,
            video_shape: VideoShape::default(),
            keyframe_interval: Duration::from_secs(2),
            audio_payload_bytes: 80,
            connect_timeout: Duration::from_secs(10),
            http_timeout: Duration::from_secs(10),
            http: None,
            clip: None,
            capture_time: true,
        }
    }
}

/// A running publisher. Dropping it stops the peer without DELETE; call [`Self::stop`].
#[derive(Debug)]
pub struct PublisherHandle {
    resource_url: Url,
    key: String,
    http: Client,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<Result<()>>,
    stats: watch::Receiver<PublisherStats>,
}

/// Starts a WHIP publisher: returns once the server answered `201 Created` and the answer
/// is applied; media starts flowing when ICE and DTLS are up.
pub async fn publish(mut cfg: PublishConfig) -> Result<PublisherHandle> {
    let post_started = Instant::now();
    if cfg.clip.is_some() {
        cfg.video_codec = VideoCodec::H264; // the clip is H.264
    }
    let http = super::http_client(cfg.http.clone(), cfg.http_timeout)?;
    let endpoint = signal::endpoint_url(&cfg.server, Endpoint::Whip, &cfg.stream)?;
    let socket = bind(cfg.local_ip).await?;
    let codecs = match cfg.video_codec {
        VideoCodec::H264 => Codecs::H264_OPUS,
        VideoCodec::Vp8 => Codecs::VP8_OPUS,
    };
    let mut rtc = build_rtc(&socket, codecs, false, None)?;

    let mut change = rtc.sdp_api();
    let stream_id = Some(cfg.stream.clone());
    let audio_mid = change.add_media(
        MediaKind::Audio,
        Direction::SendOnly,
        stream_id.clone(),
        None,
        None,
    );
    let video_mid = change.add_media(MediaKind::Video, Direction::SendOnly, stream_id, None, None);
    let (offer, pending) = change
        .apply()
        .ok_or_else(|| Error::Negotiation("str0m produced no offer".into()))?;

    let session =
        signal::post_offer(&http, &endpoint, Some(&cfg.key), offer.to_sdp_string()).await?;
    let applied = SdpAnswer::from_sdp_string(&session.answer)
        .map_err(|e| Error::Sdp(e.to_string()))
        .and_then(|answer| {
            rtc.sdp_api()
                .accept_answer(pending, answer)
                .map_err(|e| Error::Sdp(e.to_string()))
        })
        .and_then(|()| {
            let video = send_track(&mut rtc, video_mid, codec_of(cfg.video_codec))?;
            let audio = send_track(&mut rtc, audio_mid, Codec::Opus)?;
            Ok((video, audio))
        });
    let (video, audio) = match applied {
        Ok(tracks) => tracks,
        Err(e) => {
            // Do not leave a half-made session behind on the server.
            let _ = signal::delete(&http, &session.resource_url, Some(&cfg.key)).await;
            return Err(e);
        }
    };
    if video.is_none() && audio.is_none() {
        let _ = signal::delete(&http, &session.resource_url, Some(&cfg.key)).await;
        return Err(Error::Negotiation(
            "the answer accepts neither audio nor video".into(),
        ));
    }

    let (stats_tx, stats_rx) = watch::channel(PublisherStats::default());
    let role = Publisher {
        cfg: cfg.clone(),
        post_started,
        video_mid,
        video,
        audio,
        queue: VecDeque::new(),
        stats: PublisherStats::default(),
        published: stats_tx,
        dirty: false,
    };
    let driver = Driver {
        rtc,
        socket,
        role,
        connect_deadline: post_started + cfg.connect_timeout,
        drop_every_nth_rtp: None,
        rtp_seen: 0,
    };
    let (commands, task) = driver.spawn();
    Ok(PublisherHandle {
        resource_url: session.resource_url,
        key: cfg.key,
        http,
        commands,
        task,
        stats: stats_rx,
    })
}

impl PublisherHandle {
    /// The session URL from `Location`, made absolute.
    pub fn resource_url(&self) -> &Url {
        &self.resource_url
    }

    /// Latest counters.
    pub fn stats(&self) -> PublisherStats {
        self.stats.borrow().clone()
    }

    /// A receiver that changes whenever the counters do.
    pub fn subscribe(&self) -> watch::Receiver<PublisherStats> {
        self.stats.clone()
    }

    /// Waits until `pred` holds for the counters, at most `timeout`.
    pub async fn wait_until(
        &self,
        pred: impl FnMut(&PublisherStats) -> bool,
        timeout: Duration,
    ) -> Result<PublisherStats> {
        wait_for(self.stats.clone(), pred, timeout, |s| s.ended.clone()).await
    }

    /// Waits until ICE and DTLS are up.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<PublisherStats> {
        self.wait_until(|s| s.connected_after.is_some(), timeout)
            .await
    }

    /// DELETEs the session, then closes the peer. Returns the final counters, or the
    /// DELETE error (the peer is closed either way).
    pub async fn stop(self) -> Result<PublisherStats> {
        let deleted = signal::delete(&self.http, &self.resource_url, Some(&self.key)).await;
        super::shut_down(self.commands, self.task).await;
        let stats = self.stats.borrow().clone();
        deleted.map(|()| stats)
    }
}

/// One negotiated send track; the source exists once ICE and DTLS are up.
#[derive(Debug)]
struct SendTrack<S> {
    ssrc: Ssrc,
    pt: Pt,
    next_seq: u64,
    source: Option<S>,
}

impl<S> SendTrack<S> {
    fn new(ssrc: Ssrc, pt: Pt) -> Self {
        // Random start (RFC 3550 §5.1) from the random SSRC, below 2^15 so the first
        // packets keep a zero rollover counter (see str0m's `RtpWrite::new`).
        let next_seq = u64::from((*ssrc >> 8) & 0x7fff);
        SendTrack {
            ssrc,
            pt,
            next_seq,
            source: None,
        }
    }

    fn write(&mut self, packet: MediaPacket, nackable: bool) -> MediaWrite {
        let seq = self.next_seq.into();
        self.next_seq += 1;
        MediaWrite {
            ssrc: self.ssrc,
            pt: self.pt,
            seq,
            rtp_time: packet.rtp_time,
            marker: packet.marker,
            nackable,
            payload: packet.payload,
        }
    }

    /// Random RTP timestamp origin (RFC 3550 §5.1), derived from the random SSRC.
    fn rtp_base(&self) -> u32 {
        (*self.ssrc).wrapping_mul(0x9e37_79b1)
    }
}

/// The negotiated send track of `mid`, if the answer lets us send `codec` on it.
fn send_track<S>(rtc: &mut Rtc, mid: Mid, codec: Codec) -> Result<Option<SendTrack<S>>> {
    let Some(media) = rtc.media(mid) else {
        return Ok(None);
    };
    if !media.direction().is_sending() {
        return Ok(None);
    }
    let config = rtc.codec_config();
    let pt = media
        .remote_pts()
        .iter()
        .copied()
        .find(|pt| {
            config
                .find(|p| p.pt() == *pt && p.spec().codec == codec)
                .is_some()
        })
        .ok_or_else(|| {
            Error::Negotiation(format!("the answer does not accept {codec:?} on mid {mid}"))
        })?;
    let ssrc = rtc
        .direct_api()
        .stream_tx_by_mid(mid, None)
        .map(|s| s.ssrc())
        .ok_or_else(|| Error::Negotiation(format!("no send stream for mid {mid}")))?;
    Ok(Some(SendTrack::new(ssrc, pt)))
}

fn codec_of(codec: VideoCodec) -> Codec {
    match codec {
        VideoCodec::H264 => Codec::H264,
        VideoCodec::Vp8 => Codec::Vp8,
    }
}

struct Publisher {
    cfg: PublishConfig,
    post_started: Instant,
    video_mid: Mid,
    video: Option<SendTrack<VideoSource>>,
    audio: Option<SendTrack<AudioSource>>,
    /// Packets of the current frame not yet handed to the driver: one write per
    /// `poll_media` so the driver drains str0m after each (the single-mutation rule).
    queue: VecDeque<MediaWrite>,
    stats: PublisherStats,
    published: watch::Sender<PublisherStats>,
    dirty: bool,
}

impl Publisher {
    fn fill_queue(&mut self, now: Instant) {
        if let Some(track) = &mut self.video {
            if let Some(frame) = track.source.as_mut().and_then(|s| s.poll_frame(now)) {
                self.stats.keyframes_sent += u64::from(frame.keyframe);
                for packet in frame.packets {
                    self.stats.video_packets += 1;
                    self.stats.video_bytes += packet.payload.len() as u64;
                    self.queue.push_back(track.write(packet, true));
                }
                self.dirty = true;
            }
        }
        if let Some(track) = &mut self.audio {
            if let Some(packet) = track.source.as_mut().and_then(|s| s.poll_packet(now)) {
                self.stats.audio_packets += 1;
                self.stats.audio_bytes += packet.payload.len() as u64;
                self.queue.push_back(track.write(packet, false));
                self.dirty = true;
            }
        }
    }
}

impl Role for Publisher {
    fn on_event(&mut self, _rtc: &mut Rtc, event: Event, _now: Instant) {
        let Event::KeyframeRequest(req) = event else {
            return;
        };
        if req.mid != self.video_mid {
            return;
        }
        match req.kind {
            KeyframeRequestKind::Pli => self.stats.plis_received += 1,
            KeyframeRequestKind::Fir => self.stats.firs_received += 1,
        }
        self.dirty = true;
        if let Some(source) = self.video.as_mut().and_then(|t| t.source.as_mut()) {
            source.request_keyframe();
        }
    }

    fn next_media_at(&self) -> Option<Instant> {
        let video = self
            .video
            .as_ref()
            .and_then(|t| t.source.as_ref())
            .map(VideoSource::next_frame_at);
        let audio = self
            .audio
            .as_ref()
            .and_then(|t| t.source.as_ref())
            .map(AudioSource::next_packet_at);
        video.into_iter().chain(audio).min()
    }

    fn poll_media(&mut self, now: Instant) -> Option<MediaWrite> {
        if self.queue.is_empty() {
            self.fill_queue(now);
        }
        self.queue.pop_front()
    }

    fn connected(&mut self, now: Instant) {
        self.stats.connected_after = Some(now.saturating_duration_since(self.post_started));
        self.dirty = true;
        if let Some(track) = &mut self.video {
            let base = track.rtp_base();
            track.source.get_or_insert_with(|| {
                let mut source = VideoSource::new(
                    self.cfg.video_codec,
                    self.cfg.video_shape,
                    self.cfg.keyframe_interval,
                    now,
                    base,
                );
                if let Some(clip) = &self.cfg.clip {
                    source = source.with_clip(clip.clone());
                }
                if self.cfg.capture_time {
                    source = source.with_capture_time(crate::source::unix_clock());
                }
                source
            });
        }
        if let Some(track) = &mut self.audio {
            let base = track.rtp_base();
            track.source.get_or_insert_with(|| {
                let source = AudioSource::new(self.cfg.audio_payload_bytes, now, base);
                match &self.cfg.clip {
                    Some(clip) => source.with_clip(clip.clone()),
                    None => source,
                }
            });
        }
    }

    fn end(&mut self, reason: EndReason) {
        self.stats.ended.get_or_insert(reason);
        self.dirty = true;
    }

    fn publish(&mut self) {
        if std::mem::take(&mut self.dirty) {
            self.published.send_replace(self.stats.clone());
        }
    }
}
