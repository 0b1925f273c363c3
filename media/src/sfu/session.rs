//! Where a WHIP or WHEP offer is answered: the capacity limits checked, the peer connection
//! built ([`super::peer`]) and filed; trickle ICE and DELETE of a session.

use std::net::IpAddr;
use std::time::Instant;

use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use tracing::{debug, info};

use super::connection::{Peer, PeerKind};
use super::peer::{self, IceCredentials};
use super::stream::{self, Stream};
use super::{Departure, Role, SessionAnswer, SessionId, Sfu};
use crate::codec::MediaKind;
use crate::error::{MediaError, Result};
use crate::metrics::Metrics;
use crate::slots::address_key;

impl Sfu {
    /// WHIP: a publisher's offer for `stream`. The caller has already checked the stream key.
    pub fn publish(
        &mut self,
        now: Instant,
        stream: &str,
        offer_sdp: &str,
        client: Option<IpAddr>,
    ) -> Result<SessionAnswer> {
        let result = self.try_publish(now, stream, offer_sdp, client.map(address_key));
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
        if self.streams.get(stream).is_some_and(Stream::has_publisher) {
            return Err(MediaError::StreamBusy(stream.to_owned()));
        }
        self.check_capacity(Role::Publisher, client)?;
        let offer = peer::parse_offer(offer_sdp, true)?;
        let creds = IceCredentials::random();
        let (mut pc, sdp, tracks) = peer::build_publisher(now, &self.settings, &creds, offer)?;
        let video_receiver = find_video_receiver(&mut pc);
        let id = SessionId::random();
        let entry = self.stream_entry(stream);
        let resumed = entry.publisher_connecting(id, tracks);
        info!(stream, session = %id, codecs = ?stream::codec_names(&entry.tracks), resumed, "publisher offered");
        self.insert_peer(
            now,
            id,
            stream,
            pc,
            creds.ufrag,
            PeerKind::Publisher { video_receiver },
            client,
        );
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
        let sender = tracks.first().map(|t| t.sender);
        self.insert_peer(
            now,
            id,
            stream,
            pc,
            creds.ufrag,
            PeerKind::Viewer { sender, tracks },
            client,
        );
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

    fn count_result<T>(&self, result: &Result<T>) {
        match result {
            Ok(_) => Metrics::add(&self.metrics.sessions_created, 1),
            Err(_) => Metrics::add(&self.metrics.sessions_rejected, 1),
        }
    }

    pub(super) fn stream_entry(&mut self, stream: &str) -> &mut Stream {
        let (pli, gop) = (self.pli_min_interval, self.gop_cache_bytes);
        self.streams
            .entry(stream.to_owned())
            .or_insert_with(|| Stream::new(stream.to_owned(), pli, gop))
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_peer(
        &mut self,
        now: Instant,
        id: SessionId,
        stream: &str,
        pc: RTCPeerConnection,
        ufrag: String,
        kind: PeerKind,
        client: Option<IpAddr>,
    ) {
        self.demux.insert_session(ufrag.clone(), id);
        let mut peer = Peer::new(stream, pc, ufrag, now + self.connect_timeout, kind);
        if let Some(c) = client {
            peer.client = Some(c);
            *self.per_address.entry(c).or_insert(0) += 1;
        }
        self.peers.insert(id, peer);
        self.service(now, id);
    }
}

fn find_video_receiver(pc: &mut RTCPeerConnection) -> Option<RTCRtpReceiverId> {
    let ids: Vec<_> = pc.get_receivers().collect();
    ids.into_iter().find(|id| {
        pc.rtp_receiver(*id)
            .is_some_and(|r| MediaKind::from_rtc(r.track().kind()) == Some(MediaKind::Video))
    })
}
