//! The codecs Glint forwards, and how to recognise a keyframe in their RTP payloads.
//!
//! We forward without transcoding, so a viewer gets exactly the codec the publisher sends:
//! H.264 (packetization-mode=1 only; RFC 6184 §6.3 non-interleaved mode, what browsers and OBS
//! use), VP8, and Opus. Payload parsing here reads untrusted bytes and never panics.

use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_RTX, MIME_TYPE_VP8,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};

/// Audio or video, our own small copy so the core's maps don't depend on rtc's enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }

    pub(crate) fn to_rtc(self) -> RtpCodecKind {
        match self {
            MediaKind::Audio => RtpCodecKind::Audio,
            MediaKind::Video => RtpCodecKind::Video,
        }
    }

    pub(crate) fn from_rtc(kind: RtpCodecKind) -> Option<Self> {
        match kind {
            RtpCodecKind::Audio => Some(MediaKind::Audio),
            RtpCodecKind::Video => Some(MediaKind::Video),
            _ => None,
        }
    }
}

/// Which payload format a video track carries, for keyframe detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadFormat {
    H264,
    Vp8,
    Opus,
    Other,
}

impl PayloadFormat {
    pub fn from_mime(mime: &str) -> Self {
        if mime.eq_ignore_ascii_case(MIME_TYPE_H264) {
            PayloadFormat::H264
        } else if mime.eq_ignore_ascii_case(MIME_TYPE_VP8) {
            PayloadFormat::Vp8
        } else if mime.eq_ignore_ascii_case(MIME_TYPE_OPUS) {
            PayloadFormat::Opus
        } else {
            PayloadFormat::Other
        }
    }

    /// Does this RTP payload start (or carry) a keyframe?
    pub fn is_keyframe(self, payload: &[u8]) -> bool {
        match self {
            PayloadFormat::H264 => h264_is_keyframe(payload),
            PayloadFormat::Vp8 => vp8_is_keyframe(payload),
            PayloadFormat::Opus | PayloadFormat::Other => false,
        }
    }
}

/// H.264 NAL unit types (ITU-T H.264 Table 7-1) and RTP aggregation types (RFC 6184 §5.2).
const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_STAP_A: u8 = 24;
const NAL_FU_A: u8 = 28;

fn h264_is_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    match first & 0x1f {
        NAL_IDR | NAL_SPS => true,
        NAL_STAP_A => {
            // RFC 6184 §5.7.1: 16-bit size, then the NAL unit, repeated.
            let mut rest = &payload[1..];
            while rest.len() > 2 {
                let size = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                let Some(nal) = rest.get(2..2 + size) else {
                    return false;
                };
                if matches!(nal.first().map(|b| b & 0x1f), Some(NAL_IDR | NAL_SPS)) {
                    return true;
                }
                rest = &rest[2 + size..];
            }
            false
        }
        NAL_FU_A => {
            // RFC 6184 §5.8: FU header S bit marks the first fragment.
            payload
                .get(1)
                .is_some_and(|fu| fu & 0x80 != 0 && matches!(fu & 0x1f, NAL_IDR | NAL_SPS))
        }
        _ => false,
    }
}

/// The SPS NAL unit in an RTP payload (single NAL unit or STAP-A), if there is one.
pub fn h264_sps(payload: &[u8]) -> Option<&[u8]> {
    match payload.first()? & 0x1f {
        NAL_SPS => Some(payload),
        NAL_STAP_A => {
            let mut rest = &payload[1..];
            while rest.len() > 2 {
                let size = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                let nal = rest.get(2..2 + size)?;
                if nal.first().map(|b| b & 0x1f) == Some(NAL_SPS) {
                    return Some(nal);
                }
                rest = &rest[2 + size..];
            }
            None
        }
        _ => None,
    }
}

/// Where the VP8 frame starts in an RTP payload that begins one (RFC 7741 §4.2 payload
/// descriptor, S=1 and partition 0), or `None` for other packets.
pub fn vp8_frame_start(payload: &[u8]) -> Option<usize> {
    let &b0 = payload.first()?;
    let start_of_partition = b0 & 0x10 != 0;
    let partition_id = b0 & 0x07;
    if !start_of_partition || partition_id != 0 {
        return None;
    }
    let mut idx = 1;
    if b0 & 0x80 != 0 {
        let &x = payload.get(idx)?;
        idx += 1;
        if x & 0x80 != 0 {
            // PictureID: 7 or 15 bits.
            let &pid = payload.get(idx)?;
            idx += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            idx += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            idx += 1; // TID/Y/KEYIDX
        }
    }
    (idx < payload.len()).then_some(idx)
}

fn vp8_is_keyframe(payload: &[u8]) -> bool {
    // §4.3 payload header: P bit (bit 0) is 0 for a key frame.
    vp8_frame_start(payload).is_some_and(|i| payload[i] & 0x01 == 0)
}

/// Video RTCP feedback we negotiate: NACK (we answer from a cache), PLI and FIR (we coalesce
/// them toward the publisher). No REMB/TWCC toward viewers: we do no sender-side estimation.
fn video_feedback() -> Vec<RTCPFeedback> {
    [("nack", ""), ("nack", "pli"), ("ccm", "fir")]
        .into_iter()
        .map(|(typ, parameter)| RTCPFeedback {
            typ: typ.into(),
            parameter: parameter.into(),
        })
        .collect()
}

/// H.264 profiles we accept from publishers, all packetization-mode=1. The profile is not a
/// promise (OBS says 42e01f and sends High): viewers get the publisher's fmtp line verbatim.
const H264_PROFILES: [&str; 5] = ["42e01f", "42001f", "4d001f", "640c1f", "64001f"];

/// Codecs a publisher may send us, in no particular order: the answer follows the offer's order
/// (RFC 8829 §5.3.1), so the publisher's first supported codec wins.
pub fn publisher_codecs() -> Vec<(RTCRtpCodecParameters, RtpCodecKind)> {
    let mut codecs = vec![
        (
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_OPUS.into(),
                    clock_rate: 48_000,
                    channels: 2,
                    sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                    rtcp_feedback: vec![],
                },
                payload_type: 111,
            },
            RtpCodecKind::Audio,
        ),
        (
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_VP8.into(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: String::new(),
                    rtcp_feedback: video_feedback(),
                },
                payload_type: 96,
            },
            RtpCodecKind::Video,
        ),
    ];
    for (i, profile) in H264_PROFILES.iter().enumerate() {
        codecs.push((
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_H264.into(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: format!(
                        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile}"
                    ),
                    rtcp_feedback: video_feedback(),
                },
                payload_type: 102 + i as u8,
            },
            RtpCodecKind::Video,
        ));
    }
    codecs
}

/// A media engine that accepts what publishers may send.
pub(crate) fn publisher_media_engine() -> rtc::shared::error::Result<MediaEngine> {
    let mut engine = MediaEngine::default();
    for (codec, kind) in publisher_codecs() {
        engine.register_codec(codec, kind)?;
    }
    Ok(engine)
}

/// A media engine for a viewer: exactly the publisher's negotiated codecs, so the viewer's answer
/// can only pick what we will forward.
pub(crate) fn viewer_media_engine(
    codecs: &[(MediaKind, RTCRtpCodecParameters)],
) -> rtc::shared::error::Result<MediaEngine> {
    let mut engine = MediaEngine::default();
    let mut used: Vec<u8> = codecs.iter().map(|(_, c)| c.payload_type).collect();
    for (kind, codec) in codecs {
        let mut codec = codec.clone();
        if *kind == MediaKind::Video {
            codec.rtp_codec.rtcp_feedback = video_feedback();
            // RFC 4588 RTX for the video codec: retransmissions answer viewers' NACKs on their
            // own SSRC. Some receivers (str0m) only NACK when RTX is negotiated.
            if let Some(rtx_pt) = (96..=127u8).find(|pt| !used.contains(pt)) {
                used.push(rtx_pt);
                engine.register_codec(
                    RTCRtpCodecParameters {
                        rtp_codec: RTCRtpCodec {
                            mime_type: MIME_TYPE_RTX.into(),
                            clock_rate: 90_000,
                            channels: 0,
                            sdp_fmtp_line: format!("apt={}", codec.payload_type),
                            rtcp_feedback: vec![],
                        },
                        payload_type: rtx_pt,
                    },
                    RtpCodecKind::Video,
                )?;
            }
        }
        engine.register_codec(codec, kind.to_rtc())?;
    }
    Ok(engine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_keyframes() {
        assert!(h264_is_keyframe(&[0x65, 0x88])); // IDR slice
        assert!(h264_is_keyframe(&[0x67, 0x42])); // SPS
        assert!(!h264_is_keyframe(&[0x41, 0x9a])); // non-IDR slice
                                                   // STAP-A with SPS (len 2) + PPS (len 1)
        assert!(h264_is_keyframe(&[0x78, 0, 2, 0x67, 0x42, 0, 1, 0x68]));
        // STAP-A with only a SEI
        assert!(!h264_is_keyframe(&[0x78, 0, 1, 0x06]));
        // STAP-A whose size runs past the end
        assert!(!h264_is_keyframe(&[0x78, 0, 9, 0x67]));
        // FU-A start of an IDR, FU-A middle of an IDR, FU-A start of a P slice
        assert!(h264_is_keyframe(&[0x7c, 0x85, 0]));
        assert!(!h264_is_keyframe(&[0x7c, 0x05, 0]));
        assert!(!h264_is_keyframe(&[0x7c, 0x81, 0]));
        assert!(!h264_is_keyframe(&[]));
        assert!(!h264_is_keyframe(&[0x7c]));
    }

    #[test]
    fn vp8_keyframes() {
        // S=1, PID=0, no extension, payload header P=0 → key frame
        assert!(vp8_is_keyframe(&[0x10, 0x00]));
        // P=1 → inter frame
        assert!(!vp8_is_keyframe(&[0x10, 0x01]));
        // continuation packet (S=0)
        assert!(!vp8_is_keyframe(&[0x00, 0x00]));
        // X=1, I=1 with 15-bit picture id (M bit), then header P=0
        assert!(vp8_is_keyframe(&[0x90, 0x80, 0x81, 0x23, 0x00]));
        // same, truncated before the payload header
        assert!(!vp8_is_keyframe(&[0x90, 0x80, 0x81, 0x23]));
        assert!(!vp8_is_keyframe(&[]));
    }

    #[test]
    fn publisher_codecs_are_mode_1_only() {
        for (codec, _) in publisher_codecs() {
            if codec.rtp_codec.mime_type == MIME_TYPE_H264 {
                assert!(codec
                    .rtp_codec
                    .sdp_fmtp_line
                    .contains("packetization-mode=1"));
            }
        }
        assert!(publisher_media_engine().is_ok());
    }
}
