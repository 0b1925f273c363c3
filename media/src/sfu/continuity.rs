//! One continuous RTP numbering per stream and kind, whoever publishes: when the publisher's
//! source changes (a publisher reconnecting after a drop, a new SSRC), sequence numbers go on
//! from the last one viewers got and timestamps advance by the wall-clock gap. Viewers' jitter
//! buffers then see a pause, not a jump, and recover without renegotiating.

use std::time::Instant;

use rtc::rtp;

#[derive(Debug, Default)]
pub(crate) struct Continuity {
    /// SSRC of the source being forwarded now.
    source: Option<u32>,
    seq_offset: u16,
    ts_offset: u32,
    /// Highest sequence number sent, its timestamp, and when.
    last_seq: u16,
    last_ts: u32,
    last_at: Option<Instant>,
}

impl Continuity {
    /// Rewrite `header` into the stream's numbering. No allocation: runs once per packet.
    /// True when this packet is the first of a new source that follows another.
    pub fn rewrite(&mut self, now: Instant, header: &mut rtp::Header, clock_rate: u32) -> bool {
        let mut new_source = false;
        if self.source != Some(header.ssrc) {
            if let Some(at) = self.last_at {
                new_source = true;
                let gap = now.saturating_duration_since(at);
                let ticks = (gap.as_micros() as u64 * clock_rate as u64 / 1_000_000).max(1);
                self.seq_offset = self
                    .last_seq
                    .wrapping_add(1)
                    .wrapping_sub(header.sequence_number);
                self.ts_offset = self
                    .last_ts
                    .wrapping_add(ticks as u32)
                    .wrapping_sub(header.timestamp);
            }
            self.source = Some(header.ssrc);
        }
        header.sequence_number = header.sequence_number.wrapping_add(self.seq_offset);
        header.timestamp = header.timestamp.wrapping_add(self.ts_offset);
        let newer = header.sequence_number.wrapping_sub(self.last_seq) as i16 > 0;
        if self.last_at.is_none() || newer {
            self.last_seq = header.sequence_number;
            self.last_ts = header.timestamp;
        }
        self.last_at = Some(now);
        new_source
    }

    /// Timestamp `ts` of source `ssrc` in the stream's numbering, once `ssrc` is the source
    /// being forwarded (before its first packet its offset is not known yet).
    pub fn stream_timestamp(&self, ssrc: u32, ts: u32) -> Option<u32> {
        (self.source == Some(ssrc)).then(|| ts.wrapping_add(self.ts_offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn header(ssrc: u32, seq: u16, ts: u32) -> rtp::Header {
        rtp::Header {
            ssrc,
            sequence_number: seq,
            timestamp: ts,
            ..Default::default()
        }
    }

    #[test]
    fn first_source_passes_through_unchanged() {
        let mut c = Continuity::default();
        let now = Instant::now();
        for (seq, ts) in [(65534u16, 1000u32), (65535, 4000), (0, 7000)] {
            let mut h = header(7, seq, ts);
            assert!(
                !c.rewrite(now, &mut h, 90_000),
                "the first source is not a change"
            );
            assert_eq!((h.sequence_number, h.timestamp), (seq, ts));
        }
    }

    #[test]
    fn a_new_source_continues_the_numbering_after_a_pause() {
        let mut c = Continuity::default();
        let t0 = Instant::now();
        let mut h = header(1, 100, 9000);
        c.rewrite(t0, &mut h, 90_000);
        let mut h = header(1, 99, 6000); // reordered: does not move "last"
        c.rewrite(t0, &mut h, 90_000);

        // The publisher reconnects 2 s later with random numbering.
        let t1 = t0 + Duration::from_secs(2);
        let mut h = header(2, 40_000, 123_456_789);
        assert!(c.rewrite(t1, &mut h, 90_000), "a new source");
        assert_eq!(h.sequence_number, 101);
        assert_eq!(h.timestamp, 9000 + 180_000);
        assert_eq!(h.ssrc, 2, "SSRCs are the caller's business");

        let mut h = header(2, 40_001, 123_456_789 + 3000);
        assert!(!c.rewrite(t1, &mut h, 90_000));
        assert_eq!((h.sequence_number, h.timestamp), (102, 9000 + 183_000));
    }

    #[test]
    fn wraps_around() {
        let mut c = Continuity::default();
        let t0 = Instant::now();
        let mut h = header(1, u16::MAX, u32::MAX - 10);
        c.rewrite(t0, &mut h, 48_000);
        let mut h = header(2, 5, 5);
        c.rewrite(t0 + Duration::from_millis(20), &mut h, 48_000);
        assert_eq!(h.sequence_number, 0);
        assert_eq!(h.timestamp, (u32::MAX - 10).wrapping_add(960));
    }
}
