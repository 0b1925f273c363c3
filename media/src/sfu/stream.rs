//! A stream: at most one publisher, the tracks it negotiated, the viewers watching it, its
//! keyframe-request state, and what keeps it on air while a dropped publisher reconnects.

use std::time::{Duration, Instant};

use super::continuity::Continuity;
use super::keyframe::KeyframeRequests;
use super::peer::PublishedTrack;
use super::SessionId;
use super::StreamTap;

pub(crate) struct Stream {
    pub name: String,
    pub publisher: Option<SessionId>,
    /// True once the publisher's connection is up (ICE + DTLS): the stream is "live".
    pub live: bool,
    pub tracks: Vec<PublishedTrack>,
    pub viewers: Vec<SessionId>,
    pub keyframes: KeyframeRequests,
    /// SSRC of the publisher's video, learned from its first video packet; PLIs name it.
    pub video_ssrc: Option<u32>,
    /// Announced live (a `Live` event went out and no `Offline` since).
    pub on_air: bool,
    /// The publisher dropped without ending the stream: viewers are kept until then, for a
    /// publisher that reconnects with the same key to take over.
    pub reconnect_deadline: Option<Instant>,
    /// Viewers' numbering, continuous across publishers.
    pub video_out: Continuity,
    pub audio_out: Continuity,
    /// Where a copy of the RTP goes (HLS), while the stream is on air.
    pub tap: Option<Box<dyn StreamTap>>,
    /// With a tap: how often the publisher is asked for a keyframe, and when next.
    pub tap_keyframe_interval: Duration,
    pub tap_next_keyframe: Option<Instant>,
}

impl Stream {
    pub fn new(name: String, pli_min_interval: Duration) -> Self {
        Self {
            name,
            publisher: None,
            live: false,
            tracks: Vec::new(),
            viewers: Vec::new(),
            keyframes: KeyframeRequests::new(pli_min_interval),
            video_ssrc: None,
            on_air: false,
            reconnect_deadline: None,
            video_out: Continuity::default(),
            audio_out: Continuity::default(),
            tap: None,
            tap_keyframe_interval: Duration::ZERO,
            tap_next_keyframe: None,
        }
    }

    /// Has a publisher, or is waiting for one to come back.
    pub fn is_active(&self) -> bool {
        self.publisher.is_some() || self.reconnect_deadline.is_some()
    }

    pub fn remove_viewer(&mut self, id: SessionId) {
        self.viewers.retain(|v| *v != id);
    }

    /// No publisher and no viewers: nothing to keep.
    pub fn is_idle(&self) -> bool {
        !self.is_active() && self.viewers.is_empty()
    }
}
