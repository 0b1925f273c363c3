//! Rate limits keyed by client address or account: one GCRA (generic cell rate algorithm) state
//! per key, a hard cap on the keys tracked, the address key (IPv4 address, IPv6 /64), and the
//! login limiter built from three of them.
//!
//! Time is passed in (`now: Instant`), so tests need no sleeps.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Login attempts (right or wrong) from one address (IPv6: one /64), per
/// [`LOGIN_ADDRESS_WINDOW`].
pub const LOGIN_ATTEMPTS_PER_ADDRESS: u32 = 10;
pub const LOGIN_ADDRESS_WINDOW: Duration = Duration::from_secs(60);
/// Failed logins at one account from one address, per [`LOGIN_ACCOUNT_ADDRESS_WINDOW`]; beyond
/// it that address (only) is refused for that account.
pub const LOGIN_FAILURES_PER_ACCOUNT_ADDRESS: u32 = 5;
pub const LOGIN_ACCOUNT_ADDRESS_WINDOW: Duration = Duration::from_secs(5 * 60);
/// Failed logins at one account from all addresses together, per [`LOGIN_ACCOUNT_WINDOW`].
/// Beyond it the account is "under attack": addresses that have failed at it recently are
/// refused, while an address with no failures there (the owner's) may still log in.
pub const LOGIN_FAILURES_PER_ACCOUNT: u32 = 20;
pub const LOGIN_ACCOUNT_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The three login limits as rates (shared with the cluster's limiter).
pub const LOGIN_ADDRESS_RATE: Rate = Rate::new(LOGIN_ATTEMPTS_PER_ADDRESS, LOGIN_ADDRESS_WINDOW);
pub const LOGIN_PAIR_RATE: Rate = Rate::new(
    LOGIN_FAILURES_PER_ACCOUNT_ADDRESS,
    LOGIN_ACCOUNT_ADDRESS_WINDOW,
);
pub const LOGIN_ACCOUNT_RATE: Rate = Rate::new(LOGIN_FAILURES_PER_ACCOUNT, LOGIN_ACCOUNT_WINDOW);
/// Keys one limiter tracks at most. When full, the key closest to being forgotten anyway (the
/// one whose allowance refills first, i.e. the oldest activity) is evicted: memory stays bounded
/// even when every key is inside its window. ~100 bytes a key.
pub const MAX_TRACKED_KEYS: usize = 100_000;

/// `count` events per `per`, all of them allowed at once (burst = `count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    pub const fn new(count: u32, per: Duration) -> Self {
        Self { count, per }
    }

    /// Time one event uses up (GCRA's emission interval).
    fn interval(&self) -> Duration {
        self.per / self.count.max(1)
    }

    /// How far ahead of `now` the schedule may run (GCRA's tolerance): a burst of `count`.
    fn tolerance(&self) -> Duration {
        self.per.saturating_sub(self.interval())
    }
}

/// Refused: the next attempt is allowed after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

/// A GCRA per key, at most `max_keys` keys. The lock is held for map work only, never across
/// an await.
pub struct KeyedLimiter<K> {
    rate: Rate,
    max_keys: usize,
    inner: Mutex<Tracked<K>>,
}

/// Each key's theoretical arrival time (TAT), and the keys ordered by it so that idle ones
/// (TAT in the past) and, when full, the next to become idle are found at the front.
struct Tracked<K> {
    by_key: HashMap<K, (Instant, u64)>,
    by_tat: BTreeMap<(Instant, u64), K>,
    seq: u64,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        Self {
            rate,
            max_keys: max_keys.max(1),
            inner: Mutex::new(Tracked {
                by_key: HashMap::new(),
                by_tat: BTreeMap::new(),
                seq: 0,
            }),
        }
    }

    /// Count one event for `key` at `now`, or refuse it (and count nothing).
    pub fn check(&self, key: &K, now: Instant) -> Result<(), RetryAfter> {
        let mut t = self.lock();
        t.forget_idle(now);
        let tat = t.by_key.get(key).map_or(now, |(tat, _)| (*tat).max(now));
        self.allowed(tat, now)?;
        if !t.by_key.contains_key(key) && t.by_key.len() >= self.max_keys {
            t.evict_first();
        }
        t.set(key.clone(), tat + self.rate.interval());
        Ok(())
    }

    /// Would one more event for `key` be allowed at `now`? Counts nothing.
    pub fn peek(&self, key: &K, now: Instant) -> Result<(), RetryAfter> {
        let t = self.lock();
        match t.by_key.get(key) {
            Some((tat, _)) => self.allowed((*tat).max(now), now),
            None => Ok(()),
        }
    }

    /// Has `key` any event on record at `now` (its allowance is not full again yet)?
    pub fn is_tracked(&self, key: &K, now: Instant) -> bool {
        self.lock()
            .by_key
            .get(key)
            .is_some_and(|(tat, _)| *tat > now)
    }

    /// Keys held (idle ones included until the next check drops them).
    pub fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn allowed(&self, tat: Instant, now: Instant) -> Result<(), RetryAfter> {
        let ahead = tat.saturating_duration_since(now);
        let tolerance = self.rate.tolerance();
        if self.rate.count == 0 || ahead > tolerance {
            let wait = if self.rate.count == 0 {
                self.rate.per
            } else {
                ahead - tolerance
            };
            return Err(RetryAfter(wait));
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tracked<K>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<K: Hash + Eq + Clone> Tracked<K> {
    fn set(&mut self, key: K, tat: Instant) {
        if let Some(old) = self.by_key.get(&key) {
            self.by_tat.remove(&(old.0, old.1));
        }
        self.seq += 1;
        self.by_tat.insert((tat, self.seq), key.clone());
        self.by_key.insert(key, (tat, self.seq));
    }

    /// Keys whose allowance is full again carry no information: drop them (each once, so this
    /// is amortized constant time).
    fn forget_idle(&mut self, now: Instant) {
        while let Some(entry) = self.by_tat.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.by_key.remove(&key);
        }
    }

    fn evict_first(&mut self) {
        if let Some((_, key)) = self.by_tat.pop_first() {
            self.by_key.remove(&key);
        }
    }
}

/// The key a client address is limited by: an IPv4 address, or the /64 an IPv6 address is in
/// (one subscriber usually holds a whole /64). IPv4-mapped IPv6 counts as IPv4.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        },
    }
}

/// Why a login was refused before its password was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefusal {
    /// Too many attempts from this address, whatever the accounts.
    Address(RetryAfter),
    /// Too many failures at this account from this address (or the account is under attack
    /// and this address has failed at it).
    Account(RetryAfter),
}

/// Login limits: per address (every attempt), per account and address (failures), per account
/// (failures from anywhere; applies only to addresses that have failed there). So one address
/// cannot guess quickly, many addresses cannot either without each being slowed, and nobody
/// can lock the owner out from somewhere else.
pub struct LoginLimiter {
    per_address: KeyedLimiter<IpAddr>,
    per_account_address: KeyedLimiter<u64>,
    per_account: KeyedLimiter<u64>,
    /// Accounts are tracked by a keyed hash of their name: fixed-size keys, and a random key
    /// so nobody can make two accounts share a slot on purpose.
    hasher: RandomState,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        Self::new(MAX_TRACKED_KEYS)
    }
}

impl LoginLimiter {
    /// The default rates, each limiter holding at most `max_keys` keys.
    pub fn new(max_keys: usize) -> Self {
        Self {
            per_address: KeyedLimiter::new(
                Rate::new(LOGIN_ATTEMPTS_PER_ADDRESS, LOGIN_ADDRESS_WINDOW),
                max_keys,
            ),
            per_account_address: KeyedLimiter::new(
                Rate::new(
                    LOGIN_FAILURES_PER_ACCOUNT_ADDRESS,
                    LOGIN_ACCOUNT_ADDRESS_WINDOW,
                ),
                max_keys,
            ),
            per_account: KeyedLimiter::new(
                Rate::new(LOGIN_FAILURES_PER_ACCOUNT, LOGIN_ACCOUNT_WINDOW),
                max_keys,
            ),
            hasher: RandomState::new(),
        }
    }

    /// May `ip` try a password for `account` at `now`? Counts the attempt for the address.
    pub fn begin(&self, account: &str, ip: IpAddr, now: Instant) -> Result<(), LoginRefusal> {
        let ip = address_key(ip);
        let pair = self.hasher.hash_one((account, ip));
        let acct = self.hasher.hash_one(account);
        self.per_account_address
            .peek(&pair, now)
            .map_err(LoginRefusal::Account)?;
        if let Err(wait) = self.per_account.peek(&acct, now) {
            if self.per_account_address.is_tracked(&pair, now) {
                return Err(LoginRefusal::Account(wait));
            }
        }
        self.per_address
            .check(&ip, now)
            .map_err(LoginRefusal::Address)
    }

    /// The password was wrong (or the account does not exist).
    pub fn failed(&self, account: &str, ip: IpAddr, now: Instant) {
        let ip = address_key(ip);
        let _ = self
            .per_account_address
            .check(&self.hasher.hash_one((account, ip)), now);
        let _ = self.per_account.check(&self.hasher.hash_one(account), now);
    }

    /// Keys held by the largest of the three limiters.
    pub fn tracked_keys(&self) -> usize {
        self.per_address
            .len()
            .max(self.per_account_address.len())
            .max(self.per_account.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn burst_then_one_per_interval() {
        let l = KeyedLimiter::new(Rate::new(3, Duration::from_secs(30)), 10);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check(&1u8, t0).is_ok());
        }
        assert_eq!(
            l.check(&1, t0),
            Err(RetryAfter(Duration::from_secs(10))),
            "the 4th waits one interval"
        );
        assert!(l.check(&2, t0).is_ok(), "other keys are independent");
        assert!(l.check(&1, t0 + Duration::from_secs(9)).is_err());
        assert!(l.check(&1, t0 + Duration::from_secs(10)).is_ok());
        assert!(l.check(&1, t0 + Duration::from_secs(10)).is_err());
        assert!(l.peek(&1, t0 + Duration::from_secs(40)).is_ok());
        assert!(l.is_tracked(&1, t0 + Duration::from_secs(39)));
        assert!(!l.is_tracked(&1, t0 + Duration::from_secs(40)));
    }

    #[test]
    fn zero_rate_refuses_everything() {
        let l = KeyedLimiter::new(Rate::new(0, Duration::from_secs(60)), 10);
        assert_eq!(
            l.check(&1u8, Instant::now()),
            Err(RetryAfter(Duration::from_secs(60)))
        );
    }

    #[test]
    fn key_cap_holds_while_every_key_is_inside_its_window() {
        let l = KeyedLimiter::new(Rate::new(2, Duration::from_secs(60)), 100);
        let t0 = Instant::now();
        for k in 0..10_000u32 {
            // Every key stays inside its window: nothing is idle, yet the cap holds.
            let now = t0 + Duration::from_millis(u64::from(k));
            assert!(l.check(&k, now).is_ok());
            assert!(l.len() <= 100);
        }
        let now = t0 + Duration::from_millis(10_000);
        // The newest keys are kept, the oldest went first.
        assert!(l.is_tracked(&9_999, now));
        assert!(!l.is_tracked(&0, now));
        // Idle keys are dropped on the next check.
        let later = now + Duration::from_secs(61);
        assert!(l.check(&0, later).is_ok());
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn ipv6_is_keyed_by_its_64() {
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa::1")),
            address_key(ip("2001:db8:1:2:ffff:1:2:3"))
        );
        assert_ne!(
            address_key(ip("2001:db8:1:2::1")),
            address_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(address_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_ne!(address_key(ip("192.0.2.1")), address_key(ip("192.0.2.2")));
    }

    #[test]
    fn login_address_limit_covers_its_whole_64() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        for i in 0..LOGIN_ATTEMPTS_PER_ADDRESS {
            // A different account and host each time: still one /64.
            let from = ip(&format!("2001:db8::{:x}", i + 1));
            assert!(l.begin(&format!("user{i}"), from, t0).is_ok());
        }
        assert!(matches!(
            l.begin("other", ip("2001:db8::ffff"), t0),
            Err(LoginRefusal::Address(_))
        ));
        assert!(l.begin("other", ip("2001:db8:0:1::1"), t0).is_ok());
        assert!(l
            .begin("other", ip("2001:db8::ffff"), t0 + LOGIN_ADDRESS_WINDOW)
            .is_ok());
    }

    #[test]
    fn failures_at_an_account_block_that_address_only() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        let stranger = ip("198.51.100.7");
        let owner = ip("203.0.113.9");
        for _ in 0..LOGIN_FAILURES_PER_ACCOUNT_ADDRESS {
            assert!(l.begin("alice", stranger, t0).is_ok());
            l.failed("alice", stranger, t0);
        }
        assert!(matches!(
            l.begin("alice", stranger, t0),
            Err(LoginRefusal::Account(_))
        ));
        assert!(l.begin("bob", stranger, t0).is_ok(), "other accounts");
        assert!(l.begin("alice", owner, t0).is_ok(), "the owner elsewhere");
    }

    #[test]
    fn an_account_under_attack_still_admits_its_owner() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        // Many addresses fail at alice, each a few times (under the per-address limits).
        for n in 0..LOGIN_FAILURES_PER_ACCOUNT {
            let from = ip(&format!("198.51.100.{}", n + 1));
            assert!(l.begin("alice", from, t0).is_ok());
            l.failed("alice", from, t0);
        }
        // Now addresses that failed at alice must wait ...
        let attacker = ip("198.51.100.1");
        assert!(matches!(
            l.begin("alice", attacker, t0),
            Err(LoginRefusal::Account(_))
        ));
        // ... while the owner's address, with no failures there, gets in.
        assert!(l.begin("alice", ip("203.0.113.9"), t0).is_ok());
        // And it passes once the account's window has refilled.
        assert!(l
            .begin("alice", attacker, t0 + LOGIN_ACCOUNT_WINDOW)
            .is_ok());
    }

    #[test]
    fn login_limiter_memory_is_bounded() {
        let l = LoginLimiter::new(1_000);
        let t0 = Instant::now();
        for i in 0..20_000u32 {
            let from = IpAddr::from(i.to_be_bytes());
            let _ = l.begin(&format!("user{i}"), from, t0);
            l.failed(&format!("user{i}"), from, t0);
        }
        assert!(l.tracked_keys() <= 1_000, "{}", l.tracked_keys());
    }
}
