//! Coalescing keyframe requests: many viewers asking at once cost the publisher a few PLIs.
//!
//! A joining viewer, or a viewer's own PLI/FIR, calls [`KeyframeRequests::request`]. The first
//! request sends a PLI (RFC 4585 §6.3.1) at once; later ones within `min_interval` only mark a
//! keyframe as wanted. If the interval passes and no keyframe has arrived, one more PLI goes out
//! (the first may have been lost). A keyframe arriving clears the want. So a burst of 1,000
//! joins over one second costs about 1 s / min_interval PLIs, not 1,000.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use tracing::debug;

use super::connection::PeerKind;
use super::Sfu;
use crate::metrics::Metrics;

/// SSRC our feedback (PLI) to publishers is sent from; we send no media toward publishers.
const FEEDBACK_SSRC: u32 = 0x6c69_6e74;

#[derive(Debug)]
pub struct KeyframeRequests {
    min_interval: Duration,
    last_pli: Option<Instant>,
    wanted: bool,
}

impl KeyframeRequests {
    pub fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            last_pli: None,
            wanted: false,
        }
    }

    /// Someone wants a keyframe. Returns true when a PLI should be sent now.
    pub fn request(&mut self, now: Instant) -> bool {
        self.wanted = true;
        self.poll(now)
    }

    /// A keyframe arrived from the publisher: every pending request is satisfied.
    pub fn keyframe_arrived(&mut self) {
        self.wanted = false;
    }

    /// Called at [`Self::deadline`]: true when a (repeat) PLI should be sent now.
    pub fn poll(&mut self, now: Instant) -> bool {
        if !self.wanted {
            return false;
        }
        let due = match self.last_pli {
            None => true,
            Some(last) => now.saturating_duration_since(last) >= self.min_interval,
        };
        if due {
            self.last_pli = Some(now);
        }
        due
    }

    /// When [`Self::poll`] may next return true.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.wanted, self.last_pli) {
            (true, Some(last)) => Some(last + self.min_interval),
            _ => None,
        }
    }
}

impl Sfu {
    /// A viewer (or the HLS keyframe clock) wants a keyframe of `stream`.
    pub(super) fn request_keyframe(&mut self, now: Instant, stream: &str) {
        Metrics::add(&self.metrics.keyframe_requests, 1);
        let Some(s) = self.streams.get_mut(stream) else {
            return;
        };
        if s.keyframes.request(now) {
            self.send_pli(now, stream);
        }
    }

    /// At `stream`'s keyframe deadline: repeat the PLI if no keyframe came.
    pub(super) fn poll_keyframe(&mut self, now: Instant, stream: &str) {
        let Some(s) = self.streams.get_mut(stream) else {
            return;
        };
        if s.keyframes.poll(now) {
            self.send_pli(now, stream);
        }
    }

    /// RFC 4585 §6.3.1 Picture Loss Indication to the stream's publisher.
    fn send_pli(&mut self, now: Instant, stream: &str) {
        let Some(s) = self.streams.get(stream) else {
            return;
        };
        let (Some(publisher), Some(media_ssrc)) = (s.publisher(), s.video_ssrc) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&publisher) else {
            return;
        };
        let PeerKind::Publisher {
            video_receiver: Some(receiver_id),
        } = peer.kind
        else {
            return;
        };
        if !peer.connected() {
            return;
        }
        let Some(mut receiver) = peer.pc.rtp_receiver(receiver_id) else {
            return;
        };
        // A compound packet led by an empty RR (RFC 3550 §6.1): peers that did not negotiate
        // rtcp-rsize (RFC 5506) drop a lone PLI.
        let rr = ReceiverReport {
            ssrc: FEEDBACK_SSRC,
            reports: Vec::new(),
            profile_extensions: Bytes::new(),
        };
        let pli = PictureLossIndication {
            sender_ssrc: FEEDBACK_SSRC,
            media_ssrc,
        };
        if receiver
            .write_rtcp(now, vec![Box::new(rr), Box::new(pli)])
            .is_ok()
        {
            Metrics::add(&self.metrics.plis_sent, 1);
        }
        let before = self.transmits.len();
        self.service(now, publisher);
        debug!(
            stream,
            datagrams = self.transmits.len() - before,
            "PLI sent"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GAP: Duration = Duration::from_millis(300);

    #[test]
    fn thousand_joins_in_a_second_cost_a_handful_of_plis() {
        let start = Instant::now();
        let mut k = KeyframeRequests::new(GAP);
        let mut plis = 0;
        for i in 0..1000u64 {
            let now = start + Duration::from_millis(i);
            if let Some(d) = k.deadline() {
                if d <= now && k.poll(now) {
                    plis += 1;
                }
            }
            if k.request(now) {
                plis += 1;
            }
        }
        // No keyframe ever arrives: one PLI per interval, 0 ms, 300, 600, 900.
        assert_eq!(plis, 4);
    }

    #[test]
    fn keyframe_clears_the_want_and_a_later_request_waits_for_the_interval() {
        let t0 = Instant::now();
        let mut k = KeyframeRequests::new(GAP);
        assert!(k.request(t0));
        assert!(!k.request(t0 + Duration::from_millis(10)));
        k.keyframe_arrived();
        assert_eq!(k.deadline(), None);
        assert!(!k.poll(t0 + Duration::from_secs(5)));
        // New request 100 ms after the first PLI: merged, repeated at 300 ms.
        assert!(!k.request(t0 + Duration::from_millis(100)));
        assert_eq!(k.deadline(), Some(t0 + GAP));
        assert!(k.poll(t0 + GAP));
        // Long after, a request goes out at once.
        k.keyframe_arrived();
        assert!(k.request(t0 + Duration::from_secs(10)));
    }
}
