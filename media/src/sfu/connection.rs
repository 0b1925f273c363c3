//! One peer connection's I/O: a datagram in ([`Sfu::handle_datagram`]), a timer run, and then
//! everything the connection has to say drained ([`Sfu::service`]): datagrams to send, state
//! changes, a publisher's RTP (queued for [`super::forward`]) and a viewer's RTCP (keyframe
//! requests, NACKs).

use std::collections::{BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tracing::{debug, info, warn};

use super::fanout::ViewerOut;
use super::peer::ViewerTrack;
use super::{Departure, Role, SessionId, Sfu, Transmit};
use crate::error::MediaError;
use crate::metrics::Metrics;
use crate::stun;

/// A WHIP or WHEP session's peer connection.
pub(super) struct Peer {
    /// Shared, so the per-datagram path clones a pointer, not the name.
    pub stream: Arc<str>,
    pub pc: RTCPeerConnection,
    pub ufrag: String,
    pub state: PeerState,
    pub kind: PeerKind,
    /// The deadline this peer is filed under in `Sfu::timers`.
    pub timer: Option<Instant>,
    /// Where the connection last sent to: the selected candidate pair's remote address.
    pub remote: Option<SocketAddr>,
    /// `remote` changed since [`Sfu::service`] last looked (ICE moved to another pair).
    pub moved: bool,
    /// The client address it was created from (IPv6 by /64), counted in `Sfu::per_address`.
    pub client: Option<IpAddr>,
}

pub(super) enum PeerState {
    /// ICE and DTLS are not done; the session is dropped at `deadline`.
    Connecting {
        deadline: Instant,
        /// The client's nominating check, to replay once our own check of that pair has
        /// succeeded (see [`Sfu::handle_datagram`]).
        pending_nomination: Option<(SocketAddr, BytesMut)>,
    },
    Connected,
}

pub(super) enum PeerKind {
    Publisher {
        /// The receiver of the video track, where PLIs are written.
        video_receiver: Option<RTCRtpReceiverId>,
    },
    Viewer {
        /// A sender of the connection, to find its selected candidate pair.
        sender: Option<RTCRtpSenderId>,
        /// What it sends on, until the connection is up and they move into its `ViewerOut`.
        tracks: Vec<ViewerTrack>,
    },
}

impl Peer {
    pub fn new(
        stream: &str,
        pc: RTCPeerConnection,
        ufrag: String,
        deadline: Instant,
        kind: PeerKind,
    ) -> Self {
        Self {
            stream: Arc::from(stream),
            pc,
            ufrag,
            state: PeerState::Connecting {
                deadline,
                pending_nomination: None,
            },
            kind,
            timer: None,
            remote: None,
            moved: false,
            client: None,
        }
    }

    pub fn role(&self) -> Role {
        match self.kind {
            PeerKind::Publisher { .. } => Role::Publisher,
            PeerKind::Viewer { .. } => Role::Viewer,
        }
    }

    pub fn connected(&self) -> bool {
        matches!(self.state, PeerState::Connected)
    }

    /// Queue every datagram the connection has written, noting a new remote address.
    pub fn drain_writes(&mut self, transmits: &mut VecDeque<Transmit>) {
        while let Some(out) = self.pc.poll_write() {
            if self.remote != Some(out.transport.peer_addr) {
                self.remote = Some(out.transport.peer_addr);
                self.moved = true;
            }
            transmits.push_back(Transmit {
                to: out.transport.peer_addr,
                data: out.message,
            });
        }
    }

    /// File this peer in `timers` under its next deadline, if that changed.
    pub fn refile(&mut self, timers: &mut BTreeSet<(Instant, SessionId)>, id: SessionId) {
        let mut next = self.pc.poll_timeout();
        if let PeerState::Connecting { deadline, .. } = self.state {
            next = Some(next.map_or(deadline, |t| t.min(deadline)));
        }
        if next == self.timer {
            return;
        }
        if let Some(old) = self.timer.take() {
            timers.remove(&(old, id));
        }
        if let Some(t) = next {
            timers.insert((t, id));
            self.timer = Some(t);
        }
    }
}

impl Sfu {
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
        let replay = match &mut peer.state {
            PeerState::Connected => None,
            PeerState::Connecting {
                pending_nomination, ..
            } => {
                if stun::is_nominating_request(&data) {
                    *pending_nomination = Some((from, data.clone()));
                    None
                } else if stun::is_binding_success(&data) {
                    pending_nomination.take()
                } else {
                    None
                }
            }
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

    /// A peer's timer is due: the connect deadline, or the connection's own (ICE, DTLS, RTCP).
    pub(super) fn peer_timeout(&mut self, now: Instant, id: SessionId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        peer.timer = None;
        if matches!(peer.state, PeerState::Connecting { deadline, .. } if now >= deadline) {
            self.remove_peer(now, id, "did not connect in time", Departure::Dropped);
            return;
        }
        if let Err(e) = peer.pc.handle_timeout(now) {
            debug!(session = %id, error = %e, "timeout handling failed");
        }
        self.service(now, id);
    }

    /// Drain one connection's outputs: datagrams, state changes, RTP and RTCP; then refile its
    /// timer. Publishers' RTP is queued for forwarding from here.
    pub(super) fn service(&mut self, now: Instant, id: SessionId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let mut became_connected = false;
        let mut failed = false;
        while let Some(event) = peer.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                match state {
                    RTCPeerConnectionState::Connected if !peer.connected() => {
                        peer.state = PeerState::Connected;
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
        let mut started_from_gop = false;
        self.nacked.clear();
        let role = peer.role();
        while let Some(msg) = peer.pc.poll_read() {
            match msg.message {
                RTCMessage::RtpPacket(_, packet) if role == Role::Publisher => {
                    self.inbound.push(packet)
                }
                RTCMessage::RtcpPacket(_, packets) if role == Role::Viewer => {
                    for p in &packets {
                        let p = p.as_any();
                        wants_keyframe |=
                            p.is::<PictureLossIndication>() || p.is::<FullIntraRequest>();
                        if let Some(nack) = p.downcast_ref::<TransportLayerNack>() {
                            for pair in &nack.nacks {
                                self.nacked
                                    .extend(pair.into_iter().map(|s| (nack.media_ssrc, s)));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        // Everything the connection wrote — for the datagram, the timer, and while its events
        // and reads were handled (a DTLS flight, RTCP) — goes out now.
        peer.drain_writes(&mut self.transmits);
        let moved = std::mem::take(&mut peer.moved);
        if let PeerKind::Viewer { sender, tracks } = &mut peer.kind {
            if became_connected || moved {
                // Media goes to the selected pair's remote, not to wherever the agent last
                // answered a check (clients keep checking backup pairs).
                let media_to = sender
                    .and_then(|s| selected_remote(&mut peer.pc, s))
                    .or(peer.remote);
                match (self.streams.get_mut(&*peer.stream), media_to) {
                    // The DTLS handshake is done: its keys now protect what we forward to it.
                    (Some(s), Some(remote)) if became_connected => {
                        let out = peer
                            .pc
                            .local_srtp_keys()
                            .ok_or(MediaError::NoSrtpKeys)
                            .and_then(|keys| {
                                ViewerOut::new(now, id, remote, keys, std::mem::take(tracks))
                            });
                        match out {
                            Ok(out) => {
                                started_from_gop = s.add_output(now, out, &mut self.transmits)
                            }
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
        }
        let stream = peer.stream.clone();
        peer.refile(&mut self.timers, id);
        if !self.nacked.is_empty() {
            self.nacked.sort_unstable();
            self.nacked.dedup();
            self.retransmit(now, id, &stream);
        }
        if failed {
            self.remove_peer(now, id, "connection failed or closed", Departure::Dropped);
            return;
        }
        if became_connected {
            match role {
                Role::Publisher => {
                    info!(stream = %stream, session = %id, "stream is live");
                    // Viewers kept through a reconnect need a keyframe from the new source.
                    wants_keyframe |= self
                        .streams
                        .get(&*stream)
                        .is_some_and(|s| !s.viewers.is_empty());
                    self.go_on_air(&stream, id);
                }
                Role::Viewer => {
                    debug!(stream = %stream, session = %id, from_gop = started_from_gop, "viewer connected");
                    if started_from_gop {
                        Metrics::add(&self.metrics.gop_starts, 1);
                    }
                    if let Some(s) = self.streams.get_mut(&*stream) {
                        s.viewers_served += 1;
                    }
                    // Started from the stream's current GOP: no keyframe needed.
                    wants_keyframe |= !started_from_gop;
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
}

/// The remote address of the connection's selected ICE candidate pair.
fn selected_remote(pc: &mut RTCPeerConnection, sender: RTCRtpSenderId) -> Option<SocketAddr> {
    let sender = pc.rtp_sender(sender)?;
    let pair = sender
        .transport()?
        .ice_transport()
        .get_selected_candidate_pair()?;
    let remote = pair.remote();
    let ip: IpAddr = remote.address.parse().ok()?;
    Some(SocketAddr::new(ip, remote.port))
}
