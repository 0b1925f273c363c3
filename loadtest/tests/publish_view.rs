//! A synthetic publisher's media reaches a viewer through a (mock) SFU intact: both kinds,
//! H.264 and VP8, a keyframe early on, every pattern verified.

mod common;

use std::time::Duration;

use loadtest::{publish, view, PublishConfig, VideoCodec, ViewConfig};

const WAIT: Duration = Duration::from_secs(20);

async fn round_trip(codec: VideoCodec) {
    let server = common::MockServer::start().await;
    let publisher = publish(PublishConfig {
        video_codec: codec,
        ..PublishConfig::new(&server.base, "cam", common::KEY)
    })
    .await
    .unwrap();
    assert!(publisher.resource_url().as_str().starts_with(&server.base));
    publisher.wait_connected(WAIT).await.unwrap();

    let viewer = view(ViewConfig::new(&server.base, "cam")).await.unwrap();
    let stats = viewer
        .wait_until(|s| s.video.packets >= 90 && s.audio.packets >= 50, WAIT)
        .await
        .unwrap();

    assert!(stats.connected_after.is_some());
    assert_eq!(stats.video_codec, Some(codec));
    assert!(stats.first_keyframe_after.is_some(), "{stats:?}");
    assert!(stats.video.keyframes >= 1);
    assert_eq!(stats.pattern_mismatches(), 0, "{stats:?}");
    assert!(stats.video.pattern_ok >= 80, "{stats:?}");
    assert_eq!(stats.audio.pattern_ok, stats.audio.packets);
    assert_eq!(stats.ended, None);

    let sent = publisher.stats();
    assert!(sent.video_packets >= stats.video.packets);
    assert!(sent.keyframes_sent >= 1);
    assert!(
        sent.plis_received >= 1,
        "the mock asks for a keyframe when a viewer connects: {sent:?}"
    );

    let last = viewer.stop().await.unwrap();
    assert!(last.ended.is_some());
    let sent = publisher.stop().await.unwrap();
    assert!(sent.ended.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_media_arrives_intact() {
    round_trip(VideoCodec::H264).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp8_media_arrives_intact() {
    round_trip(VideoCodec::Vp8).await;
}
