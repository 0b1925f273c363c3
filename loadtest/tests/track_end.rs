//! A viewer notices when the stream it watches ends on the server side.

mod common;

use std::time::Duration;

use loadtest::{publish, view, EndReason, PublishConfig, ViewConfig};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_sees_the_end_when_the_publisher_leaves() {
    let server = common::MockServer::start().await;
    let publisher = publish(PublishConfig::new(&server.base, "cam", common::KEY))
        .await
        .unwrap();
    publisher.wait_connected(WAIT).await.unwrap();
    let viewer = view(ViewConfig::new(&server.base, "cam")).await.unwrap();
    viewer.wait_video_packets(10, WAIT).await.unwrap();

    publisher.stop().await.unwrap();

    let reason = viewer.wait_ended(WAIT).await.unwrap();
    assert!(
        matches!(reason, EndReason::Bye | EndReason::PeerClosed),
        "{reason:?}"
    );
    // str0m sends DTLS close_notify ahead of its RTCP BYE, so against a str0m server the
    // close usually wins; either way the viewer has stopped counting a live stream.
    assert!(viewer.stats().video.packets >= 10);
    // Stopping a viewer whose peer already ended still DELETEs and returns its counters.
    let last = viewer.stop().await.unwrap();
    assert_eq!(last.ended, Some(reason));
}
