//! The gate in front of password hashing: at most N argon2 computations at once (each holds
//! 19 MiB), a bounded queue of callers waiting for one, "busy" beyond it. Work runs on the
//! blocking pool, and its permit goes with it, so a caller that gives up (timeout, closed
//! connection) does not free a slot its computation still uses.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

/// Callers that may wait for a slot, per slot.
pub const HASH_QUEUE_PER_SLOT: usize = 16;
/// What a caller turned away is told to wait (a hash takes tens of milliseconds; a full queue
/// drains in about a second on the defaults).
pub const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Concurrent hashes by default: one per CPU (argon2 with p = 1 keeps one core busy).
pub fn default_slots() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Too many callers are already waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("password hashing is at capacity")]
pub struct Busy;

/// Why gated work did not produce a value.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(transparent)]
    Busy(#[from] Busy),
    #[error("hashing task failed")]
    Join(#[from] tokio::task::JoinError),
}

pub struct HashGate {
    slots: Arc<Semaphore>,
    max_slots: usize,
    max_waiting: usize,
    waiting: AtomicUsize,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    running: AtomicUsize,
    peak: AtomicUsize,
    started: AtomicU64,
}

impl Default for HashGate {
    fn default() -> Self {
        let slots = default_slots();
        Self::new(slots, slots * HASH_QUEUE_PER_SLOT)
    }
}

impl HashGate {
    /// `slots` computations at once (at least 1), `max_waiting` callers queued for a slot.
    pub fn new(slots: usize, max_waiting: usize) -> Self {
        let slots = slots.max(1);
        Self {
            slots: Arc::new(Semaphore::new(slots)),
            max_slots: slots,
            max_waiting,
            waiting: AtomicUsize::new(0),
            counters: Arc::default(),
        }
    }

    /// Run `work` on the blocking pool once a slot is free; [`Busy`] when the queue is full.
    pub async fn run<T, F>(&self, work: F) -> Result<T, GateError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let queued = Waiting::enter(&self.waiting, self.max_waiting)?;
                let p = self
                    .slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                drop(queued);
                p
            }
        };
        let counters = self.counters.clone();
        Ok(tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let now = counters.running.fetch_add(1, Ordering::SeqCst) + 1;
            counters.peak.fetch_max(now, Ordering::SeqCst);
            counters.started.fetch_add(1, Ordering::SeqCst);
            let out = work();
            counters.running.fetch_sub(1, Ordering::SeqCst);
            out
        })
        .await?)
    }

    /// The most computations that ever ran at once.
    pub fn peak(&self) -> usize {
        self.counters.peak.load(Ordering::SeqCst)
    }

    /// Computations started so far.
    pub fn started(&self) -> u64 {
        self.counters.started.load(Ordering::SeqCst)
    }

    pub fn slots(&self) -> usize {
        self.max_slots
    }
}

/// One place in the queue, given back when dropped (also when the caller is cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize, max: usize) -> Result<Self, Busy> {
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| Waiting(count))
            .map_err(|_| Busy)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_more_than_the_slots_and_busy_beyond_the_queue() {
        let gate = Arc::new(HashGate::new(2, 3));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let hold = Arc::new(std::sync::Mutex::new(hold));
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let gate = gate.clone();
            let hold = hold.clone();
            tasks.push(tokio::spawn(async move {
                gate.run(move || {
                    let _ = hold.lock().unwrap().recv();
                })
                .await
            }));
        }
        // Wait (bounded) until 2 run and 3 wait.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while gate.waiting.load(Ordering::SeqCst) < 3 || gate.started() < 2 {
            assert!(std::time::Instant::now() < deadline, "never filled up");
            tokio::task::yield_now().await;
        }
        assert!(matches!(gate.run(|| ()).await, Err(GateError::Busy(Busy))));
        for _ in 0..5 {
            release.send(()).unwrap();
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(gate.peak(), 2);
        assert_eq!(gate.started(), 5);
        assert_eq!(gate.waiting.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_gives_its_place_back() {
        let gate = HashGate::new(1, 1);
        let permit = gate.slots.clone().acquire_owned().await.unwrap();
        let mut waiting = Box::pin(gate.run(|| ()));
        assert!(futures_util::poll!(&mut waiting).is_pending());
        assert_eq!(gate.waiting.load(Ordering::SeqCst), 1);
        drop(waiting);
        assert_eq!(gate.waiting.load(Ordering::SeqCst), 0);
        drop(permit);
        gate.run(|| ()).await.unwrap();
    }
}
