//! What glint nodes share: a node alone (no `GLINT_REDIS_URL`) keeps it all in its own process,
//! as it always did; nodes of a cluster share it through Redis (or any Redis-protocol service).
//! Durable data is SurrealDB's either way.
//!
//! - `events.rs`: what one node tells every node (chat room changes, go-live notifications,
//!   directory invalidation, logouts, key rotations) and how a node applies one.
//! - `link.rs`: the node's connections to Redis: commands, the bus subscription, health,
//!   reconnection with backoff.
//! - `limits.rs`: rate limits every node counts together (login, registration, chat).
//! - `nodes.rs`: the node registry (leases), the stream directory (which node ingests each live
//!   stream), viewer counts per node and stream.
//!
//! Redis unreachable: each shared thing falls back to the node's own copy (chat reaches this
//! node's readers, limits count this node's requests), `/healthz` says `degraded`, and the link
//! reconnects on its own. Nothing that plays media waits on Redis.

pub mod events;
pub mod limits;
mod link;
pub mod nodes;

use std::sync::Arc;
use std::time::Duration;

pub use events::{Event, RoomEvent};
pub use link::{Health, LinkStats};

use crate::ApiState;

/// A Redis command (or script) that does not answer in this long is a failure: the caller falls
/// back to the node's own state rather than waiting.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
/// A node's entry in the registry (and its claims on streams) expire this long after its last
/// heartbeat: a crashed node leaves counts and the directory within it.
pub const LEASE: Duration = Duration::from_secs(10);
/// How often a node renews its lease, its stream claims and its viewer counts.
pub const HEARTBEAT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("not in a cluster")]
    Alone,
}

/// How to reach the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host:port[/db]` or `rediss://` (TLS).
    pub redis_url: String,
    /// This node's id (unique in the cluster).
    pub node_id: String,
    /// Where clients reach this node (`GLINT_ADVERTISE_URL`).
    pub advertise_url: String,
    /// Keys this deployment's nodes share (several clusters may share one Redis).
    pub key_prefix: String,
    /// Keys the shared login limiter's account hashes (the cluster token): every node must
    /// hash an account name the same way, and nobody outside may choose collisions.
    pub secret: Vec<u8>,
}

/// The node's view of its cluster; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: String,
    advertise_url: Option<String>,
    link: Option<link::Link>,
    secret: Vec<u8>,
}

impl Default for Cluster {
    fn default() -> Self {
        Self::alone()
    }
}

impl Cluster {
    /// A node on its own: everything in-process.
    pub fn alone() -> Self {
        Self {
            inner: Arc::new(Inner {
                node_id: "local".into(),
                advertise_url: None,
                link: None,
                secret: Vec::new(),
            }),
        }
    }

    /// Connect to the cluster's Redis (the first connection must succeed: a node configured
    /// for a cluster does not start alone by mistake).
    pub async fn connect(config: ClusterConfig) -> Result<Self, Error> {
        let link = link::Link::connect(&config.redis_url, &config.key_prefix).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                node_id: config.node_id,
                advertise_url: Some(config.advertise_url),
                link: Some(link),
                secret: config.secret,
            }),
        })
    }

    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    pub fn advertise_url(&self) -> Option<&str> {
        self.inner.advertise_url.as_deref()
    }

    pub fn is_clustered(&self) -> bool {
        self.inner.link.is_some()
    }

    pub fn health(&self) -> Health {
        match &self.inner.link {
            None => Health::Alone,
            Some(l) => l.health(),
        }
    }

    /// Bus counters, for `/metrics` (zeros for a node alone).
    pub fn stats(&self) -> LinkStats {
        self.link().map(link::Link::stats).unwrap_or_default()
    }

    fn link(&self) -> Option<&link::Link> {
        self.inner.link.as_ref()
    }

    /// Follow the bus (every node's events) into `st` until the process ends; reconnects with
    /// backoff. Nothing to do for a node alone.
    pub(crate) fn spawn_subscriber(&self, st: ApiState) {
        if let Some(link) = self.link() {
            let link = link.clone();
            tokio::spawn(async move { link.follow(st).await });
        }
    }
}

/// Tell every node (this one included) of `event`. A node alone applies it at once; in a
/// cluster it is applied when it comes back from the bus (one order everywhere), or here at
/// once when Redis cannot take it (the other nodes miss it; the link reports degraded).
pub async fn broadcast(st: &ApiState, event: Event) {
    if let Some(link) = st.cluster.link() {
        match link.publish(&event).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cluster bus: could not publish; applied on this node only")
            }
        }
    }
    events::apply(st, event).await;
}

/// A change to the chat room of channel `room`.
pub async fn room_event(st: &ApiState, room: &str, event: RoomEvent) {
    broadcast(
        st,
        Event::Chat {
            room: room.to_owned(),
            event,
        },
    )
    .await;
}

/// A stream was created, edited, went live or offline, or its viewers changed: this node's
/// cached directory pages go at once (a writer sees its own write), the other nodes' when the
/// event reaches them.
pub async fn directory_changed(st: &ApiState) {
    st.directory.invalidate();
    if let Some(link) = st.cluster.link() {
        if let Err(e) = link.publish(&Event::DirectoryChanged).await {
            tracing::debug!(error = %e, "cluster bus: directory change not sent (the other nodes' caches expire within a second)");
        }
    }
}
