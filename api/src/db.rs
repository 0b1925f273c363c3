//! The database handle and its schema. One `Surreal<Any>`, so the same code runs on `mem://`
//! (tests), `surrealkv://<dir>` (embedded default, survives restarts) and `ws://host:port`.

use surrealdb::engine::any::{self, Any};
use surrealdb::Surreal;

use crate::error::Result;

/// One database session shared by the whole process. Behind an `Arc` on purpose: each clone of
/// a SurrealDB 3 handle opens a new session and replays its sign-in on it (on a server, a
/// password check per clone, i.e. per request).
pub type Db = std::sync::Arc<Surreal<Any>>;

/// Bumped by each migration; stored in `meta:schema`.
pub const SCHEMA_VERSION: i64 = 4;

/// Tables, fields and indexes. Every statement is idempotent (`IF NOT EXISTS`), so start-up
/// applies it every time; later versions add migrations keyed on `meta:schema.version`.
const SCHEMA: &str = r#"
DEFINE TABLE IF NOT EXISTS meta SCHEMAFULL;
DEFINE FIELD IF NOT EXISTS version ON meta TYPE int;

DEFINE TABLE IF NOT EXISTS user SCHEMAFULL;
DEFINE FIELD IF NOT EXISTS username ON user TYPE string;
DEFINE FIELD IF NOT EXISTS email ON user TYPE string;
DEFINE FIELD IF NOT EXISTS password_hash ON user TYPE string;
DEFINE FIELD IF NOT EXISTS created_at ON user TYPE int;
DEFINE INDEX IF NOT EXISTS user_username ON user FIELDS username UNIQUE;
DEFINE INDEX IF NOT EXISTS user_email ON user FIELDS email UNIQUE;

DEFINE TABLE IF NOT EXISTS stream SCHEMAFULL;
DEFINE FIELD IF NOT EXISTS owner ON stream TYPE string;
DEFINE FIELD IF NOT EXISTS name ON stream TYPE string;
DEFINE FIELD IF NOT EXISTS title ON stream TYPE string;
DEFINE FIELD IF NOT EXISTS category ON stream TYPE option<string>;
DEFINE FIELD IF NOT EXISTS tags ON stream TYPE array<string>;
DEFINE FIELD IF NOT EXISTS language ON stream TYPE option<string>;
DEFINE FIELD IF NOT EXISTS stream_key ON stream TYPE string;
DEFINE FIELD IF NOT EXISTS live ON stream TYPE bool;
DEFINE FIELD IF NOT EXISTS started_at ON stream TYPE option<int>;
DEFINE FIELD IF NOT EXISTS viewers ON stream TYPE int;
DEFINE FIELD IF NOT EXISTS created_at ON stream TYPE int;
DEFINE INDEX IF NOT EXISTS stream_name ON stream FIELDS name UNIQUE;
DEFINE INDEX IF NOT EXISTS stream_owner ON stream FIELDS owner UNIQUE;
DEFINE INDEX IF NOT EXISTS stream_live ON stream FIELDS live;
DEFINE INDEX IF NOT EXISTS stream_key_lookup ON stream FIELDS stream_key;

DEFINE TABLE IF NOT EXISTS follow SCHEMAFULL;
DEFINE FIELD IF NOT EXISTS follower ON follow TYPE string;
DEFINE FIELD IF NOT EXISTS channel ON follow TYPE string;
DEFINE FIELD IF NOT EXISTS created_at ON follow TYPE int;
DEFINE INDEX IF NOT EXISTS follow_pair ON follow FIELDS follower, channel UNIQUE;
DEFINE INDEX IF NOT EXISTS follow_channel ON follow FIELDS channel;

DEFINE TABLE IF NOT EXISTS notification SCHEMAFULL;
DEFINE FIELD IF NOT EXISTS user ON notification TYPE string;
DEFINE FIELD IF NOT EXISTS kind ON notification TYPE string;
DEFINE FIELD IF NOT EXISTS channel ON notification TYPE string;
DEFINE FIELD IF NOT EXISTS stream ON notification TYPE string;
DEFINE FIELD IF NOT EXISTS title ON notification TYPE string;
DEFINE FIELD IF NOT EXISTS read ON notification TYPE bool;
DEFINE FIELD IF NOT EXISTS created_at ON notification TYPE int;
DEFINE INDEX IF NOT EXISTS notification_user ON notification FIELDS user;
DEFINE INDEX IF NOT EXISTS notification_created ON notification FIELDS created_at;

-- When each channel (by owner id) last went on or off air: the go-live notification debounce.
DEFINE TABLE IF NOT EXISTS channel_on_air SCHEMAFULL;
DEFINE FIELD IF NOT EXISTS at ON channel_on_air TYPE int;
-- When its followers were last notified: who followed since then is told even inside the debounce.
DEFINE FIELD IF NOT EXISTS notified_at ON channel_on_air TYPE option<int>;

-- One row per login session (a refresh-token family): the hash of its current token.
DEFINE TABLE IF NOT EXISTS refresh_token SCHEMAFULL;
DEFINE FIELD IF NOT EXISTS user ON refresh_token TYPE string;
DEFINE FIELD IF NOT EXISTS token_hash ON refresh_token TYPE string;
DEFINE FIELD IF NOT EXISTS expires_at ON refresh_token TYPE int;
DEFINE INDEX IF NOT EXISTS refresh_token_hash ON refresh_token FIELDS token_hash UNIQUE;
DEFINE INDEX IF NOT EXISTS refresh_token_user ON refresh_token FIELDS user;
DEFINE INDEX IF NOT EXISTS refresh_token_expires ON refresh_token FIELDS expires_at;

DEFINE TABLE IF NOT EXISTS video SCHEMAFULL;
DEFINE FIELD IF NOT EXISTS stream ON video TYPE option<string>;
DEFINE FIELD IF NOT EXISTS stream_name ON video TYPE string;
DEFINE FIELD IF NOT EXISTS title ON video TYPE string;
DEFINE FIELD IF NOT EXISTS category ON video TYPE option<string>;
DEFINE FIELD IF NOT EXISTS epoch ON video TYPE int;
DEFINE FIELD IF NOT EXISTS started_at ON video TYPE int;
DEFINE FIELD IF NOT EXISTS ended_at ON video TYPE int;
DEFINE FIELD IF NOT EXISTS duration_ms ON video TYPE int;
DEFINE FIELD IF NOT EXISTS renditions ON video TYPE array<string>;
DEFINE FIELD IF NOT EXISTS expires_at ON video TYPE int;
DEFINE FIELD IF NOT EXISTS deleted ON video TYPE bool;
DEFINE INDEX IF NOT EXISTS video_stream ON video FIELDS stream;
DEFINE INDEX IF NOT EXISTS video_expires ON video FIELDS expires_at;

DEFINE TABLE IF NOT EXISTS chat_message SCHEMAFULL;
DEFINE FIELD IF NOT EXISTS channel ON chat_message TYPE string;
DEFINE FIELD IF NOT EXISTS author_id ON chat_message TYPE string;
DEFINE FIELD IF NOT EXISTS author ON chat_message TYPE string;
DEFINE FIELD IF NOT EXISTS text ON chat_message TYPE string;
DEFINE FIELD IF NOT EXISTS at ON chat_message TYPE int;
DEFINE FIELD IF NOT EXISTS deleted ON chat_message TYPE bool;
DEFINE INDEX IF NOT EXISTS chat_message_channel ON chat_message FIELDS channel, at;
DEFINE INDEX IF NOT EXISTS chat_message_at ON chat_message FIELDS at;

DEFINE TABLE IF NOT EXISTS chat_moderator SCHEMAFULL;
DEFINE FIELD IF NOT EXISTS channel ON chat_moderator TYPE string;
DEFINE FIELD IF NOT EXISTS user ON chat_moderator TYPE string;
DEFINE INDEX IF NOT EXISTS chat_moderator_channel ON chat_moderator FIELDS channel;

DEFINE TABLE IF NOT EXISTS chat_restriction SCHEMAFULL;
DEFINE FIELD IF NOT EXISTS channel ON chat_restriction TYPE string;
DEFINE FIELD IF NOT EXISTS user ON chat_restriction TYPE string;
DEFINE FIELD IF NOT EXISTS until ON chat_restriction TYPE option<int>;
DEFINE INDEX IF NOT EXISTS chat_restriction_channel ON chat_restriction FIELDS channel;

DEFINE TABLE IF NOT EXISTS chat_settings SCHEMAFULL;
DEFINE FIELD IF NOT EXISTS slow_mode_secs ON chat_settings TYPE int;
DEFINE FIELD IF NOT EXISTS followers_only ON chat_settings TYPE bool;

DEFINE TABLE IF NOT EXISTS broadcast SCHEMAFULL;
DEFINE FIELD IF NOT EXISTS stream ON broadcast TYPE string;
DEFINE FIELD IF NOT EXISTS owner ON broadcast TYPE string;
DEFINE FIELD IF NOT EXISTS title ON broadcast TYPE string;
DEFINE FIELD IF NOT EXISTS category ON broadcast TYPE option<string>;
DEFINE FIELD IF NOT EXISTS started_at ON broadcast TYPE int;
DEFINE FIELD IF NOT EXISTS ended_at ON broadcast TYPE option<int>;
DEFINE FIELD IF NOT EXISTS duration_ms ON broadcast TYPE int;
DEFINE FIELD IF NOT EXISTS peak_viewers ON broadcast TYPE int;
DEFINE FIELD IF NOT EXISTS average_viewers ON broadcast TYPE float;
DEFINE FIELD IF NOT EXISTS unique_viewers ON broadcast TYPE int;
DEFINE FIELD IF NOT EXISTS chat_messages ON broadcast TYPE int;
DEFINE FIELD IF NOT EXISTS follows_gained ON broadcast TYPE int;
DEFINE INDEX IF NOT EXISTS broadcast_stream ON broadcast FIELDS stream, started_at;

DEFINE TABLE IF NOT EXISTS broadcast_sample SCHEMAFULL;
DEFINE FIELD IF NOT EXISTS broadcast ON broadcast_sample TYPE string;
DEFINE FIELD IF NOT EXISTS at ON broadcast_sample TYPE int;
DEFINE FIELD IF NOT EXISTS viewers ON broadcast_sample TYPE int;
DEFINE FIELD IF NOT EXISTS webrtc_viewers ON broadcast_sample TYPE int;
DEFINE FIELD IF NOT EXISTS hls_viewers ON broadcast_sample TYPE int;
DEFINE FIELD IF NOT EXISTS unique_viewers ON broadcast_sample TYPE int;
DEFINE FIELD IF NOT EXISTS ingest_kbps ON broadcast_sample TYPE option<int>;
DEFINE FIELD IF NOT EXISTS keyframe_interval_ms ON broadcast_sample TYPE option<int>;
DEFINE INDEX IF NOT EXISTS broadcast_sample_broadcast ON broadcast_sample FIELDS broadcast, at;

DEFINE TABLE IF NOT EXISTS category SCHEMAFULL;
DEFINE FIELD IF NOT EXISTS slug ON category TYPE string;
DEFINE FIELD IF NOT EXISTS name ON category TYPE string;
DEFINE INDEX IF NOT EXISTS category_slug ON category FIELDS slug UNIQUE;
"#;

/// Categories every installation starts with (slug, name).
pub const CATEGORIES: [(&str, &str); 8] = [
    ("just-chatting", "Just Chatting"),
    ("gaming", "Gaming"),
    ("music", "Music"),
    ("art", "Art"),
    ("software", "Software & Development"),
    ("sports", "Sports"),
    ("irl", "IRL"),
    ("education", "Education"),
];

/// Glint's switch for embedded-database durability (the name SurrealDB 2.x read itself).
/// `true` makes every SurrealKV commit wait for `fsync` (`?sync=every`), `false` leaves
/// committed writes in the OS page cache (`?sync=never`), where a power loss or kernel crash
/// can undo acknowledged ones (a crash of the process alone cannot: the commit has been
/// written to the file). SurrealDB 3 no longer reads it for embedded stores: it takes the
/// mode from the `surrealkv://` URL's query, so [`connect`] adds it there.
pub const SYNC_DATA_ENV: &str = "SURREAL_SYNC_DATA";

/// Make embedded-database commits wait for the disk (`true`) or not. Process-wide: call it
/// before the first connection, while the process has one thread.
pub fn set_durable_writes(on: bool) {
    std::env::set_var(SYNC_DATA_ENV, if on { "true" } else { "false" });
}

/// Whether SurrealKV commits wait for the disk. Unset is `false`, as in SurrealDB 2.x (3.x
/// alone would default to `every`).
pub fn durable_writes() -> bool {
    std::env::var(SYNC_DATA_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(false)
}

/// `url` with the sync mode of [`durable_writes`] when it is a `surrealkv://` URL that does
/// not choose one itself (`?sync=every|never|<interval>`).
fn with_sync_mode(url: &str) -> String {
    if !url.starts_with("surrealkv") {
        return url.to_owned();
    }
    let query = url.split_once('?').map(|(_, q)| q);
    if query.is_some_and(|q| q.split('&').any(|kv| kv.split('=').next() == Some("sync"))) {
        return url.to_owned();
    }
    let mode = if durable_writes() { "every" } else { "never" };
    let sep = if query.is_some() { '&' } else { '?' };
    format!("{url}{sep}sync={mode}")
}

/// Connect (`mem://`, `surrealkv://path`, `ws://host:port`), select the namespace and apply
/// the schema.
pub async fn connect(url: &str) -> Result<Db> {
    connect_with(&DbConfig {
        url: url.to_owned(),
        ..DbConfig::default()
    })
    .await
}

/// Where the database is, and who the node is to it (a SurrealDB server checks credentials;
/// the embedded engines have none).
#[derive(Debug, Clone)]
pub struct DbConfig {
    pub url: String,
    pub namespace: String,
    pub database: String,
    /// Signed in as this user, when set (`ws://`/`wss://`).
    pub credentials: Option<Credentials>,
}

#[derive(Clone)]
pub struct Credentials {
    pub level: AuthLevel,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("level", &self.level)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Where the user is defined on the server (`DEFINE USER ... ON ROOT | NAMESPACE | DATABASE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthLevel {
    Root,
    Namespace,
    Database,
}

impl Default for DbConfig {
    fn default() -> Self {
        Self {
            url: "mem://".into(),
            namespace: "glint".into(),
            database: "glint".into(),
            credentials: None,
        }
    }
}

/// Is the database reachable? Watched by a task ([`watch_health`]); while it is not, `/api`
/// answers 503 with `Retry-After` at once instead of waiting on queries that cannot finish
/// (the SDK holds them while it reconnects).
#[derive(Debug, Default)]
pub struct Health {
    down: std::sync::atomic::AtomicBool,
}

/// A health probe that does not answer in this long counts as the database being down.
pub const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
/// Probes that must fail in a row before the database counts as down.
pub const DOWN_AFTER: u32 = 2;
/// How often the database is probed.
pub const HEALTH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl Health {
    pub fn is_up(&self) -> bool {
        !self.down.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set(&self, up: bool) {
        let was_up = !self.down.swap(!up, std::sync::atomic::Ordering::Relaxed);
        if was_up && !up {
            tracing::warn!("database unreachable: the API answers 503 until it is back");
        } else if !was_up && up {
            tracing::info!("database reachable again");
        }
    }
}

/// Probe `db` every [`HEALTH_INTERVAL`] into `health`, until the process ends. Only for
/// remote databases: the embedded engines cannot be away.
pub fn watch_health(db: Db, health: std::sync::Arc<Health>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEALTH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures = 0u32;
        loop {
            tick.tick().await;
            let answered = matches!(
                tokio::time::timeout(HEALTH_TIMEOUT, db.health()).await,
                Ok(Ok(()))
            );
            failures = if answered { 0 } else { failures + 1 };
            // One slow answer (a busy server) is not an outage.
            health.set(failures < DOWN_AFTER);
        }
    });
}

/// Is the URL a database server (not an embedded engine)?
pub fn is_remote(url: &str) -> bool {
    ["ws://", "wss://", "http://", "https://"]
        .iter()
        .any(|p| url.starts_with(p))
}

pub async fn connect_with(config: &DbConfig) -> Result<Db> {
    let url = with_sync_mode(&config.url);
    if url.starts_with("surrealkv") {
        tracing::info!(
            durable = durable_writes(),
            url = %url,
            "embedded database: commits wait for the disk when durable"
        );
    }
    let db = any::connect(url).await?;
    if let Some(c) = &config.credentials {
        use surrealdb::opt::auth;
        let (username, password) = (c.username.clone(), c.password.clone());
        match c.level {
            AuthLevel::Root => db.signin(auth::Root { username, password }).await?,
            AuthLevel::Namespace => {
                db.signin(auth::Namespace {
                    namespace: config.namespace.clone(),
                    username,
                    password,
                })
                .await?
            }
            AuthLevel::Database => {
                db.signin(auth::Database {
                    namespace: config.namespace.clone(),
                    database: config.database.clone(),
                    username,
                    password,
                })
                .await?
            }
        };
    }
    db.use_ns(config.namespace.clone())
        .use_db(config.database.clone())
        .await?;
    db.query(SCHEMA).await?.check()?;
    for (slug, name) in CATEGORIES {
        db.query("UPSERT type::record('category', $slug) SET slug = $slug, name = $name")
            .bind(("slug", slug))
            .bind(("name", name))
            .await?
            .check()?;
    }
    db.query("UPSERT meta:schema SET version = $v")
        .bind(("v", SCHEMA_VERSION))
        .await?
        .check()?;
    Ok(std::sync::Arc::new(db))
}

/// Milliseconds since the Unix epoch: how the schema stores times.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Record keys we create: 20 lowercase letters and digits.
pub fn new_id() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric
        .sample_string(&mut rand::rng(), 20)
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_mode_is_added_only_to_surrealkv_urls_without_one() {
        assert_eq!(with_sync_mode("mem://"), "mem://");
        assert_eq!(with_sync_mode("ws://127.0.0.1:8000"), "ws://127.0.0.1:8000");
        assert_eq!(
            with_sync_mode("surrealkv:///d?sync=5s"),
            "surrealkv:///d?sync=5s"
        );
        assert_eq!(
            with_sync_mode("surrealkv:///d?versioned=true&sync=never"),
            "surrealkv:///d?versioned=true&sync=never"
        );
        let added = with_sync_mode("surrealkv:///d?versioned=true");
        assert!(
            added == "surrealkv:///d?versioned=true&sync=every"
                || added == "surrealkv:///d?versioned=true&sync=never",
            "{added}"
        );
    }
}
