//! Interop with an independent WebRTC stack: str0m publishers and viewers (the `loadtest`
//! crate) through the glint server, over real UDP on loopback.

mod common;

use std::time::Duration;

use common::*;
use loadtest::{publish, view, EndReason, PublishConfig, StatusCode, VideoCodec, ViewConfig};

const WAIT: Duration = Duration::from_secs(20);

/// Seal every viewer's packets on the fan-out threads, however few viewers (by default only
/// audiences of 64 and more are).
fn parallel_fanout(c: &mut glint::Config) {
    c.media.fanout_threads = 2;
    c.media.fanout_parallel_min = 1;
}

async fn av_through_the_server(codec: VideoCodec) {
    let (server, _dir) = start_server_with(parallel_fanout).await;
    let b = base(&server);
    let publisher = publish(PublishConfig {
        video_codec: codec,
        ..PublishConfig::new(&b, "demo", KEY)
    })
    .await
    .unwrap();
    publisher.wait_connected(WAIT).await.unwrap();
    let viewer = view(ViewConfig::new(&b, "demo")).await.unwrap();
    let stats = viewer
        .wait_until(
            |s| s.video.pattern_ok >= 200 && s.audio.packets >= 100,
            WAIT,
        )
        .await
        .unwrap();

    // Every payload arrived byte for byte; sequence numbers continuous; a keyframe first.
    assert_eq!(stats.video_codec, Some(codec));
    assert_eq!(stats.pattern_mismatches(), 0, "{stats:?}");
    assert!(stats.video.pattern_ok >= 150, "{stats:?}");
    assert!(stats.audio.pattern_ok >= 100, "{stats:?}");
    assert_eq!(stats.video.lost, 0, "{stats:?}");
    assert_eq!(stats.audio.lost, 0, "{stats:?}");
    assert!(stats.first_keyframe_after.is_some());
    assert!(stats.video.keyframes >= 1);
    if codec == VideoCodec::H264 {
        // The publisher's capture-time SEI went through the SFU: glass-to-glass latency.
        let latency = viewer.latency();
        assert!(latency.count() >= 30, "{latency:?}");
        assert!(latency.percentile(95.0).unwrap() < Duration::from_millis(300));
    }

    let live = server.media.streams().await.unwrap();
    assert_eq!(live.len(), 1);
    assert!(live[0].live);
    assert_eq!(live[0].viewers, 1);
    assert!(metric(&server, "rtp_packets_forwarded_total").await >= 300);

    viewer.stop().await.unwrap();
    publisher.stop().await.unwrap();
    eventually("sessions gone", WAIT, || async {
        metric(&server, "publishers").await == 0 && metric(&server, "viewers").await == 0
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn str0m_h264_and_opus_arrive_intact() {
    av_through_the_server(VideoCodec::H264).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn str0m_vp8_and_opus_arrive_intact() {
    av_through_the_server(VideoCodec::Vp8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_joining_viewers_cost_a_handful_of_plis() {
    // Thirty viewers join at once from one address (loopback): lift the per-address session
    // rate, which would otherwise answer the 21st with 429 (tests/hostile_http.rs).
    // Without the GOP cache (which starts joining viewers without a keyframe: media/tests/gop_start.rs).
    let (server, _dir) = start_server_with(|c| {
        c.session_burst = 0;
        c.media.gop_cache_bytes = 0;
    })
    .await;
    let b = base(&server);
    // A long GOP, so only PLIs can give joining viewers a keyframe quickly.
    let publisher = publish(PublishConfig {
        keyframe_interval: Duration::from_secs(60),
        ..PublishConfig::new(&b, "demo", KEY)
    })
    .await
    .unwrap();
    publisher.wait_connected(WAIT).await.unwrap();
    const VIEWERS: usize = 30;
    let mut viewers = Vec::new();
    for _ in 0..VIEWERS {
        viewers.push(view(ViewConfig::new(&b, "demo")).await.unwrap());
    }
    for v in &viewers {
        let s = v
            .wait_until(|s| s.first_keyframe_after.is_some(), WAIT)
            .await
            .unwrap();
        assert_eq!(s.pattern_mismatches(), 0);
    }
    let requests = metric(&server, "keyframe_requests_total").await;
    let plis = metric(&server, "plis_sent_total").await;
    let received = publisher.stats().plis_received;
    println!("{VIEWERS} viewers: {requests} keyframe requests, {plis} PLIs sent, {received} received by the publisher");
    assert!(requests >= VIEWERS as u64, "every join asks for a keyframe");
    assert!(
        (1..=6).contains(&plis),
        "coalesced: {plis} PLIs for {requests} requests"
    );
    assert!(received >= 1 && received <= plis);
    for v in viewers {
        v.stop().await.unwrap();
    }
    publisher.stop().await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewers_pli_reaches_the_publisher() {
    let (server, _dir) = start_server().await;
    let b = base(&server);
    let publisher = publish(PublishConfig {
        keyframe_interval: Duration::from_secs(60),
        ..PublishConfig::new(&b, "demo", KEY)
    })
    .await
    .unwrap();
    publisher.wait_connected(WAIT).await.unwrap();
    let viewer = view(ViewConfig::new(&b, "demo")).await.unwrap();
    viewer
        .wait_until(|s| s.first_keyframe_after.is_some(), WAIT)
        .await
        .unwrap();
    let keyframes_before = viewer.stats().video.keyframes;
    let plis_before = publisher.stats().plis_received;
    // Past the coalescing interval of the join's PLI, a viewer's own PLI goes through.
    let requests_before = metric(&server, "keyframe_requests_total").await;
    viewer.request_keyframe().await.unwrap();
    eventually("the viewer's PLI is counted", WAIT, || async {
        metric(&server, "keyframe_requests_total").await > requests_before
    })
    .await;
    publisher
        .wait_until(|s| s.plis_received > plis_before, WAIT)
        .await
        .unwrap();
    viewer
        .wait_until(|s| s.video.keyframes > keyframes_before, WAIT)
        .await
        .unwrap();
    viewer.stop().await.unwrap();
    publisher.stop().await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_are_told_when_the_publisher_leaves_and_a_new_one_can_publish() {
    let (server, _dir) = start_server().await;
    let b = base(&server);
    let publisher = publish(PublishConfig::new(&b, "demo", KEY)).await.unwrap();
    publisher.wait_connected(WAIT).await.unwrap();
    let viewers = [
        view(ViewConfig::new(&b, "demo")).await.unwrap(),
        view(ViewConfig::new(&b, "demo")).await.unwrap(),
    ];
    for v in &viewers {
        v.wait_video_packets(20, WAIT).await.unwrap();
    }
    // Same stream, second publisher: 409 while the first is live.
    let err = publish(PublishConfig::new(&b, "demo", KEY))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::CONFLICT));

    publisher.stop().await.unwrap();
    for v in viewers {
        let reason = v.wait_ended(WAIT).await.unwrap();
        assert!(
            matches!(
                reason,
                EndReason::Bye | EndReason::PeerClosed | EndReason::IceDisconnected
            ),
            "{reason:?}"
        );
        // The server already removed the session.
        assert_eq!(
            v.stop().await.unwrap_err().status(),
            Some(StatusCode::NOT_FOUND)
        );
    }
    assert_eq!(metric(&server, "viewers").await, 0);
    assert_eq!(metric(&server, "publishers").await, 0);
    // Nobody publishes now: 409 (draft-ietf-wish-whep), as before the first publisher.
    let err = view(ViewConfig::new(&b, "demo")).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::CONFLICT));

    // The stream can go live again.
    let again = publish(PublishConfig::new(&b, "demo", KEY)).await.unwrap();
    again.wait_connected(WAIT).await.unwrap();
    let v = view(ViewConfig::new(&b, "demo")).await.unwrap();
    v.wait_video_packets(20, WAIT).await.unwrap();
    v.stop().await.unwrap();
    again.stop().await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_viewer_is_removed_within_seconds() {
    let (server, _dir) = start_server().await;
    let b = base(&server);
    let publisher = publish(PublishConfig::new(&b, "demo", KEY)).await.unwrap();
    publisher.wait_connected(WAIT).await.unwrap();
    let stayer = view(ViewConfig::new(&b, "demo")).await.unwrap();
    let leaver = view(ViewConfig::new(&b, "demo")).await.unwrap();
    stayer.wait_video_packets(20, WAIT).await.unwrap();
    leaver.wait_video_packets(20, WAIT).await.unwrap();
    assert_eq!(metric(&server, "viewers").await, 2);
    let gone = std::time::Instant::now();
    leaver.vanish();
    // ICE consent: 3 s disconnected + 6 s failed by default.
    eventually(
        "vanished viewer removed",
        Duration::from_secs(20),
        || async { metric(&server, "viewers").await == 1 },
    )
    .await;
    println!("vanished viewer removed after {:?}", gone.elapsed());
    // The other viewer kept receiving throughout.
    let before = stayer.stats().video.packets;
    stayer
        .wait_until(|s| s.video.packets > before + 30, WAIT)
        .await
        .unwrap();
    stayer.stop().await.unwrap();
    publisher.stop().await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_viewer_gets_its_video_back_from_the_nack_cache() {
    let (server, _dir) = start_server_with(parallel_fanout).await;
    let b = base(&server);
    let publisher = publish(PublishConfig::new(&b, "demo", KEY)).await.unwrap();
    publisher.wait_connected(WAIT).await.unwrap();
    // 5 % of datagrams never reach the viewer; str0m NACKs the missing video packets.
    let viewer = view(ViewConfig {
        drop_every_nth_rtp: Some(20),
        ..ViewConfig::new(&b, "demo")
    })
    .await
    .unwrap();
    let stats = viewer
        .wait_until(|s| s.video.packets >= 400, WAIT)
        .await
        .unwrap();
    // Let retransmissions of the last gaps land before judging.
    let settled = viewer
        .wait_until(|s| s.video.packets >= stats.video.packets + 60, WAIT)
        .await
        .unwrap();
    println!(
        "lossy viewer: video {:?}, audio lost {}",
        settled.video, settled.audio.lost
    );
    assert!(
        settled.audio.lost > 0,
        "the drop really happened (audio is not retransmitted)"
    );
    // The viewer's NACKs are counted (str0m's ingress stats, once a second).
    let nacked = viewer
        .wait_until(
            |s| s.video_nacks_sent > 0 && s.video_jitter_us.is_some(),
            WAIT,
        )
        .await
        .unwrap();
    assert!(nacked.video_nacks_sent > 0);
    // Every video packet up to the ones just received was recovered from the server's cache.
    assert_eq!(
        settled.video.lost, 0,
        "video lost {} of {}",
        settled.video.lost, settled.video.packets
    );
    assert!(
        settled.video.reordered > 0,
        "recovered packets arrive late, retransmitted on the media SSRC"
    );
    assert_eq!(settled.pattern_mismatches(), 0);
    // The server answered from its per-stream history (fanout::History).
    let resent = metric(&server, "rtp_packets_retransmitted_total").await;
    assert!(
        resent >= settled.video.packets / 25,
        "{resent} retransmissions for {} packets at 5 % loss",
        settled.video.packets
    );
    viewer.stop().await.unwrap();
    publisher.stop().await.unwrap();
    server.shutdown().await;
}
