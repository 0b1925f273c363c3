//! Bad input to WHIP/WHEP gets a precise status and leaves no session behind; real clients'
//! offers (OBS, ffmpeg) get the answers they need.

mod common;

use common::*;
use reqwest::{Client, StatusCode};

async fn post(
    client: &Client,
    url: String,
    token: Option<&str>,
    ctype: &str,
    body: String,
) -> reqwest::Response {
    let mut req = client.post(url).header("content-type", ctype).body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

async fn error_code(resp: reqwest::Response) -> String {
    let v: serde_json::Value = resp.json().await.unwrap();
    v["error"]["code"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn bad_requests_get_precise_errors_and_leave_nothing() {
    let (server, _dir) = start_server().await;
    let c = Client::new();
    let b = base(&server);
    let obs = fixture("obs_offer.sdp");

    let r = post(
        &c,
        format!("{b}/whip/demo"),
        None,
        "application/sdp",
        obs.clone(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(error_code(r).await, "missing_token");

    let r = post(
        &c,
        format!("{b}/whip/demo"),
        Some("wrong"),
        "application/sdp",
        obs.clone(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(r).await, "invalid_token");

    // Another stream's key does not open this one.
    let r = post(
        &c,
        format!("{b}/whip/demo"),
        Some("other-key"),
        "application/sdp",
        obs.clone(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let r = post(
        &c,
        format!("{b}/whip/nosuch"),
        Some(KEY),
        "application/sdp",
        obs.clone(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "unknown_stream");

    let r = post(
        &c,
        format!("{b}/whip/demo"),
        Some(KEY),
        "text/plain",
        obs.clone(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    for garbage in [
        "",
        "hello",
        "v=0\r\nm=video",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
    ] {
        let r = post(
            &c,
            format!("{b}/whip/demo"),
            Some(KEY),
            "application/sdp",
            garbage.to_string(),
        )
        .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "offer {garbage:?}");
    }

    // Only codecs we don't forward (VP9, PCMU): 406 (RFC 9725 §4.2).
    let unsupported = obs
        .replace(
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "m=audio 9 UDP/TLS/RTP/SAVPF 0",
        )
        .replace("a=rtpmap:111 opus/48000/2", "a=rtpmap:0 PCMU/8000")
        .replace(
            "m=video 9 UDP/TLS/RTP/SAVPF 96",
            "m=video 9 UDP/TLS/RTP/SAVPF 98",
        )
        .replace("a=rtpmap:96 H264/90000", "a=rtpmap:98 VP9/90000");
    let r = post(
        &c,
        format!("{b}/whip/demo"),
        Some(KEY),
        "application/sdp",
        unsupported,
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE);

    // A WHIP offer that only wants to receive is not a publish.
    let recvonly = obs.replace("a=sendonly", "a=recvonly");
    let r = post(
        &c,
        format!("{b}/whip/demo"),
        Some(KEY),
        "application/sdp",
        recvonly,
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE);

    // Data channel only: no audio or video.
    let datachannel = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=fingerprint:sha-256 2C:2F:A5:3B:2D:EE:37:97:C1:0D:5B:70:B9:69:64:F1:26:5B:02:55:62:BB:11:F0:23:8D:F8:2C:3C:E0:92:03\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sctp-port:5000\r\n";
    let r = post(
        &c,
        format!("{b}/whip/demo"),
        Some(KEY),
        "application/sdp",
        datachannel.to_string(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE);

    let huge = "a".repeat(signaling::MAX_BODY_BYTES + 1);
    let r = post(
        &c,
        format!("{b}/whip/demo"),
        Some(KEY),
        "application/sdp",
        huge,
    )
    .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let r = post(
        &c,
        format!("{b}/whip/bad%20name"),
        Some(KEY),
        "application/sdp",
        obs.clone(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // WHEP before anyone publishes: 409 + Retry-After (draft-ietf-wish-whep; docs/api.md).
    let r = post(
        &c,
        format!("{b}/whep/demo"),
        None,
        "application/sdp",
        obs.replace("a=sendonly", "a=recvonly"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(r.headers()["retry-after"], "2");
    assert_eq!(error_code(r).await, "stream_not_live");

    // Unknown session resources.
    let r = c
        .delete(format!("{b}/whip/demo/00000000000000000000000000000000"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c
        .delete(format!("{b}/whip/demo/not-hex"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // OPTIONS needs no token (RFC 9725 §4.4) and the CORS preflight works.
    let r = c
        .request(reqwest::Method::OPTIONS, format!("{b}/whip/demo"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let r = c
        .request(reqwest::Method::OPTIONS, format!("{b}/whip/demo"))
        .header("origin", "https://example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(r.headers()["access-control-allow-origin"], "*");

    assert_eq!(metric(&server, "publishers").await, 0);
    assert_eq!(metric(&server, "viewers").await, 0);
    assert!(server.media.streams().await.unwrap().is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn obs_offer_gets_201_location_and_a_candidate_and_a_second_publisher_gets_409() {
    let (server, _dir) = start_server().await;
    let c = Client::new();
    let b = base(&server);
    let r = post(
        &c,
        format!("{b}/whip/demo"),
        Some(KEY),
        "application/sdp",
        fixture("obs_offer.sdp"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["content-type"], "application/sdp");
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("/whip/demo/"), "{location}");
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.len() > 2, "{etag}");
    let answer = r.text().await.unwrap();
    // The server's own candidate is in the answer (OBS sends none and never trickles).
    let port = server.udp_addr.port();
    assert!(
        answer.contains(&format!("127.0.0.1 {port} typ host")),
        "{answer}"
    );
    assert!(answer.contains("a=ice-lite"), "{answer}");
    // H.264 answered on the offered PT with packetization-mode=1; Opus on 111.
    assert!(answer.contains("a=rtpmap:96 H264/90000"), "{answer}");
    assert!(answer.contains("packetization-mode=1"), "{answer}");
    assert!(answer.contains("a=rtpmap:111 opus/48000/2"), "{answer}");
    assert!(answer.contains("a=recvonly"), "{answer}");

    let r = post(
        &c,
        format!("{b}/whip/demo"),
        Some(KEY),
        "application/sdp",
        fixture("obs_offer.sdp"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(metric(&server, "publishers").await, 1);

    // Trickle (RFC 9725 §4.3): 204 for a fragment under the session's ETag; 428 without
    // If-Match, 412 for another ETag, 400 for what is not a fragment, 415 for another type,
    // 501 for an ICE restart (If-Match: *).
    let frag = "a=ice-ufrag:Ab1c\r\na=ice-pwd:uGMuQbi1XUxZSY0Ab6Jd9TSf\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\na=end-of-candidates\r\n";
    let patch = |ctype: &'static str, if_match: Option<&str>, body: &'static str| {
        let mut req = c
            .patch(format!("{b}{location}"))
            .header("content-type", ctype)
            .body(body);
        if let Some(tag) = if_match {
            req = req.header("if-match", tag);
        }
        async move { req.send().await.unwrap() }
    };
    const TRICKLE: &str = "application/trickle-ice-sdpfrag";
    let r = patch(TRICKLE, Some(&etag), frag).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = patch(TRICKLE, None, frag).await;
    assert_eq!(r.status(), StatusCode::PRECONDITION_REQUIRED);
    assert_eq!(error_code(r).await, "precondition_required");
    let r = patch(TRICKLE, Some("\"stale\""), frag).await;
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    for garbage in ["hello world", "", "a=candidate:1 1 udp\r\n", "\u{0}\u{1}"] {
        let r = patch(TRICKLE, Some(&etag), garbage).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{garbage:?}");
    }
    let r = patch("application/sdp", Some(&etag), frag).await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = patch(TRICKLE, Some("*"), frag).await;
    assert_eq!(r.status(), StatusCode::NOT_IMPLEMENTED);

    // The resource of another stream or protocol is not this one.
    let wrong = location.replace("/whip/demo/", "/whep/demo/");
    assert_eq!(
        c.delete(format!("{b}{wrong}"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );

    let r = c.delete(format!("{b}{location}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "OBS needs exactly 200");
    assert_eq!(metric(&server, "publishers").await, 0);
    assert_eq!(
        c.delete(format!("{b}{location}"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    server.shutdown().await;
}

#[tokio::test]
async fn ffmpeg_passive_offer_is_answered_active() {
    let (server, _dir) = start_server().await;
    let c = Client::new();
    let r = post(
        &c,
        format!("{}/whip/demo", base(&server)),
        Some(KEY),
        "application/sdp",
        fixture("ffmpeg_offer.sdp"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let answer = r.text().await.unwrap();
    assert!(answer.contains("a=setup:active"), "{answer}");
    assert!(answer.contains("a=rtpmap:106 H264/90000"), "{answer}");
    server.shutdown().await;
}

/// RFC 5763 §5 / RFC 8842: an offer that takes `a=setup:active` is answered passive.
#[tokio::test]
async fn active_offer_is_answered_passive() {
    let (server, _dir) = start_server().await;
    let c = Client::new();
    let offer = fixture("obs_offer.sdp").replace("a=setup:actpass", "a=setup:active");
    assert!(offer.contains("a=setup:active"));
    let r = post(
        &c,
        format!("{}/whip/demo", base(&server)),
        Some(KEY),
        "application/sdp",
        offer,
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let answer = r.text().await.unwrap();
    assert!(answer.contains("a=setup:passive"), "{answer}");
    assert!(!answer.contains("a=setup:active"), "{answer}");
    server.shutdown().await;
}

/// OPTIONS (a CORS preflight or a plain one) says what POST takes, without a token.
#[tokio::test]
async fn options_advertise_accept_post() {
    let (server, _dir) = start_server().await;
    let c = Client::new();
    for path in ["/whip/demo", "/whep/demo"] {
        for origin in [None, Some("https://player.example")] {
            let mut req = c.request(reqwest::Method::OPTIONS, format!("{}{path}", base(&server)));
            if let Some(o) = origin {
                req = req
                    .header("origin", o)
                    .header("access-control-request-method", "POST");
            }
            let r = req.send().await.unwrap();
            assert!(r.status().is_success(), "{path} {origin:?}: {}", r.status());
            assert_eq!(
                r.headers()["accept-post"],
                "application/sdp",
                "{path} {origin:?}"
            );
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_session_that_never_connects_is_dropped() {
    let dir = tempdir::Dir::new();
    let mut config = test_config(&dir);
    config.media.connect_timeout = std::time::Duration::from_millis(500);
    let server = glint::start(config).await.unwrap();
    let c = Client::new();
    let r = post(
        &c,
        format!("{}/whip/demo", base(&server)),
        Some(KEY),
        "application/sdp",
        fixture("obs_offer.sdp"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(metric(&server, "publishers").await, 1);
    eventually(
        "unconnected publisher removed",
        std::time::Duration::from_secs(10),
        || async { metric(&server, "publishers").await == 0 },
    )
    .await;
    server.shutdown().await;
}

/// The answer keeps the publisher's codec order (first supported codec wins) and never picks
/// H.264 packetization-mode=0.
#[tokio::test]
async fn publisher_codec_order_is_honoured_and_mode_0_is_refused() {
    let (server, _dir) = start_server().await;
    let c = Client::new();
    let url = format!("{}/whip/demo", base(&server));
    let obs = fixture("obs_offer.sdp");
    let video_line = "m=video 9 UDP/TLS/RTP/SAVPF 96";
    let h264 = "a=rtpmap:96 H264/90000";

    // VP8 offered first, H.264 second → VP8.
    let vp8_first = obs
        .replace(video_line, "m=video 9 UDP/TLS/RTP/SAVPF 97 96")
        .replace(h264, &format!("a=rtpmap:97 VP8/90000\r\n{h264}"));
    // H.264 packetization-mode=0 first, then VP8 → VP8 (mode 0 is not forwarded).
    let mode0_first = obs
        .replace(video_line, "m=video 9 UDP/TLS/RTP/SAVPF 96 97")
        .replace("packetization-mode=1", "packetization-mode=0")
        .replace(h264, &format!("{h264}\r\na=rtpmap:97 VP8/90000"));
    // H.264 mode 1 first, VP8 second → H.264 with the offered profile-level-id.
    let h264_first = obs
        .replace(video_line, "m=video 9 UDP/TLS/RTP/SAVPF 96 97")
        .replace(h264, &format!("{h264}\r\na=rtpmap:97 VP8/90000"));

    for (offer, want) in [
        (vp8_first, "97 VP8/90000"),
        (mode0_first, "97 VP8/90000"),
        (h264_first, "96 H264/90000"),
    ] {
        let r = post(&c, url.clone(), Some(KEY), "application/sdp", offer).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let location = r.headers()["location"].to_str().unwrap().to_string();
        let answer = r.text().await.unwrap();
        let video = answer.split("m=video").nth(1).expect("video m-line");
        let first_pt = video.split_whitespace().nth(2).unwrap();
        assert!(want.starts_with(first_pt), "want {want}, answer:\n{answer}");
        assert!(video.contains(&format!("a=rtpmap:{want}")), "{answer}");
        if want.contains("H264") {
            assert!(video.contains("profile-level-id=42e01f"), "{answer}");
            assert!(!video.contains("packetization-mode=0"), "{answer}");
        }
        let r = c
            .delete(format!("{}{location}", base(&server)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn an_offer_with_too_many_m_lines_gets_400_naming_the_limit() {
    let (server, _dir) = start_server().await;
    let c = Client::new();
    let obs = fixture("obs_offer.sdp");
    let eol = if obs.contains("\r\n") { "\r\n" } else { "\n" };
    let max = media::sfu::peer::MAX_MEDIA_SECTIONS;
    // OBS's two m-lines, then audio sections up to one beyond the limit.
    let mut offer = obs.trim_end().to_string();
    for mid in 2..=max {
        for line in [
            "m=audio 9 UDP/TLS/RTP/SAVPF 111".to_string(),
            "c=IN IP4 0.0.0.0".into(),
            format!("a=mid:{mid}"),
            "a=sendonly".into(),
            "a=rtcp-mux".into(),
            "a=rtpmap:111 opus/48000/2".into(),
        ] {
            offer.push_str(eol);
            offer.push_str(&line);
        }
    }
    offer.push_str(eol);
    let r = post(
        &c,
        format!("{}/whip/demo", base(&server)),
        Some(KEY),
        "application/sdp",
        offer,
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_offer");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{} m-lines", max + 1))
            && message.contains(&format!("at most {max}")),
        "{message}"
    );
    assert_eq!(metric(&server, "publishers").await, 0);
    assert!(server.media.streams().await.unwrap().is_empty());
    server.shutdown().await;
}
