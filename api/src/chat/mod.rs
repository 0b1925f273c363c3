//! Live chat: one room per channel over WebSocket at `GET /api/chat/{channel}` (the channel's
//! username). Anyone may read; a logged-in user (`Authorization: Bearer` or `?access_token=`)
//! may send. Connections are capped per address and per user ([`crate::realtime`]); the server
//! pings each one and closes it when nothing comes back, and closes a logged-in reader's when
//! its access token expires or the user logs out. The server stamps id, author and time, keeps the last messages for new readers,
//! and stores every message (pruned after [`RETENTION`]).
//!
//! - `room.rs`: a room's rules (bans, timeouts, slow mode, rate limit) and its broadcast: each
//!   event is serialized once and the same bytes go to every reader.
//! - `store.rs`: messages, moderators, restrictions and settings in SurrealDB.
//! - this file: the protocol, the socket loop, the moderator endpoints.
//!
//! Protocol (JSON text frames). Client → server: `{"type":"send","text"}`,
//! `{"type":"delete","id"}`, `{"type":"timeout","user_id","seconds"}`, `{"type":"ban","user_id"}`,
//! `{"type":"unban","user_id"}`, `{"type":"settings","slow_mode_secs","followers_only"}` (the last
//! five for the owner and moderators). Server → client: `hello` (history, settings, who you are),
//! `message`, `delete`, `timeout`, `ban`, `unban`, `settings`, `viewers`, and `error` (`code`, `message`)
//! to the sender alone. A reader too slow for the room is disconnected (close code 1008), never
//! waited for. Close codes: 1008 too slow, 1009 a frame over [`ChatConfig::max_frame_bytes`]
//! (refused from its header, never buffered), 1001 no answer to pings, 4001 the access token
//! expired (reconnect with a fresh one), 4002 the user logged out.

pub mod room;
pub mod store;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, put};
use axum::Router;
use serde::{Deserialize, Serialize};
use surrealdb::types::SurrealValue;
use tokio::sync::broadcast::error::RecvError;
use utoipa::ToSchema;

use crate::auth::{AuthUser, StreamUser};
use crate::cluster::RoomEvent;
use crate::db::{new_id, now_ms};
use crate::error::{ApiError, Result};
use crate::realtime::{ClientAddr, End, Liveness, Permit, Scope};
use crate::{validate, ApiState};
use room::{Refusal, Restriction, Room};

/// Messages are deleted from the database after this long.
pub const RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Bytes one character of a message may take in a client's JSON frame: a character outside the
/// BMP written as two `\uXXXX` escapes.
const MAX_JSON_BYTES_PER_CHAR: usize = 12;
/// A command's JSON around its text (`{"type":"send","text":""}`, whitespace, other commands).
const FRAME_OVERHEAD_BYTES: usize = 256;
/// Close codes (RFC 6455 §7.4; 4000-4999 are the application's).
const CLOSE_NO_ANSWER: u16 = 1001;
const CLOSE_TOO_SLOW: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_TOKEN_EXPIRED: u16 = 4001;
const CLOSE_LOGGED_OUT: u16 = 4002;
/// Frames written to one reader with one flush, at most.
const MAX_BATCH: usize = 64;
/// tungstenite's read buffer per connection (clients send small frames).
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// A frame that cannot be written to a reader's socket in this long drops the reader.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest timeout a moderator may give (two weeks).
const MAX_TIMEOUT_SECS: u32 = 14 * 24 * 3600;

/// Limits of every room.
#[derive(Debug, Clone, Copy)]
pub struct ChatConfig {
    /// Messages a new reader gets on join.
    pub history: usize,
    /// Characters per message.
    pub max_len: usize,
    /// At most `.0` messages per user per `.1`.
    pub rate: (usize, Duration),
    /// Frames a reader may fall behind the room before it is dropped.
    pub reader_buffer: usize,
}

impl ChatConfig {
    /// Longest client frame (and message) accepted: the largest valid command. A longer frame
    /// closes the connection (1009) as soon as its header announces it.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_len * MAX_JSON_BYTES_PER_CHAR + FRAME_OVERHEAD_BYTES
    }
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            history: 50,
            max_len: 500,
            rate: (5, Duration::from_secs(5)),
            reader_buffer: 256,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, SurrealValue)]
pub struct ChatMessage {
    pub id: String,
    pub author_id: String,
    pub author: String,
    /// Plain text: clients must render it as text, never as HTML.
    pub text: String,
    /// Unix ms.
    pub at: i64,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, SurrealValue,
)]
pub struct Settings {
    /// Seconds a non-moderator waits between messages; 0: off.
    pub slow_mode_secs: u32,
    /// Only followers of the channel (and moderators) may send.
    pub followers_only: bool,
}

/// Who a reader is, in `hello`.
#[derive(Debug, Clone, Serialize)]
pub struct You {
    pub id: String,
    pub name: String,
    pub moderator: bool,
}

/// Server → client.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Hello {
        channel: String,
        history: Vec<ChatMessage>,
        settings: Settings,
        you: Option<You>,
        viewers: usize,
    },
    Message(ChatMessage),
    Delete {
        id: String,
    },
    Timeout {
        user_id: String,
        until: i64,
    },
    Ban {
        user_id: String,
    },
    Unban {
        user_id: String,
    },
    Settings(Settings),
    /// The stream's live viewers (WebRTC + HLS), every few seconds while it is live.
    Viewers {
        count: usize,
    },
    /// About the server: `cluster_degraded` (messages reach only this server's readers for
    /// now), `cluster_restored`.
    Notice(Notice),
    Error {
        code: &'static str,
        message: String,
    },
}

/// A notice from the server to every reader.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Notice {
    pub code: &'static str,
    pub message: &'static str,
}

impl Notice {
    pub const DEGRADED: Notice = Notice {
        code: "cluster_degraded",
        message: "chat reaches only the readers on this server until its cluster link is back",
    };
    pub const RESTORED: Notice = Notice {
        code: "cluster_restored",
        message: "chat reaches every reader again",
    };
}

/// Client → server.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Command {
    Send { text: String },
    Delete { id: String },
    Timeout { user_id: String, seconds: u32 },
    Ban { user_id: String },
    Unban { user_id: String },
    Settings(Settings),
}

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/chat/{channel}", get(join))
        .route("/api/chat/{channel}/moderators", get(moderators))
        .route(
            "/api/chat/{channel}/moderators/{user_id}",
            put(add_moderator).delete(remove_moderator),
        )
}

/// The caller, if a token came (header, or `?access_token=`: a browser's WebSocket cannot send
/// headers); a token that does not verify is an error, not anonymity.
struct Caller(Option<AuthUser>);

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &ApiState) -> Result<Self, ApiError> {
        if !crate::auth::has_stream_token(parts) {
            return Ok(Caller(None));
        }
        let StreamUser(user) = StreamUser::from_request_parts(parts, st).await?;
        Ok(Caller(Some(user)))
    }
}

/// The channel's room, loaded from the database if nobody is reading it yet.
async fn room(st: &ApiState, channel: &str) -> Result<Arc<Room>> {
    let channel = validate::username(channel).map_err(|_| ApiError::NotFound("channel"))?;
    let (id, name) = store::channel(st, &channel)
        .await?
        .ok_or(ApiError::NotFound("channel"))?;
    if let Some(r) = st.chat.get(&id) {
        return Ok(r);
    }
    let loaded = store::load(st, &id, st.chat_config.history).await?;
    Ok(st.chat.insert(Room::new(id, name, loaded, st.chat_config)))
}

async fn join(
    State(st): State<ApiState>,
    Path(channel): Path<String>,
    ClientAddr(addr): ClientAddr,
    caller: Caller,
    ws: WebSocketUpgrade,
) -> Result<Response> {
    let room = room(&st, &channel).await?;
    let you = match &caller.0 {
        Some(u) => {
            let user = crate::users::load_user(&st, &u.id)
                .await?
                .ok_or(ApiError::Unauthorized("account no longer exists"))?;
            Some(You {
                moderator: room.is_moderator(&user.id),
                id: user.id,
                name: user.username,
            })
        }
        None => None,
    };
    let permit = st.realtime.admit(
        addr,
        caller.0.as_ref(),
        Scope::Chat(room.channel_id.clone()),
    )?;
    let max_frame = st.chat_config.max_frame_bytes();
    Ok(ws
        .max_frame_size(max_frame)
        .max_message_size(max_frame)
        // tungstenite zero-fills its whole read buffer on every read attempt (128 KiB by
        // default), and a reader's socket is polled for input after every frame sent to it:
        // with the default, two thirds of the server's CPU went to memset.
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |socket| async move {
            serve(st.clone(), room.clone(), you, permit, socket).await;
            st.chat.release(&room);
        }))
}

fn frame(event: &Event) -> Message {
    Message::Text(Utf8Bytes::from(
        serde_json::to_string(event).unwrap_or_default(),
    ))
}

/// One reader: room events out, commands in, pings, until either side ends, the reader stops
/// answering, or its token expires or its user logs out.
async fn serve(
    st: ApiState,
    room: Arc<Room>,
    you: Option<You>,
    mut permit: Permit,
    mut socket: WebSocket,
) {
    let mut events = room.subscribe();
    let hello = Event::Hello {
        channel: room.channel_name.clone(),
        history: room.history(),
        settings: room.settings(),
        you: you.clone(),
        viewers: room.viewers(),
    };
    if socket.send(frame(&hello)).await.is_err() {
        return;
    }
    if st.cluster.health() == crate::cluster::Health::Degraded
        && socket
            .send(frame(&Event::Notice(Notice::DEGRADED)))
            .await
            .is_err()
    {
        return;
    }
    let config = *st.realtime.config();
    let mut liveness = Liveness::new(Instant::now(), config.idle_timeout);
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + config.ping_interval,
        config.ping_interval,
    );
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            end = permit.ended() => {
                let code = match end {
                    End::TokenExpired => CLOSE_TOKEN_EXPIRED,
                    End::LoggedOut => CLOSE_LOGGED_OUT,
                };
                return close(socket, code, end.reason()).await;
            }
            _ = ping.tick() => {
                if !liveness.alive(Instant::now()) {
                    return close(socket, CLOSE_NO_ANSWER, "no answer to ping").await;
                }
                let ping = socket.send(Message::Ping(Default::default()));
                if !matches!(tokio::time::timeout(SEND_TIMEOUT, ping).await, Ok(Ok(()))) {
                    return;
                }
            }
            event = events.recv() => match event {
                Ok(bytes) => {
                    match tokio::time::timeout(SEND_TIMEOUT, send_batch(&mut socket, &mut events, bytes)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(Gone::Closed)) => return,
                        Ok(Err(Gone::Lagged)) | Err(_) => return close(socket, CLOSE_TOO_SLOW, "too slow for this chat").await,
                    }
                }
                Err(RecvError::Lagged(_)) => return close(socket, CLOSE_TOO_SLOW, "too slow for this chat").await,
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => {
                if let Some(Ok(_)) = &incoming {
                    liveness.heard(Instant::now());
                }
                match incoming {
                Some(Ok(Message::Text(text))) => {
                    let reply = match serde_json::from_str::<Command>(text.as_str()) {
                        Ok(cmd) => handle(&st, &room, you.as_ref(), cmd).await,
                        Err(e) => Err(Refusal::new("bad_request", format!("not a chat command: {e}"))),
                    };
                    if let Err(r) = reply {
                        let error = Event::Error { code: r.code, message: r.message };
                        if socket.send(frame(&error)).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let error = Event::Error { code: "bad_request", message: "text frames only".into() };
                    if socket.send(frame(&error)).await.is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {} // pings are answered by the library; pongs count as heard
                Some(Err(e)) => {
                    if too_big(e) {
                        close(socket, CLOSE_TOO_BIG, "frame too big").await;
                    }
                    return;
                }
                None => return,
            }},
        }
    }
}

/// Did the read fail on a frame or message over the limit (refused from its header)?
fn too_big(e: axum::Error) -> bool {
    e.into_inner()
        .downcast::<tungstenite::Error>()
        .is_ok_and(|e| matches!(*e, tungstenite::Error::Capacity(_)))
}

enum Gone {
    Closed,
    Lagged,
}

/// `first` and every frame already waiting behind it, written with one flush: a reader that
/// fell behind catches up in one system call rather than one per frame.
async fn send_batch(
    socket: &mut WebSocket,
    events: &mut tokio::sync::broadcast::Receiver<Utf8Bytes>,
    first: Utf8Bytes,
) -> std::result::Result<(), Gone> {
    use futures_util::SinkExt;
    socket
        .feed(Message::Text(first))
        .await
        .map_err(|_| Gone::Closed)?;
    for _ in 1..MAX_BATCH {
        match events.try_recv() {
            Ok(bytes) => socket
                .feed(Message::Text(bytes))
                .await
                .map_err(|_| Gone::Closed)?,
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {
                return Err(Gone::Lagged)
            }
            Err(_) => break,
        }
    }
    socket.flush().await.map_err(|_| Gone::Closed)
}

async fn close(mut socket: WebSocket, code: u16, reason: &'static str) {
    tracing::debug!(code, reason, "chat reader dropped");
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        socket.send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        }))),
    )
    .await;
}

fn internal(e: ApiError) -> Refusal {
    tracing::warn!(error = %e, "chat: database error");
    Refusal::new("internal", "try again")
}

async fn handle(
    st: &ApiState,
    room: &Room,
    you: Option<&You>,
    cmd: Command,
) -> std::result::Result<(), Refusal> {
    let you = you.ok_or_else(|| Refusal::new("unauthorized", "log in to chat"))?;
    let now = now_ms();
    if let Command::Send { text } = cmd {
        let text = clean(&text, st.chat_config.max_len)?;
        if room.settings().followers_only
            && !room.is_moderator(&you.id)
            && !store::follows(st, &you.id, &room.channel_id)
                .await
                .map_err(internal)?
        {
            return Err(Refusal::new(
                "followers_only",
                "only followers may chat now",
            ));
        }
        room.check_restrictions(&you.id, now)?;
        let slow = Duration::from_secs(room.settings().slow_mode_secs.into());
        let moderator = room.is_moderator(&you.id);
        let shared = crate::cluster::limits::chat_send(
            &st.cluster,
            &room.channel_id,
            &you.id,
            st.chat_config.rate,
            slow,
            moderator,
        )
        .await;
        match shared {
            Some(Ok(())) => {}
            Some(Err(crate::cluster::limits::ChatLimit::SlowMode)) => {
                return Err(Refusal::new(
                    "slow_mode",
                    format!("slow mode: one message every {} seconds", slow.as_secs()),
                ))
            }
            Some(Err(crate::cluster::limits::ChatLimit::RateLimited)) => {
                let (limit, window) = st.chat_config.rate;
                return Err(Refusal::new(
                    "rate_limited",
                    format!(
                        "at most {limit} messages every {} seconds",
                        window.as_secs()
                    ),
                ));
            }
            None => room.admit_rate(&you.id, now)?,
        }
        let message = ChatMessage {
            id: new_id(),
            author_id: you.id.clone(),
            author: you.name.clone(),
            text,
            at: now,
        };
        store::save(st, &room.channel_id, &message)
            .await
            .map_err(internal)?;
        room_event(st, room, RoomEvent::Message(message)).await;
        return Ok(());
    }
    if !room.is_moderator(&you.id) {
        return Err(Refusal::new(
            "forbidden",
            "only the channel's owner and moderators may do this",
        ));
    }
    let target_ok = |user: &str| -> std::result::Result<(), Refusal> {
        // The owner cannot be restricted; moderators only by the owner.
        if user == room.channel_id || (room.is_moderator(user) && you.id != room.channel_id) {
            return Err(Refusal::new("forbidden", "you may not restrict this user"));
        }
        Ok(())
    };
    match cmd {
        Command::Send { .. } => Ok(()),
        Command::Delete { id } => {
            if !store::delete(st, &room.channel_id, &id)
                .await
                .map_err(internal)?
            {
                return Err(Refusal::new("not_found", "no such message"));
            }
            room_event(st, room, RoomEvent::Delete { id }).await;
            Ok(())
        }
        Command::Timeout { user_id, seconds } => {
            target_ok(&user_id)?;
            if !(1..=MAX_TIMEOUT_SECS).contains(&seconds) {
                return Err(Refusal::new("bad_request", "seconds: 1 to 1209600"));
            }
            let r = Restriction::TimedOut(now + i64::from(seconds) * 1000);
            store::restrict(st, &room.channel_id, &user_id, Some(r))
                .await
                .map_err(internal)?;
            room_event(
                st,
                room,
                RoomEvent::Restrict {
                    user_id,
                    restriction: Some(r),
                },
            )
            .await;
            Ok(())
        }
        Command::Ban { user_id } => {
            target_ok(&user_id)?;
            store::restrict(st, &room.channel_id, &user_id, Some(Restriction::Banned))
                .await
                .map_err(internal)?;
            let restriction = Some(Restriction::Banned);
            room_event(
                st,
                room,
                RoomEvent::Restrict {
                    user_id,
                    restriction,
                },
            )
            .await;
            Ok(())
        }
        Command::Unban { user_id } => {
            store::restrict(st, &room.channel_id, &user_id, None)
                .await
                .map_err(internal)?;
            room_event(
                st,
                room,
                RoomEvent::Restrict {
                    user_id,
                    restriction: None,
                },
            )
            .await;
            Ok(())
        }
        Command::Settings(s) => {
            if s.slow_mode_secs > 3600 {
                return Err(Refusal::new("bad_request", "slow_mode_secs: 0 to 3600"));
            }
            store::save_settings(st, &room.channel_id, s)
                .await
                .map_err(internal)?;
            room_event(st, room, RoomEvent::Settings(s)).await;
            Ok(())
        }
    }
}

/// A change to `room`, on every node that has it open (this one's at once when alone).
async fn room_event(st: &ApiState, room: &Room, event: RoomEvent) {
    crate::cluster::room_event(st, &room.channel_id, event).await;
}

/// Trimmed, control characters (but newlines) replaced by spaces, 1 to `max` characters.
fn clean(text: &str, max: usize) -> std::result::Result<String, Refusal> {
    let text: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
        .collect();
    if text.is_empty() {
        return Err(Refusal::new("empty", "say something"));
    }
    if text.chars().count() > max {
        return Err(Refusal::new(
            "too_long",
            format!("at most {max} characters"),
        ));
    }
    Ok(text)
}

/// The channel's owner, from the URL's channel name.
async fn owner_of(st: &ApiState, channel: &str, user: &AuthUser) -> Result<String> {
    let channel = validate::username(channel).map_err(|_| ApiError::NotFound("channel"))?;
    let (id, _) = store::channel(st, &channel)
        .await?
        .ok_or(ApiError::NotFound("channel"))?;
    if id != user.id {
        return Err(ApiError::Forbidden("only the channel's owner may do this"));
    }
    Ok(id)
}

#[derive(Serialize, Deserialize, ToSchema, SurrealValue)]
pub struct Moderator {
    pub id: String,
    pub username: String,
}

#[utoipa::path(get, path = "/api/chat/{channel}/moderators", params(("channel" = String, Path)),
    responses((status = 200, body = Vec<Moderator>), (status = 403, body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn moderators(
    State(st): State<ApiState>,
    user: AuthUser,
    Path(channel): Path<String>,
) -> Result<axum::Json<Vec<Moderator>>> {
    let id = owner_of(&st, &channel, &user).await?;
    Ok(axum::Json(store::moderators(&st, &id).await?))
}

#[utoipa::path(put, path = "/api/chat/{channel}/moderators/{user_id}", params(("channel" = String, Path), ("user_id" = String, Path)),
    responses((status = 204), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn add_moderator(
    State(st): State<ApiState>,
    user: AuthUser,
    Path((channel, user_id)): Path<(String, String)>,
) -> Result<StatusCode> {
    set_moderator(&st, &user, &channel, &user_id, true).await
}

#[utoipa::path(delete, path = "/api/chat/{channel}/moderators/{user_id}", params(("channel" = String, Path), ("user_id" = String, Path)),
    responses((status = 204), (status = 403, body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn remove_moderator(
    State(st): State<ApiState>,
    user: AuthUser,
    Path((channel, user_id)): Path<(String, String)>,
) -> Result<StatusCode> {
    set_moderator(&st, &user, &channel, &user_id, false).await
}

/// The owner names (`on`) or un-names a moderator: stored, and applied to the live room.
async fn set_moderator(
    st: &ApiState,
    user: &AuthUser,
    channel: &str,
    user_id: &str,
    on: bool,
) -> Result<StatusCode> {
    let id = owner_of(st, channel, user).await?;
    validate::id(user_id)?;
    if on {
        crate::users::load_user(st, user_id)
            .await?
            .ok_or(ApiError::NotFound("user"))?;
    }
    store::set_moderator(st, &id, user_id, on).await?;
    let user_id = user_id.to_owned();
    crate::cluster::room_event(st, &id, RoomEvent::Moderator { user_id, on }).await;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cleaned_and_bounded() {
        assert_eq!(clean("  hi\u{0}there\n ", 10).unwrap(), "hi there");
        assert_eq!(clean(" ", 10).unwrap_err().code, "empty");
        assert_eq!(clean(&"é".repeat(11), 10).unwrap_err().code, "too_long");
        assert_eq!(clean("<b>x</b>", 10).unwrap(), "<b>x</b>", "stored as text");
    }

    #[test]
    fn commands_parse_and_unknown_fields_are_refused() {
        let c: Command = serde_json::from_str(r#"{"type":"send","text":"hi"}"#).unwrap();
        assert!(matches!(c, Command::Send { text } if text == "hi"));
        let c: Command =
            serde_json::from_str(r#"{"type":"settings","slow_mode_secs":3,"followers_only":true}"#)
                .unwrap();
        assert!(matches!(c, Command::Settings(s) if s.slow_mode_secs == 3 && s.followers_only));
        assert!(serde_json::from_str::<Command>(r#"{"type":"send","text":"a","x":1}"#).is_err());
        assert!(serde_json::from_str::<Command>(r#"{"type":"nuke"}"#).is_err());
    }
}
