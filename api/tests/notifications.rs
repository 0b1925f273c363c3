//! Go-live notifications at scale: written in batches off the caller's task, debounced per
//! channel when a stream flaps, pruned after their retention.

mod common;

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use common::*;
use serde_json::json;

/// A streamer with a channel and `followers` followers (written straight to the database:
/// thousands of registrations would only measure password hashing). Returns the owner's id.
async fn channel_with_followers(api: &api::Api, r: &axum::Router, followers: usize) -> String {
    let (owner, token, _) = register(r, "streamer").await;
    let (s, v) = call(
        r,
        Method::POST,
        "/api/streams",
        Some(&token),
        Some(json!({"title": "Big show"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let rows: Vec<serde_json::Value> = (0..followers)
        .map(|i| json!({"follower": format!("fan{i:05}"), "channel": owner, "created_at": 0}))
        .collect();
    api.state()
        .db
        .query("INSERT INTO follow $rows")
        .bind(("rows", rows))
        .await
        .unwrap()
        .check()
        .unwrap();
    owner
}

async fn stored_notifications(api: &api::Api) -> usize {
    let mut res = api
        .state()
        .db
        .query("RETURN count((SELECT id FROM notification))")
        .await
        .unwrap();
    let n: Option<usize> = res.take(0).unwrap();
    n.unwrap_or(0)
}

async fn until_stored(api: &api::Api, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stored = stored_notifications(api).await;
        if stored == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{stored} of {n} notifications stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_follower_is_notified_in_batches_after_set_live_returns() {
    let (api, r) = app().await;
    channel_with_followers(&api, &r, 1500).await;
    let mut sse = api.state().notify.subscribe();
    // The fan-out runs on its own task; set_live only schedules it.
    assert!(api.set_live("streamer", true).await.unwrap());
    until_stored(&api, 1500).await;
    // The channel keeps the latest 1024; older ones show as a lag (SSE clients re-list).
    let mut pushed = 0;
    loop {
        match sse.try_recv() {
            Ok(n) => {
                assert_eq!((n.kind.as_str(), n.stream.as_str()), ("live", "streamer"));
                pushed += 1;
            }
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => pushed += n,
            Err(_) => break,
        }
    }
    assert_eq!(pushed, 1500, "each also pushed to SSE");
}

#[tokio::test]
async fn a_flapping_channel_notifies_once_per_debounce() {
    let (api, r) = app().await;
    let owner = channel_with_followers(&api, &r, 3).await;
    assert!(api.set_live("streamer", true).await.unwrap());
    until_stored(&api, 3).await;
    for _ in 0..3 {
        assert!(!api.set_live("streamer", false).await.unwrap());
        assert!(
            !api.set_live("streamer", true).await.unwrap(),
            "back within the debounce: nobody notified"
        );
    }
    // Someone who followed since the last notification has not heard of this broadcast: told
    // even inside the debounce, and alone.
    api.state()
        .db
        .query("CREATE follow SET follower = 'newcomer', channel = $c, created_at = $now")
        .bind(("c", owner.clone()))
        .bind(("now", api::db::now_ms()))
        .await
        .unwrap()
        .check()
        .unwrap();
    assert!(!api.set_live("streamer", false).await.unwrap());
    assert!(
        api.set_live("streamer", true).await.unwrap(),
        "the newcomer is told"
    );
    until_stored(&api, 4).await;
    assert!(!api.set_live("streamer", false).await.unwrap());
    assert!(
        !api.set_live("streamer", true).await.unwrap(),
        "and only once"
    );
    assert!(!api.set_live("streamer", false).await.unwrap());
    // Eleven minutes later (the default debounce is 10): every follower again.
    api.state()
        .db
        .query("UPDATE type::record('channel_on_air', $c) SET at -= 11 * 60 * 1000")
        .bind(("c", owner))
        .await
        .unwrap()
        .check()
        .unwrap();
    assert!(api.set_live("streamer", true).await.unwrap());
    until_stored(&api, 8).await;

    // Debounce off: every go-live notifies.
    let mut api = api;
    api.set_notify_config(api::notifications::NotifyConfig {
        debounce: Duration::ZERO,
        ..Default::default()
    });
    assert!(!api.set_live("streamer", false).await.unwrap());
    assert!(api.set_live("streamer", true).await.unwrap());
    until_stored(&api, 12).await;
}

#[tokio::test]
async fn notifications_are_pruned_after_their_retention() {
    let (mut api, _r) = app().await;
    let day_ms = 24 * 3600 * 1000;
    let now = api::db::now_ms();
    let rows: Vec<serde_json::Value> = [40, 31, 29, 1, 0]
        .iter()
        .enumerate()
        .map(|(i, days)| {
            json!({"id": format!("n{i}"), "user": "u", "kind": "live", "channel": "c", "stream": "s",
                   "title": "t", "read": false, "created_at": now - days * day_ms})
        })
        .collect();
    api.state()
        .db
        .query("INSERT INTO notification $rows")
        .bind(("rows", rows))
        .await
        .unwrap()
        .check()
        .unwrap();
    assert_eq!(api.prune_notifications(now).await.unwrap(), 2, "30 days");
    assert_eq!(stored_notifications(&api).await, 3);
    api.set_notify_config(api::notifications::NotifyConfig {
        retention: Duration::from_secs(2 * 24 * 3600),
        ..Default::default()
    });
    assert_eq!(api.prune_notifications(now).await.unwrap(), 1, "2 days");
    assert_eq!(stored_notifications(&api).await, 2);
}
