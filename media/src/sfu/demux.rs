//! Which peer connection a datagram on the shared UDP port belongs to.
//!
//! A datagram from an address we know goes to that address's session. From an unknown address
//! only a STUN Binding request is accepted: its USERNAME starts with the ufrag we gave that
//! session in the answer (RFC 8445 §7.2.2), and the address is remembered for DTLS and SRTP
//! afterwards. ICE message integrity is still checked by the session itself, so a forged
//! request only adds an address that nothing will accept.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::SessionId;
use crate::stun;

/// Remote addresses one session may collect (candidate pairs tried by one client).
const MAX_ADDRS_PER_SESSION: usize = 8;

#[derive(Debug, Default)]
pub(crate) struct Demux {
    by_ufrag: HashMap<String, SessionId>,
    by_addr: HashMap<SocketAddr, SessionId>,
    addrs: HashMap<SessionId, Vec<SocketAddr>>,
}

impl Demux {
    pub fn insert_session(&mut self, ufrag: String, id: SessionId) {
        self.by_ufrag.insert(ufrag, id);
        self.addrs.insert(id, Vec::new());
    }

    pub fn remove_session(&mut self, ufrag: &str, id: SessionId) {
        self.by_ufrag.remove(ufrag);
        for addr in self.addrs.remove(&id).unwrap_or_default() {
            if self.by_addr.get(&addr) == Some(&id) {
                self.by_addr.remove(&addr);
            }
        }
    }

    /// The session a datagram from `from` is for, if any.
    pub fn route(&mut self, from: SocketAddr, datagram: &[u8]) -> Option<SessionId> {
        if stun::looks_like_stun(datagram) {
            if let Some(id) = stun::local_ufrag(datagram)
                .and_then(|u| self.by_ufrag.get(u))
                .copied()
            {
                if self.by_addr.get(&from) != Some(&id) {
                    let addrs = self.addrs.entry(id).or_default();
                    if addrs.len() >= MAX_ADDRS_PER_SESSION {
                        return Some(id);
                    }
                    addrs.push(from);
                    self.by_addr.insert(from, id);
                }
                return Some(id);
            }
        }
        self.by_addr.get(&from).copied()
    }

    #[cfg(test)]
    pub fn sessions(&self) -> usize {
        self.by_ufrag.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun_request(username: &str) -> Vec<u8> {
        let mut m = vec![0x00, 0x01];
        let attr_len = username.len();
        let padded = (attr_len + 3) & !3;
        m.extend_from_slice(&((4 + padded) as u16).to_be_bytes());
        m.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        m.extend_from_slice(&[1; 12]);
        m.extend_from_slice(&[0x00, 0x06]);
        m.extend_from_slice(&(attr_len as u16).to_be_bytes());
        m.extend_from_slice(username.as_bytes());
        m.resize(20 + 4 + padded, 0);
        m
    }

    #[test]
    fn stun_binds_an_address_then_dtls_follows_it() {
        let mut d = Demux::default();
        let a = SessionId(1);
        let b = SessionId(2);
        d.insert_session("ufragA".into(), a);
        d.insert_session("ufragB".into(), b);
        let x: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let y: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        let dtls = [22u8, 0xfe, 0xfd, 0, 0];
        assert_eq!(d.route(x, &dtls), None, "unknown address, not STUN");
        assert_eq!(d.route(x, &stun_request("ufragA:c1")), Some(a));
        assert_eq!(d.route(y, &stun_request("ufragB:c2")), Some(b));
        assert_eq!(d.route(x, &dtls), Some(a));
        assert_eq!(d.route(y, &dtls), Some(b));
        assert_eq!(
            d.route(x, &stun_request("nobody:c1")),
            Some(a),
            "unknown ufrag keeps the address's session"
        );
        d.remove_session("ufragA", a);
        assert_eq!(d.route(x, &dtls), None);
        assert_eq!(d.route(y, &dtls), Some(b));
        assert_eq!(d.sessions(), 1);
    }

    #[test]
    fn address_count_per_session_is_bounded() {
        let mut d = Demux::default();
        let a = SessionId(7);
        d.insert_session("u".into(), a);
        for port in 0..100u16 {
            let from = SocketAddr::from(([127, 0, 0, 1], 6000 + port));
            assert_eq!(d.route(from, &stun_request("u:x")), Some(a));
        }
        assert_eq!(d.by_addr.len(), MAX_ADDRS_PER_SESSION);
    }
}
