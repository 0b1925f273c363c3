//! Settings of the media core.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How the media core binds and what it advertises.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The one UDP socket every WebRTC peer uses (ICE, DTLS, SRTP all multiplexed on it).
    pub udp_bind: SocketAddr,
    /// Addresses written as host candidates in answers. Empty: the bound address if it is
    /// specific, else the machine's default-route address and 127.0.0.1.
    pub public_ips: Vec<IpAddr>,
    /// A session that has not connected (ICE + DTLS) by then is dropped.
    pub connect_timeout: Duration,
    /// ICE consent: a connected peer silent this long is disconnected, then failed and removed.
    pub ice_disconnected_timeout: Duration,
    pub ice_failed_timeout: Duration,
    /// Upper bound of sessions (publishers + viewers); beyond it requests get 503.
    pub max_sessions: usize,
    /// Sessions one client address (IPv4 address, IPv6 /64) may hold at once, connected or
    /// not; beyond it requests get 429. Households and offices share one address, so this is
    /// well above one person's need.
    pub max_sessions_per_address: usize,
    /// Of `max_sessions`, this many are kept for publishers: viewers get 503 once only these
    /// are left, so an audience (or a flood of viewer offers) cannot lock streamers out.
    pub publisher_reserve: usize,
    /// Shortest time between two PLIs sent to one publisher while a keyframe is pending.
    pub pli_min_interval: Duration,
    /// A publisher whose connection drops (rather than ending the stream) may reconnect within
    /// this long and take its stream back: viewers stay connected and the stream stays live.
    /// Zero: a drop ends the stream at once.
    pub reconnect_grace: Duration,
    /// HLS ladder for every live stream; `None`: off.
    pub hls: Option<crate::hls::HlsConfig>,
    /// Threads that seal and send viewers' packets for large audiences (default: one per CPU);
    /// 1: everything on the media task.
    pub fanout_threads: usize,
    /// A stream's packets are sealed on those threads from this many connected viewers.
    pub fanout_parallel_min: usize,
    /// Most bytes of video a stream keeps from its last keyframe on, to start joining viewers
    /// at once (`sfu::gop`); 0: none kept, viewers wait for a keyframe.
    pub gop_cache_bytes: usize,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            udp_bind: SocketAddr::from(([0, 0, 0, 0], 8189)),
            public_ips: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            ice_disconnected_timeout: Duration::from_secs(3),
            ice_failed_timeout: Duration::from_secs(6),
            max_sessions: 5000,
            max_sessions_per_address: 32,
            publisher_reserve: 100,
            pli_min_interval: Duration::from_millis(300),
            reconnect_grace: Duration::from_secs(20),
            hls: None,
            fanout_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            fanout_parallel_min: 64,
            gop_cache_bytes: 4096 * 1024,
        }
    }
}
