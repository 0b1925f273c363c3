//! Three `glint` processes on one SurrealDB server (the real one, `tests/surreal-server`) and one
//! `redis-server`, all on loopback: accounts, sessions, follows, go-live notifications, chat
//! (order, bans, slow mode), login limits and viewer counts are one platform across the nodes;
//! a second publisher on another node gets 409; then the faults: a Redis restart (chat degrades
//! to each node's readers and says so, `/healthz` says degraded, both recover), a SurrealDB
//! server restart (503 with `Retry-After`, then recovery without restarting the nodes), and
//! `kill -9` of nodes (their viewers and streams leave the counts and the directory).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::Client;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(30);
/// WHIP/WHEP sessions one address may start at once (then 2 a second), on all nodes together.
const SESSION_BURST: u32 = 4;
const JWT_SECRET: &str = "cluster-test-jwt-secret-0123456789abcdef";
const CLUSTER_TOKEN: &str = "cluster-test-token-0123456789abcdef0123";

/// A child process killed (SIGKILL) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The SurrealDB server built from `tests/surreal-server` (scripts/test.sh builds it into the
/// same target directory as glint).
fn surreal_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("GLINT_SURREAL_SERVER") {
        return p.into();
    }
    let glint = PathBuf::from(env!("CARGO_BIN_EXE_glint"));
    let bin = glint.with_file_name("surreal-server");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build --manifest-path tests/surreal-server/Cargo.toml` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A loopback port nobody listens on now (the SurrealDB server cannot report a port-0 bind).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_until<F, Fut>(what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    common::eventually(what, WAIT, f).await;
}

fn start_surreal(port: u16, dir: &Path) -> Proc {
    let child = Command::new(surreal_server_bin())
        .args(["start", "--bind", &format!("127.0.0.1:{port}")])
        .args(["--user", "root", "--pass", "root", "--log", "warn"])
        .arg(format!("surrealkv://{}", dir.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("surreal-server starts");
    Proc(child)
}

async fn surreal_up(port: u16) -> bool {
    Client::new()
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

fn start_redis(socket: &Path) -> Proc {
    let child = Command::new("redis-server")
        .args(["--port", "0", "--unixsocket"])
        .arg(socket)
        .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/setup.sh)");
    Proc(child)
}

fn redis_up(socket: &Path) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

struct Node {
    _proc: Proc,
    base: String,
    rtmp: String,
}

/// A node; `hls` on only where the test plays HLS (a ladder per live stream costs a core).
fn start_node(id: &str, data: &Path, surreal_port: u16, redis: &Path, hls: bool) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_glint"))
        .env("GLINT_HTTP", "127.0.0.1:0")
        .env("GLINT_UDP", "127.0.0.1:0")
        .env("GLINT_RTMP", "127.0.0.1:0")
        .env("GLINT_DATA_DIR", data)
        .env("GLINT_HLS", hls.to_string())
        .env("GLINT_LOG", "info,api=debug,tower_http=warn")
        .env("GLINT_DATABASE", format!("ws://127.0.0.1:{surreal_port}"))
        .env("GLINT_DATABASE_USER", "root")
        .env("GLINT_DATABASE_PASSWORD", "root")
        .env("GLINT_REDIS_URL", format!("unix://{}", redis.display()))
        .env("GLINT_NODE_ID", id)
        .env("GLINT_CLUSTER_TOKEN", CLUSTER_TOKEN)
        .env("GLINT_JWT_SECRET", JWT_SECRET)
        .env("GLINT_SESSION_BURST", SESSION_BURST.to_string())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("glint starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // The node's log: beside its data directory, or in GLINT_TEST_LOG_DIR (kept after the test).
    let log_dir = std::env::var_os("GLINT_TEST_LOG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| data.parent().unwrap().to_owned());
    let mut log = std::fs::File::create(log_dir.join(format!("{id}.log"))).unwrap();
    std::thread::spawn(move || {
        use std::io::Write;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
            if line.contains("glint is up") {
                let field = |name: &str| {
                    line.split(&format!("{name}="))
                        .nth(1)
                        .and_then(|r| r.split_whitespace().next())
                        .map(str::to_owned)
                };
                let _ = tx.send((field("http"), field("rtmp")));
            }
        }
    });
    let (http, rtmp) = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("node {id} logs its address"));
    Node {
        _proc: Proc(child),
        base: format!("http://{}", http.unwrap()),
        rtmp: rtmp.unwrap(),
    }
}

async fn post(c: &Client, url: String, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = c.post(url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get_json(c: &Client, url: String, token: Option<&str>) -> (u16, Value) {
    let mut req = c.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What a node's `/healthz` says (`ok`, or `degraded: ...`).
async fn health(c: &Client, base: &str) -> String {
    c.get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn chat(base: &str, channel: &str, token: Option<&str>) -> Ws {
    let ws = base.replace("http://", "ws://");
    let url = match token {
        Some(t) => format!("{ws}/api/chat/{channel}?access_token={t}"),
        None => format!("{ws}/api/chat/{channel}"),
    };
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let hello = next_event(&mut socket, |_| true).await;
    assert_eq!(hello["type"], "hello");
    socket
}

/// The next server event that `want` accepts (others are skipped), within the wait.
async fn next_event(ws: &mut Ws, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut skipped = Vec::new();
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no such chat event in time; skipped: {skipped:?}"))
            .expect("chat open")
            .unwrap();
        if let Message::Text(t) = frame {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if want(&v) {
                return v;
            }
            skipped.push(v);
        }
    }
}

async fn say(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(
        json!({"type": "send", "text": text}).to_string().into(),
    ))
    .await
    .unwrap();
}

async fn messages(ws: &mut Ws, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = next_event(ws, |v| v["type"] == "message").await;
        out.push(m["text"].as_str().unwrap().to_owned());
    }
    out
}

async fn error_code(ws: &mut Ws) -> String {
    next_event(ws, |v| v["type"] == "error").await["code"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_one_platform_and_survive_their_faults() {
    let dir = common::tempdir::Dir::new();
    let c = Client::new();
    let surreal_port = free_port();
    let surreal_dir = dir.path.join("surreal");
    let mut surreal = start_surreal(surreal_port, &surreal_dir);
    wait_until("the SurrealDB server answers", || surreal_up(surreal_port)).await;
    let socket = dir.path.join("redis.sock");
    let mut redis = start_redis(&socket);
    wait_until("redis answers", || {
        let up = redis_up(&socket);
        async move { up }
    })
    .await;
    let a = start_node("node-a", &dir.path.join("a"), surreal_port, &socket, false);
    let b = start_node("node-b", &dir.path.join("b"), surreal_port, &socket, true);
    let cc = start_node("node-c", &dir.path.join("c"), surreal_port, &socket, false);
    let (a_url, b_url, c_url) = (a.base.clone(), b.base.clone(), cc.base.clone());

    // Register on A, log in on B, the token works on C (one JWT secret, one database).
    let (status, alice) = post(
        &c,
        format!("{a_url}/api/users/register"),
        None,
        json!({"username": "alice", "email": "alice@example.com", "password": "a good password"}),
    )
    .await;
    assert_eq!(status, 201, "{alice}");
    let alice_id = alice["user"]["id"].as_str().unwrap().to_owned();
    let (status, login) = post(
        &c,
        format!("{b_url}/api/users/login"),
        None,
        json!({"username": "alice", "password": "a good password"}),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    let alice_token = login["access_token"].as_str().unwrap().to_owned();
    let (status, me) = get_json(&c, format!("{c_url}/api/users/me"), Some(&alice_token)).await;
    assert_eq!((status, me["id"].as_str()), (200, Some(alice_id.as_str())));
    let (status, stream) = post(
        &c,
        format!("{a_url}/api/streams"),
        Some(&alice_token),
        json!({"title": "Across nodes"}),
    )
    .await;
    assert_eq!(status, 201, "{stream}");
    let stream_id = stream["id"].as_str().unwrap().to_owned();
    let key = stream["stream_key"].as_str().unwrap().to_owned();

    // WHEP session requests from one address count on every node together: the burst, then 429.
    for i in 0..=SESSION_BURST as usize {
        let node = [&a_url, &b_url, &c_url][i % 3];
        let r = c
            .post(format!("{node}/whep/alice"))
            .header("content-type", "application/sdp")
            .body("")
            .send()
            .await
            .unwrap();
        let want = if i < SESSION_BURST as usize { 400 } else { 429 };
        assert_eq!(r.status(), want, "session request {i} (on {node})");
    }

    // Bob registers on B and follows alice from C.
    let (status, bob) = post(
        &c,
        format!("{b_url}/api/users/register"),
        None,
        json!({"username": "bob", "email": "bob@example.com", "password": "a good password"}),
    )
    .await;
    assert_eq!(status, 201, "{bob}");
    let bob_token = bob["access_token"].as_str().unwrap().to_owned();
    let bob_id = bob["user"]["id"].as_str().unwrap().to_owned();
    let (status, _) = post(
        &c,
        format!("{c_url}/api/follows"),
        Some(&bob_token),
        json!({"channel_id": alice_id}),
    )
    .await;
    assert_eq!(status, 201);

    // Bob's notification stream is on B.
    let sse = c
        .get(format!(
            "{b_url}/api/notifications/stream?access_token={bob_token}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let mut sse = sse.bytes_stream();

    // Chat: readers on A, B and C; alice speaks on A, bob on C; every reader sees one order.
    let mut readers = vec![
        chat(&a_url, "alice", None).await,
        chat(&b_url, "alice", None).await,
        chat(&cc.base, "alice", None).await,
    ];
    let mut alice_chat = chat(&a_url, "alice", Some(&alice_token)).await;
    let mut bob_chat = chat(&c_url, "alice", Some(&bob_token)).await;
    for i in 0..3 {
        say(&mut alice_chat, &format!("alice {i}")).await;
        say(&mut bob_chat, &format!("bob {i}")).await;
    }
    let mut orders = Vec::new();
    for r in &mut readers {
        orders.push(messages(r, 6).await);
    }
    assert_eq!(orders[0], orders[1], "A and B saw one order");
    assert_eq!(orders[0], orders[2], "A and C saw one order");
    let alices: Vec<&String> = orders[0]
        .iter()
        .filter(|m| m.starts_with("alice"))
        .collect();
    assert_eq!(
        alices,
        ["alice 0", "alice 1", "alice 2"],
        "each sender's order kept"
    );

    // Slow mode set on A holds for bob across nodes: he spoke on C moments ago, so on B he waits.
    alice_chat
        .send(Message::Text(
            json!({"type": "settings", "slow_mode_secs": 60, "followers_only": false})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    for r in &mut readers {
        next_event(r, |v| v["type"] == "settings" && v["slow_mode_secs"] == 60).await;
    }
    let mut bob_on_b = chat(&b_url, "alice", Some(&bob_token)).await;
    say(&mut bob_on_b, "too soon").await;
    assert_eq!(
        error_code(&mut bob_on_b).await,
        "slow_mode",
        "slow mode across nodes"
    );

    // A ban on A holds on B and C.
    alice_chat
        .send(Message::Text(
            json!({"type": "ban", "user_id": bob_id}).to_string().into(),
        ))
        .await
        .unwrap();
    for r in &mut readers {
        next_event(r, |v| v["type"] == "ban" && v["user_id"] == bob_id.as_str()).await;
    }
    say(&mut bob_on_b, "still here?").await;
    assert_eq!(error_code(&mut bob_on_b).await, "banned");
    say(&mut bob_chat, "still here?").await;
    assert_eq!(error_code(&mut bob_chat).await, "banned");

    // Login attempts from one address count on every node together: 10 a minute.
    let mut refused_at = None;
    for i in 0..12 {
        let node = [&a_url, &b_url, &c_url][i % 3];
        let (status, _) = post(
            &c,
            format!("{node}/api/users/login"),
            None,
            // A new name each time: only the per-address limit is in play.
            json!({"username": format!("nobody{i}"), "password": "wrong"}),
        )
        .await;
        if status == 429 {
            refused_at = Some(i);
            break;
        }
        assert_eq!(status, 401);
    }
    // Alice's login on B counted too: the 10th attempt from here is the 11th (one more if 6 s
    // went by since, the rate's refill; nodes counting alone would let 30 through).
    assert!(
        matches!(refused_at, Some(9 | 10)),
        "the 11th login attempt, on any node, is refused: {refused_at:?}"
    );

    // Alice goes live on A (RTMP): bob's stream on B gets the notification, once.
    let mut ffmpeg = common::ffmpeg_rtmp(
        &format!("rtmp://{}/live/{key}", a.rtmp),
        "320x240",
        300,
        &["-tune", "zerolatency", "-g", "30"],
    );
    let stream_url = format!("{c_url}/api/streams/{stream_id}");
    wait_until("live, seen from C", || async {
        get_json(&c, stream_url.clone(), None).await.1["live"] == true
    })
    .await;
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !text.contains("event: notification") {
        let chunk = tokio::time::timeout_at(deadline, sse.next())
            .await
            .expect("a notification on B in time")
            .expect("stream open")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("Across nodes"), "{text}");
    let (_, list) = get_json(&c, format!("{b_url}/api/notifications"), Some(&bob_token)).await;
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(1),
        "notified once: {list}"
    );

    // A second publisher of the live stream on another node: 409.
    let whip = c
        .post(format!("{b_url}/whip/alice"))
        .header("content-type", "application/sdp")
        .bearer_auth(&key)
        .body(common::fixture("obs_offer.sdp"))
        .send()
        .await
        .unwrap();
    assert_eq!(whip.status(), 409, "one publisher cluster-wide");

    // One WebRTC viewer on A and two HLS players on B are three viewers, seen on C.
    let viewer = loadtest::view(loadtest::ViewConfig::new(&a_url, "alice"))
        .await
        .unwrap();
    viewer.wait_connected(WAIT).await.unwrap();
    let hls_players = {
        let (c, b_url) = (c.clone(), b_url.clone());
        tokio::spawn(async move {
            // Players reload their playlist every target duration.
            loop {
                for ua in ["player-1", "player-2"] {
                    let _ = c
                        .get(format!("{b_url}/hls/alice/720p/index.m3u8"))
                        .header("user-agent", ua)
                        .send()
                        .await;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };
    wait_until("3 viewers, summed on C", || async {
        get_json(&c, stream_url.clone(), None).await.1["viewers"] == 3
    })
    .await;
    next_event(&mut readers[2], |v| {
        v["type"] == "viewers" && v["count"] == 3
    })
    .await;
    // `/api/live` on C lists A's stream, where it is and its summed viewers.
    wait_until(
        "C's /api/live: alice on node-a, 1 WebRTC + 2 HLS viewers",
        || async {
            let (_, live) = get_json(&c, format!("{c_url}/api/live"), None).await;
            live.as_array().is_some_and(|l| {
                l.iter().any(|s| {
                    s["name"] == "alice"
                        && s["node"] == "node-a"
                        && s["webrtc_viewers"] == 1
                        && s["hls_viewers"] == 2
                })
            })
        },
    )
    .await;

    // Redis restarts: chat on C degrades to C's readers (and says so), then recovers.
    drop(redis);
    wait_until("C reports degraded", || async {
        health(&c, &c_url).await.starts_with("degraded")
    })
    .await;
    next_event(&mut readers[2], |v| {
        v["type"] == "notice" && v["code"] == "cluster_degraded"
    })
    .await;
    let (_, carol) = post(
        &c,
        format!("{c_url}/api/users/register"),
        None,
        json!({"username": "carol", "email": "carol@example.com", "password": "a good password"}),
    )
    .await;
    let carol_token = carol["access_token"].as_str().unwrap().to_owned();
    let mut carol_chat = chat(&c_url, "alice", Some(&carol_token)).await;
    say(&mut carol_chat, "while redis is away").await;
    assert_eq!(messages(&mut readers[2], 1).await, ["while redis is away"]);
    redis = start_redis(&socket);
    wait_until("C healthy again", || async {
        health(&c, &c_url).await == "ok"
    })
    .await;
    wait_until("B healthy again", || async {
        health(&c, &b_url).await == "ok"
    })
    .await;
    next_event(&mut readers[1], |v| {
        v["type"] == "notice" && v["code"] == "cluster_restored"
    })
    .await;
    wait_until("A healthy again", || async {
        health(&c, &a_url).await == "ok"
    })
    .await;
    // Events cross nodes again (slow mode off, from A; alice is the owner, never slowed).
    alice_chat
        .send(Message::Text(
            json!({"type": "settings", "slow_mode_secs": 0, "followers_only": false})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    next_event(&mut alice_chat, |v| {
        v["type"] == "settings" && v["slow_mode_secs"] == 0
    })
    .await;
    next_event(&mut readers[1], |v| {
        v["type"] == "settings" && v["slow_mode_secs"] == 0
    })
    .await;
    // The stream's claim, lost with Redis's memory, is renewed by its node: still A's.
    wait_until("A's stream back in the directory", || async {
        let (_, live) = get_json(&c, format!("{c_url}/api/live"), None).await;
        live.as_array().is_some_and(|l| {
            l.iter()
                .any(|s| s["name"] == "alice" && s["node"] == "node-a")
        })
    })
    .await;
    say(&mut alice_chat, "redis is back").await;
    assert_eq!(messages(&mut readers[1], 1).await, ["redis is back"]);
    assert_eq!(messages(&mut readers[2], 1).await, ["redis is back"]);

    // The SurrealDB server restarts: 503 with Retry-After meanwhile, then recovery.
    drop(surreal);
    let me_url = format!("{b_url}/api/users/me");
    wait_until("503 while the database is away", || async {
        let r = c
            .get(&me_url)
            .bearer_auth(&alice_token)
            .send()
            .await
            .unwrap();
        r.status() == 503 && r.headers().contains_key("retry-after")
    })
    .await;
    // Media is unaffected: the WebRTC viewer on A still receives.
    let before = viewer.stats().packets();
    wait_until("media flows while the database is away", || async {
        viewer.stats().packets() > before + 30
    })
    .await;
    surreal = start_surreal(surreal_port, &surreal_dir);
    // The nodes reconnect and sign in again by themselves; what was stored is there.
    wait_until("the API answers again, no node restarted", || async {
        get_json(&c, me_url.clone(), Some(&alice_token)).await.0 == 200
    })
    .await;
    assert_eq!(health(&c, &b_url).await, "ok");

    // kill -9 of B: its HLS players leave the count within the lease.
    hls_players.abort();
    drop(b);
    wait_until("B's viewers leave the sum", || async {
        get_json(&c, stream_url.clone(), None).await.1["viewers"] == 1
    })
    .await;

    // kill -9 of A, the stream's origin: the stream leaves the directory and goes offline.
    drop(viewer);
    drop(a);
    wait_until("offline once A's lease is over", || async {
        get_json(&c, stream_url.clone(), None).await.1["live"] == false
    })
    .await;
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    drop((cc, redis, surreal));
}
