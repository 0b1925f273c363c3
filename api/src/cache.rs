//! A short-lived cache of stream-directory pages (`GET /api/streams`), the hottest read of a
//! live platform: every home page and category page asks it. Entries live `TTL` at most and are
//! dropped on every write that changes a stream (create, edit, live, viewer counts), so the
//! directory is never staler than a second and tests see their own writes. Misses are filled
//! one at a time (single flight), so an expiry under load costs one query, not one per request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;

pub const TTL: Duration = Duration::from_secs(1);
/// Distinct pages kept (query strings); beyond it the cache is cleared.
const MAX_ENTRIES: usize = 1024;

#[derive(Default)]
pub struct PageCache {
    entries: Mutex<HashMap<String, (Instant, Bytes)>>,
    fill: tokio::sync::Mutex<()>,
}

impl PageCache {
    pub fn get(&self, key: &str, now: Instant) -> Option<Bytes> {
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|(at, _)| now.saturating_duration_since(*at) < TTL)
            .map(|(_, b)| b.clone())
    }

    pub fn put(&self, key: String, now: Instant, body: Bytes) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(key, (now, body));
    }

    pub fn invalidate(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Held while one request fills a missing entry; others wait, then read the cache.
    pub async fn fill_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.fill.lock().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_and_invalidates() {
        let c = PageCache::default();
        let t0 = Instant::now();
        c.put("a".into(), t0, Bytes::from_static(b"x"));
        assert_eq!(c.get("a", t0 + TTL / 2).as_deref(), Some(&b"x"[..]));
        assert_eq!(c.get("a", t0 + TTL), None);
        c.put("a".into(), t0, Bytes::from_static(b"x"));
        c.invalidate();
        assert_eq!(c.get("a", t0), None);
    }
}
