//! Long-lived connections — chat WebSockets and the notification event stream — and their
//! limits: how many one client address and one user may hold open, when a WebSocket is pinged
//! and given up on, and the end of a user's streams when their access token expires or they log
//! out (logout signals every open stream of the user through the registry).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use tokio::sync::watch;

use crate::auth::AuthUser;
use crate::error::ApiError;

/// Chat WebSockets plus notification streams open from one client address (an IPv6 /64 counts
/// as one address).
pub const DEFAULT_PER_ADDRESS: usize = 20;
/// Chat WebSockets one user may have open in one room.
pub const DEFAULT_CHAT_PER_USER: usize = 5;
/// Notification streams one user may have open (the web app opens one per tab).
pub const DEFAULT_SSE_PER_USER: usize = 10;
/// Each WebSocket is pinged, and each notification stream gets a comment line, this often.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(30);
/// A WebSocket from which nothing arrived (not even a pong) for this long is closed; checked at
/// each ping, so it closes between this and this plus one ping interval.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// What a client refused for too many connections is told to wait (`Retry-After`).
pub const RETRY_AFTER: Duration = Duration::from_secs(10);

/// Limits of every long-lived connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealtimeConfig {
    pub per_address: usize,
    pub chat_per_user: usize,
    pub sse_per_user: usize,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        Self {
            per_address: DEFAULT_PER_ADDRESS,
            chat_per_user: DEFAULT_CHAT_PER_USER,
            sse_per_user: DEFAULT_SSE_PER_USER,
            ping_interval: DEFAULT_PING_INTERVAL,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// What a user's connection is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The chat room of this channel (user id).
    Chat(String),
    Notifications,
}

/// Why an authenticated stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The access token it was opened with expired.
    TokenExpired,
    /// The user logged out.
    LoggedOut,
}

impl End {
    /// The text clients get (WebSocket close reason, SSE `end` event data).
    pub fn reason(self) -> &'static str {
        match self {
            End::TokenExpired => "access token expired",
            End::LoggedOut => "logged out",
        }
    }
}

/// The client's address, from `ConnectInfo` (which the binary fills with the real client's
/// address, behind a trusted proxy too); `None` when served without one (in-process tests).
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// Open connections by address and by user, and each user's "your streams end" signal.
pub struct Registry {
    config: RealtimeConfig,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    by_address: HashMap<Option<IpAddr>, usize>,
    users: HashMap<String, UserStreams>,
}

struct UserStreams {
    open: HashMap<Scope, usize>,
    /// Changed on logout; every open stream of the user holds a receiver.
    ended: watch::Sender<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// 429 with `Retry-After`.
fn too_many(message: &'static str) -> ApiError {
    ApiError::TooManyRequests {
        message,
        retry_after: RETRY_AFTER,
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new(RealtimeConfig::default())
    }
}

impl Registry {
    pub fn new(config: RealtimeConfig) -> Self {
        Self {
            config,
            state: Mutex::default(),
        }
    }

    pub fn config(&self) -> &RealtimeConfig {
        &self.config
    }

    /// Count a new connection from `address` (of `user`, if logged in) or refuse it (429).
    /// The permit gives the slot back when dropped.
    pub fn admit(
        self: &Arc<Self>,
        address: Option<IpAddr>,
        user: Option<&AuthUser>,
        scope: Scope,
    ) -> Result<Permit, ApiError> {
        let address = address.map(crate::ratelimit::address_key);
        let mut s = lock(&self.state);
        if s.by_address.get(&address).copied().unwrap_or(0) >= self.config.per_address {
            return Err(too_many("too many open connections from this address"));
        }
        if let Some(u) = user {
            let cap = match scope {
                Scope::Chat(_) => self.config.chat_per_user,
                Scope::Notifications => self.config.sse_per_user,
            };
            let open = s
                .users
                .get(&u.id)
                .and_then(|streams| streams.open.get(&scope))
                .copied()
                .unwrap_or(0);
            if open >= cap {
                return Err(too_many(match scope {
                    Scope::Chat(_) => "too many open connections of this account to this chat",
                    Scope::Notifications => "too many open notification streams of this account",
                }));
            }
        }
        *s.by_address.entry(address).or_default() += 1;
        let user = user.map(|u| {
            let streams = s.users.entry(u.id.clone()).or_insert_with(|| UserStreams {
                open: HashMap::new(),
                ended: watch::channel(()).0,
            });
            *streams.open.entry(scope.clone()).or_default() += 1;
            let deadline = tokio::time::Instant::now()
                + Duration::from_millis(
                    u.expires_at_ms.saturating_sub(crate::db::now_ms()).max(0) as u64
                );
            Holder {
                id: u.id.clone(),
                scope,
                ended: streams.ended.subscribe(),
                deadline,
            }
        });
        Ok(Permit {
            registry: self.clone(),
            address,
            user,
        })
    }

    /// End every open stream of `user` (logout); how many were open.
    pub fn end_streams_of(&self, user: &str) -> usize {
        let s = lock(&self.state);
        match s.users.get(user) {
            Some(streams) => {
                streams.ended.send_replace(());
                streams.open.values().sum()
            }
            None => 0,
        }
    }

    fn release(&self, address: Option<IpAddr>, user: Option<(&str, &Scope)>) {
        let mut s = lock(&self.state);
        if let Some(n) = s.by_address.get_mut(&address) {
            *n -= 1;
            if *n == 0 {
                s.by_address.remove(&address);
            }
        }
        if let Some((id, scope)) = user {
            if let Some(streams) = s.users.get_mut(id) {
                if let Some(n) = streams.open.get_mut(scope) {
                    *n -= 1;
                    if *n == 0 {
                        streams.open.remove(scope);
                    }
                }
                if streams.open.is_empty() {
                    s.users.remove(id);
                }
            }
        }
    }
}

/// One admitted connection; its slot is given back on drop.
pub struct Permit {
    registry: Arc<Registry>,
    address: Option<IpAddr>,
    user: Option<Holder>,
}

struct Holder {
    id: String,
    scope: Scope,
    ended: watch::Receiver<()>,
    /// When the access token expires.
    deadline: tokio::time::Instant,
}

impl Permit {
    /// Resolves when the stream must end: its access token expired or its user logged out.
    /// Never, for an anonymous reader. Cancel-safe (use it in `select!`).
    pub async fn ended(&mut self) -> End {
        let Some(user) = &mut self.user else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = tokio::time::sleep_until(user.deadline) => End::TokenExpired,
            // An error means the sender is gone, which cannot happen while this permit counts.
            _ = user.ended.changed() => End::LoggedOut,
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.registry.release(
            self.address,
            self.user.as_ref().map(|u| (u.id.as_str(), &u.scope)),
        );
    }
}

/// When to ping a WebSocket and when to give up on it. Told the time, never reads the clock.
pub struct Liveness {
    idle_timeout: Duration,
    last_heard: Instant,
}

impl Liveness {
    pub fn new(now: Instant, idle_timeout: Duration) -> Self {
        Self {
            idle_timeout,
            last_heard: now,
        }
    }

    /// Something (a frame, a pong) arrived from the client.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// At a ping tick: ping again (true), or give up (false): nothing heard for the idle timeout.
    pub fn alive(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_heard) < self.idle_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn user(id: &str) -> AuthUser {
        AuthUser {
            id: id.into(),
            expires_at_ms: crate::db::now_ms() + 60_000,
        }
    }

    fn registry(per_address: usize, per_user: usize) -> Arc<Registry> {
        Arc::new(Registry::new(RealtimeConfig {
            per_address,
            chat_per_user: per_user,
            sse_per_user: per_user,
            ..RealtimeConfig::default()
        }))
    }

    #[test]
    fn address_cap_counts_a_v6_64_as_one_and_frees_on_drop() {
        let r = registry(2, 10);
        let a: IpAddr = "2001:db8:1:2::10".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let p1 = r.admit(Some(a), None, Scope::Notifications).unwrap();
        let _p2 = r.admit(Some(b), None, Scope::Notifications).unwrap();
        assert!(matches!(
            r.admit(Some(a), None, Scope::Notifications),
            Err(ApiError::TooManyRequests { .. })
        ));
        let _p3 = r.admit(Some(other), None, Scope::Notifications).unwrap();
        drop(p1);
        r.admit(Some(a), None, Scope::Notifications).unwrap();
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let _q1 = r.admit(Some(v4), None, Scope::Notifications).unwrap();
        let _q2 = r.admit(Some(mapped), None, Scope::Notifications).unwrap();
        assert!(r.admit(Some(v4), None, Scope::Notifications).is_err());
    }

    #[test]
    fn user_cap_is_per_room_and_the_registry_forgets_users_who_left() {
        let r = registry(100, 2);
        let bob = user("bob");
        let room = || Scope::Chat("alice".into());
        let p1 = r.admit(None, Some(&bob), room()).unwrap();
        let p2 = r.admit(None, Some(&bob), room()).unwrap();
        assert!(r.admit(None, Some(&bob), room()).is_err());
        let p3 = r
            .admit(None, Some(&bob), Scope::Chat("carol".into()))
            .unwrap();
        let p4 = r.admit(None, Some(&bob), Scope::Notifications).unwrap();
        let _anon = r.admit(None, None, room()).unwrap();
        assert_eq!(r.end_streams_of("bob"), 4);
        drop((p1, p2, p3, p4));
        assert_eq!(r.end_streams_of("bob"), 0);
        assert!(lock(&r.state).users.is_empty());
    }

    #[tokio::test]
    async fn logout_ends_the_users_streams_and_expiry_ends_each() {
        let r = registry(100, 10);
        let mut bob = r
            .admit(None, Some(&user("bob")), Scope::Notifications)
            .unwrap();
        let mut carol = r
            .admit(None, Some(&user("carol")), Scope::Notifications)
            .unwrap();
        r.end_streams_of("bob");
        assert_eq!(bob.ended().await, End::LoggedOut);
        assert_eq!(carol.ended().now_or_never(), None, "carol did not log out");
        let expired = AuthUser {
            id: "dave".into(),
            expires_at_ms: crate::db::now_ms() - 1,
        };
        let mut dave = r.admit(None, Some(&expired), Scope::Notifications).unwrap();
        assert_eq!(dave.ended().await, End::TokenExpired);
        let mut anonymous = r.admit(None, None, Scope::Chat("x".into())).unwrap();
        assert_eq!(
            anonymous.ended().now_or_never(),
            None,
            "an anonymous reader has no token to expire"
        );
    }

    #[test]
    fn liveness_gives_up_after_the_idle_timeout() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, Duration::from_secs(60));
        assert!(l.alive(t0 + Duration::from_secs(30)));
        l.heard(t0 + Duration::from_secs(31));
        assert!(l.alive(t0 + Duration::from_secs(90)));
        assert!(!l.alive(t0 + Duration::from_secs(91)));
    }
}
