//! Fuzz target: a WHIP/WHEP trickle PATCH (SDP fragment body and If-Match) on arbitrary bytes.
//! Run: `cargo +nightly fuzz run whip_trickle` (from fuzz/).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    signaling::fuzzing::trickle(data);
});
