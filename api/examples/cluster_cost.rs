//! Benchmark (not a test): what the cluster's bookkeeping costs at N live streams, against a
//! real Redis. One node claims N streams, then repeats what its timers do — renew its claims
//! (every 3 s), report its viewers of every stream and sum them (every 5 s), read the owners of
//! N streams (a resync, `/api/live`) — and prints the time per round and Redis's CPU per round.
//!
//!   cargo run --release -p api --example cluster_cost -- unix:///path/redis.sock 1000 [redis-pid]

use std::time::{Duration, Instant};

use api::cluster::nodes::Viewers;
use api::cluster::{Cluster, ClusterConfig};

fn cpu_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: cluster_cost REDIS_URL STREAMS [REDIS_PID]")?;
    let n: usize = args.next().map_or(Ok(1000), |s| s.parse())?;
    let redis_pid: Option<u32> = args.next().map(|s| s.parse()).transpose()?;
    let cluster = Cluster::connect(ClusterConfig {
        redis_url: url,
        node_id: "bench-node".into(),
        advertise_url: "http://127.0.0.1:1".into(),
        key_prefix: format!("bench{}:", std::process::id()),
        secret: b"bench-secret-0123456789abcdef0123".to_vec(),
    })
    .await?;
    let streams: Vec<String> = (0..n).map(|i| format!("stream{i}")).collect();
    for s in &streams {
        cluster.claim_stream(s).await?;
    }
    let counts: Vec<(String, Viewers)> = streams
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                s.clone(),
                Viewers {
                    webrtc: i % 50,
                    hls: i % 7,
                },
            )
        })
        .collect();
    const ROUNDS: u32 = 50;
    let mut rows = Vec::new();
    macro_rules! measure {
        ($what:expr, $body:expr) => {{
            let cpu0 = redis_pid.and_then(cpu_of);
            let t0 = Instant::now();
            for _ in 0..ROUNDS {
                $body;
            }
            let per = t0.elapsed() / ROUNDS;
            let cpu = match (cpu0, redis_pid.and_then(cpu_of)) {
                (Some(a), Some(b)) => {
                    format!("{:.2} ms", (b - a).as_secs_f64() * 1e3 / f64::from(ROUNDS))
                }
                _ => "-".into(),
            };
            rows.push(($what, per, cpu));
        }};
    }
    measure!(
        "renew N claims (every 3 s)",
        cluster.renew_streams(&streams).await?
    );
    measure!(
        "report N viewer counts (every 5 s)",
        cluster.report_viewers(&counts).await?
    );
    measure!(
        "sum N streams' viewers (every 5 s, ingesting node)",
        cluster.total_viewers(&streams).await?
    );
    measure!(
        "owners of N streams (resync, /api/live)",
        cluster.stream_owners(&streams).await?
    );
    println!("{n} streams, {ROUNDS} rounds each, one node:");
    println!("| operation | wall time per round | Redis CPU per round |");
    println!("|---|---|---|");
    for (what, per, cpu) in rows {
        println!("| {what} | {:.2} ms | {cpu} |", per.as_secs_f64() * 1e3);
    }
    for s in &streams {
        cluster.release_stream(s).await?;
    }
    Ok(())
}
