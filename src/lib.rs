//! The `glint` server: composes the media core, WHIP/WHEP signaling and the HTTP surface into one
//! process. `main.rs` parses configuration and calls [`start`]; tests call [`start`] directly
//! with port 0.

pub mod analytics;
pub mod audience;
pub mod config;
pub mod datadir;
mod http;
mod keys;
mod platform;
mod secrets;
pub mod serve;
pub mod web;

use std::net::SocketAddr;

use anyhow::Context;
use media::MediaHandle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::info;

pub use config::{Cli, Config};

/// How long shutdown waits for open HTTP requests to finish.
const HTTP_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// A running server.
pub struct Server {
    pub http_addr: SocketAddr,
    pub udp_addr: SocketAddr,
    pub rtmp_addr: SocketAddr,
    rtmp_task: JoinHandle<()>,
    pub media: MediaHandle,
    pub api: api::Api,
    stop_http: oneshot::Sender<()>,
    http_task: JoinHandle<std::io::Result<()>>,
    media_task: media::MediaTask,
    sync_task: JoinHandle<()>,
    expiry_task: JoinHandle<()>,
    chat_task: JoinHandle<()>,
    heartbeat_task: Option<JoinHandle<()>>,
    data_dir: std::path::PathBuf,
    _data_dir: datadir::DataDirLock,
}

/// A node id nobody else has: the host name and a random suffix.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "glint".into());
    format!("{host}-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// Bind every socket and start serving.
pub async fn start(mut config: Config) -> anyhow::Result<Server> {
    let data_dir_lock = datadir::lock(&config.data_dir)?;
    if config.stream_keys.is_empty() {
        config.stream_keys = keys::dev_keys(&config.data_dir)?;
    }
    let db_url = match &config.database {
        Some(url) => url.clone(),
        None => {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("creating {}", config.data_dir.display()))?;
            format!("surrealkv://{}", config.data_dir.join("db").display())
        }
    };
    let jwt_secret = secrets::jwt_secret(&config.data_dir)?;
    let db_config = api::db::DbConfig {
        url: db_url.clone(),
        namespace: config.database_namespace.clone(),
        database: config.database_name.clone(),
        credentials: config.database_credentials.clone(),
    };
    let mut api = api::Api::connect_with(&db_config, &jwt_secret)
        .await
        .map_err(|e| anyhow::anyhow!("database {db_url}: {e}"))?;
    api.set_hls_base(config.hls_base());
    api.set_notify_config(config.notify);
    api.set_realtime_config(config.realtime);
    let mut configured: Vec<String> = config.stream_keys.keys().cloned().collect();
    configured.sort();
    // Nobody registers a configured stream's name, and no database key publishes to one.
    config.accounts.configured_streams = configured.clone();
    api.set_account_config(&config.accounts);
    if let Some(c) = &config.cluster {
        let node_id = c.node_id.clone().unwrap_or_else(default_node_id);
        let cluster = api::cluster::Cluster::connect(api::cluster::ClusterConfig {
            redis_url: c.redis_url.clone(),
            node_id: node_id.clone(),
            advertise_url: c.advertise_url.clone().unwrap_or_default(),
            key_prefix: "glint:".into(),
            secret: c.token.as_bytes().to_vec(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("joining the cluster (GLINT_REDIS_URL): {e}"))?;
        info!(node = %node_id, "joined the cluster");
        api.set_cluster(cluster);
    }
    api.ensure_operator_streams(&configured)
        .await
        .map_err(|e| anyhow::anyhow!("recording the configured streams: {e}"))?;
    if let Some(hls) = &mut config.media.hls {
        hls.replays = !config.replay_retention.is_zero();
    }
    let (media, media_task) = media::spawn(config.media.clone())
        .await
        .with_context(|| format!("binding UDP {}", config.media.udp_bind))?;
    // A rotated stream key ends its publisher: RTMP connections, and the media core's session.
    let rtmp_publishers = media::ingest::rtmp::publishers::RtmpPublishers::default();
    api.set_publisher_control(std::sync::Arc::new(platform::EndPublisher {
        media: media.clone(),
        rtmp: rtmp_publishers.clone(),
    }));
    let config_keys = (!config.stream_keys.is_empty())
        .then(|| signaling::StaticKeys::new(config.stream_keys.clone()));
    let authorizer = platform::authorizer(config_keys, api.clone());
    let audience = std::sync::Arc::new(audience::HlsAudience::default());
    let sync_task = platform::spawn_sync(
        media.clone(),
        api.clone(),
        audience.clone(),
        config.replay_retention,
        config.analytics_interval,
    );
    let expiry_task =
        platform::spawn_replay_expiry(media.clone(), api.clone(), config.replay_retention);
    let chat_task = platform::spawn_chat_pruning(api.clone());
    let rtmp_listener = tokio::net::TcpListener::bind(config.rtmp)
        .await
        .with_context(|| format!("binding RTMP {}", config.rtmp))?;
    let rtmp_addr = rtmp_listener.local_addr()?;
    let rtmp_task = media::ingest::rtmp::listener::spawn(
        rtmp_listener,
        media.clone(),
        std::sync::Arc::new(platform::RtmpKeys {
            config_keys: config.stream_keys.clone(),
            api: api.clone(),
        }),
        config.rtmp_limits,
        rtmp_publishers,
    );
    // Other nodes' events from here on (every setter above has run).
    api.start_cluster();
    let app = http::router(
        &config,
        media.clone(),
        authorizer,
        &api,
        audience,
        rtmp_addr.port(),
    );
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .with_context(|| format!("binding HTTP {}", config.http))?;
    let http_addr = listener.local_addr()?;
    let heartbeat_task = match &config.cluster {
        Some(c) => {
            let advertise = c
                .advertise_url
                .clone()
                .unwrap_or_else(|| format!("http://{http_addr}"));
            Some(platform::spawn_heartbeat(
                media.clone(),
                api.clone(),
                advertise,
            ))
        }
        None => None,
    };
    let (stop_http, stopped) = oneshot::channel::<()>();
    let http_task = tokio::spawn(serve::serve(
        listener,
        app,
        config.http_limits.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    info!(http = %http_addr, udp = %media.udp_addr(), rtmp = %rtmp_addr, "glint is up: publish with WHIP to http://{http_addr}/whip/<stream> or RTMP to rtmp://{rtmp_addr}/live, watch at http://{http_addr}/watch/<stream>");
    Ok(Server {
        http_addr,
        udp_addr: media.udp_addr(),
        rtmp_addr,
        rtmp_task,
        media,
        api,
        stop_http,
        http_task,
        media_task,
        sync_task,
        expiry_task,
        chat_task,
        heartbeat_task,
        data_dir: config.data_dir.clone(),
        _data_dir: data_dir_lock,
    })
}

impl Server {
    /// Stop accepting requests, close every WebRTC session (peers are told), and wait.
    pub async fn shutdown(self) {
        self.rtmp_task.abort();
        let _ = self.stop_http.send(());
        self.media.shutdown().await;
        let _ = self.media_task.join.await;
        // Long-lived responses (notification SSE streams) would hold a graceful shutdown open
        // forever: give in-flight requests a bounded time, then drop the rest.
        let mut http_task = self.http_task;
        if tokio::time::timeout(HTTP_DRAIN_TIMEOUT, &mut http_task)
            .await
            .is_err()
        {
            tracing::info!("closing remaining HTTP connections (event streams)");
            http_task.abort();
        }
        self.sync_task.abort();
        self.expiry_task.abort();
        self.chat_task.abort();
        if let Some(task) = self.heartbeat_task {
            task.abort();
        }
        if let Err(e) = self.api.cluster().leave().await {
            tracing::warn!(error = %e, "could not leave the cluster's registry (the lease expires it)");
        }
        // The tasks' futures (each holding the database handle) are dropped once aborted.
        for task in [self.sync_task, self.expiry_task, self.chat_task] {
            let _ = task.await;
        }
        drop(self.api);
        // SurrealDB 3 closes an embedded datastore on its own task after the last handle goes:
        // wait (bounded) until its lock is free, so the data directory can be opened again.
        let lock = self.data_dir.join("db").join("LOCK");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            match std::fs::File::open(&lock) {
                Ok(f) if f.try_lock().is_err() => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await
                }
                _ => break,
            }
        }
    }
}
