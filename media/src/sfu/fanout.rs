//! What a forwarded packet costs per viewer, kept out of webrtc-rs's per-connection pipeline.
//!
//! Writing each packet through a viewer's `RTCRtpSender` moves it through seven handlers and
//! three interceptors of that connection (~5 µs a packet, most of it moving the message between
//! queues). Here a viewer's RTP is sealed with its own SRTP context, made from the keys its DTLS
//! handshake produced (`RTCPeerConnection::local_srtp_keys`, see vendor/README.md), and queued
//! for the socket directly. What the interceptors did for those packets is done here too:
//! - [`History`]: one retransmission buffer per stream (viewers share the stream's numbering),
//!   instead of one packet cache per viewer; a viewer's NACK is answered from it.
//! - [`Sent`]: per viewer track, the counters and RTP-time anchor of RFC 3550 sender reports,
//!   which still go out through the connection (SRTCP is rare and keeps webrtc-rs's context).
//!
//! - [`ViewerOut`]: all of that for one connected viewer; a stream keeps its viewers' outputs in
//!   one `Vec`, so that a batch can be sealed for them on several cores at once ([`Pool`]).
//!
//! Nothing here allocates per packet but the datagram itself.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use rayon::prelude::*;
use rtc::peer_connection::LocalSrtpKeys;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp;
use rtc::shared::marshal::{Marshal, MarshalSize};
use rtc::srtp::context::Context;

use super::gop::Start;
use super::peer::ViewerTrack;
use super::{SessionId, Transmit};
use crate::codec::MediaKind;
use crate::error::{MediaError, Result};

/// What one connected viewer is sent, and how.
pub(crate) struct ViewerOut {
    pub id: SessionId,
    /// The selected candidate pair's remote address.
    pub remote: SocketAddr,
    srtp: SrtpOut,
    pub tracks: Vec<ViewerTrack>,
    /// When sender reports are next due.
    pub next_report: Instant,
    /// Started from the stream's GOP: what of it was sent, and with which timestamps.
    pub start: Option<Start>,
}

impl ViewerOut {
    pub fn new(
        now: Instant,
        id: SessionId,
        remote: SocketAddr,
        keys: &LocalSrtpKeys,
        tracks: Vec<ViewerTrack>,
    ) -> Result<Self> {
        Ok(Self {
            id,
            remote,
            srtp: SrtpOut::new(keys)?,
            tracks,
            next_report: now + SENDER_REPORT_INTERVAL,
            start: None,
        })
    }

    /// The SSRC this viewer is sent `kind` on.
    pub fn ssrc(&self, kind: MediaKind) -> Option<u32> {
        self.tracks.iter().find(|t| t.kind == kind).map(|t| t.ssrc)
    }

    /// Seal `packets` (of `kinds`) for this viewer into `out`, in order. Returns the packets
    /// and payload bytes sent.
    pub fn seal_batch(
        &mut self,
        now: Instant,
        packets: &[rtp::Packet],
        kinds: &[MediaKind],
        out: &mut impl Extend<Transmit>,
    ) -> (u64, u64) {
        let (mut n, mut bytes) = (0, 0);
        for (packet, kind) in packets.iter().zip(kinds) {
            if self.send(now, packet, *kind, out) {
                n += 1;
                bytes += packet.payload.len() as u64;
            }
        }
        (n, bytes)
    }

    /// Seal one packet (a forwarded one) for this viewer into `out`.
    pub fn send(
        &mut self,
        now: Instant,
        packet: &rtp::Packet,
        kind: MediaKind,
        out: &mut impl Extend<Transmit>,
    ) -> bool {
        self.send_with(now, packet, kind, None, out)
    }

    /// A video packet again (a NACK's answer), with the timestamp it was first sent with.
    pub fn resend(
        &mut self,
        now: Instant,
        packet: &rtp::Packet,
        out: &mut impl Extend<Transmit>,
    ) -> bool {
        let ts = self.start.as_ref().and_then(|s| s.timestamp(packet));
        self.send_with(now, packet, MediaKind::Video, ts, out)
    }

    /// Seal `packet` with this viewer's SSRC, payload type and keys, and RTP timestamp
    /// `timestamp` (a joining viewer's start, see `gop`), else the packet's own moved by the
    /// track's offset.
    pub fn send_with(
        &mut self,
        now: Instant,
        packet: &rtp::Packet,
        kind: MediaKind,
        timestamp: Option<u32>,
        out: &mut impl Extend<Transmit>,
    ) -> bool {
        let Some(track) = self.tracks.iter_mut().find(|t| t.kind == kind) else {
            return false;
        };
        let mut header = packet.header.clone();
        header.timestamp =
            timestamp.unwrap_or_else(|| header.timestamp.wrapping_add(track.ts_offset));
        header.ssrc = track.ssrc;
        header.payload_type = track.payload_type;
        let Some(data) = self.srtp.seal(&header, &packet.payload) else {
            return false;
        };
        track.sent.record(now, &header, packet.payload.len());
        out.extend(std::iter::once(Transmit {
            to: self.remote,
            data,
        }));
        true
    }
}

/// Threads that seal a batch for a large audience in parallel (a rayon pool the runtime makes
/// and lends to the SFU, which only computes on it). The runtime also sends large flushes from it.
pub struct Pool {
    pool: rayon::ThreadPool,
    threads: usize,
    /// Fewer viewers than this: seal on the calling thread (a fork-join costs microseconds).
    min_viewers: usize,
}

impl Pool {
    /// `None` for fewer than two threads.
    pub fn new(threads: usize, min_viewers: usize) -> Option<Self> {
        if threads < 2 {
            return None;
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("glint-fanout-{i}"))
            .build()
            .ok()?;
        Some(Self {
            pool,
            threads,
            min_viewers: min_viewers.max(1),
        })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Run `f` on the pool (the caller waits).
    pub(crate) fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    /// Seal `packets` for every viewer in `outs`, in parallel when there are enough of them;
    /// each viewer's datagrams stay together and in order. Returns packets and bytes sent.
    pub(crate) fn seal(
        pool: Option<&Self>,
        now: Instant,
        outs: &mut [ViewerOut],
        packets: &[rtp::Packet],
        kinds: &[MediaKind],
        out: &mut std::collections::VecDeque<Transmit>,
    ) -> (u64, u64) {
        let Some(pool) = pool.filter(|p| outs.len() >= p.min_viewers) else {
            let (mut n, mut bytes) = (0, 0);
            for o in outs.iter_mut() {
                let (a, b) = o.seal_batch(now, packets, kinds, out);
                n += a;
                bytes += b;
            }
            return (n, bytes);
        };
        let chunk = outs.len().div_ceil(pool.threads);
        let parts: Vec<(Vec<Transmit>, u64, u64)> = pool.pool.install(|| {
            outs.par_chunks_mut(chunk)
                .map(|viewers| {
                    let mut v = Vec::with_capacity(viewers.len() * packets.len());
                    let (mut n, mut bytes) = (0, 0);
                    for o in viewers {
                        let (a, b) = o.seal_batch(now, packets, kinds, &mut v);
                        n += a;
                        bytes += b;
                    }
                    (v, n, bytes)
                })
                .collect()
        });
        let (mut n, mut bytes) = (0, 0);
        for (v, a, b) in parts {
            out.extend(v);
            n += a;
            bytes += b;
        }
        (n, bytes)
    }
}

/// Packets of a stream's video kept for retransmission: ~1.5 s at 2.5 Mbit/s, well over a NACK
/// round trip.
pub(crate) const HISTORY_PACKETS: usize = 512;
/// Retransmissions one NACK may ask for (a NACK pair names up to 17; a compound packet many).
pub(crate) const MAX_RETRANSMITS_PER_NACK: usize = 64;
/// How often each viewer track gets a sender report.
pub(crate) const SENDER_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// A viewer's outgoing SRTP: its context and a reused plaintext buffer.
pub(crate) struct SrtpOut {
    context: Context,
    plaintext: Vec<u8>,
}

impl SrtpOut {
    pub fn new(keys: &LocalSrtpKeys) -> Result<Self> {
        let provider = rtc::crypto::default_provider().map_err(MediaError::Crypto)?;
        let context = Context::new(
            &keys.master_key,
            &keys.master_salt,
            keys.profile,
            None,
            None,
            provider.crypto(),
        )
        .map_err(MediaError::Srtp)?;
        Ok(Self {
            context,
            plaintext: Vec::with_capacity(1500),
        })
    }

    /// `header` + `payload` as one SRTP datagram. A header with the padding bit gets padding
    /// again (parsing stripped it from the payload): to a multiple of 4 bytes, at least 1, as
    /// `rtp::Packet::marshal` does; padding-only probes stay padding.
    pub fn seal(&mut self, header: &rtp::Header, payload: &[u8]) -> Option<BytesMut> {
        let header_len = header.marshal_size();
        self.plaintext.clear();
        self.plaintext.resize(header_len, 0);
        header.marshal_to(&mut self.plaintext).ok()?;
        self.plaintext.extend_from_slice(payload);
        if header.padding {
            let pad = match payload.len() % 4 {
                0 => 4,
                r => 4 - r,
            };
            self.plaintext.extend(std::iter::repeat_n(0, pad - 1));
            self.plaintext.push(pad as u8);
        }
        self.context
            .encrypt_rtp_with_header(&self.plaintext, header)
            .ok()
    }
}

/// The last [`HISTORY_PACKETS`] video packets of a stream as viewers were sent them (viewers'
/// numbering, no header extensions), by sequence number.
pub(crate) struct History {
    slots: Vec<Option<rtp::Packet>>,
}

impl Default for History {
    fn default() -> Self {
        Self {
            slots: vec![None; HISTORY_PACKETS],
        }
    }
}

impl History {
    pub fn push(&mut self, packet: &rtp::Packet) {
        let i = usize::from(packet.header.sequence_number) % HISTORY_PACKETS;
        self.slots[i] = Some(packet.clone());
    }

    pub fn get(&self, seq: u16) -> Option<&rtp::Packet> {
        self.slots[usize::from(seq) % HISTORY_PACKETS]
            .as_ref()
            .filter(|p| p.header.sequence_number == seq)
    }

    /// A new publisher: its packets' numbering may reuse sequence numbers.
    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = None);
    }
}

/// What a viewer track has been sent: RFC 3550 §6.4.1 sender-report fields.
#[derive(Debug, Default, Clone)]
pub(crate) struct Sent {
    pub packets: u32,
    pub octets: u32,
    /// The newest RTP timestamp sent, and when.
    last: Option<(u32, Instant)>,
}

impl Sent {
    pub fn record(&mut self, now: Instant, header: &rtp::Header, payload_len: usize) {
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(payload_len as u32);
        let newer = self
            .last
            .is_none_or(|(ts, _)| (header.timestamp.wrapping_sub(ts) as i32) > 0);
        if newer {
            self.last = Some((header.timestamp, now));
        }
    }

    /// A sender report at `now`, once anything was sent. The RTP time is the source's at `now`
    /// when `timeline` gives it (an RTP timestamp of this track, in the viewer's numbering, and
    /// the instant it was the source's time: see `peer::SourceTime`); else the newest packet's,
    /// advanced by the time since it was sent. Either way it advances at `clock_rate`.
    pub fn report(
        &self,
        now: Instant,
        clock: &WallClock,
        ssrc: u32,
        clock_rate: u32,
        timeline: Option<(u32, Instant)>,
    ) -> Option<SenderReport> {
        let last = self.last?;
        let (ts, at) = timeline.unwrap_or(last);
        // Signed, and wrapping like RTP time: a timeline's instant may be hours old.
        let nanos = match now.checked_duration_since(at) {
            Some(d) => d.as_nanos() as i128,
            None => -((at - now).as_nanos() as i128),
        };
        let ticks = nanos * i128::from(clock_rate) / 1_000_000_000;
        Some(SenderReport {
            ssrc,
            ntp_time: clock.ntp(now),
            rtp_time: ts.wrapping_add(ticks as u32),
            packet_count: self.packets,
            octet_count: self.octets,
            ..Default::default()
        })
    }
}

/// Wall-clock time for `Instant`s: read once, when the SFU is made, so the core itself never
/// reads a clock (sender reports carry NTP time, RFC 3550 §4).
#[derive(Debug, Clone, Copy)]
pub(crate) struct WallClock {
    at: Instant,
    unix: Duration,
}

impl WallClock {
    pub fn new(at: Instant, wall: SystemTime) -> Self {
        Self {
            at,
            unix: wall.duration_since(UNIX_EPOCH).unwrap_or_default(),
        }
    }

    /// 64-bit NTP time (seconds since 1900 in the high 32 bits, fraction in the low).
    pub fn ntp(&self, now: Instant) -> u64 {
        const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
        let t = if now >= self.at {
            self.unix + (now - self.at)
        } else {
            self.unix.saturating_sub(self.at - now)
        };
        let secs = t.as_secs() + NTP_UNIX_OFFSET;
        let frac = (u64::from(t.subsec_nanos()) << 32) / 1_000_000_000;
        (secs << 32) | frac
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use bytes::Bytes;
    use rtc::shared::marshal::Unmarshal;
    use rtc::srtp::protection_profile::ProtectionProfile;

    /// A VP8-typed packet of `len` payload bytes (also the GOP's tests' packet).
    pub(in crate::sfu) fn packet(seq: u16, ts: u32, len: usize) -> rtp::Packet {
        rtp::Packet {
            header: rtp::Header {
                version: 2,
                payload_type: 96,
                sequence_number: seq,
                timestamp: ts,
                ssrc: 0x1234_5678,
                ..Default::default()
            },
            payload: Bytes::from(vec![seq as u8; len]),
        }
    }

    /// Our sealing side and a receiving context with the same keys.
    fn sealer_and_opener(profile: ProtectionProfile) -> (SrtpOut, Context) {
        let keys = LocalSrtpKeys {
            profile,
            master_key: (0..profile.key_len() as u8).collect(),
            master_salt: (100..100 + profile.salt_len() as u8).collect(),
        };
        let provider = rtc::crypto::default_provider().unwrap();
        let opener = Context::new(
            &keys.master_key,
            &keys.master_salt,
            profile,
            None,
            None,
            provider.crypto(),
        )
        .unwrap();
        (SrtpOut::new(&keys).unwrap(), opener)
    }

    /// What we seal, webrtc-rs's own receiving context opens: same keys, every profile a
    /// browser or str0m may pick.
    #[test]
    fn sealed_packets_open_with_the_same_keys() {
        for profile in [
            ProtectionProfile::AeadAes128Gcm,
            ProtectionProfile::AeadAes256Gcm,
            ProtectionProfile::Aes128CmHmacSha1_80,
        ] {
            let (mut out, mut remote) = sealer_and_opener(profile);
            // Across the 16-bit sequence wrap: the rollover counter must agree.
            for (i, seq) in (65_530u16..=65_535).chain(0..6).enumerate() {
                let p = packet(seq, 1000 + i as u32 * 3000, 900 + i);
                let sealed = out.seal(&p.header, &p.payload).unwrap();
                assert_ne!(&sealed[12..12 + p.payload.len()], &p.payload[..]);
                let opened = remote.decrypt_rtp(&sealed).unwrap();
                let back = rtp::Packet::unmarshal(&mut &opened[..]).unwrap();
                assert_eq!(back.header.sequence_number, seq, "{profile:?}");
                assert_eq!(back.payload, p.payload, "{profile:?}");
            }
        }
    }

    /// A padded packet (or a padding-only probe) leaves padded, and opens to what came in.
    #[test]
    fn padding_is_put_back() {
        let (mut out, mut remote) = sealer_and_opener(ProtectionProfile::AeadAes128Gcm);
        for len in [0usize, 5, 8] {
            let mut p = packet(100 + len as u16, 0, len);
            p.header.padding = true;
            let sealed = out.seal(&p.header, &p.payload).unwrap();
            let opened = remote.decrypt_rtp(&sealed).unwrap();
            assert_eq!((opened.len() - 12) % 4, 0, "padded to a multiple of 4");
            let back = rtp::Packet::unmarshal(&mut &opened[..]).unwrap();
            assert!(back.header.padding);
            assert_eq!(back.payload, p.payload, "len {len}");
        }
    }

    #[test]
    fn history_answers_only_the_sequence_number_it_holds() {
        let mut h = History::default();
        for seq in 0..600u16 {
            h.push(&packet(seq, 0, 10));
        }
        assert!(h.get(10).is_none(), "overwritten by 522");
        assert_eq!(h.get(522).unwrap().header.sequence_number, 522);
        assert_eq!(h.get(599).unwrap().payload[0], (599u16 as u8));
        assert!(h.get(600).is_none());
        h.clear();
        assert!(h.get(599).is_none());
    }

    #[test]
    fn sender_report_extrapolates_the_newest_timestamp() {
        let t0 = Instant::now();
        let clock = WallClock::new(t0, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let mut s = Sent::default();
        assert!(
            s.report(t0, &clock, 1, 90_000, None).is_none(),
            "nothing sent yet"
        );
        s.record(t0, &packet(1, 90_000, 100).header, 100);
        s.record(t0, &packet(2, 45_000, 50).header, 50); // older (reordered): not the anchor
        let sr = s
            .report(t0 + Duration::from_millis(500), &clock, 7, 90_000, None)
            .unwrap();
        assert_eq!(sr.ssrc, 7);
        assert_eq!(sr.packet_count, 2);
        assert_eq!(sr.octet_count, 150);
        assert_eq!(sr.rtp_time, 90_000 + 45_000);
        let secs = sr.ntp_time >> 32;
        assert_eq!(secs, 1_700_000_000 + 2_208_988_800);
        let frac = (sr.ntp_time & 0xffff_ffff) as f64 / 4_294_967_296.0;
        assert!((frac - 0.5).abs() < 1e-6, "{frac}");
    }

    #[test]
    fn sender_report_on_a_source_timeline_ignores_when_packets_were_sent() {
        let t0 = Instant::now();
        let clock = WallClock::new(t0, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let mut s = Sent::default();
        let later = t0 + Duration::from_secs(20 * 3600);
        assert!(
            s.report(later, &clock, 1, 90_000, Some((0, t0))).is_none(),
            "nothing sent yet"
        );
        // A packet of source time 10 s sent 40 ms late: the report still says 20 h of source
        // time at `later` (wrapping, as RTP time does), whatever the packet's delay.
        s.record(
            t0 + Duration::from_millis(10_040),
            &packet(1, 900_000, 10).header,
            10,
        );
        let sr = s.report(later, &clock, 1, 90_000, Some((0, t0))).unwrap();
        assert_eq!(sr.rtp_time, (20 * 3600 * 90_000u64) as u32);
        // An instant after `now` (a timeline anchored ahead): RTP time before the anchor's.
        let sr = s
            .report(
                t0,
                &clock,
                1,
                48_000,
                Some((100, t0 + Duration::from_millis(10))),
            )
            .unwrap();
        assert_eq!(sr.rtp_time, 100u32.wrapping_sub(480));
    }
}
