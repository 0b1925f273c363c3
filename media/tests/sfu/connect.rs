//! Connecting on the virtual clock (`common`): a WHIP publisher's ICE and DTLS complete and
//! its stream goes live in simulated milliseconds; an offer that never connects is dropped at
//! the connect timeout without the test waiting for it.

use std::time::Duration;

use crate::common::Net;
use media::sfu::StreamEvent;
use media::MediaConfig;
use str0m::media::Direction;

#[test]
fn a_publisher_connects_and_its_stream_goes_live() {
    let mut net = Net::new(MediaConfig::default());
    net.publisher("10.0.0.2:5000", "demo");
    let took = net.run_until(Duration::from_secs(5), |n| {
        n.peers[0].connected()
            && n.events
                .iter()
                .any(|e| matches!(e, StreamEvent::Live { stream } if stream == "demo"))
    });
    // ICE (one round trip) and the DTLS handshake (two) at 5 ms each way, and no timer in
    // between: webrtc-rs's DTLS ClientHello once waited for ICE's next 200 ms tick
    // (vendor/README.md).
    let rtt = net.delay * 2;
    assert!(took <= rtt * 4, "connected after {took:?}");
    assert_eq!(net.sfu.session_count(), 1);
}

#[test]
fn an_offer_that_never_connects_is_dropped_at_the_connect_timeout() {
    // Shorter than ICE's own give-up (disconnected 3 s + failed 6 s), so this is the timer
    // that removes it.
    let config = MediaConfig {
        connect_timeout: Duration::from_secs(2),
        ..MediaConfig::default()
    };
    let timeout = config.connect_timeout;
    let mut net = Net::new(config);
    let p = net.add_peer("10.0.0.2:5000");
    let (offer, _pending) = net.offer(p, Direction::SendOnly);
    // The answer never reaches the client: it never sends a check.
    net.sfu
        .publish(net.now, "demo", &offer.to_sdp_string(), net.client_ip(p))
        .expect("answered");
    assert_eq!(net.sfu.session_count(), 1);
    net.advance(timeout - Duration::from_millis(100));
    assert_eq!(net.sfu.session_count(), 1, "still waiting");
    net.advance(Duration::from_millis(200));
    assert_eq!(net.sfu.session_count(), 0, "dropped at the connect timeout");
}
