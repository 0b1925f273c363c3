//! Accounts: register (rate-limited per address, duplicates refused before hashing, reserved
//! names refused), login (rate-limited, see `ratelimit`), token refresh and logout
//! (`sessions`), profiles. Password hashing goes through the `HashGate`.

use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use surrealdb::types::SurrealValue;
use utoipa::ToSchema;

use crate::auth::{self, AuthUser};
use crate::db::{new_id, now_ms};
use crate::error::{ApiError, Result};
use crate::json::Json;
use crate::ratelimit::LoginRefusal;
use crate::realtime::ClientAddr;
use crate::{sessions, validate, ApiState};

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
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, SurrealValue)]
pub struct User {
    pub id: String,
    pub username: String,
    pub created_at: i64,
}

/// The caller's own account.
#[derive(Serialize, Deserialize, ToSchema, SurrealValue)]
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
    /// Works once: each refresh returns the next one. Using one twice ends the session.
    pub refresh_token: String,
}

#[derive(Serialize, Deserialize, SurrealValue)]
struct UserRecord {
    username: String,
    email: String,
    password_hash: String,
    created_at: i64,
}

#[derive(Deserialize, SurrealValue)]
struct Credentials {
    id: String,
    username: String,
    password_hash: String,
    created_at: i64,
}

/// An access token for `user`, with `refresh_token` (a new session's first, or a refresh's
/// next).
fn session(st: &ApiState, user: User, refresh_token: String) -> Result<Session> {
    Ok(Session {
        access_token: st.keys.issue(&user.id)?,
        user,
        token_type: "Bearer",
        expires_in: st.keys.ttl().as_secs(),
        refresh_token,
    })
}

async fn new_session(st: &ApiState, user: User) -> Result<Session> {
    let refresh_token = sessions::start(st, &user.id).await?;
    session(st, user, refresh_token)
}

#[utoipa::path(post, path = "/api/users/register", request_body = RegisterRequest,
    responses((status = 201, body = Session), (status = 400, body = crate::error::ErrorBody),
        (status = 409, description = "username taken, email already registered, or username is reserved", body = crate::error::ErrorBody),
        (status = 429, description = "too many registrations from this address (Retry-After)", body = crate::error::ErrorBody),
        (status = 503, description = "password hashing at capacity (Retry-After)", body = crate::error::ErrorBody)))]
pub(crate) async fn register(
    State(st): State<ApiState>,
    ClientAddr(addr): ClientAddr,
    Json(req): Json<RegisterRequest>,
) -> Result<impl IntoResponse> {
    st.accounts
        .admit_registration(&st.cluster, addr, Instant::now())
        .await?;
    let username = validate::username(&req.username)?;
    let email = validate::email(&req.email)?;
    validate::password(&req.password)?;
    if st.accounts.is_reserved(&username) {
        return Err(ApiError::Conflict("username is reserved".into()));
    }
    // Before the (expensive) hash: a duplicate costs a lookup, not 19 MiB and a core.
    refuse_taken(&st, &username, &email).await?;
    let password_hash = auth::hash_password(&st.accounts.hashes, req.password).await?;
    let id = new_id();
    let created_at = now_ms();
    // Two registrations racing for one name: checked again, and created, one at a time.
    let unique = st.accounts.unique_writes.lock().await;
    refuse_taken(&st, &username, &email).await?;
    st.db
        .query("CREATE type::record('user', $id) CONTENT $data")
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
    drop(unique);
    tracing::info!(user = %id, %username, "user registered");
    let session = new_session(
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

/// 409 when the username or the email already has an account.
async fn refuse_taken(st: &ApiState, username: &str, email: &str) -> Result<()> {
    let mut res = st
        .db
        .query(
            "SELECT VALUE true FROM user WHERE username = $username LIMIT 1; \
             SELECT VALUE true FROM user WHERE email = $email LIMIT 1",
        )
        .bind(("username", username.to_owned()))
        .bind(("email", email.to_owned()))
        .await?;
    let name_taken: Option<bool> = res.take(0)?;
    let email_taken: Option<bool> = res.take(1)?;
    if name_taken.is_some() {
        return Err(ApiError::Conflict("username taken".into()));
    }
    if email_taken.is_some() {
        return Err(ApiError::Conflict("email already registered".into()));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/users/login", request_body = LoginRequest,
    responses((status = 200, body = Session), (status = 401, body = crate::error::ErrorBody),
        (status = 429, description = "too many attempts from this address, or failures at this account from it (Retry-After)", body = crate::error::ErrorBody),
        (status = 503, description = "password hashing at capacity (Retry-After)", body = crate::error::ErrorBody)))]
pub(crate) async fn login(
    State(st): State<ApiState>,
    ClientAddr(addr): ClientAddr,
    Json(req): Json<LoginRequest>,
) -> Result<axum::Json<Session>> {
    let login = req.username.trim().to_lowercase();
    // Usernames and emails are short and printable; anything else cannot match an account
    // (and a NUL byte is not something to hand the database).
    let plausible = login.len() <= 254 && !login.chars().any(char::is_control);
    let ip = addr.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let limits = &st.accounts.login;
    // The limiter keys accounts by a hash of the login text (bounded size whatever was sent).
    let shared = crate::cluster::limits::login_begin(&st.cluster, &login, ip).await;
    shared
        .unwrap_or_else(|| limits.begin(&login, ip, Instant::now()))
        .map_err(|refusal| match refusal {
            LoginRefusal::Address(wait) => ApiError::TooManyRequests {
                message: "too many login attempts from this address; try again later",
                retry_after: wait.0,
            },
            LoginRefusal::Account(wait) => ApiError::TooManyRequests {
                message:
                    "too many failed logins for this account from this address; try again later",
                retry_after: wait.0,
            },
        })?;
    let found: Option<Credentials> = if plausible {
        // Usernames have no `@`: one index lookup either way.
        let field = if login.contains('@') {
            "email"
        } else {
            "username"
        };
        let mut res = st
            .db
            .query(format!("SELECT record::id(id) AS id, username, password_hash, created_at FROM user WHERE {field} = $login LIMIT 1"))
            .bind(("login", login.clone()))
            .await?;
        res.take(0)?
    } else {
        None
    };
    let hash = found.as_ref().map(|c| c.password_hash.clone());
    // Same work and same answer whether or not the account exists.
    if !auth::verify_password(&st.accounts.hashes, req.password, hash).await? {
        if !crate::cluster::limits::login_failed(&st.cluster, &login, ip).await {
            limits.failed(&login, ip, Instant::now());
        }
        return Err(ApiError::Unauthorized("wrong username or password"));
    }
    let c = found.ok_or(ApiError::Unauthorized("wrong username or password"))?;
    let session = new_session(
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

#[utoipa::path(post, path = "/api/users/refresh", request_body = RefreshRequest,
    responses((status = 200, body = Session),
        (status = 401, description = "unknown, expired, or already used (the session is then revoked)", body = crate::error::ErrorBody)))]
pub(crate) async fn refresh(
    State(st): State<ApiState>,
    Json(req): Json<RefreshRequest>,
) -> Result<axum::Json<Session>> {
    let rotated = match sessions::rotate(&st, &req.refresh_token).await? {
        Ok(rotated) => rotated,
        Err(refused) => {
            if let sessions::Refused::Reused(user) = &refused {
                // Possibly stolen: whatever the session had open ends, as on logout.
                let user = user.clone();
                crate::cluster::broadcast(&st, crate::cluster::Event::EndStreams { user }).await;
            }
            return Err(ApiError::Unauthorized(refused.message()));
        }
    };
    let user = load_user(&st, &rotated.user)
        .await?
        .ok_or(ApiError::Unauthorized("account no longer exists"))?;
    Ok(axum::Json(session(&st, user, rotated.token)?))
}

/// Ends the session the refresh token belongs to (any of its tokens will do); 204 also for a
/// token that names no session.
#[utoipa::path(post, path = "/api/users/logout", request_body = RefreshRequest, responses((status = 204)))]
pub(crate) async fn logout(
    State(st): State<ApiState>,
    Json(req): Json<RefreshRequest>,
) -> Result<StatusCode> {
    // The user's open chat and notification streams end too.
    if let Some(user) = sessions::end(&st, &req.refresh_token).await? {
        crate::cluster::broadcast(&st, crate::cluster::Event::EndStreams { user }).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/users/me", responses((status = 200, body = Me), (status = 401, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn me(State(st): State<ApiState>, user: AuthUser) -> Result<axum::Json<Me>> {
    let mut res = st
        .db
        .query("SELECT record::id(id) AS id, username, email, created_at FROM type::record('user', $id)")
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
        .query("SELECT record::id(id) AS id, username, created_at FROM type::record('user', $id)")
        .bind(("id", id.to_owned()))
        .await?;
    Ok(res.take(0)?)
}
