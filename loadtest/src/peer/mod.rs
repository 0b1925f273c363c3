//! WebRTC peers that talk to the server like any client: a WHIP publisher sending synthetic
//! media and a WHEP viewer checking what arrives. Each peer is one str0m `Rtc` in RTP mode
//! on its own UDP socket, bound to one local IP that is also its only ICE candidate.

mod driver;
mod publisher;
mod viewer;

pub use publisher::{publish, PublishConfig, PublisherHandle};
pub use viewer::{view, ViewConfig, ViewerHandle, KEYFRAME_REQUEST_INTERVAL};

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use reqwest::Client;
use str0m::config::DtlsCert;
use str0m::media::Pt;
use str0m::{Candidate, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::stats::EndReason;
use driver::Command;

/// How long `stop` waits for the peer task to send its BYE and exit before aborting it.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// Payload types we offer. Dynamic numbers as browsers use them; the answerer keeps them.
const PT_H264: u8 = 108;
const PT_H264_RTX: u8 = 109;
const PT_VP8: u8 = 96;
const PT_VP8_RTX: u8 = 97;
/// profile-level-id of Constrained Baseline level 3.1 (RFC 6184 §8.1).
const H264_PROFILE_LEVEL_ID: u32 = 0x42e01f;

/// Which codecs a peer offers, besides Opus which every peer offers.
#[derive(Debug, Clone, Copy)]
struct Codecs {
    h264: bool,
    vp8: bool,
}

impl Codecs {
    const H264_OPUS: Codecs = Codecs {
        h264: true,
        vp8: false,
    };
    const VP8_OPUS: Codecs = Codecs {
        h264: false,
        vp8: true,
    };
    const ALL: Codecs = Codecs {
        h264: true,
        vp8: true,
    };
}

/// A UDP socket on `ip`, port chosen by the OS.
async fn bind(ip: IpAddr) -> Result<UdpSocket> {
    Ok(UdpSocket::bind(SocketAddr::new(ip, 0)).await?)
}

/// An RTP-mode `Rtc` offering only `codecs` (+ Opus) whose only ICE candidate is the
/// socket's address: no STUN/TURN gathering, so all traffic stays on that IP.
fn build_rtc(
    socket: &UdpSocket,
    codecs: Codecs,
    raw_packets: bool,
    dtls_cert: Option<DtlsCert>,
) -> Result<Rtc> {
    let mut config = Rtc::builder()
        .set_rtp_mode(true)
        // Per-track ingress stats each second (NACKs sent, jitter) for viewers' reports.
        .set_stats_interval(Some(std::time::Duration::from_secs(1)))
        .enable_raw_packets(raw_packets)
        .clear_codecs();
    if let Some(cert) = dtls_cert {
        config = config.set_dtls_cert(cert);
    }
    if codecs.h264 {
        config.codec_config().add_h264(
            Pt::from(PT_H264),
            Some(Pt::from(PT_H264_RTX)),
            true,
            H264_PROFILE_LEVEL_ID,
        );
    }
    if codecs.vp8 {
        // str0m's default VP8 entry is PT 96 with RTX 97.
        config = config.enable_vp8(true);
        debug_assert!(config
            .codec_config()
            .params()
            .iter()
            .any(|p| *p.pt() == PT_VP8 && p.resend().map(|r| *r) == Some(PT_VP8_RTX)));
    }
    let config = config.enable_opus(true, false);
    let mut rtc = config.build(Instant::now());
    let candidate = Candidate::host(socket.local_addr()?, "udp").map_err(str0m::RtcError::from)?;
    rtc.add_local_candidate(candidate);
    Ok(rtc)
}

/// The caller's client, or a new one with `timeout` that never uses a proxy (the server
/// under test is local; a `HTTP_PROXY` in the environment must not reroute it).
fn http_client(client: Option<Client>, timeout: Duration) -> Result<Client> {
    match client {
        Some(c) => Ok(c),
        None => Client::builder()
            .timeout(timeout)
            .no_proxy()
            .build()
            .map_err(Error::HttpClient),
    }
}

/// Waits until `pred` holds for the watched value, at most `timeout`; fails early with
/// [`Error::PeerEnded`] when the peer task is gone and the final value does not satisfy it.
async fn wait_for<T: Clone>(
    mut rx: watch::Receiver<T>,
    mut pred: impl FnMut(&T) -> bool,
    timeout: Duration,
    ended: impl Fn(&T) -> Option<EndReason>,
) -> Result<T> {
    let waited = tokio::time::timeout(timeout, async {
        rx.wait_for(|v| pred(v)).await.map(|value| value.clone())
    })
    .await;
    match waited {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_closed)) => Err(Error::PeerEnded {
            reason: ended(&rx.borrow()),
        }),
        Err(_elapsed) => Err(Error::Timeout {
            what: "peer stats condition",
            after: timeout,
        }),
    }
}

/// Tells the peer task to stop and waits for it, aborting it after [`SHUTDOWN_TIMEOUT`].
async fn shut_down(commands: mpsc::Sender<Command>, mut task: JoinHandle<Result<()>>) {
    // Fails only if the task already ended.
    let _ = commands.try_send(Command::Stop);
    drop(commands);
    match tokio::time::timeout(SHUTDOWN_TIMEOUT, &mut task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::debug!(error = %e, "peer ended with an error"),
        Ok(Err(join)) => tracing::warn!(error = %join, "peer task panicked or was cancelled"),
        Err(_) => {
            tracing::warn!("peer task did not stop in time; aborting");
            task.abort();
        }
    }
}
