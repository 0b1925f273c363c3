//! A stream going on and off the air: a publisher's connection coming up, a publisher ending
//! its stream or dropping (and the reconnect grace that keeps viewers for it), sessions
//! removed, viewers told with BYE; RTMP ingest publishers, which are not peer connections;
//! the HLS tap.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::rtcp::goodbye::Goodbye;
use rtc::rtp;
use rtc::sansio::Protocol;
use tracing::{debug, info, warn};

use super::connection::{Peer, PeerKind};
use super::fanout::ViewerOut;
use super::peer::PublishedTrack;
use super::stream::Publishing;
use super::{Departure, SessionId, Sfu, StreamEvent, StreamTap};
use crate::error::{MediaError, Result};
use crate::metrics::Metrics;

impl Sfu {
    /// Publisher `id`'s connection is up (or an ingest publisher started): the stream is live.
    /// Announced unless it already was on air (a publisher resuming it).
    pub(super) fn go_on_air(&mut self, stream: &str, id: SessionId) {
        let Some(s) = self.streams.get_mut(stream) else {
            return;
        };
        if s.publisher_live(id) {
            // A new broadcast: those already watching (waiting for it) count once.
            let peers = &self.peers;
            s.viewers_served = s
                .viewers
                .iter()
                .filter(|v| peers.get(v).is_some_and(Peer::connected))
                .count() as u64;
            self.events.push_back(StreamEvent::Live {
                stream: stream.to_owned(),
            });
        }
    }

    pub(super) fn remove_peer(
        &mut self,
        now: Instant,
        id: SessionId,
        reason: &str,
        how: Departure,
    ) {
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
        peer.drain_writes(&mut self.transmits);
        match peer.kind {
            PeerKind::Viewer { .. } => {
                Metrics::sub(&self.metrics.viewers, 1);
                debug!(stream = %peer.stream, session = %id, reason, "viewer removed");
                if let Some(s) = self.streams.get_mut(&*peer.stream) {
                    s.remove_viewer(id);
                }
            }
            PeerKind::Publisher { .. } => self.end_stream(now, &peer.stream, id, reason, how),
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
            .filter(|s| s.publisher() == Some(id))
        else {
            return;
        };
        s.video_ssrc = None;
        if how == Departure::Dropped && s.on_air() && !grace.is_zero() {
            info!(stream, session = %id, reason, grace_secs = grace.as_secs_f32(), "publisher dropped; waiting for it to reconnect");
            s.publishing = Publishing::Reconnecting {
                deadline: now + grace,
            };
            return;
        }
        info!(stream, session = %id, reason, "publisher removed; stream offline");
        self.take_off_air(now, stream, reason);
    }

    /// The stream has no publisher and will get none: `Offline`, and its viewers are told (BYE)
    /// and dropped.
    pub(super) fn take_off_air(&mut self, now: Instant, stream: &str, reason: &str) {
        let Some(s) = self.streams.get_mut(stream) else {
            return;
        };
        if s.reconnect_deadline().is_some() {
            info!(stream, reason, "stream offline");
        }
        let was_on_air = s.on_air();
        s.publishing = Publishing::Idle;
        s.tracks.clear();
        s.pending.clear();
        s.history.clear();
        s.gop.clear();
        s.tap = None;
        s.tap_next_keyframe = None;
        if was_on_air {
            self.events.push_back(StreamEvent::Offline {
                stream: stream.to_owned(),
            });
        }
        let mut outputs = std::mem::take(&mut s.outputs);
        outputs.append(&mut s.joining);
        let viewers = std::mem::take(&mut s.viewers);
        for out in &outputs {
            self.say_goodbye(now, out);
        }
        for v in viewers {
            self.remove_peer(now, v, "publisher left", Departure::Ended);
        }
        if self.streams.get(stream).is_some_and(|s| s.is_idle()) {
            self.streams.remove(stream);
        }
    }

    /// RFC 3550 §6.6 BYE on each of a connected viewer's SSRCs, so its tracks end at once.
    fn say_goodbye(&mut self, now: Instant, out: &ViewerOut) {
        let Some(peer) = self.peers.get_mut(&out.id) else {
            return;
        };
        for t in &out.tracks {
            if let Some(mut sender) = peer.pc.rtp_sender(t.sender) {
                let bye = Goodbye {
                    sources: vec![t.ssrc],
                    reason: Bytes::from_static(b"stream ended"),
                };
                if let Err(e) = sender.write_rtcp(now, vec![Box::new(bye)]) {
                    warn!(session = %out.id, error = %e, "could not send BYE");
                }
            }
        }
        peer.drain_writes(&mut self.transmits);
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

    /// A publisher that is not a WebRTC peer (RTMP ingest): its tracks are given, its RTP comes
    /// through [`Sfu::push_ingest`], and it is live at once.
    pub fn publish_ingest(
        &mut self,
        stream: &str,
        tracks: Vec<PublishedTrack>,
    ) -> Result<SessionId> {
        if self.streams.get(stream).is_some_and(|s| s.has_publisher()) {
            return Err(MediaError::StreamBusy(stream.to_owned()));
        }
        let id = SessionId::random();
        let resumed = self.stream_entry(stream).publisher_connecting(id, tracks);
        self.ingest.insert(id, Arc::from(stream));
        Metrics::add(&self.metrics.publishers, 1);
        Metrics::add(&self.metrics.sessions_created, 1);
        info!(stream, session = %id, resumed, "ingest publisher live");
        self.go_on_air(stream, id);
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

    /// An ingest publisher's AAC frame, for the stream's tap (HLS) only: put on the stream's
    /// video timeline as the tap sees it. Dropped without a tap, or before the publisher's
    /// first video packet (its timeline is not known yet).
    pub fn push_ingest_aac(&mut self, id: SessionId, aac: super::AacFrame) {
        let Some(stream) = self.ingest.get(&id) else {
            return;
        };
        let Some(s) = self.streams.get_mut(&**stream) else {
            return;
        };
        let (Some(tap), Some(ssrc)) = (s.tap.as_mut(), s.video_ssrc) else {
            return;
        };
        if let Some(ts) = s.video_out.stream_timestamp(ssrc, aac.video_ts) {
            tap.aac(&aac.config, aac.frame, ts);
        }
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
        match s.publishing {
            Publishing::Connecting { publisher, .. } | Publishing::Live { publisher }
                if self.ingest.contains_key(&publisher) =>
            {
                self.close_ingest(now, publisher, reason, Departure::Ended)
            }
            Publishing::Connecting { publisher, .. } | Publishing::Live { publisher } => {
                self.remove_peer(now, publisher, reason, Departure::Ended)
            }
            Publishing::Reconnecting { .. } => self.take_off_air(now, stream, reason),
            Publishing::Idle => return false,
        }
        true
    }
}
