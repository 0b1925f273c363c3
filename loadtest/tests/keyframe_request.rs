//! A viewer's PLI travels to the publisher, which answers with a keyframe on its next frame.

mod common;

use std::time::Duration;

use loadtest::{publish, view, PublishConfig, ViewConfig};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pli_from_viewer_brings_a_keyframe() {
    let server = common::MockServer::start().await;
    let publisher = publish(PublishConfig {
        // No periodic keyframes inside the test: every keyframe answers a request.
        keyframe_interval: Duration::from_secs(3600),
        ..PublishConfig::new(&server.base, "cam", common::KEY)
    })
    .await
    .unwrap();
    publisher.wait_connected(WAIT).await.unwrap();
    let viewer = view(ViewConfig::new(&server.base, "cam")).await.unwrap();
    let before = viewer
        .wait_until(|s| s.first_keyframe_after.is_some(), WAIT)
        .await
        .unwrap();
    let plis_before = publisher.stats().plis_received;

    viewer.request_keyframe().await.unwrap();

    let sent = publisher
        .wait_until(|s| s.plis_received > plis_before, WAIT)
        .await
        .unwrap();
    assert!(sent.keyframes_sent >= 2);
    let after = viewer
        .wait_until(|s| s.video.keyframes > before.video.keyframes, WAIT)
        .await
        .unwrap();
    assert!(after.keyframe_requests_sent >= 1);
    assert_eq!(after.pattern_mismatches(), 0);

    viewer.stop().await.unwrap();
    publisher.stop().await.unwrap();
}
