//! The real `glint` binary: starts on port 0, stops cleanly on SIGTERM, and what the API stored
//! on SurrealKV (users, follows, stream keys) is there after a restart.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{json, Value};

struct Glint {
    child: Child,
    base: String,
}

fn start(data_dir: &std::path::Path) -> Glint {
    let mut child = Command::new(env!("CARGO_BIN_EXE_glint"))
        .env("GLINT_HTTP", "127.0.0.1:0")
        .env("GLINT_UDP", "127.0.0.1:0")
        .env("GLINT_RTMP", "127.0.0.1:0")
        .env("GLINT_DATA_DIR", data_dir)
        .env("GLINT_LOG", "warn,glint=info")
        .env_remove("GLINT_DATABASE")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("glint starts");
    // Read log lines until the "up" line names the HTTP address (bounded by the child's output:
    // if it exits, the pipe closes and the loop ends).
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line
                .split("http=")
                .nth(1)
                .filter(|_| line.contains("glint is up"))
            {
                let _ = tx.send(addr.split_whitespace().next().unwrap().to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("glint logs its address");
    Glint {
        child,
        base: format!("http://{addr}"),
    }
}

fn stop(mut g: Glint) {
    assert!(common::signal(&g.child, common::SIGTERM));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = g.child.try_wait().unwrap() {
            assert!(status.success(), "glint exited with {status} on SIGTERM");
            return;
        }
        assert!(Instant::now() < deadline, "glint did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_follows_and_keys_survive_a_restart() {
    let dir = common::tempdir::Dir::new();
    let c = Client::new();
    let g = start(&dir.path);
    let b = g.base.clone();
    let mut ids = Vec::new();
    let mut tokens = Vec::new();
    for name in ["streamer", "viewer"] {
        let r = c.post(format!("{b}/api/users/register")).json(&json!({"username": name, "email": format!("{name}@example.com"), "password": "a good password"})).send().await.unwrap();
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        ids.push(v["user"]["id"].as_str().unwrap().to_owned());
        tokens.push(v["access_token"].as_str().unwrap().to_owned());
    }
    let v: Value = c
        .post(format!("{b}/api/streams"))
        .bearer_auth(&tokens[0])
        .json(&json!({"title": "persisted"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = v["stream_key"].as_str().unwrap().to_owned();
    let r = c
        .post(format!("{b}/api/follows"))
        .bearer_auth(&tokens[1])
        .json(&json!({"channel_id": ids[0]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    stop(g);

    let g = start(&dir.path);
    let b = g.base.clone();
    // Access tokens survive too: the signing secret is kept in the data dir.
    let me: Value = c
        .get(format!("{b}/api/users/me"))
        .bearer_auth(&tokens[1])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], "viewer");
    let r = c
        .post(format!("{b}/api/users/login"))
        .json(&json!({"username": "streamer", "password": "a good password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let followers: Value = c
        .get(format!("{b}/api/users/{}/followers", ids[0]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(followers["items"][0]["username"], "viewer");
    // The key still authorizes WHIP (the offer is OBS-shaped; 201 means the key was accepted).
    let r = c
        .post(format!("{b}/whip/streamer"))
        .header("content-type", "application/sdp")
        .bearer_auth(&key)
        .body(common::fixture("obs_offer.sdp"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    stop(g);
}

/// `kill -9`: no shutdown, nothing flushed by the server.
fn kill(mut g: Glint) {
    g.child.kill().expect("SIGKILL");
    let status = g.child.wait().unwrap();
    assert!(!status.success(), "killed, not exited: {status}");
}

/// WHIP with `key` on `stream`: 201 when the key is the stream's.
async fn whip(c: &Client, base: &str, stream: &str, key: &str) -> reqwest::StatusCode {
    c.post(format!("{base}/whip/{stream}"))
        .header("content-type", "application/sdp")
        .bearer_auth(key)
        .body(common::fixture("obs_offer.sdp"))
        .send()
        .await
        .unwrap()
        .status()
}

/// A key rotation and a logout the API acknowledged are not undone by the process being killed
/// right after (the embedded database is durable by default: docs/operations.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_and_a_logout_survive_kill_9() {
    let dir = common::tempdir::Dir::new();
    let c = Client::new();
    let g = start(&dir.path);
    let b = g.base.clone();
    let v: Value = c.post(format!("{b}/api/users/register")).json(&json!({"username": "streamer", "email": "s@example.com", "password": "a good password"})).send().await.unwrap().json().await.unwrap();
    let access = v["access_token"].as_str().unwrap().to_owned();
    let refresh = v["refresh_token"].as_str().unwrap().to_owned();
    let v: Value = c
        .post(format!("{b}/api/streams"))
        .bearer_auth(&access)
        .json(&json!({"title": "durable"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (id, old_key) = (
        v["id"].as_str().unwrap().to_owned(),
        v["stream_key"].as_str().unwrap().to_owned(),
    );
    let r = c
        .post(format!("{b}/api/streams/{id}/key"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let new_key = r.json::<Value>().await.unwrap()["stream_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_key, old_key);
    let r = c
        .post(format!("{b}/api/users/logout"))
        .json(&json!({"refresh_token": refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    kill(g);

    let g = start(&dir.path);
    let b = g.base.clone();
    assert_eq!(whip(&c, &b, "streamer", &old_key).await, 401, "old key");
    assert_eq!(whip(&c, &b, "streamer", &new_key).await, 201, "new key");
    let r = c
        .post(format!("{b}/api/users/refresh"))
        .json(&json!({"refresh_token": refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "logged out stays logged out");
    stop(g);
}
