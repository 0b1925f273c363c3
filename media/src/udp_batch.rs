//! Sending many datagrams to many peers with one `sendmmsg(2)` call (Linux), instead of one
//! `sendto` per forwarded packet. Elsewhere it falls back to one send per datagram.

use std::io;
use std::net::SocketAddr;

use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::sfu::Transmit;

/// Datagrams per `sendmmsg` call (the kernel caps a call at UIO_MAXIOV = 1024).
pub(crate) const BATCH: usize = 64;

/// Send every datagram of `batch`, waiting for the socket to become writable when its buffer is
/// full. A datagram the kernel refuses (e.g. unreachable address) is dropped, as UDP would.
pub(crate) async fn send_all(socket: &UdpSocket, batch: &[Transmit]) {
    let mut sent = 0;
    while sent < batch.len() {
        match socket.try_io(Interest::WRITABLE, || send_some(socket, &batch[sent..])) {
            Ok(n) => sent += n.max(1),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if socket.writable().await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(to = %batch[sent].to, error = %e, "udp send failed");
                sent += 1;
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn send_some(socket: &UdpSocket, batch: &[Transmit]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;

    let n = batch.len().min(BATCH);
    // SAFETY: zeroed sockaddr_storage/iovec/mmsghdr are valid "empty" values of these C structs.
    let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        let t = &batch[i];
        let len = write_sockaddr(&t.to, &mut addrs[i]);
        iovs[i] = libc::iovec {
            iov_base: t.data.as_ptr() as *mut libc::c_void,
            iov_len: t.data.len(),
        };
        msgs[i].msg_hdr.msg_name = &mut addrs[i] as *mut _ as *mut libc::c_void;
        msgs[i].msg_hdr.msg_namelen = len;
        msgs[i].msg_hdr.msg_iov = &mut iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: every pointer in msgs[..n] points into addrs/iovs/batch, which outlive the call;
    // the kernel only reads them.
    let rc = unsafe { libc::sendmmsg(socket.as_raw_fd(), msgs.as_mut_ptr(), n as libc::c_uint, 0) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

#[cfg(target_os = "linux")]
fn write_sockaddr(addr: &SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write(out as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write(out as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn send_some(socket: &UdpSocket, batch: &[Transmit]) -> io::Result<usize> {
    socket.try_send_to(&batch[0].data, batch[0].to).map(|_| 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[tokio::test]
    async fn a_batch_reaches_several_peers_in_order() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("[::1]:0").await.ok();
        let mut batch = Vec::new();
        for i in 0..150u8 {
            batch.push(Transmit {
                to: a.local_addr().unwrap(),
                data: BytesMut::from(&[i, i][..]),
            });
        }
        if let Some(b) = &b {
            // An IPv4 socket cannot reach [::1]: that datagram fails alone and the rest go on.
            batch.insert(
                10,
                Transmit {
                    to: b.local_addr().unwrap(),
                    data: BytesMut::from(&b"x"[..]),
                },
            );
        }
        send_all(&server, &batch).await;
        let mut buf = [0u8; 8];
        for i in 0..150u8 {
            let (n, from) = a.recv_from(&mut buf).await.unwrap();
            assert_eq!(from, server.local_addr().unwrap());
            assert_eq!(&buf[..n], &[i, i]);
        }
    }
}
