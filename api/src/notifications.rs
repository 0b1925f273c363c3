//! Go-live notifications: stored per follower (in batches, on their own task, debounced per
//! channel, pruned after a retention), listed and marked read, and pushed live over Server-Sent
//! Events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::Router;
use futures_util::{Stream as FutStream, StreamExt};
use serde::{Deserialize, Serialize};
use surrealdb::types::SurrealValue;
use tokio::sync::Semaphore;
use tokio_stream::wrappers::BroadcastStream;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{AuthUser, StreamUser};
use crate::db::new_id;
use crate::error::{ApiError, Result};
use crate::json::Query;
use crate::realtime::{ClientAddr, Scope};
use crate::{validate, ApiState};

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/notifications", get(list))
        .route("/api/notifications/stream", get(stream))
        .route("/api/notifications/read", post(mark_all_read))
        .route("/api/notifications/{id}/read", post(mark_read))
}

#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, SurrealValue)]
pub struct Notification {
    pub id: String,
    /// Who it is for.
    pub user: String,
    /// `live`: a followed channel went live.
    pub kind: String,
    /// The channel's user id.
    pub channel: String,
    /// The stream's name (`/watch/{stream}`).
    pub stream: String,
    pub title: String,
    pub read: bool,
    pub created_at: i64,
}

const FIELDS: &str = "record::id(id) AS id, user, kind, channel, stream, title, read, created_at";

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only unread ones.
    pub unread: Option<bool>,
    pub limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/notifications", params(ListQuery), responses((status = 200, body = [Notification])), security(("bearer" = [])))]
pub(crate) async fn list(
    State(st): State<ApiState>,
    user: AuthUser,
    Query(q): Query<ListQuery>,
) -> Result<axum::Json<Vec<Notification>>> {
    let (_, limit) = crate::streams::page_params(None, q.limit)?;
    let unread = if q.unread.unwrap_or(false) {
        "AND read = false"
    } else {
        ""
    };
    let mut res = st
        .db
        .query(format!("SELECT {FIELDS} FROM notification WHERE user = $user {unread} ORDER BY created_at DESC LIMIT $limit"))
        .bind(("user", user.id))
        .bind(("limit", limit))
        .await?;
    Ok(axum::Json(res.take(0)?))
}

#[utoipa::path(post, path = "/api/notifications/{id}/read", params(("id" = String, Path)), responses((status = 204), (status = 404, body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn mark_read(
    State(st): State<ApiState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    validate::id(&id)?;
    let mut res = st
        .db
        .query(
            "SELECT VALUE record::id(id) FROM type::record('notification', $id) WHERE user = $user; \
             UPDATE type::record('notification', $id) SET read = true WHERE user = $user",
        )
        .bind(("id", id))
        .bind(("user", user.id))
        .await?;
    let updated: Vec<String> = res.take(0)?;
    if updated.is_empty() {
        return Err(ApiError::NotFound("notification"));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/notifications/read", responses((status = 204)), security(("bearer" = [])))]
pub(crate) async fn mark_all_read(
    State(st): State<ApiState>,
    user: AuthUser,
) -> Result<StatusCode> {
    st.db
        .query("UPDATE notification SET read = true WHERE user = $user AND read = false")
        .bind(("user", user.id))
        .await?
        .check()?;
    Ok(StatusCode::NO_CONTENT)
}

/// `text/event-stream` of the caller's new notifications (`event: notification`, JSON data).
/// The one route besides chat that takes `?access_token=` (EventSource cannot send headers).
/// Counted against the caller's address and account ([`crate::realtime`], 429 beyond); a
/// comment line every ping interval keeps proxies from timing it out; it ends, after an
/// `event: end` naming why, when the access token expires or the user logs out.
#[utoipa::path(get, path = "/api/notifications/stream", responses((status = 200, content_type = "text/event-stream"),
    (status = 401, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn stream(
    State(st): State<ApiState>,
    ClientAddr(addr): ClientAddr,
    StreamUser(user): StreamUser,
) -> Result<Sse<impl FutStream<Item = std::result::Result<Event, Infallible>>>> {
    let mut permit = st.realtime.admit(addr, Some(&user), Scope::Notifications)?;
    let me = user.id;
    let events = BroadcastStream::new(st.notify.subscribe()).filter_map(move |n| {
        let out = match n {
            Ok(n) if n.user == me => Event::default()
                .event("notification")
                .json_data(&n)
                .ok()
                .map(Ok),
            // A slow client missed some: tell it to re-list.
            Err(_) => Some(Ok(Event::default()
                .event("lagged")
                .data("reload /api/notifications"))),
            _ => None,
        };
        std::future::ready(out)
    });
    // The permit lives as long as the response body: dropped when the client goes away.
    let (why, told) = tokio::sync::oneshot::channel();
    let until = async move {
        let _ = why.send(permit.ended().await);
    };
    let end = futures_util::stream::once(told).filter_map(|end| {
        std::future::ready(
            end.ok()
                .map(|end| Ok(Event::default().event("end").data(end.reason()))),
        )
    });
    let events = events.take_until(until).chain(end);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(st.realtime.config().ping_interval)))
}

/// A channel that was on air within this long does not notify its followers again when it
/// goes live (a flapping connection, a quick restart of the encoder).
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_secs(10 * 60);
/// Notifications are deleted this long after they were created, read or not.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Followers written per `INSERT` statement of a go-live fan-out.
const INSERT_BATCH_ROWS: usize = 1000;
/// Go-live fan-outs that run at once; others wait their turn on their own tasks.
const CONCURRENT_FANOUTS: usize = 2;

/// The go-live debounce and the retention of stored notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifyConfig {
    pub debounce: Duration,
    pub retention: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            debounce: DEFAULT_DEBOUNCE,
            retention: DEFAULT_RETENTION,
        }
    }
}

/// Runs go-live fan-outs on their own tasks, a few at a time, so whoever reports a stream going
/// live (the platform task) never waits for its followers' notifications to be written.
#[derive(Clone)]
pub struct Notifier {
    pub config: NotifyConfig,
    fanouts: Arc<Semaphore>,
}

impl Default for Notifier {
    fn default() -> Self {
        Self {
            config: NotifyConfig::default(),
            fanouts: Arc::new(Semaphore::new(CONCURRENT_FANOUTS)),
        }
    }
}

/// Is a go-live at `now_ms` of a channel last seen going on or off air at `last_on_air_ms`
/// inside the debounce (so nobody is notified)?
fn debounced(last_on_air_ms: Option<i64>, now_ms: i64, debounce: Duration) -> bool {
    last_on_air_ms.is_some_and(|at| now_ms.saturating_sub(at) < debounce.as_millis() as i64)
}

/// `stream` (as stored before the change) went live or offline at `now_ms`. Remembers when,
/// for the debounce; a go-live outside it schedules one stored notification per follower (see
/// [`fan_out_live`]). Returns whether notifications were scheduled.
pub(crate) async fn on_air_changed(
    st: &ApiState,
    stream: &crate::streams::Stream,
    live: bool,
    now_ms: i64,
) -> Result<bool> {
    let mut res = st
        .db
        .query(
            "RETURN type::record('channel_on_air', $c).at; \
             RETURN type::record('channel_on_air', $c).notified_at; \
             UPSERT type::record('channel_on_air', $c) SET at = $now",
        )
        .bind(("c", stream.owner.clone()))
        .bind(("now", now_ms))
        .await?;
    let last: Option<i64> = res.take(0)?;
    let notified_at: Option<i64> = res.take(1)?;
    if !live {
        return Ok(false);
    }
    // Inside the debounce, only those who followed since the last notification are told (they
    // have not heard of this broadcast); outside it, every follower.
    let since = if debounced(last, now_ms, st.notifier.config.debounce) {
        let since = notified_at.unwrap_or(i64::MIN);
        let mut res = st
            .db
            .query("SELECT VALUE follower FROM follow WHERE channel = $c AND created_at > $since LIMIT 1")
            .bind(("c", stream.owner.clone()))
            .bind(("since", since))
            .await?;
        let newcomers: Vec<String> = res.take(0)?;
        if newcomers.is_empty() {
            tracing::info!(stream = %stream.name, "went live again within the notification debounce: followers not notified");
            return Ok(false);
        }
        Some(since)
    } else {
        None
    };
    st.db
        .query("UPDATE type::record('channel_on_air', $c) SET notified_at = $now")
        .bind(("c", stream.owner.clone()))
        .bind(("now", now_ms))
        .await?
        .check()?;
    let (st, channel, name, title) = (
        st.clone(),
        stream.owner.clone(),
        stream.name.clone(),
        stream.title.clone(),
    );
    tokio::spawn(async move {
        let Ok(_turn) = st.notifier.fanouts.clone().acquire_owned().await else {
            return;
        };
        match fan_out_live(&st, &channel, &name, &title, now_ms, since).await {
            Ok(n) => tracing::info!(stream = %name, notified = n, "followers notified"),
            Err(e) => tracing::warn!(stream = %name, error = %e, "could not notify followers"),
        }
    });
    Ok(true)
}

/// A channel went live: a stored notification for each follower (only those who followed
/// after `followed_after`, when given), written in batches of [`INSERT_BATCH_ROWS`] (one
/// `INSERT` each), each then pushed to SSE. Returns how many.
pub(crate) async fn fan_out_live(
    st: &ApiState,
    channel: &str,
    stream: &str,
    title: &str,
    created_at: i64,
    followed_after: Option<i64>,
) -> Result<usize> {
    let mut res = st
        .db
        .query("SELECT VALUE follower FROM follow WHERE channel = $c AND created_at > $after")
        .bind(("c", channel.to_owned()))
        .bind(("after", followed_after.unwrap_or(i64::MIN)))
        .await?;
    let followers: Vec<String> = res.take(0)?;
    for batch in followers.chunks(INSERT_BATCH_ROWS) {
        let rows: Vec<Notification> = batch
            .iter()
            .map(|follower| Notification {
                id: new_id(),
                user: follower.clone(),
                kind: "live".into(),
                channel: channel.to_owned(),
                stream: stream.to_owned(),
                title: title.to_owned(),
                read: false,
                created_at,
            })
            .collect();
        st.db
            .query("INSERT INTO notification $rows")
            .bind(("rows", rows.clone()))
            .await?
            .check()?;
        // To the followers' notification streams on every node.
        crate::cluster::broadcast(
            st,
            crate::cluster::Event::Notify {
                notifications: rows,
            },
        )
        .await;
    }
    Ok(followers.len())
}

/// Delete notifications created before `before_ms`; how many.
pub(crate) async fn prune(st: &ApiState, before_ms: i64) -> Result<usize> {
    let mut res = st
        .db
        .query("DELETE notification WHERE created_at < $before RETURN BEFORE")
        .bind(("before", before_ms))
        .await?;
    let deleted: Vec<surrealdb::types::Value> = res.take(0)?;
    Ok(deleted.len())
}

impl crate::Api {
    /// Delete notifications older than the retention (as of `now_ms`); how many.
    pub async fn prune_notifications(&self, now_ms: i64) -> Result<usize> {
        let retention = self.state.notifier.config.retention.as_millis() as i64;
        prune(&self.state, now_ms.saturating_sub(retention)).await
    }

    /// The go-live debounce and the notification retention; before [`crate::Api::router`].
    pub fn set_notify_config(&mut self, config: NotifyConfig) {
        self.state.notifier.config = config;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_debounce_counts_from_the_last_time_on_or_off_air() {
        let ten_min = Duration::from_secs(600);
        assert!(!debounced(None, 1_000_000, ten_min), "never on air");
        assert!(debounced(Some(1_000_000 - 599_999), 1_000_000, ten_min));
        assert!(!debounced(Some(1_000_000 - 600_000), 1_000_000, ten_min));
        assert!(
            !debounced(Some(5), 1_000_000, Duration::ZERO),
            "debounce off"
        );
    }
}
