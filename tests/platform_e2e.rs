//! The platform and the media core together: a channel's own stream key publishes over WHIP,
//! the stream goes live in the API, followers get the SSE notification, rotated-away keys are
//! refused, and stopping makes the stream offline.

mod common;

use std::time::Duration;

use common::*;
use loadtest::{publish, PublishConfig, StatusCode};
use reqwest::Client;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

async fn post_json(c: &Client, url: String, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = c.post(url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn register(c: &Client, b: &str, name: &str) -> (String, String) {
    let (s, v) = post_json(c, format!("{b}/api/users/register"), None, json!({"username": name, "email": format!("{name}@example.com"), "password": "a good password"})).await;
    assert_eq!(s, 201, "{v}");
    (
        v["user"]["id"].as_str().unwrap().to_owned(),
        v["access_token"].as_str().unwrap().to_owned(),
    )
}

async fn stream_live(c: &Client, b: &str, id: &str) -> bool {
    let v: Value = c
        .get(format!("{b}/api/streams/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["live"].as_bool().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_with_the_channel_key_goes_live_and_notifies_followers() {
    let (server, _dir) = start_server().await;
    let b = base(&server);
    let c = Client::new();
    let (streamer, streamer_token) = register(&c, &b, "carla").await;
    let (_fan, fan_token) = register(&c, &b, "fan").await;
    let (s, v) = post_json(
        &c,
        format!("{b}/api/streams"),
        Some(&streamer_token),
        json!({"title": "Live from glint", "category": "gaming"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let stream_id = v["id"].as_str().unwrap().to_owned();
    let key = v["stream_key"].as_str().unwrap().to_owned();
    let (s, _) = post_json(
        &c,
        format!("{b}/api/follows"),
        Some(&fan_token),
        json!({"channel_id": streamer}),
    )
    .await;
    assert_eq!(s, 201);

    // The fan's notification stream, open before the streamer goes live.
    let mut sse = c
        .get(format!("{b}/api/notifications/stream"))
        .bearer_auth(&fan_token)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);

    // Wrong key: 401, and nothing goes live.
    let err = publish(PublishConfig::new(&b, "carla", "live_wrong"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
    // A stream nobody created: 404.
    let err = publish(PublishConfig::new(&b, "nobody", &key))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));

    let publisher = publish(PublishConfig::new(&b, "carla", &key))
        .await
        .unwrap();
    publisher.wait_connected(WAIT).await.unwrap();

    let event = tokio::time::timeout(WAIT, async {
        let mut text = String::new();
        while let Some(chunk) = sse.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("event: notification") && text.contains("\n\n") {
                return text;
            }
        }
        panic!("SSE stream ended: {text}");
    })
    .await
    .expect("go-live notification over SSE");
    assert!(event.contains("\"stream\":\"carla\""), "{event}");
    assert!(event.contains("Live from glint"), "{event}");

    assert!(stream_live(&c, &b, &stream_id).await);
    let list: Value = c
        .get(format!("{b}/api/streams"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"][0]["name"], "carla");
    let stored: Value = c
        .get(format!("{b}/api/notifications"))
        .bearer_auth(&fan_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stored.as_array().unwrap().len(), 1);

    // Rotate the key while live: the publisher on the old key is ended at once (see
    // tests/key_rotation.rs), and the old key no longer opens a session.
    let (s, v) = post_json(
        &c,
        format!("{b}/api/streams/{stream_id}/key"),
        Some(&streamer_token),
        json!(null),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let new_key = v["stream_key"].as_str().unwrap().to_owned();
    eventually("stream offline in the API", WAIT, || async {
        !stream_live(&c, &b, &stream_id).await
    })
    .await;
    // Its session is gone already: the client's own DELETE finds nothing.
    assert!(publisher.stop().await.is_err());
    let err = publish(PublishConfig::new(&b, "carla", &key))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
    let again = publish(PublishConfig::new(&b, "carla", &new_key))
        .await
        .unwrap();
    again.wait_connected(WAIT).await.unwrap();
    eventually("live again", WAIT, || async {
        stream_live(&c, &b, &stream_id).await
    })
    .await;
    again.stop().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn config_keys_still_work_beside_database_keys() {
    let (server, _dir) = start_server().await;
    let b = base(&server);
    let publisher = publish(PublishConfig::new(&b, "demo", KEY)).await.unwrap();
    publisher.wait_connected(WAIT).await.unwrap();
    publisher.stop().await.unwrap();
    server.shutdown().await;
}
