//! Go-live notifications: stored per follower, listed and marked read, and pushed live over
//! Server-Sent Events.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::Router;
use futures_util::{Stream as FutStream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::BroadcastStream;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{AuthUser, StreamUser};
use crate::db::{new_id, now_ms};
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

#[derive(Serialize, Deserialize, ToSchema, Clone, Debug)]
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
            "SELECT VALUE record::id(id) FROM type::thing('notification', $id) WHERE user = $user; \
             UPDATE type::thing('notification', $id) SET read = true WHERE user = $user",
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

/// A channel went live: a stored notification for each follower, each also pushed to SSE.
pub(crate) async fn fan_out_live(
    st: &ApiState,
    channel: &str,
    stream: &str,
    title: &str,
) -> Result<usize> {
    let mut res = st
        .db
        .query("SELECT VALUE follower FROM follow WHERE channel = $c")
        .bind(("c", channel.to_owned()))
        .await?;
    let followers: Vec<String> = res.take(0)?;
    let created_at = now_ms();
    for follower in &followers {
        let n = Notification {
            id: new_id(),
            user: follower.clone(),
            kind: "live".into(),
            channel: channel.to_owned(),
            stream: stream.to_owned(),
            title: title.to_owned(),
            read: false,
            created_at,
        };
        st.db
            .query("CREATE type::thing('notification', $id) SET user = $user, kind = $kind, channel = $channel, stream = $stream, title = $title, read = false, created_at = $now")
            .bind(("id", n.id.clone()))
            .bind(("user", n.user.clone()))
            .bind(("kind", n.kind.clone()))
            .bind(("channel", n.channel.clone()))
            .bind(("stream", n.stream.clone()))
            .bind(("title", n.title.clone()))
            .bind(("now", created_at))
            .await?
            .check()?;
        let _ = st.notify.send(n);
    }
    Ok(followers.len())
}
