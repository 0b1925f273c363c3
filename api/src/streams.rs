//! Channels' streams: listing (live first, by viewers), metadata the owner edits, the secret
//! stream key, and the live state the media core sets.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use surrealdb::types::SurrealValue;
use utoipa::{IntoParams, ToSchema};

use crate::auth::AuthUser;
use crate::db::{new_id, now_ms};
use crate::error::{is_retryable, ApiError, Result};
use crate::json::{Json, Query};
use crate::{validate, ApiState, MaybeAuthUser};

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/streams", get(list).post(create))
        .route("/api/streams/{id}", get(get_one).put(update))
        .route("/api/streams/{id}/key", post(rotate_key))
}

/// Tries of a key rotation's write that lost a transaction conflict.
const KEY_WRITE_ATTEMPTS: u32 = 5;

/// Page sizes.
pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, SurrealValue)]
pub struct Stream {
    pub id: String,
    /// The owner's user id.
    pub owner: String,
    /// The name in WHIP/WHEP URLs (`/whip/{name}`): the owner's username.
    pub name: String,
    pub title: String,
    pub category: Option<String>,
    pub tags: Vec<String>,
    pub language: Option<String>,
    pub live: bool,
    pub started_at: Option<i64>,
    pub viewers: i64,
    /// Only in the owner's own view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_key: Option<String>,
    /// While live: its HLS master playlist and latest thumbnail (when HLS is on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hls_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail_url: Option<String>,
}

/// A live stream's HLS URLs.
fn with_urls(st: &ApiState, mut s: Stream) -> Stream {
    if let (true, Some(base)) = (s.live, &st.hls_base) {
        s.hls_url = Some(format!("{base}/{}/master.m3u8", s.name));
        s.thumbnail_url = Some(format!("{base}/{}/thumb.jpg", s.name));
    }
    s
}

const FIELDS: &str =
    "record::id(id) AS id, owner, name, title, category, tags, language, live, started_at, viewers";

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamInput {
    pub title: String,
    pub category: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub language: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `all` to include offline streams; live only by default.
    pub live: Option<String>,
    /// Category slug.
    pub category: Option<String>,
    /// Search: streams whose name or title contains this (case-insensitive, ≤ 50 characters).
    pub q: Option<String>,
    /// Exactly this stream name (the channel page's lookup).
    pub name: Option<String>,
    /// 1-based page.
    pub page: Option<u32>,
    pub limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct StreamPage {
    pub items: Vec<Stream>,
    pub page: u32,
    pub limit: u32,
    /// Whether another page follows.
    pub more: bool,
}

#[derive(Serialize, ToSchema)]
pub struct StreamKey {
    pub stream_key: String,
}

pub(crate) fn new_stream_key() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    format!("live_{}", Alphanumeric.sample_string(&mut rand::rng(), 32))
}

async fn check_category(st: &ApiState, slug: &Option<String>) -> Result<Option<String>> {
    let Some(slug) = slug else { return Ok(None) };
    validate::slug("category", slug)?;
    let mut res = st
        .db
        .query("SELECT VALUE slug FROM category WHERE slug = $slug")
        .bind(("slug", slug.clone()))
        .await?;
    let found: Vec<String> = res.take(0)?;
    if found.is_empty() {
        return Err(ApiError::validation(
            "category",
            "unknown category (see GET /api/categories)",
        ));
    }
    Ok(Some(slug.clone()))
}

pub(crate) fn page_params(page: Option<u32>, limit: Option<u32>) -> Result<(u32, u32)> {
    let page = page.unwrap_or(1);
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if page == 0 || page > 10_000 {
        return Err(ApiError::validation("page", "1-10000"));
    }
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::validation("limit", "1-100"));
    }
    Ok((page, limit))
}

#[utoipa::path(get, path = "/api/streams", params(ListQuery), responses((status = 200, body = StreamPage), (status = 400, body = crate::error::ErrorBody)))]
pub(crate) async fn list(
    State(st): State<ApiState>,
    RawQuery(raw): RawQuery,
    Query(q): Query<ListQuery>,
) -> Result<Response> {
    let (page, limit) = page_params(q.page, q.limit)?;
    let all = match q.live.as_deref() {
        None | Some("true") => false,
        Some("all") => true,
        Some(_) => return Err(ApiError::validation("live", "omit it, or `all`")),
    };
    if let Some(c) = &q.category {
        validate::slug("category", c)?;
    }
    let search = match q.q.as_deref().map(str::trim) {
        Some(s) if s.chars().count() > 50 => {
            return Err(ApiError::validation("q", "at most 50 characters"))
        }
        Some(s) if s.chars().any(validate::is_control) => {
            return Err(ApiError::validation(
                "q",
                "must not contain control characters",
            ))
        }
        Some(s) if !s.is_empty() => Some(s.to_lowercase()),
        _ => None,
    };
    let name = q.name.as_deref().map(str::to_lowercase);
    let key = raw.unwrap_or_default();
    let json = |body: Bytes| ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(body) = st.directory.get(&key, Instant::now()) {
        return Ok(json(body));
    }
    let _filling = st.directory.fill_lock().await;
    if let Some(body) = st.directory.get(&key, Instant::now()) {
        return Ok(json(body));
    }
    let mut conditions = Vec::new();
    if !all {
        conditions.push("live = true");
    }
    if q.category.is_some() {
        conditions.push("category = $category");
    }
    if search.is_some() {
        conditions
            .push("(string::contains(name, $q) OR string::contains(string::lowercase(title), $q))");
    }
    if name.is_some() {
        conditions.push("name = $name");
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    // Only fixed clauses are concatenated; every value is a bound parameter.
    let sql = format!("SELECT {FIELDS} FROM stream {filter} ORDER BY live DESC, viewers DESC, name ASC LIMIT $limit START $start");
    let mut res = st
        .db
        .query(sql)
        .bind(("category", q.category.clone()))
        .bind(("q", search))
        .bind(("name", name))
        .bind(("limit", limit + 1))
        .bind(("start", (page - 1) * limit))
        .await?;
    let mut items: Vec<Stream> = res.take(0)?;
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let items = items.into_iter().map(|s| with_urls(&st, s)).collect();
    let body = Bytes::from(
        serde_json::to_vec(&StreamPage {
            items,
            page,
            limit,
            more,
        })
        .map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    st.directory.put(key, Instant::now(), body.clone());
    Ok(json(body))
}

pub(crate) async fn load(st: &ApiState, id: &str) -> Result<Option<Stream>> {
    select_one(st, "type::record('stream', $v)", id).await
}

/// One stream, with its key; `from` is a fixed `FROM` target using the bound `$v`.
async fn select_one(st: &ApiState, from: &'static str, v: &str) -> Result<Option<Stream>> {
    let mut res = st
        .db
        .query(format!("SELECT {FIELDS}, stream_key FROM {from} LIMIT 1"))
        .bind(("v", v.to_owned()))
        .await?;
    let s: Option<Stream> = res.take(0)?;
    Ok(s.map(|s| with_urls(st, s)))
}

fn for_caller(mut s: Stream, caller: Option<&str>) -> Stream {
    if caller != Some(s.owner.as_str()) {
        s.stream_key = None;
    }
    s
}

#[utoipa::path(get, path = "/api/streams/{id}", params(("id" = String, Path)), responses((status = 200, body = Stream), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn get_one(
    State(st): State<ApiState>,
    caller: MaybeAuthUser,
    Path(id): Path<String>,
) -> Result<axum::Json<Stream>> {
    validate::id(&id)?;
    let s = load(&st, &id).await?.ok_or(ApiError::NotFound("stream"))?;
    Ok(axum::Json(for_caller(
        s,
        caller.0.as_ref().map(|u| u.id.as_str()),
    )))
}

#[utoipa::path(post, path = "/api/streams", request_body = StreamInput,
    responses((status = 201, body = Stream), (status = 409, body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn create(
    State(st): State<ApiState>,
    user: AuthUser,
    Json(input): Json<StreamInput>,
) -> Result<impl IntoResponse> {
    let meta = validated(&st, input).await?;
    let owner = crate::users::load_user(&st, &user.id)
        .await?
        .ok_or(ApiError::Unauthorized("account no longer exists"))?;
    let id = new_id();
    // One at a time, checked first: the unique indexes alone let parallel creates through
    // (see `Accounts::unique_writes`).
    let unique = st.accounts.unique_writes.lock().await;
    let mut res = st
        .db
        .query(
            "SELECT VALUE true FROM stream WHERE owner = $owner LIMIT 1; \
             SELECT VALUE true FROM stream WHERE name = $name LIMIT 1",
        )
        .bind(("owner", owner.id.clone()))
        .bind(("name", owner.username.clone()))
        .await?;
    let (mine, named): (Option<bool>, Option<bool>) = (res.take(0)?, res.take(1)?);
    if mine.is_some() {
        return Err(ApiError::Conflict(
            "you already have a stream; edit it with PUT".into(),
        ));
    }
    if named.is_some() {
        // A configured stream named like a user who registered before names were reserved.
        return Err(ApiError::Conflict(
            "a stream with this name already exists".into(),
        ));
    }
    st.db
        .query(
            "CREATE type::record('stream', $id) SET owner = $owner, name = $name, title = $m.title, category = $m.category, \
             tags = $m.tags, language = $m.language, stream_key = $key, live = false, started_at = NONE, viewers = 0, created_at = $now",
        )
        .bind(("id", id.clone()))
        .bind(("owner", owner.id.clone()))
        .bind(("name", owner.username.clone()))
        .bind(("m", meta))
        .bind(("key", new_stream_key()))
        .bind(("now", now_ms()))
        .await?
        .check()?;
    drop(unique);
    let s = load(&st, &id)
        .await?
        .ok_or(ApiError::Internal("created stream vanished".into()))?;
    crate::cluster::directory_changed(&st).await; // listings show it at once
    Ok((StatusCode::CREATED, axum::Json(s)))
}

/// What the owner may set, checked.
#[derive(Serialize, SurrealValue)]
struct Metadata {
    title: String,
    category: Option<String>,
    tags: Vec<String>,
    language: Option<String>,
}

async fn validated(st: &ApiState, input: StreamInput) -> Result<Metadata> {
    Ok(Metadata {
        title: validate::title(&input.title)?,
        tags: validate::tags(&input.tags)?,
        language: input
            .language
            .as_deref()
            .map(validate::language)
            .transpose()?,
        category: check_category(st, &input.category).await?,
    })
}

/// The stream `id` if `user` owns it: 404 unknown, 403 someone else's.
pub(crate) async fn owned(st: &ApiState, user: &AuthUser, id: &str) -> Result<Stream> {
    validate::id(id)?;
    let s = load(st, id).await?.ok_or(ApiError::NotFound("stream"))?;
    if s.owner != user.id {
        return Err(ApiError::Forbidden("only the stream's owner may do this"));
    }
    Ok(s)
}

#[utoipa::path(put, path = "/api/streams/{id}", params(("id" = String, Path)), request_body = StreamInput,
    responses((status = 200, body = Stream), (status = 403, body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn update(
    State(st): State<ApiState>,
    user: AuthUser,
    Path(id): Path<String>,
    Json(input): Json<StreamInput>,
) -> Result<axum::Json<Stream>> {
    owned(&st, &user, &id).await?;
    let meta = validated(&st, input).await?;
    st.db
        .query("UPDATE type::record('stream', $id) SET title = $m.title, category = $m.category, tags = $m.tags, language = $m.language")
        .bind(("id", id.clone()))
        .bind(("m", meta))
        .await?
        .check()?;
    crate::cluster::directory_changed(&st).await;
    Ok(axum::Json(
        load(&st, &id).await?.ok_or(ApiError::NotFound("stream"))?,
    ))
}

#[utoipa::path(post, path = "/api/streams/{id}/key", params(("id" = String, Path)),
    responses((status = 200, body = StreamKey), (status = 403, body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn rotate_key(
    State(st): State<ApiState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<axum::Json<StreamKey>> {
    let stream = owned(&st, &user, &id).await?;
    let key = new_stream_key();
    // The media side writes the same record (live flag, viewer counts) at any moment: a lost
    // read/write conflict is retried, not answered with a 500.
    let mut attempts = 1;
    loop {
        let written = match st
            .db
            .query("UPDATE type::record('stream', $id) SET stream_key = $key")
            .bind(("id", id.clone()))
            .bind(("key", key.clone()))
            .await
        {
            Ok(response) => response.check(),
            Err(e) => Err(e),
        };
        match written {
            Err(e) if is_retryable(&e) && attempts < KEY_WRITE_ATTEMPTS => attempts += 1,
            other => {
                other?;
                break;
            }
        }
    }
    // Whoever publishes with the old key is off the air before the new key is handed out.
    // On whichever node has it (this one's at once when alone).
    crate::cluster::broadcast(
        &st,
        crate::cluster::Event::EndPublisher {
            stream: stream.name.clone(),
        },
    )
    .await;
    tracing::info!(stream = %id, name = %stream.name, "stream key rotated; its publisher ended");
    Ok(axum::Json(StreamKey { stream_key: key }))
}

/// The stream named `name` (WHIP URL name), with its key.
/// Owner of the channels the operator configured by key (`[stream_keys]`, or the generated
/// `demo`): no account has this id, so nobody can log in as it or edit them through the API.
pub const OPERATOR_OWNER: &str = "operator";

/// Make each configured stream a channel in the directory (listed, with a page, chat and a
/// viewer count), created once, titled with its name. Its key stays in the configuration: the
/// record's key is empty, which never matches a key (see `Api::check_stream_key`).
pub(crate) async fn ensure_operator_streams(st: &ApiState, names: &[String]) -> Result<usize> {
    let mut created = 0;
    for name in names {
        if by_name(st, name).await?.is_some() {
            continue;
        }
        st.db
            .query(
                "CREATE type::record('stream', $id) SET owner = $owner, name = $name, title = $name, category = NONE, \
                 tags = [], language = NONE, stream_key = '', live = false, started_at = NONE, viewers = 0, created_at = $now",
            )
            .bind(("id", new_id()))
            // The owner index is unique: one pseudo-owner per configured stream.
            .bind(("owner", format!("{OPERATOR_OWNER}:{name}")))
            .bind(("name", name.clone()))
            .bind(("now", now_ms()))
            .await?
            .check()?;
        created += 1;
    }
    if created > 0 {
        crate::cluster::directory_changed(st).await;
    }
    Ok(created)
}

pub(crate) async fn by_name(st: &ApiState, name: &str) -> Result<Option<Stream>> {
    select_one(st, "stream WHERE name = $v", name).await
}
