//! Opus RTP payloads (RFC 7587): one TOC byte (RFC 6716 §3.1) followed by the frame.

/// TOC byte: config 31 (CELT-only, fullband, 20 ms), mono, one frame per packet (code 0).
pub const TOC_CELT_FB_20MS: u8 = 31 << 3;
/// Bytes before the frame data.
pub const HEADER_LEN: usize = 1;

/// The bytes after the TOC byte, `None` for an empty payload.
pub fn body(payload: &[u8]) -> Option<&[u8]> {
    payload.get(HEADER_LEN..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toc_is_celt_fullband_20ms_single_frame() {
        assert_eq!(TOC_CELT_FB_20MS >> 3, 31, "config");
        assert_eq!(TOC_CELT_FB_20MS & 0x04, 0, "mono");
        assert_eq!(TOC_CELT_FB_20MS & 0x03, 0, "code 0: one frame");
        assert_eq!(body(&[TOC_CELT_FB_20MS, 1, 2]), Some(&[1u8, 2][..]));
        assert_eq!(body(&[]), None);
    }
}
