//! RTMP wire protocol, sans-I/O: bytes in, messages out, no sockets and no clock.
//!
//! - `handshake.rs`: C0/C1/C2 ↔ S0/S1/S2 (the "simple" handshake OBS and ffmpeg accept).
//! - `chunk.rs`: the chunk stream (RTMP spec §5.3): reassembles messages from interleaved
//!   chunks, follows Set Chunk Size, bounds every size it is told.
//! - `amf0.rs`: AMF0 values, for command messages (`connect`, `publish`, `onStatus`, ...).
//! - `audio.rs`: FLV audio tags, and AAC → Opus through GStreamer.
//! - `flv.rs`: FLV video tags (AVC config, frames, enhanced-RTMP refusal) and H.264 → RTP.
//! - `reencode.rs`: H.264 with B-frames → without, through GStreamer, for WebRTC viewers.
//! - `session.rs`: one server-side connection: commands answered, publish requests and media
//!   handed to the caller.
//! - `listener.rs`: the TCP side: one task per connection, publishes into the SFU.
//! - `limits.rs`: connection caps and the publish deadline for connections not publishing yet.
//! - `publishers.rs`: connections publishing now, so a rotated stream key can end them.
//! - `client.rs`: the publisher's side as bytes (what OBS sends), for tests.
//!
//! Every parser here reads untrusted network bytes: none panics, all are fuzzed
//! (`fuzz/fuzz_targets/rtmp_*.rs` and the bounded mutation test in `crate::fuzzing`).

pub mod amf0;
pub mod audio;
pub mod chunk;
pub mod client;
pub mod flv;
pub mod handshake;
pub mod limits;
pub mod listener;
pub mod publishers;
pub mod reencode;
pub mod session;

/// Why a peer's bytes were refused; the connection is then closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtmpError {
    #[error("unsupported RTMP version {0} (only 3)")]
    Version(u8),
    #[error("malformed chunk: {0}")]
    Chunk(&'static str),
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("{0} bytes of unfinished messages exceed the buffer limit")]
    Buffered(usize),
    #[error("malformed AMF0: {0}")]
    Amf(&'static str),
}
