//! The picture size of a stream, read from its first keyframe (H.264 SPS, VP8 key frame header),
//! so the ladder never upscales. Reads untrusted bytes: returns `None` rather than panicking.

/// Width and height in pixels.
pub type Size = (u32, u32);

/// RBSP bit reader: emulation-prevention bytes (00 00 03) removed, exp-Golomb codes.
struct Bits {
    data: Vec<u8>,
    pos: usize,
}

impl Bits {
    fn new(nal_payload: &[u8]) -> Self {
        let mut data = Vec::with_capacity(nal_payload.len());
        let mut zeros = 0;
        for &b in nal_payload {
            if zeros >= 2 && b == 3 {
                zeros = 0;
                continue;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            data.push(b);
        }
        Self { data, pos: 0 }
    }

    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(b as u32)
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |acc, _| Some((acc << 1) | self.bit()?))
    }

    /// ue(v), H.264 §9.1.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.bits(zeros)?)
    }

    fn se(&mut self) -> Option<i32> {
        let k = self.ue()?;
        Some(if k % 2 == 1 {
            k.div_ceil(2) as i32
        } else {
            -((k / 2) as i32)
        })
    }
}

/// Size from an H.264 sequence parameter set NAL unit (with its one-byte header), H.264 §7.3.2.1.
pub fn h264_sps_size(sps: &[u8]) -> Option<Size> {
    if sps.first()? & 0x1f != 7 {
        return None;
    }
    let mut r = Bits::new(&sps[1..]);
    let profile_idc = r.bits(8)?;
    r.bits(16)?; // constraint flags, level_idc
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            r.bit()?; // separate_colour_plane_flag
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? == 1 {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            let n = r.ue()?;
            if n > 255 {
                return None;
            }
            for _ in 0..n {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = r.ue()? + 1;
    let height_units = r.ue()? + 1;
    let frame_mbs_only = r.bit()?;
    if frame_mbs_only == 0 {
        r.bit()?; // mb_adaptive_frame_field_flag
    }
    r.bit()?; // direct_8x8_inference_flag
    let (mut crop_x, mut crop_y) = (0, 0);
    if r.bit()? == 1 {
        let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        // Crop units for 4:2:0 / 4:2:2 / 4:4:4 (H.264 Table 6-1, eq. 7-19..7-22).
        let (sub_w, sub_h) = match chroma_format_idc {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        crop_x = sub_w * (left.checked_add(right)?);
        crop_y = sub_h * (2 - frame_mbs_only) * (top.checked_add(bottom)?);
    }
    let width = width_mbs.checked_mul(16)?.checked_sub(crop_x)?;
    let height = height_units
        .checked_mul(16 * (2 - frame_mbs_only))?
        .checked_sub(crop_y)?;
    (width > 0 && height > 0 && width <= 16384 && height <= 16384).then_some((width, height))
}

fn skip_scaling_list(r: &mut Bits, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i32, 8i32);
    for _ in 0..size {
        if next != 0 {
            next = (last + r.se()? + 256) % 256;
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// Size from the start of a VP8 key frame (RFC 6386 §9.1: 3-byte frame tag, start code
/// 9d 01 2a, then 14-bit width and height).
pub fn vp8_keyframe_size(frame: &[u8]) -> Option<Size> {
    if frame.len() < 10 || frame[0] & 1 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([frame[6], frame[7]]) as u32 & 0x3fff;
    let h = u16::from_le_bytes([frame[8], frame[9]]) as u32 & 0x3fff;
    (w > 0 && h > 0).then_some((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sps_of_common_encoders() {
        // x264 640x360 High (crop 8 lines: 368 - 8), ffmpeg testsrc2.
        let high_360 = [
            0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00,
            0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2d, 0x96,
        ];
        assert_eq!(h264_sps_size(&high_360), Some((640, 360)));
        // x264 constrained baseline 1280x720, and main 1920x1080 (crop 1088 → 1080).
        let baseline_720 = [
            0x67, 0x42, 0xc0, 0x1f, 0xd9, 0x00, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03,
            0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x24, 0x80,
        ];
        assert_eq!(h264_sps_size(&baseline_720), Some((1280, 720)));
        let main_1080 = [
            0x67, 0x4d, 0x40, 0x28, 0xec, 0xa0, 0x3c, 0x01, 0x13, 0xf2, 0xe0, 0x22, 0x00, 0x00,
            0x03, 0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x78, 0x1e, 0x30, 0x63, 0x2c,
        ];
        assert_eq!(h264_sps_size(&main_1080), Some((1920, 1080)));
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        assert_eq!(h264_sps_size(&[]), None);
        assert_eq!(h264_sps_size(&[0x67]), None);
        assert_eq!(h264_sps_size(&[0x68, 1, 2, 3]), None, "a PPS, not an SPS");
        assert_eq!(h264_sps_size(&[0x67, 0x64, 0, 0, 0, 0, 0, 0]), None);
        for n in 0..64u8 {
            let v: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ n).collect();
            let _ = h264_sps_size(&[&[0x67][..], &v].concat());
            let _ = vp8_keyframe_size(&v);
        }
    }

    #[test]
    fn vp8_key_frame_header() {
        // libvpx, 640x360.
        let key = [0xf0, 0xc6, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01];
        assert_eq!(vp8_keyframe_size(&key), Some((640, 360)));
        let inter = [0xf1, 0xc6, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01];
        assert_eq!(vp8_keyframe_size(&inter), None);
    }
}
