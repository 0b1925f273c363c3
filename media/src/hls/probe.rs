//! The picture size of a stream, read from its first keyframe (H.264 SPS, VP8 key frame header),
//! so the ladder never upscales. Reads untrusted bytes: returns `None` rather than panicking.

/// Width and height in pixels.
pub type Size = (u32, u32);

/// Largest picture side we accept (H.264 level 6.2 allows 8192; a margin above).
const MAX_SIDE_PX: u32 = 16384;
/// Profiles whose SPS carries chroma format, bit depths and scaling matrices (H.264 §7.3.2.1.1).
const HIGH_PROFILES: [u32; 13] = [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135];

/// RBSP bit reader: emulation-prevention bytes (00 00 03) removed, exp-Golomb codes. Every read
/// is bounds-checked and every sum checked: malformed input gives `None`, never a panic.
struct Bits {
    data: Vec<u8>,
    pos: usize,
}

impl Bits {
    fn new(nal_payload: &[u8]) -> Self {
        let mut data = Vec::with_capacity(nal_payload.len());
        let mut zeros = 0u8;
        for &b in nal_payload {
            if zeros >= 2 && b == 3 {
                zeros = 0;
                continue;
            }
            zeros = if b == 0 { zeros.saturating_add(1) } else { 0 };
            data.push(b);
        }
        Self { data, pos: 0 }
    }

    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos = self.pos.checked_add(1)?;
        Some(u32::from(b))
    }

    fn flag(&mut self) -> Option<bool> {
        Some(self.bit()? == 1)
    }

    /// `n` ≤ 32 bits, most significant first.
    fn bits(&mut self, n: u32) -> Option<u32> {
        if n > 32 {
            return None;
        }
        (0..n).try_fold(0u32, |acc, _| Some((acc << 1) | self.bit()?))
    }

    /// ue(v), H.264 §9.1: at most 31 leading zeros (values up to 2^32 - 2).
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        (1u32 << zeros)
            .checked_sub(1)?
            .checked_add(self.bits(zeros)?)
    }

    /// ue(v) that the syntax bounds to `0..=max`; beyond it the SPS is malformed.
    fn ue_max(&mut self, max: u32) -> Option<u32> {
        self.ue().filter(|&v| v <= max)
    }

    /// se(v), H.264 §9.1.1: k ↦ (−1)^(k+1) · ⌈k / 2⌉.
    fn se(&mut self) -> Option<i32> {
        let k = i64::from(self.ue()?);
        let magnitude = (k + 1) / 2;
        i32::try_from(if k % 2 == 1 { magnitude } else { -magnitude }).ok()
    }
}

/// Size from an H.264 sequence parameter set NAL unit (with its one-byte header), H.264 §7.3.2.1.
/// `None` for anything malformed (each syntax element's range is checked) or implausible.
pub fn h264_sps_size(sps: &[u8]) -> Option<Size> {
    let (&header, payload) = sps.split_first()?;
    if header & 0x1f != 7 {
        return None;
    }
    let mut r = Bits::new(payload);
    let profile_idc = r.bits(8)?;
    r.bits(16)?; // constraint flags, level_idc
    r.ue_max(31)?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    if HIGH_PROFILES.contains(&profile_idc) {
        chroma_format_idc = r.ue_max(3)?;
        if chroma_format_idc == 3 {
            r.bit()?; // separate_colour_plane_flag
        }
        r.ue_max(6)?; // bit_depth_luma_minus8
        r.ue_max(6)?; // bit_depth_chroma_minus8
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.flag()? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue_max(12)?; // log2_max_frame_num_minus4
    match r.ue_max(2)? {
        0 => {
            r.ue_max(12)?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bit()?; // delta_pic_order_always_zero_flag
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            for _ in 0..r.ue_max(255)? {
                r.se()?; // offset_for_ref_frame[i]
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = r.ue()?.checked_add(1)?;
    let height_units = r.ue()?.checked_add(1)?;
    let frame_mbs_only = r.flag()?;
    if !frame_mbs_only {
        r.bit()?; // mb_adaptive_frame_field_flag
    }
    r.bit()?; // direct_8x8_inference_flag
              // Frame height in map units: field pairs count twice (eq. 7-18).
    let field_factor = if frame_mbs_only { 1 } else { 2 };
    let (mut crop_x, mut crop_y) = (0u32, 0u32);
    if r.flag()? {
        let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        // Crop units for 4:2:0 / 4:2:2 / 4:4:4 (H.264 Table 6-1, eq. 7-19..7-22).
        let (sub_w, sub_h) = match chroma_format_idc {
            1 => (2u32, 2u32),
            2 => (2, 1),
            _ => (1, 1),
        };
        crop_x = left.checked_add(right)?.checked_mul(sub_w)?;
        crop_y = top
            .checked_add(bottom)?
            .checked_mul(sub_h)?
            .checked_mul(field_factor)?;
    }
    let width = width_mbs.checked_mul(16)?.checked_sub(crop_x)?;
    let height = height_units
        .checked_mul(16)?
        .checked_mul(field_factor)?
        .checked_sub(crop_y)?;
    ((1..=MAX_SIDE_PX).contains(&width) && (1..=MAX_SIDE_PX).contains(&height))
        .then_some((width, height))
}

/// scaling_list() of H.264 §7.3.2.1.1.1: read past it. delta_scale is −128..=127.
fn skip_scaling_list(r: &mut Bits, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i32, 8i32);
    for _ in 0..size {
        if next != 0 {
            let delta = r.se().filter(|d| (-128..=127).contains(d))?;
            next = (last + delta + 256).rem_euclid(256);
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

    /// Writes an SPS bit by bit, for malformed ones.
    #[derive(Default)]
    struct BitWriter {
        bits: Vec<bool>,
    }

    impl BitWriter {
        fn bits(mut self, n: u32, v: u64) -> Self {
            for i in (0..n).rev() {
                self.bits.push((v >> i) & 1 == 1);
            }
            self
        }

        /// ue(v) of any value up to 2^32 - 2 (and beyond, as raw leading zeros).
        fn ue(self, v: u64) -> Self {
            let code = v + 1;
            let len = 64 - code.leading_zeros();
            self.bits(len - 1, 0).bits(len, code)
        }

        fn se(self, v: i64) -> Self {
            self.ue(if v > 0 {
                2 * v as u64 - 1
            } else {
                2 * v.unsigned_abs()
            })
        }

        /// NAL header 0x67 + the bits, with the RBSP stop bit, and emulation prevention.
        fn sps(self) -> Vec<u8> {
            let mut bits = self.bits;
            bits.push(true);
            while !bits.len().is_multiple_of(8) {
                bits.push(false);
            }
            let mut out = vec![0x67];
            let mut zeros = 0;
            for byte in bits.chunks(8) {
                let b = byte.iter().fold(0u8, |acc, &x| (acc << 1) | x as u8);
                if zeros >= 2 && b <= 3 {
                    out.push(3);
                    zeros = 0;
                }
                zeros = if b == 0 { zeros + 1 } else { 0 };
                out.push(b);
            }
            out
        }
    }

    /// A baseline SPS up to the frame size: profile 66, level 31, POC type 0.
    fn baseline() -> BitWriter {
        BitWriter::default()
            .bits(8, 66)
            .bits(16, 31)
            .ue(0) // seq_parameter_set_id
            .ue(0) // log2_max_frame_num_minus4
            .ue(0) // pic_order_cnt_type
            .ue(0) // log2_max_pic_order_cnt_lsb_minus4
            .ue(1) // max_num_ref_frames
            .bits(1, 0) // gaps
    }

    /// The rest after the size: frame_mbs_only, direct_8x8, then the crop.
    fn tail(w: BitWriter, crop: Option<[u64; 4]>) -> Vec<u8> {
        let w = w.bits(1, 1).bits(1, 1);
        match crop {
            None => w.bits(1, 0),
            Some([l, r, t, b]) => w.bits(1, 1).ue(l).ue(r).ue(t).ue(b),
        }
        .bits(1, 0) // vui_parameters_present_flag
        .sps()
    }

    #[test]
    fn the_test_writer_makes_real_sps() {
        assert_eq!(
            h264_sps_size(&tail(baseline().ue(79).ue(44), None)),
            Some((1280, 720))
        );
        assert_eq!(
            h264_sps_size(&tail(baseline().ue(119).ue(67), Some([0, 0, 0, 4]))),
            Some((1920, 1080))
        );
    }

    #[test]
    fn huge_exp_golomb_values_are_none() {
        const MAX_UE: u64 = (1 << 32) - 2;
        // Width and height in macroblocks at the largest ue(v): × 16 overflows.
        assert_eq!(
            h264_sps_size(&tail(baseline().ue(MAX_UE).ue(44), None)),
            None
        );
        assert_eq!(
            h264_sps_size(&tail(baseline().ue(79).ue(MAX_UE), None)),
            None
        );
        // Plausible size, cropping that overflows its sum or its product, or crops it all.
        for crop in [
            [MAX_UE, MAX_UE, 0, 0],
            [0, 0, MAX_UE, 1],
            [(1 << 31) + 1, 0, 0, 0],
            [640, 0, 0, 0],
        ] {
            assert_eq!(
                h264_sps_size(&tail(baseline().ue(79).ue(44), Some(crop))),
                None,
                "crop {crop:?}"
            );
        }
        // 32 leading zeros: beyond any ue(v).
        assert_eq!(
            h264_sps_size(&tail(baseline().ue(1 << 32).ue(44), None)),
            None
        );
        // Syntax elements beyond their range.
        let bad_id = BitWriter::default().bits(8, 66).bits(16, 31).ue(32);
        assert_eq!(h264_sps_size(&tail(bad_id.ue(79).ue(44), None)), None);
        let bad_poc = BitWriter::default()
            .bits(8, 66)
            .bits(16, 31)
            .ue(0)
            .ue(0)
            .ue(3);
        assert_eq!(h264_sps_size(&tail(bad_poc, None)), None);
    }

    #[test]
    fn extreme_signed_values_do_not_overflow() {
        // High profile with a scaling list whose delta is the largest se(v).
        let high = |delta: i64| {
            let w = BitWriter::default()
                .bits(8, 100)
                .bits(16, 31)
                .ue(0)
                .ue(1) // chroma_format_idc 4:2:0
                .ue(0)
                .ue(0)
                .bits(1, 0)
                .bits(1, 1) // seq_scaling_matrix_present_flag
                .bits(1, 1) // list 0 present
                .se(delta);
            // The remaining 15 deltas of list 0 (0: repeat), and lists 1..7 absent.
            let w = (0..15).fold(w, |w, _| w.se(0)).bits(7, 0);
            tail(w.ue(0).ue(0).ue(0).ue(1).bits(1, 0).ue(79).ue(44), None)
        };
        assert_eq!(h264_sps_size(&high(5)), Some((1280, 720)));
        assert_eq!(h264_sps_size(&high(i32::MAX as i64)), None);
        assert_eq!(h264_sps_size(&high(i32::MIN as i64 + 1)), None);
        // POC type 1 with extreme offsets (no range in the syntax): read past, no overflow.
        let poc1 = |n: u64| {
            let w = BitWriter::default()
                .bits(8, 66)
                .bits(16, 31)
                .ue(0)
                .ue(0)
                .ue(1)
                .bits(1, 0)
                .se(i32::MAX as i64)
                .se(i32::MIN as i64 + 1)
                .ue(n);
            let w = (0..n.min(3)).fold(w, |w, _| w.se(-(i32::MAX as i64)));
            tail(w.ue(1).bits(1, 0).ue(79).ue(44), None)
        };
        assert_eq!(h264_sps_size(&poc1(3)), Some((1280, 720)));
        assert_eq!(h264_sps_size(&poc1(256)), None, "more than 255 offsets");
    }

    #[test]
    fn truncated_sps_is_none() {
        let full = tail(baseline().ue(79).ue(44), Some([0, 0, 0, 4]));
        assert_eq!(h264_sps_size(&full), Some((1280, 712)));
        // Every prefix that stops before the crop offsets are complete.
        for cut in 0..full.len() - 1 {
            assert_eq!(h264_sps_size(&full[..cut]), None, "cut at {cut}");
        }
        // Long zero runs (emulation prevention every third byte): no ue(v) ends.
        let mut zeros = vec![0x67, 0x64, 0, 0x1e];
        zeros.extend([0, 0, 3].repeat(1000));
        assert_eq!(h264_sps_size(&zeros), None);
        assert_eq!(h264_sps_size(&[0xff; 64]), None, "not an SPS NAL unit");
        // All ones after the header reads as every ue(v) = 0: one macroblock, no panic.
        let mut ones = vec![0x67];
        ones.extend([0xff; 64]);
        assert_eq!(h264_sps_size(&ones), Some((16, 16)));
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
