//! Sending many datagrams to many peers with one `sendmmsg(2)` call (Linux), instead of one
//! `sendto` per forwarded packet; elsewhere one send per datagram.
//!
//! With UDP generic segmentation offload (GSO, `UDP_SEGMENT`, Linux ≥ 4.18), consecutive
//! datagrams to the same peer that have the same length (the last may be shorter) leave as one
//! message: the kernel routes, builds and checksums them once and cuts them apart at the end
//! (or the NIC does). The SFU queues a viewer's datagrams next to each other for this. A socket
//! or device that refuses GSO turns it off for good and the batch is sent again without it.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::warn;

use crate::sfu::Transmit;

/// Datagrams handed to [`UdpSender::send_all`] at a time by the media task.
pub(crate) const BATCH: usize = 4096;
/// From this many datagrams a batch is sent from the fan-out threads in parallel.
pub(crate) const PARALLEL_MIN: usize = 512;
/// How long a fan-out thread waits for room in the socket's send buffer before it drops the
/// rest of its share (as a full network queue would).
#[cfg(target_os = "linux")]
const BLOCKED_SEND_WAIT_MS: libc::c_int = 20;
/// Messages per `sendmmsg` call.
const MAX_MESSAGES: usize = 64;
/// Segments per GSO message (the kernel's UDP_MAX_SEGMENTS is 64 on older kernels).
const MAX_SEGMENTS: usize = 64;
/// Bytes per GSO message: an IP packet's payload limit.
const MAX_GSO_BYTES: usize = 65_000;
/// Buffers (iovecs) per `sendmmsg` call, over all its messages.
const MAX_IOVS: usize = 1024;

/// Sends batches of datagrams from one socket; remembers whether GSO works on it.
#[derive(Debug)]
pub(crate) struct UdpSender {
    gso: AtomicBool,
}

impl UdpSender {
    /// Probes the socket for GSO support.
    pub(crate) fn new(socket: &UdpSocket) -> Self {
        Self {
            gso: AtomicBool::new(gso_supported(socket)),
        }
    }

    /// Without GSO: one datagram per message (for tests and comparisons).
    #[cfg(test)]
    pub(crate) fn without_gso() -> Self {
        Self {
            gso: AtomicBool::new(false),
        }
    }

    fn gso(&self) -> bool {
        self.gso.load(Relaxed)
    }

    fn gso_refused(&self, error: &io::Error) {
        if self.gso.swap(false, Relaxed) {
            warn!(error = %error, "UDP GSO refused; sending datagram by datagram");
        }
    }

    /// Send `batch` from `pool`'s threads, each a share that ends at a change of peer (so a
    /// viewer's run of media stays in order), on the same socket; the caller waits. Blocking
    /// sends: a thread whose socket buffer stays full for 20 ms drops the rest of its share.
    #[cfg(target_os = "linux")]
    pub(crate) fn send_parallel(
        &self,
        socket: &UdpSocket,
        batch: &[Transmit],
        pool: &crate::sfu::FanoutPool,
    ) {
        use rayon::prelude::*;
        use std::os::fd::AsRawFd;
        let fd = socket.as_raw_fd();
        let shares = split_at_peers(batch, pool.threads());
        pool.install(|| {
            shares
                .into_par_iter()
                .for_each(|share| self.send_blocking(fd, share))
        });
    }

    #[cfg(target_os = "linux")]
    fn send_blocking(&self, fd: std::os::fd::RawFd, batch: &[Transmit]) {
        let mut sent = 0;
        while sent < batch.len() {
            match send_some(fd, &batch[sent..], self.gso()) {
                Ok(n) => sent += n.max(1),
                Err(Failed { error, .. }) if error.kind() == io::ErrorKind::WouldBlock => {
                    let mut pfd = libc::pollfd {
                        fd,
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    if unsafe { libc::poll(&mut pfd, 1, BLOCKED_SEND_WAIT_MS) } <= 0 {
                        tracing::debug!(dropped = batch.len() - sent, "udp send buffer full");
                        return;
                    }
                }
                Err(failed) => sent += self.failed(fd, &batch[sent..], failed),
            }
        }
    }

    /// Send every datagram of `batch`, waiting for the socket to become writable when its
    /// buffer is full. A datagram the kernel refuses (e.g. unreachable address) is dropped, as
    /// UDP would.
    pub(crate) async fn send_all(&self, socket: &UdpSocket, batch: &[Transmit]) {
        let mut sent = 0;
        while sent < batch.len() {
            let gso = self.gso();
            // tokio's `try_io` must see WouldBlock as an io::Error to clear the readiness.
            let attempt = socket.try_io(Interest::WRITABLE, || {
                match send_some(raw(socket), &batch[sent..], gso) {
                    Err(f) if f.error.kind() == io::ErrorKind::WouldBlock => Err(f.error),
                    other => Ok(other),
                }
            });
            match attempt {
                Ok(Ok(n)) => sent += n.max(1),
                Err(_) => {
                    if socket.writable().await.is_err() {
                        return;
                    }
                }
                Ok(Err(failed)) => sent += self.failed(raw(socket), &batch[sent..], failed),
            }
        }
    }

    /// After a send of `rest` failed (not for want of buffer space): how many of its datagrams
    /// are done with. GSO refused by the socket or device: none, it is off and they go again.
    /// One run refused (e.g. longer than that peer's path MTU): that run goes datagram by
    /// datagram, GSO stays on. Anything else: the first message's datagrams are dropped, as UDP
    /// would.
    fn failed(&self, fd: Fd<'_>, rest: &[Transmit], Failed { error, group }: Failed) -> usize {
        if group > 1 && refuses_gso(&error) {
            self.gso_refused(&error);
            0
        } else if group > 1 && is_einval(&error) {
            send_plain(fd, &rest[..group]);
            group
        } else {
            tracing::debug!(to = %rest[0].to, error = %error, "udp send failed");
            group.max(1)
        }
    }
}

/// A send that failed, and how many datagrams its first message carried.
#[derive(Debug)]
struct Failed {
    error: io::Error,
    group: usize,
}

#[cfg(not(target_os = "linux"))]
impl From<io::Error> for Failed {
    fn from(error: io::Error) -> Self {
        Self { error, group: 1 }
    }
}

/// The socket or device cannot do GSO at all.
fn refuses_gso(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EOPNOTSUPP | libc::ENOPROTOOPT)
    )
}

fn is_einval(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

/// `run` one datagram per message, without waiting: what the kernel refuses or has no room for
/// is dropped, as UDP would.
#[cfg(target_os = "linux")]
fn send_plain(fd: std::os::fd::RawFd, run: &[Transmit]) {
    let mut sent = 0;
    while sent < run.len() {
        match send_some(fd, &run[sent..], false) {
            Ok(n) => sent += n.max(1),
            Err(Failed { error, .. }) => {
                tracing::debug!(to = %run[sent].to, error = %error, "udp send failed");
                sent += 1;
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn send_plain(socket: &UdpSocket, run: &[Transmit]) {
    for t in run {
        let _ = socket.try_send_to(&t.data, t.to);
    }
}

/// `batch` cut into about `parts` shares, each ending where the next datagram goes to another
/// peer.
pub(crate) fn split_at_peers(batch: &[Transmit], parts: usize) -> Vec<&[Transmit]> {
    let target = batch.len().div_ceil(parts.max(1)).max(1);
    let mut shares = Vec::with_capacity(parts + 1);
    let mut rest = batch;
    while !rest.is_empty() {
        let mut end = target.min(rest.len());
        while end < rest.len() && rest[end].to == rest[end - 1].to {
            end += 1;
        }
        let (share, tail) = rest.split_at(end);
        shares.push(share);
        rest = tail;
    }
    shares
}

/// How many datagrams from the start of `batch` can leave as one GSO message.
pub(crate) fn gso_group(batch: &[Transmit], max_iovs: usize) -> usize {
    let Some(first) = batch.first() else {
        return 0;
    };
    let size = first.data.len();
    let mut total = size;
    let mut n = 1;
    let limit = MAX_SEGMENTS.min(max_iovs);
    while n < batch.len() && n < limit {
        let next = &batch[n];
        let len = next.data.len();
        if next.to != first.to || len > size || len == 0 || total + len > MAX_GSO_BYTES {
            break;
        }
        total += len;
        n += 1;
        if len < size {
            break; // only the last segment may be shorter
        }
    }
    n
}

#[cfg(target_os = "linux")]
fn gso_supported(socket: &UdpSocket) -> bool {
    use std::os::fd::AsRawFd;
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value/len are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            &mut value as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    rc == 0
}

#[cfg(not(target_os = "linux"))]
fn gso_supported(_socket: &UdpSocket) -> bool {
    false
}

/// Control message space for one `UDP_SEGMENT` (a u16), 8-byte aligned.
#[cfg(target_os = "linux")]
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct SegmentCmsg([u8; 32]);

/// What a send goes through: the raw socket on Linux (sendmmsg), the tokio socket elsewhere.
#[cfg(target_os = "linux")]
type Fd<'a> = std::os::fd::RawFd;
#[cfg(not(target_os = "linux"))]
type Fd<'a> = &'a UdpSocket;

#[cfg(target_os = "linux")]
fn raw(socket: &UdpSocket) -> Fd<'_> {
    use std::os::fd::AsRawFd;
    socket.as_raw_fd()
}

#[cfg(not(target_os = "linux"))]
fn raw(socket: &UdpSocket) -> Fd<'_> {
    socket
}

#[cfg(target_os = "linux")]
fn send_some(fd: std::os::fd::RawFd, batch: &[Transmit], gso: bool) -> Result<usize, Failed> {
    use std::mem::MaybeUninit;

    // SAFETY: zeroed sockaddr_storage/iovec/mmsghdr/cmsg space are valid "empty" values.
    let mut addrs: [libc::sockaddr_storage; MAX_MESSAGES] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; MAX_MESSAGES] = unsafe { std::mem::zeroed() };
    let mut cmsgs = [SegmentCmsg([0; 32]); MAX_MESSAGES];
    let mut iovs: [MaybeUninit<libc::iovec>; MAX_IOVS] = [MaybeUninit::uninit(); MAX_IOVS];
    let mut groups = [0usize; MAX_MESSAGES];
    let mut used_iovs = 0;
    let mut next = 0;
    let mut n = 0;
    while n < MAX_MESSAGES && next < batch.len() && used_iovs < MAX_IOVS {
        let group = if gso {
            gso_group(&batch[next..], MAX_IOVS - used_iovs)
        } else {
            1
        };
        let first = &batch[next];
        let len = write_sockaddr(&first.to, &mut addrs[n]);
        for (k, t) in batch[next..next + group].iter().enumerate() {
            iovs[used_iovs + k].write(libc::iovec {
                iov_base: t.data.as_ptr() as *mut libc::c_void,
                iov_len: t.data.len(),
            });
        }
        let hdr = &mut msgs[n].msg_hdr;
        hdr.msg_name = &mut addrs[n] as *mut _ as *mut libc::c_void;
        hdr.msg_namelen = len;
        // SAFETY: used_iovs + group <= MAX_IOVS (gso_group is bounded by the iovecs left).
        hdr.msg_iov = unsafe { iovs.as_mut_ptr().add(used_iovs) }.cast::<libc::iovec>();
        hdr.msg_iovlen = group as _;
        if group > 1 {
            hdr.msg_control = cmsgs[n].0.as_mut_ptr() as *mut libc::c_void;
            // SAFETY: CMSG_SPACE is a pure size computation.
            hdr.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as _;
            // SAFETY: msg_control points at 32 aligned bytes, enough for one cmsghdr + u16.
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(hdr);
                (*cmsg).cmsg_level = libc::SOL_UDP;
                (*cmsg).cmsg_type = libc::UDP_SEGMENT;
                (*cmsg).cmsg_len = libc::CMSG_LEN(2) as _;
                std::ptr::write_unaligned(
                    libc::CMSG_DATA(cmsg) as *mut u16,
                    first.data.len() as u16,
                );
            }
        }
        groups[n] = group;
        used_iovs += group;
        next += group;
        n += 1;
    }
    // SAFETY: every pointer in msgs[..n] points into addrs/iovs/cmsgs/batch, which outlive the
    // call; the kernel only reads them.
    let rc = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, 0) };
    if rc < 0 {
        Err(Failed {
            error: io::Error::last_os_error(),
            group: groups[0],
        })
    } else {
        Ok(groups[..rc as usize].iter().sum())
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
fn send_some(socket: &UdpSocket, batch: &[Transmit], _gso: bool) -> Result<usize, Failed> {
    Ok(socket.try_send_to(&batch[0].data, batch[0].to).map(|_| 1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use std::time::Duration;

    fn t(to: SocketAddr, len: usize, fill: u8) -> Transmit {
        Transmit {
            to,
            data: BytesMut::from(&vec![fill; len][..]),
        }
    }

    #[test]
    fn groups_are_runs_to_one_peer_of_one_size_with_a_shorter_last() {
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:1001".parse().unwrap();
        let batch = vec![
            t(a, 1200, 0),
            t(a, 1200, 1),
            t(a, 700, 2), // shorter: ends the group
            t(a, 1200, 3),
            t(a, 1300, 4), // longer: starts a new group
            t(b, 1300, 5), // another peer
            t(b, 1300, 6),
        ];
        assert_eq!(gso_group(&batch, MAX_IOVS), 3);
        assert_eq!(gso_group(&batch[3..], MAX_IOVS), 1);
        assert_eq!(gso_group(&batch[4..], MAX_IOVS), 1);
        assert_eq!(gso_group(&batch[5..], MAX_IOVS), 2);
        assert_eq!(gso_group(&batch[5..], 1), 1, "bounded by the iovecs left");
        assert_eq!(gso_group(&[], MAX_IOVS), 0);
        let long: Vec<_> = (0..200).map(|i| t(a, 1000, i as u8)).collect();
        assert_eq!(
            gso_group(&long, MAX_IOVS),
            64,
            "at most 64 segments, 65,000 bytes"
        );
        let big: Vec<_> = (0..60).map(|i| t(a, 1400, i as u8)).collect();
        assert_eq!(gso_group(&big, MAX_IOVS), 46);
    }

    #[test]
    fn shares_end_where_the_peer_changes() {
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:1001".parse().unwrap();
        let c: SocketAddr = "127.0.0.1:1002".parse().unwrap();
        let batch: Vec<_> = [(a, 5), (b, 2), (c, 3)]
            .iter()
            .flat_map(|&(to, n)| (0..n).map(move |i| t(to, 10, i)))
            .collect();
        let shares = split_at_peers(&batch, 2);
        let lens: Vec<_> = shares.iter().map(|s| s.len()).collect();
        assert_eq!(lens, vec![5, 5], "a's five, then b's and c's");
        assert_eq!(
            split_at_peers(&batch, 10).len(),
            3,
            "never splits a peer's run"
        );
        assert_eq!(split_at_peers(&batch, 1).len(), 1);
        assert!(split_at_peers(&[], 4).is_empty());
    }

    /// The fan-out threads send a big batch on the shared socket: everything arrives, and each
    /// peer's datagrams in order.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn parallel_sends_keep_each_peers_order() {
        let pool = crate::sfu::FanoutPool::new(2, 1).unwrap();
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let peers = [
            UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        ];
        let mut batch = Vec::new();
        for (p, peer) in peers.iter().enumerate() {
            for i in 0..200usize {
                let len = if i % 9 == 8 { 50 } else { 100 + p };
                batch.push(t(peer.local_addr().unwrap(), len, i as u8));
            }
        }
        let sender = UdpSender::new(&server);
        sender.send_parallel(&server, &batch, &pool);
        let mut buf = [0u8; 2048];
        for (p, peer) in peers.iter().enumerate() {
            for i in 0..200usize {
                let (n, _) = tokio::time::timeout(Duration::from_secs(5), peer.recv_from(&mut buf))
                    .await
                    .expect("datagram lost")
                    .unwrap();
                assert_eq!(n, if i % 9 == 8 { 50 } else { 100 + p });
                assert!(
                    buf[..n].iter().all(|&x| x == i as u8),
                    "peer {p} datagram {i}"
                );
            }
        }
    }

    /// Every datagram arrives whole, in order, from the sender's address — with and without GSO.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_batch_reaches_several_peers_in_order() {
        for gso in [true, false] {
            let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let b = UdpSocket::bind("[::1]:0").await.ok();
            let (a_addr, c_addr) = (a.local_addr().unwrap(), c.local_addr().unwrap());
            let mut batch = Vec::new();
            let mut expect_a = Vec::new();
            let mut expect_c = Vec::new();
            for i in 0..300usize {
                // Runs of 1, 2, ... datagrams per peer, mostly of one size, some shorter.
                let to_a = (i / 7) % 2 == 0;
                // Small enough that the receivers' buffers hold everything.
                let len = if i % 5 == 4 { 20 + i % 100 } else { 200 };
                let d = t(if to_a { a_addr } else { c_addr }, len, i as u8);
                if to_a {
                    expect_a.push((len, i as u8));
                } else {
                    expect_c.push((len, i as u8));
                }
                batch.push(d);
            }
            if let Some(b) = &b {
                // An IPv4 socket cannot reach [::1]: that datagram fails alone and the rest go on.
                batch.insert(10, t(b.local_addr().unwrap(), 1, b'x'));
            }
            let sender = if gso {
                UdpSender::new(&server)
            } else {
                UdpSender::without_gso()
            };
            assert_eq!(sender.gso(), gso, "loopback supports GSO on Linux");
            for chunk in batch.chunks(BATCH) {
                sender.send_all(&server, chunk).await;
            }
            assert_eq!(sender.gso(), gso, "GSO stayed on");
            let mut buf = [0u8; 2048];
            for (sock, expect) in [(&a, &expect_a), (&c, &expect_c)] {
                for &(len, fill) in expect {
                    let (n, from) =
                        tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
                            .await
                            .expect("datagram lost")
                            .unwrap();
                    assert_eq!(from, server.local_addr().unwrap());
                    assert_eq!(n, len, "gso={gso}");
                    assert!(buf[..n].iter().all(|&x| x == fill), "gso={gso}");
                }
            }
        }
    }
}
