//! WHIP (RFC 9725) and WHEP HTTP exchanges: POST an SDP offer, require `201 Created` with a
//! `Location` and an `application/sdp` answer, and DELETE the session resource afterwards.

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};
use reqwest::{Client, StatusCode, Url};

use crate::error::{Error, Result};

/// Media type of offers and answers (RFC 9725 §4.2).
pub const SDP_CONTENT_TYPE: &str = "application/sdp";

/// Longest response body kept in an error.
const ERROR_BODY_MAX_BYTES: usize = 512;

/// Which side of the server we talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/whip/{stream}`: publish.
    Whip,
    /// `/whep/{stream}`: play.
    Whep,
}

impl Endpoint {
    fn segment(self) -> &'static str {
        match self {
            Endpoint::Whip => "whip",
            Endpoint::Whep => "whep",
        }
    }
}

/// An established session: where to DELETE it and the SDP answer.
#[derive(Debug, Clone)]
pub struct Session {
    pub resource_url: Url,
    pub answer: String,
}

/// `{server}/whip/{stream}` or `{server}/whep/{stream}`, the stream name percent-encoded as
/// one path segment.
pub fn endpoint_url(server: &str, endpoint: Endpoint, stream: &str) -> Result<Url> {
    let mut url = Url::parse(server).map_err(|e| Error::Url {
        url: server.to_owned(),
        reason: e.to_string(),
    })?;
    url.path_segments_mut()
        .map_err(|()| Error::Url {
            url: server.to_owned(),
            reason: "cannot be a base URL".into(),
        })?
        .pop_if_empty()
        .push(endpoint.segment())
        .push(stream);
    Ok(url)
}

/// The absolute session URL: `Location` may be relative to the endpoint (RFC 9725 §4.2).
pub fn resolve_location(endpoint: &Url, location: &str) -> Result<Url> {
    endpoint.join(location).map_err(|e| Error::Url {
        url: location.to_owned(),
        reason: e.to_string(),
    })
}

/// POSTs `offer` and returns the session the server created.
pub async fn post_offer(
    client: &Client,
    endpoint: &Url,
    bearer: Option<&str>,
    offer: String,
) -> Result<Session> {
    const METHOD: &str = "POST";
    let mut request = client
        .post(endpoint.clone())
        .header(CONTENT_TYPE, SDP_CONTENT_TYPE)
        .body(offer);
    if let Some(token) = bearer {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = request.send().await.map_err(|source| Error::Request {
        method: METHOD,
        url: endpoint.to_string(),
        source,
    })?;

    let status = response.status();
    // RFC 9725 §4.2: success is exactly "201 Created"; anything else is a failure here.
    if status != StatusCode::CREATED {
        return Err(http_error(METHOD, endpoint, response).await);
    }
    let location = response
        .headers()
        .get(LOCATION)
        .ok_or_else(|| Error::Protocol("201 Created without a Location header".into()))?
        .to_str()
        .map_err(|_| Error::Protocol("Location header is not ASCII".into()))?
        .to_owned();
    let resource_url = resolve_location(endpoint, &location)?;
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if !is_sdp(&content_type) {
        return Err(Error::Protocol(format!(
            "answer Content-Type is {content_type:?}, expected {SDP_CONTENT_TYPE}"
        )));
    }
    let answer = response.text().await.map_err(|source| Error::Request {
        method: METHOD,
        url: endpoint.to_string(),
        source,
    })?;
    Ok(Session {
        resource_url,
        answer,
    })
}

/// DELETEs a session resource (RFC 9725 §4.2); any 2xx is success.
pub async fn delete(client: &Client, resource: &Url, bearer: Option<&str>) -> Result<()> {
    const METHOD: &str = "DELETE";
    let mut request = client.delete(resource.clone());
    if let Some(token) = bearer {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = request.send().await.map_err(|source| Error::Request {
        method: METHOD,
        url: resource.to_string(),
        source,
    })?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(http_error(METHOD, resource, response).await)
    }
}

async fn http_error(method: &'static str, url: &Url, response: reqwest::Response) -> Error {
    let status = response.status();
    let mut body = response.text().await.unwrap_or_default();
    if body.len() > ERROR_BODY_MAX_BYTES {
        let mut cut = ERROR_BODY_MAX_BYTES;
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        body.truncate(cut);
    }
    Error::Http {
        method,
        url: url.to_string(),
        status,
        body,
    }
}

/// `application/sdp`, ignoring case and parameters.
fn is_sdp(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(SDP_CONTENT_TYPE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_url_encodes_the_stream_name() {
        let u = endpoint_url("http://127.0.0.1:8080", Endpoint::Whip, "cam 1/a").unwrap();
        assert_eq!(u.as_str(), "http://127.0.0.1:8080/whip/cam%201%2Fa");
        let u = endpoint_url("http://h:1/base/", Endpoint::Whep, "s").unwrap();
        assert_eq!(u.as_str(), "http://h:1/base/whep/s");
        assert!(matches!(
            endpoint_url("not a url", Endpoint::Whep, "s"),
            Err(Error::Url { .. })
        ));
    }

    #[test]
    fn location_resolves_relative_and_absolute() {
        let e = Url::parse("http://h:1/whip/s").unwrap();
        assert_eq!(
            resolve_location(&e, "/whip/s/abc").unwrap().as_str(),
            "http://h:1/whip/s/abc"
        );
        assert_eq!(
            resolve_location(&e, "s/abc").unwrap().as_str(),
            "http://h:1/whip/s/abc"
        );
        assert_eq!(
            resolve_location(&e, "http://other:2/r/1").unwrap().as_str(),
            "http://other:2/r/1"
        );
    }

    #[test]
    fn sdp_content_type_matching() {
        assert!(is_sdp("application/sdp"));
        assert!(is_sdp("Application/SDP; charset=utf-8"));
        assert!(!is_sdp("text/plain"));
        assert!(!is_sdp(""));
    }
}
