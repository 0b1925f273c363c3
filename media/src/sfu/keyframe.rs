//! Coalescing keyframe requests: many viewers asking at once cost the publisher a few PLIs.
//!
//! A joining viewer, or a viewer's own PLI/FIR, calls [`KeyframeRequests::request`]. The first
//! request sends a PLI (RFC 4585 §6.3.1) at once; later ones within `min_interval` only mark a
//! keyframe as wanted. If the interval passes and no keyframe has arrived, one more PLI goes out
//! (the first may have been lost). A keyframe arriving clears the want. So a burst of 1,000
//! joins over one second costs about 1 s / min_interval PLIs, not 1,000.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct KeyframeRequests {
    min_interval: Duration,
    last_pli: Option<Instant>,
    wanted: bool,
}

impl KeyframeRequests {
    pub fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            last_pli: None,
            wanted: false,
        }
    }

    /// Someone wants a keyframe. Returns true when a PLI should be sent now.
    pub fn request(&mut self, now: Instant) -> bool {
        self.wanted = true;
        self.poll(now)
    }

    /// A keyframe arrived from the publisher: every pending request is satisfied.
    pub fn keyframe_arrived(&mut self) {
        self.wanted = false;
    }

    /// Called at [`Self::deadline`]: true when a (repeat) PLI should be sent now.
    pub fn poll(&mut self, now: Instant) -> bool {
        if !self.wanted {
            return false;
        }
        let due = match self.last_pli {
            None => true,
            Some(last) => now.saturating_duration_since(last) >= self.min_interval,
        };
        if due {
            self.last_pli = Some(now);
        }
        due
    }

    /// When [`Self::poll`] may next return true.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.wanted, self.last_pli) {
            (true, Some(last)) => Some(last + self.min_interval),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GAP: Duration = Duration::from_millis(300);

    #[test]
    fn thousand_joins_in_a_second_cost_a_handful_of_plis() {
        let start = Instant::now();
        let mut k = KeyframeRequests::new(GAP);
        let mut plis = 0;
        for i in 0..1000u64 {
            let now = start + Duration::from_millis(i);
            if let Some(d) = k.deadline() {
                if d <= now && k.poll(now) {
                    plis += 1;
                }
            }
            if k.request(now) {
                plis += 1;
            }
        }
        // No keyframe ever arrives: one PLI per interval, 0 ms, 300, 600, 900.
        assert_eq!(plis, 4);
    }

    #[test]
    fn keyframe_clears_the_want_and_a_later_request_waits_for_the_interval() {
        let t0 = Instant::now();
        let mut k = KeyframeRequests::new(GAP);
        assert!(k.request(t0));
        assert!(!k.request(t0 + Duration::from_millis(10)));
        k.keyframe_arrived();
        assert_eq!(k.deadline(), None);
        assert!(!k.poll(t0 + Duration::from_secs(5)));
        // New request 100 ms after the first PLI: merged, repeated at 300 ms.
        assert!(!k.request(t0 + Duration::from_millis(100)));
        assert_eq!(k.deadline(), Some(t0 + GAP));
        assert!(k.poll(t0 + GAP));
        // Long after, a request goes out at once.
        k.keyframe_arrived();
        assert!(k.request(t0 + Duration::from_secs(10)));
    }
}
