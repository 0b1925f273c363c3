//! Receiving datagrams together with the address they were sent to, so that a socket bound to
//! a wildcard (`0.0.0.0`, `[::]`) knows which of the machine's addresses — which host
//! candidate — a peer reached (`IP_PKTINFO` / `IPV6_RECVPKTINFO`, Linux). ICE needs it: a
//! check is only valid on a local candidate, and `0.0.0.0` is never one.
//!
//! Addresses come out canonical: an IPv4 peer reaching a dual-stack `[::]` socket is reported
//! as `V4`, not as `::ffff:a.b.c.d`, so it matches the IPv4 candidates and STUN answers carry
//! its real family. (Linux sends to a `V4` address from a dual-stack socket as is.)

use std::io;
use std::net::{IpAddr, SocketAddr};

use bytes::{BufMut, BytesMut};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// One received datagram's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub len: usize,
    pub from: SocketAddr,
    /// Where it was sent to, when the kernel said (`None` elsewhere than Linux).
    pub to: Option<IpAddr>,
}

/// Ask the kernel to report each datagram's destination address.
pub fn enable_destination(socket: &UdpSocket) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let fd = socket.as_raw_fd();
        let on: libc::c_int = 1;
        let set = |level, name| {
            // SAFETY: a valid fd and a c_int option value of the right size.
            let rc = unsafe {
                libc::setsockopt(
                    fd,
                    level,
                    name,
                    &on as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        match socket.local_addr()? {
            SocketAddr::V4(_) => set(libc::IPPROTO_IP, libc::IP_PKTINFO)?,
            // Covers IPv4 traffic on a dual-stack socket too (as v4-mapped IPV6_PKTINFO).
            SocketAddr::V6(_) => set(libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)?,
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
    Ok(())
}

/// Wait for one datagram and append it to `buf` (which needs spare capacity for the largest
/// datagram expected; a longer one is truncated, as `recv` does).
pub async fn recv(socket: &UdpSocket, buf: &mut BytesMut) -> io::Result<Received> {
    loop {
        socket.readable().await?;
        match try_recv(socket, buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// One datagram if one is queued, else `WouldBlock`.
pub fn try_recv(socket: &UdpSocket, buf: &mut BytesMut) -> io::Result<Received> {
    #[cfg(target_os = "linux")]
    {
        socket.try_io(Interest::READABLE, || recvmsg(socket, buf))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let (len, from) = socket.try_recv_buf_from(buf)?;
        let _ = Interest::READABLE;
        Ok(Received {
            len,
            from: canonical(from),
            to: None,
        })
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; every other address as it is.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    canonical(SocketAddr::new(ip, 0)).ip()
}

#[cfg(target_os = "linux")]
fn recvmsg(socket: &UdpSocket, buf: &mut BytesMut) -> io::Result<Received> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::AsRawFd;

    /// Room for one `in6_pktinfo` (the larger of the two) control message.
    const CMSG_SPACE: usize = 64;
    #[repr(C, align(8))]
    struct Control([u8; CMSG_SPACE]);

    let spare = buf.chunk_mut();
    let mut iov = libc::iovec {
        iov_base: spare.as_mut_ptr() as *mut libc::c_void,
        iov_len: spare.len(),
    };
    // SAFETY: all-zero sockaddr_storage / msghdr are valid empty values.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut control = Control([0; CMSG_SPACE]);
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = &mut addr as *mut _ as *mut libc::c_void;
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = CMSG_SPACE as _;
    // SAFETY: msg points at live buffers of the lengths it states.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = n as usize;
    // SAFETY: the kernel wrote `len` bytes into the spare capacity.
    unsafe { buf.advance_mut(len) };

    let from = match i32::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for AF_INET.
            let a = unsafe { &*(&addr as *const _ as *const libc::sockaddr_in) };
            SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 for AF_INET6.
            let a = unsafe { &*(&addr as *const _ as *const libc::sockaddr_in6) };
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            ))
        }
        _ => return Err(io::Error::other("datagram from an unknown address family")),
    };

    let mut to = None;
    // SAFETY: walking the control buffer the kernel filled, with the libc CMSG macros.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_PKTINFO {
                let info = &*(libc::CMSG_DATA(cmsg) as *const libc::in_pktinfo);
                to = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    info.ipi_addr.s_addr,
                ))));
            } else if c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_PKTINFO {
                let info = &*(libc::CMSG_DATA(cmsg) as *const libc::in6_pktinfo);
                to = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(Received {
        len,
        from: canonical(from),
        to: to.map(canonical_ip),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exchange(bind: &str, dest: &str) -> Received {
        let server = UdpSocket::bind(bind).await.unwrap();
        enable_destination(&server).unwrap();
        let port = server.local_addr().unwrap().port();
        let client = UdpSocket::bind(SocketAddr::new(dest.parse().unwrap(), 0))
            .await
            .unwrap();
        client
            .send_to(b"hello", SocketAddr::new(dest.parse().unwrap(), port))
            .await
            .unwrap();
        let mut buf = BytesMut::with_capacity(2048);
        let got = recv(&server, &mut buf).await.unwrap();
        assert_eq!(&buf[..], b"hello");
        assert_eq!(got.from, client.local_addr().unwrap());
        got
    }

    #[tokio::test]
    async fn wildcard_v4_socket_reports_the_destination() {
        let got = exchange("0.0.0.0:0", "127.0.0.1").await;
        #[cfg(target_os = "linux")]
        assert_eq!(got.to, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(got.len, 5);
    }

    #[tokio::test]
    async fn dual_stack_socket_reports_ipv4_peers_as_ipv4() {
        // A loopback-only namespace may have IPv6 off; the v4 path through [::] is the point.
        let Ok(server) = UdpSocket::bind("[::]:0").await else {
            return;
        };
        drop(server);
        let got = exchange("[::]:0", "127.0.0.1").await;
        assert!(got.from.is_ipv4(), "{got:?}");
        #[cfg(target_os = "linux")]
        assert_eq!(got.to, Some("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn mapped_addresses_become_ipv4() {
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:5".parse().unwrap();
        assert_eq!(
            canonical(mapped),
            "10.1.2.3:5".parse::<SocketAddr>().unwrap()
        );
        let v6: SocketAddr = "[::1]:5".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }
}
