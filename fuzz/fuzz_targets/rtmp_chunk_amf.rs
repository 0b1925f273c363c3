//! Fuzz target: `media::fuzzing::rtmp` (handshake, chunk stream, AMF0) on arbitrary bytes.
//! Run: `cargo +nightly fuzz run rtmp_chunk_amf` (from fuzz/).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    media::fuzzing::rtmp(data);
});
