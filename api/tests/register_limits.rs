//! Registration under a flood from one address: the per-address rate (429 + Retry-After), the
//! bound on concurrent password hashes (503 + Retry-After beyond the queue), duplicates and
//! reserved names refused before any hashing, control characters refused by field.

mod common;

use std::net::SocketAddr;

use api::accounts::AccountConfig;
use axum::http::{header, Method, StatusCode};
use common::*;
use serde_json::json;

async fn app_with(config: AccountConfig) -> (api::Api, axum::Router) {
    let mut api = api::Api::connect("mem://", SECRET).await.unwrap();
    api.set_account_config(&config);
    let router = api.router();
    (api, router)
}

fn from(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
}

fn registration(name: &str) -> serde_json::Value {
    json!({"username": name, "email": format!("{name}@example.com"), "password": "a good password"})
}

fn retry_after(h: &axum::http::HeaderMap) -> u64 {
    h.get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_from_one_address_is_rate_limited() {
    const ALLOWED: u32 = 5;
    let (api, r) = app_with(AccountConfig {
        registrations_per_hour: ALLOWED,
        ..AccountConfig::default()
    })
    .await;
    // 200 at once from one IPv6 /64 (different hosts in it), three names among them.
    let calls = (0..200).map(|i| {
        let r = r.clone();
        tokio::spawn(async move {
            let addr = from(&format!("[2001:db8:5::{:x}]:4000", i + 1));
            call_from(
                &r,
                addr,
                Method::POST,
                "/api/users/register",
                None,
                Some(registration(["ann", "ben", "cat"][i % 3])),
            )
            .await
        })
    });
    let mut limited = 0;
    let mut admitted = 0;
    for c in calls.collect::<Vec<_>>() {
        let (s, h, v) = c.await.unwrap();
        match s {
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                assert_eq!(code(&v), "rate_limited");
                assert!(v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("registrations from this address"));
                let wait = retry_after(&h);
                assert!((1..=3600).contains(&wait), "Retry-After {wait}");
            }
            StatusCode::CREATED | StatusCode::CONFLICT => admitted += 1,
            other => panic!("{other}: {v}"),
        }
    }
    assert_eq!(admitted, ALLOWED);
    assert_eq!(limited, 200 - ALLOWED);
    let hashes = api.state().accounts.hashes.started();
    assert!(hashes <= u64::from(ALLOWED), "{hashes} hashes");
    // Another address is not affected.
    let (s, _, v) = call_from(
        &r,
        from("198.51.100.1:4000"),
        Method::POST,
        "/api/users/register",
        None,
        Some(registration("dan")),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_hashes_never_exceed_the_bound() {
    let (api, r) = app_with(AccountConfig {
        registrations_per_hour: 0,
        concurrent_hashes: 2,
        hash_queue: 3,
        ..AccountConfig::default()
    })
    .await;
    let calls = (0..60).map(|i| {
        let r = r.clone();
        tokio::spawn(async move {
            call_from(
                &r,
                from("192.0.2.10:5000"),
                Method::POST,
                "/api/users/register",
                None,
                Some(registration(&format!("user{i}"))),
            )
            .await
        })
    });
    let (mut created, mut busy) = (0, 0);
    for c in calls.collect::<Vec<_>>() {
        let (s, h, v) = c.await.unwrap();
        match s {
            StatusCode::CREATED => created += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                busy += 1;
                assert_eq!(code(&v), "busy");
                assert!(retry_after(&h) >= 1);
            }
            other => panic!("{other}: {v}"),
        }
    }
    let gate = &api.state().accounts.hashes;
    assert_eq!(created + busy, 60);
    assert!(
        busy > 0,
        "60 at once against 2 slots + 3 queued: some are turned away"
    );
    assert!(
        created >= 5,
        "the slots and the queue were served: {created}"
    );
    assert!(gate.peak() <= 2, "peak {} concurrent hashes", gate.peak());
    assert_eq!(gate.started(), created);
}

#[tokio::test]
async fn duplicates_and_reserved_names_are_refused_without_hashing() {
    let (api, r) = app_with(AccountConfig {
        configured_streams: vec!["demo".into()],
        ..AccountConfig::default()
    })
    .await;
    register(&r, "alice").await;
    let hashes = || api.state().accounts.hashes.started();
    let before = hashes();
    for (body, message) in [
        (
            json!({"username": "ALICE", "email": "other@example.com", "password": "a good password"}),
            "username taken",
        ),
        (
            json!({"username": "alice2", "email": "Alice@Example.com", "password": "a good password"}),
            "email already registered",
        ),
        (registration("demo"), "username is reserved"),
        (registration("Demo"), "username is reserved"),
        (registration("whip"), "username is reserved"),
        (registration("api"), "username is reserved"),
        (registration("_next"), "username is reserved"),
    ] {
        let (s, v) = call(&r, Method::POST, "/api/users/register", None, Some(body)).await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        assert_eq!(v["error"]["message"], message);
    }
    assert_eq!(hashes(), before, "no password was hashed");
}

#[tokio::test]
async fn control_characters_are_refused_with_the_field() {
    let (_api, r) = app().await;
    for (body, field) in [
        (
            json!({"username": "eve", "email": "eve\u{0}@example.com", "password": "a good password"}),
            "email",
        ),
        (
            json!({"username": "eve", "email": "eve@example.com\r\nBcc: x@y.z", "password": "a good password"}),
            "email",
        ),
        (
            json!({"username": "eve\u{1b}", "email": "eve@example.com", "password": "a good password"}),
            "username",
        ),
    ] {
        let (s, v) = call(&r, Method::POST, "/api/users/register", None, Some(body)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"]["field"], field);
        assert_eq!(v["error"]["message"], "must not contain control characters");
    }
    let (_, token, _) = register(&r, "eve").await;
    for title in ["Live\u{7}", "two\nlines", "a \u{202E}gnp.exe"] {
        let (s, v) = call(
            &r,
            Method::POST,
            "/api/streams",
            Some(&token),
            Some(json!({"title": title})),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"]["field"], "title");
    }
    let (s, v) = call(&r, Method::GET, "/api/streams?q=a%07b", None, None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["field"], "q");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_registrations_of_one_name_create_one_account() {
    let (api, r) = app_with(AccountConfig {
        registrations_per_hour: 0,
        ..AccountConfig::default()
    })
    .await;
    for round in 0..10 {
        let name = format!("twin{round}");
        let calls: Vec<_> = (0..8)
            .map(|i| {
                let r = r.clone();
                let body = json!({"username": name, "email": format!("{name}.{i}@example.com"), "password": "a good password"});
                tokio::spawn(async move {
                    call(&r, Method::POST, "/api/users/register", None, Some(body)).await
                })
            })
            .collect();
        let mut created = 0;
        for c in calls {
            let (s, v) = c.await.unwrap();
            match s {
                StatusCode::CREATED => created += 1,
                StatusCode::CONFLICT => assert_eq!(v["error"]["message"], "username taken"),
                other => panic!("{other}: {v}"),
            }
        }
        assert_eq!(created, 1, "round {round}");
    }
    let mut res = api
        .state()
        .db
        .query("SELECT VALUE username FROM user")
        .await
        .unwrap();
    let names: Vec<String> = res.take(0).unwrap();
    let unique: std::collections::HashSet<_> = names.iter().collect();
    assert_eq!(names.len(), unique.len(), "no duplicate usernames");
}
