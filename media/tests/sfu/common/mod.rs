//! A virtual-clock harness in the spirit of str0m's `tests/common.rs`: the [`Sfu`] and str0m
//! peers exchange datagrams in memory, on one simulated clock that jumps to the next deadline,
//! so a test of ICE, DTLS and timeouts runs in milliseconds of real time. `NET_TRACE=1` prints
//! every datagram delivered or dropped.
//!
//! The network is perfect unless a test impairs it, per peer and per direction ([`Leg`]):
//! random loss, extra delay, jitter, reordering and duplication ([`Impairment`], drawn from one
//! seeded generator, so a run is repeatable), and exact drops ("the next 3 video packets to this
//! viewer", [`Net::drop_next`]). What was dropped is kept in [`Net::dropped`]. [`Source`] and
//! [`Publisher`] make a str0m publisher send VP8 and Opus on the clock and answer keyframe
//! requests.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use media::metrics::Metrics;
use media::sfu::{SessionAnswer, SessionId, Sfu, StreamEvent};
use media::{MediaConfig, MediaError};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpPacket, RtpWrite, SeqNo, Ssrc};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// The server's address on the simulated network.
pub const SERVER: &str = "10.0.0.1:8189";

/// One datagram in flight.
struct Datagram {
    at: Instant,
    /// Sending order, which orders datagrams due at the same time.
    n: u64,
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

/// Which way a datagram goes, seen from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    /// Peer → SFU.
    Up,
    /// SFU → peer.
    Down,
}

/// What one leg of the network does to the datagrams on it. The default is a perfect link.
#[derive(Debug, Clone, Default)]
pub struct Impairment {
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Added to [`Net::delay`].
    pub delay: Duration,
    /// A further delay drawn uniformly from `0..=jitter` (which reorders datagrams sent closer
    /// together than it).
    pub jitter: Duration,
    /// Probability that a datagram is held back by `reorder_by`, letting later ones overtake.
    pub reorder: f64,
    pub reorder_by: Duration,
    /// Probability that a datagram arrives twice.
    pub duplicate: f64,
}

/// A datagram as the network sees it (RFC 7983 demultiplexing; SRTP and SRTCP headers are in
/// the clear).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    Stun,
    Dtls,
    Rtp {
        pt: u8,
        seq: u16,
        ssrc: u32,
    },
    /// The packet type of the first RTCP packet (a compound's first is an SR or RR).
    Rtcp {
        pt: u8,
    },
    Other,
}

impl What {
    pub fn of(data: &[u8]) -> Self {
        match data {
            [0..=3, ..] => Self::Stun,
            [20..=63, ..] => Self::Dtls,
            [128..=191, pt @ 192..=223, ..] => Self::Rtcp { pt: *pt },
            [128..=191, m_pt, s0, s1, _, _, _, _, c0, c1, c2, c3, ..] => Self::Rtp {
                pt: m_pt & 0x7f,
                seq: u16::from_be_bytes([*s0, *s1]),
                ssrc: u32::from_be_bytes([*c0, *c1, *c2, *c3]),
            },
            _ => Self::Other,
        }
    }

    /// An RTP packet of payload type `pt`.
    pub fn is_rtp(&self, want: u8) -> bool {
        matches!(self, Self::Rtp { pt, .. } if *pt == want)
    }
}

/// A datagram the network dropped.
#[derive(Debug, Clone)]
pub struct Lost {
    /// Simulated time since the start.
    pub at: Duration,
    pub peer: usize,
    pub leg: Leg,
    pub what: What,
}

/// "Drop the next `left` datagrams that match" on one peer's leg.
struct DropRule {
    peer: usize,
    leg: Leg,
    left: usize,
    matches: Box<dyn FnMut(&What) -> bool>,
}

/// xorshift64*: a few lines, seeded, enough to draw losses from.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`; draws nothing when `p` is 0, so a perfect link leaves the
    /// sequence of draws (and so other links' outcomes) alone.
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

/// A str0m peer of the simulation.
pub struct Peer {
    pub rtc: Rtc,
    pub addr: SocketAddr,
    pub events: Vec<Event>,
    /// When each of `events` came out (same length).
    pub event_at: Vec<Instant>,
    /// The video and audio m-lines of its offer.
    pub video: Option<Mid>,
    pub audio: Option<Mid>,
    /// The session the SFU answered its offer with.
    pub session: Option<SessionId>,
    /// Off the network: nothing it sends arrives, nothing reaches it (a closed laptop lid).
    pub cut: bool,
    timeout: Option<Instant>,
}

impl Peer {
    pub fn connected(&self) -> bool {
        self.events.iter().any(|e| matches!(e, Event::Connected))
    }

    /// When its connection came up (ICE and DTLS).
    pub fn connected_at(&self) -> Option<Instant> {
        self.timed_events()
            .find(|(_, e)| matches!(e, Event::Connected))
            .map(|(at, _)| at)
    }

    /// Events with the time each came out.
    pub fn timed_events(&self) -> impl Iterator<Item = (Instant, &Event)> {
        self.event_at.iter().copied().zip(&self.events)
    }

    /// Keyframe requests (PLI or FIR) it received, with their times.
    pub fn keyframe_requests(&self) -> Vec<Instant> {
        self.timed_events()
            .filter(|(_, e)| matches!(e, Event::KeyframeRequest(_)))
            .map(|(at, _)| at)
            .collect()
    }

    /// The payload type the answer gave its video (a viewer's: what the SFU sends it).
    pub fn video_pt(&self) -> Pt {
        self.first_pt(self.video.expect("video m-line"))
    }

    pub fn audio_pt(&self) -> Pt {
        self.first_pt(self.audio.expect("audio m-line"))
    }

    fn first_pt(&self, mid: Mid) -> Pt {
        self.rtc.media(mid).expect("m-line").remote_pts()[0]
    }

    /// RTP packets it received of payload type `pt`, in arrival order.
    pub fn rtp(&self, pt: Pt) -> impl Iterator<Item = &RtpPacket> {
        self.events.iter().filter_map(move |e| match e {
            Event::RtpPacket(p) if p.header.payload_type == pt => Some(p),
            _ => None,
        })
    }
}

/// The SFU and its peers on one clock.
pub struct Net {
    pub now: Instant,
    pub sfu: Sfu,
    pub metrics: Arc<Metrics>,
    pub peers: Vec<Peer>,
    pub events: Vec<StreamEvent>,
    /// One-way delay of every datagram (each leg's [`Impairment`] adds to it).
    pub delay: Duration,
    /// Peers added from now on report every RTP and RTCP packet they send and receive
    /// (`Event::RawPacket`: costly, for the tests that read RTCP).
    pub raw_packets: bool,
    /// Everything the network dropped (loss, [`Net::drop_next`]; not cut peers).
    pub dropped: Vec<Lost>,
    links: HashMap<(usize, Leg), Impairment>,
    rules: Vec<DropRule>,
    rng: Rng,
    sent: u64,
    in_flight: VecDeque<Datagram>,
    server: SocketAddr,
    pub start: Instant,
}

impl Net {
    pub fn new(config: MediaConfig) -> Self {
        let server: SocketAddr = SERVER.parse().unwrap();
        let metrics = Arc::new(Metrics::default());
        let sfu = Sfu::new(&config, server, vec![server], metrics.clone(), None).expect("sfu");
        let now = Instant::now();
        Self {
            start: now,
            now,
            sfu,
            metrics,
            peers: Vec::new(),
            events: Vec::new(),
            delay: Duration::from_millis(5),
            raw_packets: false,
            dropped: Vec::new(),
            links: HashMap::new(),
            rules: Vec::new(),
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            sent: 0,
            in_flight: VecDeque::new(),
            server,
        }
    }

    /// Reseed the generator impairments draw from.
    pub fn seed(&mut self, seed: u64) {
        self.rng = Rng(seed.max(1));
    }

    /// Impair one leg of peer `i`'s path (replacing what it had).
    pub fn impair(&mut self, i: usize, leg: Leg, impairment: Impairment) {
        self.links.insert((i, leg), impairment);
    }

    /// Drop the next `n` datagrams on peer `i`'s `leg` for which `matches` holds.
    pub fn drop_next(
        &mut self,
        i: usize,
        leg: Leg,
        n: usize,
        matches: impl FnMut(&What) -> bool + 'static,
    ) {
        self.rules.push(DropRule {
            peer: i,
            leg,
            left: n,
            matches: Box::new(matches),
        });
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// A counter of the SFU's metrics.
    pub fn count(&self, counter: impl Fn(&Metrics) -> &std::sync::atomic::AtomicU64) -> u64 {
        counter(&self.metrics).load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A str0m peer at `addr` whose only candidate is that address.
    pub fn add_peer(&mut self, addr: &str) -> usize {
        let addr: SocketAddr = addr.parse().unwrap();
        let mut rtc = Rtc::builder()
            .set_dtls_cert(dtls_cert())
            .set_rtp_mode(true)
            .enable_raw_packets(self.raw_packets)
            .build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        self.peers.push(Peer {
            rtc,
            addr,
            events: Vec::new(),
            event_at: Vec::new(),
            video: None,
            audio: None,
            session: None,
            cut: false,
            timeout: None,
        });
        self.peers.len() - 1
    }

    /// An offer from peer `i` with one audio and one video m-line in `dir`; the mids are kept
    /// in [`Peer::video`] and [`Peer::audio`].
    pub fn offer(&mut self, i: usize, dir: Direction) -> (SdpOffer, SdpPendingOffer) {
        let mut api = self.peers[i].rtc.sdp_api();
        let audio = api.add_media(MediaKind::Audio, dir, None, None, None);
        let video = api.add_media(MediaKind::Video, dir, None, None, None);
        let offer = api.apply().expect("an offer");
        self.peers[i].video = Some(video);
        self.peers[i].audio = Some(audio);
        offer
    }

    /// Peer `i` takes the server's answer.
    pub fn accept(&mut self, i: usize, pending: SdpPendingOffer, answer: &SessionAnswer) {
        let sdp = SdpAnswer::from_sdp_string(&answer.sdp).expect("answer parses");
        self.peers[i]
            .rtc
            .sdp_api()
            .accept_answer(pending, sdp)
            .expect("answer accepted");
        self.peers[i].session = Some(answer.id);
    }

    /// A str0m publisher at `addr` offers audio + video for `stream`, takes the answer; its
    /// index. (Connecting is the test's: `run_until`.)
    pub fn publisher(&mut self, addr: &str, stream: &str) -> usize {
        self.try_publisher(addr, stream).expect("answered")
    }

    /// A str0m viewer at `addr` of `stream`, as [`Net::publisher`].
    pub fn viewer(&mut self, addr: &str, stream: &str) -> usize {
        self.try_viewer(addr, stream).expect("answered")
    }

    /// [`Net::publisher`], or the SFU's refusal (then no peer is added).
    pub fn try_publisher(&mut self, addr: &str, stream: &str) -> Result<usize, MediaError> {
        self.peer_with_session(addr, stream, Direction::SendOnly)
    }

    pub fn try_viewer(&mut self, addr: &str, stream: &str) -> Result<usize, MediaError> {
        self.peer_with_session(addr, stream, Direction::RecvOnly)
    }

    fn peer_with_session(
        &mut self,
        addr: &str,
        stream: &str,
        dir: Direction,
    ) -> Result<usize, MediaError> {
        let i = self.add_peer(addr);
        let (offer, pending) = self.offer(i, dir);
        let sdp = offer.to_sdp_string();
        let answer = match dir {
            Direction::SendOnly => self.sfu.publish(self.now, stream, &sdp, self.client_ip(i)),
            _ => self.sfu.view(self.now, stream, &sdp, self.client_ip(i)),
        };
        match answer {
            Ok(answer) => {
                self.accept(i, pending, &answer);
                Ok(i)
            }
            Err(e) => {
                self.peers.pop();
                Err(e)
            }
        }
    }

    pub fn client_ip(&self, i: usize) -> Option<IpAddr> {
        Some(self.peers[i].addr.ip())
    }

    /// Run until `done` holds or `limit` of simulated time passes; the simulated time spent.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Net) -> bool) -> Duration {
        let start = self.now;
        loop {
            // What the last step made comes out first, so `done` sees it at the time it happened.
            self.drain();
            if done(self) {
                break;
            }
            let next = self.next_deadline();
            assert!(
                next.saturating_duration_since(start) <= limit,
                "not done within {limit:?} of simulated time"
            );
            self.now = next.max(self.now);
            self.deliver();
            self.fire_timeouts();
        }
        self.now - start
    }

    /// Advance the clock by `d`, delivering and firing everything due on the way.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.drain();
            let next = self.next_deadline();
            if next > end {
                break;
            }
            self.now = next.max(self.now);
            self.deliver();
            self.fire_timeouts();
        }
        self.now = end;
        self.fire_timeouts();
        self.drain();
    }

    /// Everything each side has to say now goes on the wire.
    fn drain(&mut self) {
        loop {
            let mut any = false;
            while let Some(t) = self.sfu.poll_transmit() {
                any = true;
                let to = self.peers.iter().position(|p| p.addr == t.to);
                self.send(to, Leg::Down, self.server, t.to, t.data.to_vec());
            }
            while let Some(e) = self.sfu.poll_event() {
                self.events.push(e);
            }
            for i in 0..self.peers.len() {
                any |= self.poll_peer(i);
            }
            if !any {
                return;
            }
        }
    }

    /// Peer `i`'s output until its next timeout (str0m wants this after every input: it keeps
    /// one received RTP packet per stream until polled). True if it sent anything.
    fn poll_peer(&mut self, i: usize) -> bool {
        let mut sent = false;
        loop {
            let p = &mut self.peers[i];
            match p.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    p.timeout = Some(at);
                    return sent;
                }
                Ok(Output::Transmit(_)) if p.cut => {}
                Ok(Output::Transmit(t)) => {
                    sent = true;
                    let data = t.contents.to_vec();
                    self.send(Some(i), Leg::Up, t.source, t.destination, data);
                }
                Ok(Output::Event(e)) => {
                    p.events.push(e);
                    p.event_at.push(self.now);
                }
                Err(e) => panic!("str0m peer failed: {e}"),
            }
        }
    }

    /// Put a datagram on peer `peer`'s `leg` (`None`: to an address no peer has), through that
    /// leg's drop rules and impairment.
    fn send(
        &mut self,
        peer: Option<usize>,
        leg: Leg,
        from: SocketAddr,
        to: SocketAddr,
        data: Vec<u8>,
    ) {
        let mut at = self.now + self.delay;
        let mut copies = 1;
        if let Some(i) = peer {
            let what = What::of(&data);
            let mut ruled = false;
            for r in &mut self.rules {
                if r.peer == i && r.leg == leg && r.left > 0 && (r.matches)(&what) {
                    r.left -= 1;
                    ruled = true;
                    break;
                }
            }
            self.rules.retain(|r| r.left > 0);
            let link = self.links.get(&(i, leg)).cloned().unwrap_or_default();
            if ruled || self.rng.chance(link.loss) {
                if trace() {
                    eprintln!("{:?} {from} -> {to} DROPPED {what:?}", self.elapsed());
                }
                self.dropped.push(Lost {
                    at: self.elapsed(),
                    peer: i,
                    leg,
                    what,
                });
                return;
            }
            at += link.delay;
            if !link.jitter.is_zero() {
                at += link.jitter.mul_f64(self.rng.unit());
            }
            if self.rng.chance(link.reorder) {
                at += link.reorder_by;
            }
            if self.rng.chance(link.duplicate) {
                copies = 2;
            }
        }
        for _ in 0..copies {
            self.sent += 1;
            self.in_flight.push_back(Datagram {
                at,
                n: self.sent,
                from,
                to,
                data: data.clone(),
            });
        }
    }

    fn next_deadline(&self) -> Instant {
        let mut next = self.now + Duration::from_secs(1);
        if let Some(t) = self.sfu.poll_timeout() {
            next = next.min(t);
        }
        for p in &self.peers {
            if let Some(t) = p.timeout {
                next = next.min(t);
            }
        }
        if let Some(d) = self.in_flight.iter().map(|d| d.at).min() {
            next = next.min(d);
        }
        next
    }

    fn deliver(&mut self) {
        let now = self.now;
        let (mut due, later): (Vec<_>, Vec<_>) =
            self.in_flight.drain(..).partition(|d| d.at <= now);
        self.in_flight = later.into();
        due.sort_by_key(|d| (d.at, d.n));
        for d in due {
            if trace() {
                eprintln!(
                    "{:?} {} -> {} {} bytes {:?}",
                    now.duration_since(self.start),
                    d.from,
                    d.to,
                    d.data.len(),
                    What::of(&d.data)
                );
            }
            if d.to == self.server {
                self.sfu.handle_datagram(
                    now,
                    d.from,
                    Some(self.server.ip()),
                    BytesMut::from(&d.data[..]),
                );
            } else if let Some(i) = self.peers.iter().position(|p| p.addr == d.to && !p.cut) {
                let p = &mut self.peers[i];
                let Ok(contents) = d.data.as_slice().try_into() else {
                    continue;
                };
                let input = Input::Receive(
                    now,
                    Receive {
                        proto: Protocol::Udp,
                        source: d.from,
                        destination: d.to,
                        contents,
                    },
                );
                if p.rtc.accepts(&input) {
                    let _ = p.rtc.handle_input(input);
                    self.poll_peer(i);
                }
            }
        }
    }

    fn fire_timeouts(&mut self) {
        let now = self.now;
        if self.sfu.poll_timeout().is_some_and(|t| t <= now) {
            self.sfu.handle_timeout(now);
        }
        // str0m is told the time at every step (it starts ICE on its first timeout, and a
        // timeout earlier than due is harmless).
        for i in 0..self.peers.len() {
            let _ = self.peers[i].rtc.handle_input(Input::Timeout(now));
            self.poll_peer(i);
        }
    }
}

/// One DTLS certificate for every peer of the test binary: generating one per peer cost most of
/// a test's real time.
fn dtls_cert() -> DtlsCert {
    static CERT: OnceLock<DtlsCert> = OnceLock::new();
    CERT.get_or_init(|| {
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .expect("a certificate")
    })
    .clone()
}

fn trace() -> bool {
    std::env::var_os("NET_TRACE").is_some()
}

/// Video frames go out this often.
pub const FRAME: Duration = Duration::from_millis(33);
/// Audio packets go out this often.
pub const AUDIO_FRAME: Duration = Duration::from_millis(20);

/// A one-packet VP8 frame: payload descriptor (S bit, partition 0) and frame header (RFC 7741
/// §4.2, RFC 6386 §9.1); keyframes carry the start code and a 64x64 size.
pub fn vp8_frame(keyframe: bool) -> Vec<u8> {
    let size: u32 = 10;
    let tag = (size << 5) | (1 << 4) | u32::from(!keyframe);
    let mut p = vec![0x10, tag as u8, (tag >> 8) as u8, (tag >> 16) as u8];
    if keyframe {
        p.extend_from_slice(&[0x9d, 0x01, 0x2a, 64, 0, 64, 0]);
    }
    p.resize(p.len() + 10, 0);
    p
}

/// Whether a VP8 payload made by [`vp8_frame`] is a keyframe's.
pub fn is_vp8_keyframe(payload: &[u8]) -> bool {
    payload.len() > 7 && payload[1] & 1 == 0 && payload[4..7] == [0x9d, 0x01, 0x2a]
}

/// One of a str0m publisher's outgoing tracks, written through the direct API: one packet a
/// frame, sequence numbers from 1, RTP time from the simulated clock (so that RTP time and
/// wall-clock time agree, as a real encoder's do).
pub struct Source {
    pub peer: usize,
    pub ssrc: Ssrc,
    pub pt: Pt,
    pub clock_rate: u32,
    pub seq: u64,
    pub frames: u32,
    /// When RTP time 0 was.
    pub epoch: Instant,
    video: bool,
}

impl Source {
    /// Peer `peer`'s VP8 video (negotiated, and its connection up).
    pub fn video(net: &mut Net, peer: usize) -> Self {
        Self::new(net, peer, true)
    }

    /// Peer `peer`'s Opus audio.
    pub fn audio(net: &mut Net, peer: usize) -> Self {
        Self::new(net, peer, false)
    }

    fn new(net: &mut Net, peer: usize, video: bool) -> Self {
        let now = net.now;
        let p = &mut net.peers[peer];
        let (mid, codec, clock_rate) = if video {
            (p.video.expect("video m-line"), Codec::Vp8, 90_000)
        } else {
            (p.audio.expect("audio m-line"), Codec::Opus, 48_000)
        };
        let pts = p.rtc.media(mid).expect("m-line").remote_pts().to_vec();
        let config = p.rtc.codec_config();
        let pt = pts
            .into_iter()
            .find(|pt| {
                config
                    .find(|c| c.pt() == *pt && c.spec().codec == codec)
                    .is_some()
            })
            .unwrap_or_else(|| panic!("{codec:?} negotiated"));
        let ssrc = p
            .rtc
            .direct_api()
            .stream_tx_by_mid(mid, None)
            .expect("a sending stream")
            .ssrc();
        Self {
            peer,
            ssrc,
            pt,
            clock_rate,
            seq: 1,
            frames: 0,
            epoch: now,
            video,
        }
    }

    /// The RTP time of `at`.
    pub fn rtp_time(&self, at: Instant) -> u32 {
        let ticks = at.duration_since(self.epoch).as_micros() * u128::from(self.clock_rate);
        (ticks / 1_000_000) as u32
    }

    /// One frame now, one packet: for video a keyframe when asked (and the very first), else a
    /// delta frame; for audio a few bytes. Nackable: str0m keeps it for retransmission (when
    /// RTX was negotiated).
    pub fn send(&mut self, net: &mut Net, keyframe: bool) {
        let now = net.now;
        let payload = if self.video {
            vp8_frame(keyframe || self.frames == 0)
        } else {
            vec![0xfc, 0xff, 0xfe, self.frames as u8]
        };
        let time = self.rtp_time(now);
        let rtc = &mut net.peers[self.peer].rtc;
        rtc.direct_api()
            .stream_tx(&self.ssrc)
            .expect("the sending stream")
            .write_rtp(
                RtpWrite::new(self.pt, SeqNo::from(self.seq), time, now, payload)
                    .marker(true)
                    .nackable(true),
            );
        self.seq += 1;
        self.frames += 1;
    }
}

/// A str0m publisher on air: video every [`FRAME`] (a keyframe first and whenever a keyframe
/// request came since its last frame, as a camera encoder does), and audio every
/// [`AUDIO_FRAME`] if it has audio.
pub struct Publisher {
    pub peer: usize,
    pub video: Source,
    pub audio: Option<Source>,
    next_video: Instant,
    next_audio: Instant,
    /// Keyframe requests already answered.
    answered: usize,
    /// Keyframes sent (the first included).
    pub keyframes: usize,
}

impl Publisher {
    /// Peer `peer` (connected) starts sending now.
    pub fn new(net: &mut Net, peer: usize, audio: bool) -> Self {
        let video = Source::video(net, peer);
        let audio = audio.then(|| Source::audio(net, peer));
        Self {
            peer,
            video,
            audio,
            next_video: net.now,
            next_audio: net.now,
            answered: net.peers[peer].keyframe_requests().len(),
            keyframes: 0,
        }
    }

    /// Send, a frame at a time, until `done` holds (checked between frames) or `limit` of
    /// simulated time passes (a panic).
    pub fn play_until(&mut self, net: &mut Net, limit: Duration, done: impl Fn(&Net) -> bool) {
        let end = net.now + limit;
        while !done(net) {
            assert!(net.now < end, "not done within {limit:?} of simulated time");
            self.play(net, FRAME);
        }
    }

    /// Send for `d` of simulated time, the network running meanwhile.
    pub fn play(&mut self, net: &mut Net, d: Duration) {
        let end = net.now + d;
        loop {
            let next = match &self.audio {
                Some(_) => self.next_video.min(self.next_audio),
                None => self.next_video,
            };
            if next > end {
                break;
            }
            net.advance(next.saturating_duration_since(net.now));
            if net.now >= self.next_video {
                let asked = net.peers[self.peer].keyframe_requests().len();
                let keyframe = asked > self.answered || self.video.frames == 0;
                self.answered = asked;
                self.keyframes += usize::from(keyframe);
                self.video.send(net, keyframe);
                // Frames missed while the test ran the network without playing are skipped.
                self.next_video = self.next_video.max(net.now) + FRAME;
            }
            if let Some(audio) = &mut self.audio {
                if net.now >= self.next_audio {
                    audio.send(net, false);
                    self.next_audio = self.next_audio.max(net.now) + AUDIO_FRAME;
                }
            }
        }
        net.advance(end.saturating_duration_since(net.now));
    }
}

/// Put stream "demo" on air on `net`: a publisher at 10.0.0.2:5000 connects, then sends (video,
/// and audio if `audio`) for `played`.
pub fn on_air(mut net: Net, audio: bool, played: Duration) -> (Net, Publisher) {
    let publisher = net.publisher("10.0.0.2:5000", "demo");
    net.run_until(Duration::from_secs(5), |n| n.peers[publisher].connected());
    let mut media = Publisher::new(&mut net, publisher, audio);
    media.play(&mut net, played);
    (net, media)
}

/// Viewers of "demo" at `addrs` make their offers at once and connect while the publisher
/// plays on; then it plays `watched` more.
pub fn join(net: &mut Net, media: &mut Publisher, addrs: &[&str], watched: Duration) -> Vec<usize> {
    let viewers: Vec<usize> = addrs.iter().map(|a| net.viewer(a, "demo")).collect();
    media.play_until(net, Duration::from_secs(3), |n| {
        viewers.iter().all(|v| n.peers[*v].connected())
    });
    media.play(net, watched);
    viewers
}
