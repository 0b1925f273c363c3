//! The streams an operator configures by key (`[stream_keys]`, or the generated `demo`) are
//! channels like any other: listed in the directory before and while they are live, with a
//! chat room and a viewer count, and nobody can take them over through the API.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;

const WAIT: Duration = Duration::from_secs(20);

async fn streams(server: &glint::Server, query: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value = reqwest::get(format!("{}/api/streams?{query}", base(server)))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_streams_are_channels_with_chat_and_viewers() {
    let (server, _dir) = start_server().await;
    let all = streams(&server, "live=all").await;
    let names: Vec<&str> = all.iter().filter_map(|s| s["name"].as_str()).collect();
    assert!(
        names.contains(&"demo") && names.contains(&"other"),
        "{all:?}"
    );
    let demo = all.iter().find(|s| s["name"] == "demo").unwrap();
    assert_eq!(demo["live"], false);
    assert!(demo.get("stream_key").is_none(), "{demo}");

    // Its chat room opens (read-only for anonymous readers, as everywhere).
    let ws = format!("ws://{}/api/chat/demo", server.http_addr);
    let (mut socket, _) = tokio_tungstenite::connect_async(ws)
        .await
        .expect("chat room");
    let hello = tokio::time::timeout(WAIT, socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(hello.to_text().unwrap().contains("hello"), "{hello:?}");

    // Live: listed live, with its viewer.
    let b = base(&server);
    let publisher = loadtest::publish(loadtest::PublishConfig::new(&b, "demo", KEY))
        .await
        .unwrap();
    publisher.wait_connected(WAIT).await.unwrap();
    let viewer = loadtest::view(loadtest::ViewConfig::new(&b, "demo"))
        .await
        .unwrap();
    viewer
        .wait_until(|s| s.video.packets > 10, WAIT)
        .await
        .unwrap();
    eventually("demo listed live with one viewer", WAIT, || async {
        streams(&server, "")
            .await
            .iter()
            .any(|s| s["name"] == "demo" && s["live"] == true && s["viewers"] == 1)
    })
    .await;

    // The channel's record has no usable key: only the configured one publishes.
    let record = server.api.check_stream_key("demo", "").await.unwrap();
    assert!(record.is_err());
    viewer.stop().await.unwrap();
    publisher.stop().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn a_restart_does_not_duplicate_configured_channels() {
    let dir = tempdir::Dir::new();
    for _ in 0..2 {
        let mut config = test_config(&dir);
        config.database = None; // surrealkv in the data dir, kept across the restart
        let server = glint::start(config).await.unwrap();
        let all = streams(&server, "live=all").await;
        assert_eq!(
            all.iter().filter(|s| s["name"] == "demo").count(),
            1,
            "{all:?}"
        );
        server.shutdown().await;
    }
}
