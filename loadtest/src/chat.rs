//! Chat load: many WebSocket readers in one room and a few senders at a fixed total rate. Each
//! message carries its send time (`t=<unix µs>`); readers record how long it took to reach
//! them. Reports delivery, latency percentiles, readers the server dropped, and the server's
//! CPU over the window. Readers may be spread over several nodes of a cluster
//! (`reader_servers`, round-robin); the senders are on `server`, so the latency of readers on
//! other nodes includes the cross-node hop (reported apart).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::procfs;

#[derive(Debug, Clone)]
pub struct ChatLoad {
    /// `http://host:port`.
    pub server: String,
    pub readers: usize,
    pub senders: usize,
    /// Messages per second, all senders together.
    pub rate: f64,
    pub duration: Duration,
    pub server_pid: Option<u32>,
    /// Readers connected per second.
    pub ramp: f64,
    /// Where readers connect, round-robin; empty: `server`.
    pub reader_servers: Vec<String>,
    /// Other server processes whose CPU counts too (the cluster's other nodes).
    pub other_pids: Vec<u32>,
}

#[derive(Debug, Serialize)]
pub struct ChatReport {
    pub readers: usize,
    pub readers_connected: usize,
    pub readers_dropped: u64,
    pub senders: usize,
    pub rate_per_s: f64,
    pub seconds: f64,
    pub messages_sent: u64,
    pub deliveries_expected: u64,
    pub deliveries: u64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    /// Readers on the senders' node, and on the other nodes (a cross-node hop), apart; only when
    /// readers are spread over several servers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_node_p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_node_p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_nodes_p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_nodes_p99_ms: Option<f64>,
    /// CPU of every server process measured (`server_pid` and `other_pids`), in % of one core.
    pub server_cpu_pct: Option<f64>,
    pub server_rss_mib: Option<f64>,
}

/// Longest wait for messages still in flight after the last send.
const DRAIN: Duration = Duration::from_secs(5);

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Register a user; its access token.
async fn register(http: &reqwest::Client, server: &str, name: &str) -> anyhow::Result<String> {
    let resp = http
        .post(format!("{server}/api/users/register"))
        .json(&serde_json::json!({"username": name, "email": format!("{name}@bench.invalid"), "password": "bench password 123"}))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("register {name}: {}", resp.status());
    }
    let v: serde_json::Value = resp.json().await?;
    v["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("no access_token")
}

fn ws_url(server: &str, channel: &str, token: Option<&str>) -> String {
    let base = server.replacen("http", "ws", 1);
    match token {
        Some(t) => format!("{base}/api/chat/{channel}?access_token={t}"),
        None => format!("{base}/api/chat/{channel}"),
    }
}

/// The send time in a delivered frame, without parsing the JSON.
fn sent_at(frame: &str) -> Option<u64> {
    let i = frame.find("\"text\":\"t=")? + "\"text\":\"t=".len();
    let rest = &frame[i..];
    rest[..rest.find('"')?].parse().ok()
}

pub async fn run(cfg: ChatLoad) -> anyhow::Result<ChatReport> {
    let http = reqwest::Client::new();
    let run_id: u32 = rand_id();
    let channel = format!("chat{run_id}");
    register(&http, &cfg.server, &channel).await?;
    let mut tokens = Vec::new();
    for i in 0..cfg.senders {
        tokens.push(register(&http, &cfg.server, &format!("s{run_id}_{i}")).await?);
    }
    let measuring = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicU64::new(0));
    let deliveries = Arc::new(AtomicU64::new(0));
    let mut readers = JoinSet::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connected = 0;
    let ramp = Duration::from_secs_f64(1.0 / cfg.ramp.max(1.0));
    let reader_servers = if cfg.reader_servers.is_empty() {
        vec![cfg.server.clone()]
    } else {
        cfg.reader_servers.clone()
    };
    for i in 0..cfg.readers {
        let reader_server = &reader_servers[i % reader_servers.len()];
        let same_node = *reader_server == cfg.server;
        let url = ws_url(reader_server, &channel, None);
        let Ok((ws, _)) =
            tokio_tungstenite::connect_async_with_config(&url, Some(ws_config()), false).await
        else {
            continue;
        };
        connected += 1;
        let (measuring, dropped, deliveries) =
            (measuring.clone(), dropped.clone(), deliveries.clone());
        let mut stop = stop_rx.clone();
        readers.spawn(async move {
            let (_, mut rx) = ws.split();
            let mut latencies: Vec<u32> = Vec::new();
            loop {
                let msg = tokio::select! {
                    m = rx.next() => m,
                    _ = stop.changed() => break,
                };
                let Some(msg) = msg else { break };
                match msg {
                    Ok(Message::Text(t)) => {
                        if let Some(at) = sent_at(t.as_str()) {
                            if measuring.load(Ordering::Relaxed) {
                                let us = unix_micros().saturating_sub(at);
                                latencies.push(us.min(u64::from(u32::MAX)) as u32);
                                deliveries.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Ok(Message::Close(_)) | Err(_) => {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Ok(_) => {}
                }
            }
            (same_node, latencies)
        });
        tokio::time::sleep(ramp).await;
    }
    let mut senders = Vec::new();
    for t in &tokens {
        let (ws, _) =
            tokio_tungstenite::connect_async(ws_url(&cfg.server, &channel, Some(t))).await?;
        let (tx, mut rx) = ws.split();
        tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
        senders.push(tx);
    }
    let pids: Vec<u32> = cfg
        .server_pid
        .iter()
        .chain(&cfg.other_pids)
        .copied()
        .collect();
    let cpu_of = |pids: &[u32]| -> Option<Duration> {
        let mut total = Duration::ZERO;
        for p in pids {
            total += procfs::sample(*p).ok()?.cpu;
        }
        (!pids.is_empty()).then_some(total)
    };
    let before = cpu_of(&pids);
    let started = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / cfg.rate));
    let mut sent = 0u64;
    while started.elapsed() < cfg.duration {
        tick.tick().await;
        let i = sent as usize % senders.len().max(1);
        let text = format!("t={}", unix_micros());
        let cmd = serde_json::json!({"type": "send", "text": text}).to_string();
        if senders[i].send(Message::Text(cmd.into())).await.is_ok() {
            sent += 1;
        }
    }
    let window = started.elapsed();
    let after_cpu = cpu_of(&pids);
    let after = cfg.server_pid.and_then(|p| procfs::sample(p).ok());
    // Let the last messages arrive (every one, or a bounded wait), then stop counting.
    let expected = sent * connected as u64;
    let deadline = Instant::now() + DRAIN;
    while deliveries.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    measuring.store(false, Ordering::Relaxed);
    for mut s in senders {
        let _ = s.close().await;
    }
    let _ = stop_tx.send(true);
    let (mut all, mut same, mut other): (Vec<u32>, Vec<u32>, Vec<u32>) = Default::default();
    while let Some(r) = readers.join_next().await {
        if let Ok((same_node, l)) = r {
            all.extend(&l);
            if same_node {
                same.extend(l)
            } else {
                other.extend(l)
            }
        }
    }
    for v in [&mut all, &mut same, &mut other] {
        v.sort_unstable();
    }
    let pct_of = |v: &[u32], p: f64| -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        let i = ((v.len() as f64 * p) as usize).min(v.len() - 1);
        f64::from(v[i]) / 1000.0
    };
    let pct = |p: f64| pct_of(&all, p);
    let spread = reader_servers.len() > 1;
    let split = |v: &[u32], p: f64| spread.then(|| pct_of(v, p));
    let cpu = match (before, after_cpu) {
        (Some(b), Some(a)) => {
            Some((a.saturating_sub(b).as_secs_f64() / window.as_secs_f64() * 1000.0).round() / 10.0)
        }
        _ => None,
    };
    Ok(ChatReport {
        readers: cfg.readers,
        readers_connected: connected,
        readers_dropped: dropped.load(Ordering::Relaxed),
        senders: cfg.senders,
        rate_per_s: cfg.rate,
        seconds: window.as_secs_f64(),
        messages_sent: sent,
        deliveries_expected: sent * connected as u64,
        deliveries: deliveries.load(Ordering::Relaxed),
        latency_p50_ms: pct(0.50),
        latency_p99_ms: pct(0.99),
        latency_max_ms: all.last().map_or(0.0, |&m| f64::from(m) / 1000.0),
        same_node_p50_ms: split(&same, 0.50),
        same_node_p99_ms: split(&same, 0.99),
        other_nodes_p50_ms: split(&other, 0.50),
        other_nodes_p99_ms: split(&other, 0.99),
        server_cpu_pct: cpu,
        server_rss_mib: after.map(|a| a.rss_kib as f64 / 1024.0),
    })
}

/// tungstenite zero-fills its read buffer on every read: 128 KiB by default would make the
/// client, on the server's machine, cost more than the server.
fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096)
}

fn rand_id() -> u32 {
    (unix_micros() % 1_000_000) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_time_is_read_from_the_frame() {
        let f = r#"{"type":"message","id":"x","author_id":"a","author":"b","text":"t=1764000000123456","at":1}"#;
        assert_eq!(sent_at(f), Some(1_764_000_000_123_456));
        assert_eq!(sent_at(r#"{"type":"hello"}"#), None);
    }
}
