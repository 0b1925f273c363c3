//! The RTMP listener: one task per TCP connection, each driving a [`ServerSession`] and turning
//! an accepted publish into an SFU ingest publisher: H.264 → RTP as is (or re-encoded without
//! B-frames through GStreamer, `reencode.rs`), AAC → Opus RTP through GStreamer (`audio.rs`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::rtp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::audio::{self, AacToOpus, AudioTag};
use super::flv::{self, VideoTag};
use super::reencode::WithoutBFrames;
use super::session::{ServerSession, SessionEvent};
use crate::runtime::MediaHandle;
use crate::sfu::peer::PublishedTrack;
use crate::sfu::{Departure, SessionId};

/// A connection that sends nothing for this long is closed (a stalled publisher frees its
/// stream for a reconnect).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
const READ_BUFFER: usize = 64 * 1024;
/// Unconsumed input allowed before the peer is considered hostile.
const MAX_PENDING: usize = 16 << 20;

const UNSUPPORTED_VIDEO: &str = "unsupported video codec";

pub type KeyFuture<'a> = Pin<Box<dyn Future<Output = Option<String>> + Send + 'a>>;

/// Which stream a stream key publishes to (the same keys WHIP uses), or `None` to refuse.
pub trait StreamKeys: Send + Sync + 'static {
    fn stream_for_key<'a>(&'a self, key: &'a str) -> KeyFuture<'a>;
}

/// Accept RTMP connections until the listener fails or the task is aborted.
pub fn spawn(
    listener: TcpListener,
    media: MediaHandle,
    keys: Arc<dyn StreamKeys>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((sock, peer)) => {
                    let _ = sock.set_nodelay(true);
                    tokio::spawn(connection(sock, peer, media.clone(), keys.clone()));
                }
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
    /// The stream has B-frames (non-zero composition offsets): its video is re-encoded.
    b_frames: bool,
    /// Started at the first keyframe once B-frames were seen.
    reencoder: Option<WithoutBFrames>,
    audio_ssrc: u32,
    audio_seq: u16,
    audio_ts_base: u32,
}

async fn connection(
    mut sock: TcpStream,
    peer: SocketAddr,
    media: MediaHandle,
    keys: Arc<dyn StreamKeys>,
) {
    let started = Instant::now();
    let mut session = ServerSession::new();
    let mut pending = BytesMut::with_capacity(READ_BUFFER);
    let mut publishing: Option<Publishing> = None;
    let reason = loop {
        pending.reserve(READ_BUFFER);
        let read = match tokio::time::timeout(IDLE_TIMEOUT, sock.read_buf(&mut pending)).await {
            Err(_) => break "idle timeout",
            Ok(Ok(0)) => break "connection closed",
            Ok(Err(_)) => break "read error",
            Ok(Ok(n)) => n,
        };
        let _ = read;
        let now_ms = started.elapsed().as_millis() as u32;
        let used = match session.feed(&pending, now_ms) {
            Ok(n) => n,
            Err(e) => {
                debug!(%peer, error = %e, "rtmp protocol error");
                break "protocol error";
            }
        };
        let _ = pending.split_to(used);
        if pending.len() > MAX_PENDING {
            break "too much unparsed input";
        }
        let mut stop = None;
        while let Some(ev) = session.poll_event() {
            match ev {
                SessionEvent::PublishRequested { key, .. } => match keys.stream_for_key(&key).await
                {
                    Some(stream) => {
                        info!(%peer, %stream, "rtmp publish accepted");
                        session.accept_publish();
                        publishing = Some(Publishing {
                            stream,
                            ingest: None,
                            sps_pps: Vec::new(),
                            avc_record: Bytes::new(),
                            ssrc: rand::random(),
                            seq: rand::random(),
                            ts_base: rand::random(),
                            audio: None,
                            b_frames: false,
                            reencoder: None,
                            audio_ssrc: rand::random(),
                            audio_seq: rand::random(),
                            audio_ts_base: rand::random(),
                        });
                    }
                    None => {
                        info!(%peer, "rtmp publish refused: unknown stream key");
                        session.reject_publish("unknown stream key");
                    }
                },
                SessionEvent::Video { timestamp, data } => {
                    let Some(p) = publishing.as_mut() else {
                        continue;
                    };
                    if let Err(why) = on_video(&media, p, timestamp, &data).await {
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
                    if let Err(why) = on_audio(&media, p, timestamp, &data).await {
                        stop = Some(why);
                        break;
                    }
                }
                SessionEvent::Metadata(_) => {}
            }
        }
        let out = session.take_output();
        if !out.is_empty() && sock.write_all(&out).await.is_err() {
            break "write error";
        }
        if let Some(why) = stop {
            break why;
        }
        if session.is_closed() {
            break "publish refused";
        }
    };
    if let Some(Publishing {
        ingest: Some(id),
        stream,
        ..
    }) = publishing
    {
        // Only an unpublish (or a refused codec) ends the stream; a lost connection may be OBS
        // about to reconnect.
        let how = match reason {
            "unpublished" | UNSUPPORTED_VIDEO => Departure::Ended,
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
                match media
                    .publish_ingest(
                        &p.stream,
                        vec![PublishedTrack::h264(&profile), PublishedTrack::opus()],
                    )
                    .await
                {
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

async fn on_audio(
    media: &MediaHandle,
    p: &mut Publishing,
    timestamp: u32,
    data: &Bytes,
) -> Result<(), &'static str> {
    match audio::parse_audio(data) {
        Some(AudioTag::AacConfig(asc)) => match AacToOpus::new(&asc) {
            Ok(t) => p.audio = Some(t),
            // Video still plays; say why there is no sound.
            Err(e) => warn!(stream = %p.stream, error = %e, "AAC → Opus pipeline could not start"),
        },
        Some(AudioTag::AacFrame(frame)) => {
            let (Some(t), Some(id)) = (p.audio.as_mut(), p.ingest) else {
                return Ok(());
            };
            let opus = match t.push(timestamp, &frame) {
                Ok(o) => o,
                Err(e) => {
                    warn!(stream = %p.stream, error = %e, "AAC → Opus failed; audio stops");
                    p.audio = None;
                    return Ok(());
                }
            };
            if opus.is_empty() {
                return Ok(());
            }
            let packets = opus
                .into_iter()
                .map(|(payload, ts)| {
                    p.audio_seq = p.audio_seq.wrapping_add(1);
                    let ts = p.audio_ts_base.wrapping_add(ts);
                    rtp_packet(111, p.audio_ssrc, p.audio_seq, ts, false, payload)
                })
                .collect();
            media
                .push_ingest(id, packets)
                .await
                .map_err(|_| "media core gone")?;
        }
        Some(AudioTag::Unsupported(format)) => {
            debug!(stream = %p.stream, format, "FLV audio format not forwarded (only AAC)");
        }
        None => {}
    }
    Ok(())
}
