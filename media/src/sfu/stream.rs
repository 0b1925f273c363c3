//! A stream: at most one publisher, the tracks it negotiated, the viewers watching it, and its
//! keyframe-request state.

use std::time::Duration;

use super::keyframe::KeyframeRequests;
use super::peer::PublishedTrack;
use super::SessionId;

#[derive(Debug)]
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
        }
    }

    pub fn remove_viewer(&mut self, id: SessionId) {
        self.viewers.retain(|v| *v != id);
    }

    /// No publisher and no viewers: nothing to keep.
    pub fn is_idle(&self) -> bool {
        self.publisher.is_none() && self.viewers.is_empty()
    }
}
