//! FLV tag bodies carried in RTMP video messages (FLV spec v10, Annex E "enhanced RTMP"), and
//! H.264 from AVCC to RTP (RFC 6184, packetization-mode 1) for WebRTC viewers.

use bytes::Bytes;

use super::RtmpError;

/// FLV VideoTagHeader codec id 7: AVC.
const CODEC_AVC: u8 = 7;
const AVC_SEQUENCE_HEADER: u8 = 0;
const AVC_NALU: u8 = 1;
/// Enhanced RTMP: the high bit of the first byte marks an extended (FourCC) header.
const EX_HEADER: u8 = 0x80;
/// RTP payload budget per packet (fits a 1200-byte SRTP datagram with header and tag).
pub const MAX_RTP_PAYLOAD: usize = 1100;

/// What one RTMP video message holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoTag {
    /// AVCDecoderConfigurationRecord (`record`): the SPS and PPS to send before every keyframe.
    AvcConfig {
        sps: Vec<Bytes>,
        pps: Vec<Bytes>,
        record: Bytes,
    },
    /// One frame: its NAL units, and `avcc`, the same as one length-prefixed access unit;
    /// `cts` is the composition offset in ms (non-zero with B-frames).
    AvcFrame {
        keyframe: bool,
        cts: i32,
        nalus: Vec<Bytes>,
        avcc: Bytes,
    },
    /// Enhanced RTMP (HEVC, AV1, VP9 as FourCC) or another legacy codec: refused with a message.
    Unsupported(String),
}

pub fn parse_video(data: &Bytes) -> Result<VideoTag, RtmpError> {
    let &b0 = data
        .first()
        .ok_or(RtmpError::Chunk("empty video message"))?;
    if b0 & EX_HEADER != 0 {
        let fourcc = data
            .get(1..5)
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .unwrap_or_default();
        return Ok(VideoTag::Unsupported(format!(
            "enhanced RTMP codec {fourcc:?} (only H.264 is supported)"
        )));
    }
    let keyframe = b0 >> 4 == 1;
    if b0 & 0x0f != CODEC_AVC {
        return Ok(VideoTag::Unsupported(format!(
            "FLV video codec id {} (only H.264 / AVC is supported)",
            b0 & 0x0f
        )));
    }
    let packet_type = *data.get(1).ok_or(RtmpError::Chunk("short AVC tag"))?;
    let cts_bytes = data.get(2..5).ok_or(RtmpError::Chunk("short AVC tag"))?;
    // Signed 24-bit composition time offset.
    let cts = (i32::from_be_bytes([cts_bytes[0], cts_bytes[1], cts_bytes[2], 0])) >> 8;
    let body = data.slice(5..);
    match packet_type {
        AVC_SEQUENCE_HEADER => parse_avc_config(&body),
        AVC_NALU => Ok(VideoTag::AvcFrame {
            keyframe,
            cts,
            nalus: split_avcc(&body)?,
            avcc: body,
        }),
        _ => Ok(VideoTag::AvcFrame {
            keyframe,
            cts,
            nalus: Vec::new(),
            avcc: Bytes::new(),
        }), // end of sequence
    }
}

/// The NAL units of one access unit in AVCC form (4-byte big-endian lengths).
pub fn split_avcc(body: &Bytes) -> Result<Vec<Bytes>, RtmpError> {
    let mut nalus = Vec::new();
    let mut pos = 0;
    while pos + 4 <= body.len() {
        let len =
            u32::from_be_bytes([body[pos], body[pos + 1], body[pos + 2], body[pos + 3]]) as usize;
        pos += 4;
        if len == 0 || pos + len > body.len() {
            return Err(RtmpError::Chunk("NAL unit length runs past the tag"));
        }
        nalus.push(body.slice(pos..pos + len));
        pos += len;
    }
    Ok(nalus)
}

/// ISO/IEC 14496-15 §5.3.3.1 AVCDecoderConfigurationRecord.
pub fn parse_avc_config(b: &Bytes) -> Result<VideoTag, RtmpError> {
    let short = RtmpError::Chunk("short AVCDecoderConfigurationRecord");
    let n_sps = (*b.get(5).ok_or(short.clone())? & 0x1f) as usize;
    let mut pos = 6;
    let take_sets = |count: usize, pos: &mut usize| -> Result<Vec<Bytes>, RtmpError> {
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let len = b
                .get(*pos..*pos + 2)
                .map(|l| u16::from_be_bytes([l[0], l[1]]) as usize)
                .ok_or(short.clone())?;
            *pos += 2;
            out.push(
                b.get(*pos..*pos + len)
                    .map(|_| b.slice(*pos..*pos + len))
                    .ok_or(short.clone())?,
            );
            *pos += len;
        }
        Ok(out)
    };
    let sps = take_sets(n_sps, &mut pos)?;
    let n_pps = *b
        .get(pos)
        .ok_or(RtmpError::Chunk("short AVCDecoderConfigurationRecord"))? as usize;
    pos += 1;
    let pps = take_sets(n_pps, &mut pos)?;
    Ok(VideoTag::AvcConfig {
        sps,
        pps,
        record: b.clone(),
    })
}

/// `profile-level-id` (RFC 6184 §8.1) from an SPS: the three bytes after the NAL header.
pub fn profile_level_id(sps: &[u8]) -> Option<String> {
    sps.get(1..4)
        .map(|p| format!("{:02x}{:02x}{:02x}", p[0], p[1], p[2]))
}

/// Payloads of one access unit as RTP packets (single NAL unit or FU-A, RFC 6184 §5.6/§5.8);
/// the last one carries the marker bit. Returns (payload, marker) pairs.
pub fn packetize(nalus: &[Bytes], max_payload: usize) -> Vec<(Bytes, bool)> {
    let mut out = Vec::new();
    for nal in nalus.iter().filter(|n| !n.is_empty()) {
        if nal.len() <= max_payload {
            out.push((nal.clone(), false));
            continue;
        }
        let header = nal[0];
        let fu_indicator = (header & 0xe0) | 28;
        let body = &nal[1..];
        let step = max_payload - 2;
        let pieces = body.len().div_ceil(step);
        for (i, piece) in body.chunks(step).enumerate() {
            let mut fu_header = header & 0x1f;
            if i == 0 {
                fu_header |= 0x80;
            }
            if i + 1 == pieces {
                fu_header |= 0x40;
            }
            let mut p = Vec::with_capacity(piece.len() + 2);
            p.extend_from_slice(&[fu_indicator, fu_header]);
            p.extend_from_slice(piece);
            out.push((Bytes::from(p), false));
        }
    }
    if let Some(last) = out.last_mut() {
        last.1 = true;
    }
    out
}

/// RTMP milliseconds (plus the composition offset) on the 90 kHz RTP clock.
pub fn rtp_timestamp(dts_ms: u32, cts_ms: i32) -> u32 {
    (dts_ms as i64 + cts_ms as i64).wrapping_mul(90) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_record_and_frames() {
        let sps = [0x67, 0x64, 0x00, 0x1f, 0xac];
        let pps = [0x68, 0xee, 0x3c];
        let mut tag = vec![
            0x17, 0x00, 0, 0, 0, 0x01, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0, 5,
        ];
        tag.extend_from_slice(&sps);
        tag.push(1);
        tag.extend_from_slice(&[0, 3]);
        tag.extend_from_slice(&pps);
        let VideoTag::AvcConfig {
            sps: s,
            pps: p,
            record,
        } = parse_video(&Bytes::from(tag.clone())).unwrap()
        else {
            panic!()
        };
        assert_eq!(s, vec![Bytes::copy_from_slice(&sps)]);
        assert_eq!(p, vec![Bytes::copy_from_slice(&pps)]);
        assert_eq!(record, tag[5..]);
        assert_eq!(profile_level_id(&sps).as_deref(), Some("64001f"));

        // A B-frame-style tag: inter frame, cts = -33 ms (signed), one NAL unit.
        let mut frame = vec![0x27, 0x01, 0xff, 0xff, 0xdf, 0, 0, 0, 2, 0x41, 0x9a];
        assert_eq!(
            parse_video(&Bytes::from(frame.clone())).unwrap(),
            VideoTag::AvcFrame {
                keyframe: false,
                cts: -33,
                nalus: vec![Bytes::from_static(&[0x41, 0x9a])],
                avcc: Bytes::from_static(&[0, 0, 0, 2, 0x41, 0x9a]),
            }
        );
        frame[8] = 9; // NAL length past the end
        assert!(parse_video(&Bytes::from(frame)).is_err());
    }

    #[test]
    fn enhanced_rtmp_and_other_codecs_are_named() {
        let hevc = Bytes::from_static(&[0x90, b'h', b'v', b'c', b'1', 0]);
        assert!(
            matches!(parse_video(&hevc).unwrap(), VideoTag::Unsupported(m) if m.contains("hvc1"))
        );
        let vp6 = Bytes::from_static(&[0x14, 0]);
        assert!(
            matches!(parse_video(&vp6).unwrap(), VideoTag::Unsupported(m) if m.contains("codec id 4"))
        );
    }

    #[test]
    fn fu_a_fragments_reassemble() {
        let nal: Vec<u8> = std::iter::once(0x65)
            .chain((0..3000u32).map(|i| i as u8))
            .collect();
        let small = Bytes::from_static(&[0x06, 1, 2]);
        let out = packetize(&[small.clone(), Bytes::from(nal.clone())], 1100);
        assert_eq!(out[0], (small, false));
        assert!(out[1..]
            .iter()
            .all(|(p, _)| p.len() <= 1100 && p[0] & 0x1f == 28 && p[1] & 0x1f == 5));
        assert!(out[1].0[1] & 0x80 != 0 && out.last().unwrap().0[1] & 0x40 != 0);
        assert!(out.last().unwrap().1 && !out[1].1);
        let mut rebuilt = vec![(out[1].0[0] & 0xe0) | (out[1].0[1] & 0x1f)];
        for (p, _) in &out[1..] {
            rebuilt.extend_from_slice(&p[2..]);
        }
        assert_eq!(rebuilt, nal);
        assert_eq!(rtp_timestamp(1000, 66), 95_940);
    }
}
