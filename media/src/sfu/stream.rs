//! A stream: at most one publisher, the tracks it negotiated, the viewers watching it, its
//! keyframe-request state, its current GOP, and what keeps it on air while a dropped publisher
//! reconnects.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::rtp;

use super::continuity::Continuity;
use super::fanout::{History, ViewerOut};
use super::gop::Gop;
use super::keyframe::KeyframeRequests;
use super::peer::PublishedTrack;
use super::{SessionId, StreamTap, Transmit};

/// Where a stream's publisher is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Publishing {
    /// None, and none awaited.
    Idle,
    /// A publisher's connection is coming up (ICE + DTLS). `resuming`: it takes over a stream
    /// that stayed on air for a dropped publisher.
    Connecting {
        publisher: SessionId,
        resuming: bool,
    },
    /// The publisher is connected (an RTMP publisher at once): the stream is on air.
    Live { publisher: SessionId },
    /// The publisher dropped without ending the stream: viewers are kept until `deadline`, for
    /// a publisher that reconnects with the same key to take over.
    Reconnecting { deadline: Instant },
}

pub(crate) struct Stream {
    pub name: String,
    pub publishing: Publishing,
    pub tracks: Vec<PublishedTrack>,
    pub viewers: Vec<SessionId>,
    pub keyframes: KeyframeRequests,
    /// SSRC of the publisher's video, learned from its first video packet; PLIs name it.
    pub video_ssrc: Option<u32>,
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
    /// Viewers started from the GOP that have not caught up with the live point yet.
    pub joining: Vec<ViewerOut>,
    /// Video since the last keyframe, to start a joining viewer with.
    pub gop: Gop,
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
    pub fn new(name: String, pli_min_interval: Duration, gop_cache_bytes: usize) -> Self {
        Self {
            name,
            publishing: Publishing::Idle,
            tracks: Vec::new(),
            viewers: Vec::new(),
            keyframes: KeyframeRequests::new(pli_min_interval),
            video_ssrc: None,
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
            joining: Vec::new(),
            gop: Gop::new(gop_cache_bytes),
        }
    }

    /// Has a publisher, or is waiting for one to come back.
    pub fn is_active(&self) -> bool {
        self.publishing != Publishing::Idle
    }

    /// Has a publisher, connected or coming up.
    pub fn has_publisher(&self) -> bool {
        self.publisher().is_some()
    }

    pub fn publisher(&self) -> Option<SessionId> {
        match self.publishing {
            Publishing::Connecting { publisher, .. } | Publishing::Live { publisher } => {
                Some(publisher)
            }
            Publishing::Idle | Publishing::Reconnecting { .. } => None,
        }
    }

    /// Announced live: a `Live` event went out and no `Offline` since.
    pub fn on_air(&self) -> bool {
        matches!(
            self.publishing,
            Publishing::Live { .. }
                | Publishing::Reconnecting { .. }
                | Publishing::Connecting { resuming: true, .. }
        )
    }

    pub fn reconnect_deadline(&self) -> Option<Instant> {
        match self.publishing {
            Publishing::Reconnecting { deadline } => Some(deadline),
            _ => None,
        }
    }

    /// A new publisher `id` with these tracks (the caller checked there is none). True when it
    /// resumes a stream that waited for its dropped publisher.
    pub fn publisher_connecting(&mut self, id: SessionId, tracks: Vec<PublishedTrack>) -> bool {
        let resuming = matches!(self.publishing, Publishing::Reconnecting { .. });
        self.publishing = Publishing::Connecting {
            publisher: id,
            resuming,
        };
        self.tracks = tracks;
        self.video_ssrc = None;
        self.ingest.new_source();
        self.gop.clear();
        resuming
    }

    /// Publisher `id`'s connection is up. True when the stream goes on air now (it was not
    /// already, waiting for this publisher to take over).
    pub fn publisher_live(&mut self, id: SessionId) -> bool {
        match self.publishing {
            Publishing::Connecting {
                publisher,
                resuming,
            } if publisher == id => {
                self.publishing = Publishing::Live { publisher };
                !resuming
            }
            _ => false,
        }
    }

    /// A connected viewer's output joins the stream; it starts from the current GOP when there
    /// is one (true), else it waits for the next keyframe.
    pub fn add_output(
        &mut self,
        now: Instant,
        mut out: ViewerOut,
        transmits: &mut VecDeque<Transmit>,
    ) -> bool {
        if !self.gop.start(now, &mut out, transmits) {
            self.outputs.push(out);
            return false;
        }
        if out.start.as_ref().is_some_and(|s| s.done()) {
            self.outputs.push(out);
        } else {
            self.joining.push(out);
        }
        true
    }

    /// Send joining viewers what of the GOP is due; those caught up go live.
    pub fn catch_up(&mut self, now: Instant, transmits: &mut VecDeque<Transmit>) {
        let mut i = 0;
        while i < self.joining.len() {
            if self.gop.catch_up(now, &mut self.joining[i], transmits) {
                let out = self.joining.swap_remove(i);
                self.outputs.push(out);
            } else {
                i += 1;
            }
        }
        if self.joining.is_empty() {
            self.gop.trim();
        }
    }

    /// The GOP joining viewers read from is gone: they go live where the stream is.
    pub fn end_catch_up(&mut self) {
        self.outputs.append(&mut self.joining);
    }

    /// When a joining viewer's next GOP packet is due.
    pub fn catch_up_deadline(&self) -> Option<Instant> {
        self.joining
            .iter()
            .filter_map(|o| self.gop.next_due(o))
            .min()
    }

    pub fn remove_viewer(&mut self, id: SessionId) {
        self.viewers.retain(|v| *v != id);
        self.outputs.retain(|o| o.id != id);
        self.joining.retain(|o| o.id != id);
    }

    pub fn output_mut(&mut self, id: SessionId) -> Option<&mut ViewerOut> {
        self.outputs
            .iter_mut()
            .chain(self.joining.iter_mut())
            .find(|o| o.id == id)
    }

    /// No publisher and no viewers: nothing to keep.
    pub fn is_idle(&self) -> bool {
        !self.is_active() && self.viewers.is_empty()
    }
}

/// The MIME types of a stream's tracks, for summaries and logs.
pub(crate) fn codec_names(tracks: &[PublishedTrack]) -> Vec<String> {
    tracks
        .iter()
        .map(|t| t.codec.rtp_codec.mime_type.clone())
        .collect()
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
