//! HLS into a real S3-compatible server (moto's, started here): playlists and segments land in
//! the bucket with the right Content-Type and Cache-Control; when S3 goes down mid-stream the
//! server carries on (failures counted, WebRTC untouched), and when it is back the live window
//! is written again. The ended broadcast's replay lands there too and is deleted when it expires.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(40);
const BUCKET: &str = "glint-hls";
/// Replays are kept this long here.
const RETENTION: Duration = Duration::from_secs(8);

/// moto's S3 server; stopped when dropped.
struct S3Server {
    child: Child,
    _stdin: ChildStdin,
    port: u16,
}

impl S3Server {
    fn start(port: Option<u16>) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3/moto_server.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script);
        if let Some(p) = port {
            cmd.arg(p.to_string());
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with moto[server] (scripts/setup.sh)");
        let stdin = child.stdin.take().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("moto server did not start: {line:?}"));
        Self {
            child,
            _stdin: stdin,
            port,
        }
    }

    async fn create_bucket(&self) {
        let r = reqwest::Client::new()
            .put(format!("http://127.0.0.1:{}/{BUCKET}", self.port))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{r:?}");
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (Content-Type, Cache-Control, body) of an object, read back with a signed request.
async fn object(s3: &aws_sdk_s3::Client, key: &str) -> Option<(String, String, String)> {
    let o = s3.get_object().bucket(BUCKET).key(key).send().await.ok()?;
    let ct = o.content_type().unwrap_or_default().to_owned();
    let cc = o.cache_control().unwrap_or_default().to_owned();
    let body = o.body.collect().await.ok()?.into_bytes();
    Some((ct, cc, String::from_utf8_lossy(&body).into_owned()))
}

fn last_segment(playlist: &str) -> &str {
    playlist
        .lines()
        .rev()
        .find(|l| l.ends_with(".ts"))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_goes_to_s3_and_survives_an_s3_outage() {
    // Credentials for the AWS chain; moto accepts any.
    std::env::set_var("AWS_ACCESS_KEY_ID", "glint-test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "glint-test");
    let s3 = S3Server::start(None);
    s3.create_bucket().await;
    let s3_config = media::hls::s3::S3Config {
        bucket: BUCKET.into(),
        region: "us-east-1".into(),
        endpoint: Some(format!("http://127.0.0.1:{}", s3.port)),
        prefix: "live/".into(),
        path_style: true,
    };
    let bucket = media::hls::s3::client(&s3_config).await;
    let (server, _dir) = start_server_with(|c| {
        let mut hls = media::hls::HlsConfig::new(c.data_dir.join("hls"));
        hls.s3 = Some(s3_config.clone());
        c.media.hls = Some(hls);
        c.replay_retention = RETENTION;
    })
    .await;
    let url = format!("rtmp://{}/live/{KEY}", server.rtmp_addr);
    let mut ffmpeg = ffmpeg_rtmp(&url, "640x360", 60, &["-tune", "zerolatency", "-g", "60"]);

    let (ct, cc, master) = eventually_some("master playlist in S3", WAIT, || {
        object(&bucket, "live/demo/master.m3u8")
    })
    .await;
    assert_eq!(ct, "application/vnd.apple.mpegurl");
    assert_eq!(cc, "public, max-age=1");
    assert!(master.contains("source/index.m3u8"), "{master}");
    let playlist_key = "live/demo/source/index.m3u8";
    let playlist = eventually_some("2 segments in S3", WAIT, || async {
        let (_, _, p) = object(&bucket, playlist_key).await?;
        (p.matches("#EXTINF").count() >= 2).then_some(p)
    })
    .await;
    let segment = playlist.lines().find(|l| l.ends_with(".ts")).unwrap();
    let (ct, cc, _) = object(&bucket, &format!("live/demo/source/{segment}"))
        .await
        .unwrap();
    assert_eq!(ct, "video/mp2t");
    assert_eq!(cc, "public, max-age=31536000, immutable");

    // S3 goes down mid-stream.
    let port = s3.port;
    drop(s3);
    eventually("uploads failing and counted", WAIT, || async {
        metric(&server, "hls_uploads_failed_total").await >= 1
    })
    .await;
    assert!(
        server.media.streams().await.unwrap().iter().any(|s| s.live),
        "the stream is still live"
    );
    assert_eq!(metric(&server, "publishers").await, 1);

    // S3 is back (empty, as moto keeps nothing): the live window is written again.
    let s3 = S3Server::start(Some(port));
    s3.create_bucket().await;
    let recovered = eventually_some("live window back in S3", WAIT, || async {
        let (_, _, p) = object(&bucket, playlist_key).await?;
        (p.matches("#EXTINF").count() >= 2).then_some(p)
    })
    .await;
    // Newer segments than before the outage (names count up).
    assert!(
        last_segment(&recovered) > last_segment(&playlist),
        "{playlist}\n{recovered}"
    );

    assert!(signal(&ffmpeg, SIGTERM));
    let _ = ffmpeg.wait();
    eventually("#EXT-X-ENDLIST in S3", WAIT, || async {
        object(&bucket, playlist_key)
            .await
            .is_some_and(|(_, _, p)| p.contains("#EXT-X-ENDLIST"))
    })
    .await;

    // The broadcast is kept as a replay, then deleted from S3 when it expires.
    let vod = eventually_some("the replay's playlists in S3", WAIT, || async {
        let keys = keys(&bucket, "live/demo/videos/").await?;
        keys.iter()
            .any(|k| k.ends_with("/master.m3u8"))
            .then_some(keys)
    })
    .await;
    assert!(vod.iter().any(|k| k.ends_with("/source.m3u8")), "{vod:?}");
    let (ct, _, p) = object(
        &bucket,
        vod.iter().find(|k| k.ends_with("/source.m3u8")).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(ct, "application/vnd.apple.mpegurl");
    assert!(
        p.contains("#EXT-X-PLAYLIST-TYPE:VOD") && p.contains("../../source/seg-"),
        "{p}"
    );
    assert!(!keys(&bucket, "live/demo/source/seg-")
        .await
        .unwrap()
        .is_empty());
    eventually("the replay deleted from S3", RETENTION + WAIT, || async {
        keys(&bucket, "live/demo/videos/").await == Some(vec![])
            && keys(&bucket, "live/demo/source/seg-").await == Some(vec![])
    })
    .await;
    server.shutdown().await;
}

/// Every key under `prefix` (`None` if S3 did not answer).
async fn keys(s3: &aws_sdk_s3::Client, prefix: &str) -> Option<Vec<String>> {
    s3.list_objects_v2()
        .bucket(BUCKET)
        .prefix(prefix)
        .send()
        .await
        .map(|r| {
            r.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned))
                .collect()
        })
        .ok()
}
