//! Signaling's one error type and its HTTP mapping (RFC 9725 §4, WHEP draft §4).
//!
//! Bodies are `{"error": {"code": "...", "message": "..."}}`, as everywhere in Glint. Internal
//! details are logged and never sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use media::MediaError;

use crate::auth::AuthError;

/// `Retry-After` of a WHEP request for a stream nobody publishes (seconds).
const NOT_LIVE_RETRY_AFTER_SECS: &str = "2";

#[derive(Debug, thiserror::Error)]
pub enum SignalingError {
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("Content-Type must be {0}")]
    UnsupportedMediaType(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("ICE restart is not supported; start a new session")]
    IceRestartUnsupported,
    /// RFC 9725 §4.3.1: a trickle PATCH must carry the session's entity-tag in `If-Match`.
    #[error("If-Match with the session's ETag is required")]
    PreconditionRequired,
    #[error("If-Match does not match the session's ETag")]
    PreconditionFailed,
    /// This address creates sessions too fast; it may again after the duration.
    #[error("too many session requests from this address; retry later")]
    RateLimited(std::time::Duration),
}

impl SignalingError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        use MediaError as M;
        match self {
            SignalingError::Media(m) => match m {
                M::BadOffer(_) => (StatusCode::BAD_REQUEST, "bad_offer"),
                M::NotAcceptable(_) => (StatusCode::NOT_ACCEPTABLE, "not_acceptable"),
                M::StreamBusy(_) => (StatusCode::CONFLICT, "stream_busy"),
                // draft-ietf-wish-whep §4.2: nothing published (yet) is a conflict with the
                // stream's state; `Retry-After` says when to ask again.
                M::StreamNotLive(_) => (StatusCode::CONFLICT, "stream_not_live"),
                M::UnknownSession => (StatusCode::NOT_FOUND, "unknown_session"),
                M::BadCandidate(_) => (StatusCode::BAD_REQUEST, "bad_candidate"),
                M::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
                M::TooManyFromAddress(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_sessions"),
                M::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            },
            SignalingError::Auth(a) => match a {
                AuthError::MissingToken => (StatusCode::UNAUTHORIZED, "missing_token"),
                AuthError::InvalidToken => (StatusCode::UNAUTHORIZED, "invalid_token"),
                AuthError::UnknownStream => (StatusCode::NOT_FOUND, "unknown_stream"),
                AuthError::LiveElsewhere(_) => (StatusCode::CONFLICT, "stream_busy"),
                AuthError::Backend(_) => (StatusCode::SERVICE_UNAVAILABLE, "auth_unavailable"),
            },
            SignalingError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            SignalingError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            SignalingError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            SignalingError::PreconditionRequired => {
                (StatusCode::PRECONDITION_REQUIRED, "precondition_required")
            }
            SignalingError::PreconditionFailed => {
                (StatusCode::PRECONDITION_FAILED, "precondition_failed")
            }
            SignalingError::IceRestartUnsupported => {
                (StatusCode::NOT_IMPLEMENTED, "ice_restart_unsupported")
            }
        }
    }
}

impl IntoResponse for SignalingError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = if status.is_server_error()
            && !matches!(
                status,
                StatusCode::SERVICE_UNAVAILABLE | StatusCode::NOT_IMPLEMENTED
            ) {
            tracing::error!(error = %self, "signaling request failed");
            "internal error".to_string()
        } else {
            tracing::debug!(error = %self, %status, "signaling request refused");
            self.to_string()
        };
        let body = serde_json::json!({ "error": { "code": code, "message": message } });
        let mut resp = (status, axum::Json(body)).into_response();
        let headers = resp.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        let retry_secs = match &self {
            SignalingError::RateLimited(wait) => Some(wait.as_secs_f64().ceil().max(1.0) as u64),
            // Held sessions end when their peers leave or fail to connect (≤ the connect timeout).
            SignalingError::Media(MediaError::TooManyFromAddress(_)) => Some(10),
            _ => None,
        };
        if let Some(v) = retry_secs.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
            headers.insert(header::RETRY_AFTER, v);
        }
        if matches!(self, SignalingError::Media(MediaError::StreamNotLive(_))) {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(NOT_LIVE_RETRY_AFTER_SECS),
            );
        }
        resp
    }
}
