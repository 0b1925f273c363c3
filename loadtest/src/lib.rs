//! Glint load-test harness: synthetic WHIP publishers and WHEP viewers built on str0m,
//! usable from integration tests and from the `glint-loadtest` binary. Talks to the server
//! only over HTTP and UDP, like any user.
//!
//! ```no_run
//! # async fn demo() -> loadtest::Result<()> {
//! use std::time::Duration;
//! use loadtest::{publish, view, PublishConfig, StatusCode, ViewConfig};
//!
//! let server = "http://127.0.0.1:8080";
//! let publisher = publish(PublishConfig::new(server, "demo", "stream-key")).await?;
//! publisher.wait_connected(Duration::from_secs(10)).await?;
//!
//! let viewer = view(ViewConfig::new(server, "demo")).await?;
//! // Returns as soon as the condition holds; fails after the timeout or if the peer ends.
//! let stats = viewer.wait_until(|s| s.video.packets >= 100, Duration::from_secs(10)).await?;
//! assert_eq!(stats.pattern_mismatches(), 0);
//! assert!(stats.first_keyframe_after.is_some());
//!
//! let err = view(ViewConfig::new(server, "nobody")).await.unwrap_err();
//! assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
//!
//! viewer.stop().await?;
//! publisher.stop().await?;
//! # Ok(())
//! # }
//! ```

pub mod charts;
pub mod chat;
pub mod clip;
pub mod codec;
pub mod error;
pub mod hls;
pub mod peer;
pub mod procfs;
pub mod report;
pub mod rlimit;
pub mod rtmp;
pub mod scenario;
pub mod signal;
pub mod source;
pub mod stats;

pub use codec::VideoCodec;
pub use error::{Error, Result};
pub use peer::{publish, view, PublishConfig, PublisherHandle, ViewConfig, ViewerHandle};
pub use reqwest::StatusCode;
pub use source::VideoShape;
pub use stats::{
    EndReason, LatencyHistogram, LatencyRecorder, PublisherStats, TrackStats, ViewerStats,
};
