//! RTMP connections publishing now, by stream name, so that a rotated stream key ends them: the
//! platform calls [`RtmpPublishers::end`]; each connection waits on its [`Registration`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Cheap to clone; the listener and the binary's key-rotation hook share one.
#[derive(Debug, Clone, Default)]
pub struct RtmpPublishers {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    /// Connection id → its stream and its "end now" signal.
    by_id: HashMap<u64, (String, Arc<Notify>)>,
}

/// One connection's entry; removed on drop.
#[derive(Debug)]
pub struct Registration {
    publishers: RtmpPublishers,
    id: u64,
    end: Arc<Notify>,
}

impl RtmpPublishers {
    /// Tell every connection publishing `stream` to end; how many were told.
    pub fn end(&self, stream: &str) -> usize {
        let mut inner = self.lock();
        let ids: Vec<u64> = inner
            .by_id
            .iter()
            .filter(|(_, (s, _))| s == stream)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            if let Some((_, end)) = inner.by_id.remove(id) {
                // A stored permit: the connection sees it even if it is not waiting right now.
                end.notify_one();
            }
        }
        ids.len()
    }

    /// Connections publishing `stream`.
    pub fn count(&self, stream: &str) -> usize {
        self.lock()
            .by_id
            .values()
            .filter(|(s, _)| s == stream)
            .count()
    }

    /// A connection started publishing `stream`.
    pub fn register(&self, stream: &str) -> Registration {
        let end = Arc::new(Notify::new());
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.by_id.insert(id, (stream.to_owned(), end.clone()));
        Registration {
            publishers: self.clone(),
            id,
            end,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update is one step: the map stays consistent even if a holder panicked.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Registration {
    /// Resolves once [`RtmpPublishers::end`] named this connection's stream.
    pub async fn ended(&self) {
        self.end.notified().await
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.publishers.lock().by_id.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn end_reaches_the_streams_connections_only() {
        let p = RtmpPublishers::default();
        let a = p.register("alice");
        let b = p.register("bob");
        assert_eq!(p.end("alice"), 1);
        // The signal was stored: waiting after it was sent still sees it.
        a.ended().await;
        assert_eq!(p.count("alice"), 0);
        assert_eq!(p.count("bob"), 1);
        drop(b);
        assert_eq!(p.count("bob"), 0, "a dropped registration is removed");
        assert_eq!(p.end("bob"), 0);
    }
}
