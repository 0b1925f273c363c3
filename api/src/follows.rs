//! Who follows whom. A channel is a user; following is what makes go-live notifications.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use surrealdb::types::SurrealValue;
use utoipa::{IntoParams, ToSchema};

use crate::auth::AuthUser;
use crate::db::{new_id, now_ms};
use crate::error::{ApiError, Result};
use crate::json::{Json, Query};
use crate::streams::page_params;
use crate::{validate, ApiState};

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/follows", post(follow))
        .route("/api/follows/{channel_id}", delete(unfollow))
        .route("/api/users/{id}/followers", get(followers))
        .route("/api/users/{id}/following", get(following))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FollowRequest {
    /// The user id of the channel to follow.
    pub channel_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct Follow {
    pub follower: String,
    pub channel: String,
    pub created_at: i64,
}

/// One user in a followers/following list, with whether their stream is live.
#[derive(Serialize, Deserialize, ToSchema, SurrealValue)]
pub struct FollowEntry {
    pub id: String,
    pub username: String,
    pub live: bool,
    pub followed_at: i64,
}

#[derive(Serialize, ToSchema)]
pub struct FollowPage {
    pub items: Vec<FollowEntry>,
    pub page: u32,
    pub limit: u32,
    pub more: bool,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    pub page: Option<u32>,
    pub limit: Option<u32>,
}

#[utoipa::path(post, path = "/api/follows", request_body = FollowRequest,
    responses((status = 201, body = Follow), (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn follow(
    State(st): State<ApiState>,
    user: AuthUser,
    Json(req): Json<FollowRequest>,
) -> Result<impl IntoResponse> {
    if req.channel_id == user.id {
        return Err(ApiError::validation(
            "channel_id",
            "you cannot follow yourself",
        ));
    }
    validate::id(&req.channel_id).map_err(|_| ApiError::NotFound("channel"))?;
    crate::users::load_user(&st, &req.channel_id)
        .await?
        .ok_or(ApiError::NotFound("channel"))?;
    let created_at = now_ms();
    // The unique index alone lets parallel creates of one pair through (see
    // `Accounts::unique_writes`): checked and created one at a time.
    let unique = st.accounts.unique_writes.lock().await;
    let mut res = st
        .db
        .query("SELECT VALUE true FROM follow WHERE follower = $follower AND channel = $channel LIMIT 1")
        .bind(("follower", user.id.clone()))
        .bind(("channel", req.channel_id.clone()))
        .await?;
    let exists: Vec<bool> = res.take(0)?;
    if !exists.is_empty() {
        return Err(ApiError::Conflict("you already follow this channel".into()));
    }
    st.db
        .query("CREATE type::record('follow', $id) SET follower = $follower, channel = $channel, created_at = $now")
        .bind(("id", new_id()))
        .bind(("follower", user.id.clone()))
        .bind(("channel", req.channel_id.clone()))
        .bind(("now", created_at))
        .await?
        .check()?;
    drop(unique);
    Ok((
        StatusCode::CREATED,
        axum::Json(Follow {
            follower: user.id,
            channel: req.channel_id,
            created_at,
        }),
    ))
}

#[utoipa::path(delete, path = "/api/follows/{channel_id}", params(("channel_id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn unfollow(
    State(st): State<ApiState>,
    user: AuthUser,
    Path(channel_id): Path<String>,
) -> Result<StatusCode> {
    let mut res = st
        .db
        .query(
            "SELECT VALUE record::id(id) FROM follow WHERE follower = $follower AND channel = $channel; \
             DELETE follow WHERE follower = $follower AND channel = $channel",
        )
        .bind(("follower", user.id))
        .bind(("channel", channel_id))
        .await?;
    let deleted: Vec<String> = res.take(0)?;
    if deleted.is_empty() {
        return Err(ApiError::NotFound("follow"));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn page_of(
    st: &ApiState,
    id: String,
    q: PageQuery,
    followers: bool,
) -> Result<axum::Json<FollowPage>> {
    validate::id(&id).map_err(|_| ApiError::NotFound("user"))?;
    crate::users::load_user(st, &id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    let (page, limit) = page_params(q.page, q.limit)?;
    // `other` is the user on the far side of each follow.
    let (mine, other) = if followers {
        ("channel", "follower")
    } else {
        ("follower", "channel")
    };
    let sql = format!(
        "SELECT {other} AS id, created_at AS followed_at, \
         (SELECT VALUE username FROM ONLY type::record('user', $parent.{other})) AS username, \
         (array::len((SELECT VALUE live FROM stream WHERE owner = $parent.{other} AND live = true)) > 0) AS live \
         FROM follow WHERE {mine} = $id ORDER BY followed_at DESC LIMIT $limit START $start"
    );
    let mut res = st
        .db
        .query(sql)
        .bind(("id", id))
        .bind(("limit", limit + 1))
        .bind(("start", (page - 1) * limit))
        .await?;
    let mut items: Vec<FollowEntry> = res.take(0)?;
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    Ok(axum::Json(FollowPage {
        items,
        page,
        limit,
        more,
    }))
}

#[utoipa::path(get, path = "/api/users/{id}/followers", params(("id" = String, Path), PageQuery), responses((status = 200, body = FollowPage)))]
pub(crate) async fn followers(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<FollowPage>> {
    page_of(&st, id, q, true).await
}

#[utoipa::path(get, path = "/api/users/{id}/following", params(("id" = String, Path), PageQuery), responses((status = 200, body = FollowPage)))]
pub(crate) async fn following(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<FollowPage>> {
    page_of(&st, id, q, false).await
}
