//! The RTMP handshake (spec §5.2), server side: C0+C1 in → S0+S1+S2 out → C2 in.
//! We answer with the "simple" handshake (zeroes for the digest scheme), which OBS, ffmpeg and
//! GStreamer all accept.

use super::RtmpError;

pub const VERSION: u8 = 3;
/// C1/S1/C2/S2 are 1536 bytes each.
pub const SIG_LEN: usize = 1536;

/// Handshake progress; `feed` returns how many bytes it consumed and what to send back.
#[derive(Debug, Default, PartialEq, Eq)]
pub enum Handshake {
    #[default]
    AwaitC0C1,
    AwaitC2,
    Done,
}

impl Handshake {
    /// Consume what is needed from `input`; returns (bytes consumed, reply to send).
    /// Consumes nothing until a whole step is available.
    pub fn feed(
        &mut self,
        input: &[u8],
        server_time_ms: u32,
    ) -> Result<(usize, Vec<u8>), RtmpError> {
        match self {
            Handshake::AwaitC0C1 => {
                if input.is_empty() {
                    return Ok((0, Vec::new()));
                }
                if input[0] != VERSION {
                    return Err(RtmpError::Version(input[0]));
                }
                if input.len() < 1 + SIG_LEN {
                    return Ok((0, Vec::new()));
                }
                let c1 = &input[1..1 + SIG_LEN];
                let mut out = Vec::with_capacity(1 + 2 * SIG_LEN);
                out.push(VERSION);
                // S1: our time, zero, then (pseudo-)random bytes; zeroes are accepted.
                out.extend_from_slice(&server_time_ms.to_be_bytes());
                out.extend_from_slice(&[0; 4]);
                out.extend(std::iter::repeat_n(0x5a, SIG_LEN - 8));
                // S2: echo of C1 (its time, then our read time, then its random bytes).
                out.extend_from_slice(&c1[0..4]);
                out.extend_from_slice(&server_time_ms.to_be_bytes());
                out.extend_from_slice(&c1[8..]);
                *self = Handshake::AwaitC2;
                Ok((1 + SIG_LEN, out))
            }
            Handshake::AwaitC2 => {
                if input.len() < SIG_LEN {
                    return Ok((0, Vec::new()));
                }
                *self = Handshake::Done;
                Ok((SIG_LEN, Vec::new()))
            }
            Handshake::Done => Ok((0, Vec::new())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_handshake_in_pieces() {
        let mut h = Handshake::default();
        let mut c0c1 = vec![VERSION];
        c0c1.extend((0..SIG_LEN).map(|i| i as u8));
        assert_eq!(
            h.feed(&c0c1[..100], 7).unwrap(),
            (0, vec![]),
            "waits for all of C1"
        );
        let (used, reply) = h.feed(&c0c1, 7).unwrap();
        assert_eq!(used, 1 + SIG_LEN);
        assert_eq!(reply.len(), 1 + 2 * SIG_LEN);
        assert_eq!(reply[0], VERSION);
        assert_eq!(
            &reply[1 + SIG_LEN + 8..],
            &c0c1[1 + 8..],
            "S2 echoes C1's random bytes"
        );
        assert_eq!(h, Handshake::AwaitC2);
        let c2 = vec![0u8; SIG_LEN];
        assert_eq!(h.feed(&c2, 7).unwrap().0, SIG_LEN);
        assert_eq!(h, Handshake::Done);
    }

    #[test]
    fn wrong_version_is_refused() {
        // An HTTP request on the RTMP port, for instance.
        assert_eq!(
            Handshake::default().feed(b"GET / HTTP/1.1\r\n", 0),
            Err(RtmpError::Version(b'G'))
        );
    }
}
