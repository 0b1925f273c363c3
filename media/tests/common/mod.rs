//! A virtual-clock harness in the spirit of str0m's `tests/common.rs`: the [`Sfu`] and str0m
//! peers exchange datagrams in memory, on one simulated clock that jumps to the next deadline,
//! so a test of ICE, DTLS and timeouts runs in milliseconds of real time. `NET_TRACE=1` prints
//! every datagram delivered.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use media::metrics::Metrics;
use media::sfu::{SessionAnswer, Sfu, StreamEvent};
use media::MediaConfig;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// The server's address on the simulated network.
pub const SERVER: &str = "10.0.0.1:8189";

/// One datagram in flight.
struct Datagram {
    at: Instant,
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

/// A str0m peer of the simulation.
pub struct Peer {
    pub rtc: Rtc,
    pub addr: SocketAddr,
    pub events: Vec<Event>,
    /// The video m-line of its offer.
    pub video: Option<Mid>,
    /// Off the network: nothing it sends arrives, nothing reaches it (a closed laptop lid).
    pub cut: bool,
    timeout: Option<Instant>,
}

impl Peer {
    pub fn connected(&self) -> bool {
        self.events.iter().any(|e| matches!(e, Event::Connected))
    }
}

/// The SFU and its peers on one clock.
pub struct Net {
    pub now: Instant,
    pub sfu: Sfu,
    pub peers: Vec<Peer>,
    pub events: Vec<StreamEvent>,
    /// One-way delay of every datagram.
    pub delay: Duration,
    in_flight: VecDeque<Datagram>,
    server: SocketAddr,
    start: Instant,
}

impl Net {
    pub fn new(config: MediaConfig) -> Self {
        let server: SocketAddr = SERVER.parse().unwrap();
        let sfu = Sfu::new(
            &config,
            server,
            vec![server],
            Arc::new(Metrics::default()),
            None,
        )
        .expect("sfu");
        let now = Instant::now();
        Self {
            start: now,
            now,
            sfu,
            peers: Vec::new(),
            events: Vec::new(),
            delay: Duration::from_millis(5),
            in_flight: VecDeque::new(),
            server,
        }
    }

    /// A str0m peer at `addr` whose only candidate is that address.
    pub fn add_peer(&mut self, addr: &str) -> usize {
        let addr: SocketAddr = addr.parse().unwrap();
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        self.peers.push(Peer {
            rtc,
            addr,
            events: Vec::new(),
            video: None,
            cut: false,
            timeout: None,
        });
        self.peers.len() - 1
    }

    /// An offer from peer `i` with one audio and one video m-line in `dir`; the video's mid is
    /// kept in [`Peer::video`].
    pub fn offer(&mut self, i: usize, dir: Direction) -> (SdpOffer, SdpPendingOffer) {
        let mut api = self.peers[i].rtc.sdp_api();
        api.add_media(MediaKind::Audio, dir, None, None, None);
        let video = api.add_media(MediaKind::Video, dir, None, None, None);
        let offer = api.apply().expect("an offer");
        self.peers[i].video = Some(video);
        offer
    }

    /// Peer `i` takes the server's answer.
    pub fn accept(&mut self, i: usize, pending: SdpPendingOffer, answer: &SessionAnswer) {
        let answer = SdpAnswer::from_sdp_string(&answer.sdp).expect("answer parses");
        self.peers[i]
            .rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("answer accepted");
    }

    /// A str0m publisher at `addr` offers audio + video for `stream`, takes the answer; its
    /// index. (Connecting is the test's: `run_until`.)
    pub fn publisher(&mut self, addr: &str, stream: &str) -> usize {
        self.peer_with_session(addr, stream, Direction::SendOnly)
    }

    /// A str0m viewer at `addr` of `stream`, as [`Net::publisher`].
    pub fn viewer(&mut self, addr: &str, stream: &str) -> usize {
        self.peer_with_session(addr, stream, Direction::RecvOnly)
    }

    fn peer_with_session(&mut self, addr: &str, stream: &str, dir: Direction) -> usize {
        let i = self.add_peer(addr);
        let (offer, pending) = self.offer(i, dir);
        let sdp = offer.to_sdp_string();
        let answer = match dir {
            Direction::SendOnly => self.sfu.publish(self.now, stream, &sdp, self.client_ip(i)),
            _ => self.sfu.view(self.now, stream, &sdp, self.client_ip(i)),
        }
        .expect("answered");
        self.accept(i, pending, &answer);
        i
    }

    pub fn client_ip(&self, i: usize) -> Option<IpAddr> {
        Some(self.peers[i].addr.ip())
    }

    /// Run until `done` holds or `limit` of simulated time passes; the simulated time spent.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Net) -> bool) -> Duration {
        let start = self.now;
        while !done(self) {
            self.drain();
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
                self.in_flight.push_back(Datagram {
                    at: self.now + self.delay,
                    from: self.server,
                    to: t.to,
                    data: t.data.to_vec(),
                });
            }
            while let Some(e) = self.sfu.poll_event() {
                self.events.push(e);
            }
            for p in &mut self.peers {
                loop {
                    match p.rtc.poll_output() {
                        Ok(Output::Timeout(at)) => {
                            p.timeout = Some(at);
                            break;
                        }
                        Ok(Output::Transmit(_)) if p.cut => {}
                        Ok(Output::Transmit(t)) => {
                            any = true;
                            self.in_flight.push_back(Datagram {
                                at: self.now + self.delay,
                                from: t.source,
                                to: t.destination,
                                data: t.contents.to_vec(),
                            });
                        }
                        Ok(Output::Event(e)) => p.events.push(e),
                        Err(e) => panic!("str0m peer failed: {e}"),
                    }
                }
            }
            if !any {
                return;
            }
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
        let (due, later): (Vec<_>, Vec<_>) = self.in_flight.drain(..).partition(|d| d.at <= now);
        self.in_flight = later.into();
        for d in due {
            if std::env::var_os("NET_TRACE").is_some() {
                eprintln!(
                    "{:?} {} -> {} {} bytes first {:?}",
                    now.duration_since(self.start),
                    d.from,
                    d.to,
                    d.data.len(),
                    d.data.first()
                );
            }
            if d.to == self.server {
                self.sfu.handle_datagram(
                    now,
                    d.from,
                    Some(self.server.ip()),
                    BytesMut::from(&d.data[..]),
                );
            } else if let Some(p) = self.peers.iter_mut().find(|p| p.addr == d.to && !p.cut) {
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
        for p in &mut self.peers {
            p.timeout = None;
            let _ = p.rtc.handle_input(Input::Timeout(now));
        }
    }
}
