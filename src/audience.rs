//! Who watches over HLS. HLS players are plain HTTP clients that fetch a media playlist every
//! target duration, so a viewer is estimated as a distinct client (address + User-Agent) that
//! fetched one of the stream's media playlists within [`WINDOW`]. One address (an IPv6 /64)
//! counts as at most [`MAX_PER_ADDRESS`] viewers, however many User-Agents it sends, so a
//! script cannot inflate a count by varying the header. Players behind a CDN are not seen here
//! (the CDN answers them); the count is then the CDN's own requests.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A client counts as watching this long after its last playlist request.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Viewers one address may count for (a household or office behind one NAT).
pub const MAX_PER_ADDRESS: usize = 4;
/// Addresses remembered per stream, at most (a flood of fake clients cannot grow memory).
const MAX_ADDRESSES: usize = 100_000;

/// One address's players of one stream: User-Agent hash and last request.
type Players = Vec<(u64, Instant)>;

#[derive(Default)]
pub struct HlsAudience {
    streams: Mutex<HashMap<String, HashMap<IpAddr, Players>>>,
    /// Every client seen since each live stream's broadcast began (unique viewers), per
    /// address, at most [`MAX_PER_ADDRESS`] each.
    broadcasts: Mutex<HashMap<String, HashMap<IpAddr, HashSet<u64>>>>,
}

fn ua_key(user_agent: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    user_agent.hash(&mut h);
    h.finish()
}

impl HlsAudience {
    /// A client fetched a media playlist of `stream`.
    pub fn seen(&self, stream: &str, ip: IpAddr, user_agent: &str, now: Instant) {
        let addr = media::slots::address_key(ip);
        let ua = ua_key(user_agent);
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let clients = streams.entry(stream.to_owned()).or_default();
        if clients.len() >= MAX_ADDRESSES && !clients.contains_key(&addr) {
            return; // the periodic prune makes room again
        }
        let players = clients.entry(addr).or_default();
        if let Some(p) = players.iter_mut().find(|(k, _)| *k == ua) {
            p.1 = now;
        } else if players.len() < MAX_PER_ADDRESS {
            players.push((ua, now));
        } else if let Some(oldest) = players.iter_mut().min_by_key(|(_, t)| *t) {
            // Over the cap, the newest takes the oldest's place: still MAX_PER_ADDRESS.
            *oldest = (ua, now);
        }
        drop(streams);
        let mut broadcasts = self.broadcasts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(seen) = broadcasts.get_mut(stream) {
            if seen.len() < MAX_ADDRESSES || seen.contains_key(&addr) {
                let uas = seen.entry(addr).or_default();
                if uas.len() < MAX_PER_ADDRESS {
                    uas.insert(ua);
                }
            }
        }
    }

    /// `stream` went on air: count its unique viewers from now.
    pub fn begin_broadcast(&self, stream: &str) {
        let mut broadcasts = self.broadcasts.lock().unwrap_or_else(|e| e.into_inner());
        broadcasts.insert(stream.to_owned(), HashMap::new());
    }

    /// `stream` went off air.
    pub fn end_broadcast(&self, stream: &str) {
        let mut broadcasts = self.broadcasts.lock().unwrap_or_else(|e| e.into_inner());
        broadcasts.remove(stream);
    }

    /// Distinct HLS clients of `stream` since its broadcast began.
    pub fn unique(&self, stream: &str) -> usize {
        let broadcasts = self.broadcasts.lock().unwrap_or_else(|e| e.into_inner());
        broadcasts
            .get(stream)
            .map_or(0, |a| a.values().map(HashSet::len).sum())
    }

    /// HLS viewers of `stream` now.
    pub fn count(&self, stream: &str, now: Instant) -> usize {
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams.get(stream).map_or(0, |c| {
            c.values()
                .flat_map(|players| players.iter())
                .filter(|(_, t)| now.saturating_duration_since(*t) < WINDOW)
                .count()
        })
    }

    /// HLS viewers now of every stream that has some.
    pub fn counts(&self, now: Instant) -> std::collections::BTreeMap<String, usize> {
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams
            .iter()
            .map(|(name, c)| {
                let n = c
                    .values()
                    .flat_map(|players| players.iter())
                    .filter(|(_, t)| now.saturating_duration_since(*t) < WINDOW)
                    .count();
                (name.clone(), n)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Forget clients gone quiet (called with the viewer-count tick).
    pub fn prune(&self, now: Instant) {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams.retain(|_, c| {
            c.retain(|_, players| {
                players.retain(|(_, t)| now.saturating_duration_since(*t) < WINDOW);
                !players.is_empty()
            });
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
    fn one_address_cannot_inflate_the_count_by_varying_its_user_agent() {
        let a = HlsAudience::default();
        let t0 = Instant::now();
        a.begin_broadcast("demo");
        for i in 0..1000 {
            a.seen(
                "demo",
                "192.0.2.1".parse().unwrap(),
                &format!("bot/{i}"),
                t0,
            );
            // An IPv6 host picking a new address of its /64 each time is one address.
            a.seen(
                "demo",
                format!("2001:db8:0:1::{i:x}").parse().unwrap(),
                &format!("bot/{i}"),
                t0,
            );
        }
        assert_eq!(a.count("demo", t0), 2 * MAX_PER_ADDRESS);
        assert_eq!(a.unique("demo"), 2 * MAX_PER_ADDRESS);
        // Other addresses still count.
        a.seen("demo", "192.0.2.2".parse().unwrap(), "hls.js", t0);
        assert_eq!(a.count("demo", t0), 2 * MAX_PER_ADDRESS + 1);
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
