//! The crate's one error type. HTTP failures keep their status code so tests can assert on
//! it (`err.status() == Some(StatusCode::UNAUTHORIZED)`).

use std::time::Duration;

use reqwest::StatusCode;

use crate::stats::EndReason;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while signalling, connecting or waiting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with a status other than the one the protocol requires.
    #[error("{method} {url} answered {status}: {body}")]
    Http {
        method: &'static str,
        url: String,
        status: StatusCode,
        /// The response body, cut to a few hundred bytes.
        body: String,
    },
    /// The request did not get a response (refused, timed out, reset).
    #[error("{method} {url} failed: {source}")]
    Request {
        method: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// A URL we were given or told to use does not parse.
    #[error("invalid URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    /// The response violates WHIP/WHEP (RFC 9725) in a way the status does not show.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The SDP answer does not parse, or str0m rejects it.
    #[error("SDP answer rejected: {0}")]
    Sdp(String),
    /// The answer parses but does not give us what we need (e.g. no common video codec).
    #[error("negotiation failed: {0}")]
    Negotiation(String),
    /// The WebRTC stack failed.
    #[error("WebRTC: {0}")]
    Rtc(#[from] str0m::RtcError),
    /// Binding or using the UDP socket failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// A wait ran out of time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: &'static str, after: Duration },
    /// The peer ended before the awaited condition held.
    #[error("peer ended ({reason:?}) before the awaited condition held")]
    PeerEnded { reason: Option<EndReason> },
}

impl Error {
    /// The HTTP status, when the server answered with an unexpected one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_exposed_only_for_http_errors() {
        let e = Error::Http {
            method: "POST",
            url: "http://x/whip/s".into(),
            status: StatusCode::CONFLICT,
            body: "stream busy".into(),
        };
        assert_eq!(e.status(), Some(StatusCode::CONFLICT));
        assert_eq!(
            e.to_string(),
            "POST http://x/whip/s answered 409 Conflict: stream busy"
        );
        assert_eq!(Error::Protocol("x".into()).status(), None);
    }
}
