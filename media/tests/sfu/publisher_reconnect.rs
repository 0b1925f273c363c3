//! On the virtual clock (`common`): a publisher that drops off the network (its ICE
//! consent fails) leaves its stream on air for `reconnect_grace`. A new publisher session for
//! the stream within the grace takes over: the viewer stays connected and keeps receiving, its
//! sequence numbers go on without a jump and its timestamps advance by the time the stream was
//! silent. Past the grace the stream goes `Offline` and its viewers are removed.

use std::time::Duration;

use crate::common::{join, on_air, Net, Publisher};
use media::sfu::StreamEvent;
use media::MediaConfig;
use str0m::media::Pt;
use str0m::rtp::RtpPacket;
use str0m::{Event, IceConnectionState};

/// A live stream "demo" with audio and video, watched by one viewer for a second.
fn watched(config: MediaConfig) -> (Net, Publisher, usize) {
    let (mut net, mut media) = on_air(Net::new(config), true, Duration::from_millis(500));
    let viewer = join(
        &mut net,
        &mut media,
        &["10.0.0.3:6000"],
        Duration::from_secs(1),
    )[0];
    (net, media, viewer)
}

/// Cut the publisher off and run until the SFU has given it up (ICE consent failed).
fn drop_publisher(net: &mut Net, media: &Publisher) {
    net.peers[media.peer].cut = true;
    let sessions = net.sfu.session_count();
    net.run_until(Duration::from_secs(15), |n| {
        n.sfu.session_count() == sessions - 1
    });
    let s = net.sfu.streams();
    assert!(
        s.len() == 1 && s[0].reconnecting && s[0].live && s[0].viewers == 1,
        "on air, waiting: {s:?}"
    );
}

fn packets(net: &Net, viewer: usize, pt: Pt) -> Vec<&RtpPacket> {
    net.peers[viewer].rtp(pt).collect()
}

fn disconnected(net: &Net, viewer: usize) -> bool {
    net.peers[viewer].events.iter().any(|e| {
        matches!(
            e,
            Event::IceConnectionStateChange(IceConnectionState::Disconnected)
        )
    })
}

fn offline(net: &Net) -> bool {
    net.events
        .iter()
        .any(|e| matches!(e, StreamEvent::Offline { stream } if stream == "demo"))
}

#[test]
fn a_publisher_back_within_the_grace_continues_the_viewers_numbering() {
    let (mut net, media, viewer) = watched(MediaConfig::default());
    let (video_pt, audio_pt) = (net.peers[viewer].video_pt(), net.peers[viewer].audio_pt());
    let before_video = packets(&net, viewer, video_pt).len();
    let before_audio = packets(&net, viewer, audio_pt).len();
    assert!(
        before_video > 30 && before_audio >= 45,
        "{before_video} video, {before_audio} audio packets in the first second"
    );

    drop_publisher(&mut net, &media);
    let dropped_at = net.now;
    // It comes back from another port, as a restarted client would.
    let back = net
        .try_publisher("10.0.0.2:5001", "demo")
        .expect("the stream takes a new publisher");
    net.run_until(Duration::from_secs(5), |n| n.peers[back].connected());
    assert!(net.now - dropped_at < MediaConfig::default().reconnect_grace);
    let mut media = Publisher::new(&mut net, back, true);
    media.play(&mut net, Duration::from_secs(2));

    assert!(net.peers[viewer].connected() && !disconnected(&net, viewer));
    assert_eq!(net.sfu.session_count(), 2);
    let s = net.sfu.streams();
    assert!(
        s[0].live && !s[0].reconnecting && s[0].viewers == 1,
        "{s:?}"
    );
    assert!(!offline(&net));
    let lives = net
        .events
        .iter()
        .filter(|e| matches!(e, StreamEvent::Live { .. }))
        .count();
    assert_eq!(lives, 1, "one broadcast: no second Live");

    for (pt, before, clock_rate) in [
        (video_pt, before_video, 90_000),
        (audio_pt, before_audio, 48_000),
    ] {
        let all = packets(&net, viewer, pt);
        assert!(all.len() > before + 20, "the viewer keeps receiving");
        let (old, new) = (all[before - 1], all[before]);
        assert_eq!(
            new.header.sequence_number,
            old.header.sequence_number.wrapping_add(1),
            "sequence numbers go on (pt {pt})"
        );
        // The RTP clock advanced by the silence, as the wall clock did (at the SFU, which is
        // the same one-way delay from both).
        let ticks = new.header.timestamp.wrapping_sub(old.header.timestamp);
        let silence = new.timestamp - old.timestamp;
        let expected = (silence.as_micros() * clock_rate / 1_000_000) as u32;
        assert!(
            ticks.abs_diff(expected) <= 1,
            "pt {pt}: {ticks} ticks for {silence:?} ({expected} expected)"
        );
        // Then the new source's own spacing.
        for w in all[before..].windows(2) {
            assert_eq!(
                w[1].header.sequence_number,
                w[0].header.sequence_number.wrapping_add(1)
            );
            assert!(w[1].header.timestamp.wrapping_sub(w[0].header.timestamp) as i32 > 0);
        }
    }
    // The new source's first video is a keyframe (its first frame; it was asked for one too).
    let v = packets(&net, viewer, video_pt);
    assert!(crate::common::is_vp8_keyframe(&v[before_video].payload));
}

#[test]
fn past_the_grace_the_stream_goes_offline_and_its_viewers_are_removed() {
    let config = MediaConfig {
        reconnect_grace: Duration::from_secs(5),
        ..MediaConfig::default()
    };
    let grace = config.reconnect_grace;
    let (mut net, media, viewer) = watched(config);
    drop_publisher(&mut net, &media);
    net.advance(grace - Duration::from_millis(100));
    assert_eq!(net.sfu.session_count(), 1, "the viewer is kept meanwhile");
    assert!(!offline(&net));
    assert!(!disconnected(&net, viewer), "and stays connected");

    net.advance(Duration::from_millis(200));
    assert!(offline(&net));
    assert_eq!(net.sfu.session_count(), 0, "the viewer is gone");
    assert!(net.sfu.streams().is_empty());
    assert!(
        net.try_viewer("10.0.0.4:6000", "demo").is_err(),
        "nothing to watch"
    );
}
