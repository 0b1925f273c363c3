//! What a peer counts while it runs and the snapshots it publishes: per-track receive
//! counters with RFC 3550 loss accounting, publisher send counters, and why a peer ended.

use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::codec::{Check, VideoCodec};

/// Why a peer stopped (or, for a viewer, why its tracks ended).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason", content = "detail")]
pub enum EndReason {
    /// The server sent RTCP BYE (RFC 3550 §6.6) for a track we receive.
    Bye,
    /// The server closed DTLS (close_notify) or the SCTP association.
    PeerClosed,
    /// ICE stayed disconnected (consent lost, RFC 7675) past the grace period.
    IceDisconnected,
    /// ICE + DTLS did not complete within the configured connect timeout.
    ConnectTimeout,
    /// We were told to stop, or the handle was dropped.
    Stopped,
    /// The WebRTC stack or the socket failed.
    Failed(String),
}

/// Receive counters for one media kind, as published in a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TrackStats {
    /// RTP packets received (after SRTP, duplicates dropped, RTX unwrapped).
    pub packets: u64,
    /// RTP payload bytes received.
    pub bytes: u64,
    /// Packets never received: expected minus received, per RFC 3550 §6.4.1 / A.3.
    pub lost: u64,
    /// Times the sequence number jumped forward by more than one.
    pub seq_gaps: u64,
    /// Packets that arrived after a higher sequence number (late or retransmitted).
    pub reordered: u64,
    /// Payloads whose verification pattern was intact.
    pub pattern_ok: u64,
    /// Payloads whose pattern slot held the wrong bytes.
    pub pattern_mismatches: u64,
    /// Payloads without a pattern (H.264 parameter sets, foreign NAL types).
    pub pattern_absent: u64,
    /// Keyframes seen (counted once per RTP timestamp).
    pub keyframes: u64,
    /// Packets whose RTP timestamp is below the previous packet's: frames sent out of
    /// presentation order (B-frames), which browsers' WebRTC receivers drop.
    pub timestamp_reversals: u64,
    /// Times str0m reported the incoming stream paused (no packets for 1.5 s).
    pub stalls: u64,
    /// From the start of the POST until the first packet.
    #[serde(serialize_with = "millis")]
    pub first_packet_after: Option<Duration>,
}

/// Snapshot of a WHEP viewer, published on every change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ViewerStats {
    /// From the start of the POST until ICE and DTLS were up.
    #[serde(serialize_with = "millis")]
    pub connected_after: Option<Duration>,
    /// From the start of the POST until the first video packet that starts a keyframe.
    #[serde(serialize_with = "millis")]
    pub first_keyframe_after: Option<Duration>,
    /// Codec of the video we receive, once a video packet arrived.
    pub video_codec: Option<VideoCodec>,
    pub video: TrackStats,
    pub audio: TrackStats,
    /// PLIs this viewer sent.
    pub keyframe_requests_sent: u64,
    /// NACKs this viewer's str0m sent for missing video (from its ingress stats, each second).
    pub video_nacks_sent: u64,
    /// Video interarrival jitter (RFC 3550 §6.4.1) from the last receiver report, in µs.
    pub video_jitter_us: Option<u64>,
    /// An RTCP BYE arrived (only detected when `ViewConfig::detect_bye` is on).
    pub bye_received: bool,
    /// Set once: the first reason the tracks ended.
    pub ended: Option<EndReason>,
}

impl ViewerStats {
    /// Received packets of both kinds.
    pub fn packets(&self) -> u64 {
        self.video.packets + self.audio.packets
    }

    /// Pattern mismatches of both kinds.
    pub fn pattern_mismatches(&self) -> u64 {
        self.video.pattern_mismatches + self.audio.pattern_mismatches
    }
}

/// Snapshot of a WHIP publisher, published on every change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PublisherStats {
    /// From the start of the POST until ICE and DTLS were up.
    #[serde(serialize_with = "millis")]
    pub connected_after: Option<Duration>,
    pub video_packets: u64,
    pub video_bytes: u64,
    pub audio_packets: u64,
    pub audio_bytes: u64,
    pub keyframes_sent: u64,
    /// Picture Loss Indications received (RFC 4585 §6.3.1).
    pub plis_received: u64,
    /// Full Intra Requests received (RFC 5104 §4.3.1).
    pub firs_received: u64,
    pub ended: Option<EndReason>,
}

impl PublisherStats {
    /// PLIs and FIRs together.
    pub fn keyframe_requests_received(&self) -> u64 {
        self.plis_received + self.firs_received
    }
}

/// Counts received and lost packets of one track across SSRC changes, following the
/// cumulative-loss arithmetic of RFC 3550 Appendix A.3 on extended sequence numbers.
#[derive(Debug, Clone, Default)]
pub struct LossCounter {
    current: Option<SsrcRun>,
    /// Expected and received packets of SSRCs we no longer receive.
    closed_expected: u64,
    closed_received: u64,
    gaps: u64,
    reordered: u64,
}

#[derive(Debug, Clone, Copy)]
struct SsrcRun {
    ssrc: u32,
    lowest: u64,
    highest: u64,
    received: u64,
}

impl SsrcRun {
    fn expected(&self) -> u64 {
        self.highest - self.lowest + 1
    }
}

impl LossCounter {
    /// Records one packet with its extended sequence number.
    pub fn record(&mut self, ssrc: u32, seq: u64) {
        let run = match &mut self.current {
            Some(run) if run.ssrc == ssrc => run,
            other => {
                if let Some(old) = other.take() {
                    self.closed_expected += old.expected();
                    self.closed_received += old.received;
                }
                self.current = Some(SsrcRun {
                    ssrc,
                    lowest: seq,
                    highest: seq,
                    received: 1,
                });
                return;
            }
        };
        run.received += 1;
        if seq > run.highest {
            if seq > run.highest + 1 {
                self.gaps += 1;
            }
            run.highest = seq;
        } else {
            // Late, or a retransmission of a packet we counted as lost.
            self.reordered += 1;
            run.lowest = run.lowest.min(seq);
        }
    }

    pub fn received(&self) -> u64 {
        self.closed_received + self.current.map_or(0, |r| r.received)
    }

    pub fn expected(&self) -> u64 {
        self.closed_expected + self.current.map_or(0, |r| r.expected())
    }

    /// Never negative: duplicates that slip through do not make loss go below zero.
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received())
    }

    pub fn gaps(&self) -> u64 {
        self.gaps
    }

    pub fn reordered(&self) -> u64 {
        self.reordered
    }
}

/// Running receive state for one track; [`TrackCounter::snapshot`] gives [`TrackStats`].
#[derive(Debug, Clone, Default)]
pub struct TrackCounter {
    stats: TrackStats,
    loss: LossCounter,
    last_rtp_time: Option<u32>,
}

impl TrackCounter {
    /// Records a packet: its SSRC, extended sequence number and RTP timestamp, payload size,
    /// pattern check, whether it starts a keyframe not counted yet, and how long after the POST
    /// it arrived.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        ssrc: u32,
        seq: u64,
        rtp_time: u32,
        payload_len: usize,
        check: Check,
        keyframe: bool,
        since_post: Duration,
    ) {
        self.loss.record(ssrc, seq);
        let s = &mut self.stats;
        if let Some(last) = self.last_rtp_time.replace(rtp_time) {
            if (rtp_time.wrapping_sub(last) as i32) < 0 {
                s.timestamp_reversals += 1;
            }
        }
        s.packets += 1;
        s.bytes += payload_len as u64;
        match check {
            Check::Intact(_) => s.pattern_ok += 1,
            Check::Mismatch => s.pattern_mismatches += 1,
            Check::NoPattern => s.pattern_absent += 1,
        }
        if keyframe {
            s.keyframes += 1;
        }
        s.first_packet_after.get_or_insert(since_post);
    }

    pub fn record_stall(&mut self) {
        self.stats.stalls += 1;
    }

    pub fn snapshot(&self) -> TrackStats {
        TrackStats {
            lost: self.loss.lost(),
            seq_gaps: self.loss.gaps(),
            reordered: self.loss.reordered(),
            ..self.stats.clone()
        }
    }
}

/// Serialises an optional duration as fractional milliseconds (or null).
/// A duration as milliseconds (JSON reports).
pub fn ser_ms<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(value.as_secs_f64() * 1000.0)
}

/// An optional duration as milliseconds.
pub fn ser_opt_ms<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    millis(value, s)
}

fn millis<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(d) => s.serialize_some(&(d.as_secs_f64() * 1000.0)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_loss_in_order() {
        let mut l = LossCounter::default();
        for seq in 100..200 {
            l.record(1, seq);
        }
        assert_eq!(
            (l.expected(), l.received(), l.lost(), l.gaps()),
            (100, 100, 0, 0)
        );
    }

    #[test]
    fn gaps_count_as_loss_until_the_packet_arrives_late() {
        let mut l = LossCounter::default();
        for seq in [10, 11, 14, 15, 16, 20] {
            l.record(1, seq);
        }
        assert_eq!(l.expected(), 11);
        assert_eq!(l.lost(), 5);
        assert_eq!(l.gaps(), 2);
        l.record(1, 12); // retransmitted
        assert_eq!(l.lost(), 4);
        assert_eq!(l.reordered(), 1);
    }

    #[test]
    fn packet_older_than_the_first_extends_the_range() {
        let mut l = LossCounter::default();
        l.record(1, 50);
        l.record(1, 48);
        assert_eq!(l.expected(), 3);
        assert_eq!(l.lost(), 1);
    }

    #[test]
    fn ssrc_change_keeps_earlier_totals() {
        let mut l = LossCounter::default();
        for seq in [1, 2, 4] {
            l.record(7, seq);
        }
        for seq in [900, 901] {
            l.record(8, seq);
        }
        assert_eq!(l.expected(), 4 + 2);
        assert_eq!(l.received(), 5);
        assert_eq!(l.lost(), 1, "no loss is invented across the SSRC switch");
    }

    #[test]
    fn track_counter_snapshot() {
        let mut t = TrackCounter::default();
        let ms = Duration::from_millis;
        t.record(1, 1, 3000, 100, Check::NoPattern, true, ms(50));
        t.record(1, 2, 9000, 100, Check::Intact(1), false, ms(60));
        t.record(1, 4, 6000, 80, Check::Mismatch, false, ms(70)); // a B-frame: shown earlier
        t.record_stall();
        let s = t.snapshot();
        assert_eq!(s.packets, 3);
        assert_eq!(s.bytes, 280);
        assert_eq!(s.lost, 1);
        assert_eq!(s.seq_gaps, 1);
        assert_eq!(
            (s.pattern_ok, s.pattern_mismatches, s.pattern_absent),
            (1, 1, 1)
        );
        assert_eq!(s.keyframes, 1);
        assert_eq!(s.timestamp_reversals, 1);
        assert_eq!(s.stalls, 1);
        assert_eq!(s.first_packet_after, Some(ms(50)));
    }

    #[test]
    fn serialises_durations_as_milliseconds() {
        let s = ViewerStats {
            connected_after: Some(Duration::from_micros(12_500)),
            ended: Some(EndReason::Failed("boom".into())),
            ..ViewerStats::default()
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["connected_after"], 12.5);
        assert!(v["first_keyframe_after"].is_null());
        assert_eq!(v["ended"]["reason"], "failed");
        assert_eq!(v["ended"]["detail"], "boom");
    }
}

/// Glass-to-glass latency, recorded by many viewers at once (atomics; no copying per sample):
/// 1 ms buckets below 100 ms, 10 ms below 1 s, 100 ms below 10 s, and one above.
#[derive(Debug)]
pub struct LatencyRecorder {
    buckets: Vec<std::sync::atomic::AtomicU64>,
}

const LATENCY_BUCKETS: usize = 100 + 90 + 90 + 1;

impl Default for LatencyRecorder {
    fn default() -> Self {
        LatencyRecorder {
            buckets: (0..LATENCY_BUCKETS)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
        }
    }
}

fn latency_bucket(us: u64) -> usize {
    let ms = us / 1000;
    match ms {
        0..100 => ms as usize,
        100..1000 => 100 + (ms as usize - 100) / 10,
        1000..10_000 => 190 + (ms as usize - 1000) / 100,
        _ => LATENCY_BUCKETS - 1,
    }
}

/// The upper bound of a bucket, in µs.
fn latency_bucket_top(b: usize) -> u64 {
    let ms = match b {
        0..100 => b as u64 + 1,
        100..190 => 100 + (b as u64 - 100 + 1) * 10,
        190..280 => 1000 + (b as u64 - 190 + 1) * 100,
        _ => 10_000,
    };
    ms * 1000
}

impl LatencyRecorder {
    pub fn record(&self, latency: Duration) {
        let b = latency_bucket(latency.as_micros() as u64);
        self.buckets[b].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatencyHistogram {
        LatencyHistogram {
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(std::sync::atomic::Ordering::Relaxed))
                .collect(),
        }
    }
}

/// A copy of a [`LatencyRecorder`]'s counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    buckets: Vec<u64>,
}

impl LatencyHistogram {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The samples recorded since `earlier` (a snapshot of the same recorder).
    pub fn since(&self, earlier: &LatencyHistogram) -> LatencyHistogram {
        LatencyHistogram {
            buckets: self
                .buckets
                .iter()
                .enumerate()
                .map(|(i, n)| n.saturating_sub(earlier.buckets.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }

    /// The latency `p` (0–100) percent of samples are at or below (a bucket's upper bound).
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_micros(latency_bucket_top(b)));
            }
        }
        None
    }
}

#[cfg(test)]
mod latency_tests {
    use super::*;

    #[test]
    fn percentiles_from_buckets() {
        let r = LatencyRecorder::default();
        assert_eq!(r.snapshot().percentile(50.0), None);
        for ms in 1..=100u64 {
            r.record(Duration::from_micros(ms * 1000 - 500)); // 0.5 … 99.5 ms
        }
        let h = r.snapshot();
        assert_eq!(h.count(), 100);
        assert_eq!(h.percentile(50.0), Some(Duration::from_millis(50)));
        assert_eq!(h.percentile(99.0), Some(Duration::from_millis(99)));
        r.record(Duration::from_millis(250));
        r.record(Duration::from_secs(3));
        r.record(Duration::from_secs(60));
        let later = r.snapshot();
        let new = later.since(&h);
        assert_eq!(new.count(), 3);
        assert_eq!(new.percentile(1.0), Some(Duration::from_millis(260)));
        assert_eq!(new.percentile(50.0), Some(Duration::from_millis(3100)));
        assert_eq!(
            new.percentile(100.0),
            Some(Duration::from_secs(10)),
            "the overflow bucket"
        );
    }
}
