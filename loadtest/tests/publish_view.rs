//! A synthetic publisher's media reaches a viewer through a (mock) SFU intact: both kinds,
//! H.264 and VP8, a keyframe early on, every pattern verified, glass-to-glass latency measured
//! (H.264). The pre-encoded clip arrives frame by frame with its keyframes.

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
        .wait_until(|s| s.video.pattern_ok >= 80 && s.audio.packets >= 50, WAIT)
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
    // H.264 frames carry their capture time (a SEI before each): latency on loopback is small.
    let latency = viewer.latency();
    if codec == VideoCodec::H264 {
        assert!(latency.count() >= 20, "{latency:?}");
        assert!(latency.percentile(99.0).unwrap() < Duration::from_millis(200));
    } else {
        assert_eq!(latency.count(), 0);
    }

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clip_is_looped_with_continuous_timestamps() {
    let server = common::MockServer::start().await;
    let clip = loadtest::clip::builtin();
    let publisher = publish(PublishConfig {
        clip: Some(clip.clone()),
        ..PublishConfig::new(&server.base, "cam", common::KEY)
    })
    .await
    .unwrap();
    publisher.wait_connected(WAIT).await.unwrap();
    let viewer = view(ViewConfig {
        check_patterns: false,
        ..ViewConfig::new(&server.base, "cam")
    })
    .await
    .unwrap();
    // Past the end of the 2 s clip: the loop goes on with its keyframe every second.
    let stats = viewer
        .wait_until(|s| s.video.keyframes >= 3 && s.audio.packets >= 150, WAIT)
        .await
        .unwrap();
    assert_eq!(stats.video_codec, Some(VideoCodec::H264));
    assert_eq!(
        stats.pattern_mismatches(),
        0,
        "patterns are not checked on a clip"
    );
    assert_eq!(stats.video.lost, 0, "{stats:?}");
    assert_eq!(stats.video.timestamp_reversals, 0, "{stats:?}");
    assert_eq!(stats.audio.timestamp_reversals, 0, "{stats:?}");
    // ~2.5 Mbit/s of video: over 3 s, well over 500 KB.
    let sent = publisher.stats();
    assert!(sent.video_bytes > 500_000, "{sent:?}");
    assert!(viewer.latency().count() > 60);
    viewer.stop().await.unwrap();
    publisher.stop().await.unwrap();
}
