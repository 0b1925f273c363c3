//! Rotating a channel's stream key through the API ends the publisher using the old key within
//! a second — an RTMP publisher (ffmpeg) and a WHIP publisher (str0m) — and the old key is
//! refused afterwards while the new one works.

mod common;

use std::time::{Duration, Instant};

use common::*;
use loadtest::{publish, PublishConfig};
use media::ingest::rtmp::amf0::Value;
use media::ingest::rtmp::client::{obs_until_publish, replies};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);
/// How soon after the rotation is acknowledged the stream must be off the air.
const ENDED_WITHIN: Duration = Duration::from_secs(1);

/// `POST /api/streams/{id}/key` as the owner: the new key.
async fn rotate(server: &glint::Server, channel: &Channel) -> String {
    let r = reqwest::Client::new()
        .post(format!(
            "{}/api/streams/{}/key",
            base(server),
            channel.stream_id
        ))
        .bearer_auth(&channel.token)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body["stream_key"].as_str().unwrap().to_owned()
}

async fn on_air(server: &glint::Server, name: &str) -> bool {
    server
        .media
        .streams()
        .await
        .unwrap()
        .iter()
        .any(|s| s.name == name)
}

/// Rotate, and wait for `name` to go off the air; how long that took from the request.
async fn rotate_and_wait_offline(
    server: &glint::Server,
    channel: &Channel,
    name: &str,
) -> (String, Duration) {
    let asked = Instant::now();
    let new_key = rotate(server, channel).await;
    eventually(
        "stream off the air after the rotation",
        ENDED_WITHIN,
        || async move { !on_air(server, name).await },
    )
    .await;
    (new_key, asked.elapsed())
}

/// The `onStatus` code an RTMP publish with `key` gets.
async fn rtmp_publish_status(server: &glint::Server, key: &str) -> String {
    let mut sock = tokio::net::TcpStream::connect(server.rtmp_addr)
        .await
        .unwrap();
    sock.write_all(&obs_until_publish(key).wire).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let status = replies(&got)
            .into_iter()
            .filter(|v| v.first().and_then(Value::as_str) == Some("onStatus"))
            .find_map(|v| v.get(3)?.get("code")?.as_str().map(str::to_owned));
        if let Some(code) = status {
            return code;
        }
        let n = tokio::time::timeout(WAIT, sock.read(&mut buf))
            .await
            .expect("the server answers the publish")
            .unwrap();
        assert_ne!(n, 0, "closed without a status");
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_key_ends_an_rtmp_publisher_within_a_second() {
    let (server, _dir) = start_server().await;
    let channel = create_channel(&server, "rtmpcaster", serde_json::json!({"title": "rtmp"})).await;
    let mut ffmpeg = ffmpeg_rtmp(
        &format!("rtmp://{}/live/{}", server.rtmp_addr, channel.key),
        "320x240",
        60,
        &["-g", "30", "-bf", "0", "-tune", "zerolatency"],
    );
    eventually("RTMP stream live", WAIT, || on_air(&server, "rtmpcaster")).await;

    let (new_key, took) = rotate_and_wait_offline(&server, &channel, "rtmpcaster").await;
    println!("RTMP publisher ended {took:?} after the rotation was asked for");
    assert_eq!(metric(&server, "publishers").await, 0);
    // The connection was closed: ffmpeg gives up.
    eventually("ffmpeg disconnected", WAIT, || {
        let exited = ffmpeg.try_wait().unwrap().is_some();
        async move { exited }
    })
    .await;

    assert_eq!(
        rtmp_publish_status(&server, &channel.key).await,
        "NetStream.Publish.BadName",
        "the old key is refused"
    );
    assert_eq!(
        rtmp_publish_status(&server, &new_key).await,
        "NetStream.Publish.Start",
        "the new key publishes"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_key_ends_a_whip_publisher_within_a_second() {
    let (server, _dir) = start_server().await;
    let b = base(&server);
    let channel = create_channel(&server, "whipcaster", serde_json::json!({"title": "whip"})).await;
    let publisher = publish(PublishConfig::new(&b, "whipcaster", &channel.key))
        .await
        .unwrap();
    publisher.wait_connected(WAIT).await.unwrap();
    eventually("WHIP stream live", WAIT, || on_air(&server, "whipcaster")).await;
    let resource = publisher.resource_url().clone();

    let (new_key, took) = rotate_and_wait_offline(&server, &channel, "whipcaster").await;
    println!("WHIP publisher ended {took:?} after the rotation was asked for");
    assert_eq!(metric(&server, "publishers").await, 0);
    // Its session is gone, not waiting for a reconnect.
    let r = reqwest::Client::new()
        .delete(resource.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "the WHIP session was closed"
    );
    let _ = publisher.stop().await;

    let whip = |key: String| {
        reqwest::Client::new()
            .post(format!("{b}/whip/whipcaster"))
            .header("content-type", "application/sdp")
            .bearer_auth(key)
            .body(fixture("obs_offer.sdp"))
            .send()
    };
    let r = whip(channel.key.clone()).await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "the old key is refused"
    );
    let r = whip(new_key).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "the new key publishes");
    server.shutdown().await;
}
