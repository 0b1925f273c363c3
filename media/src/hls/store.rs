//! Where HLS objects go: one interface ([`SegmentStore`]) for the local directory (the embedded
//! default, served by glint at `/hls/`) and S3 (`s3.rs`). Writes happen on the [`Uploader`] task,
//! never on a GStreamer streaming thread or the media task: those hand objects over with
//! [`Uploads::put`], which never blocks (a full queue drops the object and counts it).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::warn;

use crate::metrics::Metrics;

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
            "ts" => Some(Kind::Segment),
            "jpg" => Some(Kind::Image),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Kind::Playlist => "application/vnd.apple.mpegurl",
            Kind::Segment => "video/mp2t",
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

pub type StoreFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Object storage for HLS output; `path` is `<stream>/<rendition>/<file>`.
pub trait SegmentStore: Send + Sync + 'static {
    fn put<'a>(&'a self, path: &'a str, body: Bytes, kind: Kind) -> StoreFuture<'a>;
    fn delete<'a>(&'a self, path: &'a str) -> StoreFuture<'a>;
    /// Every object whose path starts with `prefix` (a replay's segments and playlists).
    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a>;
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

impl SegmentStore for LocalDir {
    fn put<'a>(&'a self, path: &'a str, body: Bytes, _kind: Kind) -> StoreFuture<'a> {
        Box::pin(async move {
            let file = self.root.join(path);
            if let Some(dir) = file.parent() {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            let tmp = file.with_extension("part");
            tokio::fs::write(&tmp, &body)
                .await
                .map_err(|e| format!("{}: {e}", tmp.display()))?;
            tokio::fs::rename(&tmp, &file)
                .await
                .map_err(|e| format!("{}: {e}", file.display()))
        })
    }

    fn delete<'a>(&'a self, path: &'a str) -> StoreFuture<'a> {
        Box::pin(async move {
            match tokio::fs::remove_file(self.root.join(path)).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("{path}: {e}")),
            }
        })
    }

    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a> {
        Box::pin(async move {
            if prefix.is_empty() || prefix.split('/').any(|p| p == "..") {
                return Err(format!("refusing to delete {prefix:?}"));
            }
            let (dir, name) = prefix.rsplit_once('/').unwrap_or(("", prefix));
            let dir = self.root.join(dir);
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(format!("{}: {e}", dir.display())),
            };
            let fail = |e: std::io::Error| format!("{}: {e}", dir.display());
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
                    Err(e) => return Err(format!("{}: {e}", path.display())),
                }
            }
            if name.is_empty() {
                let _ = tokio::fs::remove_dir(&dir).await;
            }
            Ok(())
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

/// Objects waiting for the store; beyond this, new ones are dropped (bounded memory).
const QUEUE: usize = 512;
const ATTEMPTS: u32 = 4;

/// The handle objects are given to; cheap to clone, never blocks.
#[derive(Clone)]
pub struct Uploads {
    tx: mpsc::Sender<Op>,
    metrics: Arc<Metrics>,
}

impl Uploads {
    pub fn put(&self, path: String, body: Bytes, kind: Kind) {
        self.send(Op::Put { path, body, kind });
    }

    pub fn delete(&self, path: String) {
        self.send(Op::Delete { path });
    }

    fn send(&self, op: Op) {
        if self.tx.try_send(op).is_err() {
            Metrics::add(&self.metrics.hls_uploads_dropped, 1);
        }
    }
}

/// Start the task that writes to `store`, one object at a time, with bounded retries.
pub fn spawn_uploader(store: Arc<dyn SegmentStore>, metrics: Arc<Metrics>) -> Uploads {
    let (tx, mut rx) = mpsc::channel::<Op>(QUEUE);
    let m = metrics.clone();
    tokio::spawn(async move {
        while let Some(op) = rx.recv().await {
            let mut backoff = Duration::from_millis(200);
            for attempt in 1..=ATTEMPTS {
                let result = match &op {
                    Op::Put { path, body, kind } => store.put(path, body.clone(), *kind).await,
                    Op::Delete { path } => store.delete(path).await,
                };
                match result {
                    Ok(()) => {
                        Metrics::add(&m.hls_uploads, 1);
                        break;
                    }
                    Err(e) if attempt == ATTEMPTS => {
                        Metrics::add(&m.hls_uploads_failed, 1);
                        warn!(error = %e, attempts = ATTEMPTS, "HLS object not stored; giving up on it");
                    }
                    Err(_) => {
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                }
            }
        }
    });
    Uploads { tx, metrics }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_extension() {
        assert_eq!(Kind::of_path("a/720p/index.m3u8"), Some(Kind::Playlist));
        assert_eq!(
            Kind::of_path("a/720p/seg-1-00001.ts").map(Kind::content_type),
            Some("video/mp2t")
        );
        assert!(Kind::Segment.cache_control().contains("immutable"));
        assert_eq!(Kind::of_path("a/b"), None);
    }

    #[tokio::test]
    async fn local_dir_replaces_and_deletes() {
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
        store.delete_prefix("s/720p/seg-1-").await.unwrap();
        store.delete_prefix("s/videos/1/").await.unwrap();
        assert!(!root.join("s/720p/seg-1-00000.ts").exists());
        assert!(!root.join("s/720p/seg-1-00001.ts").exists());
        assert!(root.join("s/720p/seg-2-00000.ts").exists());
        assert!(!root.join("s/videos/1").exists());
        assert!(store.delete_prefix("s/../..").await.is_err());
        store.delete_prefix("nothing/here-").await.unwrap();
        std::fs::remove_dir_all(root).unwrap();
    }
}
