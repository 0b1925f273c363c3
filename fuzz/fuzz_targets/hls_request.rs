//! Fuzz target: `media::fuzzing::hls_request` (LL-HLS blocking-reload queries, object names,
//! the reload decision) on arbitrary bytes.
//! Run: `cargo +nightly fuzz run hls_request` (from fuzz/).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    media::fuzzing::hls_request(data);
});
