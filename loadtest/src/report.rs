//! Turns many viewers' counters and two server samples into the load-test report: totals,
//! loss, percentiles, and the server's CPU per delivered packet and RSS per viewer. Pure.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::procfs::ProcSample;
use crate::stats::{PublisherStats, ViewerStats};

/// Longest failure message kept as a key in [`Report::failures`].
const FAILURE_KEY_MAX_CHARS: usize = 160;

/// Median, 95th percentile and maximum of a set of durations, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Distribution {
    pub count: usize,
    pub median_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl Distribution {
    pub fn of(values: impl IntoIterator<Item = Duration>) -> Self {
        let mut sorted: Vec<Duration> = values.into_iter().collect();
        sorted.sort_unstable();
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        Distribution {
            count: sorted.len(),
            median_ms: ms(percentile(&sorted, 50.0)),
            p95_ms: ms(percentile(&sorted, 95.0)),
            max_ms: ms(sorted.last().copied()),
        }
    }
}

/// Nearest-rank percentile of sorted values: the smallest value with at least `pct`% of
/// the values at or below it. `None` when empty.
pub fn percentile(sorted: &[Duration], pct: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// How one requested viewer went.
#[derive(Debug, Clone)]
// A few hundred bytes per viewer, built once per run: not worth a box.
#[allow(clippy::large_enum_variant)]
pub enum ViewerOutcome {
    /// Signalling failed; the message says why.
    Failed(String),
    /// The viewer ran; its counters at the end of the measurement window.
    Ran(ViewerStats),
}

/// The server's resource use over the measurement window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerUsage {
    pub pid: u32,
    pub cpu_seconds: f64,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub cpu_us_per_packet: Option<f64>,
    pub rss_kib_per_viewer: Option<f64>,
}

impl ServerUsage {
    /// CPU and RSS deltas between two samples, divided by what the server delivered.
    pub fn between(
        pid: u32,
        before: ProcSample,
        after: ProcSample,
        packets_delivered: u64,
        viewers_connected: usize,
    ) -> Self {
        let cpu = after.cpu.saturating_sub(before.cpu);
        let rss_delta = after.rss_kib as f64 - before.rss_kib as f64;
        ServerUsage {
            pid,
            cpu_seconds: cpu.as_secs_f64(),
            rss_before_kib: before.rss_kib,
            rss_after_kib: after.rss_kib,
            cpu_us_per_packet: (packets_delivered > 0)
                .then(|| cpu.as_secs_f64() * 1e6 / packets_delivered as f64),
            rss_kib_per_viewer: (viewers_connected > 0)
                .then(|| rss_delta / viewers_connected as f64),
        }
    }
}

/// The whole report, printed as JSON and as text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub stream: String,
    pub viewers_requested: usize,
    /// Signalling succeeded.
    pub viewers_started: usize,
    /// ICE and DTLS came up.
    pub viewers_connected: usize,
    /// Signalling failed, or the connection never came up.
    pub viewers_failed: usize,
    /// Failure message to count.
    pub failures: BTreeMap<String, usize>,
    pub ramp_seconds: f64,
    pub measure_seconds: f64,
    pub packets: u64,
    pub bytes: u64,
    pub video_packets: u64,
    pub audio_packets: u64,
    pub lost: u64,
    pub loss_percent: f64,
    pub payload_mismatches: u64,
    pub stalls: u64,
    pub viewers_with_keyframe: usize,
    pub connect: Distribution,
    pub first_keyframe: Distribution,
    pub publisher: Option<PublisherStats>,
    /// Over the whole run, connection set-up (ICE, DTLS) included.
    pub server: Option<ServerUsage>,
    /// Over the measurement window only, when every viewer is connected: the forwarding cost.
    pub server_steady: Option<ServerUsage>,
}

/// The parts of a run that are not per viewer.
#[derive(Debug, Clone, Default)]
pub struct RunInfo {
    pub stream: String,
    pub viewers_requested: usize,
    pub ramp: Duration,
    pub measure: Duration,
    pub publisher: Option<PublisherStats>,
    /// Server pid and its samples at the start and end of the run.
    pub server: Option<(u32, ProcSample, ProcSample)>,
}

impl Report {
    pub fn build(run: RunInfo, outcomes: &[ViewerOutcome]) -> Self {
        let mut failures = BTreeMap::new();
        let mut ran = Vec::new();
        for outcome in outcomes {
            match outcome {
                ViewerOutcome::Failed(message) => {
                    *failures.entry(failure_key(message)).or_insert(0) += 1;
                }
                ViewerOutcome::Ran(stats) => {
                    if stats.connected_after.is_none() {
                        let why = stats
                            .ended
                            .as_ref()
                            .map_or("not connected yet".to_owned(), |r| {
                                format!("not connected: {r:?}")
                            });
                        *failures.entry(failure_key(&why)).or_insert(0) += 1;
                    }
                    ran.push(stats);
                }
            }
        }
        let connected: Vec<&&ViewerStats> =
            ran.iter().filter(|s| s.connected_after.is_some()).collect();
        let sum = |f: fn(&ViewerStats) -> u64| ran.iter().map(|s| f(s)).sum::<u64>();
        let packets = sum(|s| s.packets());
        let lost = sum(|s| s.video.lost + s.audio.lost);
        let expected = packets + lost;
        let server = run.server.map(|(pid, before, after)| {
            ServerUsage::between(pid, before, after, packets, connected.len())
        });
        Report {
            stream: run.stream,
            viewers_requested: run.viewers_requested,
            viewers_started: ran.len(),
            viewers_connected: connected.len(),
            viewers_failed: outcomes.len() - connected.len()
                + run.viewers_requested.saturating_sub(outcomes.len()),
            failures,
            ramp_seconds: run.ramp.as_secs_f64(),
            measure_seconds: run.measure.as_secs_f64(),
            packets,
            bytes: sum(|s| s.video.bytes + s.audio.bytes),
            video_packets: sum(|s| s.video.packets),
            audio_packets: sum(|s| s.audio.packets),
            lost,
            loss_percent: if expected == 0 {
                0.0
            } else {
                lost as f64 * 100.0 / expected as f64
            },
            payload_mismatches: sum(|s| s.pattern_mismatches()),
            stalls: sum(|s| s.video.stalls + s.audio.stalls),
            viewers_with_keyframe: ran
                .iter()
                .filter(|s| s.first_keyframe_after.is_some())
                .count(),
            connect: Distribution::of(ran.iter().filter_map(|s| s.connected_after)),
            first_keyframe: Distribution::of(ran.iter().filter_map(|s| s.first_keyframe_after)),
            publisher: run.publisher,
            server,
            server_steady: None,
        }
    }

    /// The report for people.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} ms"));
        let dist = |d: &Distribution| {
            format!(
                "median {}, p95 {}, max {} (n={})",
                ms(d.median_ms),
                ms(d.p95_ms),
                ms(d.max_ms),
                d.count
            )
        };
        let _ = writeln!(
            out,
            "stream {:?}: ramp {:.1} s, measured {:.1} s",
            self.stream, self.ramp_seconds, self.measure_seconds
        );
        let _ = writeln!(
            out,
            "viewers: {} requested, {} started, {} connected, {} failed",
            self.viewers_requested,
            self.viewers_started,
            self.viewers_connected,
            self.viewers_failed
        );
        for (why, n) in &self.failures {
            let _ = writeln!(out, "  {n} x {why}");
        }
        let _ = writeln!(
            out,
            "delivered: {} packets ({} video, {} audio), {:.1} MiB",
            self.packets,
            self.video_packets,
            self.audio_packets,
            self.bytes as f64 / (1024.0 * 1024.0)
        );
        let _ = writeln!(
            out,
            "loss: {} packets ({:.3} %), payload mismatches: {}, stalls: {}",
            self.lost, self.loss_percent, self.payload_mismatches, self.stalls
        );
        let _ = writeln!(out, "connect: {}", dist(&self.connect));
        let _ = writeln!(
            out,
            "first keyframe: {} ({} of {} viewers)",
            dist(&self.first_keyframe),
            self.viewers_with_keyframe,
            self.viewers_started
        );
        if let Some(p) = &self.publisher {
            let _ = writeln!(
                out,
                "publisher: {} video / {} audio packets sent, {} keyframes, {} PLI, {} FIR",
                p.video_packets,
                p.audio_packets,
                p.keyframes_sent,
                p.plis_received,
                p.firs_received
            );
        }
        if let Some(s) = &self.server {
            let per =
                |v: Option<f64>, unit: &str| v.map_or("-".to_owned(), |v| format!("{v:.2} {unit}"));
            let _ = writeln!(
                out,
                "server pid {}: cpu {:.2} s ({} per packet), rss {} -> {} KiB ({} per viewer)",
                s.pid,
                s.cpu_seconds,
                per(s.cpu_us_per_packet, "us"),
                s.rss_before_kib,
                s.rss_after_kib,
                per(s.rss_kib_per_viewer, "KiB")
            );
        }
        if let Some(u) = &self.server_steady {
            let _ = writeln!(
                out,
                "server steady state (measurement window): cpu {:.2} s, {} per forwarded packet",
                u.cpu_seconds,
                u.cpu_us_per_packet
                    .map_or("-".to_owned(), |v| format!("{v:.2} us"))
            );
        }
        out
    }
}

fn failure_key(message: &str) -> String {
    message.chars().take(FAILURE_KEY_MAX_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{EndReason, TrackStats};

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=20).map(ms).collect();
        assert_eq!(percentile(&v, 50.0), Some(ms(10)));
        assert_eq!(percentile(&v, 95.0), Some(ms(19)));
        assert_eq!(percentile(&v, 100.0), Some(ms(20)));
        assert_eq!(percentile(&v, 0.0), Some(ms(1)));
        assert_eq!(percentile(&[ms(7)], 95.0), Some(ms(7)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn distribution_sorts_first() {
        let d = Distribution::of([ms(300), ms(100), ms(200)]);
        assert_eq!(d.count, 3);
        assert_eq!(d.median_ms, Some(200.0));
        assert_eq!(d.p95_ms, Some(300.0));
        assert_eq!(d.max_ms, Some(300.0));
        assert_eq!(Distribution::of([]), Distribution::default());
    }

    fn viewer(
        video: u64,
        lost: u64,
        mismatches: u64,
        connected: Option<u64>,
        keyframe: Option<u64>,
    ) -> ViewerStats {
        ViewerStats {
            connected_after: connected.map(ms),
            first_keyframe_after: keyframe.map(ms),
            video: TrackStats {
                packets: video,
                bytes: video * 1000,
                lost,
                pattern_mismatches: mismatches,
                ..TrackStats::default()
            },
            audio: TrackStats {
                packets: 50,
                bytes: 50 * 80,
                ..TrackStats::default()
            },
            ..ViewerStats::default()
        }
    }

    #[test]
    fn totals_loss_and_failures() {
        let outcomes = vec![
            ViewerOutcome::Ran(viewer(950, 0, 0, Some(40), Some(100))),
            ViewerOutcome::Ran(viewer(900, 50, 2, Some(60), Some(300))),
            ViewerOutcome::Ran(ViewerStats {
                ended: Some(EndReason::ConnectTimeout),
                ..ViewerStats::default()
            }),
            ViewerOutcome::Failed("POST answered 404".into()),
        ];
        let before = ProcSample {
            cpu: Duration::from_secs(10),
            rss_kib: 100_000,
        };
        let after = ProcSample {
            cpu: Duration::from_secs(12),
            rss_kib: 104_000,
        };
        let r = Report::build(
            RunInfo {
                stream: "s".into(),
                viewers_requested: 5,
                server: Some((1, before, after)),
                ..RunInfo::default()
            },
            &outcomes,
        );
        assert_eq!(r.viewers_started, 3);
        assert_eq!(r.viewers_connected, 2);
        assert_eq!(
            r.viewers_failed, 3,
            "404, connect timeout and one never attempted"
        );
        assert_eq!(r.failures.get("POST answered 404"), Some(&1));
        assert_eq!(r.failures.get("not connected: ConnectTimeout"), Some(&1));
        assert_eq!(r.packets, 950 + 900 + 100);
        assert_eq!(r.video_packets, 1850);
        assert_eq!(r.lost, 50);
        assert!((r.loss_percent - 50.0 * 100.0 / 2000.0).abs() < 1e-9);
        assert_eq!(r.payload_mismatches, 2);
        assert_eq!(r.viewers_with_keyframe, 2);
        assert_eq!(r.first_keyframe.max_ms, Some(300.0));
        assert_eq!(r.connect.median_ms, Some(40.0));
        let s = r.server.as_ref().unwrap();
        assert_eq!(s.cpu_seconds, 2.0);
        assert!((s.cpu_us_per_packet.unwrap() - 2e6 / 1950.0).abs() < 1e-6);
        assert_eq!(s.rss_kib_per_viewer, Some(2000.0));
        assert!(r.human().contains("2 connected"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["viewers_connected"], 2);
    }

    #[test]
    fn empty_run_has_no_nan() {
        let r = Report::build(RunInfo::default(), &[]);
        assert_eq!(r.loss_percent, 0.0);
        assert_eq!(r.connect.count, 0);
        assert!(r.server.is_none());
        assert!(r.human().contains("0 connected"));
    }
}
