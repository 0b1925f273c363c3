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
    /// A SurrealDB server's user (with `--database ws://...`); none: no sign-in.
    #[arg(long, env = "GLINT_DATABASE_USER")]
    pub database_user: Option<String>,
    #[arg(long, env = "GLINT_DATABASE_PASSWORD", hide_env_values = true)]
    pub database_password: Option<String>,
    /// Where that user is defined: root, namespace or database (default root).
    #[arg(long, env = "GLINT_DATABASE_AUTH_LEVEL")]
    pub database_auth_level: Option<String>,
    /// Namespace and database on the server (default glint, glint).
    #[arg(long, env = "GLINT_DATABASE_NAMESPACE")]
    pub database_namespace: Option<String>,
    #[arg(long, env = "GLINT_DATABASE_NAME")]
    pub database_name: Option<String>,
    /// Join a cluster: the Redis (or Valkey, any Redis-protocol service) the nodes share.
    #[arg(long, env = "GLINT_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// This node's id in the cluster (default: host name and a random suffix).
    #[arg(long, env = "GLINT_NODE_ID")]
    pub node_id: Option<String>,
    /// Where clients reach this node (default http://<http address>).
    #[arg(long, env = "GLINT_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// The secret the cluster's nodes share (at least 32 characters; required with a Redis URL).
    #[arg(long, env = "GLINT_CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,
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
    /// Live streams whose HLS is a transcoded ladder at once; beyond it a stream gets its
    /// source rendition only (H.264) or no HLS (VP8). [default: one per CPU]
    #[arg(long, env = "GLINT_HLS_MAX_LADDERS")]
    pub hls_max_ladders: Option<usize>,
    /// Serve live streams' HLS as Low-Latency HLS (parts, blocking playlist reloads) at /hls/;
    /// off, /hls/ serves the stored standard playlists only (what a CDN-only deployment gets).
    /// [default: true]
    #[arg(long, env = "GLINT_HLS_LOW_LATENCY")]
    pub hls_low_latency: Option<bool>,
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
    /// Gigabytes of segments one broadcast keeps for its replay; later segments are not kept
    /// (live HLS goes on). [default: 32]
    #[arg(long, env = "GLINT_REPLAY_MAX_GB")]
    pub replay_max_gb: Option<f64>,
    /// HLS objects written to the store (local or S3) at once. [default: 8]
    #[arg(long, env = "GLINT_HLS_UPLOAD_CONCURRENCY")]
    pub hls_upload_concurrency: Option<usize>,
    /// Minutes after a channel was last on air in which going live again notifies nobody
    /// (a flapping connection); 0: every go-live notifies. [default: 10]
    #[arg(long, env = "GLINT_NOTIFY_DEBOUNCE_MINUTES")]
    pub notify_debounce_minutes: Option<u64>,
    /// Days go-live notifications are kept. [default: 30]
    #[arg(long, env = "GLINT_NOTIFICATION_RETENTION_DAYS")]
    pub notification_retention_days: Option<u64>,
    /// Embedded database: a write is acknowledged only once it is on disk (fsync), so a power
    /// loss or kernel crash cannot undo it; false is faster and can lose the last writes.
    /// [default: true]
    #[arg(long, env = "GLINT_DATABASE_SYNC")]
    pub database_sync: Option<bool>,
    /// STUN/TURN URLs offered to clients in Link headers (comma separated).
    #[arg(long, env = "GLINT_ICE_SERVERS", value_delimiter = ',')]
    pub ice_server: Vec<String>,
    /// The web app's build (`web/out`), served at `/`; without it, minimal built-in pages.
    #[arg(long, env = "GLINT_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
    /// Threads that seal and send viewers' packets for large audiences. [default: one per CPU]
    #[arg(long, env = "GLINT_FANOUT_THREADS")]
    pub fanout_threads: Option<usize>,
    /// Most KiB of video a stream keeps from its last keyframe on, to start a joining viewer at
    /// once; 0: none, viewers wait for the next keyframe. [default: 4096]
    #[arg(long, env = "GLINT_GOP_CACHE_KIB")]
    pub gop_cache_kib: Option<usize>,
    /// RTMP connections that have not yet published with a valid key, in total; more are
    /// closed at once. [default: 256]
    #[arg(long, env = "GLINT_RTMP_MAX_CONNECTIONS")]
    pub rtmp_max_connections: Option<usize>,
    /// RTMP connections not yet publishing from one address (IPv6: one /64). [default: 8]
    #[arg(long, env = "GLINT_RTMP_MAX_CONNECTIONS_PER_ADDRESS")]
    pub rtmp_max_connections_per_address: Option<usize>,
    /// Seconds an RTMP connection has, from connecting, to publish with a valid stream key
    /// before it is closed. [default: 10]
    #[arg(long, env = "GLINT_RTMP_PUBLISH_DEADLINE")]
    pub rtmp_publish_deadline: Option<u64>,
    /// Proxies whose X-Forwarded-For names the client (addresses or CIDR ranges, comma
    /// separated). [default: none — the TCP peer is the client]
    #[arg(long, env = "GLINT_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// Open HTTP connections at most. [default: 10000]
    #[arg(long, env = "GLINT_HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: Option<usize>,
    /// Open HTTP connections per client address; 0: no limit. [default: 256]
    #[arg(long, env = "GLINT_HTTP_MAX_CONNECTIONS_PER_ADDRESS")]
    pub http_max_connections_per_address: Option<usize>,
    /// Seconds a client has to send a request's headers. [default: 10]
    #[arg(long, env = "GLINT_HTTP_HEADER_TIMEOUT")]
    pub http_header_timeout: Option<u64>,
    /// Seconds a request (its body included) may take before 408. [default: 30]
    #[arg(long, env = "GLINT_HTTP_REQUEST_TIMEOUT")]
    pub http_request_timeout: Option<u64>,
    /// WebRTC sessions (publishers + viewers) one client address may hold. [default: 32]
    #[arg(long, env = "GLINT_MAX_SESSIONS_PER_ADDRESS")]
    pub max_sessions_per_address: Option<usize>,
    /// WHIP/WHEP session requests one address may make at once, then 2 per second; 0: no
    /// limit. [default: 20]
    #[arg(long, env = "GLINT_SESSION_BURST")]
    pub session_burst: Option<u32>,
    /// Chat WebSockets plus notification streams open from one client address (an IPv6 /64
    /// counts as one); 429 beyond. [default: 20]
    #[arg(long, env = "GLINT_REALTIME_PER_ADDRESS")]
    pub realtime_per_address: Option<usize>,
    /// Chat WebSockets one account may have open in one room; 429 beyond. [default: 5]
    #[arg(long, env = "GLINT_REALTIME_CHAT_PER_USER")]
    pub realtime_chat_per_user: Option<usize>,
    /// Notification streams (SSE) one account may have open; 429 beyond. [default: 10]
    #[arg(long, env = "GLINT_REALTIME_SSE_PER_USER")]
    pub realtime_sse_per_user: Option<usize>,
    /// Seconds between pings of each chat WebSocket (and keep-alive comments on SSE). [default: 30]
    #[arg(long, env = "GLINT_REALTIME_PING_SECS")]
    pub realtime_ping_secs: Option<u64>,
    /// Seconds a chat WebSocket may send nothing, not even a pong, before it is closed.
    /// [default: 60]
    #[arg(long, env = "GLINT_REALTIME_IDLE_SECS")]
    pub realtime_idle_secs: Option<u64>,
    /// Account registrations allowed per client address (IPv6: per /64) per hour, all at once
    /// if need be; 429 beyond; 0 turns the limit off (e.g. for a load test). [default: 30]
    #[arg(long, env = "GLINT_REGISTRATIONS_PER_HOUR")]
    pub registrations_per_hour: Option<u32>,
    /// Password hashes (argon2id, 19 MiB and one core each) computed at once, for
    /// registration and login; 16 requests per slot may wait, 503 beyond. [default: one per CPU]
    #[arg(long, env = "GLINT_MAX_CONCURRENT_HASHES")]
    pub max_concurrent_hashes: Option<usize>,
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
    pub database_user: Option<String>,
    pub database_password: Option<String>,
    pub database_auth_level: Option<String>,
    pub database_namespace: Option<String>,
    pub database_name: Option<String>,
    pub redis_url: Option<String>,
    pub node_id: Option<String>,
    pub advertise_url: Option<String>,
    pub cluster_token: Option<String>,
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
    pub hls_max_ladders: Option<usize>,
    pub hls_low_latency: Option<bool>,
    pub hls_ladder: Option<Vec<String>>,
    pub hls_public_url: Option<String>,
    pub hls_s3_bucket: Option<String>,
    pub hls_s3_region: Option<String>,
    pub hls_s3_endpoint: Option<String>,
    pub hls_s3_prefix: Option<String>,
    pub hls_s3_path_style: Option<bool>,
    pub replay_retention_hours: Option<f64>,
    pub replay_max_gb: Option<f64>,
    pub hls_upload_concurrency: Option<usize>,
    pub notify_debounce_minutes: Option<u64>,
    pub notification_retention_days: Option<u64>,
    pub database_sync: Option<bool>,
    pub web_dir: Option<PathBuf>,
    pub fanout_threads: Option<usize>,
    pub gop_cache_kib: Option<usize>,
    pub rtmp_max_connections: Option<usize>,
    pub rtmp_max_connections_per_address: Option<usize>,
    pub rtmp_publish_deadline_secs: Option<u64>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    pub http_max_connections: Option<usize>,
    pub http_max_connections_per_address: Option<usize>,
    pub http_header_timeout_secs: Option<u64>,
    pub http_request_timeout_secs: Option<u64>,
    pub max_sessions_per_address: Option<usize>,
    pub publisher_reserve: Option<usize>,
    pub connect_timeout_secs: Option<u64>,
    pub session_burst: Option<u32>,
    pub sessions_per_sec: Option<f64>,
    pub realtime_per_address: Option<usize>,
    pub realtime_chat_per_user: Option<usize>,
    pub realtime_sse_per_user: Option<usize>,
    pub realtime_ping_secs: Option<u64>,
    pub realtime_idle_secs: Option<u64>,
    pub registrations_per_hour: Option<u32>,
    pub max_concurrent_hashes: Option<usize>,
}

/// Shortest cluster token accepted.
pub const MIN_CLUSTER_TOKEN: usize = 32;

/// How a node joins its cluster.
#[derive(Clone)]
pub struct ClusterSettings {
    pub redis_url: String,
    /// `None`: the host name and a random suffix.
    pub node_id: Option<String>,
    /// `None`: `http://<the bound HTTP address>`.
    pub advertise_url: Option<String>,
    pub token: String,
}

impl std::fmt::Debug for ClusterSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password, and the token is a secret.
        f.debug_struct("ClusterSettings")
            .field("node_id", &self.node_id)
            .field("advertise_url", &self.advertise_url)
            .finish_non_exhaustive()
    }
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub http: SocketAddr,
    pub rtmp: SocketAddr,
    /// Caps and deadline for RTMP connections that have not published yet.
    pub rtmp_limits: media::ingest::rtmp::limits::RtmpLimits,
    pub media: media::MediaConfig,
    pub data_dir: PathBuf,
    /// None: `surrealkv://<data_dir>/db`.
    pub database: Option<String>,
    /// Namespace, database and sign-in on a SurrealDB server (the URL is `database`).
    pub database_namespace: String,
    pub database_name: String,
    pub database_credentials: Option<api::db::Credentials>,
    /// The cluster this node joins; `None`: it runs alone.
    pub cluster: Option<ClusterSettings>,
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
    /// Connections, timeouts and trusted proxies of the HTTP server.
    pub http_limits: crate::serve::HttpLimits,
    /// WHIP/WHEP session requests per address: a burst, then a rate per second.
    pub session_burst: u32,
    pub sessions_per_sec: f64,
    /// Caps, pings and idle timeout of chat WebSockets and notification streams.
    pub realtime: api::realtime::RealtimeConfig,
    /// Go-live notification debounce and retention.
    pub notify: api::notifications::NotifyConfig,
    /// SurrealKV commits wait for fsync (the binary sets it before the runtime starts).
    pub database_sync: bool,
    /// Registration rate, password-hashing slots (the configured stream names are added at
    /// start).
    pub accounts: api::accounts::AccountConfig,
}

/// Replays are kept a week by default.
pub const DEFAULT_REPLAY_RETENTION: std::time::Duration =
    std::time::Duration::from_secs(7 * 24 * 3600);

impl Default for Config {
    fn default() -> Self {
        Self {
            http: SocketAddr::from(([0, 0, 0, 0], 8080)),
            rtmp: SocketAddr::from(([0, 0, 0, 0], 1935)),
            rtmp_limits: Default::default(),
            media: media::MediaConfig::default(),
            data_dir: PathBuf::from("data"),
            database: None,
            database_namespace: "glint".into(),
            database_name: "glint".into(),
            database_credentials: None,
            cluster: None,
            stream_keys: HashMap::new(),
            ice_servers: Vec::new(),
            cors_origins: Vec::new(),
            hls_public_url: None,
            replay_retention: DEFAULT_REPLAY_RETENTION,
            analytics_interval: crate::analytics::DEFAULT_INTERVAL,
            web_dir: None,
            http_limits: crate::serve::HttpLimits::default(),
            session_burst: signaling::limit::DEFAULT_SESSION_BURST,
            sessions_per_sec: signaling::limit::DEFAULT_SESSIONS_PER_SEC,
            realtime: api::realtime::RealtimeConfig::default(),
            notify: api::notifications::NotifyConfig::default(),
            database_sync: true,
            accounts: api::accounts::AccountConfig::default(),
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
        if let Some(v) = cli.rtmp_max_connections.or(file.rtmp_max_connections) {
            c.rtmp_limits.max_connections = v.max(1);
        }
        if let Some(v) = cli
            .rtmp_max_connections_per_address
            .or(file.rtmp_max_connections_per_address)
        {
            c.rtmp_limits.max_connections_per_address = v.max(1);
        }
        if let Some(v) = cli
            .rtmp_publish_deadline
            .or(file.rtmp_publish_deadline_secs)
        {
            c.rtmp_limits.publish_deadline = std::time::Duration::from_secs(v.max(1));
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
        if let Some(v) = cli.gop_cache_kib.or(file.gop_cache_kib) {
            c.media.gop_cache_bytes = v.saturating_mul(1024);
        }
        if let Some(v) = cli.reconnect_grace.or(file.reconnect_grace_secs) {
            c.media.reconnect_grace = std::time::Duration::from_secs(v);
        }
        if let Some(v) = cli.data_dir.or(file.data_dir) {
            c.data_dir = v;
        }
        c.database = cli.database.or(file.database);
        if let Some(ns) = cli.database_namespace.or(file.database_namespace) {
            c.database_namespace = ns;
        }
        if let Some(db) = cli.database_name.or(file.database_name) {
            c.database_name = db;
        }
        if let Some(username) = cli.database_user.or(file.database_user) {
            let level = match cli
                .database_auth_level
                .or(file.database_auth_level)
                .as_deref()
                .unwrap_or("root")
            {
                "root" => api::db::AuthLevel::Root,
                "namespace" => api::db::AuthLevel::Namespace,
                "database" => api::db::AuthLevel::Database,
                other => {
                    anyhow::bail!("database auth level {other:?}: use root, namespace or database")
                }
            };
            c.database_credentials = Some(api::db::Credentials {
                level,
                username,
                password: cli
                    .database_password
                    .or(file.database_password)
                    .unwrap_or_default(),
            });
        }
        if let Some(redis_url) = cli.redis_url.or(file.redis_url) {
            let token = cli.cluster_token.or(file.cluster_token).unwrap_or_default();
            anyhow::ensure!(
                token.len() >= MIN_CLUSTER_TOKEN,
                "a cluster (GLINT_REDIS_URL) needs GLINT_CLUSTER_TOKEN: a secret of at least {MIN_CLUSTER_TOKEN} characters every node shares"
            );
            anyhow::ensure!(
                std::env::var_os("GLINT_JWT_SECRET").is_some_and(|s| s.len() >= 32),
                "a cluster (GLINT_REDIS_URL) needs GLINT_JWT_SECRET (at least 32 bytes, the same on every node): a secret generated per node would log users out whenever their requests reach another node"
            );
            anyhow::ensure!(
                c.database.as_deref().is_some_and(api::db::is_remote),
                "a cluster (GLINT_REDIS_URL) needs GLINT_DATABASE pointing at a SurrealDB server (ws:// or wss://): the embedded database is one node's"
            );
            c.cluster = Some(ClusterSettings {
                redis_url,
                node_id: cli.node_id.or(file.node_id),
                advertise_url: cli.advertise_url.or(file.advertise_url),
                token,
            });
        }
        if cli.hls.or(file.hls).unwrap_or(true) {
            let mut hls = media::hls::HlsConfig::new(c.data_dir.join("hls"));
            if let Some(n) = cli.hls_max_ladders.or(file.hls_max_ladders) {
                hls.max_ladders = n;
            }
            if let Some(on) = cli.hls_low_latency.or(file.hls_low_latency) {
                hls.low_latency = on;
            }
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
            if let Some(gb) = cli.replay_max_gb.or(file.replay_max_gb) {
                anyhow::ensure!(
                    gb.is_finite() && gb >= 0.0,
                    "replay max size: {gb} GB is not a size"
                );
                hls.replay_max_bytes = (gb * 1e9) as u64;
            }
            if let Some(n) = cli.hls_upload_concurrency.or(file.hls_upload_concurrency) {
                hls.upload_concurrency = n.clamp(1, 256);
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
        if let Some(m) = cli.notify_debounce_minutes.or(file.notify_debounce_minutes) {
            c.notify.debounce = std::time::Duration::from_secs(m.min(24 * 60) * 60);
        }
        if let Some(d) = cli
            .notification_retention_days
            .or(file.notification_retention_days)
        {
            c.notify.retention = std::time::Duration::from_secs(d.clamp(1, 3650) * 24 * 3600);
        }
        if let Some(v) = cli.database_sync.or(file.database_sync) {
            c.database_sync = v;
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
        let proxies = if cli.trusted_proxies.is_empty() {
            file.trusted_proxies
        } else {
            cli.trusted_proxies
        };
        c.http_limits.trusted_proxies = proxies
            .iter()
            .map(|p| {
                p.parse()
                    .map_err(|e| anyhow::anyhow!("trusted proxies: {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
        let limits = &mut c.http_limits;
        if let Some(v) = cli.http_max_connections.or(file.http_max_connections) {
            limits.max_connections = v.max(1);
        }
        if let Some(v) = cli
            .http_max_connections_per_address
            .or(file.http_max_connections_per_address)
        {
            limits.max_connections_per_address = v;
        }
        if let Some(v) = cli.http_header_timeout.or(file.http_header_timeout_secs) {
            limits.header_read_timeout = std::time::Duration::from_secs(v.max(1));
        }
        if let Some(v) = cli.http_request_timeout.or(file.http_request_timeout_secs) {
            limits.request_timeout = std::time::Duration::from_secs(v.max(1));
        }
        if let Some(v) = cli
            .max_sessions_per_address
            .or(file.max_sessions_per_address)
        {
            c.media.max_sessions_per_address = v.max(1);
        }
        if let Some(v) = file.publisher_reserve {
            c.media.publisher_reserve = v;
        }
        if let Some(v) = file.connect_timeout_secs {
            c.media.connect_timeout = std::time::Duration::from_secs(v.max(1));
        }
        if let Some(v) = cli.session_burst.or(file.session_burst) {
            c.session_burst = v;
        }
        if let Some(v) = file.sessions_per_sec.filter(|v| *v > 0.0) {
            c.sessions_per_sec = v;
        }
        let rt = &mut c.realtime;
        for (value, field) in [
            (
                cli.realtime_per_address.or(file.realtime_per_address),
                &mut rt.per_address,
            ),
            (
                cli.realtime_chat_per_user.or(file.realtime_chat_per_user),
                &mut rt.chat_per_user,
            ),
            (
                cli.realtime_sse_per_user.or(file.realtime_sse_per_user),
                &mut rt.sse_per_user,
            ),
        ] {
            if let Some(v) = value {
                anyhow::ensure!(v >= 1, "realtime connection caps must be at least 1");
                *field = v;
            }
        }
        if let Some(v) = cli.realtime_ping_secs.or(file.realtime_ping_secs) {
            rt.ping_interval = std::time::Duration::from_secs(v);
        }
        if let Some(v) = cli.realtime_idle_secs.or(file.realtime_idle_secs) {
            rt.idle_timeout = std::time::Duration::from_secs(v);
        }
        anyhow::ensure!(
            !rt.ping_interval.is_zero() && rt.idle_timeout > rt.ping_interval,
            "realtime_idle_secs must be longer than realtime_ping_secs (at least 1)"
        );
        if let Some(v) = cli.registrations_per_hour.or(file.registrations_per_hour) {
            c.accounts.registrations_per_hour = v;
        }
        if let Some(v) = cli.max_concurrent_hashes.or(file.max_concurrent_hashes) {
            anyhow::ensure!(v >= 1, "max_concurrent_hashes must be at least 1");
            c.accounts.concurrent_hashes = v;
            c.accounts.hash_queue = v * api::hash_gate::HASH_QUEUE_PER_SLOT;
        }
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
    fn account_limits_from_file_and_flags() {
        let c = load(&[]).unwrap();
        assert_eq!(
            c.accounts.registrations_per_hour,
            api::accounts::DEFAULT_REGISTRATIONS_PER_HOUR
        );
        assert_eq!(
            c.accounts.concurrent_hashes,
            api::hash_gate::default_slots()
        );
        let path = write(
            "accounts",
            "registrations_per_hour = 0\nmax_concurrent_hashes = 3\n",
        );
        let c = load(&["--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(c.accounts.registrations_per_hour, 0);
        assert_eq!(
            (c.accounts.concurrent_hashes, c.accounts.hash_queue),
            (3, 48)
        );
        let c = load(&[
            "--config",
            path.to_str().unwrap(),
            "--registrations-per-hour=5",
        ])
        .unwrap();
        assert_eq!(c.accounts.registrations_per_hour, 5, "flag beats file");
        assert!(load(&["--max-concurrent-hashes=0"]).is_err());
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn defaults_without_anything() {
        let c = load(&[]).unwrap();
        assert_eq!(c.http.port(), 8080);
        assert_eq!(c.media.udp_bind.port(), 8189);
        assert_eq!(c.media.reconnect_grace.as_secs(), 20);
        assert!(c.stream_keys.is_empty());
        assert_eq!(
            c.rtmp_limits,
            media::ingest::rtmp::limits::RtmpLimits::default()
        );
        let c = load(&[
            "--rtmp-max-connections=3",
            "--rtmp-max-connections-per-address=2",
            "--rtmp-publish-deadline=4",
        ])
        .unwrap();
        assert_eq!(
            (
                c.rtmp_limits.max_connections,
                c.rtmp_limits.max_connections_per_address,
                c.rtmp_limits.publish_deadline.as_secs()
            ),
            (3, 2, 4)
        );
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
    fn realtime_limits_from_file_and_flags() {
        assert_eq!(
            load(&[]).unwrap().realtime,
            api::realtime::RealtimeConfig::default()
        );
        let path = write(
            "realtime",
            "realtime_per_address = 50\nrealtime_chat_per_user = 2\nrealtime_ping_secs = 10\nrealtime_idle_secs = 25\n",
        );
        let c = load(&[
            "--config",
            path.to_str().unwrap(),
            "--realtime-sse-per-user",
            "3",
        ])
        .unwrap();
        let rt = c.realtime;
        assert_eq!(
            (rt.per_address, rt.chat_per_user, rt.sse_per_user),
            (50, 2, 3)
        );
        assert_eq!(
            (rt.ping_interval.as_secs(), rt.idle_timeout.as_secs()),
            (10, 25)
        );
        let err = load(&[
            "--config",
            path.to_str().unwrap(),
            "--realtime-idle-secs",
            "10",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("realtime_idle_secs"), "{err}");
        assert!(load(&["--realtime-per-address", "0"]).is_err());
        std::fs::remove_file(path).unwrap();
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

    #[test]
    fn replay_cap_uploads_notifications_and_database_sync() {
        let c = load(&[]).unwrap();
        let hls = c.media.hls.as_ref().unwrap();
        assert_eq!(hls.replay_max_bytes, media::hls::replay::DEFAULT_MAX_BYTES);
        assert_eq!(hls.upload_concurrency, 8);
        assert_eq!(c.notify, api::notifications::NotifyConfig::default());
        assert!(c.database_sync, "durable by default");
        let path = write(
            "durability",
            "replay_max_gb = 0.5\nhls_upload_concurrency = 3\nnotify_debounce_minutes = 0\nnotification_retention_days = 2\ndatabase_sync = false\n",
        );
        let c = load(&["--config", path.to_str().unwrap()]).unwrap();
        let hls = c.media.hls.as_ref().unwrap();
        assert_eq!(
            (hls.replay_max_bytes, hls.upload_concurrency),
            (500_000_000, 3)
        );
        assert_eq!(c.notify.debounce, std::time::Duration::ZERO);
        assert_eq!(c.notify.retention.as_secs(), 2 * 24 * 3600);
        assert!(!c.database_sync);
        let c = load(&[
            "--config",
            path.to_str().unwrap(),
            "--database-sync",
            "true",
        ])
        .unwrap();
        assert!(c.database_sync, "flag beats file");
        assert!(load(&["--replay-max-gb=-1"]).is_err());
        std::fs::remove_file(path).unwrap();
    }
}
