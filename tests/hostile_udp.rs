//! Hostile datagrams on the media port: garbage, STUN with made-up usernames, DTLS and RTP
//! shapes from strangers, and STUN naming a real session from many addresses. The server
//! counts them as unroutable, keeps no state for them, and a real publisher and viewer still
//! connect and get every packet.

mod common;

use std::time::Duration;

use common::*;
use loadtest::{publish, view, PublishConfig, ViewConfig};
use tokio::net::UdpSocket;

const WAIT: Duration = Duration::from_secs(20);

/// A STUN binding request (RFC 8489 §5) with USERNAME `user`, otherwise nonsense.
fn stun_request(user: &str) -> Vec<u8> {
    let mut attr = Vec::new();
    attr.extend_from_slice(&0x0006u16.to_be_bytes());
    attr.extend_from_slice(&(user.len() as u16).to_be_bytes());
    attr.extend_from_slice(user.as_bytes());
    while attr.len() % 4 != 0 {
        attr.push(0);
    }
    let mut m = Vec::new();
    m.extend_from_slice(&0x0001u16.to_be_bytes());
    m.extend_from_slice(&(attr.len() as u16).to_be_bytes());
    m.extend_from_slice(&0x2112_A442u32.to_be_bytes());
    m.extend_from_slice(&[7u8; 12]);
    m.extend_from_slice(&attr);
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_media_port_changes_nothing() {
    let (server, _dir) = start_server().await;
    let target = server.media.udp_addr();
    let mut senders = Vec::new();
    for _ in 0..20 {
        senders.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    }
    let mut sent = 0u64;
    for (i, s) in senders.iter().enumerate() {
        for j in 0..100u32 {
            let n = i as u32 * 1000 + j;
            let datagram = match j % 5 {
                0 => stun_request(&format!("nosuchufrag{n}:x")),
                1 => vec![20 + (n % 40) as u8; 200], // DTLS-shaped
                2 => {
                    let mut rtp = vec![0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9];
                    rtp.extend_from_slice(&[0xAB; 1000]);
                    rtp
                }
                3 => vec![0xFF; 1],
                _ => n.to_be_bytes().repeat(300),
            };
            s.send_to(&datagram, target).await.unwrap();
            sent += 1;
        }
        // A sender's hundred at a time, so the socket's receive buffer never overflows.
        eventually(
            "every stranger's datagram counted as unroutable",
            WAIT,
            || async { metric(&server, "datagrams_unroutable_total").await >= sent },
        )
        .await;
    }
    assert_eq!(metric(&server, "datagrams_unroutable_total").await, sent);
    assert_eq!(
        metric(&server, "publishers").await + metric(&server, "viewers").await,
        0
    );

    // Real peers are unaffected.
    let b = base(&server);
    let publisher = publish(PublishConfig::new(&b, "demo", KEY)).await.unwrap();
    publisher.wait_connected(WAIT).await.unwrap();
    let viewer = view(ViewConfig::new(&b, "demo")).await.unwrap();
    let stats = viewer
        .wait_until(|s| s.video.pattern_ok >= 60, WAIT)
        .await
        .unwrap();
    assert_eq!(stats.pattern_mismatches(), 0, "{stats:?}");
    assert_eq!(stats.video.lost, 0, "{stats:?}");
    viewer.stop().await.unwrap();
    publisher.stop().await.unwrap();
    server.shutdown().await;
}
