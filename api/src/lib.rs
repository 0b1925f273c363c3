//! Glint's platform API under `/api`: users and sessions, streams and stream keys, follows,
//! go-live notifications (stored + Server-Sent Events), categories, replays (videos), chat,
//! stream analytics, and the OpenAPI document.
//! Backed by SurrealDB through one `Surreal<Any>` handle (`mem://`, `surrealkv://`, `ws://`).
//!
//! Each area has a `router()`; [`Api`] is what the binary holds: it builds the router, checks
//! WHIP stream keys for the media core, and records streams going live or offline.

pub mod accounts;
pub mod analytics;
pub mod auth;
pub mod cache;
pub mod categories;
pub mod chat;
pub mod cluster;
pub mod db;
pub mod error;
pub mod follows;
pub mod hash_gate;
mod json;
pub mod notifications;
mod openapi;
pub mod publishers;
pub mod ratelimit;
pub mod realtime;
pub mod sessions;
pub mod streams;
pub mod users;
pub mod validate;
pub mod videos;

use std::sync::Arc;
use std::time::Duration;
use surrealdb::types::SurrealValue;

use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::Router;
use tokio::sync::broadcast;
use tower_http::compression::CompressionLayer;
use tower_http::timeout::TimeoutLayer;

pub use db::Db;
pub use error::{ApiError, Result};

/// Largest JSON body accepted (413 beyond).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Requests (not SSE streams, whose headers go out at once) must answer within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Notifications buffered for slow SSE clients before they are told they lagged.
const NOTIFY_QUEUE: usize = 1024;

/// What every handler gets.
#[derive(Clone)]
pub struct ApiState {
    pub db: Db,
    /// Whether the database answers (always, for the embedded engines).
    pub db_health: Arc<db::Health>,
    pub keys: Arc<auth::JwtKeys>,
    pub notify: broadcast::Sender<notifications::Notification>,
    /// Registration and login limits, the password-hashing gate, sessions, reserved names.
    pub accounts: Arc<accounts::Accounts>,
    pub directory: Arc<cache::PageCache>,
    /// Base URL of HLS objects (`/hls`, or a CDN), for the URLs in stream and video JSON.
    pub hls_base: Option<Arc<str>>,
    /// Chat rooms with readers.
    pub chat: Arc<chat::room::Rooms>,
    pub chat_config: chat::ChatConfig,
    /// Open chat WebSockets and notification streams: caps, and logout's end signal.
    pub realtime: Arc<realtime::Registry>,
    /// Go-live fan-outs (debounced, off the caller's task) and the notification retention.
    pub notifier: notifications::Notifier,
    /// Ends a stream's publisher when its key is rotated (the media side, wired by the binary).
    pub publishers: Arc<dyn publishers::PublisherControl>,
    /// The other nodes, if any: the bus, shared limits, registry and directory.
    pub cluster: cluster::Cluster,
}

/// The caller if a valid token came with the request, else nobody (public endpoints that show
/// more to the owner).
pub struct MaybeAuthUser(pub Option<auth::AuthUser>);

impl FromRequestParts<ApiState> for MaybeAuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        Ok(MaybeAuthUser(
            auth::AuthUser::from_request_parts(parts, state).await.ok(),
        ))
    }
}

/// While the database is unreachable, every API request is answered 503 with `Retry-After` at
/// once (its queries would wait for the reconnection).
async fn database_gate(
    axum::extract::State(st): axum::extract::State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if !st.db_health.is_up() {
        return ApiError::Unavailable.into_response();
    }
    next.run(request).await
}

/// Why a WHIP stream key was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    UnknownStream,
    WrongKey,
}

/// The platform API, as the binary holds it.
#[derive(Clone)]
pub struct Api {
    state: ApiState,
}

impl Api {
    /// Connect to `db_url` and apply the schema. `jwt_secret` signs access tokens (≥ 32 bytes).
    pub async fn connect(db_url: &str, jwt_secret: &[u8]) -> Result<Self> {
        let config = db::DbConfig {
            url: db_url.to_owned(),
            ..db::DbConfig::default()
        };
        Self::connect_with(&config, jwt_secret).await
    }

    /// [`Api::connect`] with the namespace, database and credentials of `config`. A database
    /// server is then watched: while it is away, `/api` answers 503 with `Retry-After`.
    pub async fn connect_with(config: &db::DbConfig, jwt_secret: &[u8]) -> Result<Self> {
        let db = db::connect_with(config).await?;
        let db_health = Arc::new(db::Health::default());
        if db::is_remote(&config.url) {
            db::watch_health(db.clone(), db_health.clone());
        }
        let (notify, _) = broadcast::channel(NOTIFY_QUEUE);
        Ok(Self {
            state: ApiState {
                db,
                db_health,
                keys: Arc::new(auth::JwtKeys::new(jwt_secret)),
                notify,
                accounts: Arc::default(),
                directory: Arc::new(cache::PageCache::default()),
                hls_base: None,
                chat: Arc::default(),
                chat_config: chat::ChatConfig::default(),
                realtime: Arc::default(),
                notifier: notifications::Notifier::default(),
                publishers: Arc::new(publishers::NoMedia),
                cluster: cluster::Cluster::alone(),
            },
        })
    }

    /// Every `/api` route, with body limit, timeout and compression.
    pub fn router(&self) -> Router {
        Router::new()
            .merge(users::router())
            .merge(streams::router())
            .merge(follows::router())
            .merge(notifications::router())
            .merge(categories::router())
            .merge(videos::router())
            .merge(analytics::router())
            .merge(chat::router())
            .merge(openapi::router())
            .route(
                "/api/{*rest}",
                axum::routing::any(|| async { ApiError::NotFound("endpoint") }),
            )
            .layer(axum::middleware::from_fn_with_state(
                self.state.clone(),
                database_gate,
            ))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(TimeoutLayer::with_status_code(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                REQUEST_TIMEOUT,
            ))
            .layer(CompressionLayer::new())
            .with_state(self.state.clone())
    }

    /// The operator's configured streams become channels in the directory (created once).
    pub async fn ensure_operator_streams(&self, names: &[String]) -> Result<usize> {
        streams::ensure_operator_streams(&self.state, names).await
    }

    /// Account limits and the configured streams' names; before [`Api::router`].
    pub fn set_account_config(&mut self, config: &accounts::AccountConfig) {
        self.state.accounts = Arc::new(accounts::Accounts::new(config));
    }

    /// May `key` publish to the stream named `name`? (Constant-time comparison.) Never for a
    /// stream the operator configured by key: only its configured key does (checked before
    /// this, by the binary), whatever the database holds under that name.
    pub async fn check_stream_key(&self, name: &str, key: &str) -> Result<Result<(), KeyCheck>> {
        use subtle::ConstantTimeEq;
        if self.state.accounts.is_configured_stream(name) {
            return Ok(Err(KeyCheck::WrongKey));
        }
        let Some(stream) = streams::by_name(&self.state, name).await? else {
            return Ok(Err(KeyCheck::UnknownStream));
        };
        let expected = stream.stream_key.unwrap_or_default();
        if bool::from(expected.as_bytes().ct_eq(key.as_bytes())) && !expected.is_empty() {
            Ok(Ok(()))
        } else {
            Ok(Err(KeyCheck::WrongKey))
        }
    }

    /// The stream a key publishes to (RTMP, where the key alone names the stream).
    pub async fn stream_for_key(&self, key: &str) -> Result<Option<String>> {
        if key.is_empty() || key.len() > 128 || key.chars().any(char::is_control) {
            return Ok(None);
        }
        let mut res = self
            .state
            .db
            .query("SELECT VALUE name FROM stream WHERE stream_key = $key LIMIT 1")
            .bind(("key", key.to_owned()))
            .await?;
        let names: Vec<String> = res.take(0)?;
        Ok(names.into_iter().next().filter(|name| {
            let configured = self.state.accounts.is_configured_stream(name);
            if configured {
                tracing::warn!(stream = %name, "a database stream key names a configured stream: refused (only its configured key publishes to it)");
            }
            !configured
        }))
    }

    /// The media core says the stream named `name` went live (or offline). Going live
    /// schedules notifications for the owner's followers (unless the channel was on air within
    /// the debounce); returns whether it did.
    pub async fn set_live(&self, name: &str, live: bool) -> Result<bool> {
        let Some(stream) = streams::by_name(&self.state, name).await? else {
            return Ok(false);
        };
        let started_at = live.then(db::now_ms);
        self.state
            .db
            .query("UPDATE type::record('stream', $id) SET live = $live, started_at = $started, viewers = 0")
            .bind(("id", stream.id.clone()))
            .bind(("live", live))
            .bind(("started", started_at))
            .await?
            .check()?;
        cluster::directory_changed(&self.state).await;
        if !live {
            cluster::room_event(
                &self.state,
                &stream.owner,
                cluster::RoomEvent::Viewers { count: 0 },
            )
            .await;
        }
        tracing::info!(stream = name, live, "stream state recorded");
        if live != stream.live {
            return notifications::on_air_changed(&self.state, &stream, live, db::now_ms()).await;
        }
        Ok(false)
    }

    /// Names of the streams the database has live (to check against the media core's).
    pub async fn live_stream_names(&self) -> Result<Vec<String>> {
        let mut res = self
            .state
            .db
            .query("SELECT VALUE name FROM stream WHERE live = true")
            .await?;
        Ok(res.take(0)?)
    }

    /// Current viewer count of a live stream, every node's summed (for sorting and display;
    /// pushed to its chat on every node).
    pub async fn set_viewers(&self, name: &str, viewers: usize) -> Result<()> {
        if self.state.cluster.is_clustered() {
            // Every node's room of this chat (readers may be anywhere; a room opened since the
            // last change learns the count too). Rooms tell their readers only of changes.
            if let Some(stream) = streams::by_name(&self.state, name).await? {
                let event = cluster::RoomEvent::Viewers { count: viewers };
                cluster::room_event(&self.state, &stream.owner, event).await;
            }
        } else if let Some(room) = self.state.chat.by_name(name) {
            room.set_viewers(viewers);
        }
        let mut res = self
            .state
            .db
            .query("UPDATE stream SET viewers = $n WHERE name = $name AND viewers != $n RETURN VALUE name")
            .bind(("n", viewers as i64))
            .bind(("name", name.to_owned()))
            .await?;
        let changed: Vec<String> = res.take(0)?;
        // Cached directory pages go only when a count changed (every node's, in a cluster).
        if !changed.is_empty() {
            cluster::directory_changed(&self.state).await;
        }
        Ok(())
    }

    /// The stream named `name` went on air at `now_ms`: open its broadcast for analytics.
    /// `None` for a stream that is not in the database.
    pub async fn begin_broadcast(&self, name: &str, now_ms: i64) -> Result<Option<String>> {
        analytics::begin(&self.state, name, now_ms).await
    }

    /// Broadcast `id` ended at `now_ms`: its summary is computed and stored.
    pub async fn end_broadcast(&self, id: &str, now_ms: i64) -> Result<()> {
        analytics::end(&self.state, id, Some(now_ms)).await
    }

    /// Close broadcasts the last run left open (at start-up, when nothing is on air).
    pub async fn close_dangling_broadcasts(&self) -> Result<usize> {
        analytics::close_dangling(&self.state, None).await
    }

    /// Write samples of live broadcasts (broadcast id, sample) in one batch.
    pub async fn record_samples(&self, samples: Vec<(String, analytics::Sample)>) -> Result<()> {
        analytics::record(&self.state, samples).await
    }

    /// Where players fetch HLS (`/hls` on this server, or a CDN); `None`: HLS is off.
    pub fn set_hls_base(&mut self, base: Option<&str>) {
        self.state.hls_base = base.map(|b| Arc::from(b.trim_end_matches('/')));
    }

    /// The media core stored a finished broadcast as a replay; returns the video's id.
    pub async fn add_video(&self, video: videos::NewVideo<'_>) -> Result<String> {
        let id = videos::add(&self.state, video).await?;
        Ok(id)
    }

    /// Videos whose time is up (retention over, or deleted by their owner), at most `limit`.
    pub async fn expired_videos(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<videos::ExpiredVideo>> {
        videos::expired(&self.state, now_ms, limit).await
    }

    /// What ends a stream's publisher when its key is rotated; before [`Api::router`].
    pub fn set_publisher_control(&mut self, control: Arc<dyn publishers::PublisherControl>) {
        self.state.publishers = control;
    }

    /// Chat limits (tests use small ones); before [`Api::router`].
    pub fn set_chat_config(&mut self, config: chat::ChatConfig) {
        self.state.chat_config = config;
    }

    /// Limits of chat WebSockets and notification streams; before [`Api::router`].
    pub fn set_realtime_config(&mut self, config: realtime::RealtimeConfig) {
        self.state.realtime = Arc::new(realtime::Registry::new(config));
    }

    /// Lifetime of access tokens issued from now on (tests use short ones).
    pub fn set_access_token_ttl(&mut self, ttl: Duration) {
        Arc::make_mut(&mut self.state.keys).set_ttl(ttl);
    }

    /// Delete chat messages older than `before_ms`; how many.
    pub async fn prune_chat(&self, before_ms: i64) -> Result<usize> {
        chat::store::prune(&self.state, before_ms).await
    }

    /// Every replay record's (stream name, epoch), deleted ones included: what the HLS store's
    /// broadcasts are checked against at start.
    pub async fn video_epochs(&self) -> Result<Vec<(String, i64)>> {
        #[derive(serde::Deserialize, SurrealValue)]
        struct Row {
            stream_name: String,
            epoch: i64,
        }
        let mut res = self
            .state
            .db
            .query("SELECT stream_name, epoch FROM video")
            .await?;
        let rows: Vec<Row> = res.take(0)?;
        Ok(rows.into_iter().map(|r| (r.stream_name, r.epoch)).collect())
    }

    /// Forget a video whose objects were deleted.
    pub async fn forget_video(&self, id: &str) -> Result<()> {
        videos::forget(&self.state, id).await
    }

    /// Join the cluster (before [`Api::router`]); [`Api::start_cluster`] then follows its bus.
    pub fn set_cluster(&mut self, cluster: cluster::Cluster) {
        self.state.cluster = cluster;
    }

    /// Follow the cluster's bus (other nodes' chat, notifications, invalidations) into this
    /// node's state; after every `set_*`. Nothing to do for a node alone.
    pub fn start_cluster(&self) {
        self.state.cluster.spawn_subscriber(self.state.clone());
    }

    pub fn cluster(&self) -> &cluster::Cluster {
        &self.state.cluster
    }

    pub fn state(&self) -> &ApiState {
        &self.state
    }
}
