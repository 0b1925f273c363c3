//! Fixed-window attempt counters for login: per client IP and per account, so neither one
//! address nor many addresses can guess one account's password quickly.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Attempts allowed per key per window.
pub const LOGIN_ATTEMPTS_PER_WINDOW: u32 = 10;
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Keys tracked before old windows are swept.
const MAX_KEYS: usize = 100_000;

#[derive(Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl RateLimiter {
    /// Count one attempt for `key` at `now`; false when over the limit. The lock is held for a
    /// map lookup only, never across an await.
    pub fn allow(&self, key: &str, now: Instant) -> bool {
        let mut map = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_KEYS {
            map.retain(|_, (start, _)| now.saturating_duration_since(*start) < LOGIN_WINDOW);
        }
        let entry = map.entry(key.to_owned()).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= LOGIN_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= LOGIN_ATTEMPTS_PER_WINDOW
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_limits_then_resets() {
        let r = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..LOGIN_ATTEMPTS_PER_WINDOW {
            assert!(r.allow("ip:1", t0));
        }
        assert!(!r.allow("ip:1", t0));
        assert!(r.allow("ip:2", t0), "other keys are independent");
        assert!(r.allow("ip:1", t0 + LOGIN_WINDOW), "a new window starts");
    }
}
