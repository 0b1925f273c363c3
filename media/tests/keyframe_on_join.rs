//! On the virtual clock (tests/common): a viewer joining a live VP8 stream makes the SFU ask
//! the publisher for a keyframe (PLI), and the first video packet the viewer gets is a
//! keyframe's.

mod common;

use std::time::Duration;

use common::Net;
use media::MediaConfig;
use str0m::format::Codec;
use str0m::media::Pt;
use str0m::rtp::{RtpWrite, SeqNo, Ssrc};
use str0m::Event;

const FRAME: Duration = Duration::from_millis(33);

/// A one-packet VP8 frame: payload descriptor (S bit, partition 0) and frame header (RFC 7741
/// §4.2, RFC 6386 §9.1); keyframes carry the start code and a 64x64 size.
fn vp8_frame(keyframe: bool) -> Vec<u8> {
    let size: u32 = 10;
    let tag = (size << 5) | (1 << 4) | u32::from(!keyframe);
    let mut p = vec![0x10, tag as u8, (tag >> 8) as u8, (tag >> 16) as u8];
    if keyframe {
        p.extend_from_slice(&[0x9d, 0x01, 0x2a, 64, 0, 64, 0]);
    }
    p.resize(p.len() + 10, 0);
    p
}

struct Sender {
    ssrc: Ssrc,
    pt: Pt,
    seq: u64,
    frames: u32,
}

impl Sender {
    fn video(net: &mut Net, peer: usize) -> Self {
        let mid = net.peers[peer].video.expect("video m-line");
        let rtc = &mut net.peers[peer].rtc;
        let pts = rtc.media(mid).unwrap().remote_pts().to_vec();
        let config = rtc.codec_config();
        let pt = pts
            .into_iter()
            .find(|pt| {
                config
                    .find(|p| p.pt() == *pt && p.spec().codec == Codec::Vp8)
                    .is_some()
            })
            .expect("VP8 negotiated");
        let ssrc = rtc.direct_api().stream_tx_by_mid(mid, None).unwrap().ssrc();
        Self {
            ssrc,
            pt,
            seq: 1,
            frames: 0,
        }
    }

    /// One frame now: a keyframe when asked (or the very first), else a delta frame.
    fn frame(&mut self, net: &mut Net, peer: usize, keyframe: bool) {
        let now = net.now;
        let rtc = &mut net.peers[peer].rtc;
        let payload = vp8_frame(keyframe || self.frames == 0);
        let mut api = rtc.direct_api();
        api.stream_tx(&self.ssrc).unwrap().write_rtp(
            RtpWrite::new(
                self.pt,
                SeqNo::from(self.seq),
                self.frames * 3000,
                now,
                payload,
            )
            .marker(true),
        );
        self.seq += 1;
        self.frames += 1;
    }
}

fn keyframe_requests(net: &Net, peer: usize) -> usize {
    net.peers[peer]
        .events
        .iter()
        .filter(|e| matches!(e, Event::KeyframeRequest(_)))
        .count()
}

#[test]
fn a_joining_viewer_gets_a_keyframe_first() {
    let mut net = Net::new(MediaConfig::default());
    let publisher = net.publisher("10.0.0.2:5000", "demo");
    net.run_until(Duration::from_secs(5), |n| n.peers[0].connected());
    let mut video = Sender::video(&mut net, publisher);
    // A second of stream, one keyframe at its start.
    for _ in 0..30 {
        video.frame(&mut net, publisher, false);
        net.advance(FRAME);
    }
    let asked_before = keyframe_requests(&net, publisher);

    let viewer = net.viewer("10.0.0.3:6000", "demo");
    // The publisher answers a keyframe request with its next frame.
    let mut keyframes_sent = 0;
    for _ in 0..60 {
        let asked = keyframe_requests(&net, publisher) > asked_before + keyframes_sent;
        if asked {
            keyframes_sent += 1;
        }
        video.frame(&mut net, publisher, asked);
        net.advance(FRAME);
    }
    assert!(net.peers[viewer].connected());
    assert!(
        keyframes_sent >= 1,
        "the viewer's join asked the publisher for a keyframe"
    );
    let first_video = net.peers[viewer]
        .events
        .iter()
        .find_map(|e| match e {
            Event::RtpPacket(p) if p.payload.len() > 4 => Some(p.payload.clone()),
            _ => None,
        })
        .expect("video reached the viewer");
    assert_eq!(
        first_video[1] & 1,
        0,
        "the first frame is a keyframe: {first_video:?}"
    );
    assert_eq!(&first_video[4..7], &[0x9d, 0x01, 0x2a]);
}
