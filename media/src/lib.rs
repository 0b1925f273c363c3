//! Glint's media core: the SFU that takes WebRTC publishers in and fans their RTP out to viewers.
//!
//! Layout (each file owns one thing):
//! - [`sfu`]: the sans-I/O forwarding core. No sockets, no HTTP, no clock: datagrams, commands and
//!   the time go in, datagrams to send and stream events come out. Tested with a virtual clock.
//!   - `sfu/stream.rs`: a stream (one publisher, its tracks, its viewers).
//!   - `sfu/keyframe.rs`: how viewers' keyframe requests are coalesced into few PLIs.
//!   - `sfu/peer.rs`: building the webrtc-rs `rtc` peer connections for publishers and viewers.
//!   - `sfu/demux.rs`: which peer connection a datagram on the shared UDP port belongs to.
//! - [`stun`]: the few bytes of STUN the demultiplexer reads (the USERNAME of a binding request).
//! - [`codec`]: codecs we forward and how to spot a keyframe in their RTP payloads.
//! - [`runtime`]: the media thread (`glint-media`) that owns the UDP socket and drives the core;
//!   [`MediaHandle`] is how signaling and RTMP ingest talk to it.
//! - [`metrics`]: counters read by `/metrics` without going through the media thread.
//! - [`ingest`]: publishers that are not WebRTC peers (RTMP), and their GStreamer transcoders.
//! - [`hls`]: the HLS ladder of every live stream (GStreamer), and where its objects are stored.
//! - `pipeline.rs`: GStreamer set-up shared by every pipeline.

pub mod codec;
pub mod config;
pub mod error;
pub mod fuzzing;
pub mod hls;
pub mod ingest;
pub mod metrics;
mod pipeline;
pub mod runtime;
pub mod sfu;
pub mod slots;
pub mod stun;
mod udp_batch;
pub mod udp_recv;

pub use config::MediaConfig;
pub use error::MediaError;
pub use metrics::Metrics;
pub use rtc::rtp;
pub use runtime::{spawn, MediaHandle, MediaTask};
pub use sfu::{AacFrame, Departure, Role, SessionAnswer, SessionId, StreamEvent, StreamSummary};
