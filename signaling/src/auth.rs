//! Who may publish to a stream. The binary decides the implementation: [`StaticKeys`] from
//! config now, the platform database later.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use subtle::ConstantTimeEq;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("an Authorization: Bearer <stream key> header is required")]
    MissingToken,
    #[error("the stream key is not valid for this stream")]
    InvalidToken,
    #[error("no such stream")]
    UnknownStream,
    /// Another node of the cluster has this stream's publisher.
    #[error("the stream is live from another node ({0})")]
    LiveElsewhere(String),
    #[error("authorization backend failed: {0}")]
    Backend(String),
}

pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<(), AuthError>> + Send + 'a>>;

/// Decides whether `token` may publish to `stream`.
pub trait StreamAuthorizer: Send + Sync + 'static {
    fn authorize_publish<'a>(&'a self, stream: &'a str, token: Option<&'a str>) -> AuthFuture<'a>;
}

/// Stream name → key, from config. Keys are compared in constant time.
#[derive(Debug, Clone, Default)]
pub struct StaticKeys {
    keys: HashMap<String, String>,
}

impl StaticKeys {
    pub fn new(keys: HashMap<String, String>) -> Self {
        Self { keys }
    }

    fn check(&self, stream: &str, token: Option<&str>) -> Result<(), AuthError> {
        let expected = self.keys.get(stream).ok_or(AuthError::UnknownStream)?;
        let token = token.ok_or(AuthError::MissingToken)?;
        if bool::from(expected.as_bytes().ct_eq(token.as_bytes())) {
            Ok(())
        } else {
            Err(AuthError::InvalidToken)
        }
    }
}

impl StreamAuthorizer for StaticKeys {
    fn authorize_publish<'a>(&'a self, stream: &'a str, token: Option<&'a str>) -> AuthFuture<'a> {
        let result = self.check(stream, token);
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_keys() {
        let keys = StaticKeys::new(HashMap::from([("demo".to_string(), "s3cret".to_string())]));
        assert_eq!(keys.check("demo", Some("s3cret")), Ok(()));
        assert_eq!(
            keys.check("demo", Some("s3cre")),
            Err(AuthError::InvalidToken)
        );
        assert_eq!(keys.check("demo", None), Err(AuthError::MissingToken));
        assert_eq!(
            keys.check("other", Some("s3cret")),
            Err(AuthError::UnknownStream)
        );
    }
}
