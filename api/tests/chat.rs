//! Chat over real WebSocket connections (tokio-tungstenite clients against the API served on
//! 127.0.0.1:0): messages, history on join, limits, moderation reaching every client, and a
//! slow reader dropped without holding up the room.

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
const WAIT: Duration = Duration::from_secs(5);

/// The API on a real socket; the router shares its state with the one returned.
async fn serve(config: Option<api::chat::ChatConfig>) -> (api::Api, axum::Router, String) {
    let mut api = api::Api::connect("mem://", SECRET).await.unwrap();
    if let Some(c) = config {
        api.set_chat_config(c);
    }
    let router = api.router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = router.clone();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (api, router, addr)
}

fn url(addr: &str, channel: &str, token: Option<&str>) -> String {
    match token {
        Some(t) => format!("ws://{addr}/api/chat/{channel}?access_token={t}"),
        None => format!("ws://{addr}/api/chat/{channel}"),
    }
}

async fn connect(addr: &str, channel: &str, token: Option<&str>) -> (Ws, Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url(addr, channel, token))
        .await
        .expect("chat connects");
    let hello = next(&mut ws).await;
    assert_eq!(hello["type"], "hello", "{hello}");
    (ws, hello)
}

/// The next JSON event.
async fn next(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("an event in time")
            .expect("socket open")
            .expect("frame");
        if let WsMessage::Text(t) = msg {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

/// The next event of `kind` (others, at most 50, skipped).
async fn expect(ws: &mut Ws, kind: &str) -> Value {
    for _ in 0..50 {
        let e = next(ws).await;
        if e["type"] == kind {
            return e;
        }
    }
    panic!("no {kind} event");
}

async fn send(ws: &mut Ws, cmd: Value) {
    ws.send(WsMessage::Text(cmd.to_string().into()))
        .await
        .unwrap();
}

async fn say(ws: &mut Ws, text: &str) {
    send(ws, json!({"type": "send", "text": text})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_history_and_limits_over_real_sockets() {
    let (_api, r, addr) = serve(None).await;
    let (_alice, alice_token, _) = register(&r, "alice").await;
    let (bob, bob_token, _) = register(&r, "bob").await;

    let (mut alice_ws, hello) = connect(&addr, "alice", Some(&alice_token)).await;
    assert_eq!(hello["channel"], "alice");
    assert_eq!(hello["you"]["moderator"], true, "the owner moderates");
    assert_eq!(hello["history"], json!([]));
    let (mut reader, hello) = connect(&addr, "Alice", None).await;
    assert_eq!(hello["you"], Value::Null);
    let (mut bob_ws, hello) = connect(&addr, "alice", Some(&bob_token)).await;
    assert_eq!(hello["you"]["name"], "bob");
    assert_eq!(hello["you"]["moderator"], false);

    // The server stamps id, author and time; text stays text.
    say(&mut bob_ws, "  hello <b>world</b> ").await;
    let m = expect(&mut alice_ws, "message").await;
    assert_eq!(m["text"], "hello <b>world</b>");
    assert_eq!(
        (m["author"].as_str(), m["author_id"].as_str()),
        (Some("bob"), Some(bob.as_str()))
    );
    assert_eq!(m["id"].as_str().unwrap().len(), 20);
    assert!((api::db::now_ms() - m["at"].as_i64().unwrap()).abs() < 5_000);
    assert_eq!(expect(&mut reader, "message").await, m);
    assert_eq!(expect(&mut bob_ws, "message").await, m);

    // Reading needs no account; sending does.
    say(&mut reader, "hi").await;
    assert_eq!(expect(&mut reader, "error").await["code"], "unauthorized");
    say(&mut bob_ws, &"x".repeat(501)).await;
    assert_eq!(expect(&mut bob_ws, "error").await["code"], "too_long");
    say(&mut bob_ws, "   ").await;
    assert_eq!(expect(&mut bob_ws, "error").await["code"], "empty");
    send(&mut bob_ws, json!({"type": "shout", "text": "x"})).await;
    assert_eq!(expect(&mut bob_ws, "error").await["code"], "bad_request");
    // 5 messages per 5 s: bob sent 1, 4 more pass, the 6th is refused.
    for i in 0..4 {
        say(&mut bob_ws, &format!("n{i}")).await;
        assert_eq!(
            expect(&mut bob_ws, "message").await["text"],
            format!("n{i}")
        );
    }
    say(&mut bob_ws, "one too many").await;
    assert_eq!(expect(&mut bob_ws, "error").await["code"], "rate_limited");

    // A new reader gets the history; stored messages outlive the room.
    let (_late, hello) = connect(&addr, "alice", None).await;
    let texts: Vec<&str> = hello["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["hello <b>world</b>", "n0", "n1", "n2", "n3"]);
    drop((alice_ws, reader, bob_ws, _late));
    // Every reader gone: the room is released; the next one loads from the database.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_ws, hello) = connect(&addr, "alice", None).await;
        if hello["history"].as_array().unwrap().len() == 5 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "history from the database"
        );
    }

    // Bad tokens and unknown channels are refused before the upgrade.
    let err = tokio_tungstenite::connect_async(url(&addr, "alice", Some("nope")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, tokio_tungstenite::tungstenite::Error::Http(ref resp) if resp.status() == 401),
        "{err}"
    );
    let err = tokio_tungstenite::connect_async(url(&addr, "nobody", None))
        .await
        .unwrap_err();
    assert!(
        matches!(err, tokio_tungstenite::tungstenite::Error::Http(ref resp) if resp.status() == 404),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderation_reaches_every_client() {
    let (_api, r, addr) = serve(None).await;
    let (alice, alice_token, _) = register(&r, "alice").await;
    let (bob, bob_token, _) = register(&r, "bob").await;
    let (carol, carol_token, _) = register(&r, "carol").await;
    // The owner names carol moderator; nobody else can.
    let (s, _) = call(
        &r,
        Method::PUT,
        &format!("/api/chat/alice/moderators/{carol}"),
        Some(&bob_token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(
        &r,
        Method::PUT,
        &format!("/api/chat/alice/moderators/{carol}"),
        Some(&alice_token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, mods) = call(
        &r,
        Method::GET,
        "/api/chat/alice/moderators",
        Some(&alice_token),
        None,
    )
    .await;
    assert_eq!(mods, json!([{"id": carol, "username": "carol"}]));

    let (mut alice_ws, _) = connect(&addr, "alice", Some(&alice_token)).await;
    let (mut bob_ws, _) = connect(&addr, "alice", Some(&bob_token)).await;
    let (mut carol_ws, hello) = connect(&addr, "alice", Some(&carol_token)).await;
    assert_eq!(hello["you"]["moderator"], true);
    let (mut reader, _) = connect(&addr, "alice", None).await;
    let mut everyone = [&mut alice_ws, &mut bob_ws, &mut carol_ws, &mut reader];

    say(everyone[1], "spam").await;
    let spam = expect(everyone[3], "message").await;
    // Only moderators delete; the deletion reaches everyone.
    send(everyone[1], json!({"type": "delete", "id": spam["id"]})).await;
    assert_eq!(expect(everyone[1], "error").await["code"], "forbidden");
    send(everyone[2], json!({"type": "delete", "id": spam["id"]})).await;
    for ws in everyone.iter_mut() {
        assert_eq!(expect(ws, "delete").await["id"], spam["id"]);
    }
    // A timeout reaches everyone and silences bob.
    send(
        everyone[2],
        json!({"type": "timeout", "user_id": bob, "seconds": 60}),
    )
    .await;
    for ws in everyone.iter_mut() {
        let t = expect(ws, "timeout").await;
        assert_eq!(t["user_id"], bob.as_str());
        assert!(t["until"].as_i64().unwrap() > api::db::now_ms() + 50_000);
    }
    say(everyone[1], "let me talk").await;
    assert_eq!(expect(everyone[1], "error").await["code"], "timed_out");
    // A moderator cannot restrict the owner.
    send(everyone[2], json!({"type": "ban", "user_id": alice})).await;
    assert_eq!(expect(everyone[2], "error").await["code"], "forbidden");
    // Unban lifts the timeout; a ban silences for good.
    send(everyone[0], json!({"type": "unban", "user_id": bob})).await;
    for ws in everyone.iter_mut() {
        assert_eq!(expect(ws, "unban").await["user_id"], bob.as_str());
    }
    say(everyone[1], "back").await;
    assert_eq!(expect(everyone[3], "message").await["text"], "back");
    send(everyone[0], json!({"type": "ban", "user_id": bob})).await;
    for ws in everyone.iter_mut() {
        assert_eq!(expect(ws, "ban").await["user_id"], bob.as_str());
    }
    say(everyone[1], "hello?").await;
    assert_eq!(expect(everyone[1], "error").await["code"], "banned");
    let (_, hello) = connect(&addr, "alice", None).await;
    assert_eq!(
        hello["history"],
        json!([]),
        "a banned user's messages are gone"
    );
    send(everyone[0], json!({"type": "unban", "user_id": bob})).await;
    expect(everyone[1], "unban").await;

    // Slow mode: one message per 30 s, moderators exempt.
    send(
        everyone[0],
        json!({"type": "settings", "slow_mode_secs": 30, "followers_only": false}),
    )
    .await;
    for ws in everyone.iter_mut() {
        assert_eq!(expect(ws, "settings").await["slow_mode_secs"], 30);
    }
    // bob said "back" seconds ago.
    say(everyone[1], "one").await;
    assert_eq!(expect(everyone[1], "error").await["code"], "slow_mode");
    say(everyone[2], "mod one").await;
    say(everyone[2], "mod two").await;
    assert_eq!(expect(everyone[2], "message").await["text"], "mod one");
    assert_eq!(expect(everyone[2], "message").await["text"], "mod two");
    // Followers-only: bob must follow alice first.
    send(
        everyone[0],
        json!({"type": "settings", "slow_mode_secs": 0, "followers_only": true}),
    )
    .await;
    expect(everyone[1], "settings").await;
    say(everyone[1], "hi").await;
    assert_eq!(expect(everyone[1], "error").await["code"], "followers_only");
    let (s, _) = call(
        &r,
        Method::POST,
        "/api/follows",
        Some(&bob_token),
        Some(json!({"channel_id": alice})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    say(everyone[1], "following now").await;
    let mut last = Value::Null;
    for _ in 0..5 {
        last = expect(everyone[3], "message").await;
        if last["text"] == "following now" {
            break;
        }
    }
    assert_eq!(last["text"], "following now");
    // Settings last: a new reader is told.
    let (_, hello) = connect(&addr, "alice", None).await;
    assert_eq!(
        hello["settings"],
        json!({"slow_mode_secs": 0, "followers_only": true})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_dropped_and_never_holds_up_the_room() {
    let config = api::chat::ChatConfig {
        reader_buffer: 64,
        max_len: 4000,
        rate: (100_000, Duration::from_secs(1)),
        ..Default::default()
    };
    let (_api, r, addr) = serve(Some(config)).await;
    let (_alice, _, _) = register(&r, "alice").await;
    let (_bob, bob_token, _) = register(&r, "bob").await;
    // 1,500 frames of 4 KB: more than loopback's socket buffers hold (up to tcp_wmem's 4 MB).
    const N: usize = 1500;
    // A reader with a tiny receive window that never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr.parse().unwrap()).await.unwrap();
    let (mut slow, _) =
        tokio_tungstenite::client_async(url(&addr, "alice", None), MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    let (fast, _) = connect(&addr, "alice", None).await;
    // The fast reader reads while bob sends.
    let fast = tokio::spawn(async move {
        let mut fast = fast;
        let mut got = 0;
        while got < N {
            let m = expect(&mut fast, "message").await;
            assert_eq!(
                m["text"].as_str().map(str::len),
                Some(4000),
                "message {got}"
            );
            got += 1;
        }
        got
    });
    let (mut bob_ws, _) = connect(&addr, "alice", Some(&bob_token)).await;
    let text = "y".repeat(4000);
    for _ in 0..N {
        say(&mut bob_ws, &text).await;
        expect(&mut bob_ws, "message").await; // paced by the room, as a chatty user would be
    }
    // The fast reader gets every message.
    assert_eq!(fast.await.unwrap(), N);
    // The slow one was cut off: it reads what was buffered, then the close (1008).
    let mut got = 0;
    let mut closed = None;
    for _ in 0..N + 2 {
        let Ok(frame) = tokio::time::timeout(WAIT, slow.next()).await else {
            panic!(
                "the slow reader got {got} frames, then nothing: neither more frames nor a close"
            );
        };
        match frame {
            Some(Ok(WsMessage::Text(_))) => got += 1,
            Some(Ok(WsMessage::Close(frame))) => {
                closed = Some(frame.map(|f| u16::from(f.code)));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                closed = Some(None);
                break;
            }
        }
    }
    println!("slow reader: {got} frames before being dropped ({closed:?})");
    assert!(closed.is_some(), "the slow reader was disconnected");
    assert!(got < N, "it did not get everything: {got}");
}

#[tokio::test]
async fn old_messages_are_pruned() {
    let api = api::Api::connect("mem://", SECRET).await.unwrap();
    for (id, at) in [("m1", 1_000), ("m2", 2_000), ("m3", 3_000)] {
        let m = api::chat::ChatMessage {
            id: id.into(),
            author_id: "u".into(),
            author: "u".into(),
            text: "hi".into(),
            at,
        };
        api::chat::store::save(api.state(), "chan", &m)
            .await
            .unwrap();
    }
    assert_eq!(api.prune_chat(2_500).await.unwrap(), 2);
    assert_eq!(api.prune_chat(2_500).await.unwrap(), 0);
    assert_eq!(api.prune_chat(10_000).await.unwrap(), 1);
}
