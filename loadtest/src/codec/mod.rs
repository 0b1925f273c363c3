//! Synthetic codec payloads and their checks: what the publisher writes into each RTP
//! payload and how a viewer recognises keyframes and verifies the pattern behind the codec
//! header. Pure byte handling, no I/O.

pub mod h264;
pub mod opus;
pub mod pattern;
pub mod vp8;

use serde::Serialize;

/// Video codecs the synthetic publisher can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    /// H.264 packetization-mode 1, profile-level-id 42e01f.
    #[default]
    H264,
    /// VP8.
    Vp8,
}

/// Outcome of checking one payload's verification pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The pattern is intact; it carries this counter.
    Intact(u64),
    /// The payload has a pattern slot but its bytes are not what a publisher writes.
    Mismatch,
    /// The payload carries no pattern (parameter sets, foreign NAL types).
    NoPattern,
}

impl Check {
    fn from_pattern(bytes: &[u8]) -> Self {
        match pattern::verify(bytes) {
            Ok(counter) => Check::Intact(counter),
            Err(_) => Check::Mismatch,
        }
    }
}

/// Checks a video payload. `scratch` is reused between calls to avoid an allocation per
/// packet when undoing H.264 emulation prevention.
pub fn check_video(codec: VideoCodec, payload: &[u8], scratch: &mut Vec<u8>) -> Check {
    match codec {
        VideoCodec::H264 => match h264::content(payload) {
            h264::Content::Slice(escaped) => {
                scratch.clear();
                h264::unescape(escaped, scratch);
                Check::from_pattern(scratch)
            }
            h264::Content::ParameterSets | h264::Content::Other => Check::NoPattern,
        },
        VideoCodec::Vp8 => match vp8::parse(payload) {
            Some(parsed) => Check::from_pattern(parsed.body),
            None => Check::Mismatch,
        },
    }
}

/// Checks an Opus payload.
pub fn check_audio(payload: &[u8]) -> Check {
    match opus::body(payload) {
        Some(body) => Check::from_pattern(body),
        None => Check::Mismatch,
    }
}

/// True when a video payload starts a keyframe.
pub fn is_keyframe(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::H264 => h264::is_keyframe(payload),
        VideoCodec::Vp8 => vp8::is_keyframe(payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_slices_are_checked_after_unescaping() {
        let mut escaped = vec![];
        h264::escape(&pattern::encode(1, 50), &mut escaped);
        assert!(escaped.len() > 50, "counter 1 needs emulation prevention");

        let mut single = vec![h264::SLICE_NAL_HEADER];
        single.extend(&escaped);
        let mut scratch = vec![];
        assert_eq!(
            check_video(VideoCodec::H264, &single, &mut scratch),
            Check::Intact(1)
        );

        let mut fu = h264::fu_a(h264::IDR_NAL_HEADER, &[&escaped]).remove(0);
        assert_eq!(
            check_video(VideoCodec::H264, &fu, &mut scratch),
            Check::Intact(1)
        );
        let last = fu.len() - 1;
        fu[last] ^= 0xff;
        assert_eq!(
            check_video(VideoCodec::H264, &fu, &mut scratch),
            Check::Mismatch
        );

        let params = h264::stap_a(&[&h264::SPS, &h264::PPS]);
        assert_eq!(
            check_video(VideoCodec::H264, &params, &mut scratch),
            Check::NoPattern
        );
    }

    #[test]
    fn vp8_and_opus_patterns_follow_their_headers() {
        let mut key = vp8::descriptor(true, 1).to_vec();
        key.extend(vp8::frame_header(true, 100));
        pattern::write(5, 100, &mut key);
        let mut scratch = vec![];
        assert_eq!(
            check_video(VideoCodec::Vp8, &key, &mut scratch),
            Check::Intact(5)
        );
        assert!(is_keyframe(VideoCodec::Vp8, &key));

        let mut audio = vec![opus::TOC_CELT_FB_20MS];
        pattern::write(6, 40, &mut audio);
        assert_eq!(check_audio(&audio), Check::Intact(6));
        audio[20] = audio[20].wrapping_add(1);
        assert_eq!(check_audio(&audio), Check::Mismatch);
        assert_eq!(check_audio(&[]), Check::Mismatch);
    }
}
