//! Stream analytics: one `broadcast` record per time a stream is on air, and a series of
//! `broadcast_sample`s (viewers, ingest bitrate, keyframe interval) taken while it is.
//!
//! The binary opens a broadcast when a stream goes live ([`crate::Api::begin_broadcast`]),
//! buffers samples and writes them in batches ([`crate::Api::record_samples`]), and closes it
//! when the stream goes offline ([`crate::Api::end_broadcast`]): the summary (peak and average
//! viewers, unique viewers, chat messages, follows gained) is computed then and stored, so it
//! outlives chat retention. While a broadcast is on air its summary is computed on read.
//!
//! `GET /api/streams/{id}/analytics` lists a stream's broadcasts; `.../analytics/{broadcast}`
//! adds its samples. Only the stream's owner may read either.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use surrealdb::types::{Number, SurrealValue};
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::error::{ApiError, Result};
use crate::follows::PageQuery;
use crate::json::Query;
use crate::streams::page_params;
use crate::{validate, ApiState};

/// Samples returned with one broadcast, at most (48 h at one sample per 10 s).
const MAX_SAMPLES: u32 = 17_280;

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/streams/{id}/analytics", get(list))
        .route("/api/streams/{id}/analytics/{broadcast}", get(get_one))
}

/// One measurement of a live broadcast.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, SurrealValue)]
pub struct Sample {
    /// Unix ms.
    pub at: i64,
    /// Concurrent viewers: `webrtc_viewers + hls_viewers`.
    pub viewers: u32,
    pub webrtc_viewers: u32,
    pub hls_viewers: u32,
    /// Distinct viewers since the broadcast began (WebRTC sessions + HLS clients).
    pub unique_viewers: u32,
    /// What the publisher sent since the previous sample, in kbit/s (payload bytes).
    pub ingest_kbps: Option<u32>,
    /// Time between the publisher's last two keyframes.
    pub keyframe_interval_ms: Option<u32>,
}

/// A broadcast and its figures.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, SurrealValue)]
pub struct Broadcast {
    pub id: String,
    /// The stream's id.
    pub stream: String,
    /// Title and category when it began.
    pub title: String,
    pub category: Option<String>,
    pub started_at: i64,
    /// `null` while on air.
    pub ended_at: Option<i64>,
    /// Until now while on air.
    pub duration_ms: i64,
    pub peak_viewers: u32,
    pub average_viewers: f64,
    pub unique_viewers: u32,
    /// Chat messages sent while it was on air (including ones moderators deleted).
    pub chat_messages: u32,
    /// Follows the channel gained while it was on air.
    pub follows_gained: u32,
    #[serde(default, skip_serializing)]
    #[surreal(default)]
    owner: String,
}

#[derive(Serialize, ToSchema)]
pub struct BroadcastPage {
    pub items: Vec<Broadcast>,
    pub page: u32,
    pub limit: u32,
    pub more: bool,
}

#[derive(Serialize, ToSchema)]
pub struct BroadcastDetail {
    #[serde(flatten)]
    pub broadcast: Broadcast,
    /// Oldest first, one per sampling interval (10 s by default).
    pub samples: Vec<Sample>,
}

const FIELDS: &str = "record::id(id) AS id, stream, owner, title, category, started_at, ended_at, \
                      duration_ms, peak_viewers, average_viewers, unique_viewers, chat_messages, \
                      follows_gained";

/// Open a broadcast of the stream named `name` (closing one a crash left open); its id, or
/// `None` for a stream that is not in the database (configured by key).
pub(crate) async fn begin(st: &ApiState, name: &str, now: i64) -> Result<Option<String>> {
    let Some(stream) = crate::streams::by_name(st, name).await? else {
        return Ok(None);
    };
    close_dangling(st, Some(&stream.id)).await?;
    let id = crate::db::new_id();
    st.db
        .query(
            "CREATE type::record('broadcast', $id) SET stream = $stream, owner = $owner, title = $title, \
             category = $category, started_at = $now, ended_at = NONE, duration_ms = 0, peak_viewers = 0, \
             average_viewers = 0.0, unique_viewers = 0, chat_messages = 0, follows_gained = 0",
        )
        .bind(("id", id.clone()))
        .bind(("stream", stream.id))
        .bind(("owner", stream.owner))
        .bind(("title", stream.title))
        .bind(("category", stream.category))
        .bind(("now", now))
        .await?
        .check()?;
    Ok(Some(id))
}

/// Close broadcasts left open (the server stopped while they were on air) of one stream, or
/// of all; each ended when it was last sampled. How many.
pub(crate) async fn close_dangling(st: &ApiState, stream: Option<&str>) -> Result<usize> {
    let mut res = st
        .db
        .query(
            "SELECT VALUE record::id(id) FROM broadcast WHERE ended_at = NONE \
             AND ($stream = NONE OR stream = $stream)",
        )
        .bind(("stream", stream.map(str::to_owned)))
        .await?;
    let dangling: Vec<String> = res.take(0)?;
    for id in &dangling {
        let mut res = st
            .db
            .query("SELECT VALUE at FROM broadcast_sample WHERE broadcast = $b ORDER BY at DESC LIMIT 1")
            .bind(("b", id.clone()))
            .await?;
        let last: Option<i64> = res.take(0)?;
        end(st, id, last).await?;
    }
    Ok(dangling.len())
}

/// Close broadcast `id` at `ended_at` (its start if `None`) and store its summary.
pub(crate) async fn end(st: &ApiState, id: &str, ended_at: Option<i64>) -> Result<()> {
    let Some(b) = load(st, id).await? else {
        return Ok(());
    };
    let ended_at = ended_at.unwrap_or(b.started_at).max(b.started_at);
    let b = summarize(st, b, ended_at).await?;
    st.db
        .query(
            "UPDATE type::record('broadcast', $id) SET ended_at = $b.ended_at, duration_ms = $b.duration_ms, \
             peak_viewers = $b.peak_viewers, average_viewers = $b.average_viewers, \
             unique_viewers = $b.unique_viewers, chat_messages = $b.chat_messages, \
             follows_gained = $b.follows_gained",
        )
        .bind(("id", id.to_owned()))
        .bind(("b", b))
        .await?
        .check()?;
    Ok(())
}

/// Write buffered samples, each with its broadcast's id, in one statement.
pub(crate) async fn record(st: &ApiState, samples: Vec<(String, Sample)>) -> Result<()> {
    // The derive's `flatten` code names `Value` unqualified (surrealdb 3.3.5).
    use surrealdb::types::Value;
    #[derive(SurrealValue)]
    struct Row {
        broadcast: String,
        #[surreal(flatten)]
        sample: Sample,
    }
    if samples.is_empty() {
        return Ok(());
    }
    let rows: Vec<Row> = samples
        .into_iter()
        .map(|(broadcast, sample)| Row { broadcast, sample })
        .collect();
    st.db
        .query("INSERT INTO broadcast_sample $rows")
        .bind(("rows", rows))
        .await?
        .check()?;
    Ok(())
}

/// The figures of `b` as if it ended at `ended_at`, from its samples, chat and follows.
async fn summarize(st: &ApiState, mut b: Broadcast, ended_at: i64) -> Result<Broadcast> {
    #[derive(Deserialize, SurrealValue)]
    struct Viewers {
        // Numbers, not `u32`: over no samples SurrealDB 3's `math::max` is the float `-inf`.
        peak: Option<Number>,
        average: Option<f64>,
        unique: Option<Number>,
    }
    let mut res = st
        .db
        .query(
            "SELECT math::max(viewers) AS peak, math::mean(viewers) AS average, \
             math::max(unique_viewers) AS unique FROM broadcast_sample WHERE broadcast = $b GROUP ALL; \
             RETURN count(SELECT VALUE id FROM chat_message WHERE channel = $owner AND at >= $from AND at <= $to); \
             RETURN count(SELECT VALUE id FROM follow WHERE channel = $owner AND created_at >= $from AND created_at <= $to);",
        )
        .bind(("b", b.id.clone()))
        .bind(("owner", b.owner.clone()))
        .bind(("from", b.started_at))
        .bind(("to", ended_at))
        .await?;
    let viewers: Option<Viewers> = res.take(0)?;
    let chat: Option<u32> = res.take(1)?;
    let follows: Option<u32> = res.take(2)?;
    if let Some(v) = viewers {
        b.peak_viewers = figure(v.peak);
        b.average_viewers = v.average.filter(|a| a.is_finite()).unwrap_or(0.0);
        b.unique_viewers = figure(v.unique);
    }
    b.chat_messages = chat.unwrap_or(0);
    b.follows_gained = follows.unwrap_or(0);
    b.ended_at = Some(ended_at);
    b.duration_ms = ended_at - b.started_at;
    Ok(b)
}

/// A viewer figure from an aggregate: 0 for none, `-inf` (no samples) or anything negative.
fn figure(n: Option<Number>) -> u32 {
    match n {
        Some(Number::Int(i)) => u32::try_from(i.max(0)).unwrap_or(u32::MAX),
        // `as` saturates and maps NaN to 0.
        Some(Number::Float(f)) => f as u32,
        _ => 0,
    }
}

async fn load(st: &ApiState, id: &str) -> Result<Option<Broadcast>> {
    let mut res = st
        .db
        .query(format!(
            "SELECT {FIELDS} FROM type::record('broadcast', $id)"
        ))
        .bind(("id", id.to_owned()))
        .await?;
    Ok(res.take(0)?)
}

/// A broadcast on air gets its figures so far.
async fn current(st: &ApiState, b: Broadcast) -> Result<Broadcast> {
    if b.ended_at.is_some() {
        return Ok(b);
    }
    let mut b = summarize(st, b, crate::db::now_ms()).await?;
    b.ended_at = None;
    Ok(b)
}

/// A stream's broadcasts, latest first, with their figures.
#[utoipa::path(get, path = "/api/streams/{id}/analytics", params(("id" = String, Path), PageQuery),
    responses((status = 200, body = BroadcastPage), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn list(
    State(st): State<ApiState>,
    user: AuthUser,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<BroadcastPage>> {
    crate::streams::owned(&st, &user, &id).await?;
    let (page, limit) = page_params(q.page, q.limit)?;
    let mut res = st
        .db
        .query(format!(
            "SELECT {FIELDS} FROM broadcast WHERE stream = $stream ORDER BY started_at DESC \
             LIMIT $limit START $start"
        ))
        .bind(("stream", id))
        .bind(("limit", limit + 1))
        .bind(("start", (page - 1) * limit))
        .await?;
    let found: Vec<Broadcast> = res.take(0)?;
    let more = found.len() > limit as usize;
    let mut items = Vec::with_capacity(found.len());
    for b in found.into_iter().take(limit as usize) {
        items.push(current(&st, b).await?);
    }
    Ok(axum::Json(BroadcastPage {
        items,
        page,
        limit,
        more,
    }))
}

/// `?since=`: only samples taken after this time (Unix ms), for polling a live broadcast.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SamplesQuery {
    pub since: Option<i64>,
}

/// One broadcast with its samples (viewers, ingest bitrate, keyframe interval over time).
#[utoipa::path(get, path = "/api/streams/{id}/analytics/{broadcast}",
    params(("id" = String, Path), ("broadcast" = String, Path), SamplesQuery),
    responses((status = 200, body = BroadcastDetail), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get_one(
    State(st): State<ApiState>,
    user: AuthUser,
    Path((id, broadcast)): Path<(String, String)>,
    Query(q): Query<SamplesQuery>,
) -> Result<axum::Json<BroadcastDetail>> {
    crate::streams::owned(&st, &user, &id).await?;
    validate::id(&broadcast).map_err(|_| ApiError::NotFound("broadcast"))?;
    let b = load(&st, &broadcast)
        .await?
        .filter(|b| b.stream == id)
        .ok_or(ApiError::NotFound("broadcast"))?;
    let mut res = st
        .db
        .query(
            "SELECT at, viewers, webrtc_viewers, hls_viewers, unique_viewers, ingest_kbps, \
             keyframe_interval_ms FROM broadcast_sample WHERE broadcast = $b AND at > $since \
             ORDER BY at ASC LIMIT $max",
        )
        .bind(("b", broadcast))
        .bind(("since", q.since.unwrap_or(i64::MIN)))
        .bind(("max", MAX_SAMPLES))
        .await?;
    let samples: Vec<Sample> = res.take(0)?;
    Ok(axum::Json(BroadcastDetail {
        broadcast: current(&st, b).await?,
        samples,
    }))
}
