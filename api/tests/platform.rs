//! Streams, keys, follows, go-live notifications (stored and SSE), categories, replays, OpenAPI.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::*;
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

#[tokio::test]
async fn streams_keys_and_ownership() {
    let (api, r) = app().await;
    let (alice, alice_token, _) = register(&r, "alice").await;
    let (_bob, bob_token, _) = register(&r, "bob").await;

    let (s, v) = call(
        &r,
        Method::POST,
        "/api/streams",
        Some(&alice_token),
        Some(json!({"title": "Hello", "category": "gaming", "tags": ["Rust"], "language": "en"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["name"], "alice");
    assert_eq!(v["owner"], alice.as_str());
    assert_eq!(v["tags"], json!(["rust"]));
    let key = v["stream_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("live_"));

    // One stream per channel.
    let (s, _) = call(
        &r,
        Method::POST,
        "/api/streams",
        Some(&alice_token),
        Some(json!({"title": "Again"})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    // The key is shown to the owner only.
    let (_, v) = call(
        &r,
        Method::GET,
        &format!("/api/streams/{id}"),
        Some(&alice_token),
        None,
    )
    .await;
    assert_eq!(v["stream_key"], key.as_str());
    let (_, v) = call(
        &r,
        Method::GET,
        &format!("/api/streams/{id}"),
        Some(&bob_token),
        None,
    )
    .await;
    assert!(v.get("stream_key").is_none(), "{v}");
    let (_, v) = call(&r, Method::GET, &format!("/api/streams/{id}"), None, None).await;
    assert!(v.get("stream_key").is_none(), "{v}");

    // Only the owner edits and rotates.
    let (s, _) = call(
        &r,
        Method::PUT,
        &format!("/api/streams/{id}"),
        Some(&bob_token),
        Some(json!({"title": "mine now"})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(
        &r,
        Method::POST,
        &format!("/api/streams/{id}/key"),
        Some(&bob_token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = call(
        &r,
        Method::PUT,
        &format!("/api/streams/{id}"),
        Some(&alice_token),
        Some(json!({"title": "Speedrun", "category": "music"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["title"], "Speedrun");
    assert_eq!(v["category"], "music");
    for (body, field) in [
        (json!({"title": ""}), "title"),
        (json!({"title": "ok", "category": "no-such"}), "category"),
        (json!({"title": "ok", "language": "english"}), "language"),
        (json!({"title": "ok", "tags": ["a b"]}), "tags"),
    ] {
        let (s, v) = call(
            &r,
            Method::PUT,
            &format!("/api/streams/{id}"),
            Some(&alice_token),
            Some(body),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(v["error"]["field"], field);
    }

    // The media core's key check: right key, wrong key, rotated-away key, unknown stream.
    assert_eq!(api.check_stream_key("alice", &key).await.unwrap(), Ok(()));
    assert_eq!(
        api.check_stream_key("alice", "live_wrong").await.unwrap(),
        Err(api::KeyCheck::WrongKey)
    );
    assert_eq!(
        api.check_stream_key("nobody", &key).await.unwrap(),
        Err(api::KeyCheck::UnknownStream)
    );
    let (s, v) = call(
        &r,
        Method::POST,
        &format!("/api/streams/{id}/key"),
        Some(&alice_token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let new_key = v["stream_key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, key);
    assert_eq!(
        api.check_stream_key("alice", &key).await.unwrap(),
        Err(api::KeyCheck::WrongKey)
    );
    assert_eq!(
        api.check_stream_key("alice", &new_key).await.unwrap(),
        Ok(())
    );

    assert_eq!(
        call(
            &r,
            Method::GET,
            "/api/streams/abcdefghij0123456789",
            None,
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(
            &r,
            Method::POST,
            "/api/streams",
            None,
            Some(json!({"title": "x"}))
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn listing_live_streams_by_viewers_category_and_page() {
    let (api, r) = app().await;
    let mut tokens = Vec::new();
    for (i, name) in ["ann", "ben", "cat", "dan"].iter().enumerate() {
        let (_, token, _) = register(&r, name).await;
        let category = if i % 2 == 0 { "gaming" } else { "music" };
        let (s, _) = call(
            &r,
            Method::POST,
            "/api/streams",
            Some(&token),
            Some(json!({"title": format!("{name} live"), "category": category})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
        tokens.push(token);
    }
    // Nobody live yet.
    let (_, v) = call(&r, Method::GET, "/api/streams", None, None).await;
    assert_eq!(v["items"], json!([]));
    let (_, v) = call(&r, Method::GET, "/api/streams?live=all", None, None).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 4);

    for (name, viewers) in [("ann", 5), ("ben", 50), ("cat", 20)] {
        api.set_live(name, true).await.unwrap();
        api.set_viewers(name, viewers).await.unwrap();
    }
    let (_, v) = call(&r, Method::GET, "/api/streams", None, None).await;
    let names: Vec<_> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        ["ben", "cat", "ann"],
        "live only, most viewers first"
    );
    assert!(v["items"][0]["started_at"].is_i64());

    let (_, v) = call(&r, Method::GET, "/api/streams?category=gaming", None, None).await;
    let names: Vec<_> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["cat", "ann"]);

    let (_, p1) = call(&r, Method::GET, "/api/streams?limit=2&page=1", None, None).await;
    let (_, p2) = call(&r, Method::GET, "/api/streams?limit=2&page=2", None, None).await;
    assert_eq!(p1["items"].as_array().unwrap().len(), 2);
    assert_eq!(p1["more"], true);
    assert_eq!(p2["items"].as_array().unwrap().len(), 1);
    assert_eq!(p2["more"], false);

    // Search (names and titles, any case, offline too with live=all) and the lookup by name.
    let names_of = |v: &serde_json::Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, v) = call(&r, Method::GET, "/api/streams?live=all&q=DAN", None, None).await;
    assert_eq!(names_of(&v), ["dan"]);
    let (_, v) = call(
        &r,
        Method::GET,
        "/api/streams?live=all&q=%20live",
        None,
        None,
    )
    .await;
    assert_eq!(names_of(&v).len(), 4, "every title says live");
    let (_, v) = call(&r, Method::GET, "/api/streams?q=an", None, None).await;
    assert_eq!(names_of(&v), ["ann"], "dan is offline");
    let (_, v) = call(
        &r,
        Method::GET,
        "/api/streams?live=all&name=Cat",
        None,
        None,
    )
    .await;
    assert_eq!(names_of(&v), ["cat"]);
    let (_, v) = call(&r, Method::GET, "/api/streams?live=all&name=ca", None, None).await;
    assert_eq!(names_of(&v), Vec::<String>::new());
    let long = format!("/api/streams?q={}", "x".repeat(51));

    for bad in [
        long.as_str(),
        "/api/streams?limit=0",
        "/api/streams?limit=1000",
        "/api/streams?page=0",
        "/api/streams?live=maybe",
        "/api/streams?limit=abc",
        "/api/streams?bogus=1",
    ] {
        assert_eq!(
            call(&r, Method::GET, bad, None, None).await.0,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }

    let (_, cats) = call(&r, Method::GET, "/api/categories", None, None).await;
    let count = |slug: &str| {
        cats.as_array()
            .unwrap()
            .iter()
            .find(|c| c["slug"] == slug)
            .unwrap()["live_streams"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(count("gaming"), 2);
    assert_eq!(count("music"), 1);
    assert_eq!(count("art"), 0);

    api.set_live("ben", false).await.unwrap();
    let (_, v) = call(&r, Method::GET, "/api/streams", None, None).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn follows_and_go_live_notifications() {
    let (api, r) = app().await;
    let (streamer, streamer_token, _) = register(&r, "streamer").await;
    let (fan, fan_token, _) = register(&r, "fan").await;
    let (_other, other_token, _) = register(&r, "other").await;
    call(
        &r,
        Method::POST,
        "/api/streams",
        Some(&streamer_token),
        Some(json!({"title": "Big show"})),
    )
    .await;

    let (s, v) = call(
        &r,
        Method::POST,
        "/api/follows",
        Some(&fan_token),
        Some(json!({"channel_id": streamer})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        call(
            &r,
            Method::POST,
            "/api/follows",
            Some(&fan_token),
            Some(json!({"channel_id": streamer}))
        )
        .await
        .0,
        StatusCode::CONFLICT
    );
    let (s, v) = call(
        &r,
        Method::POST,
        "/api/follows",
        Some(&fan_token),
        Some(json!({"channel_id": fan})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["field"], "channel_id");
    assert_eq!(
        call(
            &r,
            Method::POST,
            "/api/follows",
            Some(&fan_token),
            Some(json!({"channel_id": "abcdefghij0123456789"}))
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(
            &r,
            Method::POST,
            "/api/follows",
            None,
            Some(json!({"channel_id": streamer}))
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );

    // The fan listens on SSE before the stream goes live.
    let req = Request::builder()
        .uri(format!(
            "/api/notifications/stream?access_token={fan_token}"
        ))
        .body(Body::empty())
        .unwrap();
    let resp = r.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut sse = resp.into_body();

    assert!(
        api.set_live("streamer", true).await.unwrap(),
        "followers being notified"
    );

    // The pushed event arrives (bounded wait, no sleep).
    let frame = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let f = sse.frame().await.expect("stream open").unwrap();
            if let Some(data) = f.data_ref() {
                let text = String::from_utf8_lossy(data).to_string();
                if text.contains("event: notification") {
                    return text;
                }
            }
        }
    })
    .await
    .expect("SSE notification within 5 s");
    assert!(frame.contains("\"stream\":\"streamer\""), "{frame}");
    assert!(frame.contains("Big show"), "{frame}");

    // Stored too; others got nothing.
    let (_, list) = call(
        &r,
        Method::GET,
        "/api/notifications?unread=true",
        Some(&fan_token),
        None,
    )
    .await;
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["kind"], "live");
    assert_eq!(list[0]["channel"], streamer.as_str());
    let (_, none) = call(
        &r,
        Method::GET,
        "/api/notifications",
        Some(&other_token),
        None,
    )
    .await;
    assert_eq!(none, json!([]));
    let nid = list[0]["id"].as_str().unwrap();
    assert_eq!(
        call(
            &r,
            Method::POST,
            &format!("/api/notifications/{nid}/read"),
            Some(&other_token),
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND,
        "not yours"
    );
    assert_eq!(
        call(
            &r,
            Method::POST,
            &format!("/api/notifications/{nid}/read"),
            Some(&fan_token),
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    let (_, unread) = call(
        &r,
        Method::GET,
        "/api/notifications?unread=true",
        Some(&fan_token),
        None,
    )
    .await;
    assert_eq!(unread, json!([]));

    // Followers / following, with live status.
    let (_, v) = call(
        &r,
        Method::GET,
        &format!("/api/users/{streamer}/followers"),
        None,
        None,
    )
    .await;
    assert_eq!(v["items"][0]["username"], "fan");
    let (_, v) = call(
        &r,
        Method::GET,
        &format!("/api/users/{fan}/following"),
        None,
        None,
    )
    .await;
    assert_eq!(v["items"][0]["username"], "streamer");
    assert_eq!(v["items"][0]["live"], true);

    // Going live again while already live notifies nobody twice.
    assert!(!api.set_live("streamer", true).await.unwrap());

    assert_eq!(
        call(
            &r,
            Method::DELETE,
            &format!("/api/follows/{streamer}"),
            Some(&fan_token),
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(
            &r,
            Method::DELETE,
            &format!("/api/follows/{streamer}"),
            Some(&fan_token),
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    let (_, v) = call(
        &r,
        Method::GET,
        &format!("/api/users/{streamer}/followers"),
        None,
        None,
    )
    .await;
    assert_eq!(v["items"], json!([]));
}

#[tokio::test]
async fn openapi_document_lists_the_endpoints() {
    let (_api, r) = app().await;
    let (s, doc) = call(&r, Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/users/register",
        "/api/users/login",
        "/api/users/refresh",
        "/api/users/logout",
        "/api/users/me",
        "/api/users/{id}",
        "/api/streams",
        "/api/streams/{id}",
        "/api/streams/{id}/key",
        "/api/follows",
        "/api/follows/{channel_id}",
        "/api/users/{id}/followers",
        "/api/users/{id}/following",
        "/api/notifications",
        "/api/notifications/stream",
        "/api/categories",
        "/api/streams/{id}/videos",
        "/api/videos/{id}",
    ] {
        assert!(paths.contains_key(p), "missing {p}");
    }
}

#[tokio::test]
async fn data_survives_a_restart_on_surrealkv() {
    let dir = std::env::temp_dir().join(format!("glint-kv-{}", std::process::id()));
    let url = format!("surrealkv://{}", dir.display());
    // The first server runs on a runtime of its own: dropping that runtime drops the embedded
    // engine with it, so its files are released before the reopen (surrealkv has no lock
    // file; two live stores on one directory corrupt it, and a dropped handle's engine task
    // outlives it for a while on a shared runtime).
    let first_url = url.clone();
    let (streamer, key) = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let out = rt.block_on(async move {
            let api = api::Api::connect(&first_url, SECRET).await.unwrap();
            let r = api.router();
            let (s_id, s_token, _) = register(&r, "persist").await;
            let (_, f_token, _) = register(&r, "follower").await;
            let (_, v) = call(
                &r,
                Method::POST,
                "/api/streams",
                Some(&s_token),
                Some(json!({"title": "kept"})),
            )
            .await;
            let key = v["stream_key"].as_str().unwrap().to_owned();
            call(
                &r,
                Method::POST,
                "/api/follows",
                Some(&f_token),
                Some(json!({"channel_id": s_id})),
            )
            .await;
            (s_id, key)
        });
        drop(rt);
        out
    })
    .await
    .unwrap();
    let api = api::Api::connect(&url, SECRET).await.unwrap();
    let r = api.router();
    let (s, v) = call(
        &r,
        Method::POST,
        "/api/users/login",
        None,
        Some(json!({"username": "persist", "password": "a good password"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(api.check_stream_key("persist", &key).await.unwrap(), Ok(()));
    let (_, v) = call(
        &r,
        Method::GET,
        &format!("/api/users/{streamer}/followers"),
        None,
        None,
    )
    .await;
    assert_eq!(v["items"][0]["username"], "follower");
    drop(api);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn replays_are_listed_until_deleted_or_expired() {
    let mut api = api::Api::connect("mem://", SECRET).await.unwrap();
    api.set_hls_base(Some("https://cdn.example/hls/"));
    let r = api.router();
    let (_alice, alice_token, _) = register(&r, "alice").await;
    let (_bob, bob_token, _) = register(&r, "bob").await;
    let (_, v) = call(
        &r,
        Method::POST,
        "/api/streams",
        Some(&alice_token),
        Some(json!({"title": "Speedrun", "category": "gaming"})),
    )
    .await;
    let stream = v["id"].as_str().unwrap().to_owned();
    let hour = 3_600_000;
    let now = api::db::now_ms();
    let renditions = vec!["source".to_string(), "360p".to_string()];
    let mut ids = Vec::new();
    for (i, epoch) in [now - 3 * hour, now - 2 * hour].into_iter().enumerate() {
        let id = api
            .add_video(api::videos::NewVideo {
                stream_name: "alice",
                epoch,
                ended_at: epoch + hour,
                duration_ms: hour - i as i64,
                renditions: &renditions,
                retention_ms: 24 * hour,
            })
            .await
            .unwrap();
        ids.push(id);
    }
    // A stream configured by key (no database record): kept, expires like the others.
    let keyed = api
        .add_video(api::videos::NewVideo {
            stream_name: "demo",
            epoch: now - 30 * hour,
            ended_at: now - 26 * hour,
            duration_ms: 1000,
            renditions: &renditions,
            retention_ms: 24 * hour,
        })
        .await
        .unwrap();

    // Newest first, with the stream's title and the CDN URLs.
    let (s, page) = call(
        &r,
        Method::GET,
        &format!("/api/streams/{stream}/videos"),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{page}");
    assert_eq!(items[0]["id"], ids[1].as_str());
    assert_eq!(items[0]["title"], "Speedrun");
    assert_eq!(items[0]["category"], "gaming");
    assert_eq!(items[0]["stream_name"], "alice");
    let epoch = now - 2 * hour;
    assert_eq!(
        items[0]["hls_url"],
        format!("https://cdn.example/hls/alice/videos/{epoch}/master.m3u8")
    );
    assert_eq!(
        items[0]["thumbnail_url"],
        format!("https://cdn.example/hls/alice/videos/{epoch}/thumb.jpg")
    );
    assert!(
        items[0].get("epoch").is_none(),
        "internal fields stay inside"
    );
    let (_, page) = call(
        &r,
        Method::GET,
        &format!("/api/streams/{stream}/videos?limit=1"),
        None,
        None,
    )
    .await;
    assert_eq!(page["more"], true);
    let (s, _) = call(
        &r,
        Method::GET,
        "/api/streams/aaaaaaaaaaaaaaaaaaaa/videos",
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = call(
        &r,
        Method::GET,
        &format!("/api/streams/{stream}/videos?limit=0"),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // Only the owner deletes; a deleted video is gone at once and expires on the next round.
    let one = format!("/api/videos/{}", ids[0]);
    let (s, v) = call(&r, Method::GET, &one, None, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["duration_ms"], hour);
    let (s, _) = call(&r, Method::DELETE, &one, None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = call(&r, Method::DELETE, &one, Some(&bob_token), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(
        &r,
        Method::DELETE,
        &format!("/api/videos/{keyed}"),
        Some(&alice_token),
        None,
    )
    .await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "past its retention: no longer shown"
    );
    assert!(api
        .expired_videos(api::db::now_ms(), 100)
        .await
        .unwrap()
        .iter()
        .all(|v| v.id != ids[0]));
    let (s, _) = call(&r, Method::DELETE, &one, Some(&alice_token), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call(&r, Method::GET, &one, None, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, page) = call(
        &r,
        Method::GET,
        &format!("/api/streams/{stream}/videos"),
        None,
        None,
    )
    .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);

    // Expired now: the deleted one. A day later: the config-key one too (ended 26 h ago).
    let expired = api.expired_videos(api::db::now_ms(), 100).await.unwrap();
    let mut names: Vec<(String, i64)> = expired.iter().map(|v| (v.id.clone(), v.epoch)).collect();
    names.sort();
    let mut want = vec![
        (ids[0].clone(), now - 3 * hour),
        (keyed.clone(), now - 30 * hour),
    ];
    want.sort();
    assert_eq!(names, want);
    assert_eq!(expired[0].renditions, renditions);
    for v in &expired {
        api.forget_video(&v.id).await.unwrap();
    }
    assert!(api
        .expired_videos(api::db::now_ms(), 100)
        .await
        .unwrap()
        .is_empty());
    let later = api.expired_videos(now + 30 * hour, 100).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].id, ids[1]);
}

fn sample(at: i64, viewers: u32, unique: u32) -> api::analytics::Sample {
    api::analytics::Sample {
        at,
        viewers,
        webrtc_viewers: viewers,
        hls_viewers: 0,
        unique_viewers: unique,
        ingest_kbps: Some(2500),
        keyframe_interval_ms: Some(2000),
    }
}

#[tokio::test]
async fn broadcast_analytics_summaries_series_and_left_open_ones() {
    let (api, r) = app().await;
    let (_alice, alice_token, _) = register(&r, "alice").await;
    let (_bob, bob_token, _) = register(&r, "bob").await;
    let (_, v) = call(
        &r,
        Method::POST,
        "/api/streams",
        Some(&alice_token),
        Some(json!({"title": "Speedrun"})),
    )
    .await;
    let stream = v["id"].as_str().unwrap().to_owned();
    let url = format!("/api/streams/{stream}/analytics");
    assert!(
        api.begin_broadcast("demo", 0).await.unwrap().is_none(),
        "configured by key"
    );

    // A broadcast on air: its figures so far.
    let t0 = api::db::now_ms() - 60_000;
    let first = api.begin_broadcast("alice", t0).await.unwrap().unwrap();
    let samples = [(1, 0, 0), (2, 3, 3), (3, 5, 6), (4, 4, 7)]
        .map(|(i, v, u)| (first.clone(), sample(t0 + i * 10_000, v, u)));
    api.record_samples(samples.to_vec()).await.unwrap();
    let (s, page) = call(&r, Method::GET, &url, Some(&alice_token), None).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let live = &page["items"][0];
    assert_eq!(live["id"], first.as_str());
    assert_eq!(live["ended_at"], serde_json::Value::Null);
    assert!(live["duration_ms"].as_i64().unwrap() >= 60_000, "{live}");
    assert_eq!(live["peak_viewers"], 5);
    assert_eq!(live["unique_viewers"], 7);
    assert_eq!(live["average_viewers"], 3.0);

    // The server stops; the next start closes it at its last sample, with its summary stored.
    assert_eq!(api.close_dangling_broadcasts().await.unwrap(), 1);
    assert_eq!(api.close_dangling_broadcasts().await.unwrap(), 0);
    let second = api
        .begin_broadcast("alice", t0 + 50_000)
        .await
        .unwrap()
        .unwrap();
    api.end_broadcast(&second, t0 + 55_000).await.unwrap();
    let (_, page) = call(&r, Method::GET, &url, Some(&alice_token), None).await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{page}");
    assert_eq!(items[0]["id"], second.as_str(), "latest first");
    assert_eq!(items[0]["duration_ms"], 5_000);
    assert_eq!(items[0]["peak_viewers"], 0, "no samples");
    assert_eq!(items[1]["ended_at"], t0 + 40_000);
    assert_eq!(items[1]["duration_ms"], 40_000);
    assert_eq!(items[1]["peak_viewers"], 5);
    let (_, page) = call(
        &r,
        Method::GET,
        &format!("{url}?limit=1&page=2"),
        Some(&alice_token),
        None,
    )
    .await;
    assert_eq!(page["items"][0]["id"], first.as_str());
    assert_eq!(page["more"], false);

    // One broadcast's series, oldest first.
    let (s, detail) = call(
        &r,
        Method::GET,
        &format!("{url}/{first}"),
        Some(&alice_token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{detail}");
    let series = detail["samples"].as_array().unwrap();
    assert_eq!(series.len(), 4);
    assert_eq!(series[0]["at"], t0 + 10_000);
    assert_eq!(series[3]["viewers"], 4);
    assert_eq!(series[3]["ingest_kbps"], 2500);
    assert_eq!(series[3]["keyframe_interval_ms"], 2000);
    assert_eq!(detail["peak_viewers"], 5);

    // Polling a live broadcast: only the samples after `since`.
    let (s, newer) = call(
        &r,
        Method::GET,
        &format!("{url}/{first}?since={}", t0 + 20_000),
        Some(&alice_token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{newer}");
    let ats: Vec<i64> = newer["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["at"].as_i64().unwrap())
        .collect();
    assert_eq!(ats, [t0 + 30_000, t0 + 40_000]);
    let (s, _) = call(
        &r,
        Method::GET,
        &format!("{url}/{first}?since=x"),
        Some(&alice_token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Owner only; unknown ids are 404.
    let (s, _) = call(&r, Method::GET, &url, Some(&bob_token), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(&r, Method::GET, &format!("{url}/{first}"), None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = call(
        &r,
        Method::GET,
        &format!("{url}/nosuchbroadcast0000"),
        Some(&alice_token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(
        &r,
        Method::GET,
        &format!("{url}/bad$id"),
        Some(&alice_token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(
        &r,
        Method::GET,
        "/api/streams/nosuchstream00000000/analytics",
        Some(&alice_token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
