//! The media task: one tokio task that owns the shared UDP socket and the [`Sfu`], and the
//! [`MediaHandle`] through which signaling reaches it.
//!
//! Requests travel over a bounded channel and carry their reply channel (an actor, as in
//! mediamtx); the task never holds a lock and the SFU never awaits. Received datagrams are read
//! into one growing `BytesMut` and split off without copying.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::MediaConfig;
use crate::error::{MediaError, Result};
use crate::hls::Hls;
use crate::metrics::Metrics;
use crate::sfu::peer::PublishedTrack;
use crate::sfu::{
    Departure, FanoutPool, Role, SessionAnswer, SessionId, Sfu, StreamEvent, StreamSummary,
};
use crate::udp_batch::{self, UdpSender};
use crate::udp_recv;

/// Requests queued for the media task before senders wait.
const COMMAND_QUEUE: usize = 256;
/// Stream events kept for slow subscribers.
const EVENT_QUEUE: usize = 1024;
/// Receive buffer headroom: larger than any datagram on a 1500-byte-MTU path.
const DATAGRAM_MAX_BYTES: usize = 2048;
/// Datagrams read in one go before outputs are flushed.
const RECV_BATCH: usize = 64;
/// When no timer is pending, wake up this often anyway.
const IDLE_WAKE: Duration = Duration::from_secs(1);

enum Command {
    Publish {
        stream: String,
        offer: String,
        client: Option<IpAddr>,
        reply: oneshot::Sender<Result<SessionAnswer>>,
    },
    View {
        stream: String,
        offer: String,
        client: Option<IpAddr>,
        reply: oneshot::Sender<Result<SessionAnswer>>,
    },
    Trickle {
        id: SessionId,
        role: Role,
        stream: String,
        candidates: Vec<String>,
        reply: oneshot::Sender<Result<()>>,
    },
    Close {
        id: SessionId,
        role: Role,
        stream: String,
        reply: oneshot::Sender<Result<()>>,
    },
    Streams {
        reply: oneshot::Sender<Vec<StreamSummary>>,
    },
    PublishIngest {
        stream: String,
        tracks: Vec<PublishedTrack>,
        reply: oneshot::Sender<Result<SessionId>>,
    },
    PushIngest {
        id: SessionId,
        packets: Vec<rtc::rtp::Packet>,
    },
    CloseIngest {
        id: SessionId,
        reason: &'static str,
        how: Departure,
    },
    EndPublisher {
        stream: String,
        reason: &'static str,
        reply: oneshot::Sender<bool>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Cheap to clone; every method is a request to the media task.
#[derive(Clone)]
pub struct MediaHandle {
    tx: mpsc::Sender<Command>,
    metrics: Arc<Metrics>,
    events: broadcast::Sender<StreamEvent>,
    local_addr: SocketAddr,
    /// Deletes expired replays (HLS on).
    replays: Option<crate::hls::replay::Replays>,
}

/// The running media task.
pub struct MediaTask {
    pub join: JoinHandle<()>,
}

/// Bind the UDP socket and start the media task.
pub async fn spawn(config: MediaConfig) -> std::io::Result<(MediaHandle, MediaTask)> {
    let socket = UdpSocket::bind(config.udp_bind).await?;
    udp_recv::enable_destination(&socket)?;
    let local_addr = socket.local_addr()?;
    let candidates = host_candidates(&config, local_addr);
    info!(udp = %local_addr, candidates = ?candidates, "media core listening");
    let metrics = Arc::new(Metrics::default());
    let pool = FanoutPool::new(config.fanout_threads, config.fanout_parallel_min).map(Arc::new);
    let sfu = Sfu::new(
        &config,
        local_addr,
        candidates,
        metrics.clone(),
        pool.clone(),
    )
    .map_err(std::io::Error::other)?;
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let (events, _) = broadcast::channel(EVENT_QUEUE);
    let hls = match config.hls.clone() {
        Some(c) => {
            info!(dir = %c.dir.display(), segment_secs = c.segment.as_secs(), "HLS on");
            Some(Hls::new(c, metrics.clone(), events.clone()).await)
        }
        None => None,
    };
    let replays = hls.as_ref().map(Hls::replays);
    let join = tokio::spawn(run(socket, sfu, pool, rx, events.clone(), hls));
    Ok((
        MediaHandle {
            tx,
            metrics,
            events,
            local_addr,
            replays,
        },
        MediaTask { join },
    ))
}

/// Host candidates for answers: configured addresses, else the bound one, else every local
/// interface address of the bound family — `0.0.0.0`: IPv4; `[::]` (dual-stack): IPv4 and
/// IPv6 — loopback last, so LAN clients try a routable address first. Link-local IPv6
/// addresses need a scope id a candidate cannot carry, so they are left out.
fn host_candidates(config: &MediaConfig, bound: SocketAddr) -> Vec<SocketAddr> {
    let port = bound.port();
    if !config.public_ips.is_empty() {
        return config
            .public_ips
            .iter()
            .map(|ip| SocketAddr::new(*ip, port))
            .collect();
    }
    if !bound.ip().is_unspecified() {
        return vec![bound];
    }
    let v6 = bound.is_ipv6();
    let interfaces: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .collect();
    wildcard_candidates(&interfaces, v6)
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

/// The addresses a wildcard bind advertises, from the interfaces' addresses: IPv4 ones (and
/// IPv6 ones for `[::]`), loopback last; `127.0.0.1` (and `::1`) always, so a viewer on the
/// machine itself connects.
fn wildcard_candidates(interfaces: &[IpAddr], v6: bool) -> Vec<IpAddr> {
    let usable = |ip: &&IpAddr| match ip {
        IpAddr::V4(_) => true,
        // fe80::/10 needs a scope id.
        IpAddr::V6(a) => v6 && (a.segments()[0] & 0xffc0) != 0xfe80,
    };
    let mut ips: Vec<IpAddr> = interfaces
        .iter()
        .filter(usable)
        .filter(|ip| !ip.is_loopback())
        .copied()
        .collect();
    ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    if v6 && interfaces.contains(&IpAddr::V6(Ipv6Addr::LOCALHOST)) {
        ips.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
    }
    ips.dedup();
    ips
}

impl MediaHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| MediaError::ShuttingDown)?;
        rx.await.map_err(|_| MediaError::ShuttingDown)
    }

    /// WHIP: answer a publisher's offer from `client` (counted against the per-address
    /// limit; `None`: not counted). The stream key must already be checked.
    pub async fn publish(
        &self,
        stream: &str,
        offer: String,
        client: Option<IpAddr>,
    ) -> Result<SessionAnswer> {
        self.ask(|reply| Command::Publish {
            stream: stream.to_owned(),
            offer,
            client,
            reply,
        })
        .await?
    }

    /// WHEP: answer a viewer's offer from `client` (as for [`MediaHandle::publish`]).
    pub async fn view(
        &self,
        stream: &str,
        offer: String,
        client: Option<IpAddr>,
    ) -> Result<SessionAnswer> {
        self.ask(|reply| Command::View {
            stream: stream.to_owned(),
            offer,
            client,
            reply,
        })
        .await?
    }

    /// Trickle ICE candidates for a session, which must have this role and stream.
    pub async fn trickle(
        &self,
        id: SessionId,
        role: Role,
        stream: &str,
        candidates: Vec<String>,
    ) -> Result<()> {
        self.ask(|reply| Command::Trickle {
            id,
            role,
            stream: stream.to_owned(),
            candidates,
            reply,
        })
        .await?
    }

    /// End a session, which must have this role and stream.
    pub async fn close(&self, id: SessionId, role: Role, stream: &str) -> Result<()> {
        self.ask(|reply| Command::Close {
            id,
            role,
            stream: stream.to_owned(),
            reply,
        })
        .await?
    }

    /// Streams that have a publisher, with viewer counts.
    pub async fn streams(&self) -> Result<Vec<StreamSummary>> {
        self.ask(|reply| Command::Streams { reply }).await
    }

    /// A non-WebRTC publisher (RTMP ingest) with these tracks; live at once.
    pub async fn publish_ingest(
        &self,
        stream: &str,
        tracks: Vec<PublishedTrack>,
    ) -> Result<SessionId> {
        self.ask(|reply| Command::PublishIngest {
            stream: stream.to_owned(),
            tracks,
            reply,
        })
        .await?
    }

    /// RTP of an ingest publisher (one access unit at a time, say). Waits when the media task's
    /// queue is full, which slows the ingest connection instead of dropping.
    pub async fn push_ingest(&self, id: SessionId, packets: Vec<rtc::rtp::Packet>) -> Result<()> {
        self.tx
            .send(Command::PushIngest { id, packets })
            .await
            .map_err(|_| MediaError::ShuttingDown)
    }

    /// The ingest publisher is gone: it ended the stream, or dropped and may come back.
    pub async fn close_ingest(&self, id: SessionId, reason: &'static str, how: Departure) {
        let _ = self.tx.send(Command::CloseIngest { id, reason, how }).await;
    }

    /// End `stream`'s publisher (WHIP or RTMP ingest) and take the stream off the air at once,
    /// without reconnect grace: its stream key was rotated. Viewers are told (BYE). False if
    /// it had no publisher. (An RTMP connection is closed through its listener's
    /// [`crate::ingest::rtmp::publishers::RtmpPublishers`].)
    pub async fn end_publisher(&self, stream: &str, reason: &'static str) -> Result<bool> {
        self.ask(|reply| Command::EndPublisher {
            stream: stream.to_owned(),
            reason,
            reply,
        })
        .await
    }

    /// Close every session, tell peers, and stop the task.
    pub async fn shutdown(&self) {
        let _ = self.ask(|reply| Command::Shutdown { reply }).await;
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Go-live / offline events.
    pub fn subscribe(&self) -> broadcast::Receiver<StreamEvent> {
        self.events.subscribe()
    }

    /// The bound UDP address.
    pub fn udp_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Deletes replays from the HLS store; `None` when HLS is off.
    pub fn replays(&self) -> Option<&crate::hls::replay::Replays> {
        self.replays.as_ref()
    }
}

async fn run(
    socket: UdpSocket,
    mut sfu: Sfu,
    pool: Option<Arc<FanoutPool>>,
    mut rx: mpsc::Receiver<Command>,
    events: broadcast::Sender<StreamEvent>,
    hls: Option<Hls>,
) {
    let mut buf = BytesMut::with_capacity(64 * DATAGRAM_MAX_BYTES);
    let mut shutdown_reply = None;
    let sender = UdpSender::new(&socket);
    let mut out = Vec::with_capacity(udp_batch::BATCH);
    loop {
        flush(&socket, &mut sfu, pool.as_deref(), &sender, &mut out).await;
        while let Some(ev) = sfu.poll_event() {
            if let (Some(hls), StreamEvent::Live { stream }) = (&hls, &ev) {
                sfu.set_tap(
                    Instant::now(),
                    stream,
                    Box::new(hls.tap(stream)),
                    hls.segment(),
                );
            }
            let _ = events.send(ev);
        }
        if shutdown_reply.is_some() {
            break;
        }
        let now = Instant::now();
        if sfu.poll_timeout().is_some_and(|t| t <= now) {
            sfu.handle_timeout(now);
            continue;
        }
        let wake = sfu.poll_timeout().unwrap_or(now + IDLE_WAKE);
        buf.reserve(DATAGRAM_MAX_BYTES);
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(Command::Shutdown { reply }) => {
                    sfu.close_all(Instant::now());
                    shutdown_reply = Some(reply);
                }
                Some(cmd) => handle_command(&mut sfu, cmd),
                None => {
                    sfu.close_all(Instant::now());
                    flush(&socket, &mut sfu, pool.as_deref(), &sender, &mut out).await;
                    break;
                }
            },
            res = udp_recv::recv(&socket, &mut buf) => {
                match res {
                    Ok(got) => {
                        let now = Instant::now();
                        sfu.handle_datagram(now, got.from, got.to, buf.split_to(got.len));
                        for _ in 1..RECV_BATCH {
                            buf.reserve(DATAGRAM_MAX_BYTES);
                            match udp_recv::try_recv(&socket, &mut buf) {
                                Ok(got) => sfu.handle_datagram(
                                    now,
                                    got.from,
                                    got.to,
                                    buf.split_to(got.len),
                                ),
                                Err(_) => break,
                            }
                        }
                    }
                    // ICMP errors surface here on some systems; they concern one peer, not us.
                    Err(e) => warn!(error = %e, "udp receive failed"),
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => sfu.handle_timeout(Instant::now()),
        }
    }
    info!(sessions = sfu.session_count(), "media core stopped");
    if let Some(reply) = shutdown_reply {
        let _ = reply.send(());
    }
}

fn handle_command(sfu: &mut Sfu, cmd: Command) {
    let now = Instant::now();
    match cmd {
        Command::Publish {
            stream,
            offer,
            client,
            reply,
        } => {
            let _ = reply.send(sfu.publish(now, &stream, &offer, client));
        }
        Command::View {
            stream,
            offer,
            client,
            reply,
        } => {
            let _ = reply.send(sfu.view(now, &stream, &offer, client));
        }
        Command::Trickle {
            id,
            role,
            stream,
            candidates,
            reply,
        } => {
            let result = check_session(sfu, id, role, &stream)
                .and_then(|_| sfu.add_remote_candidates(id, &candidates));
            let _ = reply.send(result);
        }
        Command::Close {
            id,
            role,
            stream,
            reply,
        } => {
            let result = check_session(sfu, id, role, &stream).and_then(|_| sfu.close(now, id));
            let _ = reply.send(result);
        }
        Command::Streams { reply } => {
            let _ = reply.send(sfu.streams());
        }
        Command::PublishIngest {
            stream,
            tracks,
            reply,
        } => {
            let _ = reply.send(sfu.publish_ingest(&stream, tracks));
        }
        Command::PushIngest { id, packets } => {
            let _ = sfu.push_ingest(now, id, packets);
        }
        Command::CloseIngest { id, reason, how } => sfu.close_ingest(now, id, reason, how),
        Command::EndPublisher {
            stream,
            reason,
            reply,
        } => {
            let _ = reply.send(sfu.end_publisher(now, &stream, reason));
        }
        Command::Shutdown { .. } => unreachable!("handled by the loop"),
    }
}

fn check_session(sfu: &Sfu, id: SessionId, role: Role, stream: &str) -> Result<()> {
    match sfu.session(id) {
        Some((r, s)) if r == role && s == stream => Ok(()),
        _ => Err(MediaError::UnknownSession),
    }
}

/// Send everything the SFU has queued, [`udp_batch::BATCH`] datagrams at a time (`batch` is a
/// reused buffer, empty between calls).
async fn flush(
    socket: &UdpSocket,
    sfu: &mut Sfu,
    pool: Option<&FanoutPool>,
    sender: &UdpSender,
    batch: &mut Vec<crate::sfu::Transmit>,
) {
    loop {
        while batch.len() < udp_batch::BATCH {
            match sfu.poll_transmit() {
                Some(t) => batch.push(t),
                None => break,
            }
        }
        if batch.is_empty() {
            return;
        }
        match pool {
            // A large audience's datagrams: the kernel's share of sending them is most of
            // their cost, so the fan-out threads split it.
            #[cfg(target_os = "linux")]
            Some(pool) if batch.len() >= udp_batch::PARALLEL_MIN => {
                sender.send_parallel(socket, batch, pool)
            }
            _ => sender.send_all(socket, batch).await,
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn ipv4_wildcard_advertises_ipv4_interfaces_then_loopback() {
        let interfaces = ips(&["127.0.0.1", "192.0.2.7", "::1", "2001:db8::7", "fe80::1"]);
        assert_eq!(
            wildcard_candidates(&interfaces, false),
            ips(&["192.0.2.7", "127.0.0.1"])
        );
    }

    #[test]
    fn dual_stack_wildcard_adds_routable_ipv6_and_its_loopback() {
        let interfaces = ips(&["127.0.0.1", "192.0.2.7", "::1", "2001:db8::7", "fe80::1"]);
        assert_eq!(
            wildcard_candidates(&interfaces, true),
            ips(&["192.0.2.7", "2001:db8::7", "127.0.0.1", "::1"])
        );
    }

    #[test]
    fn configured_public_addresses_replace_the_interfaces() {
        let config = MediaConfig {
            public_ips: ips(&["203.0.113.9"]),
            ..Default::default()
        };
        let bound: SocketAddr = "0.0.0.0:8189".parse().unwrap();
        assert_eq!(
            host_candidates(&config, bound),
            vec!["203.0.113.9:8189".parse::<SocketAddr>().unwrap()]
        );
        let specific: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(
            host_candidates(&MediaConfig::default(), specific),
            vec![specific]
        );
    }
}
