//! Accounts: register, login (rate-limited), token refresh and logout, profiles.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{self, AuthUser, REFRESH_TOKEN_TTL};
use crate::db::{new_id, now_ms};
use crate::error::{ApiError, Result};
use crate::json::Json;
use crate::{validate, ApiState};

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/users/register", post(register))
        .route("/api/users/login", post(login))
        .route("/api/users/refresh", post(refresh))
        .route("/api/users/logout", post(logout))
        .route("/api/users/me", get(me))
        .route("/api/users/{id}", get(profile))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub username: String,
    pub email: String,
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Username or email.
    pub username: String,
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// A public profile.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug)]
pub struct User {
    pub id: String,
    pub username: String,
    pub created_at: i64,
}

/// The caller's own account.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub id: String,
    pub username: String,
    pub email: String,
    pub created_at: i64,
}

#[derive(Serialize, ToSchema)]
pub struct Session {
    pub user: User,
    pub access_token: String,
    pub token_type: &'static str,
    /// Seconds until `access_token` expires.
    pub expires_in: u64,
    pub refresh_token: String,
}

#[derive(Serialize, Deserialize)]
struct UserRecord {
    username: String,
    email: String,
    password_hash: String,
    created_at: i64,
}

#[derive(Deserialize)]
struct Credentials {
    id: String,
    username: String,
    password_hash: String,
    created_at: i64,
}

async fn issue_session(st: &ApiState, user: User) -> Result<Session> {
    let access_token = st.keys.issue(&user.id)?;
    let (refresh_token, hash) = auth::new_refresh_token();
    st.db
        .query("CREATE type::thing('refresh_token', $id) SET user = $user, token_hash = $hash, expires_at = $exp")
        .bind(("id", new_id()))
        .bind(("user", user.id.clone()))
        .bind(("hash", hash))
        .bind(("exp", now_ms() + REFRESH_TOKEN_TTL.as_millis() as i64))
        .await?
        .check()?;
    Ok(Session {
        user,
        access_token,
        token_type: "Bearer",
        expires_in: st.keys.ttl().as_secs(),
        refresh_token,
    })
}

#[utoipa::path(post, path = "/api/users/register", request_body = RegisterRequest,
    responses((status = 201, body = Session), (status = 400, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn register(
    State(st): State<ApiState>,
    Json(req): Json<RegisterRequest>,
) -> Result<impl IntoResponse> {
    let username = validate::username(&req.username)?;
    let email = validate::email(&req.email)?;
    validate::password(&req.password)?;
    let password_hash = auth::hash_password(req.password).await?;
    let id = new_id();
    let created_at = now_ms();
    st.db
        .query("CREATE type::thing('user', $id) CONTENT $data")
        .bind(("id", id.clone()))
        .bind((
            "data",
            UserRecord {
                username: username.clone(),
                email,
                password_hash,
                created_at,
            },
        ))
        .await?
        .check()?;
    tracing::info!(user = %id, %username, "user registered");
    let session = issue_session(
        &st,
        User {
            id,
            username,
            created_at,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(session)))
}

/// The peer address of the connection (X-Forwarded-For is not trusted: no proxy is
/// configured yet). "local" when served without connection info (in-process tests).
pub struct ClientIp(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        Ok(ClientIp(ip.unwrap_or_else(|| "local".to_owned())))
    }
}

#[utoipa::path(post, path = "/api/users/login", request_body = LoginRequest,
    responses((status = 200, body = Session), (status = 401, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody)))]
pub(crate) async fn login(
    State(st): State<ApiState>,
    ClientIp(ip): ClientIp,
    Json(req): Json<LoginRequest>,
) -> Result<axum::Json<Session>> {
    let login = req.username.trim().to_lowercase();
    // Usernames and emails are short and printable; anything else cannot match an account
    // (and a NUL byte is not something to hand the database).
    let plausible = login.len() <= 254 && !login.chars().any(char::is_control);
    let now = Instant::now();
    let ip_ok = st.limiter.allow(&format!("ip:{ip}"), now);
    let account_ok = st.limiter.allow(&format!("account:{login}"), now);
    if !ip_ok || !account_ok {
        return Err(ApiError::RateLimited);
    }
    let found: Option<Credentials> = if plausible {
        let mut res = st
            .db
            .query("SELECT record::id(id) AS id, username, password_hash, created_at FROM user WHERE username = $login OR email = $login LIMIT 1")
            .bind(("login", login))
            .await?;
        res.take(0)?
    } else {
        None
    };
    let hash = found.as_ref().map(|c| c.password_hash.clone());
    // Same work and same answer whether or not the account exists.
    if !auth::verify_password(req.password, hash).await? {
        return Err(ApiError::Unauthorized("wrong username or password"));
    }
    let c = found.ok_or(ApiError::Unauthorized("wrong username or password"))?;
    let session = issue_session(
        &st,
        User {
            id: c.id,
            username: c.username,
            created_at: c.created_at,
        },
    )
    .await?;
    Ok(axum::Json(session))
}

#[derive(Deserialize)]
struct TokenRow {
    id: String,
    user: String,
    expires_at: i64,
}

#[utoipa::path(post, path = "/api/users/refresh", request_body = RefreshRequest,
    responses((status = 200, body = Session), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn refresh(
    State(st): State<ApiState>,
    Json(req): Json<RefreshRequest>,
) -> Result<axum::Json<Session>> {
    let hash = auth::sha256_hex(&req.refresh_token);
    let mut res = st
        .db
        .query("SELECT record::id(id) AS id, user, expires_at FROM refresh_token WHERE token_hash = $hash LIMIT 1")
        .bind(("hash", hash))
        .await?;
    let row: Option<TokenRow> = res.take(0)?;
    let row = row.ok_or(ApiError::Unauthorized("unknown or revoked refresh token"))?;
    // Rotation: a refresh token works once.
    st.db
        .query("DELETE type::thing('refresh_token', $id)")
        .bind(("id", row.id))
        .await?
        .check()?;
    if row.expires_at < now_ms() {
        return Err(ApiError::Unauthorized("refresh token expired"));
    }
    let user = load_user(&st, &row.user)
        .await?
        .ok_or(ApiError::Unauthorized("account no longer exists"))?;
    Ok(axum::Json(issue_session(&st, user).await?))
}

#[utoipa::path(post, path = "/api/users/logout", request_body = RefreshRequest, responses((status = 204)))]
pub(crate) async fn logout(
    State(st): State<ApiState>,
    Json(req): Json<RefreshRequest>,
) -> Result<StatusCode> {
    let hash = auth::sha256_hex(&req.refresh_token);
    let mut res = st
        .db
        .query(
            "SELECT VALUE user FROM refresh_token WHERE token_hash = $hash; \
             DELETE refresh_token WHERE token_hash = $hash",
        )
        .bind(("hash", hash))
        .await?;
    let users: Vec<String> = res.take(0)?;
    res.check()?;
    // The user's open chat and notification streams end too.
    for user in users {
        st.realtime.end_streams_of(&user);
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/users/me", responses((status = 200, body = Me), (status = 401, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn me(State(st): State<ApiState>, user: AuthUser) -> Result<axum::Json<Me>> {
    let mut res = st
        .db
        .query("SELECT record::id(id) AS id, username, email, created_at FROM type::thing('user', $id)")
        .bind(("id", user.id))
        .await?;
    let me: Option<Me> = res.take(0)?;
    me.map(axum::Json)
        .ok_or(ApiError::Unauthorized("account no longer exists"))
}

#[utoipa::path(get, path = "/api/users/{id}", params(("id" = String, Path)),
    responses((status = 200, body = User), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn profile(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<axum::Json<User>> {
    validate::id(&id)?;
    load_user(&st, &id)
        .await?
        .map(axum::Json)
        .ok_or(ApiError::NotFound("user"))
}

pub(crate) async fn load_user(st: &ApiState, id: &str) -> Result<Option<User>> {
    let mut res = st
        .db
        .query("SELECT record::id(id) AS id, username, created_at FROM type::thing('user', $id)")
        .bind(("id", id.to_owned()))
        .await?;
    Ok(res.take(0)?)
}
