//! WHIP (RFC 9725) and WHEP (draft-ietf-wish-whep) HTTP resources in front of the media core.
//!
//! - `POST /whip/{stream}` (bearer stream key) and `POST /whep/{stream}`: offer in, `201 Created`
//!   with the answer and a `Location` of the session resource out ([`resource`]).
//! - `PATCH {Location}`: trickle ICE fragments (RFC 8840); `DELETE {Location}`: end the session.
//! - `OPTIONS`: no token needed; CORS for browser publishers and players is applied by the binary.
//!
//! Who may publish is decided by a [`StreamAuthorizer`], which the binary wires to config or to
//! the platform database. The client's address (`ConnectInfo<SocketAddr>`, which the binary
//! sets, behind trusted proxies too) is rate-limited here ([`limit`]) and counted by the
//! media core's per-address session limit.

pub mod auth;
pub mod error;
pub mod limit;

/// Entry points for the fuzz targets (`fuzz/`): parsers of what clients send, fed anything.
pub mod fuzzing {
    use axum::http::{header, HeaderMap, HeaderValue};

    /// A trickle PATCH's body (RFC 8840 fragment) and `If-Match` value.
    pub fn trickle(data: &[u8]) {
        let (head, body) = data.split_at(data.len().min(64));
        let _ = crate::resource::fragment_candidates(&String::from_utf8_lossy(body));
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(head) {
            headers.insert(header::IF_MATCH, v);
        }
        let _ = crate::resource::check_if_match(&headers, media::SessionId(7));
    }
}
mod resource;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use axum::Router;
use media::MediaHandle;

pub use auth::{AuthError, AuthFuture, StaticKeys, StreamAuthorizer};
pub use error::SignalingError;

/// Largest SDP offer or trickle fragment accepted (413 beyond). Chromium's offers are ~6 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the handlers need.
#[derive(Clone)]
pub struct SignalingState {
    pub media: MediaHandle,
    pub authorizer: Arc<dyn StreamAuthorizer>,
    /// `stun:`/`turn:` URLs sent as `Link: <url>; rel="ice-server"` (RFC 9725 §4.6).
    pub ice_servers: Vec<String>,
    /// How fast one address may create sessions (429 beyond).
    pub session_rate: Arc<limit::SessionRate>,
    /// The same rate counted cluster-wide, when in a cluster (this node's alone otherwise).
    pub shared_session_rate: Option<Arc<dyn limit::SharedSessionRate>>,
}

/// Routes for `/whip/...` and `/whep/...`.
pub fn router(state: SignalingState) -> Router {
    use resource::*;
    Router::new()
        .route("/whip/{stream}", post(whip_post).options(whip_options))
        .route(
            "/whip/{stream}/{session}",
            axum::routing::patch(whip_patch).delete(whip_delete),
        )
        .route("/whep/{stream}", post(whep_post).options(whep_options))
        .route(
            "/whep/{stream}/{session}",
            axum::routing::patch(whep_patch).delete(whep_delete),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Stream names are path segments and log fields: keep them plain.
pub fn valid_stream_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
