//! Glint load-test harness: synthetic WHIP publishers and WHEP viewers built on str0m,
//! usable from integration tests and from the `glint-loadtest` binary. Talks to the server
//! only over HTTP and UDP, like any user.

pub mod codec;
pub mod error;
pub mod peer;
pub mod procfs;
pub mod report;
pub mod rlimit;
pub mod signal;
pub mod source;
pub mod stats;

pub use codec::VideoCodec;
pub use error::{Error, Result};
pub use peer::{publish, view, PublishConfig, PublisherHandle, ViewConfig, ViewerHandle};
pub use reqwest::StatusCode;
pub use source::VideoShape;
pub use stats::{EndReason, PublisherStats, TrackStats, ViewerStats};
