//! Instant start: a stream keeps its current group of pictures — its video from the last
//! keyframe on, as viewers were sent it — and a joining viewer is started from it the moment
//! its connection is up, instead of waiting for the publisher's next keyframe (a PLI round
//! trip; up to a whole GOP for RTMP, which has no PLI, and for publishers slow to answer one).
//!
//! The keyframe goes out at once; the rest of the GOP (and what the stream forwards meanwhile)
//! follows [`SPEEDUP`] times faster than real time, with its RTP timestamps divided by as much
//! from the keyframe on ([`Start::timestamp_of`]). So the viewer sees a short fast-forward to
//! the live point: frames arrive when their timestamps say they are due, and its jitter buffer
//! does not keep the GOP's age as extra delay. Once it has caught up, the viewer joins the
//! stream's live fan-out with its video timestamps offset by what the fast-forward saved
//! (`ViewerTrack::ts_offset`). Sequence numbers stay the stream's. Audio is forwarded live
//! throughout; sender reports map each track to the time it was sent, so lip-sync holds.
//!
//! Memory is bounded by `gop_cache_bytes` per stream (`GLINT_GOP_CACHE_KIB`, default 4 MiB):
//! a GOP that outgrows it is dropped and the publisher asked for a keyframe (a WebRTC encoder
//! sends few keyframes unasked), and viewers joining meanwhile wait for a keyframe as before.
//! While viewers catch up, a new keyframe does not drop the older packets they still read, up
//! to twice the bound; past it they are moved to the live fan-out at once.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::rtp;

use super::fanout::ViewerOut;
use super::Transmit;
use crate::codec::MediaKind;

/// How much faster than real time a joining viewer is sent the GOP after its keyframe: a viewer
/// joining 2 s after a keyframe is live ~0.7 s later, at 4× the stream's bitrate meanwhile.
pub(crate) const SPEEDUP: u32 = 4;
/// How long a viewer's start keeps its timestamps for NACKs' answers (receivers stop asking
/// for a packet within a second or two).
const START_KEPT: Duration = Duration::from_secs(10);
/// What a kept packet costs beyond its payload (the `rtp::Packet` and its header).
const PACKET_OVERHEAD: usize = 128;
/// The video clock (ticks per millisecond): every video codec we forward runs at 90 kHz.
const TICKS_PER_MS: u64 = 90;

pub(crate) struct Gop {
    max_bytes: usize,
    /// Video in forwarding order, from a keyframe's first packet on.
    packets: Vec<rtp::Packet>,
    bytes: usize,
    /// Index of the newest keyframe's first packet; `None`: there is no whole GOP.
    newest_key: Option<usize>,
}

/// What [`Gop::push`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    Kept,
    /// Not kept: there is no GOP to keep it in, or it is off.
    Skipped,
    /// The GOP outgrew its bound and was dropped (readers' cursors are void).
    Overflowed,
}

impl Gop {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            packets: Vec::new(),
            bytes: 0,
            newest_key: None,
        }
    }

    /// A video packet as forwarded (viewers' numbering). `keyframe`: it belongs to a keyframe.
    /// `readers`: viewers are catching up from the packets kept now, which must stay.
    pub fn push(&mut self, packet: &rtp::Packet, keyframe: bool, readers: bool) -> Pushed {
        if self.max_bytes == 0 {
            return Pushed::Skipped;
        }
        let ts = packet.header.timestamp;
        let new_key = keyframe
            && self
                .newest_key
                .is_none_or(|i| self.packets[i].header.timestamp != ts);
        if new_key {
            if !readers {
                self.clear();
            }
            self.newest_key = Some(self.packets.len());
        }
        if self.newest_key.is_none() {
            return Pushed::Skipped;
        }
        let cost = packet.payload.len() + PACKET_OVERHEAD;
        let limit = if readers {
            self.max_bytes * 2
        } else {
            self.max_bytes
        };
        if self.bytes + cost > limit {
            tracing::debug!(
                bytes = self.bytes,
                packets = self.packets.len(),
                "GOP too large to keep"
            );
            self.clear();
            return Pushed::Overflowed;
        }
        self.bytes += cost;
        self.packets.push(packet.clone());
        Pushed::Kept
    }

    /// The kept packet with sequence number `seq` (a NACK of a joining viewer may reach back
    /// further than the stream's history).
    pub fn get(&self, seq: u16) -> Option<&rtp::Packet> {
        let first = self.packets.first()?.header.sequence_number;
        // Forwarding order is sequence order but for the odd reordered packet.
        let guess = usize::from(seq.wrapping_sub(first));
        match self.packets.get(guess) {
            Some(p) if p.header.sequence_number == seq => Some(p),
            _ => self
                .packets
                .iter()
                .find(|p| p.header.sequence_number == seq),
        }
    }

    /// No viewer reads the packets before the newest keyframe any more: drop them.
    pub fn trim(&mut self) {
        if let Some(k) = self.newest_key.filter(|k| *k > 0) {
            self.bytes -= self.packets[..k]
                .iter()
                .map(|p| p.payload.len() + PACKET_OVERHEAD)
                .sum::<usize>();
            self.packets.drain(..k);
            self.newest_key = Some(0);
        }
    }

    /// Forget it (a new publisher, a stream off the air, a GOP too long to keep).
    pub fn clear(&mut self) {
        self.packets.clear();
        self.bytes = 0;
        self.newest_key = None;
    }

    /// Bytes kept now.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Start a viewer whose connection just came up from the newest keyframe: what is due at
    /// once is sent now. False when there is no GOP to start from.
    pub fn start(
        &self,
        now: Instant,
        out: &mut ViewerOut,
        transmits: &mut VecDeque<Transmit>,
    ) -> bool {
        let Some(k) = self.newest_key else {
            return false;
        };
        let key = &self.packets[k].header;
        out.start = Some(Start {
            next: k,
            began: now,
            first_seq: key.sequence_number,
            last_seq: key.sequence_number.wrapping_sub(1),
            first_ts: key.timestamp,
            done: false,
        });
        self.catch_up(now, out, transmits);
        true
    }

    /// Send a joining viewer the packets due by `now`. True once it has caught up: then its
    /// video timestamps carry on from the fast-forward's (`ts_offset`), and it is live.
    pub fn catch_up(
        &self,
        now: Instant,
        out: &mut ViewerOut,
        transmits: &mut VecDeque<Transmit>,
    ) -> bool {
        let Some(mut start) = out.start.take() else {
            return true;
        };
        let due = start.content_due(now);
        while let Some(p) = self.packets.get(start.next) {
            // A frame's packets share its timestamp: they go together.
            let content = p.header.timestamp.wrapping_sub(start.first_ts);
            if u64::from(content) > due {
                break;
            }
            let ts = start.timestamp_of(p.header.timestamp);
            out.send_with(now, p, MediaKind::Video, Some(ts), transmits);
            start.last_seq = p.header.sequence_number;
            start.next += 1;
        }
        let caught_up = start.next >= self.packets.len();
        if caught_up {
            start.done = true;
            if let Some(last) = self.packets.last() {
                let offset = start
                    .timestamp_of(last.header.timestamp)
                    .wrapping_sub(last.header.timestamp);
                if let Some(t) = out.tracks.iter_mut().find(|t| t.kind == MediaKind::Video) {
                    t.ts_offset = offset;
                }
            }
        }
        out.start = Some(start);
        caught_up
    }

    /// When a joining viewer's next packet is due.
    pub fn next_due(&self, out: &ViewerOut) -> Option<Instant> {
        let start = out.start.as_ref().filter(|s| !s.done)?;
        let p = self.packets.get(start.next)?;
        let content = u64::from(p.header.timestamp.wrapping_sub(start.first_ts));
        let real_ms = content.div_ceil(TICKS_PER_MS * u64::from(SPEEDUP));
        Some(start.began + Duration::from_millis(real_ms))
    }
}

/// A viewer started from its stream's GOP: how far it has read, and the timestamps it was
/// sent (which NACKs' answers must carry again).
#[derive(Debug)]
pub(crate) struct Start {
    /// Index in the GOP of the next packet to send (while catching up).
    next: usize,
    began: Instant,
    /// The keyframe it started from: its sequence number and RTP timestamp.
    first_seq: u16,
    first_ts: u32,
    /// The last packet sent from the GOP.
    last_seq: u16,
    /// Caught up: live since.
    done: bool,
}

impl Start {
    /// Content time (video ticks past the keyframe) due to have been sent by `now`.
    fn content_due(&self, now: Instant) -> u64 {
        let ms = now.saturating_duration_since(self.began).as_millis() as u64;
        ms * TICKS_PER_MS * u64::from(SPEEDUP)
    }

    /// The timestamp a GOP packet of original timestamp `ts` is sent with: the keyframe's,
    /// plus the time since it divided by [`SPEEDUP`].
    fn timestamp_of(&self, ts: u32) -> u32 {
        self.first_ts
            .wrapping_add(ts.wrapping_sub(self.first_ts) / SPEEDUP)
    }

    /// The timestamp `packet` (as forwarded) was sent with, if it was sent from the GOP.
    pub fn timestamp(&self, packet: &rtp::Packet) -> Option<u32> {
        let seq = packet.header.sequence_number;
        let span = self.last_seq.wrapping_sub(self.first_seq);
        if seq.wrapping_sub(self.first_seq) > span || span == u16::MAX {
            return None;
        }
        Some(self.timestamp_of(packet.header.timestamp))
    }

    pub fn done(&self) -> bool {
        self.done
    }

    /// Live long enough that no NACK can ask for a packet of the start any more: the mapping
    /// can go (kept, it would misdate a live packet once sequence numbers wrap, 65,536 on).
    pub fn expired(&self, now: Instant) -> bool {
        self.done && now.saturating_duration_since(self.began) > START_KEPT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// A packet of 100 payload bytes.
    fn packet(seq: u16, ts: u32) -> rtp::Packet {
        crate::sfu::fanout::tests::packet(seq, ts, 100)
    }

    #[test]
    fn keeps_from_the_last_keyframe_on() {
        let mut g = Gop::new(1 << 20);
        assert_eq!(g.push(&packet(1, 0), false, false), Pushed::Skipped);
        g.push(&packet(2, 3000), true, false);
        g.push(&packet(3, 3000), true, false); // the same keyframe's next packet
        g.push(&packet(4, 6000), false, false);
        assert_eq!((g.packets.len(), g.newest_key), (3, Some(0)));
        g.push(&packet(5, 9000), true, false);
        assert_eq!(g.packets[0].header.sequence_number, 5);
        assert_eq!(g.packets.len(), 1);
    }

    #[test]
    fn finds_a_packet_by_sequence_number() {
        let mut g = Gop::new(1 << 20);
        for (seq, ts) in [(65534u16, 0), (65535, 0), (1, 3000), (0, 3000), (2, 6000)] {
            g.push(&packet(seq, ts), ts == 0, false);
        }
        for seq in [65534u16, 65535, 0, 1, 2] {
            assert_eq!(g.get(seq).unwrap().header.sequence_number, seq);
        }
        assert!(g.get(3).is_none());
    }

    #[test]
    fn readers_keep_the_older_gop_until_trimmed() {
        let mut g = Gop::new(1 << 20);
        g.push(&packet(1, 0), true, false);
        g.push(&packet(2, 3000), false, true);
        g.push(&packet(3, 6000), true, true);
        assert_eq!((g.packets.len(), g.newest_key), (3, Some(2)));
        g.trim();
        assert_eq!((g.packets.len(), g.newest_key), (1, Some(0)));
        assert_eq!(g.bytes(), 100 + PACKET_OVERHEAD);
    }

    #[test]
    fn a_gop_over_the_limit_is_dropped_until_the_next_keyframe() {
        let mut g = Gop::new(3 * (100 + PACKET_OVERHEAD));
        g.push(&packet(1, 0), true, false);
        g.push(&packet(2, 3000), false, false);
        g.push(&packet(3, 6000), false, false);
        assert_eq!(g.packets.len(), 3);
        assert_eq!(g.push(&packet(4, 9000), false, false), Pushed::Overflowed);
        assert!(g.newest_key.is_none() && g.packets.is_empty() && g.bytes() == 0);
        assert_eq!(g.push(&packet(5, 12000), false, false), Pushed::Skipped);
        g.push(&packet(6, 15000), true, false);
        assert_eq!(g.packets.len(), 1);
    }

    #[test]
    fn start_timestamps_run_speedup_times_slower_from_the_keyframe() {
        let s = Start {
            next: 0,
            began: Instant::now(),
            first_seq: 10,
            first_ts: 1000,
            last_seq: 14,
            done: false,
        };
        let ts = |seq, ts| s.timestamp(&packet(seq, ts));
        assert_eq!(ts(10, 1000), Some(1000));
        assert_eq!(ts(12, 1000 + 12_000), Some(1000 + 12_000 / SPEEDUP));
        assert_eq!(ts(15, 1000 + 15_000), None, "not sent from the GOP");
        assert_eq!(ts(9, 0), None);
        let due = s.content_due(s.began + Duration::from_millis(100));
        assert_eq!(due, 100 * 90 * u64::from(SPEEDUP));
    }

    /// The bound the docs state: a 6 Mbit/s stream with a 4 s GOP (1,150-byte packets, 30 fps)
    /// fits the default 4 MiB.
    #[test]
    fn a_6_mbit_4_s_gop_fits_the_default_bound() {
        let default = crate::MediaConfig::default().gop_cache_bytes;
        let mut g = Gop::new(default);
        let payload = Bytes::from(vec![0u8; 1150]);
        let packets = 6_000_000 / 8 * 4 / 1150; // 2,608
        for i in 0..packets {
            let frame = (i * 120 / packets) as u32; // 120 frames in 4 s
            let mut p = packet(i as u16, frame * 3000);
            p.payload = payload.clone();
            assert_eq!(g.push(&p, i == 0, false), Pushed::Kept, "packet {i}");
        }
        assert!(g.bytes() <= default, "{} bytes", g.bytes());
        assert_eq!(g.bytes(), packets * (1150 + PACKET_OVERHEAD)); // 3.33 MB
    }

    #[test]
    fn off_keeps_nothing() {
        let mut g = Gop::new(0);
        assert_eq!(g.push(&packet(1, 0), true, false), Pushed::Skipped);
        assert!(g.packets.is_empty());
    }
}
