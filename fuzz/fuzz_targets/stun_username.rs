//! Fuzz target: `media::fuzzing::stun` on arbitrary bytes. Run: `cargo +nightly fuzz run stun_username` (from fuzz/).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    media::fuzzing::stun(data);
});
