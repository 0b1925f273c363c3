//! Runs one str0m `Rtc` on one UDP socket as a tokio task: the sans-I/O loop (drain
//! `poll_output` to a timeout, wait for one input, apply exactly one mutation) with the
//! publisher- or viewer-specific parts plugged in through [`Role`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::media::Pt;
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo, Ssrc};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::Result;
use crate::stats::EndReason;

/// Capacity of a peer's command channel; commands are rare (stop, keyframe request).
pub(crate) const COMMAND_CAPACITY: usize = 8;
/// Longest sleep even when str0m has nothing scheduled, so the loop re-checks its deadlines.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// ICE may recover from a short disconnection (RFC 7675 consent is checked every ~5 s);
/// only a disconnection that lasts this long ends the peer.
const DISCONNECT_GRACE: Duration = Duration::from_secs(5);
/// str0m's examples use 2000 bytes; datagrams above the 1200-byte WebRTC MTU never arrive.
const RECV_BUFFER_BYTES: usize = 2000;
/// Upper bound on drain rounds after `Rtc::close`, which needs no remote reply.
const CLOSE_DRAIN_ROUNDS: usize = 4;
/// Reads per wake-up before the loop looks at commands and timers again: at 2.5 Mbit/s a viewer
/// gets ~300 datagrams a second, and one wake-up per datagram costs more than the datagram.
const RECV_BATCH: usize = 32;
/// How often stats snapshots are published to the handle (every one costs a clone and a
/// wake-up of whoever watches).
const PUBLISH_INTERVAL: Duration = Duration::from_millis(50);

/// Requests from a handle to its running peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    /// Close the peer (RTCP BYE, DTLS close_notify) and end the task.
    Stop,
    /// Viewer: send a PLI for the video track.
    RequestKeyframe,
}

/// One RTP packet for `StreamTx::write_rtp`.
#[derive(Debug)]
pub(crate) struct MediaWrite {
    pub ssrc: Ssrc,
    pub pt: Pt,
    pub seq: SeqNo,
    pub rtp_time: u32,
    pub marker: bool,
    pub nackable: bool,
    pub payload: Vec<u8>,
}

/// The publisher- or viewer-specific half of a peer.
pub(crate) trait Role: Send + 'static {
    /// An event from str0m. Called inside the drain loop; mutating `rtc` here is allowed.
    fn on_event(&mut self, rtc: &mut Rtc, event: Event, now: Instant);

    /// When the role next has media to write, if ever.
    fn next_media_at(&self) -> Option<Instant> {
        None
    }

    /// The next packet to write at `now`, if any is due.
    fn poll_media(&mut self, _now: Instant) -> Option<MediaWrite> {
        None
    }

    /// A keyframe request from the handle.
    fn request_keyframe(&mut self, _rtc: &mut Rtc) {}

    /// ICE and DTLS are up.
    fn connected(&mut self, now: Instant);

    /// The peer ended; only the first reason is kept.
    fn end(&mut self, reason: EndReason);

    /// Publishes a stats snapshot if anything changed since the last one.
    fn publish(&mut self);
}

/// Everything a peer task owns.
pub(crate) struct Driver<R> {
    pub rtc: Rtc,
    pub socket: UdpSocket,
    pub role: R,
    /// Give up if ICE + DTLS are not up by then.
    pub connect_deadline: Instant,
    /// Simulated loss: drop every Nth received SRTP datagram (RFC 7983: first byte 128..=191).
    pub drop_every_nth_rtp: Option<u32>,
    /// SRTP datagrams seen, for `drop_every_nth_rtp`.
    pub rtp_seen: u32,
}

impl<R: Role> Driver<R> {
    /// Starts the peer task; it ends on `Command::Stop`, when every command sender is
    /// dropped, or when the connection ends.
    pub(crate) fn spawn(self) -> (mpsc::Sender<Command>, JoinHandle<Result<()>>) {
        let (tx, rx) = mpsc::channel(COMMAND_CAPACITY);
        let task = tokio::spawn(self.run(rx));
        (tx, task)
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) -> Result<()> {
        let local = self.socket.local_addr()?;
        let mut state = LoopState::default();
        let result = self.run_loop(local, &mut commands, &mut state).await;
        let reason = match &result {
            Ok(reason) => reason.clone(),
            Err(e) => EndReason::Failed(e.to_string()),
        };
        self.role.end(reason);
        self.role.publish();
        result.map(|_| ())
    }

    async fn run_loop(
        &mut self,
        local: SocketAddr,
        commands: &mut mpsc::Receiver<Command>,
        state: &mut LoopState,
    ) -> Result<EndReason> {
        let mut buf = vec![0u8; RECV_BUFFER_BYTES];
        // The `Rtc` was built before the HTTP exchange and has not been told the time since;
        // without this, ICE waits for a timer computed from that older instant.
        self.rtc.handle_input(Input::Timeout(Instant::now()))?;
        let mut next_publish = Instant::now();
        loop {
            let mut timeout = self.drain(state).await?;
            if let Some(reason) = state.ended.take() {
                return Ok(reason);
            }
            let now = Instant::now();
            while let Some(write) = self.role.poll_media(now) {
                self.write(write, now);
                timeout = self.drain(state).await?;
            }
            if let Some(reason) = state.ended.take() {
                return Ok(reason);
            }
            if now >= next_publish {
                self.role.publish();
                next_publish = now + PUBLISH_INTERVAL;
            }

            if !state.connected && now >= self.connect_deadline {
                return Ok(EndReason::ConnectTimeout);
            }
            if let Some(since) = state.disconnected_since {
                if now.saturating_duration_since(since) >= DISCONNECT_GRACE {
                    return Ok(EndReason::IceDisconnected);
                }
            }

            let wake = [
                Some(timeout),
                self.role.next_media_at(),
                (!state.connected).then_some(self.connect_deadline),
                state
                    .disconnected_since
                    .map(|since| since + DISCONNECT_GRACE),
                Some(next_publish),
                Some(now + MAX_SLEEP),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now);

            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(Command::RequestKeyframe) => self.role.request_keyframe(&mut self.rtc),
                    Some(Command::Stop) | None => {
                        self.close(state).await;
                        return Ok(EndReason::Stopped);
                    }
                },
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, source)) => {
                        self.receive(&buf[..len], source, local)?;
                        // Whatever else has arrived, without going back to the select: str0m
                        // is drained after each datagram, as it asks.
                        for _ in 1..RECV_BATCH {
                            match self.socket.try_recv_from(&mut buf) {
                                Ok((len, source)) => {
                                    self.drain(state).await?;
                                    self.receive(&buf[..len], source, local)?;
                                }
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                                Err(e) if is_transient(&e) => {}
                                Err(e) => return Err(e.into()),
                            }
                        }
                    }
                    // A stale ICMP error for an earlier send; the socket itself is fine.
                    Err(e) if is_transient(&e) => {}
                    Err(e) => return Err(e.into()),
                },
                () = tokio::time::sleep_until(wake.into()) => {
                    self.rtc.handle_input(Input::Timeout(Instant::now()))?;
                }
            }
        }
    }

    fn receive(&mut self, datagram: &[u8], source: SocketAddr, local: SocketAddr) -> Result<()> {
        // Not STUN/DTLS/RTP/RTCP (RFC 7983 demultiplexing): nothing str0m could use.
        if let (Some(n), Some(128..=191)) = (self.drop_every_nth_rtp, datagram.first()) {
            self.rtp_seen = self.rtp_seen.wrapping_add(1);
            if n > 0 && self.rtp_seen.is_multiple_of(n) {
                return Ok(());
            }
        }
        let Ok(contents) = datagram.try_into() else {
            return Ok(());
        };
        let input = Input::Receive(
            Instant::now(),
            Receive {
                proto: Protocol::Udp,
                source,
                destination: local,
                contents,
            },
        );
        // No `Rtc::accepts` filter: this socket belongs to this one `Rtc`, and `accepts`
        // drops DTLS that arrives before our own ICE check succeeded, which would charge a
        // 1 s DTLS retransmission to the server's time-to-connect. str0m still checks STUN
        // integrity and the DTLS fingerprint.
        self.rtc.handle_input(input)?;
        Ok(())
    }

    fn write(&mut self, w: MediaWrite, now: Instant) {
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_tx(&w.ssrc) else {
            tracing::warn!(ssrc = %w.ssrc, "no send stream for SSRC");
            return;
        };
        stream.write_rtp(
            RtpWrite::new(w.pt, w.seq, w.rtp_time, now, w.payload)
                .marker(w.marker)
                .nackable(w.nackable),
        );
    }

    /// Polls str0m until it only has a timeout left, sending datagrams and dispatching
    /// events on the way.
    async fn drain(&mut self, state: &mut LoopState) -> Result<Instant> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(at) => return Ok(at),
                Output::Transmit(t) => {
                    if let Err(e) = self.socket.send_to(&t.contents, t.destination).await {
                        // UDP: a lost datagram is the network's business, as on the wire.
                        tracing::debug!(error = %e, to = %t.destination, "send failed");
                    }
                }
                Output::Event(event) => {
                    let now = Instant::now();
                    match &event {
                        Event::Connected => {
                            state.connected = true;
                            self.role.connected(now);
                        }
                        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                            state.disconnected_since.get_or_insert(now);
                        }
                        Event::IceConnectionStateChange(_) => state.disconnected_since = None,
                        Event::Closed => {
                            state.ended.get_or_insert(EndReason::PeerClosed);
                        }
                        _ => {}
                    }
                    self.role.on_event(&mut self.rtc, event, now);
                }
            }
        }
    }

    /// Sends RTCP BYE and DTLS close_notify; str0m needs no reply to finish closing.
    async fn close(&mut self, state: &mut LoopState) {
        if let Err(e) = self.rtc.close() {
            tracing::debug!(error = %e, "close failed");
            return;
        }
        for _ in 0..CLOSE_DRAIN_ROUNDS {
            if self.drain(state).await.is_err() || !self.rtc.is_alive() {
                return;
            }
            if self
                .rtc
                .handle_input(Input::Timeout(Instant::now()))
                .is_err()
            {
                return;
            }
        }
    }
}

/// What the loop tracks besides the `Rtc`.
#[derive(Debug, Default)]
struct LoopState {
    connected: bool,
    disconnected_since: Option<Instant>,
    /// Set by the drain when the connection ended; the loop returns it.
    ended: Option<EndReason>,
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionReset | Interrupted | WouldBlock
    )
}
