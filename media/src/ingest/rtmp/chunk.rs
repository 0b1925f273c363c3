//! The RTMP chunk stream (spec §5.3): messages are cut into chunks of at most `chunk_size`
//! bytes, interleaved across chunk stream ids, with headers compressed against the previous
//! chunk of the same chunk stream. [`ChunkReader`] puts messages back together;
//! [`write_message`] cuts one up.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};

use super::RtmpError;

/// Protocol control message types handled at this layer (spec §5.4).
pub const MSG_SET_CHUNK_SIZE: u8 = 1;
/// The chunk size until a Set Chunk Size message says otherwise (spec §5.4.1).
pub const DEFAULT_CHUNK_SIZE: usize = 128;
/// Largest chunk size we accept from a peer (OBS uses 4096; ffmpeg up to 65536).
pub const MAX_CHUNK_SIZE: usize = 1 << 20;
/// Largest message we reassemble once a publish is accepted (a 4K keyframe fits easily).
pub const MAX_MESSAGE: usize = 8 << 20;
/// Unfinished messages (all chunk streams together) buffered once a publish is accepted: a
/// keyframe at [`MAX_MESSAGE`] with audio and data interleaved.
pub const MAX_BUFFERED: usize = 2 * MAX_MESSAGE;
/// Largest message before a publish is accepted: commands (`connect`, `publish`, ...) are a
/// few hundred bytes; media before the key check is dropped anyway.
pub const MAX_MESSAGE_BEFORE_PUBLISH: usize = 64 << 10;
/// Unfinished messages (all chunk streams together) buffered before a publish is accepted.
pub const MAX_BUFFERED_BEFORE_PUBLISH: usize = 128 << 10;
/// Chunk streams one connection may use at once.
const MAX_CHUNK_STREAMS: usize = 64;
const EXTENDED_TIMESTAMP: u32 = 0xFF_FFFF;

/// One reassembled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub csid: u32,
    /// Absolute timestamp in milliseconds (wrapping, as RTMP's are).
    pub timestamp: u32,
    pub type_id: u8,
    pub stream_id: u32,
    pub payload: Bytes,
}

/// What the next chunk's compressed header is read against (spec §5.3.1.2).
#[derive(Debug, Default, Clone, Copy)]
struct Header {
    timestamp: u32,
    delta: u32,
    length: usize,
    type_id: u8,
    stream_id: u32,
    extended: bool,
}

#[derive(Debug, Default)]
struct ChunkState {
    header: Header,
    /// The message under way; it grows as its chunks arrive (never cloned: a message is copied
    /// once, into its buffer).
    partial: Option<BytesMut>,
}

/// How much of a peer's input a [`ChunkReader`] holds: the largest message it reassembles, and
/// the bytes of unfinished messages it buffers across all chunk streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimits {
    pub max_message_bytes: usize,
    pub max_buffered_bytes: usize,
}

impl ChunkLimits {
    /// Before the stream key is checked: anyone on the internet.
    pub const BEFORE_PUBLISH: Self = Self {
        max_message_bytes: MAX_MESSAGE_BEFORE_PUBLISH,
        max_buffered_bytes: MAX_BUFFERED_BEFORE_PUBLISH,
    };
    /// A publisher whose key was accepted.
    pub const PUBLISHING: Self = Self {
        max_message_bytes: MAX_MESSAGE,
        max_buffered_bytes: MAX_BUFFERED,
    };
}

/// Reassembles messages from a peer's chunk stream.
#[derive(Debug)]
pub struct ChunkReader {
    chunk_size: usize,
    streams: HashMap<u32, ChunkState>,
    limits: ChunkLimits,
    /// Bytes held in unfinished messages, all chunk streams together.
    buffered: usize,
}

/// The publishing limits (reading what a server sent, fuzzing); [`ChunkReader::new`] to choose.
impl Default for ChunkReader {
    fn default() -> Self {
        Self::new(ChunkLimits::PUBLISHING)
    }
}

fn be24(b: &[u8]) -> u32 {
    u32::from_be_bytes([0, b[0], b[1], b[2]])
}

impl ChunkReader {
    pub fn new(limits: ChunkLimits) -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: HashMap::new(),
            limits,
            buffered: 0,
        }
    }

    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Bytes of unfinished messages held, all chunk streams together.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// New limits from the next chunk on (a publish was accepted). Messages under way are kept.
    pub fn set_limits(&mut self, limits: ChunkLimits) {
        self.limits = limits;
    }

    /// Read one chunk from the front of `input`. Returns the bytes consumed (0 when the chunk
    /// is not complete yet) and the message it completed, if any. Set Chunk Size is applied
    /// here and also returned.
    pub fn read(&mut self, input: &[u8]) -> Result<(usize, Option<Message>), RtmpError> {
        let Some(&b0) = input.first() else {
            return Ok((0, None));
        };
        let fmt = b0 >> 6;
        let (csid, mut pos) = match b0 & 0x3f {
            0 => match input.get(1) {
                Some(&b) => (64 + b as u32, 2),
                None => return Ok((0, None)),
            },
            1 => match input.get(1..3) {
                Some(b) => (64 + b[0] as u32 + 256 * b[1] as u32, 3),
                None => return Ok((0, None)),
            },
            id => (id as u32, 1),
        };
        let header_len = [11, 7, 3, 0][fmt as usize];
        let Some(header) = input.get(pos..pos + header_len) else {
            return Ok((0, None));
        };
        pos += header_len;

        if !self.streams.contains_key(&csid) {
            if fmt != 0 {
                return Err(RtmpError::Chunk(
                    "first chunk of a chunk stream must have a full header",
                ));
            }
            if self.streams.len() >= MAX_CHUNK_STREAMS {
                return Err(RtmpError::Chunk("too many chunk streams"));
            }
        }
        let known = self.streams.get(&csid);
        let mut st = known.map(|s| s.header).unwrap_or_default();
        let had = known.and_then(|s| s.partial.as_ref()).map(BytesMut::len);
        let continuing = had.is_some();
        let mut ts_field = None;
        match fmt {
            0 => {
                ts_field = Some(be24(&header[0..3]));
                st.length = be24(&header[3..6]) as usize;
                st.type_id = header[6];
                st.stream_id = u32::from_le_bytes([header[7], header[8], header[9], header[10]]);
            }
            1 => {
                ts_field = Some(be24(&header[0..3]));
                st.length = be24(&header[3..6]) as usize;
                st.type_id = header[6];
            }
            2 => ts_field = Some(be24(&header[0..3])),
            _ => {}
        }
        if let Some(t) = ts_field {
            st.extended = t == EXTENDED_TIMESTAMP;
        }
        // The 4-byte extended timestamp follows whenever the header's field was 0xFFFFFF,
        // including on type-3 chunks of such a message (spec §5.3.1.3).
        let ts_value = if st.extended {
            let Some(ext) = input.get(pos..pos + 4) else {
                return Ok((0, None));
            };
            pos += 4;
            u32::from_be_bytes([ext[0], ext[1], ext[2], ext[3]])
        } else {
            ts_field.unwrap_or(st.delta)
        };
        if st.length > self.limits.max_message_bytes {
            return Err(RtmpError::TooLarge(st.length));
        }
        if fmt != 3 && continuing {
            return Err(RtmpError::Chunk(
                "new message header before the previous message ended",
            ));
        }
        if !continuing {
            match fmt {
                0 => {
                    st.timestamp = ts_value;
                    st.delta = 0;
                }
                1 | 2 => {
                    st.delta = ts_value;
                    st.timestamp = st.timestamp.wrapping_add(ts_value);
                }
                // A type-3 chunk starting a new message repeats the previous delta.
                _ => st.timestamp = st.timestamp.wrapping_add(st.delta),
            }
        }
        let had = had.unwrap_or(0);
        let want = (st.length - had).min(self.chunk_size);
        let Some(data) = input.get(pos..pos + want) else {
            return Ok((0, None));
        };
        let done = had + want == st.length;
        if !done && self.buffered + want > self.limits.max_buffered_bytes {
            return Err(RtmpError::Buffered(self.buffered + want));
        }
        pos += want;

        let entry = self.streams.entry(csid).or_default();
        entry.header = st;
        // Memory follows the bytes that arrived, not the length a header claims.
        let chunk_size = self.chunk_size;
        let partial = entry
            .partial
            .get_or_insert_with(|| BytesMut::with_capacity(st.length.min(chunk_size)));
        partial.extend_from_slice(data);
        let message = if done {
            self.buffered -= had;
            entry.partial.take().map(|payload| Message {
                csid,
                timestamp: st.timestamp,
                type_id: st.type_id,
                stream_id: st.stream_id,
                payload: payload.freeze(),
            })
        } else {
            self.buffered += want;
            None
        };

        if let Some(m) = &message {
            if m.type_id == MSG_SET_CHUNK_SIZE {
                let p = &m.payload;
                if p.len() < 4 {
                    return Err(RtmpError::Chunk("short Set Chunk Size"));
                }
                let size = (u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff) as usize;
                if size == 0 || size > MAX_CHUNK_SIZE {
                    return Err(RtmpError::Chunk("Set Chunk Size out of range"));
                }
                self.chunk_size = size;
            }
        }
        Ok((pos, message))
    }
}

/// Cut one message into chunks: a type-0 header, then type-3 continuation headers.
pub fn write_message(out: &mut Vec<u8>, chunk_size: usize, csid: u32, m: &Message) {
    debug_assert!(
        (2..64).contains(&csid),
        "only one-byte chunk stream ids are written"
    );
    let extended = m.timestamp >= EXTENDED_TIMESTAMP;
    let ts = if extended {
        EXTENDED_TIMESTAMP
    } else {
        m.timestamp
    };
    out.push(csid as u8);
    out.extend_from_slice(&ts.to_be_bytes()[1..]);
    out.extend_from_slice(&(m.payload.len() as u32).to_be_bytes()[1..]);
    out.push(m.type_id);
    out.extend_from_slice(&m.stream_id.to_le_bytes());
    if extended {
        out.extend_from_slice(&m.timestamp.to_be_bytes());
    }
    for (i, piece) in m.payload.chunks(chunk_size.max(1)).enumerate() {
        if i > 0 {
            out.push(0xc0 | csid as u8);
            if extended {
                out.extend_from_slice(&m.timestamp.to_be_bytes());
            }
        }
        out.extend_from_slice(piece);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ts: u32, type_id: u8, len: usize) -> Message {
        Message {
            csid: 6,
            timestamp: ts,
            type_id,
            stream_id: 1,
            payload: Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>()),
        }
    }

    fn read_all(r: &mut ChunkReader, mut input: &[u8]) -> Vec<Message> {
        let mut out = Vec::new();
        loop {
            let (n, m) = r.read(input).unwrap();
            if n == 0 {
                return out;
            }
            out.extend(m);
            input = &input[n..];
        }
    }

    #[test]
    fn round_trip_with_default_and_large_chunk_sizes() {
        for (size, ts) in [(128usize, 1000u32), (4096, 0x0100_0000)] {
            let mut wire = Vec::new();
            if size != DEFAULT_CHUNK_SIZE {
                let set = Message {
                    csid: 2,
                    timestamp: 0,
                    type_id: MSG_SET_CHUNK_SIZE,
                    stream_id: 0,
                    payload: Bytes::copy_from_slice(&(size as u32).to_be_bytes()),
                };
                write_message(&mut wire, DEFAULT_CHUNK_SIZE, 2, &set);
            }
            let big = msg(ts, 9, 10_000);
            write_message(&mut wire, size, 6, &big);
            let mut r = ChunkReader::default();
            let got = read_all(&mut r, &wire);
            let got: Vec<_> = got.into_iter().filter(|m| m.type_id == 9).collect();
            assert_eq!(got, vec![Message { csid: 6, ..big }], "chunk size {size}");
            assert_eq!(r.chunk_size(), size);
        }
    }

    #[test]
    fn compressed_headers_and_interleaving() {
        // fmt 0 on csid 4 (audio, 3 bytes, ts 100), fmt 2 delta 20, fmt 3 repeats the delta.
        let mut wire = vec![0x04, 0, 0, 100, 0, 0, 3, 8, 1, 0, 0, 0, 1, 2, 3];
        wire.extend_from_slice(&[0x84, 0, 0, 20, 4, 5, 6]);
        wire.extend_from_slice(&[0xc4, 7, 8, 9]);
        // A 200-byte video message on csid 6 split into 128 + 72, with an audio message between.
        let video = msg(500, 9, 200);
        let mut v = Vec::new();
        write_message(&mut v, 128, 6, &video);
        let split = 1 + 11 + 128;
        wire.extend_from_slice(&v[..split]);
        wire.extend_from_slice(&[0xc4, 10, 11, 12]);
        wire.extend_from_slice(&v[split..]);
        let got = read_all(&mut ChunkReader::default(), &wire);
        let ts: Vec<_> = got
            .iter()
            .map(|m| (m.csid, m.timestamp, m.payload.len()))
            .collect();
        assert_eq!(
            ts,
            vec![
                (4, 100, 3),
                (4, 120, 3),
                (4, 140, 3),
                (4, 160, 3),
                (6, 500, 200)
            ]
        );
        assert_eq!(got[4].payload, video.payload);
    }

    #[test]
    fn partial_input_consumes_nothing() {
        let mut wire = Vec::new();
        write_message(&mut wire, 128, 6, &msg(1, 9, 50));
        let mut r = ChunkReader::default();
        for cut in 0..wire.len() {
            assert_eq!(r.read(&wire[..cut]).unwrap(), (0, None), "cut {cut}");
        }
        assert!(r.read(&wire).unwrap().1.is_some());
    }

    /// A type-0 header of a `len`-byte video message on chunk stream `csid` (one byte form).
    fn header(csid: u8, len: usize) -> Vec<u8> {
        let l = (len as u32).to_be_bytes();
        vec![csid, 0, 0, 0, l[1], l[2], l[3], 9, 1, 0, 0, 0]
    }

    #[test]
    fn before_publish_messages_are_small() {
        let mut r = ChunkReader::new(ChunkLimits::BEFORE_PUBLISH);
        assert_eq!(
            r.read(&header(6, MAX_MESSAGE_BEFORE_PUBLISH + 1)),
            Err(RtmpError::TooLarge(MAX_MESSAGE_BEFORE_PUBLISH + 1))
        );
        // At the limit: accepted, and only the bytes that came are held.
        let mut r = ChunkReader::new(ChunkLimits::BEFORE_PUBLISH);
        let mut wire = header(6, MAX_MESSAGE_BEFORE_PUBLISH);
        wire.extend_from_slice(&[0; DEFAULT_CHUNK_SIZE]);
        assert_eq!(r.read(&wire).unwrap(), (wire.len(), None));
        assert_eq!(r.buffered(), DEFAULT_CHUNK_SIZE);
        // Once publishing, the large limit.
        let mut r = ChunkReader::new(ChunkLimits::BEFORE_PUBLISH);
        r.set_limits(ChunkLimits::PUBLISHING);
        assert!(r.read(&header(6, 1 << 20)).is_ok());
    }

    #[test]
    fn unfinished_messages_across_chunk_streams_are_capped() {
        // 32 KiB chunks; chunk streams 3, 4, ... each start a message at the limit and never
        // finish it: the total held stops at the cap and the peer is refused.
        const CHUNK: usize = 32 << 10;
        let set = Message {
            csid: 2,
            timestamp: 0,
            type_id: MSG_SET_CHUNK_SIZE,
            stream_id: 0,
            payload: Bytes::copy_from_slice(&(CHUNK as u32).to_be_bytes()),
        };
        let mut wire = Vec::new();
        write_message(&mut wire, DEFAULT_CHUNK_SIZE, 2, &set);
        let mut r = ChunkReader::new(ChunkLimits::BEFORE_PUBLISH);
        assert_eq!(read_all(&mut r, &wire).len(), 1);
        let mut refused = None;
        for csid in 3..64u8 {
            let mut wire = header(csid, MAX_MESSAGE_BEFORE_PUBLISH);
            wire.extend_from_slice(&[0; CHUNK]);
            match r.read(&wire) {
                Ok((n, None)) => assert_eq!(n, wire.len()),
                Ok(other) => panic!("{other:?}"),
                Err(e) => {
                    refused = Some((csid, e));
                    break;
                }
            }
            assert!(r.buffered() <= MAX_BUFFERED_BEFORE_PUBLISH);
        }
        let (csid, e) = refused.expect("refused within 61 chunk streams");
        assert_eq!(e, RtmpError::Buffered(MAX_BUFFERED_BEFORE_PUBLISH + CHUNK));
        assert_eq!(csid as usize - 3, MAX_BUFFERED_BEFORE_PUBLISH / CHUNK);
        // Finished messages free their share.
        let mut r = ChunkReader::new(ChunkLimits::BEFORE_PUBLISH);
        let mut wire = Vec::new();
        for _ in 0..4 {
            write_message(&mut wire, 128, 6, &msg(1, 9, 60_000));
        }
        assert_eq!(read_all(&mut r, &wire).len(), 4);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn hostile_input_is_refused() {
        let mut r = ChunkReader::default();
        // fmt 3 on an unknown chunk stream.
        assert!(r.read(&[0xc5, 0]).is_err());
        // A 16 MiB message length.
        assert_eq!(
            ChunkReader::default().read(&[0x05, 0, 0, 0, 0xff, 0xff, 0xff, 9, 0, 0, 0, 0]),
            Err(RtmpError::TooLarge(0xff_ffff))
        );
        // Set Chunk Size 0.
        let set = Message {
            csid: 2,
            timestamp: 0,
            type_id: MSG_SET_CHUNK_SIZE,
            stream_id: 0,
            payload: Bytes::from_static(&[0, 0, 0, 0]),
        };
        let mut wire = Vec::new();
        write_message(&mut wire, 128, 2, &set);
        assert!(ChunkReader::default().read(&wire).is_err());
        // Too many chunk streams.
        let mut r = ChunkReader::default();
        for csid in 0..=MAX_CHUNK_STREAMS as u8 {
            let res = r.read(&[0x00, csid, 0, 0, 0, 0, 0, 1, 9, 0, 0, 0, 0, 7]);
            if csid as usize == MAX_CHUNK_STREAMS {
                assert!(res.is_err());
            } else {
                assert!(res.is_ok());
            }
        }
    }
}
