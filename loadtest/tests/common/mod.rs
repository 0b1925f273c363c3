//! A miniature WHIP/WHEP server for this crate's own tests: axum for signalling, one str0m
//! `Rtc` task per session, RTP forwarded from a stream's publisher to its viewers and PLIs
//! forwarded back. Just enough SFU to exercise the real peers end to end.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::Router;
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{broadcast, mpsc, oneshot};

pub const KEY: &str = "secret-key";
const FORWARD_CAPACITY: usize = 1024;
const PLI_CAPACITY: usize = 16;

/// One RTP packet on its way from the publisher to the viewers.
#[derive(Debug, Clone)]
struct Forward {
    codec: Codec,
    seq: SeqNo,
    rtp_time: u32,
    marker: bool,
    payload: Arc<[u8]>,
}

struct Stream {
    media: broadcast::Sender<Forward>,
    pli: mpsc::Sender<()>,
    publisher_session: String,
}

struct Session {
    stream: String,
    stop: oneshot::Sender<()>,
}

#[derive(Default)]
struct Shared {
    streams: Mutex<HashMap<String, Stream>>,
    sessions: Mutex<HashMap<String, Session>>,
    next_id: AtomicU64,
}

/// The running mock; dropping it leaves the tasks to die with the test runtime.
pub struct MockServer {
    pub base: String,
}

impl MockServer {
    pub async fn start() -> MockServer {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/whip/{stream}", post(post_whip))
            .route("/whep/{stream}", post(post_whep))
            .route("/resource/{id}", delete(delete_session))
            .with_state(shared);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        MockServer {
            base: format!("http://{addr}"),
        }
    }
}

async fn post_whip(
    State(shared): State<Arc<Shared>>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    offer: String,
) -> Response {
    let authorized = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {KEY}"));
    if !authorized {
        return (StatusCode::UNAUTHORIZED, "bad stream key").into_response();
    }
    if shared.streams.lock().unwrap().contains_key(&stream) {
        return (StatusCode::CONFLICT, "stream already published").into_response();
    }
    let (rtc, socket, answer) = match answer(&offer).await {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed).to_string();
    let (media_tx, _) = broadcast::channel(FORWARD_CAPACITY);
    let (pli_tx, pli_rx) = mpsc::channel(PLI_CAPACITY);
    let (stop_tx, stop_rx) = oneshot::channel();
    shared.streams.lock().unwrap().insert(
        stream.clone(),
        Stream {
            media: media_tx.clone(),
            pli: pli_tx,
            publisher_session: id.clone(),
        },
    );
    shared.sessions.lock().unwrap().insert(
        id.clone(),
        Session {
            stream,
            stop: stop_tx,
        },
    );
    let role = Role::Publisher {
        media: media_tx,
        pli: pli_rx,
        mids: Vec::new(),
    };
    tokio::spawn(run_session(rtc, socket, role, stop_rx));
    created(&id, answer)
}

async fn post_whep(
    State(shared): State<Arc<Shared>>,
    Path(stream): Path<String>,
    offer: String,
) -> Response {
    let (media, pli) = match shared.streams.lock().unwrap().get(&stream) {
        Some(s) => (s.media.subscribe(), s.pli.clone()),
        None => return (StatusCode::NOT_FOUND, "no such stream").into_response(),
    };
    let (rtc, socket, answer) = match answer(&offer).await {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed).to_string();
    let (stop_tx, stop_rx) = oneshot::channel();
    shared.sessions.lock().unwrap().insert(
        id.clone(),
        Session {
            stream,
            stop: stop_tx,
        },
    );
    let role = Role::Viewer {
        media,
        pli,
        mids: Vec::new(),
        connected: false,
    };
    tokio::spawn(run_session(rtc, socket, role, stop_rx));
    created(&id, answer)
}

async fn delete_session(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let Some(session) = shared.sessions.lock().unwrap().remove(&id) else {
        return (StatusCode::NOT_FOUND, "no such session").into_response();
    };
    let mut streams = shared.streams.lock().unwrap();
    // Deleting the publisher ends the stream: viewers see their media channel close.
    if streams
        .get(&session.stream)
        .is_some_and(|s| s.publisher_session == id)
    {
        streams.remove(&session.stream);
    }
    let _ = session.stop.send(());
    StatusCode::OK.into_response()
}

fn created(id: &str, answer: String) -> Response {
    (
        StatusCode::CREATED,
        [
            (LOCATION, format!("/resource/{id}")),
            (CONTENT_TYPE, "application/sdp".to_owned()),
        ],
        answer,
    )
        .into_response()
}

async fn answer(offer: &str) -> Result<(Rtc, UdpSocket, String), String> {
    let offer = SdpOffer::from_sdp_string(offer).map_err(|e| e.to_string())?;
    let socket = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let mut rtc = Rtc::builder().set_rtp_mode(true).build(Instant::now());
    let local = socket.local_addr().unwrap();
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| e.to_string())?;
    Ok((rtc, socket, answer.to_sdp_string()))
}

enum Role {
    Publisher {
        media: broadcast::Sender<Forward>,
        pli: mpsc::Receiver<()>,
        mids: Vec<(Mid, MediaKind)>,
    },
    Viewer {
        media: broadcast::Receiver<Forward>,
        pli: mpsc::Sender<()>,
        mids: Vec<(Mid, MediaKind)>,
        connected: bool,
    },
}

async fn run_session(
    mut rtc: Rtc,
    socket: UdpSocket,
    mut role: Role,
    mut stop: oneshot::Receiver<()>,
) {
    let local = socket.local_addr().unwrap();
    let mut buf = vec![0u8; 2000];
    loop {
        let Some(timeout) = drain(&mut rtc, &socket, &mut role).await else {
            return;
        };
        let sleep =
            tokio::time::sleep_until(timeout.min(Instant::now() + Duration::from_secs(1)).into());
        match &mut role {
            Role::Publisher { pli, mids, .. } => tokio::select! {
                _ = &mut stop => return close(&mut rtc, &socket, &mut role).await,
                Some(()) = pli.recv() => {
                    let video = mids.iter().find(|(_, k)| *k == MediaKind::Video).map(|(m, _)| *m);
                    if let Some(mid) = video {
                        if let Some(s) = rtc.direct_api().stream_rx_by_mid(mid, None) {
                            s.request_keyframe(KeyframeRequestKind::Pli);
                        }
                    }
                }
                r = socket.recv_from(&mut buf) => receive(&mut rtc, &buf, r, local),
                () = sleep => { let _ = rtc.handle_input(Input::Timeout(Instant::now())); }
            },
            Role::Viewer {
                media,
                mids,
                connected,
                ..
            } => tokio::select! {
                _ = &mut stop => return close(&mut rtc, &socket, &mut role).await,
                fwd = media.recv() => match fwd {
                    Ok(f) if *connected => write(&mut rtc, mids, f),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        return close(&mut rtc, &socket, &mut role).await;
                    }
                },
                r = socket.recv_from(&mut buf) => receive(&mut rtc, &buf, r, local),
                () = sleep => { let _ = rtc.handle_input(Input::Timeout(Instant::now())); }
            },
        }
    }
}

fn receive(rtc: &mut Rtc, buf: &[u8], r: std::io::Result<(usize, SocketAddr)>, local: SocketAddr) {
    let Ok((n, source)) = r else { return };
    let Ok(contents) = buf[..n].try_into() else {
        return;
    };
    let input = Input::Receive(
        Instant::now(),
        Receive {
            proto: Protocol::Udp,
            source,
            destination: local,
            contents,
        },
    );
    // One Rtc per socket: no demultiplexing needed (and `accepts` would drop DTLS that
    // races ahead of our own ICE check).
    let _ = rtc.handle_input(input);
}

fn write(rtc: &mut Rtc, mids: &[(Mid, MediaKind)], f: Forward) {
    let kind = if f.codec.is_video() {
        MediaKind::Video
    } else {
        MediaKind::Audio
    };
    let Some(&(mid, _)) = mids.iter().find(|(_, k)| *k == kind) else {
        return;
    };
    let Some(media) = rtc.media(mid) else { return };
    let config = rtc.codec_config();
    let Some(pt) = media.remote_pts().iter().copied().find(|pt| {
        config
            .find(|p| p.pt() == *pt && p.spec().codec == f.codec)
            .is_some()
    }) else {
        return;
    };
    let mut api = rtc.direct_api();
    let Some(stream) = api.stream_tx_by_mid(mid, None) else {
        return;
    };
    stream.write_rtp(
        RtpWrite::new(pt, f.seq, f.rtp_time, Instant::now(), f.payload).marker(f.marker),
    );
}

/// Drains str0m; `None` when the session is over.
async fn drain(rtc: &mut Rtc, socket: &UdpSocket, role: &mut Role) -> Option<Instant> {
    loop {
        if !rtc.is_alive() {
            return None;
        }
        match rtc.poll_output().ok()? {
            Output::Timeout(t) => return Some(t),
            Output::Transmit(t) => {
                let _ = socket.send_to(&t.contents, t.destination).await;
            }
            Output::Event(e) => match (role as &mut Role, e) {
                (Role::Publisher { media, .. }, Event::RtpPacket(p)) => {
                    let codec = rtc
                        .codec_config()
                        .find(|c| c.pt() == p.header.payload_type)
                        .map(|c| c.spec().codec);
                    if let Some(codec) = codec {
                        let _ = media.send(Forward {
                            codec,
                            seq: p.seq_no,
                            rtp_time: p.header.timestamp,
                            marker: p.header.marker,
                            payload: p.payload.clone(),
                        });
                    }
                }
                (
                    Role::Publisher { mids, .. } | Role::Viewer { mids, .. },
                    Event::MediaAdded(m),
                ) => {
                    mids.push((m.mid, m.kind));
                }
                (Role::Viewer { pli, connected, .. }, Event::Connected) => {
                    *connected = true;
                    // Like an SFU: a new viewer needs a keyframe.
                    let _ = pli.try_send(());
                }
                (Role::Viewer { pli, .. }, Event::KeyframeRequest(_)) => {
                    let _ = pli.try_send(());
                }
                _ => {}
            },
        }
    }
}

async fn close(rtc: &mut Rtc, socket: &UdpSocket, role: &mut Role) {
    if rtc.close().is_ok() {
        for _ in 0..4 {
            if drain(rtc, socket, role).await.is_none() {
                break;
            }
            let _ = rtc.handle_input(Input::Timeout(Instant::now()));
        }
    }
}
