//! The node's connections to Redis: one multiplexed command connection (redis-rs's connection
//! manager, which reconnects on its own) and one subscription to the bus channel (reconnected
//! here with backoff). Health is what the last attempts said: the subscription is up, and the
//! last command answered.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Error, Event, COMMAND_TIMEOUT};
use crate::ApiState;

/// Waits between attempts to resubscribe: doubling from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How the node stands with its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No cluster configured.
    Alone,
    /// Subscribed to the bus, and Redis answers commands.
    Connected,
    /// Redis is unreachable (or was at the last attempt): shared state falls back to this node's.
    Degraded,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Alone => "alone",
            Health::Connected => "connected",
            Health::Degraded => "degraded",
        }
    }
}

#[derive(Clone)]
pub(crate) struct Link {
    client: redis::Client,
    commands: ConnectionManager,
    prefix: Arc<str>,
    bus: Arc<str>,
    state: Arc<LinkState>,
}

#[derive(Default)]
struct LinkState {
    subscribed: AtomicBool,
    command_failed: AtomicBool,
    published: AtomicU64,
    received: AtomicU64,
    reconnects: AtomicU64,
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkStats {
    pub published: u64,
    pub received: u64,
    pub reconnects: u64,
}

impl Link {
    pub(crate) async fn connect(url: &str, prefix: &str) -> Result<Self, Error> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let commands = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| Error::Timeout(Duration::from_secs(5)))??;
        Ok(Self {
            client,
            commands,
            prefix: Arc::from(prefix),
            bus: Arc::from(format!("{prefix}bus")),
            state: Arc::default(),
        })
    }

    pub(crate) fn health(&self) -> Health {
        if self.state.subscribed.load(Ordering::Relaxed)
            && !self.state.command_failed.load(Ordering::Relaxed)
        {
            Health::Connected
        } else {
            Health::Degraded
        }
    }

    pub(crate) fn stats(&self) -> LinkStats {
        LinkStats {
            published: self.state.published.load(Ordering::Relaxed),
            received: self.state.received.load(Ordering::Relaxed),
            reconnects: self.state.reconnects.load(Ordering::Relaxed),
        }
    }

    /// `name` under this deployment's prefix.
    pub(crate) fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// `kind` + each name, under this deployment's prefix.
    pub(crate) fn keys(&self, kind: &str, names: &[String]) -> Vec<String> {
        names
            .iter()
            .map(|n| format!("{}{kind}{n}", self.prefix))
            .collect()
    }

    /// Run a command (or a script invocation) with the command timeout; records health.
    pub(crate) async fn run<T, F, Fut>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let result = match tokio::time::timeout(COMMAND_TIMEOUT, f(self.commands.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Error::Redis(e)),
            Err(_) => Err(Error::Timeout(COMMAND_TIMEOUT)),
        };
        let failed = result.is_err();
        if self.state.command_failed.swap(failed, Ordering::Relaxed) != failed {
            if failed {
                tracing::warn!(
                    "cluster: Redis stopped answering commands; using this node's own state"
                );
            } else {
                tracing::info!("cluster: Redis answers commands again");
            }
        }
        result
    }

    /// Send `event` on the bus. Tried twice when the connection had dropped: the first command
    /// after Redis came back finds the old connection broken (and has the manager reconnect).
    pub(crate) async fn publish(&self, event: &Event) -> Result<(), Error> {
        let payload = serde_json::to_vec(event).unwrap_or_default();
        let attempt = || {
            let (bus, payload) = (self.bus.clone(), payload.clone());
            self.run(|mut c| async move {
                redis::cmd("PUBLISH")
                    .arg(&*bus)
                    .arg(payload)
                    .query_async::<i64>(&mut c)
                    .await
            })
        };
        match attempt().await {
            Err(Error::Redis(e)) if e.is_io_error() || e.is_connection_dropped() => {
                attempt().await?;
            }
            other => {
                other?;
            }
        }
        self.state.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// One round trip on the command connection (replacing it if it broke meanwhile).
    async fn ping(&self) -> Result<(), Error> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .map(|_| ())
    }

    /// Apply every node's events to `st`, resubscribing with backoff whenever the subscription
    /// drops. Runs until the process ends.
    pub(crate) async fn follow(&self, st: ApiState) {
        let mut backoff = BACKOFF_FIRST;
        let mut ever = false;
        loop {
            match self.subscribe().await {
                Ok(pubsub) => {
                    backoff = BACKOFF_FIRST;
                    // Redis is back: make sure commands are too before saying so (the command
                    // connection may still be the broken one).
                    if self.ping().await.is_err() {
                        let _ = self.ping().await;
                    }
                    if ever {
                        self.state.reconnects.fetch_add(1, Ordering::Relaxed);
                        tracing::info!("cluster bus: subscribed again");
                        tell_rooms(&st, false);
                    }
                    ever = true;
                    self.state.subscribed.store(true, Ordering::Relaxed);
                    // Events sent while this node was away are lost: what they would have
                    // changed in cached pages is read again.
                    st.directory.invalidate();
                    let mut messages = pubsub.into_on_message();
                    while let Some(msg) = messages.next().await {
                        self.state.received.fetch_add(1, Ordering::Relaxed);
                        match serde_json::from_slice::<Event>(msg.get_payload_bytes()) {
                            Ok(event) => super::events::apply(&st, event).await,
                            Err(e) => {
                                tracing::warn!(error = %e, "cluster bus: an event this node cannot read (another version?)")
                            }
                        }
                    }
                    self.state.subscribed.store(false, Ordering::Relaxed);
                    tracing::warn!("cluster bus: subscription lost; chat reaches this node's readers only until it is back");
                    tell_rooms(&st, true);
                }
                Err(e) => {
                    self.state.subscribed.store(false, Ordering::Relaxed);
                    tracing::debug!(error = %e, ?backoff, "cluster bus: cannot subscribe yet");
                }
            }
            // A reconnection backoff, not a wait for an event.
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn subscribe(&self) -> Result<redis::aio::PubSub, Error> {
        let connect = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&*self.bus).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(Duration::from_secs(2), connect).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(Error::Timeout(Duration::from_secs(2))),
        }
    }
}

/// Tell every chat reader on this node that the cluster link went (`degraded`) or came back.
fn tell_rooms(st: &ApiState, degraded: bool) {
    for room in st.chat.all() {
        room.publish(&crate::chat::Event::Notice(if degraded {
            crate::chat::Notice::DEGRADED
        } else {
            crate::chat::Notice::RESTORED
        }));
    }
}
