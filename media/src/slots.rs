//! Connection slots per client address and in total, given back when a connection drops its
//! [`Slot`] — the RTMP listener's (before `publish`) and the HTTP server's — and what counts as
//! one client address for every per-address limit ([`address_key`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The unit per-address limits count: an IPv4 address, an IPv6 /64 (what one subscriber is
/// usually given, so one host cannot take a fresh address per request); IPv4-mapped IPv6
/// counts as IPv4.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// Why a connection got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlotRefused {
    #[error("too many connections from this address")]
    PerAddress,
    #[error("too many connections")]
    Total,
}

/// Counts connections per address and in total.
#[derive(Debug, Clone)]
pub struct Slots {
    inner: Arc<Mutex<Counts>>,
    max_total: usize,
    max_per_address: usize,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// A connection's place; given back on drop.
#[derive(Debug)]
pub struct Slot {
    slots: Slots,
    address: IpAddr,
}

impl Slots {
    /// At most `max_total` slots, `max_per_address` of them for one address (0: no
    /// per-address limit).
    pub fn new(max_total: usize, max_per_address: usize) -> Self {
        Self {
            inner: Arc::default(),
            max_total,
            max_per_address: if max_per_address == 0 {
                usize::MAX
            } else {
                max_per_address
            },
        }
    }

    /// A slot for a connection from `ip`, if both caps allow.
    pub fn try_acquire(&self, ip: IpAddr) -> Result<Slot, SlotRefused> {
        let address = address_key(ip);
        let mut c = self.lock();
        if c.total >= self.max_total {
            return Err(SlotRefused::Total);
        }
        let n = c.by_address.entry(address).or_default();
        if *n >= self.max_per_address {
            return Err(SlotRefused::PerAddress);
        }
        *n += 1;
        c.total += 1;
        Ok(Slot {
            slots: self.clone(),
            address,
        })
    }

    /// Connections holding a slot.
    pub fn in_use(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent even if a holder panicked: every update is one step.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.slots.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                c.by_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_cap_and_release() {
        let slots = Slots::new(100, 2);
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let one = slots.try_acquire(a).unwrap();
        let _two = slots.try_acquire(a).unwrap();
        assert_eq!(slots.try_acquire(a).unwrap_err(), SlotRefused::PerAddress);
        // Another address is not affected; the same one as IPv4-mapped IPv6 is.
        let _other = slots.try_acquire("203.0.113.2".parse().unwrap()).unwrap();
        assert_eq!(
            slots
                .try_acquire("::ffff:203.0.113.1".parse().unwrap())
                .unwrap_err(),
            SlotRefused::PerAddress
        );
        drop(one);
        let _again = slots.try_acquire(a).expect("a dropped slot is given back");
        assert_eq!(slots.in_use(), 3);
    }

    #[test]
    fn an_ipv6_64_is_one_address() {
        let slots = Slots::new(100, 2);
        let _a = slots
            .try_acquire("2001:db8:1:2::1".parse().unwrap())
            .unwrap();
        let _b = slots
            .try_acquire("2001:db8:1:2:ffff::9".parse().unwrap())
            .unwrap();
        assert_eq!(
            slots
                .try_acquire("2001:db8:1:2:abcd::1".parse().unwrap())
                .unwrap_err(),
            SlotRefused::PerAddress
        );
        assert!(slots
            .try_acquire("2001:db8:1:3::1".parse().unwrap())
            .is_ok());
    }

    #[test]
    fn total_cap() {
        let slots = Slots::new(3, 8);
        let held: Vec<_> = (1..=3u8)
            .map(|i| slots.try_acquire(IpAddr::from([198, 51, 100, i])).unwrap())
            .collect();
        assert_eq!(
            slots
                .try_acquire(IpAddr::from([198, 51, 100, 9]))
                .unwrap_err(),
            SlotRefused::Total
        );
        drop(held);
        assert_eq!(slots.in_use(), 0);
        assert!(slots.inner.lock().unwrap().by_address.is_empty());
    }
}
