//! What guards account creation and login: the registration rate per address, the login
//! limiter, the password-hashing gate, session bookkeeping, and the usernames nobody may take
//! (route words, and the names of the streams the operator configured by key).

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::error::{ApiError, Result};
use crate::hash_gate::{self, HashGate};
use crate::ratelimit::{address_key, KeyedLimiter, LoginLimiter, Rate, MAX_TRACKED_KEYS};
use crate::sessions::{Sessions, MAX_SESSIONS_PER_USER};

/// Registrations allowed per client address (IPv6: per /64) per hour, all at once if need be.
pub const DEFAULT_REGISTRATIONS_PER_HOUR: u32 = 30;

/// Path words of this server (`src/http.rs`, `signaling`, the web app's `web/app/` routes) and
/// names that would pass for staff or the system. A channel's name is its owner's username and
/// appears in `/watch/<name>`, `/whip/<name>`, `/hls/<name>/`, so these are refused.
pub const ROUTE_WORDS: &[&str] = &[
    "api",
    "hls",
    "whip",
    "whep",
    "watch",
    "publish",
    "ingest",
    "rtmp",
    "live",
    "metrics",
    "healthz",
    "health",
    "dashboard",
    "login",
    "logout",
    "signup",
    "register",
    "search",
    "category",
    "categories",
    "following",
    "followers",
    "notifications",
    "chat",
    "streams",
    "stream",
    "users",
    "user",
    "videos",
    "video",
    "replays",
    "replay",
    "static",
    "assets",
    "_next",
    "favicon",
    "robots",
    "sitemap",
    "index",
    "settings",
    "account",
    "profile",
    "admin",
    "administrator",
    "root",
    "system",
    "operator",
    "moderator",
    "staff",
    "support",
    "help",
    "about",
    "glint",
    "null",
    "undefined",
    "not_found",
];

/// Limits an operator may change (see the binary's config), and the configured stream names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountConfig {
    /// Registrations per address (IPv6: /64) per hour; 0 turns the limit off.
    pub registrations_per_hour: u32,
    /// Password hashes (argon2, 19 MiB each) computed at once, for registration and login.
    pub concurrent_hashes: usize,
    /// Requests that may wait for a hashing slot; 503 beyond.
    pub hash_queue: usize,
    /// Sessions (refresh-token families) one user keeps.
    pub sessions_per_user: usize,
    /// Streams the operator configured by key: nobody may register these usernames, and no
    /// database key publishes to them.
    pub configured_streams: Vec<String>,
}

impl Default for AccountConfig {
    fn default() -> Self {
        let slots = hash_gate::default_slots();
        Self {
            registrations_per_hour: DEFAULT_REGISTRATIONS_PER_HOUR,
            concurrent_hashes: slots,
            hash_queue: slots * hash_gate::HASH_QUEUE_PER_SLOT,
            sessions_per_user: MAX_SESSIONS_PER_USER,
            configured_streams: Vec::new(),
        }
    }
}

pub struct Accounts {
    registrations: Option<KeyedLimiter<IpAddr>>,
    registration_rate: Rate,
    pub login: LoginLimiter,
    pub hashes: HashGate,
    pub sessions: Sessions,
    /// Configured stream names, lowercased.
    configured: HashSet<String>,
    /// Held around "check, then create" of rows a unique index guards (users, streams).
    /// SurrealDB's embedded engines (surrealkv 0.9, also behind `mem://`) let concurrent
    /// creates slip past a UNIQUE index: 8 parallel CREATEs of one username left duplicates in
    /// 9 (mem) and 31 (surrealkv) of 300 rounds. One server owns its data directory, so
    /// serializing these short writes here keeps names unique; the guard is held across the
    /// writes on purpose (it is the point), never across hashing.
    pub unique_writes: tokio::sync::Mutex<()>,
}

impl Default for Accounts {
    fn default() -> Self {
        Self::new(&AccountConfig::default())
    }
}

/// A request without connection info (in-process tests) is limited as this address.
const NO_ADDRESS: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

impl Accounts {
    pub fn new(config: &AccountConfig) -> Self {
        Self {
            registrations: (config.registrations_per_hour > 0).then(|| {
                KeyedLimiter::new(
                    Rate::new(config.registrations_per_hour, Duration::from_secs(3600)),
                    MAX_TRACKED_KEYS,
                )
            }),
            registration_rate: Rate::new(config.registrations_per_hour, Duration::from_secs(3600)),
            login: LoginLimiter::default(),
            hashes: HashGate::new(config.concurrent_hashes, config.hash_queue),
            sessions: Sessions::new(config.sessions_per_user),
            configured: config
                .configured_streams
                .iter()
                .map(|n| n.to_lowercase())
                .collect(),
            unique_writes: tokio::sync::Mutex::new(()),
        }
    }

    /// Count a registration attempt from `ip` at `now`; 429 with `Retry-After` over the rate.
    /// In a cluster, counted with every node's (this node's own count when Redis is away).
    pub async fn admit_registration(
        &self,
        cluster: &crate::cluster::Cluster,
        ip: Option<IpAddr>,
        now: Instant,
    ) -> Result<()> {
        let Some(limiter) = &self.registrations else {
            return Ok(());
        };
        let ip = ip.unwrap_or(NO_ADDRESS);
        let shared =
            crate::cluster::limits::registration(cluster, ip, self.registration_rate).await;
        shared
            .unwrap_or_else(|| limiter.check(&address_key(ip), now))
            .map_err(|wait| ApiError::TooManyRequests {
                message: "too many registrations from this address; try again later",
                retry_after: wait.0,
            })
    }

    /// Is `username` (already lowercased) a route word, underscore-led, or a configured
    /// stream's name?
    pub fn is_reserved(&self, username: &str) -> bool {
        username.starts_with('_')
            || ROUTE_WORDS.contains(&username)
            || self.configured.contains(username)
    }

    /// Is `name` a stream the operator configured by key (case-insensitive)?
    pub fn is_configured_stream(&self, name: &str) -> bool {
        self.configured.contains(&name.to_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names() {
        let a = Accounts::new(&AccountConfig {
            configured_streams: vec!["Demo".into()],
            ..AccountConfig::default()
        });
        for name in ["demo", "api", "whip", "watch", "_next", "_x", "admin"] {
            assert!(a.is_reserved(name), "{name}");
        }
        assert!(!a.is_reserved("alice"));
        assert!(a.is_configured_stream("demo") && a.is_configured_stream("DEMO"));
        assert!(!a.is_configured_stream("alice"));
    }

    #[tokio::test]
    async fn registrations_are_limited_per_address() {
        let alone = crate::cluster::Cluster::alone();
        let a = Accounts::new(&AccountConfig {
            registrations_per_hour: 2,
            ..AccountConfig::default()
        });
        let t0 = Instant::now();
        let one: IpAddr = "2001:db8::1".parse().unwrap();
        let same64: IpAddr = "2001:db8::2".parse().unwrap();
        assert!(a.admit_registration(&alone, Some(one), t0).await.is_ok());
        assert!(a.admit_registration(&alone, Some(same64), t0).await.is_ok());
        let err = a
            .admit_registration(&alone, Some(one), t0)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ApiError::TooManyRequests { retry_after, .. } if retry_after == Duration::from_secs(1800)),
            "{err:?}"
        );
        assert!(a
            .admit_registration(&alone, Some("2001:db8:0:1::1".parse().unwrap()), t0)
            .await
            .is_ok());
        let off = Accounts::new(&AccountConfig {
            registrations_per_hour: 0,
            ..AccountConfig::default()
        });
        for _ in 0..1000 {
            assert!(off.admit_registration(&alone, None, t0).await.is_ok());
        }
    }
}
