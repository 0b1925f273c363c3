//! H.264 RTP payloads (RFC 6184): fixed parameter sets, STAP-A, single NAL unit and FU-A
//! packetization, emulation prevention (H.264 §7.4.1) and keyframe detection.

/// Coded slice of a non-IDR picture.
pub const NAL_SLICE: u8 = 1;
/// Coded slice of an IDR picture.
pub const NAL_IDR: u8 = 5;
/// Sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// Supplemental enhancement information.
pub const NAL_SEI: u8 = 6;
/// Picture parameter set.
pub const NAL_PPS: u8 = 8;
/// Single-time aggregation packet (RFC 6184 §5.7.1).
pub const STAP_A: u8 = 24;
/// Fragmentation unit A (RFC 6184 §5.8).
pub const FU_A: u8 = 28;

/// FU indicator + FU header.
pub const FU_A_HEADER_LEN: usize = 2;
/// The NAL unit header of a single NAL unit packet.
pub const SINGLE_NAL_HEADER_LEN: usize = 1;

/// IDR slice NAL header: nal_ref_idc 3, type 5.
pub const IDR_NAL_HEADER: u8 = 0x60 | NAL_IDR;
/// Non-IDR slice NAL header: nal_ref_idc 2, type 1.
pub const SLICE_NAL_HEADER: u8 = 0x40 | NAL_SLICE;

/// SPS for profile-level-id 42e01f (Constrained Baseline, level 3.1): 640x480,
/// pic_order_cnt_type 2, one reference frame, frame_mbs_only, no VUI.
pub const SPS: [u8; 9] = [0x67, 0x42, 0xe0, 0x1f, 0xda, 0x02, 0x80, 0xf6, 0x40];
/// PPS matching [`SPS`]: CAVLC, one slice group, deblocking control present.
pub const PPS: [u8; 4] = [0x68, 0xce, 0x3c, 0x80];

const NAL_TYPE_MASK: u8 = 0x1f;
const NAL_F_NRI_MASK: u8 = 0xe0;
const NAL_NRI_MASK: u8 = 0x60;
const NAL_F_MASK: u8 = 0x80;
const FU_START: u8 = 0x80;
const FU_END: u8 = 0x40;
const STAP_A_SIZE_LEN: usize = 2;
const EMULATION_PREVENTION_BYTE: u8 = 0x03;

/// The NAL unit type in the low five bits of a NAL (or FU indicator) header.
pub fn nal_type(header: u8) -> u8 {
    header & NAL_TYPE_MASK
}

/// Aggregates NAL units into one STAP-A payload (RFC 6184 §5.7.1). The STAP-A header takes
/// the F bit as the OR and the NRI as the maximum of the aggregated units' (§5.7).
pub fn stap_a(nals: &[&[u8]]) -> Vec<u8> {
    let f = nals
        .iter()
        .filter_map(|n| n.first())
        .fold(0, |acc, h| acc | (h & NAL_F_MASK));
    let nri = nals
        .iter()
        .filter_map(|n| n.first())
        .map(|h| h & NAL_NRI_MASK)
        .max()
        .unwrap_or(0);
    let len = 1 + nals
        .iter()
        .map(|n| STAP_A_SIZE_LEN + n.len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.push(f | nri | STAP_A);
    for nal in nals {
        let size = u16::try_from(nal.len()).expect("aggregated NAL unit above 64 KiB");
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(nal);
    }
    out
}

/// FU-A packets (RFC 6184 §5.8) for a NAL unit whose header is `nal_header` and whose body
/// is the concatenation of `fragments`, one packet per fragment.
pub fn fu_a(nal_header: u8, fragments: &[&[u8]]) -> Vec<Vec<u8>> {
    let indicator = (nal_header & NAL_F_NRI_MASK) | FU_A;
    let last = fragments.len().saturating_sub(1);
    fragments
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let mut header = nal_type(nal_header);
            if i == 0 {
                header |= FU_START;
            }
            if i == last {
                header |= FU_END;
            }
            let mut packet = Vec::with_capacity(FU_A_HEADER_LEN + body.len());
            packet.extend_from_slice(&[indicator, header]);
            packet.extend_from_slice(body);
            packet
        })
        .collect()
}

/// UUID of the capture-time SEI (`user_data_unregistered`, H.264 D.1.6) publishers put before
/// every frame; ASCII, so no emulation prevention is ever needed.
pub const CAPTURE_UUID: [u8; 16] = *b"glint-capture-ts";
/// SEI payload type `user_data_unregistered`.
const SEI_USER_DATA_UNREGISTERED: u8 = 5;
/// UUID + 16 hex digits.
const CAPTURE_PAYLOAD_LEN: u8 = 32;
const CAPTURE_NAL_LEN: usize = 3 + CAPTURE_PAYLOAD_LEN as usize + 1;

/// A SEI NAL unit carrying the frame's capture time (Unix µs, as 16 hex digits), so viewers
/// measure glass-to-glass latency through servers that rewrite RTP headers and drop header
/// extensions.
pub fn capture_sei(unix_micros: u64) -> Vec<u8> {
    let mut nal = Vec::with_capacity(CAPTURE_NAL_LEN);
    nal.extend([NAL_SEI, SEI_USER_DATA_UNREGISTERED, CAPTURE_PAYLOAD_LEN]);
    nal.extend(CAPTURE_UUID);
    nal.extend(format!("{unix_micros:016x}").as_bytes());
    nal.push(0x80); // rbsp_trailing_bits
    nal
}

/// The capture time of a single-NAL-unit packet holding [`capture_sei`], if it is one.
pub fn parse_capture_sei(payload: &[u8]) -> Option<u64> {
    if payload.len() < CAPTURE_NAL_LEN
        || nal_type(payload[0]) != NAL_SEI
        || payload[1] != SEI_USER_DATA_UNREGISTERED
        || payload[2] != CAPTURE_PAYLOAD_LEN
        || payload[3..19] != CAPTURE_UUID
    {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(&payload[19..35]).ok()?, 16).ok()
}

/// Packetizes one NAL unit (header byte included): a single NAL unit packet when it fits in
/// `max_payload` bytes, otherwise FU-A fragments of at most `max_payload` bytes each.
pub fn packetize(nal: &[u8], max_payload: usize) -> Vec<Vec<u8>> {
    assert!(max_payload > FU_A_HEADER_LEN, "no room for an FU-A body");
    let Some((&header, body)) = nal.split_first() else {
        return Vec::new();
    };
    if nal.len() <= max_payload {
        return vec![nal.to_vec()];
    }
    let fragments: Vec<&[u8]> = body.chunks(max_payload - FU_A_HEADER_LEN).collect();
    fu_a(header, &fragments)
}

/// Appends `raw` with emulation prevention bytes inserted (H.264 §7.4.1): within a NAL unit
/// the sequences 00 00 00, 00 00 01, 00 00 02 and 00 00 03 become 00 00 03 0x, and a unit
/// ending in 00 00 gets a final 03, so no start code can appear inside the unit.
pub fn escape(raw: &[u8], out: &mut Vec<u8>) {
    out.reserve(raw.len() + raw.len() / 64 + 1);
    let mut zeros = 0;
    for &byte in raw {
        if zeros >= 2 && byte <= EMULATION_PREVENTION_BYTE {
            out.push(EMULATION_PREVENTION_BYTE);
            zeros = 0;
        }
        out.push(byte);
        zeros = if byte == 0 { zeros + 1 } else { 0 };
    }
    if zeros >= 2 {
        out.push(EMULATION_PREVENTION_BYTE);
    }
}

/// Appends `escaped` with emulation prevention bytes removed: the inverse of [`escape`].
pub fn unescape(escaped: &[u8], out: &mut Vec<u8>) {
    out.reserve(escaped.len());
    let mut zeros = 0;
    for &byte in escaped {
        if zeros >= 2 && byte == EMULATION_PREVENTION_BYTE {
            zeros = 0;
            continue;
        }
        out.push(byte);
        zeros = if byte == 0 { zeros + 1 } else { 0 };
    }
}

/// What an H.264 RTP payload carries, as far as pattern checking is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content<'a> {
    /// Slice data (single NAL unit or FU-A fragment): the escaped pattern follows the header.
    Slice(&'a [u8]),
    /// Parameter sets, alone or aggregated: fixed bytes, no pattern.
    ParameterSets,
    /// Anything else (other NAL types, STAP-B, MTAP, FU-B, malformed).
    Other,
}

/// Splits an RTP payload into its codec header and the bytes after it.
pub fn content(payload: &[u8]) -> Content<'_> {
    let Some(&header) = payload.first() else {
        return Content::Other;
    };
    match nal_type(header) {
        NAL_SPS | NAL_PPS => Content::ParameterSets,
        NAL_SEI => Content::Other,
        1..=23 => Content::Slice(&payload[SINGLE_NAL_HEADER_LEN..]),
        STAP_A => {
            let mut types = stap_a_types(payload).peekable();
            if types.peek().is_some() && types.all(|t| t == NAL_SPS || t == NAL_PPS) {
                Content::ParameterSets
            } else {
                Content::Other
            }
        }
        FU_A if payload.len() >= FU_A_HEADER_LEN => Content::Slice(&payload[FU_A_HEADER_LEN..]),
        _ => Content::Other,
    }
}

/// True when the payload starts a keyframe: an IDR slice or an SPS, alone, aggregated in a
/// STAP-A, or in the first FU-A fragment (only that one names the NAL type reliably).
pub fn is_keyframe(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else {
        return false;
    };
    let starts_keyframe = |t: u8| t == NAL_IDR || t == NAL_SPS;
    match nal_type(header) {
        STAP_A => stap_a_types(payload).any(starts_keyframe),
        FU_A => payload
            .get(1)
            .is_some_and(|&fu| fu & FU_START != 0 && starts_keyframe(nal_type(fu))),
        t => starts_keyframe(t),
    }
}

/// NAL unit types aggregated in a STAP-A payload, stopping at the first truncated unit.
fn stap_a_types(payload: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let mut rest = payload.get(1..).unwrap_or_default();
    std::iter::from_fn(move || {
        let (size, after) = rest.split_first_chunk::<STAP_A_SIZE_LEN>()?;
        let size = u16::from_be_bytes(*size) as usize;
        if size == 0 || size > after.len() {
            return None;
        }
        let (nal, next) = after.split_at(size);
        rest = next;
        Some(nal_type(nal[0]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minimal Exp-Golomb bit reader, enough to decode our parameter sets.
    struct Bits<'a> {
        data: &'a [u8],
        pos: usize,
    }

    impl Bits<'_> {
        fn bit(&mut self) -> u32 {
            let byte = self.data[self.pos / 8];
            let bit = (byte >> (7 - self.pos % 8)) & 1;
            self.pos += 1;
            bit as u32
        }
        fn bits(&mut self, n: u32) -> u32 {
            (0..n).fold(0, |acc, _| (acc << 1) | self.bit())
        }
        fn ue(&mut self) -> u32 {
            let mut zeros = 0;
            while self.bit() == 0 {
                zeros += 1;
            }
            (1 << zeros) - 1 + self.bits(zeros)
        }
        fn se(&mut self) -> i32 {
            let k = self.ue() as i32;
            if k % 2 == 1 {
                (k + 1) / 2
            } else {
                -(k / 2)
            }
        }
        fn at_rbsp_trailing_bits(&mut self) -> bool {
            self.bit() == 1 && (self.pos..self.data.len() * 8).all(|_| self.bit() == 0)
        }
    }

    #[test]
    fn sps_decodes_to_constrained_baseline_640x480() {
        assert_eq!(nal_type(SPS[0]), NAL_SPS);
        assert_eq!(&SPS[1..4], &[0x42, 0xe0, 0x1f], "profile-level-id 42e01f");
        let mut r = Bits {
            data: &SPS[4..],
            pos: 0,
        };
        assert_eq!(r.ue(), 0, "seq_parameter_set_id");
        assert_eq!(r.ue(), 0, "log2_max_frame_num_minus4");
        assert_eq!(r.ue(), 2, "pic_order_cnt_type");
        assert_eq!(r.ue(), 1, "max_num_ref_frames");
        assert_eq!(r.bit(), 0, "gaps_in_frame_num_value_allowed_flag");
        assert_eq!((r.ue() + 1) * 16, 640, "width");
        assert_eq!((r.ue() + 1) * 16, 480, "height");
        assert_eq!(r.bit(), 1, "frame_mbs_only_flag");
        assert_eq!(r.bit(), 1, "direct_8x8_inference_flag");
        assert_eq!(r.bit(), 0, "frame_cropping_flag");
        assert_eq!(r.bit(), 0, "vui_parameters_present_flag");
        assert!(r.at_rbsp_trailing_bits());
    }

    #[test]
    fn pps_decodes() {
        assert_eq!(nal_type(PPS[0]), NAL_PPS);
        let mut r = Bits {
            data: &PPS[1..],
            pos: 0,
        };
        assert_eq!(r.ue(), 0, "pic_parameter_set_id");
        assert_eq!(r.ue(), 0, "seq_parameter_set_id");
        assert_eq!(r.bit(), 0, "entropy_coding_mode_flag (CAVLC)");
        assert_eq!(r.bit(), 0, "bottom_field_pic_order_in_frame_present_flag");
        assert_eq!(r.ue(), 0, "num_slice_groups_minus1");
        assert_eq!(r.ue(), 0, "num_ref_idx_l0_default_active_minus1");
        assert_eq!(r.ue(), 0, "num_ref_idx_l1_default_active_minus1");
        assert_eq!(r.bit(), 0, "weighted_pred_flag");
        assert_eq!(r.bits(2), 0, "weighted_bipred_idc");
        assert_eq!(r.se(), 0, "pic_init_qp_minus26");
        assert_eq!(r.se(), 0, "pic_init_qs_minus26");
        assert_eq!(r.se(), 0, "chroma_qp_index_offset");
        assert_eq!(r.bit(), 1, "deblocking_filter_control_present_flag");
        assert_eq!(r.bit(), 0, "constrained_intra_pred_flag");
        assert_eq!(r.bit(), 0, "redundant_pic_cnt_present_flag");
        assert!(r.at_rbsp_trailing_bits());
    }

    #[test]
    fn stap_a_aggregates_with_sizes_and_max_nri() {
        let p = stap_a(&[&SPS, &PPS]);
        assert_eq!(p[0], 0x78, "F=0, NRI=3 (from SPS 0x67), type 24");
        assert_eq!(&p[1..3], &[0, SPS.len() as u8]);
        assert_eq!(&p[3..3 + SPS.len()], &SPS);
        let at = 3 + SPS.len();
        assert_eq!(&p[at..at + 2], &[0, PPS.len() as u8]);
        assert_eq!(&p[at + 2..], &PPS);
        assert_eq!(stap_a_types(&p).collect::<Vec<_>>(), vec![NAL_SPS, NAL_PPS]);
        assert_eq!(content(&p), Content::ParameterSets);
        assert!(is_keyframe(&p));
        assert!(str0m::format::detect_h264_nalu(&p, NAL_SPS));
    }

    #[test]
    fn small_nal_becomes_one_single_nal_unit_packet() {
        let nal = [SLICE_NAL_HEADER, 1, 2, 3];
        assert_eq!(packetize(&nal, 1200), vec![nal.to_vec()]);
        assert!(!is_keyframe(&nal));
        assert_eq!(content(&nal), Content::Slice(&[1, 2, 3]));
    }

    #[test]
    fn large_nal_becomes_fu_a_fragments_that_reassemble() {
        let mut nal = vec![IDR_NAL_HEADER];
        nal.extend((0..3000u32).map(|i| (i % 251) as u8 + 1));
        let packets = packetize(&nal, 1000);

        // 3000 body bytes in FU-A bodies of at most 998 bytes (1000 minus the FU header).
        assert_eq!(packets.len(), 4);
        assert!(packets.iter().all(|p| p.len() <= 1000));

        let mut reassembled = vec![];
        for (i, p) in packets.iter().enumerate() {
            // FU indicator: F and NRI of the NAL header, type 28.
            assert_eq!(p[0], (IDR_NAL_HEADER & 0xe0) | FU_A);
            assert_eq!(p[0], 0x7c);
            // FU header: S on the first, E on the last, R never, original type.
            assert_eq!(p[1] & FU_START != 0, i == 0, "start bit of fragment {i}");
            assert_eq!(
                p[1] & FU_END != 0,
                i == packets.len() - 1,
                "end bit of fragment {i}"
            );
            assert_eq!(p[1] & 0x20, 0, "reserved bit");
            assert_eq!(nal_type(p[1]), NAL_IDR);
            // Only the first fragment announces the keyframe.
            assert_eq!(is_keyframe(p), i == 0);
            assert_eq!(str0m::format::detect_h264_keyframe(p), i == 0);
            reassembled.extend_from_slice(&p[2..]);
        }
        // RFC 6184 §5.8: the NAL header is rebuilt from the indicator's F/NRI and the FU type.
        let rebuilt_header = (packets[0][0] & 0xe0) | nal_type(packets[0][1]);
        reassembled.insert(0, rebuilt_header);
        assert_eq!(reassembled, nal);
    }

    #[test]
    fn delta_fragments_are_not_keyframes() {
        let frags: [&[u8]; 2] = [&[1, 2], &[3, 4]];
        let packets = fu_a(SLICE_NAL_HEADER, &frags);
        assert_eq!(packets[0], vec![0x5c, 0x80 | NAL_SLICE, 1, 2]);
        assert_eq!(packets[1], vec![0x5c, 0x40 | NAL_SLICE, 3, 4]);
        assert!(!packets.iter().any(|p| is_keyframe(p)));
        assert_eq!(content(&packets[1]), Content::Slice(&[3, 4]));
    }

    #[test]
    fn escape_removes_start_code_emulation_and_unescape_restores() {
        let cases: &[(&[u8], &[u8])] = &[
            (&[0, 0, 1], &[0, 0, 3, 1]),
            (&[0, 0, 0, 0], &[0, 0, 3, 0, 0, 3]),
            (&[0, 0, 4], &[0, 0, 4]),
            (&[5, 0, 0], &[5, 0, 0, 3]),
            (&[5, 0], &[5, 0]),
            (&[0, 0, 3, 0], &[0, 0, 3, 3, 0]),
        ];
        for (raw, escaped) in cases {
            let mut out = vec![];
            escape(raw, &mut out);
            assert_eq!(&out, escaped, "escape {raw:?}");
            let mut back = vec![];
            unescape(&out, &mut back);
            assert_eq!(&back, raw, "unescape {escaped:?}");
        }
    }

    #[test]
    fn escaped_pattern_never_contains_a_start_code() {
        for counter in [0u64, 1, 2, 3, 256, 65_536] {
            let raw = crate::codec::pattern::encode(counter, 100);
            let mut out = vec![];
            escape(&raw, &mut out);
            assert!(
                !out.windows(3).any(|w| w[0] == 0 && w[1] == 0 && w[2] < 3),
                "start code emulation in {out:?}"
            );
            let mut back = vec![];
            unescape(&out, &mut back);
            assert_eq!(back, raw);
        }
    }

    #[test]
    fn keyframe_detection_covers_single_stap_and_fu() {
        assert!(is_keyframe(&[IDR_NAL_HEADER, 0]));
        assert!(is_keyframe(&SPS));
        assert!(!is_keyframe(&PPS));
        assert!(!is_keyframe(&[SLICE_NAL_HEADER, 0]));
        assert!(!is_keyframe(&[]));
        assert!(!is_keyframe(&[0x7c]), "truncated FU-A");
        let idr_only = stap_a(&[&[IDR_NAL_HEADER, 9]]);
        assert!(is_keyframe(&idr_only));
        assert_eq!(content(&idr_only), Content::Other);
        // A STAP-A whose size runs past the end is cut off, not trusted.
        assert!(!is_keyframe(&[STAP_A, 0, 9, 0x67]));
    }
}
