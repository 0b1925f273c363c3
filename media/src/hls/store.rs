//! Where HLS objects go: one interface ([`SegmentStore`]) for the local directory (the embedded
//! default, served by glint at `/hls/`) and S3 (`s3.rs`), and the uploader that writes to it.
//!
//! Writes happen on the uploader's tasks, never on the media task: GStreamer streaming threads
//! and the HLS tasks hand objects over with [`Uploads::put`]. The uploader writes up to
//! [`UploadLimits::concurrency`] objects at once, and keeps two orders a player relies on:
//! a playlist is written only once every segment of its stream handed over before it has been
//! (so no playlist names a segment that is not there yet), and two writes of one path never
//! overlap (an older playlist cannot land after a newer one). A playlist or thumbnail still
//! waiting when a newer version of it arrives is replaced by it.
//!
//! Nothing is dropped silently. Segments waiting take at most [`UploadLimits::queue_bytes`]:
//! beyond that a GStreamer thread handing over a segment waits (backpressure on the pipeline,
//! whose input queues are leaky) up to [`UploadLimits::segment_wait`], then the segment is
//! dropped, counted (`glint_hls_uploads_dropped_total`) and logged. An object whose writes fail
//! [`UploadLimits::attempts`] times is given up on, counted (`glint_hls_uploads_failed_total`)
//! and logged.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::warn;

use crate::metrics::Metrics;

/// Objects written at once, by default.
pub const DEFAULT_UPLOAD_CONCURRENCY: usize = 8;
/// Bytes of segments that may wait for the store, by default (about a minute of a 16 Mbit/s
/// ladder).
pub const DEFAULT_QUEUE_BYTES: usize = 128 << 20;
/// How long a segment handed over with a full queue waits for room, by default.
pub const DEFAULT_SEGMENT_WAIT: Duration = Duration::from_secs(2);
/// Writes of one object before it is given up on, by default.
pub const DEFAULT_ATTEMPTS: u32 = 4;
/// The wait before the first retry, by default; it doubles with each.
pub const DEFAULT_FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Dropped segments are logged at most this often (they are all counted).
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why the store could not do something.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("S3 {op} {key}: {}", aws_sdk_s3::error::DisplayErrorContext(.source.as_ref()))]
    S3 {
        op: &'static str,
        key: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A prefix that would reach outside the store, or delete all of it.
    #[error("refusing to touch {0:?}")]
    Refused(String),
    /// More objects under a prefix than one call goes through.
    #[error("too many objects under {0:?}")]
    TooMany(String),
}

impl StoreError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// What an object is, for its Content-Type and Cache-Control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Playlist,
    Segment,
    Image,
}

impl Kind {
    pub fn of_path(path: &str) -> Option<Kind> {
        let ext = path.rsplit_once('.')?.1;
        match ext {
            "m3u8" => Some(Kind::Playlist),
            // fMP4 segments, parts and initialization segments; `.ts` of replays from before.
            "m4s" | "mp4" | "ts" => Some(Kind::Segment),
            "jpg" => Some(Kind::Image),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Kind::Playlist => "application/vnd.apple.mpegurl",
            Kind::Segment => "video/mp4",
            Kind::Image => "image/jpeg",
        }
    }

    /// Segments never change once written (their names are unique); playlists change every
    /// segment, so CDNs may keep them about a second.
    pub fn cache_control(self) -> &'static str {
        match self {
            Kind::Segment => "public, max-age=31536000, immutable",
            Kind::Playlist => "public, max-age=1",
            Kind::Image => "public, max-age=10",
        }
    }
}

pub type StoreFuture<'a, T = ()> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Object storage for HLS output; `path` is `<stream>/<rendition>/<file>`.
pub trait SegmentStore: Send + Sync + 'static {
    fn put<'a>(&'a self, path: &'a str, body: Bytes, kind: Kind) -> StoreFuture<'a>;
    fn delete<'a>(&'a self, path: &'a str) -> StoreFuture<'a>;
    /// Every object whose path starts with `prefix` (a replay's segments and playlists).
    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a>;
    /// The paths of every object whose path starts with `prefix` (`""`: all of them).
    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, Vec<String>>;
}

/// A local directory; files are replaced atomically (write, then rename), so a reader never
/// sees half a playlist.
pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn root(&self) -> &PathBuf {
        &self.root
    }
}

/// Files being written are named `<name>.part` until renamed.
const PART_EXTENSION: &str = "part";

impl SegmentStore for LocalDir {
    fn put<'a>(&'a self, path: &'a str, body: Bytes, _kind: Kind) -> StoreFuture<'a> {
        Box::pin(async move {
            let file = self.root.join(path);
            if let Some(dir) = file.parent() {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| StoreError::io(dir, e))?;
            }
            let tmp = file.with_extension(PART_EXTENSION);
            tokio::fs::write(&tmp, &body)
                .await
                .map_err(|e| StoreError::io(&tmp, e))?;
            tokio::fs::rename(&tmp, &file)
                .await
                .map_err(|e| StoreError::io(&file, e))
        })
    }

    fn delete<'a>(&'a self, path: &'a str) -> StoreFuture<'a> {
        Box::pin(async move {
            let file = self.root.join(path);
            match tokio::fs::remove_file(&file).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(StoreError::io(&file, e)),
            }
        })
    }

    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a> {
        Box::pin(async move {
            if prefix.is_empty() || prefix.split('/').any(|p| p == "..") {
                return Err(StoreError::Refused(prefix.to_owned()));
            }
            let (dir, name) = prefix.rsplit_once('/').unwrap_or(("", prefix));
            let dir = self.root.join(dir);
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(StoreError::io(&dir, e)),
            };
            let fail = |e: std::io::Error| StoreError::io(&dir, e);
            while let Some(entry) = entries.next_entry().await.map_err(fail)? {
                if !entry.file_name().to_string_lossy().starts_with(name) {
                    continue;
                }
                let path = entry.path();
                let removed = if entry.file_type().await.map_err(fail)?.is_dir() {
                    tokio::fs::remove_dir_all(&path).await
                } else {
                    tokio::fs::remove_file(&path).await
                };
                match removed {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io(&path, e)),
                }
            }
            if name.is_empty() {
                let _ = tokio::fs::remove_dir(&dir).await;
            }
            Ok(())
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            if prefix.split('/').any(|p| p == "..") {
                return Err(StoreError::Refused(prefix.to_owned()));
            }
            // Walk from the prefix's folder; paths are relative to the root, with `/`.
            let start = prefix.rsplit_once('/').map_or("", |(dir, _)| dir);
            let mut found = Vec::new();
            let mut dirs = vec![start.to_owned()];
            while let Some(rel) = dirs.pop() {
                let dir = self.root.join(&rel);
                let mut entries = match tokio::fs::read_dir(&dir).await {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(StoreError::io(&dir, e)),
                };
                let fail = |e: std::io::Error| StoreError::io(&dir, e);
                while let Some(entry) = entries.next_entry().await.map_err(fail)? {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let path = if rel.is_empty() {
                        name
                    } else {
                        format!("{rel}/{name}")
                    };
                    if entry.file_type().await.map_err(fail)?.is_dir() {
                        dirs.push(path);
                    } else if path.starts_with(prefix)
                        && Path::new(&path)
                            .extension()
                            .is_none_or(|e| e != PART_EXTENSION)
                    {
                        found.push(path);
                    }
                }
            }
            found.sort();
            Ok(found)
        })
    }
}

#[derive(Debug)]
enum Op {
    Put {
        path: String,
        body: Bytes,
        kind: Kind,
    },
    Delete {
        path: String,
    },
}

impl Op {
    fn path(&self) -> &str {
        match self {
            Op::Put { path, .. } | Op::Delete { path } => path,
        }
    }

    /// Bytes held against the queue's budget (segments only).
    fn segment_bytes(&self) -> usize {
        match self {
            Op::Put {
                body,
                kind: Kind::Segment,
                ..
            } => body.len(),
            _ => 0,
        }
    }
}

/// The stream an object belongs to: the first part of its path.
fn stream_of(path: &str) -> &str {
    path.split_once('/').map_or(path, |(s, _)| s)
}

#[derive(Debug)]
struct Job {
    /// Arrival order.
    seq: u64,
    op: Op,
}

/// How the uploader writes; [`UploadLimits::default`] is what the server uses, apart from
/// the concurrency (`GLINT_HLS_UPLOAD_CONCURRENCY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// Objects written at once.
    pub concurrency: usize,
    /// Bytes of segments that may wait; beyond, a segment waits for room up to `segment_wait`.
    pub queue_bytes: usize,
    pub segment_wait: Duration,
    /// Writes of one object before it is given up on.
    pub attempts: u32,
    /// Wait before the first retry; it doubles with each.
    pub first_backoff: Duration,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self {
            concurrency: DEFAULT_UPLOAD_CONCURRENCY,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            segment_wait: DEFAULT_SEGMENT_WAIT,
            attempts: DEFAULT_ATTEMPTS,
            first_backoff: DEFAULT_FIRST_BACKOFF,
        }
    }
}

#[derive(Default)]
struct Queue {
    next_seq: u64,
    /// Not started yet, in arrival order.
    waiting: VecDeque<Job>,
    /// Paths being written.
    busy: HashSet<String>,
    /// Per stream: arrival numbers of its segments waiting or being written.
    segments: HashMap<String, BTreeSet<u64>>,
    /// Bytes of segments waiting or being written.
    segment_bytes: usize,
    /// Jobs being written.
    running: usize,
    dropped_since_log: u64,
    last_drop_log: Option<Instant>,
}

impl Queue {
    fn idle(&self) -> bool {
        self.waiting.is_empty() && self.running == 0
    }

    /// Take the jobs that may start now (at most `n`), marking their paths busy.
    fn take_startable(&mut self, n: usize) -> Vec<Job> {
        let mut out = Vec::new();
        let mut seen_paths: HashSet<&str> = HashSet::new();
        let mut picked = Vec::new();
        for (i, job) in self.waiting.iter().enumerate() {
            if picked.len() == n {
                break;
            }
            let path = job.op.path();
            // An earlier job for this path goes first.
            if !seen_paths.insert(path) || self.busy.contains(path) {
                continue;
            }
            let waits_for_segments = matches!(
                job.op,
                Op::Put {
                    kind: Kind::Playlist,
                    ..
                }
            ) && self
                .segments
                .get(stream_of(path))
                .and_then(|s| s.first())
                .is_some_and(|first| *first < job.seq);
            if !waits_for_segments {
                picked.push(i);
            }
        }
        for i in picked.into_iter().rev() {
            if let Some(job) = self.waiting.remove(i) {
                out.push(job);
            }
        }
        out.reverse();
        for job in &out {
            self.busy.insert(job.op.path().to_owned());
        }
        self.running += out.len();
        out
    }

    /// `job` is done (stored, or given up on).
    fn finish(&mut self, job: &Job) {
        let path = job.op.path();
        self.busy.remove(path);
        self.running -= 1;
        let bytes = job.op.segment_bytes();
        if matches!(
            job.op,
            Op::Put {
                kind: Kind::Segment,
                ..
            }
        ) {
            self.segment_bytes -= bytes;
            let stream = stream_of(path);
            if let Some(seqs) = self.segments.get_mut(stream) {
                seqs.remove(&job.seq);
                if seqs.is_empty() {
                    self.segments.remove(stream);
                }
            }
        }
    }
}

struct Shared {
    queue: Mutex<Queue>,
    /// Segment bytes were released (producers waiting for room).
    room: Condvar,
    /// Work arrived (the dispatcher).
    work: Notify,
    /// The queue went idle (tests, shutdown).
    idle: Notify,
    limits: UploadLimits,
    metrics: Arc<Metrics>,
}

/// The handle objects are given to; cheap to clone.
#[derive(Clone)]
pub struct Uploads {
    shared: Arc<Shared>,
}

impl Uploads {
    /// Store `body` at `path`. A segment handed over while the queue is full waits for room
    /// when the caller may block (a GStreamer thread, not a tokio worker), then is dropped
    /// (counted and logged); playlists and images are small and always queued.
    pub fn put(&self, path: String, body: Bytes, kind: Kind) {
        let op = Op::Put { path, body, kind };
        let bytes = op.segment_bytes();
        let limits = self.shared.limits;
        let mut q = self.lock();
        if kind == Kind::Segment
            && q.segment_bytes > 0
            && q.segment_bytes + bytes > limits.queue_bytes
        {
            // Blocking a tokio worker would stall other tasks: only other threads wait.
            if tokio::runtime::Handle::try_current().is_err() {
                let deadline = Instant::now() + limits.segment_wait;
                while q.segment_bytes > 0 && q.segment_bytes + bytes > limits.queue_bytes {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    q = self
                        .shared
                        .room
                        .wait_timeout(q, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
            if q.segment_bytes > 0 && q.segment_bytes + bytes > limits.queue_bytes {
                self.dropped(&mut q, op.path());
                return;
            }
        }
        self.push(&mut q, op);
        drop(q);
        self.shared.work.notify_one();
    }

    pub fn delete(&self, path: String) {
        let mut q = self.lock();
        self.push(&mut q, Op::Delete { path });
        drop(q);
        self.shared.work.notify_one();
    }

    /// Wait until everything handed over so far is stored (or given up on).
    pub async fn flushed(&self) {
        loop {
            let idle = self.shared.idle.notified();
            if self.lock().idle() {
                return;
            }
            idle.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.shared.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, q: &mut Queue, op: Op) {
        let seq = q.next_seq;
        q.next_seq += 1;
        if let Op::Put {
            path,
            kind: kind @ (Kind::Playlist | Kind::Image),
            ..
        } = &op
        {
            // A newer version replaces one not written yet.
            let (path, kind) = (path.clone(), *kind);
            q.waiting.retain(
                |j| !matches!(&j.op, Op::Put { path: p, kind: k, .. } if *p == path && *k == kind),
            );
        }
        if let Op::Put {
            path,
            body,
            kind: Kind::Segment,
        } = &op
        {
            q.segment_bytes += body.len();
            q.segments
                .entry(stream_of(path).to_owned())
                .or_default()
                .insert(seq);
        }
        q.waiting.push_back(Job { seq, op });
    }

    fn dropped(&self, q: &mut Queue, path: &str) {
        Metrics::add(&self.shared.metrics.hls_uploads_dropped, 1);
        q.dropped_since_log += 1;
        let now = Instant::now();
        if q.last_drop_log
            .is_none_or(|t| now.saturating_duration_since(t) >= DROP_LOG_INTERVAL)
        {
            warn!(
                path,
                dropped = q.dropped_since_log,
                queued_bytes = q.segment_bytes,
                "HLS upload queue full (the store is too slow): segments dropped"
            );
            q.last_drop_log = Some(now);
            q.dropped_since_log = 0;
        }
    }
}

/// Start the uploader that writes to `store`, with `limits`; it runs as long as the runtime.
pub fn spawn_uploader(
    store: Arc<dyn SegmentStore>,
    metrics: Arc<Metrics>,
    limits: UploadLimits,
) -> Uploads {
    let limits = UploadLimits {
        concurrency: limits.concurrency.max(1),
        attempts: limits.attempts.max(1),
        ..limits
    };
    let shared = Arc::new(Shared {
        queue: Mutex::default(),
        room: Condvar::new(),
        work: Notify::new(),
        idle: Notify::new(),
        limits,
        metrics,
    });
    tokio::spawn(dispatch(store, shared.clone()));
    Uploads { shared }
}

/// Start what may start, wait for a write to end or work to arrive, repeat.
async fn dispatch(store: Arc<dyn SegmentStore>, sh: Arc<Shared>) {
    let mut running: JoinSet<Job> = JoinSet::new();
    loop {
        let free = sh.limits.concurrency.saturating_sub(running.len());
        let jobs = sh
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_startable(free);
        for job in jobs {
            let (store, metrics, limits) = (store.clone(), sh.metrics.clone(), sh.limits);
            running.spawn(async move {
                write(&*store, &job.op, &metrics, limits).await;
                job
            });
        }
        tokio::select! {
            Some(done) = running.join_next(), if !running.is_empty() => {
                let Ok(job) = done else { continue };
                let idle = {
                    let mut q = sh.queue.lock().unwrap_or_else(|e| e.into_inner());
                    q.finish(&job);
                    q.idle()
                };
                sh.room.notify_all();
                if idle {
                    sh.idle.notify_waiters();
                }
            }
            _ = sh.work.notified() => {}
        }
    }
}

/// One object, with retries; the outcome is counted.
async fn write(store: &dyn SegmentStore, op: &Op, metrics: &Metrics, limits: UploadLimits) {
    let mut backoff = limits.first_backoff;
    for attempt in 1..=limits.attempts {
        let result = match op {
            Op::Put { path, body, kind } => store.put(path, body.clone(), *kind).await,
            Op::Delete { path } => store.delete(path).await,
        };
        match result {
            Ok(()) => {
                Metrics::add(&metrics.hls_uploads, 1);
                return;
            }
            Err(e) if attempt == limits.attempts => {
                Metrics::add(&metrics.hls_uploads_failed, 1);
                warn!(error = %e, attempts = limits.attempts, "HLS object not stored; giving up on it");
            }
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_extension() {
        assert_eq!(Kind::of_path("a/720p/index.m3u8"), Some(Kind::Playlist));
        for name in ["seg-1-00001.m4s", "seg-1-00001.2.m4s", "seg-1-init0.mp4"] {
            assert_eq!(
                Kind::of_path(&format!("a/720p/{name}")).map(Kind::content_type),
                Some("video/mp4")
            );
        }
        assert!(Kind::Segment.cache_control().contains("immutable"));
        assert_eq!(Kind::of_path("a/b"), None);
    }

    #[tokio::test]
    async fn local_dir_replaces_lists_and_deletes() {
        let root = std::env::temp_dir().join(format!("glint-store-{}", rand::random::<u64>()));
        let store = LocalDir::new(root.clone());
        store
            .put(
                "s/source/index.m3u8",
                Bytes::from_static(b"one"),
                Kind::Playlist,
            )
            .await
            .unwrap();
        store
            .put(
                "s/source/index.m3u8",
                Bytes::from_static(b"two"),
                Kind::Playlist,
            )
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(root.join("s/source/index.m3u8")).unwrap(),
            b"two"
        );
        store.delete("s/source/index.m3u8").await.unwrap();
        store.delete("s/source/index.m3u8").await.unwrap();
        assert!(!root.join("s/source/index.m3u8").exists());
        for f in [
            "s/720p/seg-1-00000.ts",
            "s/720p/seg-1-00001.ts",
            "s/720p/seg-2-00000.ts",
            "s/videos/1/master.m3u8",
        ] {
            store
                .put(f, Bytes::from_static(b"x"), Kind::Segment)
                .await
                .unwrap();
        }
        std::fs::write(root.join("s/720p/seg-3-00000.part"), b"half").unwrap();
        assert_eq!(
            store.list("").await.unwrap(),
            [
                "s/720p/seg-1-00000.ts",
                "s/720p/seg-1-00001.ts",
                "s/720p/seg-2-00000.ts",
                "s/videos/1/master.m3u8"
            ]
        );
        assert_eq!(
            store.list("s/720p/seg-2-").await.unwrap(),
            ["s/720p/seg-2-00000.ts"]
        );
        assert!(store.list("nothing/").await.unwrap().is_empty());
        store.delete_prefix("s/720p/seg-1-").await.unwrap();
        store.delete_prefix("s/videos/1/").await.unwrap();
        assert!(!root.join("s/720p/seg-1-00000.ts").exists());
        assert!(!root.join("s/720p/seg-1-00001.ts").exists());
        assert!(root.join("s/720p/seg-2-00000.ts").exists());
        assert!(!root.join("s/videos/1").exists());
        assert!(matches!(
            store.delete_prefix("s/../..").await,
            Err(StoreError::Refused(_))
        ));
        store.delete_prefix("nothing/here-").await.unwrap();
        std::fs::remove_dir_all(root).unwrap();
    }

    /// A store whose writes wait for the test to let them finish, recording what happened.
    struct Gated {
        log: Mutex<Vec<String>>,
        /// Writes in flight now, and the most ever at once.
        in_flight: Mutex<(usize, usize)>,
        gate: tokio::sync::Semaphore,
        /// Paths whose writes fail.
        failing: Mutex<HashSet<String>>,
    }

    impl Default for Gated {
        fn default() -> Self {
            Self {
                log: Mutex::default(),
                in_flight: Mutex::default(),
                gate: tokio::sync::Semaphore::new(0),
                failing: Mutex::default(),
            }
        }
    }

    impl Gated {
        fn log(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }

        fn max_in_flight(&self) -> usize {
            self.in_flight.lock().unwrap().1
        }

        fn now_in_flight(&self) -> usize {
            self.in_flight.lock().unwrap().0
        }
    }

    impl SegmentStore for Gated {
        fn put<'a>(&'a self, path: &'a str, body: Bytes, _kind: Kind) -> StoreFuture<'a> {
            Box::pin(async move {
                {
                    let mut f = self.in_flight.lock().unwrap();
                    f.0 += 1;
                    f.1 = f.1.max(f.0);
                }
                self.gate.acquire().await.unwrap().forget();
                self.in_flight.lock().unwrap().0 -= 1;
                if self.failing.lock().unwrap().contains(path) {
                    return Err(StoreError::Refused(path.to_owned()));
                }
                self.log
                    .lock()
                    .unwrap()
                    .push(format!("{path}={}", String::from_utf8_lossy(&body)));
                Ok(())
            })
        }

        fn delete<'a>(&'a self, path: &'a str) -> StoreFuture<'a> {
            Box::pin(async move {
                self.log.lock().unwrap().push(format!("-{path}"));
                Ok(())
            })
        }

        fn delete_prefix<'a>(&'a self, _prefix: &'a str) -> StoreFuture<'a> {
            Box::pin(async { Ok(()) })
        }

        fn list<'a>(&'a self, _prefix: &'a str) -> StoreFuture<'a, Vec<String>> {
            Box::pin(async { Ok(Vec::new()) })
        }
    }

    fn gated(limits: UploadLimits) -> (Arc<Gated>, Uploads, Arc<Metrics>) {
        let store = Arc::new(Gated::default());
        let metrics = Arc::new(Metrics::default());
        let uploads = spawn_uploader(store.clone(), metrics.clone(), limits);
        (store, uploads, metrics)
    }

    async fn until(what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn segment(uploads: &Uploads, path: &str) {
        uploads.put(path.into(), Bytes::from_static(b"ts"), Kind::Segment);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_run_in_parallel_up_to_the_concurrency() {
        let (store, uploads, metrics) = gated(UploadLimits::default());
        for i in 0..20 {
            segment(&uploads, &format!("s/source/seg-1-{i:05}.ts"));
        }
        until("8 writes at once", || store.now_in_flight() == 8).await;
        store.gate.add_permits(20);
        uploads.flushed().await;
        assert_eq!(store.max_in_flight(), DEFAULT_UPLOAD_CONCURRENCY);
        assert_eq!(store.log().len(), 20);
        assert_eq!(
            metrics
                .hls_uploads
                .load(std::sync::atomic::Ordering::Relaxed),
            20
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_playlist_waits_for_its_streams_segments_and_newer_ones_replace_it() {
        let (store, uploads, _) = gated(UploadLimits::default());
        segment(&uploads, "s/source/seg-1-00000.ts");
        segment(&uploads, "s/360p/seg-1-00000.ts");
        for v in ["v1", "v2", "v3"] {
            uploads.put("s/source/index.m3u8".into(), Bytes::from(v), Kind::Playlist);
        }
        // Another stream's playlist does not wait for these segments.
        uploads.put(
            "other/source/index.m3u8".into(),
            Bytes::from_static(b"o"),
            Kind::Playlist,
        );
        until("segments and the other playlist started", || {
            store.now_in_flight() == 3
        })
        .await;
        store.gate.add_permits(10);
        uploads.flushed().await;
        let log = store.log();
        assert_eq!(log.len(), 4, "{log:?}");
        // The other stream's playlist may finish before or after it (both run in parallel);
        // this stream's playlist comes after both of its segments, in its newest version.
        let s_writes: Vec<&String> = log.iter().filter(|l| l.starts_with("s/")).collect();
        assert_eq!(
            s_writes.last().unwrap().as_str(),
            "s/source/index.m3u8=v3",
            "{log:?}"
        );
        assert!(!log.iter().any(|l| l.ends_with("=v1") || l.ends_with("=v2")));
    }

    #[test]
    fn a_full_queue_holds_a_segment_back_then_drops_it_counted() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let limits = UploadLimits {
            queue_bytes: 4,
            segment_wait: Duration::from_millis(300),
            ..UploadLimits::default()
        };
        let (store, uploads, metrics) = rt.block_on(async { gated(limits) });
        // Called from a plain thread, as GStreamer's are: the third segment waits, then drops.
        segment(&uploads, "s/source/seg-1-00000.ts");
        segment(&uploads, "s/source/seg-1-00001.ts");
        let started = Instant::now();
        segment(&uploads, "s/source/seg-1-00002.ts");
        assert!(started.elapsed() >= Duration::from_millis(300), "it waited");
        let dropped = || {
            metrics
                .hls_uploads_dropped
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        assert_eq!(dropped(), 1);
        // Room made while it waits: the segment goes in.
        let s = store.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            s.gate.add_permits(1);
        });
        let limits_wait = Instant::now();
        segment(&uploads, "s/source/seg-1-00003.ts");
        t.join().unwrap();
        assert!(limits_wait.elapsed() < Duration::from_secs(5));
        assert_eq!(dropped(), 1, "queued once there was room");
        store.gate.add_permits(10);
        rt.block_on(uploads.flushed());
        assert_eq!(store.log().len(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_object_that_keeps_failing_is_given_up_on_and_counted() {
        let limits = UploadLimits {
            first_backoff: Duration::from_millis(1),
            ..UploadLimits::default()
        };
        let (store, uploads, metrics) = gated(limits);
        store
            .failing
            .lock()
            .unwrap()
            .insert("s/source/seg-1-00000.ts".into());
        store.gate.add_permits(100);
        segment(&uploads, "s/source/seg-1-00000.ts");
        uploads.put(
            "s/source/index.m3u8".into(),
            Bytes::from_static(b"p"),
            Kind::Playlist,
        );
        uploads.flushed().await;
        let failed = metrics
            .hls_uploads_failed
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(failed, 1);
        assert_eq!(
            store.log(),
            ["s/source/index.m3u8=p"],
            "the playlist went after it"
        );
    }
}
