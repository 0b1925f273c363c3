//! On the virtual clock (tests/common): a viewer that drops off the network is removed once
//! its ICE consent fails (disconnected, then failed), and the stream and its other viewers go
//! on; the test takes milliseconds, not the ~9 s of the real-time version.

mod common;

use std::time::Duration;

use common::Net;
use media::MediaConfig;
use str0m::media::Direction;

#[test]
fn a_viewer_gone_silent_is_removed_when_its_consent_fails() {
    let config = MediaConfig::default();
    let gone_after = config.ice_disconnected_timeout + config.ice_failed_timeout;
    let mut net = Net::new(config);
    let publisher = net.add_peer("10.0.0.2:5000");
    let (offer, pending) = net.offer(publisher, Direction::SendOnly);
    let answer = net
        .sfu
        .publish(
            net.now,
            "demo",
            &offer.to_sdp_string(),
            net.client_ip(publisher),
        )
        .unwrap();
    net.accept(publisher, pending, &answer);
    net.run_until(Duration::from_secs(5), |n| n.peers[0].connected());

    let mut viewers = Vec::new();
    for addr in ["10.0.0.3:6000", "10.0.0.4:6000"] {
        let v = net.add_peer(addr);
        let (offer, pending) = net.offer(v, Direction::RecvOnly);
        let answer = net
            .sfu
            .view(net.now, "demo", &offer.to_sdp_string(), net.client_ip(v))
            .unwrap();
        net.accept(v, pending, &answer);
        viewers.push(v);
    }
    net.run_until(Duration::from_secs(5), |n| {
        viewers.iter().all(|v| n.peers[*v].connected())
    });
    assert_eq!(net.sfu.session_count(), 3);

    net.peers[viewers[0]].cut = true;
    net.advance(gone_after - Duration::from_secs(2));
    assert_eq!(
        net.sfu.session_count(),
        3,
        "not yet: consent has not failed"
    );
    net.advance(Duration::from_secs(6));
    assert_eq!(net.sfu.session_count(), 2, "the silent viewer is gone");
    assert!(
        net.sfu
            .streams()
            .iter()
            .any(|s| s.name == "demo" && s.viewers == 1),
        "{:?}",
        net.sfu.streams()
    );
}
