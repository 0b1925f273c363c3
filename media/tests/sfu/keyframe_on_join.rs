//! On the virtual clock (`common`): a viewer joining a live VP8 stream gets a keyframe
//! first. With the GOP cache (the default) it is started from the stream's current GOP the
//! moment it connects, and the publisher is not asked; without one the SFU asks the publisher
//! (PLI) and the viewer's video starts at the keyframe that answers it.

use std::time::Duration;

use crate::common::{is_vp8_keyframe, on_air, Net, Publisher};
use media::MediaConfig;

/// A live stream "demo" with a second of video sent (one keyframe, at its start).
fn live(config: MediaConfig) -> (Net, Publisher) {
    let (net, media) = on_air(Net::new(config), false, Duration::from_secs(1));
    assert_eq!(media.keyframes, 1);
    (net, media)
}

#[test]
fn a_joining_viewer_starts_from_the_current_gop_without_a_pli() {
    let (mut net, mut media) = live(MediaConfig::default());
    let viewer = net.viewer("10.0.0.3:6000", "demo");
    net.run_until(Duration::from_secs(2), |n| n.peers[viewer].connected());
    let connected_at = net.now;
    media.play(&mut net, Duration::from_secs(1));

    let v = &net.peers[viewer];
    let pt = v.video_pt();
    let first = v.rtp(pt).next().expect("video reached the viewer");
    assert!(is_vp8_keyframe(&first.payload), "{:?}", first.payload);
    assert!(
        first.timestamp <= connected_at + net.delay * 2,
        "the GOP came at once: {:?} after connecting",
        first.timestamp - connected_at
    );
    // The whole second since the keyframe, then what follows, without a gap.
    let seqs: Vec<u64> = v.rtp(pt).map(|p| *p.seq_no).collect();
    assert!(seqs.len() >= 60, "{} packets", seqs.len());
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert_eq!(media.keyframes, 1, "the publisher was not asked again");
    assert_eq!(net.count(|m| &m.plis_sent), 0);
}

#[test]
fn without_a_gop_cache_a_joining_viewer_gets_the_keyframe_its_pli_asked_for() {
    let (mut net, mut media) = live(MediaConfig {
        gop_cache_bytes: 0,
        ..MediaConfig::default()
    });
    let viewer = net.viewer("10.0.0.3:6000", "demo");
    net.run_until(Duration::from_secs(2), |n| n.peers[viewer].connected());
    let connected_at = net.now;
    // The publisher answers a keyframe request with its next frame.
    media.play(&mut net, Duration::from_secs(2));
    assert_eq!(net.count(|m| &m.plis_sent), 1);
    assert_eq!(media.keyframes, 2, "the viewer's join asked for a keyframe");
    let v = &net.peers[viewer];
    let video: Vec<_> = v.rtp(v.video_pt()).collect();
    let first_key = video
        .iter()
        .position(|p| is_vp8_keyframe(&p.payload))
        .expect("a keyframe reached the viewer");
    // Forwarding starts when the viewer's connection is up, not at a keyframe: a delta frame
    // already on its way may come first (a decoder drops it).
    assert!(
        first_key <= 1,
        "{first_key} delta frames before the keyframe"
    );
    // PLI out (one-way delay), the publisher's next frame (at most a frame later), back.
    let by = connected_at + net.delay * 2 + crate::common::FRAME + net.delay * 2;
    assert!(
        video[first_key].timestamp <= by,
        "keyframe {:?} after connecting",
        video[first_key].timestamp - connected_at
    );
}
