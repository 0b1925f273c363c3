//! The SFU on a virtual clock: [`common`] runs the `Sfu` and str0m peers on one simulated
//! clock that jumps to the next deadline, exchanging datagrams in memory, each peer's uplink
//! and downlink impaired at will (seeded loss, delay, jitter, reordering, duplication, exact
//! drops). One behaviour per module; simulated seconds run in well under a second. One test
//! crate, so the suite links one binary. `NET_TRACE=1` prints every datagram.

mod common;

mod bye_on_leave;
mod capacity;
mod connect;
mod dead_viewer;
mod gop_start;
mod keyframe_on_join;
mod nack_recovery;
mod pli_coalescing;
mod publisher_reconnect;
mod sender_reports;
