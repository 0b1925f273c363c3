//! Shared by the integration tests: an in-process glint server on loopback with port 0.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use glint::{Config, Server};

pub const KEY: &str = "test-key-0123456789";

/// Loopback, port 0, two streams with keys, data in `dir`.
pub fn test_config(dir: &tempdir::Dir) -> Config {
    Config {
        http: "127.0.0.1:0".parse().unwrap(),
        rtmp: "127.0.0.1:0".parse().unwrap(),
        media: media::MediaConfig {
            udp_bind: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        },
        data_dir: dir.path.clone(),
        database: Some("mem://".into()),
        stream_keys: HashMap::from([
            ("demo".to_string(), KEY.to_string()),
            ("other".to_string(), "other-key".to_string()),
        ]),
        ..Config::default()
    }
}

pub async fn start_server() -> (Server, tempdir::Dir) {
    start_server_with(|_| {}).await
}

/// [`start_server`] with `adjust` applied to the test configuration first.
pub async fn start_server_with(adjust: impl FnOnce(&mut Config)) -> (Server, tempdir::Dir) {
    let dir = tempdir::Dir::new();
    let mut config = test_config(&dir);
    adjust(&mut config);
    let server = glint::start(config).await.expect("server starts");
    (server, dir)
}

pub fn base(server: &Server) -> String {
    format!("http://{}", server.http_addr)
}

/// Value of one `glint_*` line of /metrics.
pub async fn metric(server: &Server, name: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", base(server)))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("glint_{name} ")))
        .unwrap_or_else(|| panic!("no metric {name} in {text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Poll `check` until true or the deadline passes (no sleeping for events).
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Poll `f` until it gives a value or the deadline passes; the value.
pub async fn eventually_some<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A channel made through the API: a user `name` (registered) and their stream with `stream`
/// as its metadata (title, category, ...).
pub struct Channel {
    pub token: String,
    pub stream_id: String,
    pub key: String,
}

pub async fn create_channel(server: &Server, name: &str, stream: serde_json::Value) -> Channel {
    let b = base(server);
    let post = |path: &str, token: Option<&str>, body: serde_json::Value| {
        let mut req = reqwest::Client::new()
            .post(format!("{b}{path}"))
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            req.send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let user = post(
        "/api/users/register",
        None,
        serde_json::json!({"username": name, "email": format!("{name}@example.com"), "password": "a good password"}),
    )
    .await;
    let token = user["access_token"]
        .as_str()
        .expect("registered")
        .to_owned();
    let s = post("/api/streams", Some(&token), stream).await;
    Channel {
        token,
        stream_id: s["id"].as_str().expect("stream created").to_owned(),
        key: s["stream_key"].as_str().unwrap().to_owned(),
    }
}

/// ffmpeg publishing `testsrc2` (`size`, 30 fps) and a 440 Hz sine as H.264 + AAC over RTMP to
/// `url` for `seconds`, in real time; `x264` adds the encoder's options (profile, GOP, ...).
pub fn ffmpeg_rtmp(url: &str, size: &str, seconds: u32, x264: &[&str]) -> std::process::Child {
    use std::process::{Command, Stdio};
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={size}:rate=30"),
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string(), "-pix_fmt", "yuv420p"])
        .args(["-c:v", "libx264", "-preset", "ultrafast"])
        .args(x264)
        .args(["-c:a", "aac", "-b:a", "128k", "-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("ffmpeg is installed (scripts/setup.sh)")
}

/// POSIX signal numbers the tests send to child processes.
pub const SIGTERM: i32 = 15;
pub const SIGSTOP: i32 = 19;

/// Send `sig` to a child process (the test's own); true if delivered.
pub fn signal(child: &std::process::Child, sig: i32) -> bool {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    // SAFETY: kill(2) with a pid we spawned; it only reads its arguments.
    unsafe { kill(child.id() as i32, sig) == 0 }
}

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

pub mod tempdir {
    use std::path::PathBuf;

    /// A temporary directory removed on drop.
    pub struct Dir {
        pub path: PathBuf,
    }

    impl Dir {
        pub fn new() -> Self {
            let path = std::env::temp_dir().join(format!("glint-test-{:x}", rand_u64()));
            std::fs::create_dir_all(&path).unwrap();
            Self { path }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }

    fn rand_u64() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        );
        h.finish()
    }
}
