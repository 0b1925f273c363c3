//! Hostile HTTP clients against the real server: headers that never finish, bodies that
//! trickle, connection floods, WHIP/WHEP session floods from one address, spoofed
//! `X-Forwarded-For`; and the browser-facing headers (CORS only where cross-origin belongs,
//! CSP and friends on pages). Every limit here is in docs/operations.md.

mod common;

use std::time::Duration;

use common::*;
use reqwest::{Client, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(20);

/// Read until the peer closes (or `limit` passes, which fails the test); what was read.
async fn read_until_closed(tcp: &mut TcpStream, limit: Duration) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(limit, tcp.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "connection still open after {limit:?}");
    String::from_utf8_lossy(&out).into_owned()
}

async fn connect(server: &glint::Server) -> TcpStream {
    TcpStream::connect(server.http_addr).await.unwrap()
}

/// One request on a kept-alive connection, read up to the end of its (small) response.
async fn healthz(tcp: &mut TcpStream) {
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let mut got = String::new();
    while !got.ends_with("ok") {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}

#[tokio::test]
async fn headers_that_never_finish_are_cut_off() {
    let (server, _dir) = start_server_with(|c| {
        c.http_limits.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let mut tcp = connect(&server).await;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let answer = read_until_closed(&mut tcp, Duration::from_secs(10)).await;
    assert!(started.elapsed() >= Duration::from_millis(900), "{answer}");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );

    // An idle kept-alive connection is closed the same way.
    let mut tcp = connect(&server).await;
    healthz(&mut tcp).await;
    read_until_closed(&mut tcp, Duration::from_secs(10)).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_body_that_trickles_gets_408() {
    let (server, _dir) = start_server_with(|c| {
        c.http_limits.request_timeout = Duration::from_secs(1);
    })
    .await;
    let mut tcp = connect(&server).await;
    tcp.write_all(
        b"POST /whip/demo HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nContent-Length: 1000\r\n\r\nv=0\r\n",
    )
    .await
    .unwrap();
    let answer = read_until_closed(&mut tcp, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    server.shutdown().await;
}

#[tokio::test]
async fn connections_are_capped_per_address_and_in_total() {
    let (server, _dir) = start_server_with(|c| {
        c.http_limits.max_connections_per_address = 3;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut tcp = connect(&server).await;
        healthz(&mut tcp).await;
        held.push(tcp);
    }
    let mut extra = connect(&server).await;
    let answer = read_until_closed(&mut extra, WAIT).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    // A slot comes back when a connection closes.
    drop(held.pop());
    let c = Client::new();
    eventually("a freed slot is usable", WAIT, || async {
        c.get(format!("{}/healthz", base(&server)))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    drop(held);
    server.shutdown().await;

    let (server, _dir) = start_server_with(|c| {
        c.http_limits.max_connections = 2;
    })
    .await;
    let mut a = connect(&server).await;
    healthz(&mut a).await;
    let mut b = connect(&server).await;
    healthz(&mut b).await;
    let mut extra = connect(&server).await;
    let answer = read_until_closed(&mut extra, WAIT).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    drop((a, b));
    server.shutdown().await;
}

#[tokio::test]
async fn cross_origin_only_where_it_belongs_and_pages_carry_security_headers() {
    let (server, _dir) = start_server().await;
    let c = Client::new();
    let b = base(&server);
    let origin = "https://elsewhere.example";

    let r = c
        .get(format!("{b}/api/streams"))
        .header("origin", origin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers().get("access-control-allow-origin").is_none(),
        "the API is same-origin"
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");

    for path in ["/whip/demo", "/whep/demo"] {
        let r = c
            .request(reqwest::Method::OPTIONS, format!("{b}{path}"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["access-control-allow-origin"], "*", "{path}");
    }

    let r = c.get(format!("{b}/")).send().await.unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("object-src 'none'"), "{csp}");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(
        r.headers()["referrer-policy"],
        "strict-origin-when-cross-origin"
    );
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert!(
        r.headers().get("strict-transport-security").is_none(),
        "no HSTS over plain HTTP"
    );
    server.shutdown().await;
}

/// WHEP offers as a script would send them (an OBS-shaped offer turned recvonly).
fn viewer_offer() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/obs_offer.sdp"
    ))
    .unwrap()
    .replace("a=sendonly", "a=recvonly")
}

async fn whep(c: &Client, b: &str, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut req = c
        .post(format!("{b}/whep/demo"))
        .header("content-type", "application/sdp")
        .body(viewer_offer());
    if let Some(x) = forwarded_for {
        req = req.header("x-forwarded-for", x);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn session_requests_are_rate_limited_per_client_address() {
    let (server, _dir) = start_server_with(|c| {
        c.session_burst = 3;
        c.sessions_per_sec = 0.01;
    })
    .await;
    let c = Client::new();
    let b = base(&server);
    // Nobody publishes: 409 each, but every request counts.
    for _ in 0..3 {
        assert_eq!(whep(&c, &b, None).await.status(), StatusCode::CONFLICT);
    }
    let r = whep(&c, &b, None).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "{retry}");
    // Without trusted proxies, X-Forwarded-For changes nothing: same address.
    let r = whep(&c, &b, Some("198.51.100.1")).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    server.shutdown().await;

    // Behind a trusted proxy (here: loopback), each forwarded client has its own budget,
    // and what a client prepends to the header is not believed.
    let (server, _dir) = start_server_with(|c| {
        c.session_burst = 2;
        c.sessions_per_sec = 0.01;
        c.http_limits.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let b = base(&server);
    for _ in 0..2 {
        let r = whep(&c, &b, Some("198.51.100.1")).await;
        assert_eq!(r.status(), StatusCode::CONFLICT);
    }
    let r = whep(&c, &b, Some("203.0.113.50, 198.51.100.1")).await;
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "spoofed left part ignored"
    );
    let r = whep(&c, &b, Some("198.51.100.2")).await;
    assert_eq!(r.status(), StatusCode::CONFLICT, "another client");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_flood_from_one_address_is_capped_and_expires() {
    let (server, _dir) = start_server_with(|c| {
        c.session_burst = 0; // the rate is the other test's; this one is about holding
        c.media.max_sessions_per_address = 8;
        c.media.connect_timeout = Duration::from_secs(2);
    })
    .await;
    let b = base(&server);
    let publisher = loadtest::publish(loadtest::PublishConfig::new(&b, "demo", KEY))
        .await
        .unwrap();
    publisher.wait_connected(WAIT).await.unwrap();
    let c = Client::new();
    // The publisher holds one of this address's sessions.
    let mut created = 0;
    let mut refused = 0;
    for _ in 0..40 {
        let r = whep(&c, &b, None).await;
        match r.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(r.headers().contains_key("retry-after"));
                assert_eq!(error_code(r).await, "too_many_sessions");
                refused += 1;
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!((created, refused), (7, 33));
    // Offers that never connect expire after the connect timeout, and give their places back.
    eventually("never-connected viewers expire", WAIT, || async {
        metric(&server, "viewers").await == 0
    })
    .await;
    assert_eq!(whep(&c, &b, None).await.status(), StatusCode::CREATED);
    publisher.stop().await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_cannot_take_the_places_kept_for_publishers() {
    let (server, _dir) = start_server_with(|c| {
        c.session_burst = 0;
        c.media.max_sessions = 6;
        c.media.publisher_reserve = 3;
    })
    .await;
    let b = base(&server);
    let publisher = loadtest::publish(loadtest::PublishConfig::new(&b, "demo", KEY))
        .await
        .unwrap();
    publisher.wait_connected(WAIT).await.unwrap();
    let c = Client::new();
    // 1 publisher + 2 viewers = 3 = max - reserve: the next viewer gets 503.
    for _ in 0..2 {
        assert_eq!(whep(&c, &b, None).await.status(), StatusCode::CREATED);
    }
    let r = whep(&c, &b, None).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    // A publisher still gets in.
    let other = loadtest::publish(loadtest::PublishConfig::new(&b, "other", "other-key"))
        .await
        .unwrap();
    other.wait_connected(WAIT).await.unwrap();
    other.stop().await.unwrap();
    publisher.stop().await.unwrap();
    server.shutdown().await;
}

async fn error_code(r: reqwest::Response) -> String {
    let v: serde_json::Value = r.json().await.unwrap();
    v["error"]["code"].as_str().unwrap_or_default().to_owned()
}
