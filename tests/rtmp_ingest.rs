//! RTMP ingest with a real ffmpeg publisher: H.264 over RTMP reaches a str0m WHEP viewer as
//! H.264 RTP and its AAC as Opus RTP; wrong keys and garbage are refused; the stream goes offline when ffmpeg stops.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use loadtest::{view, VideoCodec, ViewConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);

fn ffmpeg(url: &str, seconds: u32) -> Child {
    Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
        ])
        .args([
            "-t",
            &seconds.to_string(),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ])
        .args([
            "-profile:v",
            "baseline",
            "-bf",
            "0",
            "-g",
            "30",
            "-f",
            "flv",
            url,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg is installed (scripts/setup.sh)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_h264_over_rtmp_plays_to_a_webrtc_viewer() {
    let (server, _dir) = start_server().await;
    let b = base(&server);
    let mut publisher = ffmpeg(&format!("rtmp://{}/live/{KEY}", server.rtmp_addr), 30);
    eventually("RTMP stream live", WAIT, || async {
        server
            .media
            .streams()
            .await
            .unwrap()
            .iter()
            .any(|s| s.name == "demo" && s.live)
    })
    .await;

    let viewer = view(ViewConfig::new(&b, "demo")).await.unwrap();
    let stats = viewer
        .wait_until(|s| s.video.packets >= 150 && s.video.keyframes >= 1, WAIT)
        .await
        .unwrap();
    assert_eq!(stats.video_codec, Some(VideoCodec::H264));
    assert_eq!(stats.video.lost, 0, "{stats:?}");
    assert!(stats.first_keyframe_after.is_some());

    publisher.kill().unwrap();
    let _ = publisher.wait();
    eventually("stream offline after ffmpeg stops", WAIT, || async {
        server.media.streams().await.unwrap().is_empty()
    })
    .await;
    assert_eq!(metric(&server, "publishers").await, 0);
    let _ = viewer.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_and_garbage_are_refused() {
    let (server, _dir) = start_server().await;
    let mut wrong = ffmpeg(&format!("rtmp://{}/live/not-a-key", server.rtmp_addr), 5);
    let status = tokio::task::spawn_blocking(move || wrong.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        !status.success(),
        "ffmpeg must fail to publish with a wrong key"
    );
    assert_eq!(metric(&server, "publishers").await, 0);

    // Bytes that are not RTMP: the server closes the connection.
    let mut sock = tokio::net::TcpStream::connect(server.rtmp_addr)
        .await
        .unwrap();
    sock.write_all(b"GET / HTTP/1.1\r\nHost: glint\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, sock.read(&mut buf))
        .await
        .expect("closed, not hanging")
        .unwrap_or(0);
    assert_eq!(n, 0, "connection closed without a reply");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_stalls_is_dropped_and_the_stream_goes_offline() {
    let (server, _dir) = start_server().await;
    let mut publisher = ffmpeg(&format!("rtmp://{}/live/{KEY}", server.rtmp_addr), 60);
    eventually("RTMP stream live", WAIT, || async {
        server.media.streams().await.unwrap().iter().any(|s| s.live)
    })
    .await;
    // Freeze ffmpeg: its TCP connection stays open but nothing more arrives.
    assert!(signal(&publisher, SIGSTOP));
    let frozen = std::time::Instant::now();
    eventually("stalled publisher dropped (idle timeout)", WAIT, || async {
        server.media.streams().await.unwrap().is_empty()
    })
    .await;
    println!(
        "stalled RTMP publisher dropped after {:?}",
        frozen.elapsed()
    );
    assert!(
        frozen.elapsed() >= Duration::from_secs(5),
        "not before the idle timeout"
    );
    publisher.kill().unwrap();
    let _ = publisher.wait();
    server.shutdown().await;
}
