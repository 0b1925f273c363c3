//! On the virtual clock (`common`): a viewer that drops off the network is removed once
//! its ICE consent fails (disconnected, then failed), and the stream and its other viewers go
//! on; the test takes milliseconds, not the ~9 s of the real-time version.

use std::time::Duration;

use crate::common::Net;
use media::MediaConfig;

#[test]
fn a_viewer_gone_silent_is_removed_when_its_consent_fails() {
    let config = MediaConfig::default();
    let gone_after = config.ice_disconnected_timeout + config.ice_failed_timeout;
    let mut net = Net::new(config);
    net.publisher("10.0.0.2:5000", "demo");
    net.run_until(Duration::from_secs(5), |n| n.peers[0].connected());

    let viewers: Vec<usize> = ["10.0.0.3:6000", "10.0.0.4:6000"]
        .into_iter()
        .map(|addr| net.viewer(addr, "demo"))
        .collect();
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
