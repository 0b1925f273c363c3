//! The WHIP and WHEP endpoint and session resources. Both protocols share one shape; only who
//! may create a session (WHIP needs the stream key) and which side sends media differ.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use media::{Role, SessionId};

use crate::error::SignalingError;
use crate::{valid_stream_name, SignalingState};

const SDP: &str = "application/sdp";
const TRICKLE: &str = "application/trickle-ice-sdpfrag";

fn prefix(role: Role) -> &'static str {
    match role {
        Role::Publisher => "whip",
        Role::Viewer => "whep",
    }
}

fn content_type_is(headers: &HeaderMap, expected: &'static str) -> Result<(), SignalingError> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected));
    if ok {
        Ok(())
    } else {
        Err(SignalingError::UnsupportedMediaType(expected))
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn check_stream(stream: &str) -> Result<(), SignalingError> {
    if valid_stream_name(stream) {
        Ok(())
    } else {
        Err(SignalingError::BadRequest(
            "stream names are 1-64 characters of A-Z, a-z, 0-9, '-' and '_'".into(),
        ))
    }
}

fn utf8(body: Bytes) -> Result<String, SignalingError> {
    String::from_utf8(body.to_vec())
        .map_err(|_| SignalingError::BadRequest("body is not UTF-8".into()))
}

async fn create(
    st: SignalingState,
    role: Role,
    stream: String,
    client: IpAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SignalingError> {
    check_stream(&stream)?;
    content_type_is(&headers, SDP)?;
    let shared = match &st.shared_session_rate {
        Some(rate) => rate.take(client).await,
        None => None,
    };
    shared
        .unwrap_or_else(|| st.session_rate.take(client, Instant::now()))
        .map_err(SignalingError::RateLimited)?;
    if role == Role::Publisher {
        st.authorizer
            .authorize_publish(&stream, bearer(&headers))
            .await?;
    }
    let offer = utf8(body)?;
    if offer.trim().is_empty() {
        return Err(SignalingError::Media(media::MediaError::BadOffer(
            "empty body".into(),
        )));
    }
    let answer = match role {
        Role::Publisher => st.media.publish(&stream, offer, Some(client)).await?,
        Role::Viewer => st.media.view(&stream, offer, Some(client)).await?,
    };
    // RFC 9725 §4.2: 201 Created, the answer, and the session URL in Location (OBS needs both).
    let location = format!("/{}/{}/{}", prefix(role), stream, answer.id);
    let mut resp = (StatusCode::CREATED, answer.sdp).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag(answer.id)) {
        h.insert(header::ETAG, v);
    }
    h.insert("accept-patch", HeaderValue::from_static(TRICKLE));
    add_ice_server_links(&st, h);
    Ok(resp)
}

fn add_ice_server_links(st: &SignalingState, h: &mut HeaderMap) {
    for url in &st.ice_servers {
        if let Ok(v) = HeaderValue::from_str(&format!("<{url}>; rel=\"ice-server\"")) {
            h.append(header::LINK, v);
        }
    }
}

/// A session's entity-tag (RFC 9725 §4.3.1). Without ICE restarts it never changes.
fn etag(id: SessionId) -> String {
    format!("\"{id}\"")
}

/// RFC 9725 §4.3.1: a trickle PATCH names the session's entity-tag in `If-Match`; none →
/// 428, another one → 412; `*` asks for an ICE restart (§4.3.2), which we do not do.
pub(crate) fn check_if_match(headers: &HeaderMap, id: SessionId) -> Result<(), SignalingError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Err(SignalingError::PreconditionRequired);
    };
    let value = value
        .to_str()
        .map_err(|_| SignalingError::BadRequest("If-Match is not ASCII".into()))?;
    if value.trim() == "*" {
        return Err(SignalingError::IceRestartUnsupported);
    }
    let ours = etag(id);
    let matches = value
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == ours);
    if matches {
        Ok(())
    } else {
        Err(SignalingError::PreconditionFailed)
    }
}

/// The candidates of an RFC 8840 SDP fragment; 400 for anything that is not one: every
/// non-empty line must be `<type>=<value>`, and there must be at least one line.
pub(crate) fn fragment_candidates(fragment: &str) -> Result<Vec<String>, SignalingError> {
    let mut lines = 0;
    let mut candidates = Vec::new();
    for line in fragment.lines().map(str::trim).filter(|l| !l.is_empty()) {
        lines += 1;
        let b = line.as_bytes();
        if b.len() < 2 || !b[0].is_ascii_lowercase() || b[1] != b'=' {
            return Err(SignalingError::BadRequest(format!(
                "not an SDP fragment line: {:?}",
                line.chars().take(40).collect::<String>()
            )));
        }
        if let Some(c) = line.strip_prefix("a=candidate:") {
            if c.split_whitespace().count() < 8 {
                return Err(SignalingError::BadRequest(
                    "a=candidate needs foundation, component, transport, priority, address, port, typ and type".into(),
                ));
            }
            candidates.push(line[2..].to_owned());
        }
    }
    if lines == 0 {
        return Err(SignalingError::BadRequest("empty trickle fragment".into()));
    }
    Ok(candidates)
}

fn session_id(s: &str) -> Result<SessionId, SignalingError> {
    s.parse().map_err(SignalingError::Media)
}

async fn patch(
    st: SignalingState,
    role: Role,
    stream: String,
    session: String,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SignalingError> {
    let id = session_id(&session)?;
    content_type_is(&headers, TRICKLE)?;
    check_if_match(&headers, id)?;
    let fragment = utf8(body)?;
    let candidates = fragment_candidates(&fragment)?;
    st.media.trickle(id, role, &stream, candidates).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete(
    st: SignalingState,
    role: Role,
    stream: String,
    session: String,
) -> Result<Response, SignalingError> {
    let id = session_id(&session)?;
    st.media.close(id, role, &stream).await?;
    // OBS counts only 200 as success.
    Ok(StatusCode::OK.into_response())
}

fn options(st: &SignalingState) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert("accept-post", HeaderValue::from_static(SDP));
    add_ice_server_links(st, h);
    resp
}

pub(crate) async fn whip_post(
    State(st): State<SignalingState>,
    Path(stream): Path<String>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SignalingError> {
    create(st, Role::Publisher, stream, client.ip(), headers, body).await
}

pub(crate) async fn whep_post(
    State(st): State<SignalingState>,
    Path(stream): Path<String>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SignalingError> {
    create(st, Role::Viewer, stream, client.ip(), headers, body).await
}

pub(crate) async fn whip_patch(
    State(st): State<SignalingState>,
    Path((stream, session)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SignalingError> {
    patch(st, Role::Publisher, stream, session, headers, body).await
}

pub(crate) async fn whep_patch(
    State(st): State<SignalingState>,
    Path((stream, session)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SignalingError> {
    patch(st, Role::Viewer, stream, session, headers, body).await
}

pub(crate) async fn whip_delete(
    State(st): State<SignalingState>,
    Path((stream, session)): Path<(String, String)>,
) -> Result<Response, SignalingError> {
    delete(st, Role::Publisher, stream, session).await
}

pub(crate) async fn whep_delete(
    State(st): State<SignalingState>,
    Path((stream, session)): Path<(String, String)>,
) -> Result<Response, SignalingError> {
    delete(st, Role::Viewer, stream, session).await
}

pub(crate) async fn whip_options(State(st): State<SignalingState>) -> Response {
    options(&st)
}

pub(crate) async fn whep_options(State(st): State<SignalingState>) -> Response {
    options(&st)
}
