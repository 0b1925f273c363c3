//! The media thread: one OS thread (`glint-media`) that owns the shared UDP socket and the
//! [`Sfu`], and the [`MediaHandle`] through which signaling and RTMP ingest reach it.
//!
//! The thread runs a current-thread tokio runtime of its own, with the socket registered on its
//! reactor: the loop blocks it (the fan-out pool's sends wait for it, a full socket waits up to
//! 20 ms) without holding up HTTP, the API or chat on the main runtime, and their load does not
//! delay a datagram. Nothing else runs on that runtime: HLS transcoders and uploads are spawned
//! on the main one (see [`Hls`]).
//!
//! Requests travel over a bounded channel and carry their reply channel (an actor, as in
//! mediamtx); the loop never holds a lock and the SFU never awaits. RTMP ingest packets have a
//! bounded channel of their own, so a publisher's flood does not queue in front of a WHEP
//! offer, and a full queue makes its connection wait (nothing is dropped). Received datagrams
//! are read into one growing `BytesMut` and split off without copying.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::MediaConfig;
use crate::error::{MediaError, Result};
use crate::hls::replay::{Replay, Replays};
use crate::hls::Hls;
use crate::metrics::Metrics;
use crate::sfu::peer::PublishedTrack;
use crate::sfu::{
    Departure, FanoutPool, Role, SessionAnswer, SessionId, Sfu, StreamEvent, StreamSummary,
};
use crate::udp_batch::{self, UdpSender};
use crate::udp_recv;

/// The media thread's name (in `top -H`, `perf`, panics).
const THREAD_NAME: &str = "glint-media";
/// Requests queued for the media thread before senders wait.
const COMMAND_QUEUE: usize = 256;
/// Ingest messages (one access unit's RTP each, say) queued before an RTMP connection waits.
const INGEST_QUEUE: usize = 256;
/// Stream events kept for slow subscribers.
const EVENT_QUEUE: usize = 1024;
/// Replay announcements kept for slow subscribers (one per finished broadcast).
const REPLAY_QUEUE: usize = 64;
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
    EndPublisher {
        stream: String,
        reason: &'static str,
        reply: oneshot::Sender<bool>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// What an ingest publisher sends after [`MediaHandle::publish_ingest`]. Its end travels the
/// same channel as its packets, so it never overtakes the last of them.
enum Ingest {
    Packets {
        id: SessionId,
        packets: Vec<rtc::rtp::Packet>,
    },
    /// An AAC frame as the publisher sent it, for HLS (WebRTC viewers get its Opus).
    Aac {
        id: SessionId,
        frame: crate::sfu::AacFrame,
    },
    Close {
        id: SessionId,
        reason: &'static str,
        how: Departure,
    },
}

/// Cheap to clone; every method is a request to the media thread.
#[derive(Clone)]
pub struct MediaHandle {
    tx: mpsc::Sender<Command>,
    ingest: mpsc::Sender<Ingest>,
    metrics: Arc<Metrics>,
    events: broadcast::Sender<StreamEvent>,
    /// Finished broadcasts kept as replays, announced by HLS.
    replay_events: broadcast::Sender<Replay>,
    local_addr: SocketAddr,
    /// Deletes expired replays (HLS on).
    replays: Option<Replays>,
    /// Live HLS renditions served from memory (HLS on).
    hls_live: Option<crate::hls::LiveHls>,
}

/// The running media thread.
pub struct MediaTask {
    /// A task of the caller's runtime that ends when the media thread has exited (its loop
    /// stopped and its runtime dropped), for the binary to wait on at shutdown.
    pub join: JoinHandle<()>,
}

/// Bind the UDP socket and start the media thread. Call it on the runtime HLS is to run on:
/// its transcoders and uploads are spawned there.
pub async fn spawn(config: MediaConfig) -> std::io::Result<(MediaHandle, MediaTask)> {
    let socket = UdpSocket::bind(config.udp_bind).await?;
    udp_recv::enable_destination(&socket)?;
    let local_addr = socket.local_addr()?;
    // Its own runtime, IO and timers only: the socket moves to its reactor.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let socket = {
        let std_socket = socket.into_std()?;
        let _on_media_runtime = runtime.enter();
        UdpSocket::from_std(std_socket)?
    };
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
    let (ingest, ingest_rx) = mpsc::channel(INGEST_QUEUE);
    let (events, _) = broadcast::channel(EVENT_QUEUE);
    let (replay_events, _) = broadcast::channel(REPLAY_QUEUE);
    let hls = match config.hls.clone() {
        Some(c) => {
            info!(dir = %c.dir.display(), segment_secs = c.segment.as_secs(), "HLS on");
            Some(Hls::new(c, metrics.clone(), replay_events.clone()).await)
        }
        None => None,
    };
    let replays = hls.as_ref().map(Hls::replays);
    let hls_live = hls.as_ref().map(Hls::live);
    // Sent when the loop has stopped; dropped unsent if the thread panicked.
    let (stopped, on_exit) = oneshot::channel::<()>();
    let loop_events = events.clone();
    std::thread::Builder::new()
        .name(THREAD_NAME.into())
        .spawn(move || {
            runtime.block_on(run(socket, sfu, pool, rx, ingest_rx, loop_events, hls));
            drop(runtime);
            let _ = stopped.send(());
        })?;
    let join = tokio::spawn(async move {
        if on_exit.await.is_err() {
            error!("media thread panicked");
        }
    });
    Ok((
        MediaHandle {
            tx,
            ingest,
            metrics,
            events,
            replay_events,
            local_addr,
            replays,
            hls_live,
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

    /// RTP of an ingest publisher (one access unit at a time, say). Waits when the ingest queue
    /// is full, which slows the ingest connection instead of dropping; WebRTC requests have a
    /// queue of their own and do not wait behind it.
    pub async fn push_ingest(&self, id: SessionId, packets: Vec<rtc::rtp::Packet>) -> Result<()> {
        self.ingest
            .send(Ingest::Packets { id, packets })
            .await
            .map_err(|_| MediaError::ShuttingDown)
    }

    /// An AAC frame of an ingest publisher, as it came (HLS takes it as it is); queued with its
    /// packets.
    pub async fn push_ingest_aac(&self, id: SessionId, frame: crate::sfu::AacFrame) -> Result<()> {
        self.ingest
            .send(Ingest::Aac { id, frame })
            .await
            .map_err(|_| MediaError::ShuttingDown)
    }

    /// The ingest publisher is gone: it ended the stream, or dropped and may come back. Queued
    /// behind its packets.
    pub async fn close_ingest(&self, id: SessionId, reason: &'static str, how: Departure) {
        let _ = self.ingest.send(Ingest::Close { id, reason, how }).await;
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

    /// Close every session, tell peers, and stop the media thread.
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

    /// Finished broadcasts stored as replays (their VOD playlists are written), for the
    /// platform to record. Nothing comes when HLS or replays are off.
    pub fn subscribe_replays(&self) -> broadcast::Receiver<Replay> {
        self.replay_events.subscribe()
    }

    /// Deletes replays from the HLS store; `None` when HLS is off.
    pub fn replays(&self) -> Option<&Replays> {
        self.replays.as_ref()
    }

    /// Live HLS renditions (LL-HLS playlists, parts, recent segments) from memory; `None`
    /// when HLS is off.
    pub fn hls_live(&self) -> Option<&crate::hls::LiveHls> {
        self.hls_live.as_ref()
    }
}

/// The media thread's loop. Commands, ingest and datagrams are taken in random order when
/// several are ready (tokio's `select!`), so none of them starves the others.
async fn run(
    socket: UdpSocket,
    mut sfu: Sfu,
    pool: Option<Arc<FanoutPool>>,
    mut rx: mpsc::Receiver<Command>,
    mut ingest: mpsc::Receiver<Ingest>,
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
            // Closed only with the command queue (both live in the handles), which ends the loop.
            Some(msg) = ingest.recv() => handle_ingest(&mut sfu, msg),
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

fn handle_ingest(sfu: &mut Sfu, msg: Ingest) {
    let now = Instant::now();
    match msg {
        // Unknown: the stream was ended under it (key rotated); the connection is closed apart.
        Ingest::Packets { id, packets } => {
            let _ = sfu.push_ingest(now, id, packets);
        }
        Ingest::Aac { id, frame } => sfu.push_ingest_aac(id, frame),
        Ingest::Close { id, reason, how } => sfu.close_ingest(now, id, reason, how),
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
    use std::sync::atomic::Ordering::Relaxed;

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

    fn loopback() -> MediaConfig {
        MediaConfig {
            udp_bind: "127.0.0.1:0".parse().unwrap(),
            fanout_threads: 1,
            ..Default::default()
        }
    }

    /// Payload bytes of each packet of [`access_unit`].
    const PAYLOAD_BYTES: u64 = 4;

    /// An access unit of `len` H.264 RTP packets (payload type 96, as the RTMP listener sends).
    fn access_unit(len: u16) -> Vec<rtc::rtp::Packet> {
        (0..len)
            .map(|seq| rtc::rtp::Packet {
                header: rtc::rtp::Header {
                    version: 2,
                    payload_type: 96,
                    sequence_number: seq,
                    marker: seq + 1 == len,
                    ssrc: 7,
                    ..Default::default()
                },
                // A non-IDR slice (NAL type 1): no keyframe handling.
                payload: bytes::Bytes::from_static(&[0x41, 0x9a, 0, 0]),
            })
            .collect()
    }

    fn received(media: &MediaHandle) -> u64 {
        media.metrics().packets_received.load(Relaxed)
    }

    /// Poll `done` (a millisecond apart) for up to 10 s.
    async fn eventually(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The loop answers while the runtime that started it is not running at all (a task on it
    /// would not be), and `join` resolves once it has stopped.
    #[test]
    fn the_loop_runs_on_its_own_thread_and_join_waits_for_it() {
        let caller = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (media, task) = caller.block_on(spawn(loopback())).unwrap();
        let (reply, answer) = oneshot::channel();
        media
            .tx
            .blocking_send(Command::Streams { reply })
            .expect("the loop takes requests");
        let (got, waited) = std::sync::mpsc::channel();
        std::thread::spawn(move || got.send(answer.blocking_recv()));
        let streams = waited
            .recv_timeout(Duration::from_secs(10))
            .expect("answered with the caller's runtime idle");
        assert!(streams.unwrap().is_empty());
        caller.block_on(async {
            media.shutdown().await;
            tokio::time::timeout(Duration::from_secs(10), task.join)
                .await
                .expect("join resolves after shutdown")
                .unwrap();
            assert!(media.streams().await.is_err(), "nobody answers any more");
        });
    }

    /// A publisher that keeps the ingest queue full does not hold up a request: it is answered
    /// after a few access units, not after the queue's worth of them (one queue for both had
    /// it wait behind up to 256).
    #[tokio::test]
    async fn requests_do_not_wait_behind_a_full_ingest_queue() {
        const UNIT: u16 = 200;
        let (media, _task) = spawn(loopback()).await.unwrap();
        let id = media
            .publish_ingest("flood", vec![PublishedTrack::h264("42e01f")])
            .await
            .unwrap();
        let unit = access_unit(UNIT);
        let flooder = tokio::spawn({
            let media = media.clone();
            async move { while media.push_ingest(id, unit.clone()).await.is_ok() {} }
        });
        eventually("the flood fills the ingest queue", || {
            media.ingest.capacity() == 0
        })
        .await;
        for _ in 0..20 {
            // Counted by the loop as it answers: the test thread's own scheduling adds nothing.
            let before = media.metrics().bytes_received.load(Relaxed);
            let streams = media.streams().await.unwrap();
            let handled = (streams[0].bytes_in - before) / (u64::from(UNIT) * PAYLOAD_BYTES);
            assert!(
                handled < INGEST_QUEUE as u64 / 8,
                "{handled} access units were handled before the request"
            );
        }
        flooder.abort();
        media.shutdown().await;
    }

    /// Backpressure, not loss: every packet pushed reaches the SFU, and the close queued after
    /// them ends the stream only then.
    #[tokio::test]
    async fn ingest_waits_for_room_and_loses_nothing() {
        const UNIT: u16 = 50;
        const UNITS: u64 = 4 * INGEST_QUEUE as u64;
        let (media, _task) = spawn(loopback()).await.unwrap();
        let id = media
            .publish_ingest("steady", vec![PublishedTrack::h264("42e01f")])
            .await
            .unwrap();
        let before = received(&media);
        for _ in 0..UNITS {
            media.push_ingest(id, access_unit(UNIT)).await.unwrap();
        }
        let mut events = media.subscribe();
        media.close_ingest(id, "test", Departure::Ended).await;
        let offline = async {
            while let Ok(ev) = events.recv().await {
                if matches!(ev, StreamEvent::Offline { ref stream } if stream == "steady") {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), offline)
            .await
            .expect("the close is handled");
        // The close was queued behind the packets: every one of them was handled first.
        assert_eq!(received(&media) - before, UNITS * u64::from(UNIT));
        media.shutdown().await;
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
