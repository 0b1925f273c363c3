//! The API's one call into the media side: when a stream's key stops being valid, its current
//! publisher is ended. The binary wires [`PublisherControl`] to the media core; the API does
//! not depend on it.

use std::future::Future;
use std::pin::Pin;

pub type EndFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Ends live publishers.
pub trait PublisherControl: Send + Sync + 'static {
    /// End the current publisher of the stream named `stream` (WHIP session or RTMP
    /// connection), whose key was just rotated. When the future resolves the stream is off
    /// the air.
    fn end_publisher<'a>(&'a self, stream: &'a str) -> EndFuture<'a>;
}

/// No media side: the API on its own (its tests).
#[derive(Debug, Default)]
pub struct NoMedia;

impl PublisherControl for NoMedia {
    fn end_publisher<'a>(&'a self, _stream: &'a str) -> EndFuture<'a> {
        Box::pin(async {})
    }
}
