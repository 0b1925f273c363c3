//! Live viewer counts: str0m WHEP viewers and HLS players (distinct clients fetching a media
//! playlist) add up in `/api/live`, in the stream's API record, and in its chat room, and the
//! count falls when a viewer leaves. The broadcast's analytics then match what happened: its
//! duration, peak and unique viewers, chat messages, follows gained, ingest bitrate and
//! keyframe interval.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use loadtest::{view, ViewConfig};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(30);

async fn json_of(c: &reqwest::Client, url: &str) -> Option<Value> {
    c.get(url).send().await.ok()?.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_are_counted_pushed_to_chat_and_kept_in_analytics() {
    let (server, _dir) = start_server_with(|c| {
        c.media.hls = Some(media::hls::HlsConfig::new(c.data_dir.join("hls")));
        c.analytics_interval = Duration::from_millis(500);
    })
    .await;
    let b = base(&server);
    let c = reqwest::Client::new();
    let Channel {
        stream_id: id,
        key,
        token,
    } = create_channel(&server, "vic", json!({"title": "Counting"})).await;
    let before_start = api::db::now_ms();
    // ffmpeg over RTMP with the channel's key: real H.264, so the HLS ladder runs too.
    let url = format!("rtmp://{}/live/{key}", server.rtmp_addr);
    let mut ffmpeg = ffmpeg_rtmp(
        &url,
        "320x240",
        120,
        &["-tune", "zerolatency", "-g", "60", "-sc_threshold", "0"],
    );
    eventually("live", WAIT, || async {
        json_of(&c, &format!("{b}/api/streams/{id}"))
            .await
            .is_some_and(|s| s["live"] == true)
    })
    .await;
    let live_seen = std::time::Instant::now();

    let (chat, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/api/chat/vic", server.http_addr))
            .await
            .unwrap();
    let (_, mut chat) = chat.split();
    let mut viewers_in_chat = async move |want: u64| {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let msg = tokio::time::timeout_at(deadline, chat.next())
                .await
                .unwrap_or_else(|_| panic!("chat never said {want} viewers"))
                .unwrap()
                .unwrap();
            if let Message::Text(t) = msg {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "viewers" && v["count"] == want {
                    return;
                }
            }
        }
    };

    // Two WebRTC viewers.
    let first = view(ViewConfig::new(&b, "vic")).await.unwrap();
    let second = view(ViewConfig::new(&b, "vic")).await.unwrap();
    first.wait_connected(WAIT).await.unwrap();
    second.wait_connected(WAIT).await.unwrap();
    let stream_url = format!("{b}/api/streams/{id}");
    eventually("2 viewers in the API", WAIT, || async {
        json_of(&c, &stream_url)
            .await
            .is_some_and(|s| s["viewers"] == 2)
    })
    .await;
    viewers_in_chat(2).await;

    // Two HLS players (different User-Agents), polling the media playlist like players do.
    let playlist = format!("{b}/hls/vic/source/index.m3u8");
    eventually("HLS playlist", WAIT, || async {
        c.get(&playlist)
            .header("user-agent", "player-a") // the first player's first fetch
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    let players = tokio::spawn({
        let (c, playlist) = (c.clone(), playlist.clone());
        async move {
            let mut reload = tokio::time::interval(Duration::from_secs(1)); // a player's reload
            loop {
                reload.tick().await;
                for ua in ["player-a", "player-b"] {
                    let _ = c.get(&playlist).header("user-agent", ua).send().await;
                }
            }
        }
    });
    let live_url = format!("{b}/api/live");
    let live = eventually_some("2 WebRTC + 2 HLS viewers in /api/live", WAIT, || async {
        let all = json_of(&c, &live_url).await?;
        let s = all.as_array()?.iter().find(|s| s["name"] == "vic")?.clone();
        (s["hls_viewers"] == 2 && s["webrtc_viewers"] == 2).then_some(s)
    })
    .await;
    assert_eq!(live["viewers"], 4);
    eventually("4 viewers in the API", WAIT, || async {
        json_of(&c, &stream_url)
            .await
            .is_some_and(|s| s["viewers"] == 4)
    })
    .await;
    viewers_in_chat(4).await;

    // One WebRTC viewer leaves.
    first.stop().await.unwrap();
    eventually("3 viewers in the API", WAIT, || async {
        json_of(&c, &stream_url)
            .await
            .is_some_and(|s| s["viewers"] == 3)
    })
    .await;
    viewers_in_chat(3).await;
    players.abort();
    second.stop().await.unwrap();

    // Three chat messages from the streamer, one new follower.
    let (mut talk, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/api/chat/vic?access_token={token}",
        server.http_addr
    ))
    .await
    .unwrap();
    for text in ["hello", "thanks for watching", "bye"] {
        let send = json!({"type": "send", "text": text}).to_string();
        futures_util::SinkExt::send(&mut talk, Message::text(send))
            .await
            .unwrap();
    }
    let mut echoed = 0;
    while echoed < 3 {
        let msg = tokio::time::timeout(WAIT, talk.next())
            .await
            .expect("own messages echoed")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            assert_ne!(v["type"], "error", "{v}");
            echoed += usize::from(v["type"] == "message");
        }
    }
    let owner = json_of(&c, &stream_url).await.unwrap()["owner"]
        .as_str()
        .unwrap()
        .to_owned();
    let fan = create_channel(&server, "fan", json!({"title": "Fan"})).await;
    let followed = c
        .post(format!("{b}/api/follows"))
        .bearer_auth(&fan.token)
        .json(&json!({"channel_id": owner}))
        .send()
        .await
        .unwrap();
    assert_eq!(followed.status(), 201);

    // The streamer stops: ffmpeg ends the publish and the stream goes offline at once.
    let on_air_at_least = live_seen.elapsed();
    assert!(signal(&ffmpeg, SIGTERM));
    let _ = ffmpeg.wait();
    let analytics_url = format!("{b}/api/streams/{id}/analytics");
    let finished = eventually_some("the broadcast closed", WAIT, || async {
        let page: Value = c
            .get(&analytics_url)
            .bearer_auth(&token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let b = page["items"].as_array()?.first()?.clone();
        b["ended_at"].is_i64().then_some(b)
    })
    .await;
    let after_end = api::db::now_ms();
    let (started, ended) = (
        finished["started_at"].as_i64().unwrap(),
        finished["ended_at"].as_i64().unwrap(),
    );
    assert!(before_start <= started && ended <= after_end, "{finished}");
    let duration = finished["duration_ms"].as_i64().unwrap();
    assert_eq!(duration, ended - started);
    assert!(
        duration >= on_air_at_least.as_millis() as i64,
        "on air {on_air_at_least:?} at least: {finished}"
    );
    assert_eq!(finished["peak_viewers"], 4, "{finished}");
    assert_eq!(
        finished["unique_viewers"], 4,
        "2 WebRTC + 2 HLS: {finished}"
    );
    assert_eq!(finished["chat_messages"], 3, "{finished}");
    assert_eq!(finished["follows_gained"], 1, "{finished}");
    let average = finished["average_viewers"].as_f64().unwrap();
    assert!(average > 0.0 && average < 4.0, "{finished}");

    // Its series: one sample per interval, with the publisher's bitrate and GOP (-g 60 at 30 fps).
    let detail: Value = c
        .get(format!(
            "{analytics_url}/{}",
            finished["id"].as_str().unwrap()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let samples = detail["samples"].as_array().unwrap();
    let expected = duration / 500;
    assert!(
        samples.len() as i64 >= expected / 2 && samples.len() as i64 <= expected + 2,
        "{} samples in {duration} ms",
        samples.len()
    );
    let peak = samples.iter().map(|s| s["viewers"].as_u64().unwrap()).max();
    assert_eq!(peak, Some(4));
    assert!(samples
        .windows(2)
        .all(|w| w[0]["at"].as_i64() < w[1]["at"].as_i64()));
    let kbps: Vec<u64> = samples
        .iter()
        .filter_map(|s| s["ingest_kbps"].as_u64())
        .collect();
    assert!(kbps.len() >= samples.len() / 2, "{samples:?}");
    assert!(kbps.iter().any(|&k| k > 20), "ingest bitrate: {kbps:?}");
    let gops: Vec<u64> = samples
        .iter()
        .filter_map(|s| s["keyframe_interval_ms"].as_u64())
        .collect();
    assert!(!gops.is_empty(), "{samples:?}");
    assert!(
        gops.iter().all(|g| (1900..=2100).contains(g)),
        "keyframe intervals: {gops:?}"
    );

    // Only the owner sees them.
    let theirs = c
        .get(&analytics_url)
        .bearer_auth(&fan.token)
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 403);
    assert_eq!(c.get(&analytics_url).send().await.unwrap().status(), 401);
    server.shutdown().await;
}
