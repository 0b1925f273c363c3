//! The RTMP listener: one task per TCP connection, each driving a [`ServerSession`] and turning
//! an accepted publish into an SFU ingest publisher: H.264 → RTP as is (or re-encoded without
//! B-frames through GStreamer, `reencode.rs`), AAC → Opus RTP through GStreamer (`audio.rs`).
//!
//! Until its publish is accepted a connection is anyone on the internet: it holds a slot (caps
//! per address and in total, [`Slots`]) and must publish within [`RtmpLimits::publish_deadline`];
//! its messages and buffers are small ([`super::chunk::ChunkLimits`]). Publishing connections are
//! registered in [`RtmpPublishers`], so a rotated stream key ends them.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rtc::rtp;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::audio::{self, AacToOpus, AudioTag, OpusPacket};
use super::flv::{self, VideoTag};
use super::limits::RtmpLimits;
use super::publishers::{Registration, RtmpPublishers};
use super::reencode::WithoutBFrames;
use super::session::{ServerSession, SessionEvent};
use crate::runtime::MediaHandle;
use crate::sfu::peer::{PublishedTrack, SourceTime};
use crate::sfu::{AacFrame, Departure, SessionId};
use crate::slots::Slot;

/// A connection that sends nothing for this long is closed (a stalled publisher frees its
/// stream for a reconnect).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
const READ_BUFFER: usize = 64 * 1024;
/// Unconsumed input allowed once publishing (at most one chunk stays unconsumed).
const MAX_PENDING: usize = 16 << 20;
/// Unconsumed input allowed before the publish is accepted: one chunk of the largest message
/// allowed then, and a read.
const MAX_PENDING_BEFORE_PUBLISH: usize = super::chunk::MAX_MESSAGE_BEFORE_PUBLISH + READ_BUFFER;
/// How long the last status (why the connection ends) may take to write.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(1);

const UNSUPPORTED_VIDEO: &str = "unsupported video codec";
const KEY_ROTATED: &str = "stream key rotated";

pub type KeyFuture<'a> = Pin<Box<dyn Future<Output = Option<String>> + Send + 'a>>;

/// Which stream a stream key publishes to (the same keys WHIP uses), or `None` to refuse.
pub trait StreamKeys: Send + Sync + 'static {
    fn stream_for_key<'a>(&'a self, key: &'a str) -> KeyFuture<'a>;
}

/// What every connection task shares.
struct Shared {
    media: MediaHandle,
    keys: Arc<dyn StreamKeys>,
    limits: RtmpLimits,
    publishers: RtmpPublishers,
}

/// Accept RTMP connections until the listener fails or the task is aborted. Connections beyond
/// `limits`' caps are closed at once; publishing ones are registered in `publishers`.
pub fn spawn(
    listener: TcpListener,
    media: MediaHandle,
    keys: Arc<dyn StreamKeys>,
    limits: RtmpLimits,
    publishers: RtmpPublishers,
) -> JoinHandle<()> {
    let slots = limits.slots();
    let shared = Arc::new(Shared {
        media,
        keys,
        limits,
        publishers,
    });
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((sock, peer)) => match slots.try_acquire(peer.ip()) {
                    Ok(slot) => {
                        let _ = sock.set_nodelay(true);
                        tokio::spawn(connection(sock, peer, shared.clone(), slot));
                    }
                    // Dropped: closed before a byte is read.
                    Err(why) => debug!(%peer, %why, "rtmp connection refused"),
                },
                Err(e) => {
                    warn!(error = %e, "rtmp accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

/// An accepted publish, once its first AVC configuration made it an SFU publisher.
struct Publishing {
    stream: String,
    ingest: Option<SessionId>,
    sps_pps: Vec<Bytes>,
    /// The AVCDecoderConfigurationRecord, for the re-encoder.
    avc_record: Bytes,
    ssrc: u32,
    seq: u16,
    ts_base: u32,
    audio: Option<AacToOpus>,
    /// The AudioSpecificConfig: HLS takes the AAC frames as they came.
    aac_config: Option<Bytes>,
    /// The stream has B-frames (non-zero composition offsets): its video is re-encoded.
    b_frames: bool,
    /// Started at the first keyframe once B-frames were seen.
    reencoder: Option<WithoutBFrames>,
    audio_ssrc: u32,
    audio_seq: u16,
    audio_ts_base: u32,
    /// Ends the connection when the stream's key is rotated.
    registration: Registration,
}

impl Publishing {
    fn new(stream: String, registration: Registration) -> Self {
        Self {
            stream,
            ingest: None,
            sps_pps: Vec::new(),
            avc_record: Bytes::new(),
            ssrc: rand::random(),
            seq: rand::random(),
            ts_base: rand::random(),
            audio: None,
            aac_config: None,
            b_frames: false,
            reencoder: None,
            audio_ssrc: rand::random(),
            audio_seq: rand::random(),
            audio_ts_base: rand::random(),
            registration,
        }
    }
}

/// Until publishing (`registration`), never; then when its stream's key is rotated.
async fn key_rotated(registration: Option<&Registration>) {
    match registration {
        Some(r) => r.ended().await,
        None => std::future::pending().await,
    }
}

/// The next Opus packet of the stream's transcoder, as soon as it is encoded (never without one).
async fn next_opus(audio: Option<&mut AacToOpus>) -> Option<OpusPacket> {
    match audio {
        Some(t) => t.next().await,
        None => std::future::pending().await,
    }
}

/// One connection, from accept to close. `slot` is held until the publish is accepted.
async fn connection<S>(mut sock: S, peer: SocketAddr, shared: Arc<Shared>, slot: Slot)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let media = &shared.media;
    let started = Instant::now();
    let publish_by = started + shared.limits.publish_deadline;
    let mut slot = Some(slot);
    let mut session = ServerSession::new();
    let mut pending = BytesMut::with_capacity(READ_BUFFER);
    let mut publishing: Option<Publishing> = None;
    let reason = loop {
        // Before an accepted publish, the publish deadline bounds reads and writes too.
        let idle_by = Instant::now() + IDLE_TIMEOUT;
        let (deadline, timed_out) = match publishing {
            None if publish_by < idle_by => (publish_by, "no accepted publish in time"),
            _ => (idle_by, "idle timeout"),
        };
        pending.reserve(READ_BUFFER);
        let (registration, audio) = match publishing.as_mut() {
            Some(p) => (Some(&p.registration), p.audio.as_mut()),
            None => (None, None),
        };
        let read = tokio::select! {
            biased;
            _ = key_rotated(registration) => {
                session.reject_publish("stream key rotated: publish with the new key");
                let out = session.take_output();
                let _ = tokio::time::timeout(FAREWELL_TIMEOUT, sock.write_all(&out)).await;
                break KEY_ROTATED;
            }
            // Audio goes out the moment it is encoded, not with the next message read.
            Some(opus) = next_opus(audio) => {
                if let Some(p) = publishing.as_mut() {
                    if let Err(why) = send_opus(media, p, opus).await {
                        break why;
                    }
                }
                continue;
            }
            read = tokio::time::timeout_at(deadline, sock.read_buf(&mut pending)) => read,
        };
        match read {
            Err(_) => break timed_out,
            Ok(Ok(0)) => break "connection closed",
            Ok(Err(_)) => break "read error",
            Ok(Ok(_)) => {}
        }
        let now_ms = started.elapsed().as_millis() as u32;
        let mut stop = None;
        // The session reads nothing past a `publish` until it is decided: once it is, the
        // rest is fed again at once, with the limits the decision gave.
        let fed = loop {
            let used = match session.feed(&pending, now_ms) {
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            let _ = pending.split_to(used);
            while let Some(ev) = session.poll_event() {
                match ev {
                    // The session answers a second publish itself (one stream per connection);
                    // replacing `publishing` would leak its ingest.
                    SessionEvent::PublishRequested { .. } if publishing.is_some() => {}
                    SessionEvent::PublishRequested { key, .. } => {
                        match shared.keys.stream_for_key(&key).await {
                            Some(stream) => {
                                info!(%peer, %stream, "rtmp publish accepted");
                                session.accept_publish();
                                // Vouched for by its key: no longer counted among the unknown.
                                slot = None;
                                let registration = shared.publishers.register(&stream);
                                publishing = Some(Publishing::new(stream, registration));
                            }
                            None => {
                                info!(%peer, "rtmp publish refused: unknown stream key");
                                session.reject_publish("unknown stream key");
                            }
                        }
                    }
                    SessionEvent::Video { timestamp, data } => {
                        let Some(p) = publishing.as_mut() else {
                            continue;
                        };
                        if let Err(why) = on_video(media, p, timestamp, &data).await {
                            if why == UNSUPPORTED_VIDEO {
                                // Tell the client why before closing (OBS shows the description).
                                session.reject_publish(
                                    "unsupported video codec: Glint takes H.264 over RTMP",
                                );
                            }
                            stop = Some(why);
                            break;
                        }
                    }
                    SessionEvent::Unpublished => {
                        stop = Some("unpublished");
                        break;
                    }
                    SessionEvent::Audio { timestamp, data } => {
                        let Some(p) = publishing.as_mut() else {
                            continue;
                        };
                        if let (Some(frame), Some(id)) = (on_audio(p, timestamp, &data), p.ingest) {
                            if media.push_ingest_aac(id, frame).await.is_err() {
                                stop = Some("media core gone");
                                break;
                            }
                        }
                    }
                    SessionEvent::Metadata(_) => {}
                }
            }
            if stop.is_some() || session.is_closed() || used == 0 || pending.is_empty() {
                break Ok(());
            }
        };
        if let Err(e) = fed {
            debug!(%peer, error = %e, "rtmp protocol error");
            break "protocol error";
        }
        let max_pending = if publishing.is_some() {
            MAX_PENDING
        } else {
            MAX_PENDING_BEFORE_PUBLISH
        };
        if pending.len() > max_pending {
            break "too much unparsed input";
        }
        let out = session.take_output();
        if !out.is_empty() {
            // A peer that does not read its replies is held to the same deadline.
            match tokio::time::timeout_at(deadline, sock.write_all(&out)).await {
                Err(_) => break timed_out,
                Ok(Err(_)) => break "write error",
                Ok(Ok(())) => {}
            }
        }
        if let Some(why) = stop {
            break why;
        }
        if session.is_closed() {
            break "publish refused";
        }
    };
    drop(slot);
    if let Some(Publishing {
        ingest: Some(id),
        stream,
        ..
    }) = publishing
    {
        // Only an unpublish, a refused codec or a rotated key ends the stream; a lost
        // connection may be OBS about to reconnect.
        let how = match reason {
            "unpublished" | UNSUPPORTED_VIDEO | KEY_ROTATED => Departure::Ended,
            _ => Departure::Dropped,
        };
        info!(%peer, %stream, reason, ?how, "rtmp publisher gone");
        media.close_ingest(id, "rtmp publisher left", how).await;
    } else {
        debug!(%peer, reason, "rtmp connection closed");
    }
}

async fn on_video(
    media: &MediaHandle,
    p: &mut Publishing,
    timestamp: u32,
    data: &Bytes,
) -> Result<(), &'static str> {
    match flv::parse_video(data).map_err(|_| "malformed video tag")? {
        VideoTag::AvcConfig { sps, pps, record } => {
            let profile = sps
                .first()
                .and_then(|s| flv::profile_level_id(s))
                .unwrap_or_else(|| "42e01f".into());
            p.sps_pps = sps.into_iter().chain(pps).collect();
            p.avc_record = record;
            // New parameters (a resolution change, say): the decoder starts again with them.
            p.reencoder = None;
            if p.ingest.is_none() {
                // Both tracks' RTP time is the publisher's clock (FLV milliseconds from its zero,
                // which this message dates): viewers' sender reports follow it, so they play
                // audio and video captured together together, though the audio comes later.
                let zero = std::time::Instant::now();
                let zero = zero
                    .checked_sub(Duration::from_millis(timestamp.into()))
                    .unwrap_or(zero);
                let on_flv_clock = |ssrc, rtp_ts| SourceTime {
                    ssrc,
                    rtp_ts,
                    at: zero,
                };
                let tracks = vec![
                    PublishedTrack::h264(&profile)
                        .with_source_time(on_flv_clock(p.ssrc, p.ts_base)),
                    PublishedTrack::opus()
                        .with_source_time(on_flv_clock(p.audio_ssrc, p.audio_ts_base)),
                ];
                match media.publish_ingest(&p.stream, tracks).await {
                    Ok(id) => p.ingest = Some(id),
                    Err(e) => {
                        warn!(stream = %p.stream, error = %e, "rtmp publish could not start");
                        return Err("stream busy");
                    }
                }
            }
            Ok(())
        }
        VideoTag::AvcFrame {
            keyframe,
            cts,
            nalus,
            avcc,
        } => {
            let Some(id) = p.ingest else { return Ok(()) };
            if nalus.is_empty() {
                return Ok(());
            }
            if cts != 0 && !p.b_frames {
                p.b_frames = true;
                info!(stream = %p.stream, "stream has B-frames: its video is re-encoded without them for WebRTC viewers (set the encoder's B-frames to 0 to save this)");
            }
            if !p.b_frames {
                let ts = flv::rtp_timestamp(timestamp, cts);
                let parameter_sets = if keyframe {
                    p.sps_pps.clone()
                } else {
                    Vec::new()
                };
                return send_frame(media, p, id, ts, parameter_sets, nalus).await;
            }
            if p.reencoder.is_none() {
                if !keyframe {
                    return Ok(()); // decoding starts at a keyframe
                }
                match WithoutBFrames::new(&p.avc_record) {
                    Ok(r) => p.reencoder = Some(r),
                    Err(e) => {
                        warn!(stream = %p.stream, error = %e, "video re-encoder could not start; forwarding the B-frames as they are");
                        p.b_frames = false;
                        let ts = flv::rtp_timestamp(timestamp, cts);
                        let parameter_sets = p.sps_pps.clone();
                        return send_frame(media, p, id, ts, parameter_sets, nalus).await;
                    }
                }
            }
            let Some(reencoder) = p.reencoder.as_mut() else {
                return Ok(());
            };
            let frames = match reencoder.push(timestamp, cts, keyframe, &avcc) {
                Ok(f) => f,
                Err(e) => {
                    // Restart at the next keyframe.
                    warn!(stream = %p.stream, error = %e, "video re-encoder failed; restarting");
                    p.reencoder = None;
                    return Ok(());
                }
            };
            for f in frames {
                send_frame(media, p, id, f.rtp_ts, f.parameter_sets, f.nalus).await?;
            }
            Ok(())
        }
        VideoTag::Unsupported(what) => {
            warn!(stream = %p.stream, %what, "rtmp video refused");
            Err(UNSUPPORTED_VIDEO)
        }
    }
}

/// One access unit to the SFU as RTP: `parameter_sets` (SPS, PPS) first, so viewers joining at
/// a keyframe can decode it. `ts` is on the 90 kHz clock from the RTMP clock's zero.
async fn send_frame(
    media: &MediaHandle,
    p: &mut Publishing,
    id: SessionId,
    ts: u32,
    parameter_sets: Vec<Bytes>,
    nalus: Vec<Bytes>,
) -> Result<(), &'static str> {
    let mut units = parameter_sets;
    units.extend(nalus);
    let ts = p.ts_base.wrapping_add(ts);
    let packets = flv::packetize(&units, flv::MAX_RTP_PAYLOAD)
        .into_iter()
        .map(|(payload, marker)| {
            p.seq = p.seq.wrapping_add(1);
            rtp_packet(96, p.ssrc, p.seq, ts, marker, payload)
        })
        .collect();
    media
        .push_ingest(id, packets)
        .await
        .map_err(|_| "media core gone")
}

fn rtp_packet(pt: u8, ssrc: u32, seq: u16, ts: u32, marker: bool, payload: Bytes) -> rtp::Packet {
    rtp::Packet {
        header: rtp::Header {
            version: 2,
            marker,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            ..Default::default()
        },
        payload,
    }
}

/// AAC to the AAC → Opus pipeline (WebRTC viewers); the frame as it came for HLS is returned,
/// on the video's RTP clock.
fn on_audio(p: &mut Publishing, timestamp: u32, data: &Bytes) -> Option<AacFrame> {
    match audio::parse_audio(data) {
        Some(AudioTag::AacConfig(asc)) => {
            p.aac_config = Some(asc.clone());
            match AacToOpus::new(&asc) {
                Ok(t) => p.audio = Some(t),
                // Video still plays; say why there is no sound.
                Err(e) => {
                    warn!(stream = %p.stream, error = %e, "AAC → Opus pipeline could not start")
                }
            }
        }
        Some(AudioTag::AacFrame(frame)) => {
            p.ingest?;
            if let Some(t) = p.audio.as_mut() {
                // Its Opus comes back through `next_opus`.
                if let Err(e) = t.push(timestamp, &frame) {
                    warn!(stream = %p.stream, error = %e, "AAC → Opus failed; audio stops");
                    p.audio = None;
                }
            }
            return Some(AacFrame {
                config: p.aac_config.clone()?,
                frame,
                video_ts: p.ts_base.wrapping_add(flv::rtp_timestamp(timestamp, 0)),
            });
        }
        Some(AudioTag::Unsupported(format)) => {
            debug!(stream = %p.stream, format, "FLV audio format not forwarded (only AAC)");
        }
        None => {}
    }
    None
}

/// `first` and every other Opus packet encoded by now, to the SFU as RTP.
async fn send_opus(
    media: &MediaHandle,
    p: &mut Publishing,
    first: OpusPacket,
) -> Result<(), &'static str> {
    let Some(id) = p.ingest else { return Ok(()) };
    let more = p
        .audio
        .as_mut()
        .map(|t| std::iter::from_fn(|| t.try_next()));
    let packets = std::iter::once(first)
        .chain(more.into_iter().flatten())
        .map(|o| {
            p.audio_seq = p.audio_seq.wrapping_add(1);
            let ts = p.audio_ts_base.wrapping_add(o.rtp_ts);
            rtp_packet(111, p.audio_ssrc, p.audio_seq, ts, false, o.payload)
        })
        .collect();
    media
        .push_ingest(id, packets)
        .await
        .map_err(|_| "media core gone")
}

#[cfg(test)]
mod tests {
    use tokio::io::DuplexStream;

    use super::*;
    use crate::ingest::rtmp::amf0::Value;
    use crate::ingest::rtmp::chunk::{
        Message, MAX_BUFFERED_BEFORE_PUBLISH, MAX_MESSAGE_BEFORE_PUBLISH, MSG_SET_CHUNK_SIZE,
    };
    use crate::ingest::rtmp::client::{
        avc_config_tag, obs_until_publish, replies, s, Client, TEST_PPS, TEST_SPS,
    };
    use crate::ingest::rtmp::handshake::SIG_LEN;
    use crate::ingest::rtmp::limits::DEFAULT_PUBLISH_DEADLINE as DEFAULT_DEADLINE;
    use crate::ingest::rtmp::session::MSG_VIDEO;
    use crate::slots::Slots;

    const PEER: &str = "192.0.2.1:5000";
    /// Bound on every wait for the server (real time).
    const WAIT: Duration = Duration::from_secs(10);

    /// Key `good` publishes stream `demo`.
    struct OneKey;

    impl StreamKeys for OneKey {
        fn stream_for_key<'a>(&'a self, key: &'a str) -> KeyFuture<'a> {
            Box::pin(async move { (key == "good").then(|| "demo".to_owned()) })
        }
    }

    struct Harness {
        shared: Arc<Shared>,
        slots: Slots,
    }

    /// The media core on a runtime of its own, in real time: its loop reads the real clock, so
    /// it must not share a test's paused one. It stops when the last handle is dropped.
    fn media_core(reconnect_grace: Duration) -> MediaHandle {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (media, task) = crate::runtime::spawn(crate::MediaConfig {
                    udp_bind: "127.0.0.1:0".parse().unwrap(),
                    reconnect_grace,
                    fanout_threads: 1,
                    ..Default::default()
                })
                .await
                .unwrap();
                tx.send(media).unwrap();
                let _ = task.join.await;
            });
        });
        rx.recv().unwrap()
    }

    fn harness(reconnect_grace: Duration) -> Harness {
        let limits = RtmpLimits::default();
        Harness {
            slots: limits.slots(),
            shared: Arc::new(Shared {
                media: media_core(reconnect_grace),
                keys: Arc::new(OneKey),
                limits,
                publishers: RtmpPublishers::default(),
            }),
        }
    }

    impl Harness {
        /// A connection task on an in-memory stream: the client's end, and the task.
        fn connect(&self) -> (DuplexStream, JoinHandle<()>) {
            let (client, server) = tokio::io::duplex(256 << 10);
            let peer: SocketAddr = PEER.parse().unwrap();
            let slot = self.slots.try_acquire(peer.ip()).unwrap();
            let task = tokio::spawn(connection(server, peer, self.shared.clone(), slot));
            (client, task)
        }

        async fn live_streams(&self) -> Vec<crate::StreamSummary> {
            self.shared.media.streams().await.unwrap()
        }
    }

    /// Everything the server sends until it closes the connection.
    async fn read_to_close(c: &mut DuplexStream) -> Vec<u8> {
        let mut got = Vec::new();
        let _ = c.read_to_end(&mut got).await;
        got
    }

    /// `onStatus` codes in what the server sent so far (handshake included).
    fn status_codes(got: &[u8]) -> Vec<String> {
        replies(got)
            .into_iter()
            .filter(|v| v.first().and_then(Value::as_str) == Some("onStatus"))
            .filter_map(|v| v.get(3)?.get("code")?.as_str().map(str::to_owned))
            .collect()
    }

    /// Read until `done` holds for everything received (bounded by [`WAIT`]).
    async fn read_until(c: &mut DuplexStream, got: &mut Vec<u8>, done: impl Fn(&[u8]) -> bool) {
        let mut buf = [0u8; 4096];
        while !done(got) {
            let n = tokio::time::timeout(WAIT, c.read(&mut buf))
                .await
                .expect("the server answers")
                .unwrap();
            assert_ne!(n, 0, "closed early: {:?}", status_codes(got));
            got.extend_from_slice(&buf[..n]);
        }
    }

    /// Until the predicate holds of the media core's streams, polling (bounded by [`WAIT`]).
    async fn until_streams(h: &Harness, what: &str, f: impl Fn(&[crate::StreamSummary]) -> bool) {
        let deadline = std::time::Instant::now() + WAIT;
        while !f(&h.live_streams().await) {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Publish `demo` with key `good` and start its ingest (an AVC configuration); `got` holds
    /// what the server sent, up to `NetStream.Publish.Start`.
    async fn publishing(h: &Harness) -> (DuplexStream, JoinHandle<()>, Client, Vec<u8>) {
        let (mut c, task) = h.connect();
        let mut client = obs_until_publish("good");
        c.write_all(&client.wire).await.unwrap();
        let mut got = Vec::new();
        read_until(&mut c, &mut got, |g| !status_codes(g).is_empty()).await;
        assert_eq!(status_codes(&got), ["NetStream.Publish.Start"]);
        client.wire.clear();
        client.video(0, avc_config_tag(TEST_SPS, TEST_PPS));
        c.write_all(&client.wire).await.unwrap();
        until_streams(h, "demo live", |s| {
            s.iter().any(|s| s.name == "demo" && s.live)
        })
        .await;
        (c, task, client, got)
    }

    #[tokio::test]
    async fn a_large_message_before_publish_closes_the_connection() {
        let h = harness(Duration::ZERO);
        let (mut c, task) = h.connect();
        let mut client = Client::new();
        // The header of a 1 MiB video message, and its first chunk.
        let big = Message {
            csid: 6,
            timestamp: 0,
            type_id: MSG_VIDEO,
            stream_id: 1,
            payload: vec![0u8; 1 << 20].into(),
        };
        let mut chunks = Vec::new();
        crate::ingest::rtmp::chunk::write_message(&mut chunks, 128, 6, &big);
        client.wire.extend_from_slice(&chunks[..12 + 128]);
        c.write_all(&client.wire).await.unwrap();
        // Closed as soon as the header is read (the handshake's answer may not even go out).
        let got = read_to_close(&mut c).await;
        assert!(
            got.len() <= 1 + 2 * SIG_LEN,
            "nothing answered after the handshake"
        );
        tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
        assert_eq!(h.slots.in_use(), 0, "its slot is given back");
    }

    #[tokio::test]
    async fn unfinished_messages_across_chunk_streams_close_the_connection() {
        let h = harness(Duration::ZERO);
        let (mut c, task) = h.connect();
        // 32 KiB chunks, then a message at the limit begun on chunk stream after chunk stream.
        const CHUNK: usize = 32 << 10;
        let mut client = Client::new();
        client.msg(
            2,
            MSG_SET_CHUNK_SIZE,
            0,
            0,
            (CHUNK as u32).to_be_bytes().to_vec(),
        );
        c.write_all(&client.wire).await.unwrap();
        let mut started = 0;
        for csid in 3..64u8 {
            let l = (MAX_MESSAGE_BEFORE_PUBLISH as u32).to_be_bytes();
            let mut wire = vec![csid, 0, 0, 0, l[1], l[2], l[3], MSG_VIDEO, 1, 0, 0, 0];
            wire.extend_from_slice(&[0; CHUNK]);
            if c.write_all(&wire).await.is_err() {
                break;
            }
            started += 1;
        }
        let got = read_to_close(&mut c).await;
        assert!(got.len() <= 1 + 2 * SIG_LEN);
        tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
        // The server held at most the cap: it closed at the first chunk beyond it (what was
        // written after that sat in the in-memory pipe, never in the session).
        assert!(
            started > MAX_BUFFERED_BEFORE_PUBLISH / CHUNK,
            "wrote {started} chunk streams"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_publish_within_the_deadline_closes_the_connection() {
        let h = harness(Duration::ZERO);
        let (mut c, task) = h.connect();
        let opened = Instant::now();
        // A `connect`, then a `createStream` sent one byte every 5 s: never idle, never done.
        let mut client = Client::new();
        client.cmd(
            0,
            &[
                s("connect"),
                Value::Number(1.0),
                Value::Object(vec![("app".into(), s("live"))]),
            ],
        );
        c.write_all(&client.wire).await.unwrap();
        client.wire.clear();
        client.cmd(0, &[s("createStream"), Value::Number(2.0), Value::Null]);
        // `c` both reads and writes: one select, a byte written each time 5 s pass quietly.
        let mut buf = [0u8; 4096];
        let mut bytes = client.wire.iter();
        let closed_at = loop {
            tokio::select! {
                n = c.read(&mut buf) => if n.unwrap_or(0) == 0 { break Instant::now() },
                _ = tokio::time::sleep(Duration::from_secs(5)) => {
                    let b = *bytes.next().expect("closed before the trickle ends");
                    let _ = c.write_all(&[b]).await;
                }
            }
        };
        let after = closed_at - opened;
        assert!(
            after >= DEFAULT_DEADLINE && after < DEFAULT_DEADLINE + Duration::from_secs(1),
            "closed after {after:?}"
        );
        task.await.unwrap();
        assert_eq!(h.slots.in_use(), 0);
    }

    #[tokio::test]
    async fn a_second_publish_is_refused_and_the_first_ingest_ends_with_the_connection() {
        let h = harness(Duration::ZERO);
        let (mut c, task, mut client, mut got) = publishing(&h).await;
        assert_eq!(h.slots.in_use(), 0, "a publishing connection holds no slot");
        // Another publish on the same connection, with a good key and with another.
        for key in ["good", "other"] {
            client.wire.clear();
            client.cmd(
                1,
                &[
                    s("publish"),
                    Value::Number(7.0),
                    Value::Null,
                    s(key),
                    s("live"),
                ],
            );
            c.write_all(&client.wire).await.unwrap();
            let before = status_codes(&got).len();
            read_until(&mut c, &mut got, |g| status_codes(g).len() > before).await;
            assert_eq!(
                status_codes(&got).last().map(String::as_str),
                Some("NetStream.Publish.BadName")
            );
        }
        let live = h.live_streams().await;
        assert!(live.len() == 1 && live[0].live, "{live:?}");
        assert_eq!(h.shared.publishers.count("demo"), 1);
        // The connection goes: the one ingest it started ends with it (grace 0: offline now).
        drop(c);
        tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
        until_streams(&h, "stream offline", |s| s.is_empty()).await;
        assert_eq!(h.shared.publishers.count("demo"), 0);
        let m = h.shared.media.metrics();
        assert_eq!(m.publishers.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn media_right_behind_the_publish_gets_the_publishing_limits() {
        // A client that does not wait for `NetStream.Publish.Start`: its configuration and a
        // keyframe larger than the limit before the key check arrive with the `publish`.
        let h = harness(Duration::ZERO);
        let (mut c, task) = h.connect();
        let mut client = obs_until_publish("good");
        client.video(0, avc_config_tag(TEST_SPS, TEST_PPS));
        let mut keyframe = vec![0x17, 0x01, 0, 0, 0];
        let nalu_len = 2 * MAX_MESSAGE_BEFORE_PUBLISH;
        keyframe.extend_from_slice(&(nalu_len as u32).to_be_bytes());
        keyframe.push(0x65);
        keyframe.resize(keyframe.len() + nalu_len - 1, 0x88);
        client.video(33, keyframe);
        c.write_all(&client.wire).await.unwrap();
        let mut got = Vec::new();
        read_until(&mut c, &mut got, |g| !status_codes(g).is_empty()).await;
        assert_eq!(status_codes(&got), ["NetStream.Publish.Start"]);
        until_streams(&h, "demo live with its keyframe", |s| {
            s.iter()
                .any(|s| s.name == "demo" && s.bytes_in >= nalu_len as u64)
        })
        .await;
        assert!(!task.is_finished(), "the connection stays open");
        drop(c);
        tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_rotated_key_ends_the_connection_and_the_stream_at_once() {
        // A long reconnect grace: the stream must go offline at once all the same.
        let h = harness(Duration::from_secs(60));
        let (mut c, task, _client, mut got) = publishing(&h).await;
        assert_eq!(h.shared.publishers.end("demo"), 1);
        got.extend(read_to_close(&mut c).await);
        tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
        assert_eq!(
            status_codes(&got).last().map(String::as_str),
            Some("NetStream.Publish.BadName"),
            "told why"
        );
        until_streams(&h, "stream offline, not reconnecting", |s| s.is_empty()).await;
    }
}
