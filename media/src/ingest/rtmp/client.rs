//! The client side, as bytes: what OBS sends to publish, and the server's replies read back.
//! For tests (unit and over TCP) and fuzz seeds; Glint itself never publishes over RTMP.

use super::amf0::{self, Value};
use super::chunk::{self, ChunkReader, Message};
use super::handshake::{SIG_LEN, VERSION};
use super::session::{MSG_COMMAND_AMF0, MSG_VIDEO};

/// Bytes a publisher puts on the wire, in order.
pub struct Client {
    pub wire: Vec<u8>,
    pub chunk_size: usize,
}

impl Client {
    /// C0, C1 and C2 (C2 sent before S1 arrives: servers must cope, and ours does).
    pub fn new() -> Self {
        let mut wire = vec![VERSION];
        wire.extend(std::iter::repeat_n(1u8, SIG_LEN)); // C1
        wire.extend(std::iter::repeat_n(2u8, SIG_LEN)); // C2
        Self {
            wire,
            chunk_size: chunk::DEFAULT_CHUNK_SIZE,
        }
    }

    pub fn msg(&mut self, csid: u32, type_id: u8, stream_id: u32, ts: u32, payload: Vec<u8>) {
        let m = Message {
            csid,
            timestamp: ts,
            type_id,
            stream_id,
            payload: payload.into(),
        };
        chunk::write_message(&mut self.wire, self.chunk_size, csid, &m);
    }

    pub fn cmd(&mut self, stream_id: u32, values: &[Value]) {
        let mut body = Vec::new();
        for v in values {
            amf0::encode(&mut body, v);
        }
        self.msg(3, MSG_COMMAND_AMF0, stream_id, 0, body);
    }

    /// A video message (FLV video tag body) on the published stream.
    pub fn video(&mut self, ts: u32, tag: Vec<u8>) {
        self.msg(6, MSG_VIDEO, 1, ts, tag);
    }
}

/// An SPS of x264's constrained baseline 1280x720, for tests' AVC configurations.
pub const TEST_SPS: &[u8] = &[
    0x67, 0x42, 0xc0, 0x1f, 0xd9, 0x00, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10,
    0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x24, 0x80,
];
/// A PPS to go with [`TEST_SPS`].
pub const TEST_PPS: &[u8] = &[0x68, 0xcb, 0x83, 0xcb, 0x20];

/// An FLV video tag body holding an AVC sequence header (AVCDecoderConfigurationRecord) with
/// one SPS and one PPS: what OBS sends first after `publish`.
pub fn avc_config_tag(sps: &[u8], pps: &[u8]) -> Vec<u8> {
    let mut tag = vec![0x17, 0x00, 0, 0, 0, 1, sps[1], sps[2], sps[3], 0xff, 0xe1];
    tag.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    tag.extend_from_slice(sps);
    tag.push(1);
    tag.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    tag.extend_from_slice(pps);
    tag
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

pub fn s(x: &str) -> Value {
    Value::String(x.into())
}

/// OBS's sequence from the handshake to `publish(key)`.
pub fn obs_until_publish(key: &str) -> Client {
    let mut c = Client::new();
    c.msg(
        2,
        chunk::MSG_SET_CHUNK_SIZE,
        0,
        0,
        4096u32.to_be_bytes().to_vec(),
    );
    c.chunk_size = 4096;
    c.cmd(
        0,
        &[
            s("connect"),
            Value::Number(1.0),
            Value::Object(vec![
                ("app".into(), s("live")),
                ("type".into(), s("nonprivate")),
                ("tcUrl".into(), s("rtmp://127.0.0.1/live")),
            ]),
        ],
    );
    c.cmd(
        0,
        &[s("releaseStream"), Value::Number(2.0), Value::Null, s(key)],
    );
    c.cmd(
        0,
        &[s("FCPublish"), Value::Number(3.0), Value::Null, s(key)],
    );
    c.cmd(0, &[s("createStream"), Value::Number(4.0), Value::Null]);
    c.cmd(
        1,
        &[
            s("publish"),
            Value::Number(5.0),
            Value::Null,
            s(key),
            s("live"),
        ],
    );
    c
}

/// The command messages (decoded AMF0) in everything a server sent: S0, S1, S2, then chunks.
/// Stops at the first incomplete or malformed chunk.
pub fn replies(bytes: &[u8]) -> Vec<Vec<Value>> {
    let Some(mut rest) = bytes.get(1 + 2 * SIG_LEN..) else {
        return Vec::new();
    };
    let mut r = ChunkReader::default();
    let mut out = Vec::new();
    while let Ok((n, m)) = r.read(rest) {
        if n == 0 {
            break;
        }
        if let Some(m) = m.filter(|m| m.type_id == MSG_COMMAND_AMF0) {
            if let Ok(values) = amf0::decode_all(&m.payload) {
                out.push(values);
            }
        }
        rest = &rest[n..];
    }
    out
}
