//! Who watches over HLS. HLS players are plain HTTP clients that fetch a media playlist every
//! target duration, so a viewer is estimated as a distinct client (address + User-Agent) that
//! fetched one of the stream's media playlists within [`WINDOW`]. Players behind a CDN are not
//! seen here (the CDN answers them); the count is then the CDN's own requests.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A client counts as watching this long after its last playlist request.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Clients remembered per stream, at most (a flood of fake clients cannot grow memory).
const MAX_CLIENTS: usize = 100_000;

#[derive(Default)]
pub struct HlsAudience {
    streams: Mutex<HashMap<String, HashMap<u64, Instant>>>,
    /// Every client seen since each live stream's broadcast began (unique viewers).
    broadcasts: Mutex<HashMap<String, HashSet<u64>>>,
}

fn client_key(ip: IpAddr, user_agent: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ip.hash(&mut h);
    user_agent.hash(&mut h);
    h.finish()
}

impl HlsAudience {
    /// A client fetched a media playlist of `stream`.
    pub fn seen(&self, stream: &str, ip: IpAddr, user_agent: &str, now: Instant) {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let clients = streams.entry(stream.to_owned()).or_default();
        if clients.len() >= MAX_CLIENTS {
            clients.retain(|_, t| now.duration_since(*t) < WINDOW);
            if clients.len() >= MAX_CLIENTS {
                return;
            }
        }
        let key = client_key(ip, user_agent);
        clients.insert(key, now);
        drop(streams);
        let mut broadcasts = self.broadcasts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(seen) = broadcasts.get_mut(stream) {
            if seen.len() < MAX_CLIENTS {
                seen.insert(key);
            }
        }
    }

    /// `stream` went on air: count its unique viewers from now.
    pub fn begin_broadcast(&self, stream: &str) {
        let mut broadcasts = self.broadcasts.lock().unwrap_or_else(|e| e.into_inner());
        broadcasts.insert(stream.to_owned(), HashSet::new());
    }

    /// `stream` went off air.
    pub fn end_broadcast(&self, stream: &str) {
        let mut broadcasts = self.broadcasts.lock().unwrap_or_else(|e| e.into_inner());
        broadcasts.remove(stream);
    }

    /// Distinct HLS clients of `stream` since its broadcast began.
    pub fn unique(&self, stream: &str) -> usize {
        let broadcasts = self.broadcasts.lock().unwrap_or_else(|e| e.into_inner());
        broadcasts.get(stream).map_or(0, HashSet::len)
    }

    /// HLS viewers of `stream` now.
    pub fn count(&self, stream: &str, now: Instant) -> usize {
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams.get(stream).map_or(0, |c| {
            c.values()
                .filter(|t| now.duration_since(**t) < WINDOW)
                .count()
        })
    }

    /// Forget clients gone quiet (called with the viewer-count tick).
    pub fn prune(&self, now: Instant) {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams.retain(|_, c| {
            c.retain(|_, t| now.duration_since(*t) < WINDOW);
            !c.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_recent_clients_are_counted() {
        let a = HlsAudience::default();
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        a.seen("demo", ip, "hls.js", t0);
        a.seen("demo", ip, "hls.js", t0 + Duration::from_secs(2)); // the same player again
        a.seen("demo", ip, "Safari", t0 + Duration::from_secs(2));
        a.seen("demo", "192.0.2.2".parse().unwrap(), "hls.js", t0);
        a.seen("other", ip, "hls.js", t0);
        assert_eq!(a.count("demo", t0 + Duration::from_secs(3)), 3);
        // 11 s later only the two that came back at t0 + 2 s... are gone too.
        assert_eq!(a.count("demo", t0 + Duration::from_secs(11)), 2);
        assert_eq!(a.count("demo", t0 + Duration::from_secs(13)), 0);
        a.prune(t0 + Duration::from_secs(13));
        assert_eq!(a.count("nobody", t0), 0);
    }

    #[test]
    fn unique_clients_per_broadcast() {
        let a = HlsAudience::default();
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        a.seen("demo", ip, "before", t0); // not on air yet
        a.begin_broadcast("demo");
        for s in 0..30 {
            a.seen("demo", ip, "hls.js", t0 + Duration::from_secs(s)); // one player, 30 reloads
        }
        a.seen("demo", ip, "Safari", t0);
        a.seen("other", ip, "Safari", t0);
        a.prune(t0 + Duration::from_secs(60)); // pruning the window keeps the broadcast's set
        assert_eq!(a.unique("demo"), 2);
        assert_eq!(a.unique("other"), 0);
        a.end_broadcast("demo");
        assert_eq!(a.unique("demo"), 0);
    }
}
