//! HLS into a real S3-compatible server (moto's, started here): playlists and segments land in
//! the bucket with the right Content-Type and Cache-Control; when S3 goes down mid-stream the
//! server carries on (failures counted, WebRTC untouched), and when it is back the live window
//! is written again. The ended broadcast's replay lands there too and is deleted when it expires.
//! A slow S3 gets every object, several at a time, each segment before the playlist naming it;
//! broadcasts left in the bucket without a replay record are deleted at start; a broadcast over
//! its replay size cap keeps only its beginning.

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
        .find(|l| l.ends_with(".m4s"))
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
    let segment = playlist.lines().find(|l| l.ends_with(".m4s")).unwrap();
    let (ct, cc, _) = object(&bucket, &format!("live/demo/source/{segment}"))
        .await
        .unwrap();
    assert_eq!(ct, "video/mp4");
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

fn s3_config(port: u16) -> media::hls::s3::S3Config {
    std::env::set_var("AWS_ACCESS_KEY_ID", "glint-test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "glint-test");
    media::hls::s3::S3Config {
        bucket: BUCKET.into(),
        region: "us-east-1".into(),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        prefix: "live/".into(),
        path_style: true,
    }
}

/// S3 made slow: every write waits `delay` first. Records writes at once, and any playlist
/// written before a segment it names was stored.
struct SlowS3 {
    inner: media::hls::s3::S3Store,
    delay: Duration,
    in_flight: std::sync::Mutex<(usize, usize)>,
    stored: std::sync::Mutex<std::collections::HashSet<String>>,
    early_playlists: std::sync::atomic::AtomicUsize,
}

impl media::hls::store::SegmentStore for SlowS3 {
    fn put<'a>(
        &'a self,
        path: &'a str,
        body: bytes::Bytes,
        kind: media::hls::store::Kind,
    ) -> media::hls::store::StoreFuture<'a> {
        Box::pin(async move {
            {
                let mut f = self.in_flight.lock().unwrap();
                f.0 += 1;
                f.1 = f.1.max(f.0);
            }
            if kind == media::hls::store::Kind::Playlist {
                let stored = self.stored.lock().unwrap();
                let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
                let missing = String::from_utf8_lossy(&body)
                    .lines()
                    .filter(|l| l.ends_with(".m4s"))
                    .any(|seg| !stored.contains(&format!("{dir}/{seg}")));
                if missing {
                    self.early_playlists
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            tokio::time::sleep(self.delay).await;
            let r = self.inner.put(path, body, kind).await;
            if r.is_ok() {
                self.stored.lock().unwrap().insert(path.to_owned());
            }
            self.in_flight.lock().unwrap().0 -= 1;
            r
        })
    }

    fn delete<'a>(&'a self, path: &'a str) -> media::hls::store::StoreFuture<'a> {
        self.inner.delete(path)
    }

    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> media::hls::store::StoreFuture<'a> {
        self.inner.delete_prefix(prefix)
    }

    fn list<'a>(&'a self, prefix: &'a str) -> media::hls::store::StoreFuture<'a, Vec<String>> {
        self.inner.list(prefix)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_s3_gets_every_object_several_at_a_time_segments_first() {
    use media::hls::store::{spawn_uploader, Kind, UploadLimits, DEFAULT_UPLOAD_CONCURRENCY};
    let s3 = S3Server::start(None);
    s3.create_bucket().await;
    let config = s3_config(s3.port);
    let bucket = media::hls::s3::client(&config).await;
    const DELAY: Duration = Duration::from_millis(250);
    let store = std::sync::Arc::new(SlowS3 {
        inner: media::hls::s3::S3Store::new(&config).await,
        delay: DELAY,
        in_flight: Default::default(),
        stored: Default::default(),
        early_playlists: Default::default(),
    });
    let metrics = std::sync::Arc::new(media::Metrics::default());
    let uploads = spawn_uploader(store.clone(), metrics.clone(), UploadLimits::default());
    const SEGMENTS: usize = 48;
    let started = std::time::Instant::now();
    let mut playlist = String::from("#EXTM3U\n");
    for i in 0..SEGMENTS {
        let name = format!("seg-1-{i:05}.ts");
        uploads.put(
            format!("demo/source/{name}"),
            bytes::Bytes::from(vec![0x47u8; 64 * 1024]),
            Kind::Segment,
        );
        playlist += &format!("#EXTINF:2.0,\n{name}\n");
        uploads.put(
            "demo/source/index.m3u8".into(),
            playlist.clone().into(),
            Kind::Playlist,
        );
    }
    uploads.flushed().await;
    let took = started.elapsed();
    let serial = DELAY * SEGMENTS as u32;
    assert!(
        took < serial / 3,
        "{took:?}: not much faster than one at a time ({serial:?})"
    );
    assert_eq!(
        store.in_flight.lock().unwrap().1,
        DEFAULT_UPLOAD_CONCURRENCY
    );
    assert_eq!(
        store
            .early_playlists
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "a playlist was written before a segment it names"
    );
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    assert_eq!(metrics.hls_uploads_dropped.load(relaxed), 0);
    assert_eq!(metrics.hls_uploads_failed.load(relaxed), 0);
    let segs = keys(&bucket, "live/demo/source/seg-").await.unwrap();
    assert_eq!(segs.len(), SEGMENTS);
    let (_, _, last) = object(&bucket, "live/demo/source/index.m3u8")
        .await
        .unwrap();
    assert_eq!(last, playlist, "the newest playlist is the one stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_left_without_a_replay_record_are_deleted_at_start() {
    let s3 = S3Server::start(None);
    s3.create_bucket().await;
    let config = s3_config(s3.port);
    let bucket = media::hls::s3::client(&config).await;
    let dir = tempdir::Dir::new();
    let with_s3 = |c: &mut glint::Config| {
        let mut hls = media::hls::HlsConfig::new(c.data_dir.join("hls"));
        hls.s3 = Some(config.clone());
        c.media.hls = Some(hls);
        c.database = None; // SurrealKV in the data dir: the replay record outlives the restart
    };
    // A run that recorded the broadcast of epoch 200.
    let mut c = test_config(&dir);
    with_s3(&mut c);
    let server = glint::start(c).await.unwrap();
    server
        .api
        .add_video(api::videos::NewVideo {
            stream_name: "demo",
            epoch: 200,
            ended_at: api::db::now_ms(), // not expired
            duration_ms: 2000,
            renditions: &["source".to_owned()],
            retention_ms: 3_600_000,
        })
        .await
        .unwrap();
    server.shutdown().await;
    // What a crashed run left: broadcasts 100 and 300 with no record, beside 200's replay.
    for key in [
        "live/demo/master.m3u8",
        "live/demo/source/index.m3u8",
        "live/demo/source/seg-100-00000.ts",
        "live/demo/360p/seg-100-00000.ts",
        "live/demo/source/seg-200-00000.ts",
        "live/demo/videos/200/master.m3u8",
        "live/demo/source/seg-300-00000.ts",
        "live/demo/source/seg-300-00001.ts",
        "live/demo/videos/300/source.m3u8",
    ] {
        bucket
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap();
    }
    let mut c = test_config(&dir);
    with_s3(&mut c);
    let server = glint::start(c).await.unwrap();
    // Broadcasts are swept in order of epoch: once 300 is gone, 200 has been decided.
    eventually("broadcasts 100 and 300 deleted", WAIT, || async {
        keys(&bucket, "live/demo/").await.is_some_and(|k| {
            !k.iter()
                .any(|k| k.contains("-100-") || k.contains("-300-") || k.contains("/300/"))
        })
    })
    .await;
    assert_eq!(
        keys(&bucket, "live/demo/").await.unwrap(),
        [
            "live/demo/master.m3u8",
            "live/demo/source/index.m3u8",
            "live/demo/source/seg-200-00000.ts",
            "live/demo/videos/200/master.m3u8",
        ]
    );
    server.shutdown().await;
}

/// The index of a segment name (`seg-<epoch>-00012.m4s` → 12).
fn segment_index(name: &str) -> usize {
    name.rsplit('-')
        .next()
        .and_then(|n| n.strip_suffix(".m4s"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a segment: {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_over_its_replay_size_cap_keeps_its_beginning_and_stays_live() {
    let s3 = S3Server::start(None);
    s3.create_bucket().await;
    let config = s3_config(s3.port);
    let bucket = media::hls::s3::client(&config).await;
    // About 130 kB per 2 s segment at 400 kbit/s + 128 kbit/s audio: a few fit in the cap.
    const CAP_BYTES: u64 = 400_000;
    let (server, _dir) = start_server_with(|c| {
        let mut hls = media::hls::HlsConfig::new(c.data_dir.join("hls"));
        hls.s3 = Some(config.clone());
        hls.ladder = Vec::new();
        hls.window = 2;
        hls.replay_max_bytes = CAP_BYTES;
        c.media.hls = Some(hls);
        c.replay_retention = Duration::from_secs(3600);
    })
    .await;
    let url = format!("rtmp://{}/live/{KEY}", server.rtmp_addr);
    let x264 = [
        "-b:v", "400k", "-maxrate", "400k", "-bufsize", "400k", "-g", "60",
    ];
    let mut ffmpeg = ffmpeg_rtmp(&url, "640x360", 22, &x264);
    // The server shares this runtime: wait for ffmpeg off its worker threads.
    tokio::task::spawn_blocking(move || ffmpeg.wait())
        .await
        .unwrap()
        .unwrap();
    let playlist_key = "live/demo/source/index.m3u8";
    let live = eventually_some("#EXT-X-ENDLIST in S3", WAIT, || async {
        let (_, _, p) = object(&bucket, playlist_key).await?;
        p.contains("#EXT-X-ENDLIST").then_some(p)
    })
    .await;
    let last = segment_index(last_segment(&live));
    let vod_key = eventually_some("the replay in S3", WAIT, || async {
        let keys = keys(&bucket, "live/demo/videos/").await?;
        keys.into_iter().find(|k| k.ends_with("/source.m3u8"))
    })
    .await;
    let (_, _, vod) = object(&bucket, &vod_key).await.unwrap();
    let kept: Vec<&str> = vod.lines().filter(|l| l.ends_with(".m4s")).collect();
    assert!(!kept.is_empty(), "{vod}");
    // The replay is the broadcast's unbroken beginning, within the cap.
    for (i, seg) in kept.iter().enumerate() {
        assert_eq!(segment_index(seg), i, "{vod}");
    }
    let mut kept_bytes = 0;
    for seg in &kept {
        let key = format!("live/demo/source/{}", seg.rsplit('/').next().unwrap());
        let head = bucket.head_object().bucket(BUCKET).key(&key).send().await;
        kept_bytes += head
            .unwrap_or_else(|e| panic!("{key}: {e}"))
            .content_length()
            .unwrap();
    }
    assert!(kept_bytes as u64 <= CAP_BYTES, "{kept_bytes} bytes kept");
    assert!(
        kept.len() + 4 <= last,
        "{} kept of {} segments",
        kept.len(),
        last + 1
    );
    // Segments after the cap left the store with the live window (which keeps window + 2);
    // initialization segments stay with the replay.
    eventually("segments over the cap deleted", WAIT, || async {
        let Some(stored) = keys(&bucket, "live/demo/source/seg-").await else {
            return false;
        };
        let stored: Vec<usize> = stored
            .iter()
            .filter(|k| k.ends_with(".m4s"))
            .map(|k| segment_index(k))
            .collect();
        (0..=last).all(|i| stored.contains(&i) == (i < kept.len() || i + 4 > last))
    })
    .await;
    assert!(metric(&server, "hls_replay_segments_not_kept_total").await >= 4);
    server.shutdown().await;
}
