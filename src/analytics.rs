//! Broadcast analytics, the binary's half: while a stream is on air it is sampled every
//! interval (10 s by default) from the media core's counters and the HLS audience; samples are
//! buffered and written in batches. The platform task owns the [`Sampler`]; the media core
//! only keeps counters (bytes in, last keyframe gap, viewers served), so analytics never touch
//! the media path. What is stored and served: `api::analytics`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use api::analytics::Sample;
use media::StreamSummary;

use crate::audience::HlsAudience;

/// One sample per stream per this, by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Sampling rounds buffered before a write (a broadcast's end writes at once).
const ROUNDS_PER_WRITE: u32 = 3;

/// A broadcast being sampled.
struct OnAir {
    broadcast: String,
    /// The stream's byte counter and when it was read.
    last_bytes: Option<(u64, Instant)>,
}

#[derive(Default)]
pub struct Sampler {
    on_air: HashMap<String, OnAir>,
    buffer: Vec<(String, Sample)>,
    rounds: u32,
}

impl Sampler {
    /// `stream` went on air at `now_ms`: open its broadcast.
    pub async fn begin(
        &mut self,
        api: &api::Api,
        audience: &HlsAudience,
        stream: &str,
        now_ms: i64,
    ) {
        audience.begin_broadcast(stream);
        match api.begin_broadcast(stream, now_ms).await {
            Ok(Some(broadcast)) => {
                self.on_air.insert(
                    stream.to_owned(),
                    OnAir {
                        broadcast,
                        last_bytes: None,
                    },
                );
            }
            Ok(None) => {} // configured by key: no owner to report to
            Err(e) => tracing::warn!(stream, error = %e, "could not open a broadcast"),
        }
    }

    /// Is a broadcast of `stream` open?
    pub fn on_air(&self, stream: &str) -> bool {
        self.on_air.contains_key(stream)
    }

    /// `stream` went off air at `now_ms`: write its samples, then close its broadcast.
    pub async fn end(&mut self, api: &api::Api, audience: &HlsAudience, stream: &str, now_ms: i64) {
        audience.end_broadcast(stream);
        let Some(on_air) = self.on_air.remove(stream) else {
            return;
        };
        self.write(api).await;
        if let Err(e) = api.end_broadcast(&on_air.broadcast, now_ms).await {
            tracing::warn!(stream, error = %e, "could not close a broadcast");
        }
    }

    /// Take one sample of every broadcast on air; every few rounds, write them.
    pub async fn sample(
        &mut self,
        api: &api::Api,
        audience: &HlsAudience,
        streams: &[StreamSummary],
        cluster_totals: &std::collections::HashMap<String, api::cluster::nodes::Viewers>,
        now: Instant,
        now_ms: i64,
    ) {
        for s in streams {
            let Some(on_air) = self.on_air.get_mut(&s.name) else {
                continue;
            };
            // In a cluster, every node's viewers (summed at the last count); alone, this node's.
            let (webrtc, hls) = match cluster_totals.get(&s.name) {
                Some(v) => (v.webrtc, v.hls),
                None => (s.viewers, audience.count(&s.name, now)),
            };
            let ingest_kbps = on_air.last_bytes.and_then(|(bytes, at)| {
                let ms = now.duration_since(at).as_millis() as u64;
                // A counter that went back belongs to a new stream object: no rate this time.
                (ms > 0 && s.bytes_in >= bytes).then(|| ((s.bytes_in - bytes) * 8 / ms) as u32)
            });
            on_air.last_bytes = Some((s.bytes_in, now));
            self.buffer.push((
                on_air.broadcast.clone(),
                Sample {
                    at: now_ms,
                    viewers: (webrtc + hls) as u32,
                    webrtc_viewers: webrtc as u32,
                    hls_viewers: hls as u32,
                    unique_viewers: (s.viewers_served as usize + audience.unique(&s.name)) as u32,
                    ingest_kbps,
                    keyframe_interval_ms: s.keyframe_interval_ms,
                },
            ));
        }
        self.rounds += 1;
        if self.rounds >= ROUNDS_PER_WRITE {
            self.write(api).await;
        }
    }

    /// Write what is buffered, in one statement.
    async fn write(&mut self, api: &api::Api) {
        self.rounds = 0;
        if self.buffer.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.buffer);
        let n = batch.len();
        if let Err(e) = api.record_samples(batch).await {
            tracing::warn!(samples = n, error = %e, "could not write analytics samples; dropped");
        }
    }
}
