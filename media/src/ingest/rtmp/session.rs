//! One RTMP connection, server side, sans-I/O: bytes in → events out (publish requests, media,
//! metadata), replies queued as bytes to write. The caller owns the socket and decides whether
//! a publish key is accepted ([`ServerSession::accept_publish`] / [`ServerSession::reject_publish`]).
//!
//! Command flow it accepts (what OBS and ffmpeg send, CLIENTS.md): `connect` → `_result`
//! (after Window Ack Size, Set Peer Bandwidth, Set Chunk Size); `releaseStream`/`FCPublish` →
//! `_result`; `createStream` → `_result` with stream id 1; `publish(name)` → the caller's
//! decision → `onStatus NetStream.Publish.Start` or `NetStream.Publish.BadName` and close.
//! A second `publish` while one is pending or accepted gets `NetStream.Publish.BadName` and
//! changes nothing: one connection publishes one stream.
//!
//! Until a publish is accepted the peer is anyone on the internet: its messages are held to
//! [`ChunkLimits::BEFORE_PUBLISH`], and to [`ChunkLimits::PUBLISHING`] after.

use std::collections::VecDeque;

use bytes::Bytes;

use super::amf0::{self, Value};
use super::chunk::{self, ChunkLimits, ChunkReader, Message};
use super::handshake::Handshake;
use super::RtmpError;

const MSG_WINDOW_ACK_SIZE: u8 = 5;
const MSG_SET_PEER_BANDWIDTH: u8 = 6;
pub(crate) const MSG_AUDIO: u8 = 8;
pub(crate) const MSG_VIDEO: u8 = 9;
pub(crate) const MSG_DATA_AMF0: u8 = 18;
pub(crate) const MSG_COMMAND_AMF0: u8 = 20;
/// Our outgoing chunk size (announced right after `connect`).
const OUT_CHUNK_SIZE: usize = 4096;
const WINDOW_ACK_SIZE: u32 = 2_500_000;
/// The message stream id `createStream` hands out.
const PUBLISH_STREAM_ID: u32 = 1;
const CSID_CONTROL: u32 = 2;
const CSID_COMMAND: u32 = 3;
const CSID_STATUS: u32 = 5;

#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// `publish` arrived: `key` is the stream name field (or, when OBS users leave it empty and
    /// put the key in the server URL, the last segment of `app`).
    PublishRequested { app: String, key: String },
    /// `@setDataFrame`/`onMetaData` values.
    Metadata(Vec<Value>),
    /// FLV video tag body (codec header byte first).
    Video { timestamp: u32, data: Bytes },
    /// FLV audio tag body.
    Audio { timestamp: u32, data: Bytes },
    /// `FCUnpublish`, `deleteStream` or `closeStream`: the publisher stopped on purpose.
    Unpublished,
}

#[derive(Debug)]
pub struct ServerSession {
    handshake: Handshake,
    reader: ChunkReader,
    out: Vec<u8>,
    out_chunk_size: usize,
    events: VecDeque<SessionEvent>,
    app: Option<String>,
    publish_tx: Option<f64>,
    publishing: bool,
    closed: bool,
}

impl Default for ServerSession {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerSession {
    pub fn new() -> Self {
        Self {
            handshake: Handshake::default(),
            reader: ChunkReader::new(ChunkLimits::BEFORE_PUBLISH),
            out: Vec::new(),
            out_chunk_size: chunk::DEFAULT_CHUNK_SIZE,
            events: VecDeque::new(),
            app: None,
            publish_tx: None,
            publishing: false,
            closed: false,
        }
    }

    /// Consume as much of `input` as forms whole handshake steps and chunks; returns the bytes
    /// used (keep the rest and feed it again with more). `now_ms` stamps the handshake.
    ///
    /// Nothing after a `publish` is read until the caller decided on its key: what follows is
    /// then read with the limits that decision gives (a client that sends media right behind
    /// its `publish` gets the publishing limits for it, not the small ones).
    pub fn feed(&mut self, mut input: &[u8], now_ms: u32) -> Result<usize, RtmpError> {
        let mut used = 0;
        while !self.closed && !self.awaiting_decision() {
            let n = if self.handshake != Handshake::Done {
                let (n, reply) = self.handshake.feed(input, now_ms)?;
                self.out.extend_from_slice(&reply);
                n
            } else {
                let (n, msg) = self.reader.read(input)?;
                if let Some(m) = msg {
                    self.on_message(m)?;
                }
                n
            };
            if n == 0 {
                break;
            }
            used += n;
            input = &input[n..];
        }
        Ok(used)
    }

    /// A `publish` waits for [`Self::accept_publish`] or [`Self::reject_publish`]; [`Self::feed`]
    /// reads nothing until then.
    pub fn awaiting_decision(&self) -> bool {
        self.publish_tx.is_some()
    }

    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Bytes to write to the peer.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// After a refused publish: write the output, then close the connection.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub fn is_publishing(&self) -> bool {
        self.publishing
    }

    /// Bytes of unfinished messages held (bounded by the chunk limits in force).
    pub fn buffered(&self) -> usize {
        self.reader.buffered()
    }

    /// The key was good: media flows, with the publishing limits.
    pub fn accept_publish(&mut self) {
        self.publishing = true;
        self.reader.set_limits(ChunkLimits::PUBLISHING);
        let tx = self.publish_tx.take().unwrap_or(0.0);
        self.status(tx, "status", "NetStream.Publish.Start", "publishing");
    }

    /// Refuse with an error status (the client shows `description`) and close.
    pub fn reject_publish(&mut self, description: &str) {
        let tx = self.publish_tx.take().unwrap_or(0.0);
        self.status(tx, "error", "NetStream.Publish.BadName", description);
        self.closed = true;
    }

    fn send(&mut self, csid: u32, type_id: u8, stream_id: u32, payload: Vec<u8>) {
        let m = Message {
            csid,
            timestamp: 0,
            type_id,
            stream_id,
            payload: payload.into(),
        };
        chunk::write_message(&mut self.out, self.out_chunk_size, csid, &m);
    }

    fn command(&mut self, csid: u32, stream_id: u32, values: &[Value]) {
        let mut body = Vec::new();
        for v in values {
            amf0::encode(&mut body, v);
        }
        self.send(csid, MSG_COMMAND_AMF0, stream_id, body);
    }

    fn status(&mut self, tx: f64, level: &str, code: &str, description: &str) {
        let info = Value::Object(vec![
            ("level".into(), Value::String(level.into())),
            ("code".into(), Value::String(code.into())),
            ("description".into(), Value::String(description.into())),
        ]);
        self.command(
            CSID_STATUS,
            PUBLISH_STREAM_ID,
            &[
                Value::String("onStatus".into()),
                Value::Number(tx),
                Value::Null,
                info,
            ],
        );
    }

    fn on_message(&mut self, m: Message) -> Result<(), RtmpError> {
        match m.type_id {
            MSG_COMMAND_AMF0 => self.on_command(amf0::decode_all(&m.payload)?)?,
            MSG_DATA_AMF0 => {
                let values = amf0::decode_all(&m.payload)?;
                if values
                    .first()
                    .and_then(Value::as_str)
                    .is_some_and(|s| s == "@setDataFrame" || s == "onMetaData")
                {
                    self.events.push_back(SessionEvent::Metadata(values));
                }
            }
            // Media before an accepted publish is ignored, not an error (some clients race).
            MSG_VIDEO if self.publishing => self.events.push_back(SessionEvent::Video {
                timestamp: m.timestamp,
                data: m.payload,
            }),
            MSG_AUDIO if self.publishing => self.events.push_back(SessionEvent::Audio {
                timestamp: m.timestamp,
                data: m.payload,
            }),
            // Acknowledgements, user control, peer bandwidth, and the rest: nothing to do.
            _ => {}
        }
        Ok(())
    }

    fn on_command(&mut self, values: Vec<Value>) -> Result<(), RtmpError> {
        let name = values
            .first()
            .and_then(Value::as_str)
            .ok_or(RtmpError::Amf("command without a name"))?
            .to_owned();
        let tx = values.get(1).and_then(Value::as_number).unwrap_or(0.0);
        match name.as_str() {
            "connect" => {
                let app = values
                    .get(2)
                    .and_then(|o| o.get("app"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                self.app = Some(app.trim_matches('/').to_owned());
                self.send(
                    CSID_CONTROL,
                    MSG_WINDOW_ACK_SIZE,
                    0,
                    WINDOW_ACK_SIZE.to_be_bytes().to_vec(),
                );
                let mut bw = WINDOW_ACK_SIZE.to_be_bytes().to_vec();
                bw.push(2); // dynamic
                self.send(CSID_CONTROL, MSG_SET_PEER_BANDWIDTH, 0, bw);
                self.send(
                    CSID_CONTROL,
                    chunk::MSG_SET_CHUNK_SIZE,
                    0,
                    (OUT_CHUNK_SIZE as u32).to_be_bytes().to_vec(),
                );
                self.out_chunk_size = OUT_CHUNK_SIZE;
                let props = Value::Object(vec![
                    ("fmsVer".into(), Value::String("FMS/3,0,1,123".into())),
                    ("capabilities".into(), Value::Number(31.0)),
                ]);
                let info = Value::Object(vec![
                    ("level".into(), Value::String("status".into())),
                    (
                        "code".into(),
                        Value::String("NetConnection.Connect.Success".into()),
                    ),
                    (
                        "description".into(),
                        Value::String("Connection succeeded.".into()),
                    ),
                    ("objectEncoding".into(), Value::Number(0.0)),
                ]);
                self.command(
                    CSID_COMMAND,
                    0,
                    &[
                        Value::String("_result".into()),
                        Value::Number(tx),
                        props,
                        info,
                    ],
                );
            }
            "releaseStream" | "FCPublish" => {
                self.command(
                    CSID_COMMAND,
                    0,
                    &[
                        Value::String("_result".into()),
                        Value::Number(tx),
                        Value::Null,
                        Value::Undefined,
                    ],
                );
            }
            "createStream" => {
                self.command(
                    CSID_COMMAND,
                    0,
                    &[
                        Value::String("_result".into()),
                        Value::Number(tx),
                        Value::Null,
                        Value::Number(PUBLISH_STREAM_ID as f64),
                    ],
                );
            }
            "publish" => {
                let Some(app) = self.app.clone() else {
                    return Err(RtmpError::Amf("publish before connect"));
                };
                if self.publishing || self.publish_tx.is_some() {
                    // Replacing the first publish would leave its stream without an owner.
                    self.status(
                        tx,
                        "error",
                        "NetStream.Publish.BadName",
                        "this connection is already publishing a stream",
                    );
                    return Ok(());
                }
                let name = values.get(3).and_then(Value::as_str).unwrap_or_default();
                // `key?param=...` (some tools add parameters) → `key`.
                let mut key = name.split('?').next().unwrap_or_default().to_owned();
                if key.is_empty() {
                    key = app.rsplit('/').next().unwrap_or_default().to_owned();
                }
                self.publish_tx = Some(tx);
                self.events
                    .push_back(SessionEvent::PublishRequested { app, key });
            }
            "FCUnpublish" | "deleteStream" | "closeStream" if self.publishing => {
                self.publishing = false;
                self.events.push_back(SessionEvent::Unpublished);
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::rtmp::client::{obs_until_publish, replies, s, Client};

    #[test]
    fn obs_publish_accepted_then_media_flows() {
        let mut c = obs_until_publish("live_key");
        let mut meta = Vec::new();
        amf0::encode(&mut meta, &s("@setDataFrame"));
        amf0::encode(&mut meta, &s("onMetaData"));
        amf0::encode(
            &mut meta,
            &Value::EcmaArray(vec![("videocodecid".into(), Value::Number(7.0))]),
        );
        let mut sess = ServerSession::new();
        let used = sess.feed(&c.wire, 0).unwrap();
        assert_eq!(used, c.wire.len());
        assert_eq!(
            sess.poll_event(),
            Some(SessionEvent::PublishRequested {
                app: "live".into(),
                key: "live_key".into()
            })
        );
        sess.accept_publish();
        let out = sess.take_output();
        let r = replies(&out);
        assert_eq!(r[0][0], s("_result"));
        assert_eq!(
            r[0][3].get("code"),
            Some(&s("NetConnection.Connect.Success"))
        );
        assert_eq!(
            r[3],
            vec![
                s("_result"),
                Value::Number(4.0),
                Value::Null,
                Value::Number(1.0)
            ],
            "createStream → stream 1"
        );
        assert_eq!(
            r.last().unwrap()[3].get("code"),
            Some(&s("NetStream.Publish.Start"))
        );

        c.wire.clear();
        c.msg(4, MSG_DATA_AMF0, 1, 0, meta);
        c.msg(6, MSG_VIDEO, 1, 33, vec![0x17, 0x00, 0, 0, 0, 1, 0x64]);
        c.msg(4, MSG_AUDIO, 1, 40, vec![0xaf, 0x00, 0x12, 0x10]);
        c.cmd(
            1,
            &[
                s("FCUnpublish"),
                Value::Number(6.0),
                Value::Null,
                s("live_key"),
            ],
        );
        sess.feed(&c.wire, 0).unwrap();
        assert!(
            matches!(sess.poll_event(), Some(SessionEvent::Metadata(v)) if v[2].get("videocodecid") == Some(&Value::Number(7.0)))
        );
        assert_eq!(
            sess.poll_event(),
            Some(SessionEvent::Video {
                timestamp: 33,
                data: Bytes::from_static(&[0x17, 0x00, 0, 0, 0, 1, 0x64])
            })
        );
        assert_eq!(
            sess.poll_event(),
            Some(SessionEvent::Audio {
                timestamp: 40,
                data: Bytes::from_static(&[0xaf, 0x00, 0x12, 0x10])
            })
        );
        assert_eq!(sess.poll_event(), Some(SessionEvent::Unpublished));
    }

    #[test]
    fn wrong_key_gets_an_error_status_and_the_session_closes() {
        let c = obs_until_publish("bad");
        let mut sess = ServerSession::new();
        sess.feed(&c.wire, 0).unwrap();
        assert!(matches!(
            sess.poll_event(),
            Some(SessionEvent::PublishRequested { .. })
        ));
        sess.reject_publish("wrong stream key");
        assert!(sess.is_closed());
        let r = replies(&sess.take_output());
        let last = r.last().unwrap();
        assert_eq!(last[3].get("level"), Some(&s("error")));
        assert_eq!(last[3].get("code"), Some(&s("NetStream.Publish.BadName")));
    }

    #[test]
    fn key_in_the_server_url_and_byte_by_byte_input() {
        let mut c = Client::new();
        c.cmd(
            0,
            &[
                s("connect"),
                Value::Number(1.0),
                Value::Object(vec![("app".into(), s("live/live_urlkey"))]),
            ],
        );
        c.cmd(0, &[s("createStream"), Value::Number(2.0), Value::Null]);
        c.cmd(
            1,
            &[
                s("publish"),
                Value::Number(3.0),
                Value::Null,
                s(""),
                s("live"),
            ],
        );
        let mut sess = ServerSession::new();
        let mut pending = Vec::new();
        for b in &c.wire {
            pending.push(*b);
            let n = sess.feed(&pending, 0).unwrap();
            pending.drain(..n);
        }
        assert!(pending.is_empty());
        assert_eq!(
            sess.poll_event(),
            Some(SessionEvent::PublishRequested {
                app: "live/live_urlkey".into(),
                key: "live_urlkey".into()
            })
        );
    }

    #[test]
    fn a_second_publish_is_refused_and_the_first_goes_on() {
        let mut c = obs_until_publish("live_key");
        let mut sess = ServerSession::new();
        sess.feed(&c.wire, 0).unwrap();
        assert!(matches!(
            sess.poll_event(),
            Some(SessionEvent::PublishRequested { .. })
        ));
        sess.accept_publish();
        sess.take_output();
        for key in ["other_key", "live_key"] {
            c.wire.clear();
            c.cmd(
                1,
                &[
                    s("publish"),
                    Value::Number(9.0),
                    Value::Null,
                    s(key),
                    s("live"),
                ],
            );
            c.video(40, vec![0x17, 0x01, 0, 0, 0]);
            sess.feed(&c.wire, 0).unwrap();
            let r = replies_after_handshake(&sess.take_output());
            assert_eq!(r.len(), 1, "{r:?}");
            assert_eq!(r[0][1], Value::Number(9.0));
            assert_eq!(r[0][3].get("code"), Some(&s("NetStream.Publish.BadName")));
            assert!(!sess.is_closed() && sess.is_publishing());
            assert!(
                matches!(sess.poll_event(), Some(SessionEvent::Video { .. })),
                "the first publish's media still flows"
            );
            assert_eq!(sess.poll_event(), None);
        }
        // Two publishes in one read, before the first is decided: the second is refused too.
        let mut c = obs_until_publish("live_key");
        c.cmd(
            1,
            &[
                s("publish"),
                Value::Number(6.0),
                Value::Null,
                s("x"),
                s("live"),
            ],
        );
        let mut sess = ServerSession::new();
        let used = sess.feed(&c.wire, 0).unwrap();
        assert!(used < c.wire.len(), "stopped at the first publish");
        assert!(matches!(
            sess.poll_event(),
            Some(SessionEvent::PublishRequested { key, .. }) if key == "live_key"
        ));
        assert_eq!(sess.poll_event(), None);
        assert_eq!(
            sess.feed(&c.wire[used..], 0),
            Ok(0),
            "nothing read undecided"
        );
        sess.accept_publish();
        sess.take_output();
        assert_eq!(sess.feed(&c.wire[used..], 0), Ok(c.wire.len() - used));
        let r = replies_after_handshake(&sess.take_output());
        assert_eq!(r[0][3].get("code"), Some(&s("NetStream.Publish.BadName")));
        assert_eq!(sess.poll_event(), None);
    }

    #[test]
    fn large_messages_only_once_publishing() {
        // A 1 MiB video message after `connect`: too large before the key check ...
        let mut early = Client::new();
        early.cmd(
            0,
            &[
                s("connect"),
                Value::Number(1.0),
                Value::Object(vec![("app".into(), s("live"))]),
            ],
        );
        early.video(0, vec![0x17; 1 << 20]);
        assert_eq!(
            ServerSession::new().feed(&early.wire, 0),
            Err(RtmpError::TooLarge(1 << 20))
        );
        // ... and fine right behind an accepted `publish`, even in the same read.
        let mut c = obs_until_publish("live_key");
        let publish_ends = c.wire.len();
        c.video(0, vec![0x17; 1 << 20]);
        let mut sess = ServerSession::new();
        assert_eq!(sess.feed(&c.wire, 0), Ok(publish_ends));
        sess.poll_event();
        sess.accept_publish();
        assert_eq!(
            sess.feed(&c.wire[publish_ends..], 0),
            Ok(c.wire.len() - publish_ends)
        );
        assert!(
            matches!(sess.poll_event(), Some(SessionEvent::Video { data, .. }) if data.len() == 1 << 20)
        );
        assert_eq!(sess.buffered(), 0);
    }

    /// Commands in server output that follows the handshake (S0/S1/S2 already taken).
    fn replies_after_handshake(out: &[u8]) -> Vec<Vec<Value>> {
        let mut with_handshake = vec![0u8; 1 + 2 * crate::ingest::rtmp::handshake::SIG_LEN];
        // Our output after `connect` is in OUT_CHUNK_SIZE chunks, as announced then.
        let set = Message {
            csid: CSID_CONTROL,
            timestamp: 0,
            type_id: chunk::MSG_SET_CHUNK_SIZE,
            stream_id: 0,
            payload: (OUT_CHUNK_SIZE as u32).to_be_bytes().to_vec().into(),
        };
        chunk::write_message(
            &mut with_handshake,
            chunk::DEFAULT_CHUNK_SIZE,
            CSID_CONTROL,
            &set,
        );
        with_handshake.extend_from_slice(out);
        replies(&with_handshake)
    }

    #[test]
    fn garbage_closes_with_an_error() {
        assert!(ServerSession::new()
            .feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0)
            .is_err());
        let mut c = Client::new();
        c.wire.extend_from_slice(&[0xc7, 1, 2, 3]); // continuation of a chunk stream never opened
        assert!(ServerSession::new().feed(&c.wire, 0).is_err());
    }
}
