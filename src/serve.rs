//! The HTTP accept loop: hyper connections (HTTP/1.1 and h2, WebSocket upgrades) with a
//! header-read timeout, a cap on open connections in total and per client address
//! ([`media::slots`], as the RTMP listener's), the
//! client's address resolved behind trusted proxies, and graceful shutdown.
//!
//! `axum::serve` sets no timer, so hyper's header-read timeout never fires there: a client
//! that opens a connection and trickles a header forever keeps it (and its memory) forever.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use media::slots::Slots;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;
use tracing::{debug, warn};

/// Defaults of [`HttpLimits`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 256;
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP/2 pings an idle connection this often and drops it when a ping goes unanswered
/// for as long.
const H2_KEEPALIVE: Duration = Duration::from_secs(30);

/// What one HTTP server lets clients hold.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Open connections at most; beyond it new ones get a 503 and are closed.
    pub max_connections: usize,
    /// Open connections per client TCP address (a trusted proxy counts as one address: give
    /// it room with a higher value or `0`, which turns this limit off).
    pub max_connections_per_address: usize,
    /// A request's head must arrive within this (from the connection's start, or from the
    /// previous response on a kept-alive one) or the connection is closed.
    pub header_read_timeout: Duration,
    /// A handler (body read included) must answer within this, else 408; long-lived
    /// responses (SSE, WebSocket) are not cut: their handlers answer at once.
    pub request_timeout: Duration,
    /// Peers whose `X-Forwarded-For` is believed (addresses or CIDR ranges); empty: none,
    /// the TCP peer is the client.
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            trusted_proxies: Vec::new(),
        }
    }
}

/// An address range, `192.0.2.0/24` or `2001:db8::/32` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, prefix) = match s.trim().split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0-{max}"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = media::udp_recv::canonical(SocketAddr::new(ip, 0)).ip();
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The client of a request from TCP peer `peer`: the peer itself, unless it is a trusted
/// proxy; then the right-most address of `X-Forwarded-For` that is not a trusted proxy (the
/// left part can be anything the client wrote).
pub fn client_address(
    peer: SocketAddr,
    forwarded_for: Option<&str>,
    trusted: &[IpNet],
) -> SocketAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer.ip()) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    for hop in header.rsplit(',') {
        let hop = hop.trim();
        let ip = hop
            .parse::<IpAddr>()
            .ok()
            .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()));
        match ip {
            Some(ip) if is_trusted(ip) => continue,
            Some(ip) => return SocketAddr::new(ip, 0),
            // Garbage in the chain: stop believing it, the last proxy's peer is the client.
            None => break,
        }
    }
    peer
}

/// A request a trusted proxy says came over HTTPS (`X-Forwarded-Proto: https`).
#[derive(Debug, Clone, Copy)]
pub struct ForwardedHttps;

/// Serve `app` on `listener` until `shutdown` resolves; then stop accepting and let open
/// connections finish (the caller bounds how long).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Slots::new(
        limits.max_connections.max(1),
        limits.max_connections_per_address,
    );
    let trusted: Arc<[IpNet]> = limits.trusted_proxies.clone().into();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEPALIVE)
        .keep_alive_timeout(H2_KEEPALIVE);
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = match slots.try_acquire(peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                debug!(peer = %peer, %why, "HTTP connection refused");
                refuse(tcp);
                continue;
            }
        };
        // Small frames (chat, SSE, WHIP answers) go out at once, not after Nagle's wait.
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let trusted = trusted.clone();
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let forwarded = req
                .headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok());
            let client = client_address(peer, forwarded, &trusted);
            let https = trusted.iter().any(|n| n.contains(peer.ip()))
                && req
                    .headers()
                    .get("x-forwarded-proto")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
            req.extensions_mut().insert(ConnectInfo(client));
            if https {
                req.extensions_mut().insert(ForwardedHttps);
            }
            app.clone().oneshot(req)
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(tcp), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(peer = %peer, error = %e, "HTTP connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Tell a connection over a limit why, if its socket takes it at once, and close it.
fn refuse(tcp: TcpStream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
    let _ = tcp.try_write(BUSY);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn cidr_ranges_parse_and_match() {
        let n: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains("10.200.3.4".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.1.1".parse().unwrap()), "v4-mapped");
        let v6: IpNet = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        let one: IpNet = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("proxy".parse::<IpNet>().is_err());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let peer: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let xff = Some("198.51.100.7, 10.0.0.9");
        // Trust none (the default): the TCP peer, whatever the header says.
        assert_eq!(client_address(peer, xff, &[]), peer);
        // Trusted proxies: the right-most hop that is not one of them.
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_address(peer, xff, &trusted).ip(),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // A client cannot pick its address by prepending to the header.
        let spoofed = Some("1.2.3.4, 198.51.100.7");
        assert_eq!(
            client_address(peer, spoofed, &trusted).ip(),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // A peer that is not trusted is the client even with the header.
        let outsider: SocketAddr = "203.0.113.9:1".parse().unwrap();
        assert_eq!(client_address(outsider, xff, &trusted), outsider);
        // Garbage in the chain, or no header: the peer.
        assert_eq!(client_address(peer, Some("junk"), &trusted), peer);
        assert_eq!(client_address(peer, None, &trusted), peer);
    }
}
