//! Live viewer counts: str0m WHEP viewers and HLS players (distinct clients fetching a media
//! playlist) add up in `/api/live`, in the stream's API record, and in its chat room, and the
//! count falls when a viewer leaves.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use loadtest::{view, ViewConfig};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(30);

async fn json_of(c: &reqwest::Client, url: &str) -> Option<Value> {
    c.get(url).send().await.ok()?.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_and_hls_viewers_are_counted_and_pushed_to_chat() {
    let (server, _dir) = start_server_with(|c| {
        c.media.hls = Some(media::hls::HlsConfig::new(c.data_dir.join("hls")));
    })
    .await;
    let b = base(&server);
    let c = reqwest::Client::new();
    let Channel {
        stream_id: id, key, ..
    } = create_channel(&server, "vic", json!({"title": "Counting"})).await;
    // ffmpeg over RTMP with the channel's key: real H.264, so the HLS ladder runs too.
    let url = format!("rtmp://{}/live/{key}", server.rtmp_addr);
    let mut ffmpeg = ffmpeg_rtmp(&url, "320x240", 120, &["-tune", "zerolatency", "-g", "60"]);
    eventually("live", WAIT, || async {
        json_of(&c, &format!("{b}/api/streams/{id}"))
            .await
            .is_some_and(|s| s["live"] == true)
    })
    .await;

    let (chat, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/api/chat/vic", server.http_addr))
            .await
            .unwrap();
    let (_, mut chat) = chat.split();
    let mut viewers_in_chat = async move |want: u64| {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let msg = tokio::time::timeout_at(deadline, chat.next())
                .await
                .unwrap_or_else(|_| panic!("chat never said {want} viewers"))
                .unwrap()
                .unwrap();
            if let Message::Text(t) = msg {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "viewers" && v["count"] == want {
                    return;
                }
            }
        }
    };

    // Two WebRTC viewers.
    let first = view(ViewConfig::new(&b, "vic")).await.unwrap();
    let second = view(ViewConfig::new(&b, "vic")).await.unwrap();
    first.wait_connected(WAIT).await.unwrap();
    second.wait_connected(WAIT).await.unwrap();
    let stream_url = format!("{b}/api/streams/{id}");
    eventually("2 viewers in the API", WAIT, || async {
        json_of(&c, &stream_url)
            .await
            .is_some_and(|s| s["viewers"] == 2)
    })
    .await;
    viewers_in_chat(2).await;

    // Two HLS players (different User-Agents), polling the media playlist like players do.
    let playlist = format!("{b}/hls/vic/source/index.m3u8");
    eventually("HLS playlist", WAIT, || async {
        c.get(&playlist)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    let players = tokio::spawn({
        let (c, playlist) = (c.clone(), playlist.clone());
        async move {
            let mut reload = tokio::time::interval(Duration::from_secs(1)); // a player's reload
            loop {
                reload.tick().await;
                for ua in ["player-a", "player-b"] {
                    let _ = c.get(&playlist).header("user-agent", ua).send().await;
                }
            }
        }
    });
    let live_url = format!("{b}/api/live");
    let live = eventually_some("2 WebRTC + 2 HLS viewers in /api/live", WAIT, || async {
        let all = json_of(&c, &live_url).await?;
        let s = all.as_array()?.iter().find(|s| s["name"] == "vic")?.clone();
        (s["hls_viewers"] == 2 && s["webrtc_viewers"] == 2).then_some(s)
    })
    .await;
    assert_eq!(live["viewers"], 4);
    eventually("4 viewers in the API", WAIT, || async {
        json_of(&c, &stream_url)
            .await
            .is_some_and(|s| s["viewers"] == 4)
    })
    .await;
    viewers_in_chat(4).await;

    // One WebRTC viewer leaves.
    first.stop().await.unwrap();
    eventually("3 viewers in the API", WAIT, || async {
        json_of(&c, &stream_url)
            .await
            .is_some_and(|s| s["viewers"] == 3)
    })
    .await;
    viewers_in_chat(3).await;
    players.abort();
    second.stop().await.unwrap();
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    server.shutdown().await;
}
