//! The load-test harness against a real server, briefly (seconds): a scenario with a WHIP
//! publisher of the clip, an RTMP publisher (ffmpeg), WebRTC viewers, HLS viewers and chat
//! clients; and capacity mode up to a small cap. Asserts that sessions connected and media
//! flowed, and that the report and charts are made.

mod common;

use common::*;
use loadtest::scenario::{
    capacity, run, CapacityConfig, Media, PublisherKind, PublisherSpec, Scenario,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_scenario_runs_and_reports() {
    let (server, _dir) = start_server_with(|c| {
        c.media.hls = Some(media::hls::HlsConfig::new(c.data_dir.join("hls")));
    })
    .await;
    let scenario = Scenario {
        server: base(&server),
        duration_secs: 12,
        ramp_per_sec: 20.0,
        stream: "demo".into(),
        webrtc_viewers: 3,
        hls_viewers: 2,
        chat_clients: 5,
        chat_rate: 2.0,
        publishers: vec![
            PublisherSpec {
                kind: PublisherKind::Whip,
                stream: "demo".into(),
                key: KEY.into(),
            },
            PublisherSpec {
                kind: PublisherKind::Rtmp,
                stream: "other".into(),
                key: "other-key".into(),
            },
        ],
        media: Media::Clip,
        ..Scenario::default()
    };
    let report = run(scenario, None).await.unwrap();
    assert_eq!(
        (report.whip_publishers_up, report.rtmp_publishers_up),
        (1, 1)
    );
    let w = &report.webrtc;
    assert_eq!((w.started, w.connected, w.failed), (3, 3, 0), "{w:?}");
    assert!(w.video_packets > 1000, "{w:?}");
    assert!(w.video_loss_pct < 1.0, "{w:?}");
    assert!(w.latency_p95_ms.is_some_and(|p| p < 1000.0), "{w:?}");
    assert!(w.jitter_p50_ms.is_some(), "{w:?}");
    let per_viewer = w.rx_mbps_per_viewer.unwrap();
    assert!(
        (1.5..4.0).contains(&per_viewer),
        "the clip is ~2.5 Mbit/s: {per_viewer}"
    );
    // HLS viewers started with the stream; the ladder's first segments take a few seconds.
    let h = &report.hls;
    assert_eq!(h.started, 2);
    assert!(h.playing >= 1 && h.segments >= 2, "{h:?}");
    assert!(h.startup_p50_ms.is_some());
    let chat = report.chat.as_ref().unwrap();
    assert!(chat.deliveries > 0, "{chat:?}");
    assert!(report.timeline.len() >= 11, "{}", report.timeline.len());
    assert!(report.timeline.iter().any(|p| p.webrtc_connected == 3));
    assert!(report.human().contains("WebRTC viewers connected"));
    let charts = loadtest::charts::timeline_charts(&report.timeline);
    assert!(charts.iter().all(|(_, svg)| svg.contains("<polyline")));
    serde_json::to_string(&report).unwrap();
    server.shutdown().await;
}

/// Low-latency HLS viewers (blocking reloads, parts) of an RTMP stream play close to the live
/// edge without stalling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_latency_hls_viewers_play_parts() {
    let (server, _dir) = start_server_with(|c| {
        let mut hls = media::hls::HlsConfig::new(c.data_dir.join("hls"));
        hls.ladder = Vec::new(); // the source rendition only: the test is about delivery
        c.media.hls = Some(hls);
    })
    .await;
    let scenario = Scenario {
        server: base(&server),
        duration_secs: 10,
        stream: "demo".into(),
        hls_viewers: 3,
        hls_low_latency: true,
        publishers: vec![PublisherSpec {
            kind: PublisherKind::Rtmp,
            stream: "demo".into(),
            key: KEY.into(),
        }],
        media: Media::Clip,
        ..Scenario::default()
    };
    let report = run(scenario, None).await.unwrap();
    let h = &report.hls;
    println!("{h:?}");
    assert_eq!((h.started, h.failed), (3, 0), "{h:?}");
    assert_eq!(h.playing, 3, "{h:?}");
    assert!(h.parts >= 30, "~3 parts a second each: {h:?}");
    assert_eq!(h.segments, 0, "parts only: {h:?}");
    assert!(
        h.behind_live_edge_mean_ms.is_some_and(|b| b < 2000.0),
        "{h:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_mode_steps_up_to_its_cap() {
    let (server, _dir) = start_server().await;
    let report = capacity(
        CapacityConfig {
            server: base(&server),
            stream: "demo".into(),
            publishers: vec![PublisherSpec {
                kind: PublisherKind::Whip,
                stream: "demo".into(),
                key: KEY.into(),
            }],
            media: Media::Clip,
            step: 2,
            step_secs: 3,
            max_viewers: 4,
            max_loss_pct: 5.0,
            max_p95_ms: 2000.0,
            server_pid: None,
        },
        None,
    )
    .await
    .unwrap();
    assert_eq!(report.steps.len(), 2, "{:?}", report.steps);
    assert!(report.steps.iter().all(|s| s.ok), "{:?}", report.steps);
    assert_eq!(report.capacity, 4);
    assert!(report.stopped_because.contains("max_viewers"));
    server.shutdown().await;
}
