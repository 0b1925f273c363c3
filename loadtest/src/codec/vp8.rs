//! VP8 RTP payloads (RFC 7741): the payload descriptor, the frame tag that opens each frame
//! (RFC 6386 §9.1) and keyframe detection.

/// Descriptor we write: X and I set, 15-bit PictureID (RFC 7741 §4.2).
pub const DESCRIPTOR_LEN: usize = 4;
/// Frame tag of an interframe (RFC 6386 §9.1).
pub const FRAME_TAG_LEN: usize = 3;
/// Frame tag, start code and dimensions of a keyframe (RFC 6386 §9.1).
pub const KEYFRAME_HEADER_LEN: usize = 10;
/// Dimensions announced in our keyframe headers.
pub const WIDTH: u16 = 640;
pub const HEIGHT: u16 = 480;

const X: u8 = 0x80;
const S: u8 = 0x10;
const PID_MASK: u8 = 0x07;
const I: u8 = 0x80;
const L: u8 = 0x40;
const T: u8 = 0x20;
const K: u8 = 0x10;
const M: u8 = 0x80;
const PICTURE_ID_MASK: u16 = 0x7fff;
/// The P bit of the frame tag is an inverse keyframe flag.
const INTERFRAME: u8 = 0x01;
const SHOW_FRAME: u8 = 0x10;
const MAX_FIRST_PARTITION: u32 = (1 << 19) - 1;
const KEYFRAME_START_CODE: [u8; 3] = [0x9d, 0x01, 0x2a];

/// The payload descriptor for one packet: `start` on the first packet of a frame.
pub fn descriptor(start: bool, picture_id: u16) -> [u8; DESCRIPTOR_LEN] {
    let pid = (picture_id & PICTURE_ID_MASK) | (u16::from(M) << 8);
    let [hi, lo] = pid.to_be_bytes();
    [X | if start { S } else { 0 }, I, hi, lo]
}

/// The header that opens a frame's first partition: the frame tag, plus start code and
/// dimensions for a keyframe.
pub fn frame_header(keyframe: bool, first_partition_size: u32) -> Vec<u8> {
    let size = first_partition_size.min(MAX_FIRST_PARTITION);
    let tag =
        (size << 5) | u32::from(SHOW_FRAME) | u32::from(if keyframe { 0 } else { INTERFRAME });
    let mut out = Vec::with_capacity(KEYFRAME_HEADER_LEN);
    out.extend_from_slice(&tag.to_le_bytes()[..FRAME_TAG_LEN]);
    if keyframe {
        out.extend_from_slice(&KEYFRAME_START_CODE);
        // 14-bit dimension, scale 0 in the top two bits.
        out.extend_from_slice(&WIDTH.to_le_bytes());
        out.extend_from_slice(&HEIGHT.to_le_bytes());
    }
    out
}

/// A parsed VP8 RTP payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// First packet of a frame (S=1, PID=0).
    pub frame_start: bool,
    /// The frame tag says keyframe (only known on the first packet).
    pub keyframe: bool,
    /// The 7- or 15-bit PictureID, when present.
    pub picture_id: Option<u16>,
    /// Bytes after the descriptor and, on a frame's first packet, the frame header.
    pub body: &'a [u8],
}

/// Parses descriptor and frame header; `None` when the payload is truncated.
pub fn parse(payload: &[u8]) -> Option<Parsed<'_>> {
    let (&b0, mut rest) = payload.split_first()?;
    let mut picture_id = None;
    if b0 & X != 0 {
        let (&ext, after) = rest.split_first()?;
        rest = after;
        if ext & I != 0 {
            let (&p0, after) = rest.split_first()?;
            if p0 & M != 0 {
                let (&p1, after) = after.split_first()?;
                picture_id = Some(u16::from_be_bytes([p0 & !M, p1]));
                rest = after;
            } else {
                picture_id = Some(u16::from(p0));
                rest = after;
            }
        }
        if ext & L != 0 {
            rest = rest.get(1..)?;
        }
        if ext & (T | K) != 0 {
            rest = rest.get(1..)?;
        }
    }
    let frame_start = b0 & S != 0 && b0 & PID_MASK == 0;
    let mut keyframe = false;
    if frame_start {
        let &tag = rest.first()?;
        keyframe = tag & INTERFRAME == 0;
        let header_len = if keyframe {
            KEYFRAME_HEADER_LEN
        } else {
            FRAME_TAG_LEN
        };
        rest = rest.get(header_len..)?;
    }
    Some(Parsed {
        frame_start,
        keyframe,
        picture_id,
        body: rest,
    })
}

/// True when the payload is the first packet of a keyframe.
pub fn is_keyframe(payload: &[u8]) -> bool {
    parse(payload).is_some_and(|p| p.keyframe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_carries_start_bit_and_15_bit_picture_id() {
        assert_eq!(descriptor(true, 0x1234), [0x90, 0x80, 0x92, 0x34]);
        assert_eq!(
            descriptor(false, 0x8001),
            [0x80, 0x80, 0x80, 0x01],
            "wraps at 15 bits"
        );
    }

    #[test]
    fn keyframe_header_has_start_code_and_dimensions() {
        let h = frame_header(true, 1000);
        assert_eq!(h.len(), KEYFRAME_HEADER_LEN);
        assert_eq!(h[0] & 0x01, 0, "P bit clear on keyframes");
        assert_eq!(h[0] & 0x10, 0x10, "show_frame");
        let size = u32::from(h[0] >> 5) | u32::from(h[1]) << 3 | u32::from(h[2]) << 11;
        assert_eq!(size, 1000);
        assert_eq!(&h[3..6], &[0x9d, 0x01, 0x2a]);
        assert_eq!(u16::from_le_bytes([h[6], h[7]]), 640);
        assert_eq!(u16::from_le_bytes([h[8], h[9]]), 480);

        let d = frame_header(false, 1000);
        assert_eq!(d.len(), FRAME_TAG_LEN);
        assert_eq!(d[0] & 0x01, 0x01, "P bit set on interframes");
    }

    #[test]
    fn parse_finds_the_body_after_headers() {
        let mut key = descriptor(true, 77).to_vec();
        key.extend(frame_header(true, 50));
        key.extend([1, 2, 3]);
        let p = parse(&key).unwrap();
        assert!(p.frame_start && p.keyframe);
        assert_eq!(p.picture_id, Some(77));
        assert_eq!(p.body, &[1, 2, 3]);
        assert!(is_keyframe(&key));
        assert!(str0m::format::detect_vp8_keyframe(&key), "str0m agrees");

        let mut delta = descriptor(true, 78).to_vec();
        delta.extend(frame_header(false, 50));
        delta.extend([4, 5]);
        let p = parse(&delta).unwrap();
        assert!(p.frame_start && !p.keyframe);
        assert_eq!(p.body, &[4, 5]);
        assert!(!str0m::format::detect_vp8_keyframe(&delta));

        let mut middle = descriptor(false, 78).to_vec();
        middle.extend([6, 7]);
        let p = parse(&middle).unwrap();
        assert!(!p.frame_start && !p.keyframe);
        assert_eq!(p.body, &[6, 7]);
    }

    #[test]
    fn parse_handles_short_descriptors_and_truncation() {
        // No extension: one byte descriptor, then an interframe tag.
        let p = parse(&[0x10, 0x01, 0, 0, 9]).unwrap();
        assert!(p.frame_start && !p.keyframe);
        assert_eq!(p.picture_id, None);
        assert_eq!(p.body, &[9]);
        // 7-bit PictureID, TL0PICIDX and TID present.
        let p = parse(&[0x80, 0xe0, 0x05, 0xaa, 0xbb, 8]).unwrap();
        assert_eq!(p.picture_id, Some(5));
        assert_eq!(p.body, &[8]);
        // Truncated keyframe header.
        assert_eq!(parse(&[0x10, 0x00, 0, 0, 0x9d]), None);
        assert_eq!(parse(&[]), None);
    }
}
