//! Login limits over HTTP: a stranger's failures lock only the stranger out of an account (the
//! owner logs in from elsewhere), and one IPv6 /64 counts as one address.

mod common;

use std::net::SocketAddr;

use api::ratelimit::{LOGIN_ATTEMPTS_PER_ADDRESS, LOGIN_FAILURES_PER_ACCOUNT_ADDRESS};
use axum::http::{header, Method, StatusCode};
use common::*;
use serde_json::json;

fn at(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
}

async fn login(
    r: &axum::Router,
    from: Option<SocketAddr>,
    name: &str,
    password: &str,
) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    call_from(
        r,
        from,
        Method::POST,
        "/api/users/login",
        None,
        Some(json!({"username": name, "password": password})),
    )
    .await
}

#[tokio::test]
async fn a_stranger_cannot_lock_the_owner_out() {
    let (_api, r) = app().await;
    register(&r, "dave").await;
    let stranger = at("198.51.100.7:5000");
    for _ in 0..LOGIN_FAILURES_PER_ACCOUNT_ADDRESS {
        let (s, _, _) = login(&r, stranger, "dave", "wrong password").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, h, v) = login(&r, stranger, "dave", "wrong password").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(code(&v), "rate_limited");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("for this account from this address"));
    assert!(h.contains_key(header::RETRY_AFTER));
    // Even the right password is refused from there ...
    let (s, _, _) = login(&r, stranger, "dave", "a good password").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    // ... but the owner, elsewhere, logs in.
    let (s, _, v) = login(&r, at("203.0.113.9:6000"), "dave", "a good password").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _, v) = login(
        &r,
        at("[2001:db8:9::1]:6000"),
        "DAVE@example.com",
        "a good password",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn one_ipv6_64_is_one_address() {
    let (_api, r) = app().await;
    register(&r, "erin").await;
    for i in 0..LOGIN_ATTEMPTS_PER_ADDRESS {
        // A new host in the /64 and a new account name each time.
        let from = at(&format!("[2001:db8:7:1::{:x}]:5000", i + 1));
        let (s, _, _) = login(&r, from, &format!("nobody{i}"), "wrong password").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, h, v) = login(
        &r,
        at("[2001:db8:7:1:ffff::1]:5000"),
        "erin",
        "a good password",
    )
    .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("from this address"));
    assert!(h.contains_key(header::RETRY_AFTER));
    let (s, _, v) = login(&r, at("[2001:db8:7:2::1]:5000"), "erin", "a good password").await;
    assert_eq!(s, StatusCode::OK, "the next /64 is another address: {v}");
}
