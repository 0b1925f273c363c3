//! The sans-I/O SFU: publishers in, viewers out, over one UDP port.
//!
//! [`Sfu`] owns every peer connection and stream. It is told the time (it reads the wall clock
//! once, at creation, for sender reports), owns no socket and spawns no task (its one thread
//! pool, `fanout::Pool`, only seals packets for large audiences): the runtime feeds it datagrams ([`Sfu::handle_datagram`]),
//! timeouts ([`Sfu::handle_timeout`]) and signaling requests ([`Sfu::publish`], [`Sfu::view`],
//! [`Sfu::close`]), and drains [`Sfu::poll_transmit`], [`Sfu::poll_event`] and
//! [`Sfu::poll_timeout`].
//!
//! Forwarding (the hot path, [`Sfu::forward`]): RTP packets read from a publisher wait in their
//! stream until the runtime next asks for datagrams ([`Sfu::poll_transmit`]), which is after it
//! has read what the socket had; then each connected viewer in turn is written the whole batch
//! sealed with the viewer's SSRC, payload type and SRTP keys ([`fanout`], on a thread pool for
//! large audiences), so a viewer's datagrams sit next to each other and leave in few GSO sends
//! (see `udp_batch`). `fanout` also keeps the stream's history that answers viewers' NACKs and
//! makes their sender reports; webrtc-rs's interceptors send receiver reports and NACKs to the
//! publisher. Keyframe requests from viewers are coalesced in [`keyframe`].
//!
//! A publisher that drops (ICE failure, RTMP connection lost) rather than ending its stream
//! leaves the stream on air for `reconnect_grace`: its viewers stay connected, and a publisher
//! that comes back with the same key takes over, its RTP renumbered by [`continuity`] so
//! viewers carry on without a new offer.

mod continuity;
mod demux;
mod fanout;
pub mod keyframe;
pub mod peer;
mod rtcp_tap;
mod stream;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtcp::goodbye::Goodbye;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tracing::{debug, info, warn};

use crate::codec::{MediaKind, PayloadFormat};
use crate::config::MediaConfig;
use crate::error::{MediaError, Result};
use crate::metrics::Metrics;
use crate::slots::address_key;
use crate::stun;
use demux::Demux;
pub use fanout::Pool as FanoutPool;
use fanout::{Pool, ViewerOut, WallClock};
use peer::{IceCredentials, PeerSettings, PublishedTrack, ViewerTrack};
use stream::Stream;

/// SSRC our feedback (PLI) to publishers is sent from; we send no media toward publishers.
const FEEDBACK_SSRC: u32 = 0x6c69_6e74;

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
    fn rtp(&mut self, kind: MediaKind, format: PayloadFormat, packet: &rtp::Packet);
    /// The video that follows comes from a new source (a publisher that reconnected).
    fn source_changed(&mut self) {}
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
    /// A finished broadcast was stored as a replay (HLS with replays on).
    Replay(crate::hls::replay::Replay),
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

struct Peer {
    role: Role,
    /// Shared, so the per-datagram path clones a pointer, not the name.
    stream: Arc<str>,
    pc: RTCPeerConnection,
    ufrag: String,
    connected: bool,
    connect_deadline: Instant,
    /// The deadline this peer is filed under in `Sfu::timers`.
    timer: Option<Instant>,
    /// Viewers: what each kind is sent on.
    tracks: Vec<ViewerTrack>,
    /// Publishers: the receiver of the video track, where PLIs are written.
    video_receiver: Option<RTCRtpReceiverId>,
    /// Before connecting: the client's nominating check, to replay once our own check of that
    /// pair has succeeded (see `Sfu::handle_datagram`).
    pending_nomination: Option<(SocketAddr, BytesMut)>,
    /// Where the connection last sent to: the selected candidate pair's remote address.
    remote: Option<SocketAddr>,
    /// The client address it was created from (IPv6 by /64), counted in `Sfu::per_address`.
    client: Option<IpAddr>,
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
    /// Sessions per client address (IPv6 by /64).
    per_address: HashMap<IpAddr, usize>,
    peers: HashMap<SessionId, Peer>,
    streams: HashMap<String, Stream>,
    demux: Demux,
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
    /// Reused buffer of sequence numbers a viewer's NACKs asked for.
    nacked: Vec<u16>,
    /// NTP time for sender reports.
    clock: WallClock,
    /// Threads that seal batches for large audiences.
    pool: Option<Arc<Pool>>,
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
        pool: Option<Arc<Pool>>,
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

    /// WHIP: a publisher's offer for `stream`. The caller has already checked the stream key.
    pub fn publish(
        &mut self,
        now: Instant,
        stream: &str,
        offer_sdp: &str,
        client: Option<IpAddr>,
    ) -> Result<SessionAnswer> {
        let result = self.try_publish(now, stream, offer_sdp, client);
        self.count_result(&result);
        result
    }

    fn try_publish(
        &mut self,
        now: Instant,
        stream: &str,
        offer_sdp: &str,
        client: Option<IpAddr>,
    ) -> Result<SessionAnswer> {
        if self
            .streams
            .get(stream)
            .is_some_and(|s| s.publisher.is_some())
        {
            return Err(MediaError::StreamBusy(stream.to_owned()));
        }
        let client = client.map(address_key);
        self.check_capacity(Role::Publisher, client)?;
        let offer = peer::parse_offer(offer_sdp, true)?;
        let creds = IceCredentials::random();
        let (mut pc, sdp, tracks) = peer::build_publisher(now, &self.settings, &creds, offer)?;
        let video_receiver = find_video_receiver(&mut pc);
        let id = SessionId::random();
        let entry = self
            .streams
            .entry(stream.to_owned())
            .or_insert_with(|| Stream::new(stream.to_owned(), self.pli_min_interval));
        let resumed = entry.reconnect_deadline.take().is_some();
        entry.publisher = Some(id);
        entry.tracks = tracks;
        entry.video_ssrc = None;
        entry.ingest.new_source();
        entry.live = false;
        info!(stream, session = %id, codecs = ?codec_names(&entry.tracks), resumed, "publisher offered");
        self.insert_peer(
            now,
            id,
            Role::Publisher,
            stream,
            pc,
            creds.ufrag,
            Vec::new(),
            video_receiver,
        );
        self.count_client(id, client);
        Metrics::add(&self.metrics.publishers, 1);
        Ok(SessionAnswer { id, sdp })
    }

    /// WHEP: a viewer's offer for `stream`, which must be live (else [`MediaError::StreamNotLive`]).
    pub fn view(
        &mut self,
        now: Instant,
        stream: &str,
        offer_sdp: &str,
        client: Option<IpAddr>,
    ) -> Result<SessionAnswer> {
        let result = self.try_view(now, stream, offer_sdp, client.map(address_key));
        self.count_result(&result);
        result
    }

    fn try_view(
        &mut self,
        now: Instant,
        stream: &str,
        offer_sdp: &str,
        client: Option<IpAddr>,
    ) -> Result<SessionAnswer> {
        let Some(s) = self.streams.get(stream).filter(|s| s.is_active()) else {
            return Err(MediaError::StreamNotLive(stream.to_owned()));
        };
        self.check_capacity(Role::Viewer, client)?;
        let offer = peer::parse_offer(offer_sdp, false)?;
        let creds = IceCredentials::random();
        let (pc, sdp, tracks) =
            peer::build_viewer(now, &self.settings, &creds, offer, stream, &s.tracks)?;
        let id = SessionId::random();
        self.streams
            .get_mut(stream)
            .expect("checked above")
            .viewers
            .push(id);
        debug!(stream, session = %id, "viewer offered");
        self.insert_peer(now, id, Role::Viewer, stream, pc, creds.ufrag, tracks, None);
        self.count_client(id, client);
        Metrics::add(&self.metrics.viewers, 1);
        Ok(SessionAnswer { id, sdp })
    }

    /// Trickle ICE (RFC 8840 fragment lines `a=candidate:...`). We are ICE-lite: remote
    /// candidates are accepted for the record; connectivity comes from the client's checks.
    pub fn add_remote_candidates(&mut self, id: SessionId, candidates: &[String]) -> Result<()> {
        let peer = self.peers.get_mut(&id).ok_or(MediaError::UnknownSession)?;
        for c in candidates {
            let init = rtc::peer_connection::transport::RTCIceCandidateInit {
                candidate: c.clone(),
                sdp_mid: None,
                sdp_mline_index: Some(0),
                ..Default::default()
            };
            peer.pc
                .add_remote_candidate(init)
                .map_err(|e| MediaError::BadCandidate(e.to_string()))?;
        }
        Ok(())
    }

    /// The role and stream of a session, so signaling can check a URL names the right one.
    pub fn session(&self, id: SessionId) -> Option<(Role, &str)> {
        self.peers.get(&id).map(|p| (p.role, &*p.stream))
    }

    /// DELETE of a WHIP/WHEP resource, or shutdown.
    pub fn close(&mut self, now: Instant, id: SessionId) -> Result<()> {
        if !self.peers.contains_key(&id) {
            return Err(MediaError::UnknownSession);
        }
        self.remove_peer(now, id, "closed by client", Departure::Ended);
        Ok(())
    }

    /// Close every session (graceful shutdown).
    pub fn close_all(&mut self, now: Instant) {
        let ingest: Vec<_> = self.ingest.keys().copied().collect();
        for id in ingest {
            self.close_ingest(now, id, "server shutting down", Departure::Ended);
        }
        let ids: Vec<_> = self.peers.keys().copied().collect();
        for id in ids {
            if self.peers.contains_key(&id) {
                self.remove_peer(now, id, "server shutting down", Departure::Ended);
            }
        }
    }

    /// A datagram arrived on the shared socket from `from`, sent to our address `to` (when the
    /// socket can tell: see [`crate::udp_recv`]).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: Option<IpAddr>,
        data: BytesMut,
    ) {
        let Some(id) = self.demux.route(from, &data) else {
            Metrics::add(&self.metrics.datagrams_unroutable, 1);
            return;
        };
        let local_addr = self.local_candidate(to);
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        // webrtc-rs's controlled agent, even ICE-lite, does not answer a check that carries
        // USE-CANDIDATE on a pair it has not yet seen succeed: it sends its own triggered check
        // and waits for the client to retransmit (500 ms for str0m and ffmpeg, which nominate
        // on their first check). So keep such a check, and replay it as soon as the client
        // answers our triggered check: the agent then nominates and answers at once.
        let replay = if peer.connected {
            None
        } else if stun::is_nominating_request(&data) {
            peer.pending_nomination = Some((from, data.clone()));
            None
        } else if stun::is_binding_success(&data) {
            peer.pending_nomination.take()
        } else {
            None
        };
        let tag = |from: SocketAddr, message: BytesMut| TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message,
        };
        if let Err(e) = peer.pc.handle_read(tag(from, data)) {
            // Malformed or replayed input from the network: drop it, keep the session.
            debug!(session = %id, error = %e, "datagram rejected");
        }
        if let Some((from, check)) = replay {
            if let Err(e) = peer.pc.handle_read(tag(from, check)) {
                debug!(session = %id, error = %e, "replayed nomination rejected");
            }
        }
        self.service(now, id);
    }

    /// The host candidate a datagram sent to `to` reached, as the ICE agent must be told (it
    /// discards checks on any address that is not one of its local candidates). `to` itself
    /// when it is a candidate; else the first candidate of its family — 1:1 NAT, where the
    /// socket receives on a private address and answers advertise the public one
    /// (`GLINT_PUBLIC_IP`); else the first candidate. Without a candidate, the bound address.
    fn local_candidate(&self, to: Option<IpAddr>) -> SocketAddr {
        let candidates = &self.settings.host_candidates;
        let port = self.local_addr.port();
        if let Some(ip) = to {
            let reached = SocketAddr::new(ip, port);
            if candidates.contains(&reached) {
                return reached;
            }
            if let Some(c) = candidates.iter().find(|c| c.is_ipv4() == ip.is_ipv4()) {
                return *c;
            }
        }
        candidates.first().copied().unwrap_or(self.local_addr)
    }

    /// Run every timer that is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            peer.timer = None;
            if !peer.connected && now >= peer.connect_deadline {
                self.remove_peer(now, id, "did not connect in time", Departure::Dropped);
                continue;
            }
            if let Err(e) = peer.pc.handle_timeout(now) {
                debug!(session = %id, error = %e, "timeout handling failed");
            }
            self.service(now, id);
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
            .filter(|s| s.reconnect_deadline.is_some_and(|d| d <= now))
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
    }

    /// The next time [`Sfu::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let peers = self.timers.first().map(|(t, _)| *t);
        let keyframes = self
            .streams
            .values()
            .filter_map(|s| {
                [
                    s.keyframes.deadline(),
                    s.reconnect_deadline,
                    s.tap_next_keyframe,
                ]
                .into_iter()
                .flatten()
                .min()
            })
            .min();
        match (peers, keyframes) {
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

    /// Queue a publisher's packets (moved out of `packets`) on their stream for the next
    /// [`Sfu::forward_pending`].
    fn queue_forward(&mut self, now: Instant, stream: &Arc<str>, packets: &mut Vec<rtp::Packet>) {
        let Some(s) = self.streams.get_mut(&**stream) else {
            packets.clear();
            return;
        };
        if s.pending.is_empty() {
            self.pending.push(stream.clone());
        }
        s.pending.append(packets);
        self.pending_now = Some(now);
    }

    fn forward_pending(&mut self, now: Instant) {
        let mut batch = std::mem::take(&mut self.batch);
        for i in 0..self.pending.len() {
            let stream = self.pending[i].clone();
            let Some(s) = self.streams.get_mut(&*stream) else {
                continue;
            };
            std::mem::swap(&mut batch, &mut s.pending);
            self.forward(now, &stream, &mut batch);
            batch.clear();
        }
        self.pending.clear();
        self.batch = batch;
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
                live: s.live || s.reconnect_deadline.is_some(),
                reconnecting: s.reconnect_deadline.is_some(),
                viewers: s
                    .viewers
                    .iter()
                    .filter(|v| self.peers.get(v).is_some_and(|p| p.connected))
                    .count(),
                codecs: codec_names(&s.tracks),
                bytes_in: s.ingest.bytes,
                keyframe_interval_ms: s.ingest.keyframe_interval_ms,
                viewers_served: s.viewers_served,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub fn session_count(&self) -> usize {
        self.peers.len()
    }

    /// Room for one more session of `role` from `client`: the total (viewers leave
    /// `publisher_reserve` free) and the per-address limit.
    fn check_capacity(&self, role: Role, client: Option<IpAddr>) -> Result<()> {
        let limit = match role {
            Role::Publisher => self.max_sessions,
            Role::Viewer => self.max_sessions.saturating_sub(self.publisher_reserve),
        };
        if self.peers.len() >= limit {
            return Err(MediaError::Overloaded);
        }
        if let Some(c) = client {
            if self.per_address.get(&c).copied().unwrap_or(0) >= self.max_sessions_per_address {
                return Err(MediaError::TooManyFromAddress(
                    self.max_sessions_per_address,
                ));
            }
        }
        Ok(())
    }

    fn count_client(&mut self, id: SessionId, client: Option<IpAddr>) {
        if let (Some(c), Some(peer)) = (client, self.peers.get_mut(&id)) {
            peer.client = Some(c);
            *self.per_address.entry(c).or_insert(0) += 1;
        }
    }

    fn count_result<T>(&self, result: &Result<T>) {
        match result {
            Ok(_) => Metrics::add(&self.metrics.sessions_created, 1),
            Err(_) => Metrics::add(&self.metrics.sessions_rejected, 1),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_peer(
        &mut self,
        now: Instant,
        id: SessionId,
        role: Role,
        stream: &str,
        pc: RTCPeerConnection,
        ufrag: String,
        tracks: Vec<ViewerTrack>,
        video_receiver: Option<RTCRtpReceiverId>,
    ) {
        self.demux.insert_session(ufrag.clone(), id);
        self.peers.insert(
            id,
            Peer {
                role,
                stream: Arc::from(stream),
                pc,
                ufrag,
                connected: false,
                connect_deadline: now + self.connect_timeout,
                timer: None,
                tracks,
                video_receiver,
                pending_nomination: None,
                remote: None,
                client: None,
            },
        );
        self.service(now, id);
    }

    /// Drain one connection's outputs: datagrams, state changes, RTP and RTCP; then refile its
    /// timer. Publishers' RTP is forwarded from here.
    fn service(&mut self, now: Instant, id: SessionId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let mut moved = false;
        while let Some(out) = peer.pc.poll_write() {
            if peer.remote != Some(out.transport.peer_addr) {
                peer.remote = Some(out.transport.peer_addr);
                moved = true;
            }
            self.transmits.push_back(Transmit {
                to: out.transport.peer_addr,
                data: out.message,
            });
        }
        let mut became_connected = false;
        let mut failed = false;
        while let Some(event) = peer.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                match state {
                    RTCPeerConnectionState::Connected if !peer.connected => {
                        peer.connected = true;
                        became_connected = true;
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        failed = true
                    }
                    _ => {}
                }
            }
        }
        let mut wants_keyframe = false;
        self.nacked.clear();
        let video_ssrc = peer
            .tracks
            .iter()
            .find(|t| t.kind == MediaKind::Video)
            .map(|t| t.ssrc);
        while let Some(msg) = peer.pc.poll_read() {
            match msg.message {
                RTCMessage::RtpPacket(_, packet) if peer.role == Role::Publisher => {
                    self.inbound.push(packet)
                }
                RTCMessage::RtcpPacket(_, packets) if peer.role == Role::Viewer => {
                    for p in &packets {
                        let p = p.as_any();
                        wants_keyframe |=
                            p.is::<PictureLossIndication>() || p.is::<FullIntraRequest>();
                        if let Some(nack) = p.downcast_ref::<TransportLayerNack>() {
                            if Some(nack.media_ssrc) == video_ssrc {
                                for pair in &nack.nacks {
                                    self.nacked.extend(*pair);
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if peer.role == Role::Viewer && (became_connected || moved) {
            // Media goes to the selected pair's remote, not to wherever the agent last answered
            // a check (clients keep checking backup pairs).
            let media_to = peer
                .tracks
                .first()
                .and_then(|t| selected_remote(&mut peer.pc, t.sender))
                .or(peer.remote);
            let s = self.streams.get_mut(&*peer.stream);
            match (s, media_to) {
                // The DTLS handshake is done: its keys now protect what we forward to it.
                (Some(s), Some(remote)) if became_connected => {
                    let out = peer
                        .pc
                        .local_srtp_keys()
                        .ok_or_else(|| MediaError::Internal("no SRTP keys".into()))
                        .and_then(|keys| ViewerOut::new(now, id, remote, keys, &peer.tracks));
                    match out {
                        Ok(out) => s.outputs.push(out),
                        Err(e) => warn!(session = %id, error = %e, "viewer gets no media"),
                    }
                }
                // ICE moved to another pair: media follows.
                (Some(s), Some(remote)) => {
                    if let Some(out) = s.output_mut(id) {
                        out.remote = remote;
                    }
                }
                _ => {}
            }
        }
        if !self.nacked.is_empty() {
            self.nacked.sort_unstable();
            self.nacked.dedup();
            self.retransmit(now, id);
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let role = peer.role;
        let stream = peer.stream.clone();
        self.refile_timer(id);

        if failed {
            self.remove_peer(now, id, "connection failed or closed", Departure::Dropped);
            return;
        }
        if became_connected {
            match role {
                Role::Publisher => {
                    info!(stream = %stream, session = %id, "stream is live");
                    if let Some(s) = self.streams.get_mut(&*stream) {
                        s.live = true;
                        // Viewers kept through a reconnect need a keyframe from the new source.
                        wants_keyframe |= !s.viewers.is_empty();
                    }
                    self.go_on_air(&stream);
                }
                Role::Viewer => {
                    debug!(stream = %stream, session = %id, "viewer connected");
                    if let Some(s) = self.streams.get_mut(&*stream) {
                        s.viewers_served += 1;
                    }
                    wants_keyframe = true;
                }
            }
        }
        if wants_keyframe {
            self.request_keyframe(now, &stream);
        }
        if !self.inbound.is_empty() {
            let mut packets = std::mem::take(&mut self.inbound);
            self.queue_forward(now, &stream, &mut packets);
            self.inbound = packets;
        }
    }

    /// The hot path: a batch of one publisher's packets to each of its stream's connected
    /// viewers, viewer by viewer.
    fn forward(&mut self, now: Instant, stream: &str, packets: &mut Vec<rtp::Packet>) {
        let Some(s) = self.streams.get_mut(stream) else {
            return;
        };
        // Per packet, once: what it is, the counters, viewers' numbering, the tap. Packets we
        // do not forward leave the batch.
        let kinds = &mut self.batch_kinds;
        kinds.clear();
        let metrics = &self.metrics;
        packets.retain_mut(|packet| {
            let Some(track) = s
                .tracks
                .iter()
                .find(|t| t.payload_type == packet.header.payload_type)
            else {
                return false; // a payload type we did not negotiate (e.g. RTX): drop
            };
            let kind = track.kind;
            let format = track.format;
            let clock_rate = track.codec.rtp_codec.clock_rate;
            Metrics::add(&metrics.packets_received, 1);
            Metrics::add(&metrics.bytes_received, packet.payload.len() as u64);
            s.ingest.bytes += packet.payload.len() as u64;
            if kind == MediaKind::Video {
                s.video_ssrc = Some(packet.header.ssrc);
                if track.format.is_keyframe(&packet.payload) {
                    s.keyframes.keyframe_arrived();
                    s.ingest.keyframe(packet.header.timestamp, clock_rate);
                }
            }
            // Header extension ids are per connection; viewers negotiated their own. Dropping
            // them also keeps the clones below free of allocation.
            packet.header.extension = false;
            packet.header.extensions.clear();
            packet.header.extension_profile = 0;
            let numbering = match kind {
                MediaKind::Video => &mut s.video_out,
                MediaKind::Audio => &mut s.audio_out,
            };
            let new_source = numbering.rewrite(now, &mut packet.header, clock_rate);
            if let Some(tap) = s.tap.as_mut() {
                if new_source && kind == MediaKind::Video {
                    tap.source_changed();
                }
                tap.rtp(kind, format, packet);
            }
            if kind == MediaKind::Video {
                s.history.push(packet);
            }
            kinds.push(kind);
            true
        });
        // Each viewer's datagrams next to each other (one GSO send per run of equal sizes).
        let (forwarded, forwarded_bytes) = Pool::seal(
            self.pool.as_deref(),
            now,
            &mut s.outputs,
            packets,
            kinds,
            &mut self.transmits,
        );
        for out in s.outputs.iter_mut().filter(|o| now >= o.next_report) {
            out.next_report = now + fanout::SENDER_REPORT_INTERVAL;
            if let Some(peer) = self.peers.get_mut(&out.id) {
                send_reports(now, &self.clock, out, peer, &mut self.transmits);
                refile(&mut self.timers, out.id, peer);
            }
        }
        Metrics::add(&self.metrics.packets_forwarded, forwarded);
        Metrics::add(&self.metrics.bytes_forwarded, forwarded_bytes);
    }

    /// Answer a viewer's NACK (the sequence numbers in `self.nacked`) from its stream's history.
    fn retransmit(&mut self, now: Instant, id: SessionId) {
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        let Some(s) = self.streams.get_mut(&*peer.stream) else {
            return;
        };
        let history = &s.history;
        let Some(out) = s.outputs.iter_mut().find(|o| o.id == id) else {
            return;
        };
        let mut sent = 0;
        for &seq in self.nacked.iter().take(fanout::MAX_RETRANSMITS_PER_NACK) {
            // Too old, or never forwarded: nothing to send.
            if let Some(packet) = history.get(seq) {
                if out.send(now, packet, MediaKind::Video, &mut self.transmits) {
                    sent += 1;
                }
            }
        }
        Metrics::add(&self.metrics.packets_retransmitted, sent);
    }

    fn request_keyframe(&mut self, now: Instant, stream: &str) {
        Metrics::add(&self.metrics.keyframe_requests, 1);
        let Some(s) = self.streams.get_mut(stream) else {
            return;
        };
        if s.keyframes.request(now) {
            self.send_pli(now, stream);
        }
    }

    fn poll_keyframe(&mut self, now: Instant, stream: &str) {
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
        let (Some(publisher), Some(media_ssrc)) = (s.publisher, s.video_ssrc) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&publisher) else {
            return;
        };
        let Some(receiver_id) = peer.video_receiver else {
            return;
        };
        if !peer.connected {
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

    fn refile_timer(&mut self, id: SessionId) {
        if let Some(peer) = self.peers.get_mut(&id) {
            refile(&mut self.timers, id, peer);
        }
    }

    fn remove_peer(&mut self, now: Instant, id: SessionId, reason: &str, how: Departure) {
        let Some(mut peer) = self.peers.remove(&id) else {
            return;
        };
        if let Some(t) = peer.timer.take() {
            self.timers.remove(&(t, id));
        }
        self.demux.remove_session(&peer.ufrag, id);
        if let Some(c) = peer.client {
            if let Some(n) = self.per_address.get_mut(&c) {
                *n -= 1;
                if *n == 0 {
                    self.per_address.remove(&c);
                }
            }
        }
        let _ = peer.pc.close();
        while let Some(out) = peer.pc.poll_write() {
            self.transmits.push_back(Transmit {
                to: out.transport.peer_addr,
                data: out.message,
            });
        }
        match peer.role {
            Role::Viewer => {
                Metrics::sub(&self.metrics.viewers, 1);
                debug!(stream = %peer.stream, session = %id, reason, "viewer removed");
                if let Some(s) = self.streams.get_mut(&*peer.stream) {
                    s.remove_viewer(id);
                }
            }
            Role::Publisher => self.end_stream(now, &peer.stream, id, reason, how),
        }
        if self.streams.get(&*peer.stream).is_some_and(|s| s.is_idle()) {
            self.streams.remove(&*peer.stream);
        }
    }

    /// A stream's publisher `id` is gone. Ended: the stream goes offline, its viewers are told
    /// (BYE) and dropped. Dropped: the stream stays on air with its viewers until the reconnect
    /// grace runs out.
    fn end_stream(
        &mut self,
        now: Instant,
        stream: &str,
        id: SessionId,
        reason: &str,
        how: Departure,
    ) {
        Metrics::sub(&self.metrics.publishers, 1);
        let grace = self.reconnect_grace;
        let Some(s) = self
            .streams
            .get_mut(stream)
            .filter(|s| s.publisher == Some(id))
        else {
            return;
        };
        s.publisher = None;
        s.live = false;
        s.video_ssrc = None;
        if how == Departure::Dropped && s.on_air && !grace.is_zero() {
            info!(stream, session = %id, reason, grace_secs = grace.as_secs_f32(), "publisher dropped; waiting for it to reconnect");
            s.reconnect_deadline = Some(now + grace);
            return;
        }
        info!(stream, session = %id, reason, "publisher removed; stream offline");
        self.take_off_air(now, stream, reason);
    }

    /// The stream has no publisher and will get none: `Offline`, and its viewers are told (BYE)
    /// and dropped.
    fn take_off_air(&mut self, now: Instant, stream: &str, reason: &str) {
        let Some(s) = self.streams.get_mut(stream) else {
            return;
        };
        if s.reconnect_deadline.take().is_some() {
            info!(stream, reason, "stream offline");
        }
        s.tracks.clear();
        s.pending.clear();
        s.history.clear();
        s.outputs.clear();
        s.tap = None;
        s.tap_next_keyframe = None;
        if std::mem::take(&mut s.on_air) {
            self.events.push_back(StreamEvent::Offline {
                stream: stream.to_owned(),
            });
        }
        let viewers = std::mem::take(&mut s.viewers);
        for v in viewers {
            self.say_goodbye(now, v);
            self.remove_peer(now, v, "publisher left", Departure::Ended);
        }
        if self.streams.get(stream).is_some_and(|s| s.is_idle()) {
            self.streams.remove(stream);
        }
    }

    /// Give a copy of `stream`'s RTP to `tap` until the stream goes offline; ask its publisher
    /// for a keyframe every `keyframe_interval` (an HLS segmenter needs them regularly; WebRTC
    /// encoders send them only when asked).
    pub fn set_tap(
        &mut self,
        now: Instant,
        stream: &str,
        tap: Box<dyn StreamTap>,
        keyframe_interval: Duration,
    ) {
        if let Some(s) = self.streams.get_mut(stream) {
            s.tap = Some(tap);
            s.tap_keyframe_interval = keyframe_interval;
            s.tap_next_keyframe = (!keyframe_interval.is_zero()).then_some(now);
        }
    }

    /// Announce the stream live, unless it already is (a publisher resuming it).
    fn go_on_air(&mut self, stream: &str) {
        if let Some(s) = self.streams.get_mut(stream) {
            if !std::mem::replace(&mut s.on_air, true) {
                // A new broadcast: those already watching (waiting for it) count once.
                let peers = &self.peers;
                s.viewers_served = s
                    .viewers
                    .iter()
                    .filter(|v| peers.get(v).is_some_and(|p| p.connected))
                    .count() as u64;
                self.events.push_back(StreamEvent::Live {
                    stream: stream.to_owned(),
                });
            }
        }
    }

    /// A publisher that is not a WebRTC peer (RTMP ingest): its tracks are given, its RTP comes
    /// through [`Sfu::push_ingest`], and it is live at once.
    pub fn publish_ingest(
        &mut self,
        stream: &str,
        tracks: Vec<PublishedTrack>,
    ) -> Result<SessionId> {
        if self
            .streams
            .get(stream)
            .is_some_and(|s| s.publisher.is_some())
        {
            return Err(MediaError::StreamBusy(stream.to_owned()));
        }
        let id = SessionId::random();
        let entry = self
            .streams
            .entry(stream.to_owned())
            .or_insert_with(|| Stream::new(stream.to_owned(), self.pli_min_interval));
        let resumed = entry.reconnect_deadline.take().is_some();
        entry.publisher = Some(id);
        entry.tracks = tracks;
        entry.video_ssrc = None;
        entry.ingest.new_source();
        entry.live = true;
        self.ingest.insert(id, Arc::from(stream));
        Metrics::add(&self.metrics.publishers, 1);
        Metrics::add(&self.metrics.sessions_created, 1);
        info!(stream, session = %id, resumed, "ingest publisher live");
        self.go_on_air(stream);
        Ok(id)
    }

    /// RTP from an ingest publisher, forwarded like a WebRTC publisher's.
    pub fn push_ingest(
        &mut self,
        now: Instant,
        id: SessionId,
        mut packets: Vec<rtp::Packet>,
    ) -> Result<()> {
        let stream = self
            .ingest
            .get(&id)
            .cloned()
            .ok_or(MediaError::UnknownSession)?;
        self.queue_forward(now, &stream, &mut packets);
        Ok(())
    }

    /// The ingest publisher stopped (or its connection dropped).
    pub fn close_ingest(&mut self, now: Instant, id: SessionId, reason: &str, how: Departure) {
        if let Some(stream) = self.ingest.remove(&id) {
            self.end_stream(now, &stream, id, reason, how);
        }
    }

    /// End `stream`'s publisher, WHIP peer or ingest, and take the stream off the air now, with
    /// no reconnect grace (its stream key was rotated: it may not come back). Also ends a
    /// stream waiting for a dropped publisher. False if the stream had no publisher.
    pub fn end_publisher(&mut self, now: Instant, stream: &str, reason: &str) -> bool {
        let Some(s) = self.streams.get(stream) else {
            return false;
        };
        match (s.publisher, s.reconnect_deadline.is_some()) {
            (Some(id), _) if self.ingest.contains_key(&id) => {
                self.close_ingest(now, id, reason, Departure::Ended)
            }
            (Some(id), _) => self.remove_peer(now, id, reason, Departure::Ended),
            (None, true) => self.take_off_air(now, stream, reason),
            (None, false) => return false,
        }
        true
    }

    /// RFC 3550 §6.6 BYE on each of a viewer's SSRCs, so its tracks end at once.
    fn say_goodbye(&mut self, now: Instant, id: SessionId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if !peer.connected {
            return;
        }
        for t in &peer.tracks {
            if let Some(mut sender) = peer.pc.rtp_sender(t.sender) {
                let bye = Goodbye {
                    sources: vec![t.ssrc],
                    reason: Bytes::from_static(b"stream ended"),
                };
                if let Err(e) = sender.write_rtcp(now, vec![Box::new(bye)]) {
                    warn!(session = %id, error = %e, "could not send BYE");
                }
            }
        }
        while let Some(out) = peer.pc.poll_write() {
            self.transmits.push_back(Transmit {
                to: out.transport.peer_addr,
                data: out.message,
            });
        }
    }
}

/// RFC 3550 §6.4.1 sender reports on each of a viewer's tracks that has sent anything (they
/// map RTP time to wall-clock time, which receivers need to play audio and video in sync),
/// written through its connection so that its SRTCP context protects them.
fn send_reports(
    now: Instant,
    clock: &WallClock,
    out: &ViewerOut,
    peer: &mut Peer,
    transmits: &mut VecDeque<Transmit>,
) {
    for t in &out.tracks {
        let Some(report) = t.sent.report(now, clock, t.ssrc, t.clock_rate) else {
            continue;
        };
        let Some(sender) = peer
            .tracks
            .iter()
            .find(|v| v.kind == t.kind)
            .map(|v| v.sender)
        else {
            continue;
        };
        if let Some(mut sender) = peer.pc.rtp_sender(sender) {
            if let Err(e) = sender.write_rtcp(now, vec![Box::new(report)]) {
                debug!(error = %e, "sender report not sent");
            }
        }
    }
    while let Some(msg) = peer.pc.poll_write() {
        transmits.push_back(Transmit {
            to: msg.transport.peer_addr,
            data: msg.message,
        });
    }
}

/// File `peer` in `timers` under its next deadline, if that changed.
fn refile(timers: &mut BTreeSet<(Instant, SessionId)>, id: SessionId, peer: &mut Peer) {
    let mut next = peer.pc.poll_timeout();
    if !peer.connected {
        next = Some(next.map_or(peer.connect_deadline, |t| t.min(peer.connect_deadline)));
    }
    if next == peer.timer {
        return;
    }
    if let Some(old) = peer.timer.take() {
        timers.remove(&(old, id));
    }
    if let Some(t) = next {
        timers.insert((t, id));
        peer.timer = Some(t);
    }
}

/// The remote address of the connection's selected ICE candidate pair.
fn selected_remote(
    pc: &mut RTCPeerConnection,
    sender: rtc::rtp_transceiver::RTCRtpSenderId,
) -> Option<SocketAddr> {
    let sender = pc.rtp_sender(sender)?;
    let pair = sender
        .transport()?
        .ice_transport()
        .get_selected_candidate_pair()?;
    let remote = pair.remote();
    let ip: std::net::IpAddr = remote.address.parse().ok()?;
    Some(SocketAddr::new(ip, remote.port))
}

fn find_video_receiver(pc: &mut RTCPeerConnection) -> Option<RTCRtpReceiverId> {
    let ids: Vec<_> = pc.get_receivers().collect();
    ids.into_iter().find(|id| {
        pc.rtp_receiver(*id)
            .is_some_and(|r| MediaKind::from_rtc(r.track().kind()) == Some(MediaKind::Video))
    })
}

fn codec_names(tracks: &[PublishedTrack]) -> Vec<String> {
    tracks
        .iter()
        .map(|t| t.codec.rtp_codec.mime_type.clone())
        .collect()
}
