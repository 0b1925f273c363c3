//! The media core's one error type. Signaling maps each variant to an HTTP status.
//!
//! A failure inside webrtc-rs keeps webrtc-rs's error as its source (`Crypto`, `Certificate`,
//! `Srtp`, `Rtc`); `Display` names the cause too, since logs print errors with `%`.

use thiserror::Error;

/// An error from a crate whose error type we do not name (rcgen, behind `rtc`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the media core refused or failed a request.
#[derive(Debug, Error)]
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
    /// webrtc-rs's crypto provider (for DTLS and SRTP) could not be had.
    #[error("crypto provider: {0}")]
    Crypto(#[source] rtc::crypto::CryptoError),
    /// The server's DTLS certificate could not be made.
    #[error("DTLS certificate: {0}")]
    Certificate(#[source] BoxError),
    /// A viewer's SRTP context could not be made from its DTLS keys.
    #[error("SRTP context: {0}")]
    Srtp(#[source] rtc::shared::error::Error),
    /// The DTLS handshake is done but left no SRTP keys (it negotiated no SRTP profile).
    #[error("DTLS gave no SRTP keys")]
    NoSrtpKeys,
    /// webrtc-rs failed at `context`, a step on our side of a connection (setting our own
    /// description, reading our own answer). Details are logged, not sent to clients.
    #[error("{context}: {source}")]
    Rtc {
        context: &'static str,
        #[source]
        source: rtc::shared::error::Error,
    },
    /// webrtc-rs left out something it always gives (our local description after it was set).
    #[error("webrtc-rs gave no {0}")]
    Missing(&'static str),
}

pub type Result<T, E = MediaError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn webrtc_failures_keep_their_cause() {
        let e = MediaError::Rtc {
            context: "set local description",
            source: rtc::shared::error::Error::Other("no ICE credentials".into()),
        };
        assert_eq!(e.to_string(), "set local description: no ICE credentials");
        assert_eq!(
            e.source().map(ToString::to_string).as_deref(),
            Some("no ICE credentials")
        );
        let e = MediaError::Certificate(Box::new(rtc::crypto::CryptoError::AuthenticationFailed));
        assert!(e.source().is_some());
    }
}
