//! On the virtual clock (`common`): instant start from the stream's GOP (`sfu::gop`). A
//! viewer joining a second after the last keyframe gets the keyframe at once, the rest of the
//! GOP as a fast-forward whose RTP timestamps keep pace with its arrival (so a jitter buffer
//! adds no delay), and is then live, one frame behind the publisher, without a gap.

use std::time::Duration;

use crate::common::{is_vp8_keyframe, on_air, Net, Publisher, FRAME};
use media::MediaConfig;

/// A live stream "demo" with `secs` of video sent (one keyframe, at its start).
fn live(config: MediaConfig, secs: u64) -> (Net, Publisher) {
    let (net, media) = on_air(Net::new(config), true, Duration::from_secs(secs));
    assert_eq!(media.keyframes, 1);
    (net, media)
}

#[test]
fn a_viewer_catches_up_from_the_gop_and_its_timestamps_keep_pace_with_arrival() {
    let (mut net, mut media) = live(MediaConfig::default(), 1);
    let viewer = net.viewer("10.0.0.3:6000", "demo");
    net.run_until(Duration::from_secs(2), |n| n.peers[viewer].connected());
    let connected_at = net.peers[viewer].connected_at().unwrap();
    media.play(&mut net, Duration::from_secs(2));

    let v = &net.peers[viewer];
    let video: Vec<_> = v.rtp(v.video_pt()).collect();
    let first = video[0];
    assert!(is_vp8_keyframe(&first.payload));
    let wait = first.timestamp - connected_at;
    assert!(wait <= net.delay * 2, "keyframe {wait:?} after connecting");
    // Every frame: sequence numbers without a gap, and RTP time since the keyframe (90 kHz)
    // within a frame of arrival time since it: what a jitter buffer needs to add no delay.
    for w in video.windows(2) {
        assert_eq!(*w[1].seq_no, *w[0].seq_no + 1);
    }
    for p in &video {
        let rtp_ms = p.header.timestamp.wrapping_sub(first.header.timestamp) as f64 / 90.0;
        let arrival_ms = (p.timestamp - first.timestamp).as_secs_f64() * 1000.0;
        assert!(
            (rtp_ms - arrival_ms).abs() <= FRAME.as_secs_f64() * 1000.0 + 1.0,
            "seq {}: RTP {rtp_ms:.1} ms, arrival {arrival_ms:.1} ms",
            *p.seq_no
        );
    }
    // Caught up: the GOP was a second old; at 4x real time that is ~1/3 s. From then on,
    // frames arrive one network delay after the publisher sent them, at its pace.
    let publisher_frames = media.video.frames as u64;
    let last = video.last().unwrap();
    assert_eq!(
        *last.seq_no, publisher_frames,
        "the viewer has the newest frame"
    );
    let live: Vec<_> = video
        .iter()
        .filter(|p| p.timestamp > connected_at + Duration::from_millis(450))
        .collect();
    assert!(live.len() >= 40, "{} live frames", live.len());
    for w in live.windows(2) {
        let gap = w[1].timestamp - w[0].timestamp;
        assert!(
            gap >= FRAME - Duration::from_millis(2) && gap <= FRAME + Duration::from_millis(2),
            "live frames arrive at the publisher's pace: {gap:?}"
        );
    }
    // Audio went live at once, alongside.
    let audio: Vec<_> = v.rtp(v.audio_pt()).collect();
    assert!(audio[0].timestamp - connected_at <= Duration::from_millis(30));
    assert_eq!(net.count(|m| &m.plis_sent), 0, "no keyframe was asked for");
}

#[test]
fn a_gop_too_large_to_keep_asks_for_a_keyframe_and_the_cache_starts_again() {
    // Room for a dozen of the harness's small frames.
    let (mut net, mut media) = live(
        MediaConfig {
            gop_cache_bytes: 2_000,
            ..MediaConfig::default()
        },
        0,
    );
    media.play(&mut net, Duration::from_secs(1));
    assert!(
        net.count(|m| &m.plis_sent) >= 1,
        "the cache overflowed and asked the publisher"
    );
    assert!(media.keyframes >= 2, "{} keyframes", media.keyframes);
    let plis = net.count(|m| &m.plis_sent);
    let keyframes = media.keyframes;
    let viewer = net.viewer("10.0.0.3:6000", "demo");
    net.run_until(Duration::from_secs(2), |n| n.peers[viewer].connected());
    media.play(&mut net, Duration::from_millis(100));
    let v = &net.peers[viewer];
    let first = v.rtp(v.video_pt()).next().expect("video");
    assert!(is_vp8_keyframe(&first.payload));
    // The viewer started from the cache, or (if it had just overflowed) asked once.
    assert!(net.count(|m| &m.plis_sent) <= plis + 1);
    assert!(media.keyframes <= keyframes + 1);
}

#[test]
fn a_lost_gop_packet_is_resent_with_the_timestamp_it_was_first_sent_with() {
    let (mut net, mut media) = live(MediaConfig::default(), 1);
    let viewer = net.viewer("10.0.0.3:6000", "demo");
    // The 3rd to 5th video datagrams to the viewer are lost: inside the fast-forward.
    let pt = *net.peers[viewer].video_pt();
    let mut seen = 0;
    net.drop_next(viewer, crate::common::Leg::Down, 3, move |w| {
        let video = w.is_rtp(pt);
        seen += usize::from(video);
        video && seen >= 3
    });
    net.run_until(Duration::from_secs(2), |n| n.peers[viewer].connected());
    media.play(&mut net, Duration::from_secs(2));
    assert_eq!(net.dropped.len(), 3, "{:?}", net.dropped);
    let v = &net.peers[viewer];
    let mut video: Vec<_> = v.rtp(v.video_pt()).collect();
    video.sort_by_key(|p| *p.seq_no);
    video.dedup_by_key(|p| *p.seq_no);
    for w in video.windows(2) {
        assert_eq!(*w[1].seq_no, *w[0].seq_no + 1, "recovered");
        // Frame order is RTP time order: a resent packet kept its fast-forward timestamp (its
        // original one would be up to 4x further on).
        let step = w[1].header.timestamp.wrapping_sub(w[0].header.timestamp);
        assert!(
            step > 0 && step < 90 * 100,
            "seq {}: step {step}",
            *w[1].seq_no
        );
    }
    assert!(net.count(|m| &m.packets_retransmitted) >= 3);
}
