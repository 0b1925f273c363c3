//! Server configuration: a TOML file, overridden by environment variables and flags.
//! `glint --help` lists every setting with its variable.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use serde::Deserialize;

/// Glint: live streaming over WHIP/WHEP (WebRTC).
#[derive(Debug, Parser)]
#[command(name = "glint", version, about)]
pub struct Cli {
    /// TOML config file (see docs/operations.md for every key).
    #[arg(long, short, env = "GLINT_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP listen address (WHIP/WHEP, pages, /metrics). [default: 0.0.0.0:8080]
    #[arg(long, env = "GLINT_HTTP")]
    pub http: Option<SocketAddr>,
    /// The one UDP address all WebRTC media uses. [default: 0.0.0.0:8189]
    #[arg(long, env = "GLINT_UDP")]
    pub udp: Option<SocketAddr>,
    /// RTMP listen address (OBS "Custom": rtmp://host/live + stream key). [default: 0.0.0.0:1935]
    #[arg(long, env = "GLINT_RTMP")]
    pub rtmp: Option<SocketAddr>,
    /// Addresses to advertise as ICE host candidates (comma separated), e.g. your public IP.
    #[arg(long, env = "GLINT_PUBLIC_IP", value_delimiter = ',')]
    pub public_ip: Vec<IpAddr>,
    /// Data directory (stream keys of the embedded default). [default: ./data]
    #[arg(long, env = "GLINT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Stream keys as NAME=KEY (comma separated). Without any, a key for stream "demo" is
    /// generated in the data directory and logged at start.
    #[arg(long, env = "GLINT_STREAM_KEYS", value_delimiter = ',')]
    pub stream_key: Vec<String>,
    /// SurrealDB URL: surrealkv://<dir> (embedded, default <data dir>/db), mem://, ws://host:port.
    #[arg(long, env = "GLINT_DATABASE")]
    pub database: Option<String>,
    /// Seconds a dropped publisher (lost connection, not a DELETE/unpublish) has to reconnect with
    /// the same key and resume its stream before viewers are dropped; 0 ends it at once. [default: 20]
    #[arg(long, env = "GLINT_RECONNECT_GRACE")]
    pub reconnect_grace: Option<u64>,
    /// HLS ladder of every live stream, written to <data dir>/hls and served at /hls/ (true/false).
    /// [default: true]
    #[arg(long, env = "GLINT_HLS")]
    pub hls: Option<bool>,
    /// HLS ladder below the source rendition, as HEIGHTpFPS:KBPS (comma separated), or `none`.
    /// [default: 720p30:3000,480p30:1500,360p30:800]
    #[arg(long, env = "GLINT_HLS_LADDER", value_delimiter = ',')]
    pub hls_ladder: Vec<String>,
    /// Public base URL of the HLS objects in /api/live (a CDN in front of glint). [default: /hls]
    #[arg(long, env = "GLINT_HLS_PUBLIC_URL")]
    pub hls_public_url: Option<String>,
    /// S3 bucket for HLS objects instead of <data dir>/hls (credentials: the usual AWS chain,
    /// e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "GLINT_HLS_S3_BUCKET")]
    pub hls_s3_bucket: Option<String>,
    /// S3 region. [default: us-east-1]
    #[arg(long, env = "GLINT_HLS_S3_REGION")]
    pub hls_s3_region: Option<String>,
    /// S3-compatible endpoint URL (MinIO, R2, ...); AWS when unset.
    #[arg(long, env = "GLINT_HLS_S3_ENDPOINT")]
    pub hls_s3_endpoint: Option<String>,
    /// Key prefix in the bucket, e.g. `live/`.
    #[arg(long, env = "GLINT_HLS_S3_PREFIX")]
    pub hls_s3_prefix: Option<String>,
    /// Path-style S3 URLs (most non-AWS services want them).
    #[arg(long, env = "GLINT_HLS_S3_PATH_STYLE")]
    pub hls_s3_path_style: Option<bool>,
    /// Hours a finished broadcast stays watchable as a replay (HLS VOD); 0 turns replays off.
    /// [default: 168]
    #[arg(long, env = "GLINT_REPLAY_RETENTION_HOURS")]
    pub replay_retention_hours: Option<f64>,
    /// STUN/TURN URLs offered to clients in Link headers (comma separated).
    #[arg(long, env = "GLINT_ICE_SERVERS", value_delimiter = ',')]
    pub ice_server: Vec<String>,
    /// The web app's build (`web/out`), served at `/`; without it, minimal built-in pages.
    #[arg(long, env = "GLINT_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
    /// Threads that seal and send viewers' packets for large audiences. [default: one per CPU]
    #[arg(long, env = "GLINT_FANOUT_THREADS")]
    pub fanout_threads: Option<usize>,
}

/// The file format; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub http: Option<SocketAddr>,
    pub udp: Option<SocketAddr>,
    pub rtmp: Option<SocketAddr>,
    #[serde(default)]
    pub public_ips: Vec<IpAddr>,
    pub data_dir: Option<PathBuf>,
    pub database: Option<String>,
    #[serde(default)]
    pub stream_keys: HashMap<String, String>,
    #[serde(default)]
    pub ice_servers: Vec<String>,
    #[serde(default)]
    pub cors_origins: Vec<String>,
    pub max_sessions: Option<usize>,
    pub reconnect_grace_secs: Option<u64>,
    pub hls: Option<bool>,
    pub hls_segment_secs: Option<u64>,
    pub hls_ladder: Option<Vec<String>>,
    pub hls_public_url: Option<String>,
    pub hls_s3_bucket: Option<String>,
    pub hls_s3_region: Option<String>,
    pub hls_s3_endpoint: Option<String>,
    pub hls_s3_prefix: Option<String>,
    pub hls_s3_path_style: Option<bool>,
    pub replay_retention_hours: Option<f64>,
    pub web_dir: Option<PathBuf>,
    pub fanout_threads: Option<usize>,
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub http: SocketAddr,
    pub rtmp: SocketAddr,
    pub media: media::MediaConfig,
    pub data_dir: PathBuf,
    /// None: `surrealkv://<data_dir>/db`.
    pub database: Option<String>,
    /// Static keys from config (checked first); other streams use their keys in the database.
    pub stream_keys: HashMap<String, String>,
    pub ice_servers: Vec<String>,
    /// Empty: any origin (WHIP/WHEP are meant to be called from other sites' pages).
    pub cors_origins: Vec<String>,
    /// Base URL of HLS objects given to players; `None`: `/hls` on this server.
    pub hls_public_url: Option<String>,
    /// How long replays are kept; zero: no replays.
    pub replay_retention: std::time::Duration,
    /// How often a live broadcast is sampled for analytics.
    pub analytics_interval: std::time::Duration,
    /// The web app's static export; `None`: the built-in pages.
    pub web_dir: Option<PathBuf>,
}

/// Replays are kept a week by default.
pub const DEFAULT_REPLAY_RETENTION: std::time::Duration =
    std::time::Duration::from_secs(7 * 24 * 3600);

impl Default for Config {
    fn default() -> Self {
        Self {
            http: SocketAddr::from(([0, 0, 0, 0], 8080)),
            rtmp: SocketAddr::from(([0, 0, 0, 0], 1935)),
            media: media::MediaConfig::default(),
            data_dir: PathBuf::from("data"),
            database: None,
            stream_keys: HashMap::new(),
            ice_servers: Vec::new(),
            cors_origins: Vec::new(),
            hls_public_url: None,
            replay_retention: DEFAULT_REPLAY_RETENTION,
            analytics_interval: crate::analytics::DEFAULT_INTERVAL,
            web_dir: None,
        }
    }
}

impl Config {
    /// Where players fetch HLS (this server's `/hls`, or the configured CDN), without a
    /// trailing slash; `None` when HLS is off.
    pub fn hls_base(&self) -> Option<&str> {
        self.media.hls.as_ref().map(|_| {
            self.hls_public_url
                .as_deref()
                .unwrap_or("/hls")
                .trim_end_matches('/')
        })
    }

    /// File first, then environment/flags on top.
    pub fn load(cli: Cli) -> anyhow::Result<Self> {
        let file: FileConfig = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let mut c = Config::default();
        if let Some(v) = cli.http.or(file.http) {
            c.http = v;
        }
        if let Some(v) = cli.rtmp.or(file.rtmp) {
            c.rtmp = v;
        }
        if let Some(v) = cli.udp.or(file.udp) {
            c.media.udp_bind = v;
        }
        c.media.public_ips = if cli.public_ip.is_empty() {
            file.public_ips
        } else {
            cli.public_ip
        };
        if let Some(v) = file.max_sessions {
            c.media.max_sessions = v;
        }
        if let Some(v) = cli.fanout_threads.or(file.fanout_threads) {
            c.media.fanout_threads = v.max(1);
        }
        if let Some(v) = cli.reconnect_grace.or(file.reconnect_grace_secs) {
            c.media.reconnect_grace = std::time::Duration::from_secs(v);
        }
        if let Some(v) = cli.data_dir.or(file.data_dir) {
            c.data_dir = v;
        }
        c.database = cli.database.or(file.database);
        if cli.hls.or(file.hls).unwrap_or(true) {
            let mut hls = media::hls::HlsConfig::new(c.data_dir.join("hls"));
            if let Some(s) = file.hls_segment_secs.filter(|s| (1..=10).contains(s)) {
                hls.segment = std::time::Duration::from_secs(s);
            }
            let ladder = if cli.hls_ladder.is_empty() {
                file.hls_ladder
            } else {
                Some(cli.hls_ladder)
            };
            if let Some(rungs) = ladder {
                hls.ladder =
                    media::hls::ladder::parse_ladder(&rungs).map_err(anyhow::Error::msg)?;
            }
            if let Some(bucket) = cli.hls_s3_bucket.or(file.hls_s3_bucket) {
                hls.s3 = Some(media::hls::s3::S3Config {
                    bucket,
                    region: cli
                        .hls_s3_region
                        .or(file.hls_s3_region)
                        .unwrap_or_else(|| "us-east-1".into()),
                    endpoint: cli.hls_s3_endpoint.or(file.hls_s3_endpoint),
                    prefix: cli.hls_s3_prefix.or(file.hls_s3_prefix).unwrap_or_default(),
                    path_style: cli
                        .hls_s3_path_style
                        .or(file.hls_s3_path_style)
                        .unwrap_or(false),
                });
            }
            c.media.hls = Some(hls);
        }
        c.hls_public_url = cli.hls_public_url.or(file.hls_public_url);
        c.web_dir = cli.web_dir.or(file.web_dir);
        if let Some(dir) = &c.web_dir {
            anyhow::ensure!(
                dir.join("index.html").is_file(),
                "web dir {}: no index.html (build the web app: cd web && npm ci && npm run build)",
                dir.display()
            );
        }
        if let Some(h) = cli.replay_retention_hours.or(file.replay_retention_hours) {
            if !(0.0..=24.0 * 3650.0).contains(&h) {
                anyhow::bail!("replay retention: {h} hours is not between 0 and 87600");
            }
            c.replay_retention = std::time::Duration::from_secs_f64(h * 3600.0);
        }
        c.stream_keys = file.stream_keys;
        for pair in cli.stream_key {
            let (name, key) = pair
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--stream-key wants NAME=KEY, got {pair:?}"))?;
            c.stream_keys.insert(name.to_owned(), key.to_owned());
        }
        for name in c.stream_keys.keys() {
            anyhow::ensure!(
                signaling::valid_stream_name(name),
                "stream name {name:?}: use 1-64 of A-Z a-z 0-9 - _"
            );
        }
        c.ice_servers = if cli.ice_server.is_empty() {
            file.ice_servers
        } else {
            cli.ice_server
        };
        c.cors_origins = file.cors_origins;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("glint-config-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load(args: &[&str]) -> anyhow::Result<Config> {
        let mut argv = vec!["glint"];
        argv.extend_from_slice(args);
        Config::load(Cli::try_parse_from(argv)?)
    }

    #[test]
    fn file_then_flags() {
        let path = write(
            "ok",
            "http = \"127.0.0.1:9000\"\nudp = \"127.0.0.1:9001\"\npublic_ips = [\"203.0.113.7\"]\nmax_sessions = 10\nreconnect_grace_secs = 5\n\n[stream_keys]\nalice = \"k1\"\n",
        );
        let c = load(&[
            "--config",
            path.to_str().unwrap(),
            "--udp",
            "127.0.0.1:9002",
            "--stream-key",
            "bob=k2",
        ])
        .unwrap();
        assert_eq!(c.http, "127.0.0.1:9000".parse::<SocketAddr>().unwrap());
        assert_eq!(
            c.media.udp_bind,
            "127.0.0.1:9002".parse::<SocketAddr>().unwrap(),
            "flag beats file"
        );
        assert_eq!(
            c.media.public_ips,
            vec!["203.0.113.7".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(c.media.max_sessions, 10);
        assert_eq!(c.media.reconnect_grace, std::time::Duration::from_secs(5));
        assert_eq!(c.stream_keys.get("alice").map(String::as_str), Some("k1"));
        assert_eq!(c.stream_keys.get("bob").map(String::as_str), Some("k2"));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn defaults_without_anything() {
        let c = load(&[]).unwrap();
        assert_eq!(c.http.port(), 8080);
        assert_eq!(c.media.udp_bind.port(), 8189);
        assert_eq!(c.media.reconnect_grace.as_secs(), 20);
        assert!(c.stream_keys.is_empty());
    }

    #[test]
    fn mistakes_are_reported() {
        let unknown = write("unknown", "htp = \"127.0.0.1:9000\"\n");
        let err = load(&["--config", unknown.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");
        std::fs::remove_file(unknown).unwrap();
        let err = load(&["--stream-key", "no-equals-sign"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("NAME=KEY"), "{err}");
        let err = load(&["--stream-key", "bad name=k"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("stream name"), "{err}");
        assert!(load(&["--config", "/nonexistent/glint.toml"]).is_err());
        let err = load(&["--hls-ladder", "720p30"]).unwrap_err().to_string();
        assert!(err.contains("HEIGHTpFPS:KBPS"), "{err}");
        let err = load(&["--replay-retention-hours=-1"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("retention"), "{err}");
    }

    #[test]
    fn hls_ladder_and_replays_from_file_and_flags() {
        let c = load(&[]).unwrap();
        let hls = c.media.hls.as_ref().unwrap();
        assert_eq!(hls.ladder, media::hls::ladder::default_ladder());
        assert_eq!(c.replay_retention, DEFAULT_REPLAY_RETENTION);
        let path = write(
            "ladder",
            "hls_ladder = [\"1080p60:6000\", \"540p30:1200\"]\nreplay_retention_hours = 0.5\n",
        );
        let c = load(&["--config", path.to_str().unwrap()]).unwrap();
        let ladder = &c.media.hls.as_ref().unwrap().ladder;
        assert_eq!(
            (
                ladder.len(),
                ladder[0].height,
                ladder[0].fps,
                ladder[1].video_kbps
            ),
            (2, 1080, 60, 1200)
        );
        assert_eq!(c.replay_retention.as_secs(), 1800);
        let c = load(&["--config", path.to_str().unwrap(), "--hls-ladder", "none"]).unwrap();
        assert!(
            c.media.hls.as_ref().unwrap().ladder.is_empty(),
            "flag beats file"
        );
        std::fs::remove_file(path).unwrap();
    }
}
