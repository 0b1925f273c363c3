//! The part of STUN (RFC 8489) the UDP demultiplexer reads: is this datagram a Binding request,
//! and what is its USERNAME. Everything else about STUN is webrtc-rs's job.
//!
//! Input is untrusted network bytes; `fuzz/fuzz_targets/stun_username.rs` fuzzes [`username`].

/// RFC 8489 §5: the magic cookie in every STUN header.
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const HEADER_LEN: usize = 20;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const ATTR_USERNAME: u16 = 0x0006;
const ATTR_USE_CANDIDATE: u16 = 0x0025;
/// RFC 8489 §14.3: USERNAME is at most 513 bytes.
const MAX_USERNAME_LEN: usize = 513;

/// RFC 7983 §7: the first byte of a STUN message is 0..=3.
pub fn looks_like_stun(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_LEN && datagram[0] < 4 && datagram[4..8] == MAGIC_COOKIE
}

fn message_type(datagram: &[u8]) -> Option<u16> {
    looks_like_stun(datagram).then(|| u16::from_be_bytes([datagram[0], datagram[1]]))
}

/// The value of the first attribute of type `wanted`, walking the TLVs within the declared
/// message length.
fn attribute(datagram: &[u8], wanted: u16) -> Option<&[u8]> {
    let body_len = u16::from_be_bytes([*datagram.get(2)?, *datagram.get(3)?]) as usize;
    let mut rest = datagram.get(HEADER_LEN..HEADER_LEN.checked_add(body_len)?)?;
    while rest.len() >= 4 {
        let attr_type = u16::from_be_bytes([rest[0], rest[1]]);
        let attr_len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        let value = rest.get(4..4 + attr_len)?;
        if attr_type == wanted {
            return Some(value);
        }
        // Attributes are padded to a multiple of four bytes (RFC 8489 §14).
        let padded = (attr_len + 3) & !3;
        rest = rest.get(4 + padded..)?;
    }
    None
}

/// The USERNAME attribute of a STUN Binding request, or `None` for anything else.
pub fn username(datagram: &[u8]) -> Option<&str> {
    if message_type(datagram)? != BINDING_REQUEST {
        return None;
    }
    let value = attribute(datagram, ATTR_USERNAME)?;
    if value.len() > MAX_USERNAME_LEN {
        return None;
    }
    std::str::from_utf8(value).ok()
}

/// A Binding request carrying USE-CANDIDATE (RFC 8445 §7.1.2): the client nominates this pair.
pub fn is_nominating_request(datagram: &[u8]) -> bool {
    message_type(datagram) == Some(BINDING_REQUEST)
        && attribute(datagram, ATTR_USE_CANDIDATE).is_some()
}

/// A Binding success response (an answer to a check we sent).
pub fn is_binding_success(datagram: &[u8]) -> bool {
    message_type(datagram) == Some(BINDING_SUCCESS)
}

/// ICE (RFC 8445 §7.2.2): the USERNAME of a check sent to us is `<our ufrag>:<their ufrag>`.
pub fn local_ufrag(datagram: &[u8]) -> Option<&str> {
    username(datagram)?.split(':').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(username: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&0x0024u16.to_be_bytes()); // PRIORITY first, as browsers do
        attrs.extend_from_slice(&4u16.to_be_bytes());
        attrs.extend_from_slice(&[0, 0, 0, 1]);
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut msg = Vec::new();
        msg.extend_from_slice(&BINDING_REQUEST.to_be_bytes());
        msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        msg.extend_from_slice(&MAGIC_COOKIE);
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&attrs);
        msg
    }

    #[test]
    fn reads_username_after_other_attributes() {
        let msg = binding_request("srvufrag:cli1");
        assert!(looks_like_stun(&msg));
        assert_eq!(username(&msg), Some("srvufrag:cli1"));
        assert_eq!(local_ufrag(&msg), Some("srvufrag"));
    }

    #[test]
    fn rejects_non_requests_and_truncations() {
        let mut msg = binding_request("a:b");
        for cut in 0..msg.len() {
            // Any truncation is either not STUN or has a body that runs past the end.
            assert_eq!(username(&msg[..cut]), None, "cut at {cut}");
        }
        msg[0] = 0x01; // 0x0101: Binding success response
        assert_eq!(username(&msg), None);
        assert!(!looks_like_stun(&[0x80, 0, 0, 0]));
        assert_eq!(username(&[0x16; 40]), None); // DTLS record
    }

    #[test]
    fn nomination_and_success() {
        let mut msg = binding_request("a:b");
        assert!(!is_nominating_request(&msg));
        // Append USE-CANDIDATE (no value) and fix the length.
        msg.extend_from_slice(&ATTR_USE_CANDIDATE.to_be_bytes());
        msg.extend_from_slice(&0u16.to_be_bytes());
        let len = (msg.len() - HEADER_LEN) as u16;
        msg[2..4].copy_from_slice(&len.to_be_bytes());
        assert!(is_nominating_request(&msg));
        assert_eq!(username(&msg), Some("a:b"));
        assert!(!is_binding_success(&msg));
        msg[0] = 0x01;
        assert!(is_binding_success(&msg));
        assert!(!is_nominating_request(&msg));
    }

    #[test]
    fn oversized_attribute_length_is_not_trusted() {
        let mut msg = binding_request("a:b");
        // USERNAME length field claims 0xffff bytes.
        let pos = 20 + 8 + 2;
        msg[pos] = 0xff;
        msg[pos + 1] = 0xff;
        assert_eq!(username(&msg), None);
    }
}
