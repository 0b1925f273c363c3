//! What durable writes cost: the latency of one acknowledged write (a stream-key rotation's
//! `UPDATE`) on embedded SurrealKV, with commits waiting for fsync or not.
//!
//! `cargo run --release -p api --example write_latency -- <true|false> [writes] [dir]`
//! (one setting per process: SurrealDB reads it once). The figures are in docs/operations.md.

use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let durable: bool = args.next().and_then(|a| a.parse().ok()).unwrap_or(true);
    let writes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(500);
    let dir = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("glint-write-latency-{}", std::process::id()))
        });
    api::db::set_durable_writes(durable);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut took: Vec<Duration> = rt.block_on(async {
        let db = api::db::connect(&format!("surrealkv://{}", dir.display()))
            .await
            .expect("database opens");
        let mut took = Vec::with_capacity(writes);
        for i in 0..writes {
            let t = Instant::now();
            db.query("UPSERT stream:bench SET owner = 'o', name = 'bench', title = 't', tags = [], stream_key = $k, live = false, viewers = 0, created_at = 0")
                .bind(("k", format!("key-{i}")))
                .await
                .unwrap()
                .check()
                .unwrap();
            took.push(t.elapsed());
        }
        took
    });
    took.sort();
    let pct = |p: f64| took[((took.len() as f64 * p) as usize).min(took.len() - 1)];
    println!(
        "durable={durable} writes={writes} p50={:.2?} p90={:.2?} p99={:.2?} max={:.2?}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        took[took.len() - 1]
    );
    let _ = std::fs::remove_dir_all(dir);
}
