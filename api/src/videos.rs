//! Replays: broadcasts kept as video on demand after a stream ends, until they expire.
//!
//! The media core stores a finished broadcast's HLS playlists and announces it; the binary
//! calls [`crate::Api::add_video`]. A video is listed until `expires_at` (its end plus the
//! retention); the binary's expiry loop then deletes its objects and its record. The owner may
//! delete one sooner: it is hidden at once and expires on the next round.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use surrealdb::types::SurrealValue;
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::db::now_ms;
use crate::error::{ApiError, Result};
use crate::follows::PageQuery;
use crate::json::Query;
use crate::streams::page_params;
use crate::{validate, ApiState};

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/streams/{id}/videos", get(list))
        .route("/api/videos/{id}", get(get_one).delete(remove))
}

#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, SurrealValue)]
pub struct Video {
    pub id: String,
    /// The stream's id (absent for streams configured by key rather than in the database).
    pub stream: Option<String>,
    /// The stream's name, as in `/watch/{name}`.
    pub stream_name: String,
    /// The stream's title and category when it ended.
    pub title: String,
    pub category: Option<String>,
    pub started_at: i64,
    pub ended_at: i64,
    pub duration_ms: i64,
    /// When it will be deleted.
    pub expires_at: i64,
    /// Its HLS master playlist (VOD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hls_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail_url: Option<String>,
    #[serde(default, skip_serializing)]
    #[surreal(default)]
    epoch: i64,
}

#[derive(Serialize, ToSchema)]
pub struct VideoPage {
    pub items: Vec<Video>,
    pub page: u32,
    pub limit: u32,
    pub more: bool,
}

/// A finished broadcast, as the media core announces it.
pub struct NewVideo<'a> {
    pub stream_name: &'a str,
    /// Unix ms when its HLS started; names its objects.
    pub epoch: i64,
    pub ended_at: i64,
    pub duration_ms: i64,
    pub renditions: &'a [String],
    /// How long it is kept after it ended.
    pub retention_ms: i64,
}

/// An expired video: what the binary needs to delete its objects.
#[derive(Deserialize, Debug, Clone, SurrealValue)]
pub struct ExpiredVideo {
    pub id: String,
    pub stream_name: String,
    pub epoch: i64,
    pub renditions: Vec<String>,
}

const FIELDS: &str = "record::id(id) AS id, stream, stream_name, title, category, started_at, \
                      ended_at, duration_ms, expires_at, epoch";

/// Where a video's objects are, relative to the HLS base URL.
fn with_urls(st: &ApiState, mut v: Video) -> Video {
    if let Some(base) = &st.hls_base {
        let dir = format!("{base}/{}/videos/{}", v.stream_name, v.epoch);
        v.hls_url = Some(format!("{dir}/master.m3u8"));
        v.thumbnail_url = Some(format!("{dir}/thumb.jpg"));
    }
    v
}

pub(crate) async fn add(st: &ApiState, v: NewVideo<'_>) -> Result<String> {
    let stream = crate::streams::by_name(st, v.stream_name).await?;
    let id = crate::db::new_id();
    st.db
        .query(
            "CREATE type::record('video', $id) SET stream = $stream, stream_name = $name, title = $title, \
             category = $category, epoch = $epoch, started_at = $epoch, ended_at = $ended, \
             duration_ms = $duration, renditions = $renditions, expires_at = $expires, deleted = false",
        )
        .bind(("id", id.clone()))
        .bind(("stream", stream.as_ref().map(|s| s.id.clone())))
        .bind(("name", v.stream_name.to_owned()))
        .bind(("title", stream.as_ref().map(|s| s.title.clone()).unwrap_or_else(|| v.stream_name.to_owned())))
        .bind(("category", stream.and_then(|s| s.category)))
        .bind(("epoch", v.epoch))
        .bind(("ended", v.ended_at))
        .bind(("duration", v.duration_ms))
        .bind(("renditions", v.renditions.to_vec()))
        .bind(("expires", v.ended_at.saturating_add(v.retention_ms)))
        .await?
        .check()?;
    Ok(id)
}

pub(crate) async fn expired(st: &ApiState, now: i64, limit: u32) -> Result<Vec<ExpiredVideo>> {
    let mut res = st
        .db
        .query("SELECT record::id(id) AS id, stream_name, epoch, renditions FROM video WHERE expires_at <= $now LIMIT $limit")
        .bind(("now", now))
        .bind(("limit", limit))
        .await?;
    Ok(res.take(0)?)
}

pub(crate) async fn forget(st: &ApiState, id: &str) -> Result<()> {
    st.db
        .query("DELETE type::record('video', $id)")
        .bind(("id", id.to_owned()))
        .await?
        .check()?;
    Ok(())
}

async fn load(st: &ApiState, id: &str) -> Result<Option<Video>> {
    let mut res = st
        .db
        .query(format!(
            "SELECT {FIELDS} FROM type::record('video', $id) WHERE deleted = false AND expires_at > $now"
        ))
        .bind(("id", id.to_owned()))
        .bind(("now", now_ms()))
        .await?;
    let v: Option<Video> = res.take(0)?;
    Ok(v.map(|v| with_urls(st, v)))
}

#[utoipa::path(get, path = "/api/streams/{id}/videos", params(("id" = String, Path), PageQuery),
    responses((status = 200, body = VideoPage), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn list(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<VideoPage>> {
    validate::id(&id)?;
    let (page, limit) = page_params(q.page, q.limit)?;
    crate::streams::load(&st, &id)
        .await?
        .ok_or(ApiError::NotFound("stream"))?;
    let mut res = st
        .db
        .query(format!(
            "SELECT {FIELDS} FROM video WHERE stream = $stream AND deleted = false AND expires_at > $now \
             ORDER BY ended_at DESC LIMIT $limit START $start"
        ))
        .bind(("stream", id))
        .bind(("now", now_ms()))
        .bind(("limit", limit + 1))
        .bind(("start", (page - 1) * limit))
        .await?;
    let mut items: Vec<Video> = res.take(0)?;
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    Ok(axum::Json(VideoPage {
        items: items.into_iter().map(|v| with_urls(&st, v)).collect(),
        page,
        limit,
        more,
    }))
}

#[utoipa::path(get, path = "/api/videos/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Video), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn get_one(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Video>> {
    validate::id(&id)?;
    Ok(axum::Json(
        load(&st, &id).await?.ok_or(ApiError::NotFound("video"))?,
    ))
}

/// The owner deletes a replay: hidden at once, its objects deleted by the next expiry round.
#[utoipa::path(delete, path = "/api/videos/{id}", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn remove(
    State(st): State<ApiState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    validate::id(&id)?;
    let v = load(&st, &id).await?.ok_or(ApiError::NotFound("video"))?;
    let owner = match &v.stream {
        Some(s) => crate::streams::load(&st, s).await?.map(|s| s.owner),
        None => None,
    };
    if owner.as_deref() != Some(user.id.as_str()) {
        return Err(ApiError::Forbidden("only the stream's owner may do this"));
    }
    st.db
        .query("UPDATE type::record('video', $id) SET deleted = true, expires_at = $now")
        .bind(("id", id.clone()))
        .bind(("now", now_ms()))
        .await?
        .check()?;
    tracing::info!(video = %id, "replay deleted by its owner");
    Ok(StatusCode::NO_CONTENT)
}
