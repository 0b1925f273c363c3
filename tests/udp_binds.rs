//! WebRTC connects whatever the UDP socket is bound to: the shipped default (`0.0.0.0`), a
//! dual-stack `[::]`, a specific address, and a specific address behind 1:1 NAT with
//! `GLINT_PUBLIC_IP` (a userspace relay plays the NAT: the client reaches the public address,
//! the server receives on its private one). str0m publishers and viewers, real UDP, loopback.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use loadtest::{publish, view, PublishConfig, ViewConfig};
use tokio::net::UdpSocket;
use tokio::sync::Mutex;

const WAIT: Duration = Duration::from_secs(20);

/// A str0m publisher and viewer from `client_ip` through `server`: video and audio arrive.
async fn publish_and_view(server: &glint::Server, client_ip: IpAddr) {
    let b = base(server);
    let publisher = publish(PublishConfig {
        local_ip: client_ip,
        ..PublishConfig::new(&b, "demo", KEY)
    })
    .await
    .unwrap();
    publisher.wait_connected(WAIT).await.unwrap();
    let viewer = view(ViewConfig {
        local_ip: client_ip,
        ..ViewConfig::new(&b, "demo")
    })
    .await
    .unwrap();
    let stats = viewer
        .wait_until(|s| s.video.pattern_ok >= 30 && s.audio.packets >= 10, WAIT)
        .await
        .unwrap();
    assert_eq!(stats.pattern_mismatches(), 0, "{stats:?}");
    viewer.stop().await.unwrap();
    publisher.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_wildcard_bind_connects() {
    let (server, _dir) = start_server_with(|c| {
        c.media.udp_bind = "0.0.0.0:0".parse().unwrap();
    })
    .await;
    assert!(server.media.udp_addr().ip().is_unspecified());
    publish_and_view(&server, "127.0.0.1".parse().unwrap()).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_wildcard_bind_connects_ipv4_and_ipv6_clients() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipping: no IPv6 loopback here");
        return;
    }
    let (server, _dir) = start_server_with(|c| {
        c.media.udp_bind = "[::]:0".parse().unwrap();
    })
    .await;
    publish_and_view(&server, "127.0.0.1".parse().unwrap()).await;
    publish_and_view(&server, "::1".parse().unwrap()).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_ip_behind_one_to_one_nat_connects() {
    // The server's private address is 127.0.0.1; its "public" one 127.0.0.2, where the NAT
    // (the relay) listens on the same port and forwards to the private address.
    let public: IpAddr = "127.0.0.2".parse().unwrap();
    let (server, _dir) = start_server_with(|c| {
        c.media.public_ips = vec![public];
    })
    .await;
    let private = server.media.udp_addr();
    let relay = OneToOneNat::start(SocketAddr::new(public, private.port()), private).await;
    publish_and_view(&server, "127.0.0.1".parse().unwrap()).await;
    assert!(
        relay.mappings().await >= 2,
        "both peers went through the NAT"
    );
    server.shutdown().await;
}

/// A userspace 1:1 NAT for UDP: datagrams to `public` leave from a per-client socket to
/// `private`; answers come back from `public`.
struct OneToOneNat {
    outside: Arc<UdpSocket>,
    inside: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl OneToOneNat {
    async fn start(public: SocketAddr, private: SocketAddr) -> Self {
        let outside = Arc::new(
            UdpSocket::bind(public)
                .await
                .expect("bind the public address"),
        );
        let inside: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
        let task = tokio::spawn({
            let (outside, inside) = (outside.clone(), inside.clone());
            async move {
                let mut buf = vec![0u8; 2048];
                loop {
                    let Ok((n, client)) = outside.recv_from(&mut buf).await else {
                        return;
                    };
                    let upstream = {
                        let mut map = inside.lock().await;
                        match map.get(&client) {
                            Some(s) => s.clone(),
                            None => {
                                let s = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                                s.connect(private).await.unwrap();
                                map.insert(client, s.clone());
                                let (s2, outside) = (s.clone(), outside.clone());
                                tokio::spawn(async move {
                                    let mut buf = vec![0u8; 2048];
                                    while let Ok(n) = s2.recv(&mut buf).await {
                                        let _ = outside.send_to(&buf[..n], client).await;
                                    }
                                });
                                s
                            }
                        }
                    };
                    let _ = upstream.send(&buf[..n]).await;
                }
            }
        });
        Self {
            outside,
            inside,
            task,
        }
    }

    async fn mappings(&self) -> usize {
        let _ = &self.outside;
        self.inside.lock().await.len()
    }
}

impl Drop for OneToOneNat {
    fn drop(&mut self) {
        self.task.abort();
    }
}
