//! Limits every node of a cluster counts together, in Redis: a client switching nodes (or a
//! load balancer spreading its requests) gets no more than it would from one node. Each check is
//! one Lua script run atomically on the Redis server, on the server's clock (nodes' clocks may
//! differ). The same algorithms as the node-local ones: GCRA for login and registration
//! ([`crate::ratelimit`]), slow mode plus a sliding window for chat ([`crate::chat::room`]).
//!
//! Every function answers `None` when the node is alone or Redis did not answer: the caller then
//! counts on its own limiter (per node, as a node alone always did).

use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::Cluster;
use crate::ratelimit::{self, LoginRefusal, Rate, RetryAfter};

/// GCRA on one key: `ARGV` = interval µs, tolerance µs, mode (`check` counts, `peek` does not,
/// `tracked` asks whether the key has events on record). Returns 0 (allowed / not tracked),
/// 1 (tracked), or the µs to wait.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local stored = tonumber(redis.call('GET', KEYS[1]))
if ARGV[3] == 'tracked' then
  if stored and stored > now then return 1 end
  return 0
end
local tat = stored or now
if tat < now then tat = now end
local ahead = tat - now
if ahead > tolerance then return ahead - tolerance end
if ARGV[3] == 'check' then
  local new = tat + interval
  redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', string.format('%d', math.floor((new - now) / 1000) + 1))
end
return 0
";

/// Chat slow mode and rate limit for one user in one room. `KEYS[1]` = the user's recent send
/// times (ms, oldest first); `ARGV` = limit, window ms, slow-mode ms, moderator (1/0).
/// Returns `{0}` (sent, recorded), `{1, wait ms}` (slow mode), `{2, wait ms}` (rate limit).
const CHAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local slow = tonumber(ARGV[3])
local keep = math.max(window, slow)
while true do
  local first = redis.call('LINDEX', KEYS[1], 0)
  if not first or tonumber(first) > now - keep then break end
  redis.call('LPOP', KEYS[1])
end
if ARGV[4] == '0' and slow > 0 then
  local last = redis.call('LINDEX', KEYS[1], -1)
  if last and now - tonumber(last) < slow then return {1, slow - (now - tonumber(last))} end
end
local times = redis.call('LRANGE', KEYS[1], 0, -1)
local recent = 0
for _, v in ipairs(times) do
  if tonumber(v) > now - window then recent = recent + 1 end
end
if recent >= limit then return {2, window} end
redis.call('RPUSH', KEYS[1], now)
redis.call('PEXPIRE', KEYS[1], keep + 1000)
return {0}
";

static GCRA_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GCRA));
static CHAT_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(CHAT));

#[derive(Clone, Copy)]
enum Mode {
    Check,
    Peek,
    Tracked,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Check => "check",
            Mode::Peek => "peek",
            Mode::Tracked => "tracked",
        }
    }
}

/// What the shared GCRA answered: allowed (or not tracked) → `Ok(false)`, tracked → `Ok(true)`,
/// refused → `Err`.
async fn gcra(
    c: &Cluster,
    key: String,
    rate: Rate,
    mode: Mode,
) -> Option<Result<bool, RetryAfter>> {
    let link = c.link()?;
    if rate.count == 0 {
        return Some(Err(RetryAfter(rate.per)));
    }
    let interval = rate.per / rate.count;
    let tolerance = rate.per.saturating_sub(interval);
    let key = link.key(&key);
    let answer = link
        .run(|mut conn| async move {
            GCRA_SCRIPT
                .key(key)
                .arg(interval.as_micros() as u64)
                .arg(tolerance.as_micros() as u64)
                .arg(mode.as_str())
                .invoke_async::<i64>(&mut conn)
                .await
        })
        .await;
    match answer {
        Ok(0) => Some(Ok(false)),
        Ok(1) if matches!(mode, Mode::Tracked) => Some(Ok(true)),
        Ok(wait) => Some(Err(RetryAfter(Duration::from_micros(wait.max(1) as u64)))),
        Err(e) => {
            tracing::debug!(error = %e, "shared limit unavailable: counted on this node");
            None
        }
    }
}

/// Fixed-size, unguessable key for an account name (the cluster secret keys the hash, so every
/// node agrees and nobody outside can aim two names at one key).
fn account_key(c: &Cluster, parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    h.update((c.inner.secret.len() as u64).to_le_bytes());
    h.update(&c.inner.secret);
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(&h.finalize()[..16])
}

fn address(ip: IpAddr) -> String {
    ratelimit::address_key(ip).to_string()
}

/// The cluster's login limits (the same three as [`ratelimit::LoginLimiter`]): may `ip` try a
/// password for `account`? Counts the attempt for the address.
pub(crate) async fn login_begin(
    c: &Cluster,
    account: &str,
    ip: IpAddr,
) -> Option<Result<(), LoginRefusal>> {
    let addr = address(ip);
    let pair = account_key(c, &[account.as_bytes(), addr.as_bytes()]);
    let acct = account_key(c, &[account.as_bytes()]);
    let (pair_key, acct_key) = (format!("login:pair:{pair}"), format!("login:acct:{acct}"));
    if let Err(wait) = gcra(c, pair_key.clone(), ratelimit::LOGIN_PAIR_RATE, Mode::Peek).await? {
        return Some(Err(LoginRefusal::Account(wait)));
    }
    if let Err(wait) = gcra(c, acct_key, ratelimit::LOGIN_ACCOUNT_RATE, Mode::Peek).await? {
        if gcra(c, pair_key, ratelimit::LOGIN_PAIR_RATE, Mode::Tracked)
            .await?
            .unwrap_or(false)
        {
            return Some(Err(LoginRefusal::Account(wait)));
        }
    }
    Some(
        gcra(
            c,
            format!("login:addr:{addr}"),
            ratelimit::LOGIN_ADDRESS_RATE,
            Mode::Check,
        )
        .await?
        .map(|_| ())
        .map_err(LoginRefusal::Address),
    )
}

/// A wrong password (or no such account), counted cluster-wide; false when it could not be.
pub(crate) async fn login_failed(c: &Cluster, account: &str, ip: IpAddr) -> bool {
    let addr = address(ip);
    let pair = account_key(c, &[account.as_bytes(), addr.as_bytes()]);
    let acct = account_key(c, &[account.as_bytes()]);
    let a = gcra(
        c,
        format!("login:pair:{pair}"),
        ratelimit::LOGIN_PAIR_RATE,
        Mode::Check,
    )
    .await;
    let b = gcra(
        c,
        format!("login:acct:{acct}"),
        ratelimit::LOGIN_ACCOUNT_RATE,
        Mode::Check,
    )
    .await;
    a.is_some() && b.is_some()
}

/// One registration from `ip` at `rate`, counted cluster-wide.
pub(crate) async fn registration(
    c: &Cluster,
    ip: IpAddr,
    rate: Rate,
) -> Option<Result<(), RetryAfter>> {
    Some(
        gcra(c, format!("register:{}", address(ip)), rate, Mode::Check)
            .await?
            .map(|_| ()),
    )
}

/// One WHIP/WHEP session from `ip` at `rate`, counted cluster-wide.
pub async fn sessions(c: &Cluster, ip: IpAddr, rate: Rate) -> Option<Result<(), RetryAfter>> {
    Some(
        gcra(c, format!("sessions:{}", address(ip)), rate, Mode::Check)
            .await?
            .map(|_| ()),
    )
}

/// Why the cluster refused a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChatLimit {
    SlowMode,
    RateLimited,
}

/// One chat message from `user` in `room`: slow mode (unless a moderator) and the rate limit,
/// counted cluster-wide; recorded when allowed.
pub(crate) async fn chat_send(
    c: &Cluster,
    room: &str,
    user: &str,
    rate: (usize, Duration),
    slow: Duration,
    moderator: bool,
) -> Option<Result<(), ChatLimit>> {
    let link = c.link()?;
    let key = link.key(&format!("chat:rate:{room}:{user}"));
    let answer = link
        .run(|mut conn| async move {
            CHAT_SCRIPT
                .key(key)
                .arg(rate.0)
                .arg(rate.1.as_millis() as u64)
                .arg(slow.as_millis() as u64)
                .arg(if moderator { "1" } else { "0" })
                .invoke_async::<Vec<i64>>(&mut conn)
                .await
        })
        .await;
    match answer.ok()?.first() {
        Some(0) => Some(Ok(())),
        Some(1) => Some(Err(ChatLimit::SlowMode)),
        Some(_) => Some(Err(ChatLimit::RateLimited)),
        None => None,
    }
}
