//! Fuzz target: `media::fuzzing::sps_probe` (H.264 SPS and VP8 picture-size probing for the
//! HLS ladder) on arbitrary bytes. Run: `cargo +nightly fuzz run sps_probe` (from fuzz/).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    media::fuzzing::sps_probe(data);
});
