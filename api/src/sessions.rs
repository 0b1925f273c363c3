//! Login sessions as refresh-token families. Each login is one `refresh_token` row holding the
//! SHA-256 of its current token; the token handed out is `<row id>.<secret>`. A refresh swaps
//! the stored hash in one conditional `UPDATE` (`WHERE token_hash = $old`), and refreshes of one
//! session are serialized in this process first, so of parallel uses of one token exactly one
//! wins. Presenting any other token of the family (one that was already used: a copy exists)
//! revokes the whole session (reuse detection, RFC 9700 §4.14.2). A user keeps at most
//! [`MAX_SESSIONS_PER_USER`] sessions; expired rows are swept in bounded batches.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use surrealdb::types::SurrealValue;

use crate::auth::sha256_hex;
use crate::db::{new_id, now_ms};
use crate::error::{is_retryable, ApiError, Result};
use crate::ApiState;

/// Refresh tokens live this long from their issue (each refresh issues a new one), or until
/// logout.
pub const REFRESH_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Sessions (refresh-token families) one user keeps; logging in once more ends the one closest
/// to expiry.
pub const MAX_SESSIONS_PER_USER: usize = 50;
/// Expired sessions deleted per sweep.
pub const SWEEP_BATCH_ROWS: u32 = 1000;
/// A new session starts a sweep when the last one is at least this old.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// A refresh that loses a write conflict is retried this often (it then sees the winner's
/// write and counts as reuse).
const CONFLICT_RETRIES: usize = 5;
/// Locks refreshes are serialized on (a session's id picks one): bounded, never cleaned up.
const REFRESH_LOCK_STRIPES: usize = 64;

/// Session bookkeeping every handler shares.
pub struct Sessions {
    /// Sessions a user keeps (tests use small numbers).
    pub max_per_user: usize,
    last_sweep_ms: AtomicI64,
    /// Why these, on top of the conditional UPDATE: SurrealDB's embedded engines (surrealkv
    /// 0.9, also behind `mem://`) can let two conflicting transactions both commit when one
    /// is a retry racing the other's commit (seen: 2 winners in 4 of 200 rounds of 8). One
    /// server owns its data directory (`glint.lock`), so serializing here makes the swap
    /// exact; the guard is held across the one UPDATE on purpose, like a permit.
    stripes: Box<[tokio::sync::Mutex<()>]>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(MAX_SESSIONS_PER_USER)
    }
}

impl Sessions {
    pub fn new(max_per_user: usize) -> Self {
        Self {
            max_per_user: max_per_user.max(1),
            last_sweep_ms: AtomicI64::new(i64::MIN),
            stripes: (0..REFRESH_LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    /// The lock refreshes of session `id` take.
    fn stripe(&self, id: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(id);
        &self.stripes[(h % self.stripes.len() as u64) as usize]
    }

    /// Is a sweep due at `now_ms`? Claims it (one caller per interval).
    fn claim_sweep(&self, now_ms: i64) -> bool {
        let last = self.last_sweep_ms.load(Ordering::SeqCst);
        now_ms.saturating_sub(last) >= SWEEP_INTERVAL.as_millis() as i64
            && self
                .last_sweep_ms
                .compare_exchange(last, now_ms, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
    }
}

/// A new session for `user`: its first refresh token.
pub(crate) async fn start(st: &ApiState, user: &str) -> Result<String> {
    let id = new_id();
    let (secret, hash) = new_secret();
    let now = now_ms();
    st.db
        .query(
            "CREATE type::record('refresh_token', $id) SET user = $user, token_hash = $hash, expires_at = $exp; \
             LET $over = (SELECT id, expires_at FROM refresh_token WHERE user = $user ORDER BY expires_at DESC START $keep).id; \
             DELETE $over;",
        )
        .bind(("id", id.clone()))
        .bind(("user", user.to_owned()))
        .bind(("hash", hash))
        .bind(("exp", now + REFRESH_TOKEN_TTL.as_millis() as i64))
        .bind(("keep", st.accounts.sessions.max_per_user))
        .await?
        .check()?;
    if st.accounts.sessions.claim_sweep(now) {
        let st = st.clone();
        tokio::spawn(async move {
            match sweep(&st, now_ms(), SWEEP_BATCH_ROWS).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(sessions = n, "expired sessions swept"),
                Err(e) => tracing::warn!(error = %e, "sweeping expired sessions failed"),
            }
        });
    }
    Ok(format!("{id}.{secret}"))
}

/// What a refresh gave: the session's user and its next token.
pub(crate) struct Rotated {
    pub user: String,
    pub token: String,
}

/// Why a refresh was refused (all 401 to the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    Unknown,
    Expired,
    /// A used token came back: the session (user id) was revoked.
    Reused(String),
}

impl Refused {
    pub(crate) fn message(&self) -> &'static str {
        match self {
            Refused::Unknown => "unknown or revoked refresh token",
            Refused::Expired => "refresh token expired",
            Refused::Reused(_) => {
                "refresh token was already used; the session is revoked, log in again"
            }
        }
    }
}

#[derive(Deserialize, SurrealValue)]
struct Row {
    user: String,
    token_hash: String,
    expires_at: i64,
}

/// Exchange `token` for the session's next one, atomically.
pub(crate) async fn rotate(st: &ApiState, token: &str) -> Result<Result<Rotated, Refused>> {
    let Some((id, old_hash)) = family_of(st, token).await? else {
        return Ok(Err(Refused::Unknown));
    };
    let (secret, new_hash) = new_secret();
    let _serialized = st.accounts.sessions.stripe(&id).lock().await;
    for _ in 0..CONFLICT_RETRIES {
        let now = now_ms();
        let swapped: std::result::Result<Vec<Row>, surrealdb::Error> = async {
            st.db
                .query(
                    "UPDATE type::record('refresh_token', $id) SET token_hash = $new, expires_at = $exp \
                     WHERE token_hash = $old AND expires_at > $now RETURN BEFORE",
                )
                .bind(("id", id.clone()))
                .bind(("new", new_hash.clone()))
                .bind(("old", old_hash.clone()))
                .bind(("exp", now + REFRESH_TOKEN_TTL.as_millis() as i64))
                .bind(("now", now))
                .await?
                .take(0)
        }
        .await;
        let rows = match swapped {
            Err(e) if is_retryable(&e) => continue,
            other => other?,
        };
        if let Some(row) = rows.into_iter().next() {
            return Ok(Ok(Rotated {
                user: row.user,
                token: format!("{id}.{secret}"),
            }));
        }
        return refused(st, &id, &old_hash, now).await.map(Err);
    }
    Err(ApiError::Internal(format!(
        "refresh of session {id}: {CONFLICT_RETRIES} write conflicts in a row"
    )))
}

/// The token did not swap: say why, and end a session whose used token came back.
async fn refused(st: &ApiState, id: &str, presented: &str, now: i64) -> Result<Refused> {
    let mut res = st
        .db
        .query("SELECT user, token_hash, expires_at FROM type::record('refresh_token', $id)")
        .bind(("id", id.to_owned()))
        .await?;
    let row: Option<Row> = res.take(0)?;
    let Some(row) = row else {
        return Ok(Refused::Unknown);
    };
    let why = if row.token_hash == presented && row.expires_at <= now {
        Refused::Expired
    } else {
        tracing::warn!(user = %row.user, session = id, "a used refresh token came back: session revoked");
        Refused::Reused(row.user)
    };
    delete(st, id).await?;
    Ok(why)
}

/// End the session `token` belongs to (any of its tokens, current or used); its user, if it
/// existed.
pub(crate) async fn end(st: &ApiState, token: &str) -> Result<Option<String>> {
    let Some((id, _)) = family_of(st, token).await? else {
        return Ok(None);
    };
    delete(st, &id).await
}

/// Delete up to `limit` sessions that expired before `now_ms`; how many.
pub async fn sweep(st: &ApiState, now_ms: i64, limit: u32) -> Result<usize> {
    let mut res = st
        .db
        .query(
            "LET $ids = (SELECT VALUE id FROM refresh_token WHERE expires_at < $now LIMIT $n); \
             DELETE $ids; \
             RETURN array::len($ids);",
        )
        .bind(("now", now_ms))
        .bind(("n", limit))
        .await?;
    let n: Option<usize> = res.take(2)?;
    Ok(n.unwrap_or(0))
}

async fn delete(st: &ApiState, id: &str) -> Result<Option<String>> {
    let mut res = st
        .db
        .query("DELETE type::record('refresh_token', $id) RETURN BEFORE")
        .bind(("id", id.to_owned()))
        .await?;
    let rows: Vec<Row> = res.take(0)?;
    Ok(rows.into_iter().next().map(|r| r.user))
}

/// The session a token names and the hash it presents: `<id>.<secret>`, or a token from
/// before families (the whole token hashed), looked up by its hash.
async fn family_of(st: &ApiState, token: &str) -> Result<Option<(String, String)>> {
    match parse(token) {
        Some(Presented::Family { id, secret }) => Ok(Some((id.to_owned(), sha256_hex(secret)))),
        Some(Presented::Legacy(token)) => {
            let hash = sha256_hex(token);
            let mut res = st
                .db
                .query("SELECT VALUE record::id(id) FROM refresh_token WHERE token_hash = $hash LIMIT 1")
                .bind(("hash", hash.clone()))
                .await?;
            let ids: Vec<String> = res.take(0)?;
            Ok(ids.into_iter().next().map(|id| (id, hash)))
        }
        None => Ok(None),
    }
}

enum Presented<'a> {
    Family { id: &'a str, secret: &'a str },
    Legacy(&'a str),
}

/// Well-formed tokens only: 43 base64url characters (32 random bytes), with a record id (see
/// `db::new_id`) in front for families.
fn parse(token: &str) -> Option<Presented<'_>> {
    let secret_ok = |s: &str| {
        s.len() == 43
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    match token.trim().split_once('.') {
        Some((id, secret)) => (crate::validate::id(id).is_ok() && secret_ok(secret))
            .then_some(Presented::Family { id, secret }),
        None => secret_ok(token.trim()).then_some(Presented::Legacy(token.trim())),
    }
}

/// A new secret (for the client) and its hash (stored).
fn new_secret() -> (String, String) {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = sha256_hex(&secret);
    (secret, hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_parsed_strictly() {
        let (secret, _) = new_secret();
        let id = new_id();
        assert!(matches!(
            parse(&format!("{id}.{secret}")),
            Some(Presented::Family { .. })
        ));
        assert!(matches!(parse(&secret), Some(Presented::Legacy(_))));
        assert!(parse(&format!("user:x.{secret}")).is_none());
        assert!(parse(&format!("{id}.short")).is_none());
        assert!(parse("").is_none());
        assert!(parse(&format!("{id}.{}", "\0".repeat(43))).is_none());
    }

    #[test]
    fn one_sweep_per_interval() {
        let s = Sessions::default();
        assert!(s.claim_sweep(1_000));
        assert!(!s.claim_sweep(1_000 + 59_999));
        assert!(s.claim_sweep(1_000 + 60_000));
    }
}
