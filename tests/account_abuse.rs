//! The account endpoints as shipped (the binary's wiring): configured stream names and route
//! words cannot be registered, and a registration flood from one address gets 429 with
//! Retry-After over real sockets.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;

async fn register(c: &reqwest::Client, b: &str, name: &str) -> reqwest::Response {
    c.post(format!("{b}/api/users/register"))
        .json(&json!({"username": name, "email": format!("{name}@example.com"), "password": "a good password"}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn configured_stream_names_are_reserved() {
    let (server, _dir) = start_server().await;
    let (c, b) = (reqwest::Client::new(), base(&server));
    // `demo` and `other` are configured by key in the test config.
    for name in ["demo", "Other", "whip", "watch", "api", "hls"] {
        let resp = register(&c, &b, name).await;
        assert_eq!(resp.status(), StatusCode::CONFLICT, "{name}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["message"], "username is reserved", "{name}");
    }
    assert_eq!(
        register(&c, &b, "carla").await.status(),
        StatusCode::CREATED
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_registration_flood_from_one_address_is_refused() {
    let (server, _dir) = start_server_with(|c| c.accounts.registrations_per_hour = 3).await;
    let (c, b) = (reqwest::Client::new(), base(&server));
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let (c, b) = (c.clone(), b.clone());
            tokio::spawn(async move { register(&c, &b, ["ann", "ben", "cat"][i % 3]).await })
        })
        .collect();
    let (mut limited, mut admitted) = (0, 0);
    for call in calls {
        let resp = call.await.unwrap();
        match resp.status() {
            StatusCode::TOO_MANY_REQUESTS => {
                let wait: u64 = resp.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=3600).contains(&wait), "Retry-After {wait}");
                limited += 1;
            }
            StatusCode::CREATED | StatusCode::CONFLICT => admitted += 1,
            other => panic!("{other}"),
        }
    }
    assert_eq!((admitted, limited), (3, 17));
    server.shutdown().await;
}
