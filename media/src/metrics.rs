//! Counters of the media core, shared with the HTTP side through an `Arc` (atomics, no lock).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live gauges and monotonically increasing counters.
#[derive(Debug, Default)]
pub struct Metrics {
    pub publishers: AtomicU64,
    pub viewers: AtomicU64,
    pub sessions_created: AtomicU64,
    pub sessions_rejected: AtomicU64,
    pub packets_received: AtomicU64,
    pub bytes_received: AtomicU64,
    pub packets_forwarded: AtomicU64,
    pub bytes_forwarded: AtomicU64,
    pub packets_retransmitted: AtomicU64,
    pub plis_sent: AtomicU64,
    pub keyframe_requests: AtomicU64,
    pub gop_starts: AtomicU64,
    pub datagrams_unroutable: AtomicU64,
    pub hls_transcoders: AtomicU64,
    pub hls_uploads: AtomicU64,
    pub hls_uploads_failed: AtomicU64,
    pub hls_uploads_dropped: AtomicU64,
    pub hls_replay_segments_not_kept: AtomicU64,
    pub hls_packets_dropped: AtomicU64,
    pub hls_frames_dropped: AtomicU64,
    pub hls_ladders_refused: AtomicU64,
    pub hls_parts: AtomicU64,
    pub hls_blocked_requests: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Relaxed);
    }

    /// Prometheus text exposition of every counter, prefixed `glint_`.
    pub fn render_prometheus(&self, out: &mut String) {
        let rows: [(&str, &str, &str, &AtomicU64); 23] = [
            (
                "publishers",
                "gauge",
                "Live WHIP publishers",
                &self.publishers,
            ),
            (
                "viewers",
                "gauge",
                "Connected or connecting WHEP viewers",
                &self.viewers,
            ),
            (
                "sessions_created_total",
                "counter",
                "WHIP/WHEP sessions created",
                &self.sessions_created,
            ),
            (
                "sessions_rejected_total",
                "counter",
                "WHIP/WHEP offers refused",
                &self.sessions_rejected,
            ),
            (
                "rtp_packets_received_total",
                "counter",
                "RTP packets received from publishers",
                &self.packets_received,
            ),
            (
                "rtp_bytes_received_total",
                "counter",
                "RTP payload bytes received from publishers",
                &self.bytes_received,
            ),
            (
                "rtp_packets_forwarded_total",
                "counter",
                "RTP packets forwarded to viewers",
                &self.packets_forwarded,
            ),
            (
                "rtp_bytes_forwarded_total",
                "counter",
                "RTP payload bytes forwarded to viewers",
                &self.bytes_forwarded,
            ),
            (
                "rtp_packets_retransmitted_total",
                "counter",
                "RTP packets sent again to viewers that reported them lost (NACK)",
                &self.packets_retransmitted,
            ),
            (
                "plis_sent_total",
                "counter",
                "PLIs sent to publishers",
                &self.plis_sent,
            ),
            (
                "keyframe_requests_total",
                "counter",
                "Keyframe requests from viewers and joins, before coalescing",
                &self.keyframe_requests,
            ),
            (
                "viewer_gop_starts_total",
                "counter",
                "Viewers started from their stream's current GOP (no keyframe request)",
                &self.gop_starts,
            ),
            (
                "datagrams_unroutable_total",
                "counter",
                "UDP datagrams that matched no session",
                &self.datagrams_unroutable,
            ),
            (
                "hls_transcoders",
                "gauge",
                "Streams whose HLS ladder is being produced",
                &self.hls_transcoders,
            ),
            (
                "hls_uploads_total",
                "counter",
                "HLS objects (segments, playlists) stored or deleted",
                &self.hls_uploads,
            ),
            (
                "hls_uploads_failed_total",
                "counter",
                "HLS objects given up on after retries (storage down)",
                &self.hls_uploads_failed,
            ),
            (
                "hls_uploads_dropped_total",
                "counter",
                "HLS segments dropped after waiting for room in the full upload queue (storage too slow)",
                &self.hls_uploads_dropped,
            ),
            (
                "hls_replay_segments_not_kept_total",
                "counter",
                "HLS segments not kept for a replay: their broadcast was over its size cap",
                &self.hls_replay_segments_not_kept,
            ),
            (
                "hls_packets_dropped_total",
                "counter",
                "RTP packets not given to an HLS transcoder because it was behind",
                &self.hls_packets_dropped,
            ),
            (
                "hls_frames_dropped_total",
                "counter",
                "Decoded frames a ladder encoder skipped because it fell behind real time",
                &self.hls_frames_dropped,
            ),
            (
                "hls_ladders_refused_total",
                "counter",
                "Live streams that got only their source rendition (or no HLS, VP8) because max_ladders were encoding",
                &self.hls_ladders_refused,
            ),
            (
                "hls_parts_total",
                "counter",
                "Low-Latency HLS parts cut (every rendition)",
                &self.hls_parts,
            ),
            (
                "hls_blocked_requests",
                "gauge",
                "LL-HLS requests waiting for a part now (blocking playlist reloads, preload hints)",
                &self.hls_blocked_requests,
            ),
        ];
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP glint_{name} {help}\n# TYPE glint_{name} {kind}\nglint_{name} {}",
                value.load(Relaxed)
            );
        }
    }
}
