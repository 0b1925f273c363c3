//! RTMP ingest with a real ffmpeg publisher: H.264 over RTMP reaches a str0m WHEP viewer as
//! H.264 RTP and its AAC as Opus RTP; wrong keys and garbage are refused; the stream goes offline
//! when ffmpeg stops; a publisher that drops and reconnects resumes the stream for the same viewer.

mod common;

use std::process::Child;
use std::time::Duration;

use common::*;
use loadtest::{view, VideoCodec, ViewConfig};
use media::ingest::rtmp::client::{obs_until_publish, replies};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);
/// Reconnect grace of the tests that wait for it to run out.
const GRACE: Duration = Duration::from_secs(2);

/// ffmpeg publishing `testsrc2` + `sine` as H.264 (baseline, no B-frames) + AAC over RTMP.
fn ffmpeg(url: &str, seconds: u32) -> Child {
    ffmpeg_with(
        url,
        seconds,
        &["-tune", "zerolatency", "-profile:v", "baseline", "-bf", "0"],
    )
}

fn ffmpeg_with(url: &str, seconds: u32, x264: &[&str]) -> Child {
    let x264: Vec<&str> = ["-g", "30"].iter().chain(x264).copied().collect();
    ffmpeg_rtmp(url, "640x360", seconds, &x264)
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
        .wait_until(
            |s| s.video.packets >= 150 && s.video.keyframes >= 1 && s.audio.packets >= 50,
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(stats.video_codec, Some(VideoCodec::H264));
    assert_eq!(stats.video.lost, 0, "{stats:?}");
    assert_eq!(stats.audio.lost, 0, "{stats:?}");
    assert!(stats.first_keyframe_after.is_some());

    // SIGTERM: ffmpeg ends the publish (FCUnpublish, deleteStream) and the stream goes offline
    // at once, with no reconnect grace.
    assert!(signal(&publisher, SIGTERM));
    let _ = publisher.wait();
    eventually(
        "stream offline after ffmpeg stops",
        Duration::from_secs(5),
        || async { server.media.streams().await.unwrap().is_empty() },
    )
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
    let (server, _dir) = start_server_with(|c| c.media.reconnect_grace = GRACE).await;
    let mut publisher = ffmpeg(&format!("rtmp://{}/live/{KEY}", server.rtmp_addr), 60);
    eventually("RTMP stream live", WAIT, || async {
        server.media.streams().await.unwrap().iter().any(|s| s.live)
    })
    .await;
    // Freeze ffmpeg: its TCP connection stays open but nothing more arrives.
    assert!(signal(&publisher, SIGSTOP));
    let frozen = std::time::Instant::now();
    eventually("stalled publisher dropped (idle timeout)", WAIT, || async {
        metric(&server, "publishers").await == 0
    })
    .await;
    // Dropped, not ended: the stream waits for the publisher to come back, then goes offline.
    let s = server.media.streams().await.unwrap();
    assert!(s.iter().all(|s| s.reconnecting), "{s:?}");
    eventually("offline after the reconnect grace", WAIT, || async {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_reconnects_resumes_the_stream_for_its_viewers() {
    let (server, _dir) = start_server().await;
    let url = format!("rtmp://{}/live/{KEY}", server.rtmp_addr);
    let mut first = ffmpeg(&url, 60);
    eventually("RTMP stream live", WAIT, || async {
        server.media.streams().await.unwrap().iter().any(|s| s.live)
    })
    .await;
    let viewer = view(ViewConfig::new(base(&server), "demo")).await.unwrap();
    let before = viewer
        .wait_until(|s| s.video.packets >= 60 && s.audio.packets >= 20, WAIT)
        .await
        .unwrap();

    // The connection is lost (no unpublish): the stream stays on air, the viewer stays.
    first.kill().unwrap();
    let _ = first.wait();
    eventually("publisher dropped", WAIT, || async {
        metric(&server, "publishers").await == 0
    })
    .await;
    let s = server.media.streams().await.unwrap();
    assert!(s.len() == 1 && s[0].live && s[0].reconnecting, "{s:?}");
    assert_eq!(s[0].viewers, 1);

    let mut second = ffmpeg(&url, 60);
    let after = viewer
        .wait_until(
            |s| {
                s.video.packets >= before.video.packets + 150
                    && s.video.keyframes > before.video.keyframes
                    && s.audio.packets >= before.audio.packets + 50
            },
            WAIT,
        )
        .await
        .unwrap();
    let s = server.media.streams().await.unwrap();
    assert!(s[0].live && !s[0].reconnecting, "{s:?}");
    // One numbering across both publishers: the viewer sees a pause, not a gap or a new source.
    assert_eq!(after.video.lost, 0, "{after:?}");
    assert_eq!(after.video.seq_gaps, 0, "{after:?}");
    assert_eq!(after.audio.lost, 0, "{after:?}");
    assert_eq!(metric(&server, "viewers").await, 1);

    second.kill().unwrap();
    let _ = second.wait();
    let _ = viewer.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_frames_are_re_encoded_away_for_webrtc_viewers() {
    let (server, _dir) = start_server().await;
    // OBS's x264 "high" profile with B-frames.
    let mut publisher = ffmpeg_with(
        &format!("rtmp://{}/live/{KEY}", server.rtmp_addr),
        60,
        &["-profile:v", "high", "-bf", "2"],
    );
    eventually("RTMP stream live", WAIT, || async {
        server.media.streams().await.unwrap().iter().any(|s| s.live)
    })
    .await;
    let viewer = view(ViewConfig::new(base(&server), "demo")).await.unwrap();
    let stats = viewer
        .wait_until(
            |s| s.video.packets >= 300 && s.video.keyframes >= 1 && s.audio.packets >= 50,
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(stats.video_codec, Some(VideoCodec::H264));
    assert_eq!(stats.video.lost, 0, "{stats:?}");
    // Passed through, B-frames arrive in decode order: timestamps step back at every one.
    assert_eq!(
        stats.video.timestamp_reversals, 0,
        "frames arrive in presentation order: {stats:?}"
    );
    publisher.kill().unwrap();
    let _ = publisher.wait();
    let _ = viewer.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enhanced_rtmp_hevc_is_refused_with_a_status_naming_the_codec() {
    let (server, _dir) = start_server().await;
    // OBS 30+ publishing HEVC: an enhanced-RTMP video tag (IsExHeader | keyframe, PacketType
    // SequenceStart, FourCC "hvc1") right after the accepted publish.
    let mut client = obs_until_publish(KEY);
    let mut sock = tokio::net::TcpStream::connect(server.rtmp_addr)
        .await
        .unwrap();
    sock.write_all(&client.wire).await.unwrap();
    let statuses = |got: &[u8]| -> Vec<_> {
        replies(got)
            .into_iter()
            .filter(|v| v.first().and_then(|c| c.as_str()) == Some("onStatus"))
            .filter_map(|v| v.get(3).cloned())
            .collect()
    };
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut sent_video = false;
    // Like OBS, send media once the publish is accepted; then read until the server closes.
    loop {
        if !sent_video && !statuses(&got).is_empty() {
            client.wire.clear();
            client.video(0, vec![0x90, b'h', b'v', b'c', b'1', 0x01, 0x02, 0x03]);
            sock.write_all(&client.wire).await.unwrap();
            sent_video = true;
        }
        match tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await {
            Err(_) => panic!("the server must answer, then close the connection"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    assert!(sent_video, "publish accepted before the connection closed");
    let statuses = statuses(&got);
    let field = |v: &media::ingest::rtmp::amf0::Value, k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(field(&statuses[0], "code"), "NetStream.Publish.Start");
    let last = statuses.last().unwrap();
    assert_eq!(field(last, "level"), "error", "{statuses:?}");
    assert!(
        field(last, "description").contains("unsupported video codec"),
        "{statuses:?}"
    );
    // Refused, not dropped: nothing waits for a reconnect.
    assert!(server.media.streams().await.unwrap().is_empty());
    assert_eq!(metric(&server, "publishers").await, 0);
    server.shutdown().await;
}

/// A TCP connection to the RTMP port from `from` (a loopback address) that sent C0, C1 and C2:
/// `Some` if the server answered the handshake, `None` if it closed the connection instead.
async fn rtmp_handshake(
    server: &glint::Server,
    from: std::net::IpAddr,
) -> Option<tokio::net::TcpStream> {
    use media::ingest::rtmp::handshake::SIG_LEN;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::new(from, 0)).unwrap();
    let mut sock = socket.connect(server.rtmp_addr).await.unwrap();
    let c0_c1_c2 = &media::ingest::rtmp::client::Client::new().wire;
    // A refused connection may be reset before the write completes.
    sock.write_all(c0_c1_c2).await.ok()?;
    let mut got = vec![0u8; 1 + 2 * SIG_LEN];
    match tokio::time::timeout(WAIT, sock.read_exact(&mut got)).await {
        Err(_) => panic!("the server must answer or close"),
        Ok(Ok(_)) => Some(sock),
        Ok(Err(_)) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_not_publishing_yet_are_capped_per_address_and_in_total() {
    let (server, _dir) = start_server_with(|c| {
        c.rtmp_limits.max_connections = 3;
        c.rtmp_limits.max_connections_per_address = 2;
    })
    .await;
    let a: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let b: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let mut a1 = rtmp_handshake(&server, a).await.expect("first from a");
    let _a2 = rtmp_handshake(&server, a).await.expect("second from a");
    assert!(
        rtmp_handshake(&server, a).await.is_none(),
        "a third from one address is closed"
    );
    let _b1 = rtmp_handshake(&server, b).await.expect("first from b");
    assert!(
        rtmp_handshake(&server, b).await.is_none(),
        "a fourth in total is closed"
    );

    // Once a connection publishes with a valid key it no longer counts.
    let full = obs_until_publish(KEY).wire;
    a1.write_all(&full[1 + 2 * media::ingest::rtmp::handshake::SIG_LEN..])
        .await
        .unwrap();
    let mut got = vec![0u8; 1 + 2 * media::ingest::rtmp::handshake::SIG_LEN];
    let mut buf = [0u8; 4096];
    let started = |got: &[u8]| {
        replies(got).iter().any(|v| {
            v.get(3)
                .and_then(|i| i.get("code"))
                .and_then(|c| c.as_str())
                == Some("NetStream.Publish.Start")
        })
    };
    while !started(&got) {
        let n = tokio::time::timeout(WAIT, a1.read(&mut buf))
            .await
            .expect("publish answered")
            .unwrap();
        assert_ne!(n, 0, "publish refused");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        rtmp_handshake(&server, b).await.is_some(),
        "the publisher's slot was given back"
    );
    server.shutdown().await;
}

/// One second of 48 kHz stereo AAC from ffmpeg's encoder (what OBS and ffmpeg publish): the
/// AudioSpecificConfig and the raw frames (ADTS headers taken off).
fn aac_second() -> (Vec<u8>, Vec<Vec<u8>>) {
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi"])
        .args(["-i", "sine=frequency=440:sample_rate=48000", "-t", "1"])
        .args(["-ac", "2", "-c:a", "aac", "-f", "adts", "-"])
        .output()
        .expect("ffmpeg runs");
    let adts = out.stdout;
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos + 7 <= adts.len() {
        let h = &adts[pos..pos + 7];
        assert_eq!((h[0], h[1] & 0xf6), (0xff, 0xf0), "an ADTS sync word");
        let len = ((h[3] as usize & 0x03) << 11) | ((h[4] as usize) << 3) | (h[5] as usize >> 5);
        let header = if h[1] & 0x01 == 0 { 9 } else { 7 }; // with CRC: 2 bytes more
        frames.push(adts[pos + header..pos + len].to_vec());
        pos += len;
    }
    // ISO/IEC 14496-3 §1.6.2.1: object type (5 bits), frequency index (4), channels (4).
    let h = &adts[..4];
    let object = (h[2] >> 6) + 1;
    let freq = (h[2] >> 2) & 0x0f;
    let channels = ((h[2] & 0x01) << 2) | (h[3] >> 6);
    let asc = vec![
        (object << 3) | (freq >> 1),
        ((freq & 1) << 7) | (channels << 3),
    ];
    (asc, frames)
}

/// The Opus of an AAC frame leaves as soon as it is encoded: a publisher that sends a second
/// of AAC and then nothing more has the whole second reach its viewer (it once waited for the
/// next AAC frame, and 20 ms of every 21 ms frame's Opus with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aac_reaches_viewers_as_opus_without_waiting_for_more_input() {
    const MSG_AUDIO: u8 = 8;
    let (server, _dir) = start_server().await;
    let (asc, frames) = aac_second();
    let mut client = obs_until_publish(KEY);
    let mut sock = tokio::net::TcpStream::connect(server.rtmp_addr)
        .await
        .unwrap();
    sock.write_all(&client.wire).await.unwrap();
    client.wire.clear();
    use media::ingest::rtmp::client::{avc_config_tag, TEST_PPS, TEST_SPS};
    client.video(0, avc_config_tag(TEST_SPS, TEST_PPS));
    sock.write_all(&client.wire).await.unwrap();
    eventually("RTMP stream live", WAIT, || async {
        server.media.streams().await.unwrap().iter().any(|s| s.live)
    })
    .await;
    let viewer = view(ViewConfig::new(base(&server), "demo")).await.unwrap();
    viewer
        .wait_until(|s| s.connected_after.is_some(), WAIT)
        .await
        .unwrap();

    client.wire.clear();
    let mut tag = vec![0xaf, 0x00];
    tag.extend_from_slice(&asc);
    client.msg(4, MSG_AUDIO, 1, 0, tag);
    for (i, frame) in frames.iter().enumerate() {
        let mut tag = vec![0xaf, 0x01];
        tag.extend_from_slice(frame);
        client.msg(4, MSG_AUDIO, 1, (i * 1024 * 1000 / 48_000) as u32, tag);
    }
    sock.write_all(&client.wire).await.unwrap();
    // Every 10 ms Opus frame whose samples were all in the AAC sent, and nothing more sent.
    let due = (frames.len() * 1024 / 480) as u64;
    let stats = viewer
        .wait_until(|s| s.audio.packets >= due, WAIT)
        .await
        .unwrap();
    assert_eq!(stats.audio.lost, 0, "{stats:?}");
    let _ = viewer.stop().await;
    drop(sock);
    server.shutdown().await;
}
