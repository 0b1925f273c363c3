//! The API's one error type: status mapping in one place, `{"error": {"code", "message"}}`
//! bodies (plus `field` for validation errors), internal details logged, never sent.

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::hash_gate::{GateError, BUSY_RETRY_AFTER};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Validation {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("request body is too large")]
    PayloadTooLarge,
    #[error("{0}")]
    Unprocessable(String),
    #[error("too many attempts; try again later")]
    RateLimited,
    /// 429 with `Retry-After`; `message` says which limit.
    #[error("{message}")]
    TooManyRequests {
        message: &'static str,
        retry_after: Duration,
    },
    /// 503 with `Retry-After`: a bounded resource (password hashing) is at capacity.
    #[error("the server is busy; try again shortly")]
    Busy { retry_after: Duration },
    /// 503 with `Retry-After`: the database is unreachable (a server restarting, say).
    #[error("the database is unreachable; try again shortly")]
    Unavailable,
    #[error("internal error: {0}")]
    Internal(String),
}

/// What clients are told to wait while the database is unreachable.
pub const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(2);

impl ApiError {
    pub fn validation(field: &'static str, message: impl Into<String>) -> Self {
        ApiError::Validation {
            field,
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Validation { .. } => (StatusCode::BAD_REQUEST, "validation"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
            ApiError::RateLimited | ApiError::TooManyRequests { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
            }
            ApiError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// What a unique index's conflict means to the client, by index name (see `db::SCHEMA`).
fn conflict_message(index: &str) -> Option<&'static str> {
    Some(match index {
        "user_username" => "username taken",
        "user_email" => "email already registered",
        "follow_pair" => "already following this channel",
        "stream_owner" => "you already have a stream; edit it with PUT",
        "stream_name" => "a stream with this name already exists",
        "category_slug" => "category already exists",
        _ => return None,
    })
}

/// The unique index a write collided with: SurrealDB says "Database index `NAME` already
/// contains ..." (the same text from embedded engines and over `ws://`).
fn unique_index(text: &str) -> Option<&str> {
    let rest = &text[text.find("Database index `")? + "Database index `".len()..];
    let name = &rest[..rest.find('`')?];
    rest[name.len()..]
        .starts_with("` already contains")
        .then_some(name)
}

/// A transaction lost a read/write conflict and may be retried as a whole.
pub(crate) fn is_retryable(e: &surrealdb::Error) -> bool {
    matches!(
        e.query_details(),
        Some(surrealdb::types::QueryError::TransactionConflict)
    ) || e.to_string().contains("can be retried")
}

impl From<surrealdb::Error> for ApiError {
    fn from(e: surrealdb::Error) -> Self {
        if e.is_connection() {
            return ApiError::Unavailable;
        }
        let text = e.to_string();
        if let Some(index) = unique_index(&text) {
            let message = conflict_message(index).unwrap_or("already exists");
            return ApiError::Conflict(message.to_owned());
        }
        ApiError::Internal(text)
    }
}

impl From<GateError> for ApiError {
    fn from(e: GateError) -> Self {
        match e {
            GateError::Busy(_) => ApiError::Busy {
                retry_after: BUSY_RETRY_AFTER,
            },
            GateError::Join(e) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => ApiError::Unprocessable(e.body_text()),
            JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest(e.body_text()),
            JsonRejection::MissingJsonContentType(_) => {
                ApiError::BadRequest("Content-Type must be application/json".into())
            }
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge
            }
            other => ApiError::BadRequest(other.body_text()),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "api request failed");
            "internal error".to_owned()
        } else {
            self.to_string()
        };
        let field = match &self {
            ApiError::Validation { field, .. } => Some(*field),
            _ => None,
        };
        let retry_after = match &self {
            ApiError::TooManyRequests { retry_after, .. } | ApiError::Busy { retry_after } => {
                Some(*retry_after)
            }
            ApiError::Unavailable => Some(UNAVAILABLE_RETRY_AFTER),
            _ => None,
        };
        let mut resp = (
            status,
            axum::Json(ErrorBody {
                error: ErrorDetail {
                    code,
                    message,
                    field,
                },
            }),
        )
            .into_response();
        if let Some(wait) = retry_after {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(wait)),
            );
        }
        resp
    }
}

/// `Retry-After` in whole seconds (RFC 9110 §10.2.3), rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_conflicts_are_named_by_index() {
        let text = "Database index `user_email` already contains 'a@b.c', with record `user:x`";
        assert_eq!(unique_index(text), Some("user_email"));
        assert_eq!(
            conflict_message("user_email"),
            Some("email already registered")
        );
        assert_eq!(unique_index("Database index `x` is broken"), None);
        assert_eq!(unique_index("something else"), None);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }
}
