//! Long-lived connections against hostile and forgetful clients: the chat frame limit, the
//! per-address and per-user caps of chat WebSockets and notification streams, pings and the idle
//! timeout, streams ending at token expiry and on logout, and `?access_token=` accepted only on
//! the two streaming routes. Real sockets on 127.0.0.1:0 (raw TCP where a client must misbehave
//! in ways tungstenite would not); SSE also in-process with `oneshot`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::*;
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tower::ServiceExt;

use api::realtime::RealtimeConfig;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
const WAIT: Duration = Duration::from_secs(5);

/// The API on a real socket with the client's address known (as the binary serves it).
async fn serve(rt: RealtimeConfig, token_ttl: Option<Duration>) -> (axum::Router, String) {
    let mut api = api::Api::connect("mem://", SECRET).await.unwrap();
    api.set_realtime_config(rt);
    if let Some(ttl) = token_ttl {
        api.set_access_token_ttl(ttl);
    }
    let router = api.router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = router.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    (router, addr)
}

fn chat_url(addr: &str, channel: &str, token: Option<&str>) -> String {
    match token {
        Some(t) => format!("ws://{addr}/api/chat/{channel}?access_token={t}"),
        None => format!("ws://{addr}/api/chat/{channel}"),
    }
}

async fn try_chat(
    addr: &str,
    channel: &str,
    token: Option<&str>,
) -> Result<Ws, tungstenite::Error> {
    let (mut ws, _) = tokio_tungstenite::connect_async(chat_url(addr, channel, token)).await?;
    let hello = next_text(&mut ws).await;
    assert_eq!(hello["type"], "hello", "{hello}");
    Ok(ws)
}

async fn chat(addr: &str, channel: &str, token: Option<&str>) -> Ws {
    try_chat(addr, channel, token).await.expect("chat connects")
}

/// The next JSON text frame.
async fn next_text(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("frame");
        if let WsMessage::Text(t) = msg {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

/// Read (answering pings, as tungstenite does) until the server closes; its close code, or
/// `None` when the connection ended without a close frame.
async fn closed(ws: &mut Ws, within: Duration) -> Option<u16> {
    let deadline = Instant::now() + within;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("the server closed the connection in time");
        match frame {
            Some(Ok(WsMessage::Close(f))) => return f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

/// The status and `Retry-After` of a refused upgrade.
fn refusal(err: tungstenite::Error) -> (u16, Option<String>) {
    match err {
        tungstenite::Error::Http(resp) => (
            resp.status().as_u16(),
            resp.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
        ),
        other => panic!("not an HTTP refusal: {other}"),
    }
}

/// A client that does the WebSocket handshake by hand and then only does what the test says:
/// it never answers a ping.
struct RawWs {
    tcp: TcpStream,
    buf: Vec<u8>,
}

enum Frame {
    Text,
    Ping,
    Close(Option<u16>),
    /// The server ended the TCP connection (or reset it).
    Gone,
}

impl RawWs {
    async fn connect(addr: &str, path: &str) -> RawWs {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
                .await
                .expect("handshake answer in time")
                .unwrap();
            assert!(n > 0, "closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        buf.drain(..end);
        RawWs { tcp, buf }
    }

    /// The next frame from the server (unmasked, RFC 6455 §5.2), before `deadline`.
    async fn frame(&mut self, deadline: Instant) -> Frame {
        loop {
            if let Some((frame, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                return frame;
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk))
                .await
                .expect("a frame in time")
            {
                Ok(0) | Err(_) => return Frame::Gone,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Frames until the server closes: how many pings came, and the close code if any.
    async fn until_closed(&mut self, within: Duration) -> (usize, Option<u16>) {
        let deadline = Instant::now() + within;
        let mut pings = 0;
        loop {
            match self.frame(deadline).await {
                Frame::Ping => pings += 1,
                Frame::Text => {}
                Frame::Close(code) => return (pings, code),
                Frame::Gone => return (pings, None),
            }
        }
    }
}

fn parse(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let (len, start) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if buf.len() < start + len {
        return None;
    }
    let payload = &buf[start..start + len];
    let frame = match opcode {
        0x8 => Frame::Close((len >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))),
        0x9 => Frame::Ping,
        _ => Frame::Text,
    };
    Some((frame, start + len))
}

/// `GET path` over a raw socket; the status line's code (the connection stays open).
async fn raw_get(addr: &str, path: &str) -> (u16, TcpStream) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(WAIT, tcp.read(&mut byte))
            .await
            .expect("a status line in time")
            .unwrap();
        assert!(n == 1, "closed before the status line");
        head.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&head).to_string();
    let code = line.split(' ').nth(1).unwrap().parse().unwrap();
    (code, tcp)
}

/// The notification stream in-process (no socket): the response.
async fn sse(router: &axum::Router, token: &str) -> axum::response::Response {
    let req = Request::builder()
        .uri(format!("/api/notifications/stream?access_token={token}"))
        .body(Body::empty())
        .unwrap();
    router.clone().oneshot(req).await.unwrap()
}

/// SSE body text until `needle` shows up (or the stream ends: `None`), within `within`.
async fn sse_until(body: &mut Body, needle: &str, within: Duration) -> Option<String> {
    let mut seen = String::new();
    tokio::time::timeout(within, async {
        loop {
            match body.frame().await {
                Some(Ok(f)) => {
                    if let Some(data) = f.data_ref() {
                        seen.push_str(&String::from_utf8_lossy(data));
                        if seen.contains(needle) {
                            return Some(seen.clone());
                        }
                    }
                }
                _ => return None,
            }
        }
    })
    .await
    .expect("SSE progress in time")
}

/// Read an SSE body to its end; everything it carried.
async fn sse_to_end(body: &mut Body, within: Duration) -> String {
    let mut seen = String::new();
    tokio::time::timeout(within, async {
        while let Some(Ok(f)) = body.frame().await {
            if let Some(data) = f.data_ref() {
                seen.push_str(&String::from_utf8_lossy(data));
            }
        }
    })
    .await
    .expect("the event stream ended in time");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_message_limit_closes_the_connection_unread() {
    let (r, addr) = serve(RealtimeConfig::default(), None).await;
    let (_, bob_token, _) = register(&r, "bob").await;
    register(&r, "alice").await;

    // The largest valid message fits: 500 characters outside the BMP, each escaped as two
    // \uXXXX (12 bytes), 6,025 bytes in all.
    let mut bob = chat(&addr, "alice", Some(&bob_token)).await;
    let big = format!(
        r#"{{"type":"send","text":"{}"}}"#,
        r"\ud83d\ude00".repeat(500)
    );
    bob.send(WsMessage::Text(big.into())).await.unwrap();
    let m = next_text(&mut bob).await;
    assert_eq!(m["type"], "message", "{m}");
    assert_eq!(m["text"].as_str().unwrap().chars().count(), 500);

    // A frame announcing 4 MiB: the server refuses it from its header, without waiting for
    // (or buffering) the payload, of which only 1 KiB is ever sent.
    let mut raw = RawWs::connect(&addr, "/api/chat/alice").await;
    let mut frame = vec![0x81, 0xff];
    frame.extend_from_slice(&(4u64 << 20).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]); // mask key
    frame.extend_from_slice(&[b'x'; 1024]);
    raw.tcp.write_all(&frame).await.unwrap();
    let (_, code) = raw.until_closed(WAIT).await;
    println!("4 MiB frame: closed with {code:?}");
    assert!(
        matches!(code, Some(1009) | None),
        "closed with 1009 (or the connection reset), not {code:?}"
    );

    // Many small frames adding up to more than the limit are refused the same way.
    let mut frag = chat(&addr, "alice", None).await;
    let part = "y".repeat(4000);
    let mut first = true;
    let mut refused = false;
    for _ in 0..4 {
        let f = tungstenite::protocol::frame::Frame::message(
            part.clone().into_bytes(),
            if first {
                tungstenite::protocol::frame::coding::OpCode::Data(
                    tungstenite::protocol::frame::coding::Data::Text,
                )
            } else {
                tungstenite::protocol::frame::coding::OpCode::Data(
                    tungstenite::protocol::frame::coding::Data::Continue,
                )
            },
            false,
        );
        first = false;
        if frag.send(WsMessage::Frame(f)).await.is_err() {
            refused = true;
            break;
        }
    }
    if !refused {
        let code = closed(&mut frag, WAIT).await;
        println!("fragmented message: closed with {code:?}");
        assert!(matches!(code, Some(1009) | None), "{code:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_and_notification_streams_are_capped_per_address_and_per_user() {
    let rt = RealtimeConfig {
        per_address: 4,
        chat_per_user: 2,
        sse_per_user: 2,
        ..RealtimeConfig::default()
    };
    let (r, addr) = serve(rt, None).await;
    register(&r, "alice").await;
    register(&r, "carol").await;
    let (_, bob, _) = register(&r, "bob").await;

    // Per user, per room: bob's third socket in alice's room is refused, one in carol's is not.
    let bob1 = chat(&addr, "alice", Some(&bob)).await;
    let _bob2 = chat(&addr, "alice", Some(&bob)).await;
    let err = try_chat(&addr, "alice", Some(&bob)).await.unwrap_err();
    assert_eq!(refusal(err), (429, Some("10".into())));
    let _bob3 = chat(&addr, "carol", Some(&bob)).await;

    // Per address, chat and SSE together: the fourth connection fills it.
    let (status, _sse) = raw_get(
        &addr,
        &format!("/api/notifications/stream?access_token={bob}"),
    )
    .await;
    assert_eq!(status, 200);
    let err = try_chat(&addr, "alice", None).await.unwrap_err();
    assert_eq!(refusal(err), (429, Some("10".into())));
    let (status, _) = raw_get(
        &addr,
        &format!("/api/notifications/stream?access_token={bob}"),
    )
    .await;
    assert_eq!(status, 429);

    // A connection that ends gives its slot back.
    drop(bob1);
    let deadline = Instant::now() + WAIT;
    let _anon = loop {
        match try_chat(&addr, "alice", None).await {
            Ok(ws) => break ws,
            Err(e) => {
                assert_eq!(refusal(e).0, 429);
                assert!(Instant::now() < deadline, "the slot came back");
                tokio::task::yield_now().await;
            }
        }
    };

    // Per user for notification streams (in-process: another address bucket).
    let (_, dave, _) = register(&r, "dave").await;
    let a = sse(&r, &dave).await;
    let b = sse(&r, &dave).await;
    assert_eq!((a.status(), b.status()), (StatusCode::OK, StatusCode::OK));
    let c = sse(&r, &dave).await;
    assert_eq!(c.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(c.headers()["retry-after"], "10");
    drop(a);
    assert_eq!(sse(&r, &dave).await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_answer_pings_is_closed_and_sse_keeps_alive() {
    let rt = RealtimeConfig {
        ping_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(300),
        ..RealtimeConfig::default()
    };
    let (r, addr) = serve(rt, None).await;
    let (_, alice, _) = register(&r, "alice").await;

    // Pinged, never answering: closed (1001) after the idle timeout.
    let mut silent = RawWs::connect(&addr, "/api/chat/alice").await;
    let (pings, code) = silent.until_closed(WAIT).await;
    println!("silent client: {pings} pings, then closed with {code:?}");
    assert!(pings >= 2, "pinged before being given up on ({pings})");
    assert!(matches!(code, Some(1001) | None), "{code:?}");

    // A client that answers stays: six pings (twice the idle timeout) and no close.
    let mut answering = chat(&addr, "alice", None).await;
    let mut pings = 0;
    while pings < 6 {
        match tokio::time::timeout(WAIT, answering.next())
            .await
            .expect("a ping in time")
        {
            Some(Ok(WsMessage::Ping(_))) => pings += 1,
            Some(Ok(WsMessage::Close(f))) => panic!("closed although it answered: {f:?}"),
            Some(Ok(_)) => {}
            other => panic!("connection ended: {other:?}"),
        }
    }

    // The notification stream gets a comment line every ping interval.
    let mut body = sse(&r, &alice).await.into_body();
    let text = sse_until(&mut body, ":\n\n", WAIT).await;
    assert!(text.is_some(), "a keep-alive comment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_when_the_access_token_expires() {
    let (r, addr) = serve(RealtimeConfig::default(), Some(Duration::from_secs(2))).await;
    let (_, _, _) = register(&r, "alice").await;
    let (_, bob, _) = register(&r, "bob").await;
    let mut ws = chat(&addr, "alice", Some(&bob)).await;
    let mut anonymous = chat(&addr, "alice", None).await;
    let mut body = sse(&r, &bob).await.into_body();

    assert_eq!(closed(&mut ws, WAIT).await, Some(4001), "closed at expiry");
    let rest = sse_to_end(&mut body, WAIT).await;
    assert!(
        rest.contains("event: end\ndata: access token expired"),
        "{rest}"
    );
    // The same token opens nothing any more; the anonymous reader had no token to expire.
    let err = try_chat(&addr, "alice", Some(&bob)).await.unwrap_err();
    assert_eq!(refusal(err).0, 401);
    assert_eq!(sse(&r, &bob).await.status(), StatusCode::UNAUTHORIZED);
    let (_, carol, _) = register(&r, "carol").await;
    let mut carol_ws = chat(&addr, "alice", Some(&carol)).await;
    carol_ws
        .send(WsMessage::Text(
            json!({"type": "send", "text": "still here?"})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    loop {
        let e = next_text(&mut anonymous).await;
        if e["type"] == "message" {
            assert_eq!(e["text"], "still here?");
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_users_open_streams_within_a_second() {
    let (r, addr) = serve(RealtimeConfig::default(), None).await;
    register(&r, "alice").await;
    let (_, bob, bob_refresh) = register(&r, "bob").await;
    let (_, carol, _) = register(&r, "carol").await;
    let mut bob_ws = chat(&addr, "alice", Some(&bob)).await;
    let mut bob_sse = sse(&r, &bob).await.into_body();
    let mut carol_ws = chat(&addr, "alice", Some(&carol)).await;

    let (status, _) = call(
        &r,
        Method::POST,
        "/api/users/logout",
        None,
        Some(json!({"refresh_token": bob_refresh})),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let second = Duration::from_secs(1);
    assert_eq!(closed(&mut bob_ws, second).await, Some(4002));
    let rest = sse_to_end(&mut bob_sse, second).await;
    assert!(rest.contains("event: end\ndata: logged out"), "{rest}");
    // Others' streams stay open.
    carol_ws
        .send(WsMessage::Text(
            json!({"type": "send", "text": "hi"}).to_string().into(),
        ))
        .await
        .unwrap();
    assert_eq!(next_text(&mut carol_ws).await["text"], "hi");
}

#[tokio::test]
async fn an_access_token_in_the_url_counts_only_on_the_streaming_routes() {
    let (_api, r) = app().await;
    let (_, token, _) = register(&r, "alice").await;
    let (s, v) = call(
        &r,
        Method::POST,
        "/api/streams",
        Some(&token),
        Some(json!({"title": "t"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();

    let in_url = |path: &str| format!("{path}?access_token={token}");
    let (s, v) = call(&r, Method::GET, &in_url("/api/users/me"), None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (s, _) = call(&r, Method::GET, &in_url("/api/notifications"), None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = call(
        &r,
        Method::POST,
        &in_url("/api/streams"),
        None,
        Some(json!({"title": "t"})),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Where a token is optional, one in the URL is nobody's: no stream key.
    let (s, v) = call(
        &r,
        Method::GET,
        &in_url(&format!("/api/streams/{id}")),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(v.get("stream_key").is_none(), "{v}");
    let (_, v) = call(
        &r,
        Method::GET,
        &format!("/api/streams/{id}"),
        Some(&token),
        None,
    )
    .await;
    assert!(v.get("stream_key").is_some(), "the header still works: {v}");
    // The event stream takes it (EventSource cannot send headers).
    assert_eq!(sse(&r, &token).await.status(), StatusCode::OK);
}
