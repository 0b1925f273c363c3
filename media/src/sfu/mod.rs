//! The sans-I/O SFU: publishers in, viewers out, over one UDP port.
//!
//! [`Sfu`] owns every peer connection and stream. It is told the time (it reads the wall clock
//! once, at creation, for sender reports), owns no socket and spawns no task (the runtime lends
//! it a thread pool, [`FanoutPool`], that only seals packets for large audiences): the runtime
//! feeds it datagrams ([`Sfu::handle_datagram`]), timeouts ([`Sfu::handle_timeout`]) and
//! signaling requests ([`Sfu::publish`], [`Sfu::view`], [`Sfu::close`]), and drains
//! [`Sfu::poll_transmit`], [`Sfu::poll_event`] and [`Sfu::poll_timeout`].
//!
//! Where things happen:
//! - [`session`]: a WHIP or WHEP offer is answered (capacity checked, the connection made);
//!   trickle and DELETE.
//! - [`connection`]: one peer connection's datagrams in and its outputs drained — state changes,
//!   publishers' RTP, viewers' RTCP (keyframe requests, NACKs).
//! - [`forward`]: the hot path — a publisher's packets to every viewer of its stream, NACKs
//!   answered, sender reports.
//! - [`lifecycle`]: a stream going on and off the air; publishers leaving and reconnecting;
//!   RTMP ingest publishers; BYE.
//! - [`keyframe`]: keyframe requests coalesced into PLIs to the publisher.
//! - [`gop`]: the stream's current group of pictures, which starts a joining viewer at once.
//! - [`fanout`], [`continuity`], [`demux`], [`peer`] (SDP and connection building), [`stream`].
//!
//! Forwarding: RTP packets read from a publisher wait in their stream until the runtime next
//! asks for datagrams ([`Sfu::poll_transmit`]), which is after it has read what the socket had;
//! then each connected viewer in turn is written the whole batch sealed with the viewer's SSRC,
//! payload type and SRTP keys ([`fanout`], on a thread pool for large audiences), so a viewer's
//! datagrams sit next to each other and leave in few GSO sends (see `udp_batch`).
//!
//! A publisher that drops (ICE failure, RTMP connection lost) rather than ending its stream
//! leaves the stream on air for `reconnect_grace`: its viewers stay connected, and a publisher
//! that comes back with the same key takes over, its RTP renumbered by [`continuity`] so
//! viewers carry on without a new offer.

mod connection;
mod continuity;
mod demux;
mod fanout;
mod forward;
mod gop;
pub mod keyframe;
mod lifecycle;
pub mod peer;
mod rtcp_tap;
mod session;
mod stream;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use rtc::rtp;

use crate::codec::{MediaKind, PayloadFormat};
use crate::config::MediaConfig;
use crate::error::{MediaError, Result};
use crate::metrics::Metrics;
use connection::Peer;
use demux::Demux;
pub use fanout::Pool as FanoutPool;
use fanout::WallClock;
use peer::PeerSettings;
use stream::Stream;

/// Opaque, unguessable id of a WHIP or WHEP session; its hex form is in the resource URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u128);

impl SessionId {
    fn random() -> Self {
        Self(rand::random())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl FromStr for SessionId {
    type Err = MediaError;
    fn from_str(s: &str) -> Result<Self> {
        if s.len() != 32 {
            return Err(MediaError::UnknownSession);
        }
        u128::from_str_radix(s, 16)
            .map(SessionId)
            .map_err(|_| MediaError::UnknownSession)
    }
}

/// A copy of a live stream's RTP for another consumer (the HLS transcoder). Called on the hot
/// path, once per packet: must not block, and should not allocate much.
pub trait StreamTap: Send {
    /// `keyframe`: the packet belongs to a keyframe (video; the SFU already looked).
    fn rtp(&mut self, kind: MediaKind, format: PayloadFormat, packet: &rtp::Packet, keyframe: bool);
    /// The video that follows comes from a new source (a publisher that reconnected).
    fn source_changed(&mut self) {}
    /// An ingest publisher's AAC frame as it came; `video_ts` is its time on the stream's video
    /// RTP clock as the tap sees it (rewritten like the video's).
    fn aac(&mut self, _config: &bytes::Bytes, _frame: bytes::Bytes, _video_ts: u32) {}
}

/// An AAC frame of an ingest publisher (RTMP), with its AudioSpecificConfig and its time on the
/// publisher's video RTP clock (the same base and 90 kHz as its video packets).
#[derive(Debug, Clone)]
pub struct AacFrame {
    pub config: bytes::Bytes,
    pub frame: bytes::Bytes,
    pub video_ts: u32,
}

/// How a publisher left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// It ended the stream (WHIP DELETE, RTMP unpublish, shutdown): offline at once.
    Ended,
    /// Its connection was lost: the stream waits `reconnect_grace` for it to come back.
    Dropped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Publisher,
    Viewer,
}

/// What a successful WHIP/WHEP offer gets back.
#[derive(Debug, Clone)]
pub struct SessionAnswer {
    pub id: SessionId,
    pub sdp: String,
}

/// Stream lifecycle, for the platform (go-live notifications) and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// The publisher's connection came up.
    Live { stream: String },
    /// The publisher ended the stream, or dropped and did not come back within the reconnect
    /// grace; its viewers were told and dropped.
    Offline { stream: String },
}

/// A datagram to send from the shared socket.
#[derive(Debug)]
pub struct Transmit {
    pub to: SocketAddr,
    pub data: BytesMut,
}

/// A live summary of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    pub name: String,
    pub live: bool,
    /// The publisher dropped; the stream stays on air while it may reconnect.
    pub reconnecting: bool,
    pub viewers: usize,
    pub codecs: Vec<String>,
    /// RTP payload bytes received from publishers (a counter; rates are its differences).
    pub bytes_in: u64,
    /// Time between the publisher's last two keyframes.
    pub keyframe_interval_ms: Option<u32>,
    /// Viewers whose connection came up since the stream went on air.
    pub viewers_served: u64,
}

/// The SFU core. See the module docs.
pub struct Sfu {
    local_addr: SocketAddr,
    settings: PeerSettings,
    connect_timeout: Duration,
    pli_min_interval: Duration,
    reconnect_grace: Duration,
    max_sessions: usize,
    max_sessions_per_address: usize,
    publisher_reserve: usize,
    /// Most bytes of video a stream keeps to start joining viewers (0: none kept).
    gop_cache_bytes: usize,
    /// Sessions per client address (IPv6 by /64).
    per_address: HashMap<IpAddr, usize>,
    peers: HashMap<SessionId, Peer>,
    streams: HashMap<String, Stream>,
    demux: Demux,
    /// Peer connections by their next deadline.
    timers: BTreeSet<(Instant, SessionId)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<StreamEvent>,
    metrics: Arc<Metrics>,
    /// Reused buffer of packets read from a publisher, before they join their stream's pending.
    inbound: Vec<rtp::Packet>,
    /// Streams with packets pending, and the time of the input that brought the latest.
    pending: Vec<Arc<str>>,
    pending_now: Option<Instant>,
    /// Reused buffers of the forwarding batch: each packet's kind; the packets themselves.
    batch_kinds: Vec<MediaKind>,
    batch: Vec<rtp::Packet>,
    /// Reused buffer of what a viewer's NACKs asked for: media SSRC, sequence number.
    nacked: Vec<(u32, u16)>,
    /// NTP time for sender reports.
    clock: WallClock,
    /// Threads that seal batches for large audiences.
    pool: Option<Arc<FanoutPool>>,
    /// Publishers that are not peer connections (RTMP), by session id.
    ingest: HashMap<SessionId, Arc<str>>,
}

impl Sfu {
    /// `local_addr` is the bound UDP socket; `host_candidates` what answers advertise; `pool`
    /// the threads that seal batches for large audiences (owned by the runtime, which sends
    /// from them too; `None`: seal on the calling thread).
    pub fn new(
        config: &MediaConfig,
        local_addr: SocketAddr,
        host_candidates: Vec<SocketAddr>,
        metrics: Arc<Metrics>,
        pool: Option<Arc<FanoutPool>>,
    ) -> Result<Self> {
        Ok(Self {
            local_addr,
            settings: PeerSettings {
                certificate: peer::generate_certificate()?,
                host_candidates,
                ice_disconnected_timeout: config.ice_disconnected_timeout,
                ice_failed_timeout: config.ice_failed_timeout,
            },
            connect_timeout: config.connect_timeout,
            pli_min_interval: config.pli_min_interval,
            reconnect_grace: config.reconnect_grace,
            max_sessions: config.max_sessions,
            max_sessions_per_address: config.max_sessions_per_address,
            publisher_reserve: config.publisher_reserve,
            gop_cache_bytes: config.gop_cache_bytes,
            per_address: HashMap::new(),
            peers: HashMap::new(),
            streams: HashMap::new(),
            demux: Demux::default(),
            timers: BTreeSet::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            metrics,
            inbound: Vec::new(),
            pending: Vec::new(),
            pending_now: None,
            batch_kinds: Vec::new(),
            batch: Vec::new(),
            nacked: Vec::new(),
            // The one clock reading of the core: to put wall-clock time on sender reports.
            clock: WallClock::new(Instant::now(), SystemTime::now()),
            pool,
            ingest: HashMap::new(),
        })
    }

    /// Run every timer that is due: peer connections' (ICE, DTLS, RTCP, the connect
    /// deadline), then streams' (repeat PLIs, the reconnect grace, the HLS keyframe clock).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            self.peer_timeout(now, id);
        }
        let due: Vec<String> = self
            .streams
            .values()
            .filter(|s| s.keyframes.deadline().is_some_and(|d| d <= now))
            .map(|s| s.name.clone())
            .collect();
        for name in due {
            self.poll_keyframe(now, &name);
        }
        let expired: Vec<String> = self
            .streams
            .values()
            .filter(|s| s.reconnect_deadline().is_some_and(|d| d <= now))
            .map(|s| s.name.clone())
            .collect();
        for name in expired {
            self.take_off_air(now, &name, "publisher did not reconnect in time");
        }
        let tapped: Vec<String> = self
            .streams
            .values_mut()
            .filter(|s| s.tap_next_keyframe.is_some_and(|t| t <= now))
            .map(|s| {
                s.tap_next_keyframe = Some(now + s.tap_keyframe_interval);
                s.name.clone()
            })
            .collect();
        for name in tapped {
            self.request_keyframe(now, &name);
        }
        for s in self.streams.values_mut() {
            if s.catch_up_deadline().is_some_and(|t| t <= now) {
                s.catch_up(now, &mut self.transmits);
            }
        }
    }

    /// The next time [`Sfu::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let peers = self.timers.first().map(|(t, _)| *t);
        let streams = self
            .streams
            .values()
            .filter_map(|s| {
                [
                    s.keyframes.deadline(),
                    s.reconnect_deadline(),
                    s.tap_next_keyframe,
                    s.catch_up_deadline(),
                ]
                .into_iter()
                .flatten()
                .min()
            })
            .min();
        match (peers, streams) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next datagram to send. Publishers' packets that arrived since the last call are
    /// forwarded first, at the time of the input that brought the latest of them.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(now) = self.pending_now.take() {
            self.forward_pending(now);
        }
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<StreamEvent> {
        self.events.pop_front()
    }

    /// A snapshot of every stream that has a publisher.
    pub fn streams(&self) -> Vec<StreamSummary> {
        let mut out: Vec<_> = self
            .streams
            .values()
            .filter(|s| s.is_active())
            .map(|s| StreamSummary {
                name: s.name.clone(),
                live: s.on_air(),
                reconnecting: s.reconnect_deadline().is_some(),
                viewers: s
                    .viewers
                    .iter()
                    .filter(|v| self.peers.get(v).is_some_and(Peer::connected))
                    .count(),
                codecs: stream::codec_names(&s.tracks),
                bytes_in: s.ingest.bytes,
                keyframe_interval_ms: s.ingest.keyframe_interval_ms,
                viewers_served: s.viewers_served,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The role and stream of a session, so signaling can check a URL names the right one.
    pub fn session(&self, id: SessionId) -> Option<(Role, &str)> {
        self.peers.get(&id).map(|p| (p.role(), &*p.stream))
    }

    pub fn session_count(&self) -> usize {
        self.peers.len()
    }
}
