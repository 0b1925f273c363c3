//! In-process API on `mem://`: requests go through the router with `oneshot`, no socket.
#![allow(dead_code)]

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

pub const SECRET: &[u8] = b"test-secret-test-secret-test-sec";

pub async fn app() -> (api::Api, Router) {
    let api = api::Api::connect("mem://", SECRET)
        .await
        .expect("mem:// connects");
    let router = api.router();
    (api, router)
}

pub async fn call(
    router: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (status, _, value) = call_from(router, None, method, uri, token, body).await;
    (status, value)
}

/// [`call`] as a client at `from` (the connection info the server's middleware provides),
/// with the response headers.
pub async fn call_from(
    router: &Router,
    from: Option<SocketAddr>,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(addr) = from {
        req = req.extension(ConnectInfo(addr));
    }
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    (status, headers, value)
}

/// Register and return (user id, access token, refresh token).
pub async fn register(router: &Router, name: &str) -> (String, String, String) {
    let (status, body) = call(
        router,
        Method::POST,
        "/api/users/register",
        None,
        Some(json!({"username": name, "email": format!("{name}@example.com"), "password": "a good password"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (
        body["user"]["id"].as_str().unwrap().to_owned(),
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

pub fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no code>")
}
