//! A stream: at most one publisher, the tracks it negotiated, the viewers watching it, its
//! keyframe-request state, and what keeps it on air while a dropped publisher reconnects.

use std::time::{Duration, Instant};

use rtc::rtp;

use super::continuity::Continuity;
use super::fanout::{History, ViewerOut};
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
    /// What the publisher sends, for analytics.
    pub ingest: IngestStats,
    /// Viewers whose connection came up since the stream last went on air.
    pub viewers_served: u64,
    /// Publisher packets received and not yet forwarded (see `Sfu::poll_transmit`).
    pub pending: Vec<rtp::Packet>,
    /// Video as forwarded, for viewers' NACKs.
    pub history: History,
    /// What each connected viewer is sent (see `fanout`).
    pub outputs: Vec<ViewerOut>,
}

/// Counters of what a publisher sends: the hot path adds to them and never allocates.
#[derive(Default)]
pub(crate) struct IngestStats {
    /// RTP payload bytes received since the stream was created.
    pub bytes: u64,
    last_keyframe_ts: Option<u32>,
    /// Time between the last two keyframes.
    pub keyframe_interval_ms: Option<u32>,
}

impl IngestStats {
    /// A packet of a keyframe with this RTP timestamp (a presentation time) arrived.
    pub fn keyframe(&mut self, rtp_ts: u32, clock_rate: u32) {
        if let Some(last) = self.last_keyframe_ts {
            if last == rtp_ts {
                return; // another packet of the same keyframe
            }
            let ms = u64::from(rtp_ts.wrapping_sub(last)) * 1000 / u64::from(clock_rate.max(1));
            if (1..=60_000).contains(&ms) {
                self.keyframe_interval_ms = Some(ms as u32);
            }
        }
        self.last_keyframe_ts = Some(rtp_ts);
    }

    /// A new publisher: its timestamps start anywhere.
    pub fn new_source(&mut self) {
        self.last_keyframe_ts = None;
    }
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
            ingest: IngestStats::default(),
            viewers_served: 0,
            pending: Vec::new(),
            history: History::default(),
            outputs: Vec::new(),
        }
    }

    /// Has a publisher, or is waiting for one to come back.
    pub fn is_active(&self) -> bool {
        self.publisher.is_some() || self.reconnect_deadline.is_some()
    }

    pub fn remove_viewer(&mut self, id: SessionId) {
        self.viewers.retain(|v| *v != id);
        self.outputs.retain(|o| o.id != id);
    }

    pub fn output_mut(&mut self, id: SessionId) -> Option<&mut ViewerOut> {
        self.outputs.iter_mut().find(|o| o.id == id)
    }

    /// No publisher and no viewers: nothing to keep.
    pub fn is_idle(&self) -> bool {
        !self.is_active() && self.viewers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::IngestStats;

    #[test]
    fn keyframe_interval_from_rtp_timestamps() {
        let mut s = IngestStats::default();
        s.keyframe(1000, 90_000);
        s.keyframe(1000, 90_000); // the same keyframe's next packet
        assert_eq!(s.keyframe_interval_ms, None);
        s.keyframe(1000 + 180_000, 90_000);
        assert_eq!(s.keyframe_interval_ms, Some(2000));
        s.keyframe(u32::MAX - 44_999, 90_000); // a jump (no interval)...
        assert_eq!(s.keyframe_interval_ms, Some(2000));
        s.keyframe(45_000, 90_000); // ...then a wrap: 1 s
        assert_eq!(s.keyframe_interval_ms, Some(1000));
        s.new_source();
        s.keyframe(7, 90_000);
        assert_eq!(s.keyframe_interval_ms, Some(1000));
    }
}
