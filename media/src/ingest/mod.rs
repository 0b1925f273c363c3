//! Ingest protocols other than WHIP (which signaling hands straight to the SFU).
//!
//! - [`rtmp`]: RTMP (OBS "Custom", ffmpeg `-f flv`). Today: the sans-I/O wire protocol
//!   (handshake, chunk stream, AMF0). The listener, the publish session and the FLV → RTP /
//!   AAC → Opus conversion are the rest of issue #4.

pub mod rtmp;
