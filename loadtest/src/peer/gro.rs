//! UDP generic receive offload (`UDP_GRO`, Linux ≥ 5.0) for the harness's peer sockets.
//!
//! A server that sends with GSO (Glint does) hands the kernel runs of equal-sized datagrams to
//! one peer as one buffer. With GRO on, the receiving socket takes such a run in one `recvmsg`
//! and a control message tells where to cut; without it the kernel cuts first and queues each
//! datagram, with a wake-up and a system call apiece. Real viewers (browsers) get the same
//! datagrams either way; this only makes the harness cheaper, so that more of the machine is
//! left to the server it measures. Where GRO is unavailable every read is one datagram.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

/// Room for the largest coalesced read (64 KiB, the kernel's limit).
pub(crate) const RECV_BUFFER_BYTES: usize = 65_536;

/// One read: `len` bytes from `source`, made of datagrams of `segment` bytes each (the last may
/// be shorter).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received {
    pub len: usize,
    pub source: SocketAddr,
    pub segment: usize,
}

impl Received {
    /// The datagrams of this read within `buf`.
    pub fn datagrams<'a>(&self, buf: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
        buf[..self.len].chunks(self.segment.max(1))
    }
}

/// Turn GRO on; false if the kernel does not have it.
#[cfg(target_os = "linux")]
pub(crate) fn enable(socket: &UdpSocket) -> bool {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: `on` is a valid c_int for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_GRO,
            &on as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn enable(_socket: &UdpSocket) -> bool {
    false
}

/// One non-blocking read (`WouldBlock` when nothing is queued), for `UdpSocket::try_io`.
#[cfg(target_os = "linux")]
pub(crate) fn recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    use std::os::fd::AsRawFd;

    // SAFETY: zeroed sockaddr_storage/msghdr are valid empty values.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    #[repr(C, align(8))]
    struct Control([u8; 64]);
    let mut control = Control([0; 64]);
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = &mut addr as *mut _ as *mut libc::c_void;
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = control.0.len() as _;
    // SAFETY: every pointer in msg points at live locals or `buf`, sized as declared.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = n as usize;
    let mut segment = len;
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of cmsghdrs.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == libc::UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::c_int);
                if size > 0 {
                    segment = size as usize;
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let source = sockaddr(&addr)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unknown address family"))?;
    Ok(Received {
        len,
        source,
        segment,
    })
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    let (len, source) = socket.try_recv_from(buf)?;
    Ok(Received {
        len,
        source,
        segment: len,
    })
}

#[cfg(target_os = "linux")]
fn sockaddr(addr: &libc::sockaddr_storage) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    match i32::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a = unsafe { &*(addr as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a = unsafe { &*(addr as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::Interest;

    /// A run sent as one GSO buffer arrives as one read that splits back into the datagrams.
    #[tokio::test]
    async fn coalesced_reads_split_into_the_datagrams_sent() {
        use std::os::fd::AsRawFd;
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let gro = enable(&rx);
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // Five datagrams of 1000 bytes and one of 300, as one GSO send.
        let mut data = Vec::new();
        for i in 0..6u8 {
            data.extend(std::iter::repeat_n(i, if i == 5 { 300 } else { 1000 }));
        }
        let seg: u16 = 1000;
        // SAFETY: plain setsockopt with a valid u16-sized int.
        let gso_ok = unsafe {
            let v: libc::c_int = seg.into();
            libc::setsockopt(
                tx.as_raw_fd(),
                libc::SOL_UDP,
                libc::UDP_SEGMENT,
                &v as *const _ as *const libc::c_void,
                4,
            ) == 0
        };
        if gso_ok {
            tx.send_to(&data, rx.local_addr().unwrap()).unwrap();
        } else {
            for chunk in data.chunks(1000) {
                tx.send_to(chunk, rx.local_addr().unwrap()).unwrap();
            }
        }
        let mut buf = vec![0u8; RECV_BUFFER_BYTES];
        let mut got: Vec<Vec<u8>> = Vec::new();
        while got.len() < 6 {
            rx.readable().await.unwrap();
            let r = match rx.try_io(Interest::READABLE, || recv(&rx, &mut buf)) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("{e}"),
            };
            assert_eq!(r.source, tx.local_addr().unwrap());
            got.extend(r.datagrams(&buf).map(<[u8]>::to_vec));
        }
        assert_eq!(got.len(), 6, "gro={gro} gso={gso_ok}");
        for (i, d) in got.iter().enumerate() {
            assert_eq!(d.len(), if i == 5 { 300 } else { 1000 });
            assert!(d.iter().all(|&b| b == i as u8));
        }
    }
}
