//! Where a packet is forwarded: a publisher's RTP, batched per stream, to every connected
//! viewer of the stream ([`Sfu::forward`], the hot path); viewers' NACKs answered from the
//! stream's history; sender reports.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use rtc::rtp;
use tracing::debug;

use super::connection::Peer;
use super::fanout::{self, Pool, ViewerOut, WallClock};
use super::gop::Pushed;
use super::stream::Stream;
use super::{SessionId, Sfu, Transmit};
use crate::codec::MediaKind;
use crate::metrics::Metrics;

impl Sfu {
    /// Queue a publisher's packets (moved out of `packets`) on their stream for the next
    /// [`Sfu::forward_pending`].
    pub(super) fn queue_forward(
        &mut self,
        now: Instant,
        stream: &Arc<str>,
        packets: &mut Vec<rtp::Packet>,
    ) {
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

    pub(super) fn forward_pending(&mut self, now: Instant) {
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

    /// The hot path: a batch of one publisher's packets to each of its stream's connected
    /// viewers, viewer by viewer.
    fn forward(&mut self, now: Instant, stream: &str, packets: &mut Vec<rtp::Packet>) {
        let Some(s) = self.streams.get_mut(stream) else {
            return;
        };
        // Per packet, once: what it is, the counters, viewers' numbering, the tap, the GOP.
        // Packets we do not forward leave the batch.
        let kinds = &mut self.batch_kinds;
        kinds.clear();
        let metrics = &self.metrics;
        let readers = !s.joining.is_empty();
        let mut gop_overflowed = false;
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
            let mut keyframe = false;
            if kind == MediaKind::Video {
                s.video_ssrc = Some(packet.header.ssrc);
                if format.is_keyframe(&packet.payload) {
                    keyframe = true;
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
                tap.rtp(kind, format, packet, keyframe);
            }
            if kind == MediaKind::Video {
                s.history.push(packet);
                if new_source {
                    s.gop.clear();
                }
                gop_overflowed |= s.gop.push(packet, keyframe, readers) == Pushed::Overflowed;
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
        if !s.joining.is_empty() {
            // Joining viewers get audio live, and video from the GOP as it falls due.
            for out in &mut s.joining {
                for (p, _) in packets
                    .iter()
                    .zip(kinds.iter())
                    .filter(|(_, k)| **k == MediaKind::Audio)
                {
                    out.send(now, p, MediaKind::Audio, &mut self.transmits);
                }
            }
            if gop_overflowed {
                s.end_catch_up();
            } else {
                s.catch_up(now, &mut self.transmits);
            }
        }
        let timelines = [timeline(s, MediaKind::Video), timeline(s, MediaKind::Audio)];
        let outputs = s.outputs.iter_mut().chain(s.joining.iter_mut());
        for out in outputs.filter(|o| now >= o.next_report) {
            out.next_report = now + fanout::SENDER_REPORT_INTERVAL;
            if out.start.as_ref().is_some_and(|st| st.expired(now)) {
                // No NACK reaches back that far, and its sequence numbers will come round again.
                out.start = None;
            }
            if let Some(peer) = self.peers.get_mut(&out.id) {
                send_reports(now, &self.clock, out, peer, &mut self.transmits, timelines);
                peer.refile(&mut self.timers, out.id);
            }
        }
        Metrics::add(&self.metrics.packets_forwarded, forwarded);
        Metrics::add(&self.metrics.bytes_forwarded, forwarded_bytes);
        if gop_overflowed {
            // Too long since the last keyframe to keep: ask for one, so joining viewers can
            // start at once again (WebRTC encoders send few keyframes unasked).
            self.request_keyframe(now, stream);
        }
    }

    /// Answer a viewer's NACK (`self.nacked`: media SSRC and sequence number) from its
    /// stream's history: video only, the one kind kept.
    pub(super) fn retransmit(&mut self, now: Instant, id: SessionId, stream: &str) {
        let Some(s) = self.streams.get_mut(stream) else {
            return;
        };
        let (history, gop) = (&s.history, &s.gop);
        let outputs = s.outputs.iter_mut().chain(s.joining.iter_mut());
        let Some(out) = outputs.into_iter().find(|o| o.id == id) else {
            return;
        };
        let Some(video_ssrc) = out.ssrc(MediaKind::Video) else {
            return;
        };
        let mut sent = 0;
        let asked = self.nacked.iter().filter(|(ssrc, _)| *ssrc == video_ssrc);
        for &(_, seq) in asked.take(fanout::MAX_RETRANSMITS_PER_NACK) {
            // Too old, or never forwarded: nothing to send.
            if let Some(packet) = history.get(seq).or_else(|| gop.get(seq)) {
                if out.resend(now, packet, &mut self.transmits) {
                    sent += 1;
                }
            }
        }
        Metrics::add(&self.metrics.packets_retransmitted, sent);
    }
}

/// Where the publisher's own timeline puts RTP time for `kind` (`PublishedTrack::source_time`),
/// in the stream's numbering: `None` for a publisher without one, or before its first packet.
fn timeline(s: &Stream, kind: MediaKind) -> Option<(u32, Instant)> {
    let t = s.tracks.iter().find(|t| t.kind == kind)?.source_time?;
    let numbering = match kind {
        MediaKind::Video => &s.video_out,
        MediaKind::Audio => &s.audio_out,
    };
    Some((numbering.stream_timestamp(t.ssrc, t.rtp_ts)?, t.at))
}

/// RFC 3550 §6.4.1 sender reports on each of a viewer's tracks that has sent anything (they
/// map RTP time to wall-clock time, which receivers need to play audio and video in sync),
/// written through its connection so that its SRTCP context protects them. `timelines` (video,
/// audio; see [`timeline`]): the publisher's own, which the reports then follow.
fn send_reports(
    now: Instant,
    clock: &WallClock,
    out: &ViewerOut,
    peer: &mut Peer,
    transmits: &mut VecDeque<Transmit>,
    timelines: [Option<(u32, Instant)>; 2],
) {
    // A viewer still catching up from the GOP gets video at its own pace: reports follow that.
    let live = out.start.as_ref().is_none_or(|s| s.done());
    for t in &out.tracks {
        let timeline = match t.kind {
            MediaKind::Video => timelines[0].filter(|_| live),
            MediaKind::Audio => timelines[1],
        };
        // In the viewer's numbering.
        let timeline = timeline.map(|(ts, at)| (ts.wrapping_add(t.ts_offset), at));
        let Some(report) = t.sent.report(now, clock, t.ssrc, t.clock_rate, timeline) else {
            continue;
        };
        if let Some(mut sender) = peer.pc.rtp_sender(t.sender) {
            if let Err(e) = sender.write_rtcp(now, vec![Box::new(report)]) {
                debug!(error = %e, "sender report not sent");
            }
        }
    }
    peer.drain_writes(transmits);
}
