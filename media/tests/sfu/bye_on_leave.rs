//! On the virtual clock (`common`): a publisher that ends its stream (WHIP DELETE:
//! `Sfu::close` of its session; or its key rotated: `Sfu::end_publisher`) takes it off the air
//! at once. The stream goes `Offline`, and each connected viewer gets an RTCP BYE naming the
//! SSRCs it was sent (str0m shows it only as a raw RTCP packet: it takes no action on a BYE)
//! before its session is removed; nothing is forwarded after it.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::{join, on_air, Net, Publisher};
use media::sfu::StreamEvent;
use media::MediaConfig;
use str0m::rtp::rtcp::Rtcp;
use str0m::rtp::RawPacket;
use str0m::Event;

/// A live stream "demo" with audio and video and two connected viewers (which report raw
/// RTCP), a second into watching.
fn watched() -> (Net, Publisher, Vec<usize>) {
    let (mut net, mut media) = on_air(
        Net::new(MediaConfig::default()),
        true,
        Duration::from_millis(500),
    );
    net.raw_packets = true;
    let viewers = join(
        &mut net,
        &mut media,
        &["10.0.0.3:6000", "10.0.0.4:6000"],
        Duration::from_secs(1),
    );
    assert_eq!(net.sfu.session_count(), 3);
    (net, media, viewers)
}

/// The SSRCs the viewer received RTP on.
fn ssrcs(net: &Net, viewer: usize) -> BTreeSet<u32> {
    net.peers[viewer]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::RtpPacket(p) => Some(*p.header.ssrc),
            _ => None,
        })
        .collect()
}

/// The SSRCs of the BYEs the viewer received, and the index of the first in its events.
fn byes(net: &Net, viewer: usize) -> (BTreeSet<u32>, Option<usize>) {
    let mut sources = BTreeSet::new();
    let mut first = None;
    for (i, e) in net.peers[viewer].events.iter().enumerate() {
        if let Some(RawPacket::RtcpRx(Rtcp::Goodbye(bye))) = e.as_raw_packet() {
            first.get_or_insert(i);
            sources.extend(bye.reports.iter().map(|s| **s));
        }
    }
    (sources, first)
}

fn assert_told_and_removed(net: &Net, viewers: &[usize]) {
    assert!(net
        .events
        .iter()
        .any(|e| matches!(e, StreamEvent::Offline { stream } if stream == "demo")));
    assert_eq!(net.sfu.session_count(), 0, "the viewers' sessions are gone");
    assert!(net.sfu.streams().is_empty());
    for &v in viewers {
        let got = ssrcs(net, v);
        assert_eq!(got.len(), 2, "audio and video: {got:?}");
        let (bye, first) = byes(net, v);
        assert_eq!(bye, got, "viewer {v}: a BYE for each SSRC it was sent");
        let after_bye = net.peers[v].events[first.unwrap()..]
            .iter()
            .filter(|e| matches!(e, Event::RtpPacket(_)))
            .count();
        assert_eq!(after_bye, 0, "viewer {v}: no media after the BYE");
    }
}

#[test]
fn a_publisher_closing_its_session_says_bye_to_every_viewer() {
    let (mut net, mut media, viewers) = watched();
    let session = net.peers[media.peer].session.unwrap();
    net.sfu.close(net.now, session).expect("its session");
    // The publisher, unaware, sends on: nothing of it is forwarded any more.
    media.play(&mut net, Duration::from_millis(500));
    assert_told_and_removed(&net, &viewers);
}

#[test]
fn a_publisher_ended_by_the_platform_says_bye_too() {
    let (mut net, mut media, viewers) = watched();
    assert!(net.sfu.end_publisher(net.now, "demo", "stream key rotated"));
    media.play(&mut net, Duration::from_millis(500));
    assert_told_and_removed(&net, &viewers);
}
