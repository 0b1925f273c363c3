//! Fuzz target: `media::fuzzing::keyframe` on arbitrary bytes. Run: `cargo +nightly fuzz run rtp_keyframe` (from fuzz/).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    media::fuzzing::keyframe(data);
});
