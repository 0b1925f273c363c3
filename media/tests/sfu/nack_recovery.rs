//! On the virtual clock (`common`), under loss. SFU → viewer: the viewer's NACKs are
//! answered from the stream's history, and it ends up with every packet, each once, also with
//! random loss, jitter, reordering and duplication. Publisher → SFU: webrtc-rs's NACK generator
//! asks the publisher again, but str0m retransmits only over RTX, which the SFU's publisher
//! answer does not negotiate (nor would the SFU forward it): the packet is lost for every
//! viewer (asserted as it is).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::{join, on_air, Impairment, Leg, Net, Publisher, What};
use media::MediaConfig;
use str0m::rtp::rtcp::{NackEntry, Rtcp};
use str0m::rtp::RawPacket;

/// A live stream "demo" with one connected viewer; the publisher has sent half a second more.
fn watched(raw_packets: bool) -> (Net, Publisher, usize) {
    let mut net = Net::new(MediaConfig::default());
    net.raw_packets = raw_packets;
    let (mut net, mut media) = on_air(net, true, Duration::from_millis(500));
    let viewer = join(
        &mut net,
        &mut media,
        &["10.0.0.3:6000"],
        Duration::from_millis(500),
    )[0];
    (net, media, viewer)
}

/// The viewer's video sequence numbers (extended), in arrival order.
fn video_seqs(net: &Net, viewer: usize) -> Vec<u64> {
    let v = &net.peers[viewer];
    v.rtp(v.video_pt()).map(|p| *p.seq_no).collect()
}

/// Sequence numbers of video packets the network dropped on `leg` of `peer`.
fn dropped_video(net: &Net, peer: usize, leg: Leg, pt: u8) -> Vec<u16> {
    net.dropped
        .iter()
        .filter(|l| l.peer == peer && l.leg == leg)
        .filter_map(|l| match l.what {
            What::Rtp { pt: p, seq, .. } if p == pt => Some(seq),
            _ => None,
        })
        .collect()
}

/// The sequence numbers one NACK entry names (RFC 4585 §6.2.1: PID and a bitmask of the 16
/// that follow).
fn nacked_seqs(entry: &NackEntry) -> impl Iterator<Item = u16> + '_ {
    std::iter::once(entry.pid).chain(
        (0..16)
            .filter(|i| entry.blp & (1 << i) != 0)
            .map(|i| entry.pid.wrapping_add(i + 1)),
    )
}

/// Every sequence number from the first to the last, each exactly once.
fn assert_complete(seqs: &[u64]) {
    let set: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(set.len(), seqs.len(), "a packet arrived twice");
    let (first, last) = (*set.first().unwrap(), *set.last().unwrap());
    let missing: Vec<u64> = (first..=last).filter(|s| !set.contains(s)).collect();
    assert!(missing.is_empty(), "never arrived: {missing:?}");
}

#[test]
fn video_lost_on_the_way_to_a_viewer_is_retransmitted_from_the_history() {
    let (mut net, mut media, viewer) = watched(true);
    let pt = *net.peers[viewer].video_pt();
    net.drop_next(viewer, Leg::Down, 3, move |w| w.is_rtp(pt));
    media.play(&mut net, Duration::from_secs(1));

    let lost = dropped_video(&net, viewer, Leg::Down, pt);
    assert_eq!(lost.len(), 3);
    let nacked: BTreeSet<u16> = net.peers[viewer]
        .events
        .iter()
        .filter_map(|e| match e.as_raw_packet() {
            Some(RawPacket::RtcpTx(Rtcp::Nack(n))) => Some(n),
            _ => None,
        })
        .flat_map(|n| n.reports.iter().flat_map(nacked_seqs))
        .collect();
    assert!(
        lost.iter().all(|s| nacked.contains(s)),
        "the viewer NACKed {nacked:?}, lost {lost:?}"
    );
    assert_eq!(net.count(|m| &m.packets_retransmitted), 3);
    assert_complete(&video_seqs(&net, viewer));
}

#[test]
fn under_random_loss_jitter_reordering_and_duplication_a_viewer_gets_every_packet_once() {
    let (mut net, mut media, viewer) = watched(false);
    let pt = *net.peers[viewer].video_pt();
    net.seed(7);
    net.impair(
        viewer,
        Leg::Down,
        Impairment {
            loss: 0.1,
            jitter: Duration::from_millis(10),
            reorder: 0.05,
            reorder_by: Duration::from_millis(40),
            duplicate: 0.05,
            ..Impairment::default()
        },
    );
    // The viewer's NACKs cross a lossy path too.
    net.impair(
        viewer,
        Leg::Up,
        Impairment {
            loss: 0.05,
            ..Impairment::default()
        },
    );
    media.play(&mut net, Duration::from_secs(3));
    // A clean last second: the last losses are repaired.
    net.impair(viewer, Leg::Down, Impairment::default());
    net.impair(viewer, Leg::Up, Impairment::default());
    media.play(&mut net, Duration::from_secs(1));

    let lost = dropped_video(&net, viewer, Leg::Down, pt);
    assert!(lost.len() >= 5, "the loss happened: {lost:?}");
    let retransmitted = net.count(|m| &m.packets_retransmitted);
    assert!(
        retransmitted >= lost.len() as u64,
        "{retransmitted} retransmissions for {} losses",
        lost.len()
    );
    assert!(net.peers[viewer].connected());
    assert_complete(&video_seqs(&net, viewer));
}

#[test]
fn video_lost_on_the_way_from_the_publisher_is_nacked_but_not_recovered() {
    let (mut net, mut media, viewer) = watched(true);
    let publisher = media.peer;
    let pt = *media.video.pt;
    net.drop_next(publisher, Leg::Up, 2, move |w| w.is_rtp(pt));
    media.play(&mut net, Duration::from_secs(1));

    let lost = dropped_video(&net, publisher, Leg::Up, pt);
    assert_eq!(lost.len(), 2);
    // webrtc-rs's NACK generator asks the publisher for them...
    let nacked: BTreeSet<u16> = net.peers[publisher]
        .events
        .iter()
        .filter_map(|e| match e.as_raw_packet() {
            Some(RawPacket::RtcpRx(Rtcp::Nack(n))) => Some(n),
            _ => None,
        })
        .flat_map(|n| n.reports.iter().flat_map(nacked_seqs))
        .collect();
    assert!(
        lost.iter().all(|s| nacked.contains(s)),
        "the SFU NACKed {nacked:?}, lost {lost:?}"
    );
    // ...but str0m resends only over RTX, which the publisher's answer does not negotiate.
    let video = media.video.ssrc;
    let resent = net.peers[publisher]
        .events
        .iter()
        .filter(|e| {
            matches!(e.as_raw_packet(), Some(RawPacket::RtpTx(h, _))
                if h.ssrc == video && lost.contains(&h.sequence_number))
        })
        .count();
    assert_eq!(resent, lost.len(), "each sent once, never again");
    // So the viewer never gets them (its own NACKs find nothing in the history either).
    let seqs = video_seqs(&net, viewer);
    let first = seqs[0];
    let missing: Vec<u64> = (first..=*seqs.iter().max().unwrap())
        .filter(|s| !seqs.contains(s))
        .collect();
    assert_eq!(missing.len(), lost.len(), "{missing:?}");
    assert_eq!(net.count(|m| &m.packets_retransmitted), 0);
}
