//! The media core's one error type. Signaling maps each variant to an HTTP status.

use thiserror::Error;

/// Why the media core refused or failed a request.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaError {
    /// The SDP offer could not be parsed or applied (RFC 9725 §4.2: 400 Bad Request).
    #[error("malformed SDP offer: {0}")]
    BadOffer(String),
    /// The offer is valid SDP but carries nothing we can accept: no audio/video m-line, a wrong
    /// direction, or only codecs we do not forward (RFC 9725 §4.2: 406 Not Acceptable).
    #[error("offer not acceptable: {0}")]
    NotAcceptable(String),
    /// A WHIP publish on a stream that already has a live publisher.
    #[error("stream {0:?} already has a publisher")]
    StreamBusy(String),
    /// A WHEP viewer asked for a stream that is not live.
    #[error("stream {0:?} is not live")]
    StreamNotLive(String),
    /// No session with this id (deleted, timed out, or never existed).
    #[error("no such session")]
    UnknownSession,
    /// A trickle-ICE fragment we could not parse.
    #[error("bad ICE candidate: {0}")]
    BadCandidate(String),
    /// The server is at its configured session limit.
    #[error("server is at capacity")]
    Overloaded,
    /// This client address (an IPv6 /64) already has the most sessions one address may hold.
    #[error("too many sessions from this address (at most {0})")]
    TooManyFromAddress(usize),
    /// The media task is gone (shutting down).
    #[error("media core is shutting down")]
    ShuttingDown,
    /// Something inside webrtc-rs failed; details are logged, not sent to clients.
    #[error("internal media error: {0}")]
    Internal(String),
}

pub type Result<T, E = MediaError> = std::result::Result<T, E>;
