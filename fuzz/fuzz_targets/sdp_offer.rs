//! Fuzz target: `media::fuzzing::offer` on arbitrary bytes. Run: `cargo +nightly fuzz run sdp_offer` (from fuzz/).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    media::fuzzing::offer(data);
});
