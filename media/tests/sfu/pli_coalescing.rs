//! On the virtual clock (`common`): keyframe requests reach the publisher coalesced. Viewers
//! joining together cost it one PLI, and requests closer together than
//! `MediaConfig::pli_min_interval` become one PLI sent when the interval is up: delayed, not
//! lost. The GOP cache is off here, so that joins ask the publisher (with it, they do not: see
//! keyframe_on_join).

use std::time::{Duration, Instant};

use crate::common::{is_vp8_keyframe, on_air, Net, Publisher};
use media::MediaConfig;
use str0m::media::KeyframeRequestKind;

fn config() -> MediaConfig {
    MediaConfig {
        gop_cache_bytes: 0,
        ..MediaConfig::default()
    }
}

/// A live stream "demo" that has sent a second of video.
fn live(config: MediaConfig) -> (Net, Publisher) {
    let (net, media) = on_air(Net::new(config), false, Duration::from_secs(1));
    assert!(net.peers[media.peer].keyframe_requests().is_empty());
    (net, media)
}

/// Play until every viewer in `viewers` is connected (the publisher keeps sending).
fn play_until_connected(net: &mut Net, media: &mut Publisher, viewers: &[usize]) {
    media.play_until(net, Duration::from_secs(3), |n| {
        viewers.iter().all(|v| n.peers[*v].connected())
    });
}

fn got_a_keyframe(net: &Net, viewer: usize) -> bool {
    let v = &net.peers[viewer];
    v.rtp(v.video_pt()).any(|p| is_vp8_keyframe(&p.payload))
}

#[test]
fn viewers_joining_together_cost_the_publisher_one_pli() {
    let (mut net, mut media) = live(config());
    let viewers: Vec<usize> = (0..5)
        .map(|i| net.viewer(&format!("10.0.1.{i}:6000"), "demo"))
        .collect();
    // Longer than the interval: a repeated PLI would show.
    media.play(&mut net, Duration::from_secs(1));
    assert!(viewers.iter().all(|v| net.peers[*v].connected()));

    assert_eq!(
        net.count(|m| &m.keyframe_requests),
        5,
        "one request per join, before coalescing"
    );
    assert_eq!(net.count(|m| &m.plis_sent), 1);
    assert_eq!(net.peers[media.peer].keyframe_requests().len(), 1);
    assert_eq!(media.keyframes, 2, "the first frame, and the one answering");
    for v in viewers {
        assert!(got_a_keyframe(&net, v), "viewer {v} got the keyframe");
    }
}

#[test]
fn joins_within_the_interval_get_one_pli_when_it_is_up() {
    // Long enough for two more viewers to connect inside it (ICE and DTLS take ~200 ms here).
    let config = MediaConfig {
        pli_min_interval: Duration::from_secs(1),
        ..config()
    };
    let interval = config.pli_min_interval;
    let (mut net, mut media) = live(config);
    let first = net.viewer("10.0.1.1:6000", "demo");
    play_until_connected(&mut net, &mut media, &[first]);
    media.play(&mut net, Duration::from_millis(100));
    let plis = net.peers[media.peer].keyframe_requests();
    assert_eq!(plis.len(), 1, "the first join's PLI");
    assert_eq!(media.keyframes, 2, "answered: nothing is pending");

    // Two more joins inside the interval since that PLI: one more PLI, when it is up.
    let second = net.viewer("10.0.1.2:6000", "demo");
    media.play(&mut net, Duration::from_millis(50));
    let third = net.viewer("10.0.1.3:6000", "demo");
    play_until_connected(&mut net, &mut media, &[second, third]);
    assert!(
        net.now < plis[0] + interval,
        "both joined within the interval"
    );
    media.play(&mut net, Duration::from_secs(1));

    let plis = net.peers[media.peer].keyframe_requests();
    assert_eq!(plis.len(), 2, "{plis:?}");
    assert_eq!(
        plis[1] - plis[0],
        interval,
        "the second PLI goes out exactly when the interval is up"
    );
    assert_eq!(net.count(|m| &m.keyframe_requests), 3);
    assert_eq!(net.count(|m| &m.plis_sent), 2);
    for v in [first, second, third] {
        assert!(got_a_keyframe(&net, v), "viewer {v} got a keyframe");
    }
}

#[test]
fn a_viewer_asking_every_50_ms_gets_a_pli_per_interval_and_its_last_is_not_lost() {
    let config = config();
    let interval = config.pli_min_interval;
    let (mut net, mut media) = live(config);
    let viewer = net.viewer("10.0.1.1:6000", "demo");
    play_until_connected(&mut net, &mut media, &[viewer]);
    media.play(&mut net, Duration::from_millis(500));
    let joined = net.peers[media.peer].keyframe_requests().len();
    assert_eq!(joined, 1);

    // The viewer's own PLIs, faster than the limit, for 1.2 s.
    let ssrc = {
        let v = &net.peers[viewer];
        v.rtp(v.video_pt()).last().expect("video").header.ssrc
    };
    let mut asked: Vec<Instant> = Vec::new();
    for _ in 0..24 {
        net.peers[viewer]
            .rtc
            .direct_api()
            .stream_rx(&ssrc)
            .expect("the video stream")
            .request_keyframe(KeyframeRequestKind::Pli);
        asked.push(net.now);
        media.play(&mut net, Duration::from_millis(50));
    }
    media.play(&mut net, Duration::from_secs(1));

    let plis: Vec<Instant> = net.peers[media.peer].keyframe_requests()[joined..].to_vec();
    assert_eq!(
        net.count(|m| &m.keyframe_requests) as usize,
        1 + asked.len(),
        "every PLI of the viewer reached the SFU"
    );
    for w in plis.windows(2) {
        assert_eq!(w[1] - w[0], interval, "PLIs one interval apart");
    }
    // 1.15 s of requests: a PLI at once, then one at the end of each interval in which more
    // came (at 300, 600, 900 and 1200 ms).
    let span = *asked.last().unwrap() - asked[0];
    let expected = 1 + span.as_millis().div_ceil(interval.as_millis()) as usize;
    assert_eq!(
        plis.len(),
        expected,
        "{} requests over {span:?}: {plis:?}",
        asked.len()
    );
    assert!(
        *plis.last().unwrap() > *asked.last().unwrap(),
        "the last request was answered by a (delayed) PLI"
    );
}
