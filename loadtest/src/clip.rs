//! The pre-encoded clip publishers loop (`loadtest/clip/`): two seconds of 720p H.264 at
//! ~2.5 Mbit/s and Opus, built into the binary. Parsed once into access units (NAL units without
//! start codes) and Opus packets. Pure; no I/O.

use std::sync::{Arc, OnceLock};

use crate::codec::h264;

const CLIP_H264: &[u8] = include_bytes!("../clip/clip.h264");
const CLIP_OPUS: &[u8] = include_bytes!("../clip/clip.opus");
/// Path of the FLV version (RTMP publishers hand it to ffmpeg), relative to the crate.
pub const CLIP_FLV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clip/clip.flv");

/// NAL unit types dropped from the clip: SEI (publishers write their own capture-time SEI),
/// access unit delimiters (used only to split access units).
const NAL_SEI: u8 = 6;
const NAL_AUD: u8 = 9;

/// One video frame: its NAL units (header byte first, emulation prevention kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    pub keyframe: bool,
    pub nals: Vec<Vec<u8>>,
}

#[derive(Debug)]
pub struct Clip {
    /// 30 fps; the first is a keyframe.
    pub video: Vec<AccessUnit>,
    /// 20 ms each.
    pub audio: Vec<Vec<u8>>,
}

/// The built-in clip, parsed on first use.
pub fn builtin() -> Arc<Clip> {
    static CLIP: OnceLock<Arc<Clip>> = OnceLock::new();
    CLIP.get_or_init(|| {
        Arc::new(Clip {
            video: access_units(CLIP_H264),
            audio: ogg_packets(CLIP_OPUS).into_iter().skip(2).collect(), // OpusHead, OpusTags
        })
    })
    .clone()
}

/// NAL units of an Annex B stream (split at 3- or 4-byte start codes).
fn nal_units(stream: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i] == 0 && stream[i + 1] == 0 && stream[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let end = starts.get(k + 1).map_or(stream.len(), |&n| n - 3);
            let mut nal = &stream[s..end];
            // A 4-byte start code leaves a zero at the end of the previous unit.
            while let [rest @ .., 0] = nal {
                nal = rest;
            }
            nal
        })
        .filter(|n| !n.is_empty())
        .collect()
}

/// Access units, split at access unit delimiters; SEI and delimiters dropped.
pub fn access_units(stream: &[u8]) -> Vec<AccessUnit> {
    let mut out: Vec<AccessUnit> = Vec::new();
    let mut current: Option<AccessUnit> = None;
    for nal in nal_units(stream) {
        match h264::nal_type(nal[0]) {
            NAL_AUD => out.extend(current.replace(AccessUnit {
                keyframe: false,
                nals: Vec::new(),
            })),
            NAL_SEI => {}
            t => {
                let au = current.get_or_insert_with(|| AccessUnit {
                    keyframe: false,
                    nals: Vec::new(),
                });
                au.keyframe |= t == h264::NAL_IDR;
                au.nals.push(nal.to_vec());
            }
        }
    }
    out.extend(current);
    out.retain(|au| !au.nals.is_empty());
    out
}

/// The packets of an Ogg stream (RFC 3533), in order; a packet spans segments of 255 bytes
/// and may continue on the next page.
pub fn ogg_packets(data: &[u8]) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    let mut partial: Vec<u8> = Vec::new();
    let mut pos = 0;
    while pos + 27 <= data.len() && &data[pos..pos + 4] == b"OggS" {
        let segments = data[pos + 26] as usize;
        let table_end = pos + 27 + segments;
        if table_end > data.len() {
            break;
        }
        let mut body = table_end;
        for &lace in &data[pos + 27..table_end] {
            let end = (body + lace as usize).min(data.len());
            partial.extend_from_slice(&data[body..end]);
            body = end;
            if lace < 255 {
                packets.push(std::mem::take(&mut partial));
            }
        }
        pos = body;
    }
    packets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_clip_is_two_seconds_of_video_and_audio() {
        let clip = builtin();
        assert_eq!(clip.video.len(), 60, "2 s at 30 fps");
        assert!(clip.video[0].keyframe);
        assert_eq!(
            clip.video.iter().filter(|au| au.keyframe).count(),
            2,
            "GOP of 1 s"
        );
        // Keyframes carry SPS and PPS; no SEI or delimiters are left.
        let types = |au: &AccessUnit| {
            au.nals
                .iter()
                .map(|n| h264::nal_type(n[0]))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            types(&clip.video[0]),
            [h264::NAL_SPS, h264::NAL_PPS, h264::NAL_IDR]
        );
        assert!(clip
            .video
            .iter()
            .flat_map(|au| &au.nals)
            .all(|n| ![NAL_SEI, NAL_AUD].contains(&h264::nal_type(n[0]))));
        let bytes: usize = clip
            .video
            .iter()
            .flat_map(|au| &au.nals)
            .map(Vec::len)
            .sum();
        let kbps = bytes * 8 / 2 / 1000;
        assert!((2000..=3000).contains(&kbps), "{kbps} kbit/s");
        // 2 s of 20 ms Opus packets (the encoder may add one for its lookahead).
        assert!(
            (100..=102).contains(&clip.audio.len()),
            "{}",
            clip.audio.len()
        );
        assert!(clip.audio.iter().all(|p| !p.is_empty()));
    }

    #[test]
    fn annex_b_with_three_and_four_byte_start_codes() {
        let stream = [
            0, 0, 0, 1, 0x09, 0xf0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x65, 7, 0, 0, 1, 0x09, 0x10,
            0, 0, 1, 0x41, 9,
        ];
        let aus = access_units(&stream);
        assert_eq!(aus.len(), 2);
        assert_eq!(
            aus[0],
            AccessUnit {
                keyframe: true,
                nals: vec![vec![0x67, 1, 2], vec![0x65, 7]]
            }
        );
        assert_eq!(
            aus[1],
            AccessUnit {
                keyframe: false,
                nals: vec![vec![0x41, 9]]
            }
        );
    }

    #[test]
    fn ogg_packets_span_segments_and_pages() {
        let page = |segments: &[u8], body: &[u8]| {
            let mut p = b"OggS".to_vec();
            p.extend([0; 22]);
            p.push(segments.len() as u8);
            p.extend(segments);
            p.extend(body);
            p
        };
        let long = vec![7u8; 300];
        let mut data = page(&[3, 255], &[[1, 2, 3].as_slice(), &long[..255]].concat());
        data.extend(page(&[45, 0], &long[255..]));
        let packets = ogg_packets(&data);
        assert_eq!(packets, vec![vec![1, 2, 3], long, vec![]]);
    }
}
