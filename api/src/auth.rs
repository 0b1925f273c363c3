//! Passwords (argon2id, through the [`HashGate`]), access tokens (JWT, HS256, short-lived), and
//! the `AuthUser` extractor. Refresh tokens are in `sessions`.

use std::time::Duration;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::{decode, encode, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, Result};
use crate::hash_gate::HashGate;
use crate::ApiState;

/// Access tokens live this long; clients refresh with their refresh token.
pub const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// OWASP Password Storage Cheat Sheet: argon2id, m = 19 MiB, t = 2, p = 1.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hash a password on the blocking pool, through `gate` (tens of milliseconds of CPU, 19 MiB).
pub async fn hash_password(gate: &HashGate, password: String) -> Result<String> {
    gate.run(move || {
        let salt = SaltString::generate(&mut OsRng);
        argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await?
    .map_err(|e| ApiError::Internal(e.to_string()))
}

/// Verify on the blocking pool, through `gate`. A missing user is checked against a dummy hash
/// so that "no such user" and "wrong password" take the same time.
pub async fn verify_password(
    gate: &HashGate,
    password: String,
    hash: Option<String>,
) -> Result<bool> {
    gate.run(move || {
        let (hash, real) = match hash {
            Some(h) => (h, true),
            None => (dummy_hash().to_owned(), false),
        };
        let parsed = PasswordHash::new(&hash).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
            && real)
    })
    .await?
}

fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        argon2()
            .hash_password(b"glint-dummy-password", &salt)
            .expect("hash")
            .to_string()
    })
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    iat: u64,
}

/// Signing keys for access tokens, and how long the tokens they sign live.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: Duration,
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl: ACCESS_TOKEN_TTL,
        }
    }

    /// Tokens signed from now on live `ttl` (whole seconds, at least one).
    pub fn set_ttl(&mut self, ttl: Duration) {
        self.ttl = ttl.max(Duration::from_secs(1));
    }

    /// How long a new access token lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn issue(&self, user_id: &str) -> Result<String> {
        let now = crate::db::now_ms() as u64 / 1000;
        let claims = Claims {
            sub: user_id.to_owned(),
            iat: now,
            exp: now + self.ttl.as_secs(),
        };
        encode(&Header::default(), &claims, &self.encoding)
            .map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// The user id of a valid, unexpired token.
    pub fn verify(&self, token: &str) -> Result<String> {
        Ok(self.decode(token)?.id)
    }

    /// The caller a valid, unexpired token names. Expired means expired: no leeway (one server
    /// or a few sharing a clock issue and check them), so a stream closed at the token's expiry
    /// cannot be reopened with the same token.
    fn decode(&self, token: &str) -> Result<AuthUser> {
        let mut validation = Validation::default();
        validation.leeway = 0;
        let refused = || ApiError::Unauthorized("invalid or expired access token");
        let data = decode::<Claims>(token, &self.decoding, &validation).map_err(|_| refused())?;
        let expires_at_ms = i64::try_from(data.claims.exp.saturating_mul(1000)).unwrap_or(i64::MAX);
        // The JWT check has one-second resolution (`exp < now`); a stream closes at the
        // millisecond, so the token is refused from that millisecond on.
        if expires_at_ms <= crate::db::now_ms() {
            return Err(refused());
        }
        Ok(AuthUser {
            id: data.claims.sub,
            expires_at_ms,
        })
    }
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// The caller, from `Authorization: Bearer <access token>`. A `?access_token=` in the URL is
/// ignored here: URLs end up in logs (ours, proxies', browsers' history). Only the two routes a
/// browser cannot give a header, EventSource and WebSocket, take it, through [`StreamUser`].
pub struct AuthUser {
    pub id: String,
    /// When the token expires (Unix ms): streams opened with it end then.
    pub expires_at_ms: i64,
}

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
}

fn url_token(parts: &Parts) -> Option<&str> {
    parts
        .uri
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("access_token="))
}

/// Did the request come with a token, in the header or (stream routes) the URL?
pub(crate) fn has_stream_token(parts: &Parts) -> bool {
    parts
        .headers
        .contains_key(axum::http::header::AUTHORIZATION)
        || url_token(parts).is_some()
}

impl FromRequestParts<ApiState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized("an access token is required"))?;
        state.keys.decode(token.trim())
    }
}

/// The caller of a streaming route (notification SSE, chat WebSocket): the bearer header, or
/// `?access_token=` for browsers, whose EventSource and WebSocket cannot set headers.
pub struct StreamUser(pub AuthUser);

impl FromRequestParts<ApiState> for StreamUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)
            .or_else(|| url_token(parts))
            .ok_or(ApiError::Unauthorized("an access token is required"))?;
        Ok(StreamUser(state.keys.decode(token.trim())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let gate = HashGate::default();
        let hash = hash_password(&gate, "correct horse".into()).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            verify_password(&gate, "correct horse".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(!verify_password(&gate, "wrong".into(), Some(hash))
            .await
            .unwrap());
        assert!(!verify_password(&gate, "anything".into(), None)
            .await
            .unwrap());
        assert_eq!(gate.started(), 4);
    }

    #[test]
    fn jwt_round_trip_and_tamper() {
        let keys = JwtKeys::new(b"secret-secret-secret-secret-1234");
        let token = keys.issue("abc").unwrap();
        assert_eq!(keys.verify(&token).unwrap(), "abc");
        let other = JwtKeys::new(b"another-secret-another-secret-12");
        assert!(other.verify(&token).is_err());
        assert!(keys.verify("not.a.jwt").is_err());
    }

    #[test]
    fn the_token_carries_its_expiry_and_an_expired_one_is_refused() {
        let mut keys = JwtKeys::new(b"secret-secret-secret-secret-1234");
        keys.set_ttl(Duration::from_secs(120));
        let before = crate::db::now_ms();
        let user = keys.decode(&keys.issue("abc").unwrap()).unwrap();
        let left = user.expires_at_ms - before;
        assert!((119_000..=120_000).contains(&left), "{left} ms");
        let now = crate::db::now_ms() as u64 / 1000;
        let expired = encode(
            &Header::default(),
            &Claims {
                sub: "abc".into(),
                iat: now - 10,
                exp: now - 1,
            },
            &keys.encoding,
        )
        .unwrap();
        assert!(keys.verify(&expired).is_err(), "no leeway");
    }
}
