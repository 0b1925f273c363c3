//! How fast one client address may create WHIP/WHEP sessions: a token bucket per address
//! (IPv6 by /64), in bounded memory. How many sessions it may *hold* is the media core's
//! per-address limit; this one stops a script from churning offers (each costs a DTLS
//! certificate fingerprint check, an SDP parse and a peer connection).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Defaults: a burst of 20 session requests, then 2 per second, per address.
pub const DEFAULT_SESSION_BURST: u32 = 20;
pub const DEFAULT_SESSIONS_PER_SEC: f64 = 2.0;
/// Addresses tracked at most; when full, buckets that are full again (idle) are forgotten,
/// and if that frees less than a quarter, the older half (so a flood of fresh addresses costs
/// amortized O(log n) per request, not a scan each).
const MAX_ADDRESSES: usize = 65_536;

/// The session-creation rate counted with other servers (a cluster): `None` when it cannot be
/// (no cluster, or its store is away) and [`SessionRate`] decides alone.
pub type SharedTake<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<Result<(), Duration>>> + Send + 'a>>;

pub trait SharedSessionRate: Send + Sync + 'static {
    fn take<'a>(&'a self, addr: IpAddr) -> SharedTake<'a>;
}

/// Session-creation rate per client address.
#[derive(Debug)]
pub struct SessionRate {
    burst: f64,
    per_sec: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Default for SessionRate {
    fn default() -> Self {
        Self::new(DEFAULT_SESSION_BURST, DEFAULT_SESSIONS_PER_SEC)
    }
}

impl SessionRate {
    /// `burst` requests at once, refilled at `per_sec`; a burst of 0 turns the limit off.
    pub fn new(burst: u32, per_sec: f64) -> Self {
        Self {
            burst: f64::from(burst),
            per_sec: per_sec.max(0.001),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one request for `addr` at `now`: `Err(wait)` when it must wait that long first.
    pub fn take(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.burst == 0.0 {
            return Ok(());
        }
        let key = media::slots::address_key(addr);
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&key) {
            self.forget_idle(&mut map, now);
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_sec).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_sec))
        }
    }

    fn forget_idle(&self, map: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        let full_after = Duration::from_secs_f64(self.burst / self.per_sec);
        map.retain(|_, b| now.saturating_duration_since(b.at) < full_after);
        if map.len() > MAX_ADDRESSES / 4 * 3 {
            let mut times: Vec<Instant> = map.values().map(|b| b.at).collect();
            let mid = times.len() / 2;
            let (_, median, _) = times.select_nth_unstable(mid);
            let median = *median;
            map.retain(|_, b| b.at > median);
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_refill_rate() {
        let r = SessionRate::new(3, 1.0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(r.take(a, t0).is_ok());
        }
        let wait = r.take(a, t0).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        assert!(
            r.take("192.0.2.2".parse().unwrap(), t0).is_ok(),
            "others unaffected"
        );
        assert!(r.take(a, t0 + Duration::from_secs(1)).is_ok(), "refilled");
        assert!(r.take(a, t0 + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn ipv6_addresses_of_one_prefix_share_a_bucket() {
        let r = SessionRate::new(2, 1.0);
        let t0 = Instant::now();
        assert!(r.take("2001:db8:1:2::1".parse().unwrap(), t0).is_ok());
        assert!(r.take("2001:db8:1:2::ffff".parse().unwrap(), t0).is_ok());
        assert!(r.take("2001:db8:1:2:abcd::9".parse().unwrap(), t0).is_err());
        assert!(r.take("2001:db8:1:3::1".parse().unwrap(), t0).is_ok());
    }

    #[test]
    fn memory_is_bounded() {
        let r = SessionRate::new(5, 1.0);
        let t0 = Instant::now();
        for i in 0..(MAX_ADDRESSES as u32 + 1000) {
            let _ = r.take(IpAddr::V4(std::net::Ipv4Addr::from(i)), t0);
        }
        assert!(r.tracked() <= MAX_ADDRESSES);
    }

    #[test]
    fn zero_burst_is_off() {
        let r = SessionRate::new(0, 1.0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..100 {
            assert!(r.take(a, Instant::now()).is_ok());
        }
    }
}
