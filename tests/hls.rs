//! HLS ladder from a real RTMP publisher (ffmpeg, 1280x720 H.264 + AAC): the master playlist
//! lists the renditions (no upscaling), every rendition's fMP4 segments decode (ffprobe, with
//! their #EXT-X-MAP) at the right size with AAC audio and last about the target duration,
//! objects carry the right Content-Type and Cache-Control, and the playlists end with
//! #EXT-X-ENDLIST when the stream ends. Low-Latency HLS: blocking playlist reloads and preload
//! hints wait for their part, requests too far ahead get 400, parts concatenate to their
//! segment.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(40);

async fn get(url: &str) -> Option<(String, String, bytes::Bytes)> {
    let r = reqwest::get(url).await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    let header = |h: &str| {
        r.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (ct, cc) = (header("content-type"), header("cache-control"));
    Some((ct, cc, r.bytes().await.ok()?))
}

/// (duration, uri) of each segment of a media playlist.
fn segments(playlist: &str) -> Vec<(f64, String)> {
    let mut out = Vec::new();
    let mut lines = playlist.lines();
    while let Some(l) = lines.next() {
        if let Some(d) = l.strip_prefix("#EXTINF:") {
            let d: f64 = d
                .trim_end_matches(',')
                .split(',')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            out.push((d, lines.next().unwrap().to_owned()));
        }
    }
    out
}

/// The `#EXT-X-MAP` URI in force for the segment `uri` of `playlist`.
fn map_of(playlist: &str, uri: &str) -> String {
    let mut map = None;
    for l in playlist.lines() {
        if let Some(m) = l.strip_prefix("#EXT-X-MAP:URI=\"") {
            map = Some(m.trim_end_matches('"').to_owned());
        }
        if l == uri {
            break;
        }
    }
    map.unwrap_or_else(|| panic!("no #EXT-X-MAP before {uri}:\n{playlist}"))
}

/// The segment `uri` of the playlist at `playlist_url`, its initialization segment in front:
/// a file ffprobe reads.
async fn media_file(playlist_url: &str, playlist: &str, uri: &str) -> Vec<u8> {
    let init = resolve(playlist_url, &map_of(playlist, uri));
    let (_, _, init) = get(&init).await.unwrap_or_else(|| panic!("{init}"));
    let seg = resolve(playlist_url, uri);
    let (_, _, seg) = get(&seg).await.unwrap_or_else(|| panic!("{seg}"));
    [init.to_vec(), seg.to_vec()].concat()
}

fn ffprobe(file: &std::path::Path) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,codec_type,width,height",
            "-of",
            "json",
        ])
        .arg(file)
        .output()
        .expect("ffprobe is installed (scripts/setup.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ffmpeg(rtmp: std::net::SocketAddr, size: &str) -> std::process::Child {
    let url = format!("rtmp://{rtmp}/live/{KEY}");
    ffmpeg_rtmp(&url, size, 40, &["-tune", "zerolatency", "-g", "60"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_reconnect_is_a_discontinuity() {
    let (server, dir) = start_server_with(|c| {
        c.media.hls = Some(media::hls::HlsConfig::new(c.data_dir.join("hls")));
    })
    .await;
    let url = format!("{}/hls/demo/source/index.m3u8", base(&server));
    let mut first = ffmpeg(server.rtmp_addr, "640x360");
    eventually_some("2 segments", WAIT, || async {
        let (_, _, b) = get(&url).await?;
        (segments(&String::from_utf8_lossy(&b)).len() >= 2).then_some(())
    })
    .await;
    first.kill().unwrap(); // dropped, not ended: the stream waits for it
    let _ = first.wait();
    // Back at another size, so the segments tell which publisher they hold.
    let mut second = ffmpeg(server.rtmp_addr, "320x240");
    let playlist = eventually_some("#EXT-X-DISCONTINUITY then a segment", WAIT, || async {
        let (_, _, b) = get(&url).await?;
        let p = String::from_utf8_lossy(&b).into_owned();
        let after = p.split("#EXT-X-DISCONTINUITY\n").nth(1)?;
        (segments(after).len() >= 2).then_some(p)
    })
    .await;
    println!("{playlist}");
    assert_eq!(playlist.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
    // The tag sits exactly between the two publishers' segments.
    let (before, after) = playlist.split_once("#EXT-X-DISCONTINUITY\n").unwrap();
    let last_before = segments(before).pop().unwrap().1;
    let first_after = segments(after).remove(0).1;
    for (uri, width) in [(last_before, 640), (first_after, 320)] {
        let body = media_file(&url, &playlist, &uri).await;
        let file = dir.path.join(format!("{uri}.mp4"));
        std::fs::write(&file, &body).unwrap();
        let probe = ffprobe(&file);
        let video = probe["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["codec_type"] == "video")
            .cloned()
            .unwrap();
        assert_eq!(video["width"].as_u64(), Some(width), "{uri}");
    }
    assert!(
        !playlist.contains("#EXT-X-ENDLIST"),
        "one stream throughout"
    );
    second.kill().unwrap();
    let _ = second.wait();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_stream_becomes_an_hls_ladder() {
    let (server, dir) = start_server_with(|c| {
        c.media.hls = Some(media::hls::HlsConfig::new(c.data_dir.join("hls")));
    })
    .await;
    let b = base(&server);
    let mut ffmpeg = ffmpeg(server.rtmp_addr, "1280x720");

    let master_url = format!("{b}/hls/demo/master.m3u8");
    let (ct, cc, body) = eventually_some("master playlist", WAIT, || get(&master_url)).await;
    assert_eq!(ct, "application/vnd.apple.mpegurl");
    assert_eq!(cc, "public, max-age=1");
    let master = String::from_utf8(body.to_vec()).unwrap();
    println!("{master}");
    // 720p input: the source plus 480p and 360p; no 720p re-encode, nothing upscaled.
    assert_eq!(master.matches("#EXT-X-STREAM-INF:").count(), 3, "{master}");
    assert!(master.contains("RESOLUTION=1280x720,FRAME-RATE=30.000,CODECS=\"avc1.42c01f,mp4a.40.2\"\nsource/index.m3u8"), "{master}");
    assert!(master.contains("RESOLUTION=854x480"));
    assert!(master.contains("RESOLUTION=640x360"));
    assert!(master.contains("AVERAGE-BANDWIDTH="));
    let live: serde_json::Value = reqwest::get(format!("{b}/api/live"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(live[0]["hls_url"], "/hls/demo/master.m3u8");
    assert_eq!(live[0]["thumbnail_url"], "/hls/demo/thumb.jpg");

    for (name, width, height) in [
        ("source", 1280, 720),
        ("480p", 854, 480),
        ("360p", 640, 360),
    ] {
        let url = format!("{b}/hls/demo/{name}/index.m3u8");
        let playlist = eventually_some(&format!("{name}: 3 segments"), WAIT, || async {
            let (_, _, b) = get(&url).await?;
            let p = String::from_utf8_lossy(&b).into_owned();
            (segments(&p).len() >= 3).then_some(p)
        })
        .await;
        assert!(playlist.contains("#EXT-X-MEDIA-SEQUENCE:"), "{playlist}");
        let segs = segments(&playlist);
        // RFC 8216 §4.3.3.1: every duration, rounded, within the target duration, which is the
        // configured 2 s (3 when the first segment, see below, ran long on a loaded machine).
        let target: f64 = playlist
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-TARGETDURATION:"))
            .and_then(|t| t.parse().ok())
            .unwrap();
        assert!(target == 2.0 || target == 3.0, "{playlist}");
        assert!(segs.iter().all(|(d, _)| d.round() <= target), "{playlist}");
        // Segments split at the source's keyframes (every 2 s), in every rendition.
        // (The first segment may be shorter: the packets queued while the input was measured
        // enter the pipeline at once.)
        for (d, _) in &segs[1..segs.len() - 1] {
            assert!(
                (1.5..=2.6).contains(d),
                "{name}: segment of {d} s:\n{playlist}"
            );
        }
        let (_, uri) = &segs[1];
        let (ct, cc, _) = get(&format!("{b}/hls/demo/{name}/{uri}")).await.unwrap();
        assert_eq!(ct, "video/mp4");
        assert!(cc.contains("immutable"));
        let file = dir.path.join(format!("{name}.mp4"));
        std::fs::write(&file, media_file(&url, &playlist, uri).await).unwrap();
        let probe = ffprobe(&file);
        let streams = probe["streams"].as_array().unwrap();
        let video = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
        assert_eq!(video["codec_name"], "h264");
        assert_eq!(
            (video["width"].as_u64(), video["height"].as_u64()),
            (Some(width), Some(height))
        );
        assert!(streams.iter().any(|s| s["codec_name"] == "aac"), "{probe}");
    }

    // A thumbnail for the browse page.
    let thumb_url = format!("{b}/hls/demo/thumb.jpg");
    let (ct, _, jpeg) = eventually_some("thumbnail", WAIT, || get(&thumb_url)).await;
    assert_eq!(ct, "image/jpeg");
    let file = dir.path.join("thumb.jpg");
    std::fs::write(&file, &jpeg).unwrap();
    let probe = ffprobe(&file);
    assert_eq!(probe["streams"][0]["codec_name"], "mjpeg");
    assert_eq!(
        (
            probe["streams"][0]["width"].as_u64(),
            probe["streams"][0]["height"].as_u64()
        ),
        (Some(320), Some(180))
    );

    // The publisher stops: the stream ends and so do its playlists.
    assert!(signal(&ffmpeg, SIGTERM));
    let _ = ffmpeg.wait();
    eventually("#EXT-X-ENDLIST", WAIT, || async {
        get(&format!("{b}/hls/demo/360p/index.m3u8"))
            .await
            .is_some_and(|(_, _, b)| String::from_utf8_lossy(&b).contains("#EXT-X-ENDLIST"))
    })
    .await;
    assert!(get(&format!("{b}/hls/../secret.ts")).await.is_none());
    server.shutdown().await;
}

/// `../../source/seg-1-00000.m4s` against the playlist's URL.
fn resolve(playlist_url: &str, uri: &str) -> String {
    reqwest::Url::parse(playlist_url)
        .unwrap()
        .join(uri)
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_broadcast_is_a_replay_until_it_expires() {
    const RETENTION: Duration = Duration::from_secs(20);
    let (server, dir) = start_server_with(|c| {
        let mut hls = media::hls::HlsConfig::new(c.data_dir.join("hls"));
        hls.window = 2; // the live playlist lists 2 segments; the replay keeps them all
        c.media.hls = Some(hls);
        c.replay_retention = RETENTION;
    })
    .await;
    let b = base(&server);
    let Channel {
        stream_id: id, key, ..
    } = create_channel(
        &server,
        "vera",
        serde_json::json!({"title": "Speedrun", "category": "gaming"}),
    )
    .await;

    // 9 s of video, then ffmpeg ends the stream.
    let url = format!("rtmp://{}/live/{key}", server.rtmp_addr);
    let mut ffmpeg = ffmpeg_rtmp(&url, "640x360", 9, &["-tune", "zerolatency", "-g", "60"]);
    let live = eventually_some("the stream's HLS URL while live", WAIT, || async {
        let v: serde_json::Value = reqwest::get(format!("{b}/api/streams/{id}"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["hls_url"].as_str().map(str::to_owned)
    })
    .await;
    assert_eq!(live, "/hls/vera/master.m3u8");
    let _ = ffmpeg.wait();

    let list_url = format!("{b}/api/streams/{id}/videos");
    let video = eventually_some("the replay listed", WAIT, || async {
        let v: serde_json::Value = reqwest::get(&list_url).await.ok()?.json().await.ok()?;
        v["items"].as_array()?.first().cloned()
    })
    .await;
    println!("{video}");
    assert_eq!(video["title"], "Speedrun");
    assert_eq!(video["category"], "gaming");
    assert_eq!(video["stream"], id.as_str());
    let duration = video["duration_ms"].as_i64().unwrap();
    assert!((6_000..=11_000).contains(&duration), "{video}");
    let expires = video["expires_at"].as_i64().unwrap() - video["ended_at"].as_i64().unwrap();
    assert_eq!(expires, RETENTION.as_millis() as i64);
    let hls_url = video["hls_url"].as_str().unwrap();
    assert!(hls_url.starts_with("/hls/vera/videos/"), "{hls_url}");
    let video_id = video["id"].as_str().unwrap();
    let one: serde_json::Value = reqwest::get(format!("{b}/api/videos/{video_id}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["hls_url"], hls_url);

    // The VOD master lists the renditions; each VOD playlist has every segment of the
    // broadcast (not only the live window's 2), and each segment is there.
    let master_url = format!("{b}{hls_url}");
    let (ct, _, master) = get(&master_url).await.expect("VOD master playlist");
    assert_eq!(ct, "application/vnd.apple.mpegurl");
    let master = String::from_utf8(master.to_vec()).unwrap();
    let renditions: Vec<&str> = master.lines().filter(|l| l.ends_with(".m3u8")).collect();
    assert!(!renditions.is_empty(), "{master}");
    for r in &renditions {
        let url = resolve(&master_url, r);
        let (_, _, p) = get(&url).await.unwrap_or_else(|| panic!("{url}"));
        let p = String::from_utf8(p.to_vec()).unwrap();
        assert!(p.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"), "{p}");
        assert!(p.ends_with("#EXT-X-ENDLIST\n"), "{p}");
        let segs = segments(&p);
        assert!(segs.len() >= 4, "{r}: {p}");
        let total: f64 = segs.iter().map(|(d, _)| d).sum();
        assert!(
            (total * 1000.0 - duration as f64).abs() < 2_500.0,
            "{total} s vs {duration} ms\n{p}"
        );
        for (_, uri) in &segs {
            assert!(get(&resolve(&url, uri)).await.is_some(), "{uri}");
        }
    }
    // A player reads it as one video of about that length.
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(&master_url)
        .output()
        .unwrap();
    let probed: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0.0);
    assert!(
        (probed * 1000.0 - duration as f64).abs() < 2_500.0,
        "ffprobe: {probed} s, {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let thumb = resolve(&master_url, "thumb.jpg");
    assert_eq!(
        video["thumbnail_url"].as_str().map(|t| format!("{b}{t}")),
        Some(thumb.clone())
    );
    assert!(get(&thumb).await.is_some(), "replay thumbnail");

    // After the retention, the replay is gone: from the API and from the store.
    eventually("the replay expired", RETENTION + WAIT, || async {
        let v: serde_json::Value = reqwest::get(&list_url).await.unwrap().json().await.unwrap();
        v["items"].as_array().is_some_and(|a| a.is_empty())
    })
    .await;
    let epoch = hls_url.split('/').nth(4).unwrap();
    eventually("its objects deleted", WAIT, || async {
        let root = dir.path.join("hls/vera");
        let left: Vec<String> = walk(&root)
            .into_iter()
            .filter(|p| p.contains(epoch))
            .collect();
        left.is_empty()
    })
    .await;
    assert!(get(&master_url).await.is_none());
    server.shutdown().await;
}

/// Every file under `root`, as paths.
fn walk(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

/// A WHIP publisher's H.264 and Opus (str0m, the load-test clip: payload types 108/111, not
/// the pipeline's 96) become the ladder too: every rendition gets segments that decode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whip_publisher_becomes_an_hls_ladder() {
    let (server, dir) = start_server_with(|c| {
        c.media.hls = Some(media::hls::HlsConfig::new(c.data_dir.join("hls")));
    })
    .await;
    let b = base(&server);
    let publisher = loadtest::publish(loadtest::PublishConfig {
        clip: Some(loadtest::clip::builtin()),
        ..loadtest::PublishConfig::new(&b, "demo", KEY)
    })
    .await
    .unwrap();
    publisher.wait_connected(WAIT).await.unwrap();
    let master = eventually_some("the master playlist", WAIT, || async {
        get(&format!("{b}/hls/demo/master.m3u8")).await
    })
    .await;
    let master = String::from_utf8_lossy(&master.2).into_owned();
    let renditions: Vec<String> = master
        .lines()
        .filter(|l| l.ends_with("index.m3u8"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        renditions.len(),
        3,
        "source, 480p, 360p below 720p: {master}"
    );
    for r in &renditions {
        let url = format!("{b}/hls/demo/{r}");
        let segs = eventually_some("a segment of each rendition", WAIT, || async {
            let (_, _, body) = get(&url).await?;
            let segs = segments(&String::from_utf8_lossy(&body));
            (!segs.is_empty()).then_some(segs)
        })
        .await;
        let rendition = r.trim_end_matches("/index.m3u8");
        let (_, _, playlist) = get(&url).await.unwrap();
        let playlist = String::from_utf8_lossy(&playlist).into_owned();
        // The stored objects (what a CDN gets), not glint's memory.
        let stored = dir.path.join("hls/demo").join(rendition);
        let (init, seg) = (
            stored.join(map_of(&playlist, &segs[0].1)),
            stored.join(&segs[0].1),
        );
        let body = eventually_some("the segment stored", WAIT, || async {
            Some([std::fs::read(&init).ok()?, std::fs::read(&seg).ok()?].concat())
        })
        .await;
        let file = dir.path.join(format!("{rendition}.mp4"));
        std::fs::write(&file, body).unwrap();
        let probe = ffprobe(&file);
        let kinds: Vec<&str> = probe["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["codec_type"].as_str().unwrap())
            .collect();
        assert!(
            kinds.contains(&"video") && kinds.contains(&"audio"),
            "{rendition}: {probe}"
        );
    }
    publisher.stop().await.unwrap();
    server.shutdown().await;
}

/// Ladders are capped (`max_ladders`): a stream beyond the cap gets its source rendition only,
/// passed through without encoding, and is counted; a finished stream gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_ladder_cap_get_the_source_rendition_only() {
    let (server, _dir) = start_server_with(|c| {
        let mut hls = media::hls::HlsConfig::new(c.data_dir.join("hls"));
        hls.max_ladders = 1;
        c.media.hls = Some(hls);
    })
    .await;
    let b = base(&server);
    let start = |stream: &'static str, key: &'static str| {
        let b = b.clone();
        async move {
            let p = loadtest::publish(loadtest::PublishConfig {
                clip: Some(loadtest::clip::builtin()),
                ..loadtest::PublishConfig::new(&b, stream, key)
            })
            .await
            .unwrap();
            p.wait_connected(WAIT).await.unwrap();
            p
        }
    };
    let renditions = |stream: &'static str| {
        let b = b.clone();
        async move {
            let master = eventually_some("the master playlist", WAIT, || async {
                get(&format!("{b}/hls/{stream}/master.m3u8")).await
            })
            .await;
            String::from_utf8_lossy(&master.2)
                .lines()
                .filter(|l| l.ends_with("index.m3u8"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        }
    };
    let first = start("demo", KEY).await;
    assert_eq!(renditions("demo").await.len(), 3);
    let second = start("other", "other-key").await;
    assert_eq!(renditions("other").await, vec!["source/index.m3u8"]);
    assert_eq!(metric(&server, "hls_ladders_refused_total").await, 1);
    // The source rendition plays: its segments appear.
    eventually_some("a source segment of the capped stream", WAIT, || async {
        let (_, _, body) = get(&format!("{b}/hls/other/source/index.m3u8")).await?;
        (!segments(&String::from_utf8_lossy(&body)).is_empty()).then_some(())
    })
    .await;
    first.stop().await.unwrap();
    second.stop().await.unwrap();
    server.shutdown().await;
}

/// Each complete segment of a Low-Latency playlist with the parts listed before it.
fn parted_segments(playlist: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut parts = Vec::new();
    let mut lines = playlist.lines();
    while let Some(l) = lines.next() {
        if let Some(attrs) = l.strip_prefix("#EXT-X-PART:") {
            parts.push(attr(attrs, "URI").unwrap());
        } else if l.starts_with("#EXTINF:") {
            out.push((lines.next().unwrap().to_owned(), std::mem::take(&mut parts)));
        }
    }
    out
}

/// The value of `name` in a tag's attribute list (quotes removed).
fn attr(attrs: &str, name: &str) -> Option<String> {
    attrs.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.trim_matches('"').to_owned())
    })
}

/// `seg-<epoch>-00012.3.m4s` → (12, 3).
fn part_number(uri: &str) -> (u64, u64) {
    let stem = uri.trim_end_matches(".m4s");
    let (seg, part) = stem.rsplit_once('.').unwrap();
    let msn = seg.rsplit('-').next().unwrap();
    (msn.parse().unwrap(), part.parse().unwrap())
}

/// ffmpeg decodes the whole file without a complaint.
fn decodes(file: &std::path::Path) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(file)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_latency_hls_blocks_until_the_part_exists() {
    let (server, dir) = start_server_with(|c| {
        c.media.hls = Some(media::hls::HlsConfig::new(c.data_dir.join("hls")));
    })
    .await;
    let b = base(&server);
    let url = format!("{b}/hls/demo/source/index.m3u8");
    // 44.1 kHz AAC: HLS takes it as it came (a re-encode would make it 48 kHz).
    let mut ffmpeg = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args([
            "-t",
            "40",
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ])
        .args([
            "-tune",
            "zerolatency",
            "-g",
            "60",
            "-c:a",
            "aac",
            "-ar",
            "44100",
            "-f",
            "flv",
        ])
        .arg(format!("rtmp://{}/live/{KEY}", server.rtmp_addr))
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let playlist = eventually_some("a segment with its parts", WAIT, || async {
        let (_, _, body) = get(&url).await?;
        let p = String::from_utf8_lossy(&body).into_owned();
        parted_segments(&p)
            .iter()
            .any(|(_, parts)| !parts.is_empty())
            .then_some(p)
    })
    .await;
    println!("{playlist}");
    assert!(playlist.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK="));
    assert!(
        playlist.contains("#EXT-X-PART-INF:PART-TARGET=0.340\n"),
        "30 fps: 10 frames"
    );
    assert!(playlist.contains("#EXT-X-PROGRAM-DATE-TIME:"));
    let hint = |p: &str| {
        p.lines()
            .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:"))
            .and_then(|a| attr(a, "URI"))
            .unwrap_or_else(|| panic!("no preload hint:\n{p}"))
    };

    // A blocking reload for the hinted part: answered once that part (or a later one) exists.
    let next = hint(&playlist);
    let parts_listed = |p: &str, uri: &str| {
        p.lines()
            .filter(|l| l.starts_with("#EXT-X-PART:"))
            .any(|l| l.contains(&format!("URI=\"{uri}\"")))
    };
    assert!(!parts_listed(&playlist, &next));
    let (msn, part) = part_number(&next);
    let (_, cc, body) = get(&format!("{url}?_HLS_msn={msn}&_HLS_part={part}"))
        .await
        .expect("blocking reload");
    assert_eq!(cc, "public, max-age=6");
    let after = String::from_utf8_lossy(&body).into_owned();
    let listed =
        parts_listed(&after, &next) || after.contains(&format!("-{:05}.0.m4s\",", msn + 1));
    assert!(
        listed,
        "{next} (or the next segment's first part) listed:\n{after}"
    );
    assert_ne!(hint(&after), next);

    // The preload hint: a request for the part before it exists waits for it.
    let hinted = hint(&after);
    let (ct, _, bytes) = get(&format!("{b}/hls/demo/source/{hinted}"))
        .await
        .unwrap_or_else(|| panic!("{hinted}"));
    assert_eq!(ct, "video/mp4");
    assert_eq!(&bytes[4..8], b"moof", "a part is a CMAF chunk");

    // Too far ahead, or malformed: 400 at once.
    for q in [
        format!("_HLS_msn={}", msn + 5),
        format!("_HLS_msn={msn}&_HLS_part={}", part + 60),
        "_HLS_part=1".to_owned(),
        "_HLS_msn=x".to_owned(),
    ] {
        let r = reqwest::get(format!("{url}?{q}")).await.unwrap();
        assert_eq!(r.status(), 400, "{q}");
    }

    // Parts concatenate to their segment; the segment and every part decode.
    let (_, _, body) = get(&url).await.unwrap();
    let now = String::from_utf8_lossy(&body).into_owned();
    let (seg, parts) = parted_segments(&now)
        .into_iter()
        .rfind(|(_, parts)| !parts.is_empty())
        .unwrap();
    assert!(parts.len() >= 4, "2 s of 1/3 s parts: {parts:?}");
    let (_, _, init) = get(&resolve(&url, &map_of(&now, &seg))).await.unwrap();
    let mut joined = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let (_, _, bytes) = get(&resolve(&url, p)).await.unwrap();
        let file = dir.path.join(format!("part{i}.mp4"));
        std::fs::write(&file, [init.to_vec(), bytes.to_vec()].concat()).unwrap();
        decodes(&file);
        joined.extend_from_slice(&bytes);
    }
    let (_, _, whole) = get(&resolve(&url, &seg)).await.unwrap();
    assert_eq!(whole.to_vec(), joined, "{seg} is its parts");
    let file = dir.path.join("segment.mp4");
    std::fs::write(&file, [init.to_vec(), whole.to_vec()].concat()).unwrap();
    decodes(&file);
    let probe = ffprobe(&file);
    let kinds: Vec<&str> = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["codec_type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 2, "{probe}");
    assert!(
        kinds.contains(&"video") && kinds.contains(&"audio"),
        "{probe}"
    );

    // The stored playlist (for CDNs) is the standard one: whole segments, no parts.
    let stored = std::fs::read_to_string(dir.path.join("hls/demo/source/index.m3u8")).unwrap();
    assert!(
        !stored.contains("#EXT-X-PART") && stored.contains("#EXTINF:"),
        "{stored}"
    );
    ffmpeg.kill().unwrap();
    let _ = ffmpeg.wait();
    server.shutdown().await;
}
