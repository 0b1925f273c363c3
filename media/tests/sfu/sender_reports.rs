//! On the virtual clock (`common`): every viewer track gets an RTCP sender report about
//! once a second (`fanout::SENDER_REPORT_INTERVAL`, counted from the viewer's connection, and
//! sent with the next forwarded packet), whose RTP time is that of the packets it was sent
//! (the newest one's, advanced by the time since), and whose NTP time advances with the clock.
//! Audio's and video's reports map to the same instant, as lip-sync needs. str0m surfaces each
//! received report as `Event::SenderFeedback`.

use std::time::{Duration, Instant, SystemTime};

use crate::common::{Net, Publisher, AUDIO_FRAME};
use media::MediaConfig;
use str0m::media::SenderFeedback;
use str0m::media::{Mid, Pt};
use str0m::Event;

const INTERVAL: Duration = Duration::from_secs(1);

/// The sender reports viewer `viewer` received for `mid`.
fn reports(net: &Net, viewer: usize, mid: Mid) -> Vec<&SenderFeedback> {
    net.peers[viewer]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::SenderFeedback(f) if f.mid == mid => Some(f),
            _ => None,
        })
        .collect()
}

/// The RTP time viewer `viewer` would expect at `at` from the packets of `pt` it had received
/// by then: the newest one's timestamp, advanced at `clock_rate`.
fn rtp_time_at(net: &Net, viewer: usize, pt: Pt, clock_rate: u32, at: Instant) -> u32 {
    let newest = net.peers[viewer]
        .rtp(pt)
        .filter(|p| p.timestamp <= at)
        .max_by_key(|p| p.seq_no)
        .expect("packets before the report");
    let since = (at - newest.timestamp).as_micros() as u64 * u64::from(clock_rate) / 1_000_000;
    newest.header.timestamp.wrapping_add(since as u32)
}

#[test]
fn each_viewer_track_gets_a_sender_report_a_second_that_matches_its_packets() {
    let wall_before = SystemTime::now();
    let mut net = Net::new(MediaConfig::default());
    let publisher = net.publisher("10.0.0.2:5000", "demo");
    net.run_until(Duration::from_secs(5), |n| n.peers[0].connected());
    let mut media = Publisher::new(&mut net, publisher, true);
    media.play(&mut net, Duration::from_millis(500));
    // Two viewers, connecting at different times: each has its own schedule.
    let first = net.viewer("10.0.0.3:6000", "demo");
    media.play(&mut net, Duration::from_millis(400));
    let second = net.viewer("10.0.0.4:6000", "demo");
    media.play_until(&mut net, Duration::from_secs(3), |n| {
        n.peers[first].connected() && n.peers[second].connected()
    });
    let watch = Duration::from_secs(5);
    media.play(&mut net, watch);

    for viewer in [first, second] {
        let connected = net.peers[viewer].connected_at().expect("connected");
        let v = &net.peers[viewer];
        let tracks = [
            (v.video.unwrap(), v.video_pt(), 90_000u32),
            (v.audio.unwrap(), v.audio_pt(), 48_000),
        ];
        for (mid, pt, clock_rate) in tracks {
            let srs = reports(&net, viewer, mid);
            assert!(
                srs.len() as u32 >= watch.as_secs() as u32 - 1,
                "viewer {viewer} {mid}: {} reports",
                srs.len()
            );
            // The first a second after connecting (with the next forwarded packet: audio goes
            // every 20 ms), then a second apart.
            let first_at = srs[0].received_at - net.delay;
            assert!(
                first_at >= connected + INTERVAL && first_at <= connected + INTERVAL + AUDIO_FRAME,
                "first report {:?} after connecting",
                first_at - connected
            );
            for w in srs.windows(2) {
                let gap = w[1].received_at - w[0].received_at;
                assert!(
                    gap >= INTERVAL && gap <= INTERVAL + AUDIO_FRAME,
                    "reports {gap:?} apart"
                );
                // NTP time advances exactly as the (simulated) clock did.
                let ntp = w[1]
                    .sender_info
                    .ntp_time
                    .duration_since(w[0].sender_info.ntp_time)
                    .expect("NTP time advances");
                assert!(
                    ntp.abs_diff(gap) < Duration::from_micros(1),
                    "NTP advanced {ntp:?} in {gap:?}"
                );
            }
            for sr in &srs {
                let expected = rtp_time_at(&net, viewer, pt, clock_rate, sr.received_at);
                let got = sr.sender_info.rtp_time.numer() as u32;
                assert!(
                    got.abs_diff(expected) <= 1,
                    "{mid}: RTP time {got}, packets say {expected}"
                );
                // Wall-clock time: read once when the SFU was made, then the simulated clock.
                let sent_at = sr.received_at - net.delay;
                let wall = wall_before + (sent_at - net.start);
                let ahead = sr
                    .sender_info
                    .ntp_time
                    .duration_since(wall)
                    .expect("not before the wall clock at the start");
                assert!(ahead < Duration::from_millis(100), "{ahead:?}");
            }
        }
        // Lip-sync: once the viewer is live (its GOP start has caught up), each track's report
        // maps every packet of the second before it to when that packet was sent. Audio and
        // video captured together are sent together, so they map to the same time.
        for (mid, pt, clock_rate) in tracks {
            for sr in &reports(&net, viewer, mid)[2..] {
                let rtp = sr.sender_info.rtp_time.numer() as u32;
                let recent = net.peers[viewer]
                    .rtp(pt)
                    .filter(|p| p.timestamp <= sr.received_at)
                    .filter(|p| p.timestamp + INTERVAL > sr.received_at);
                for p in recent {
                    let by_rtp = f64::from(p.header.timestamp.wrapping_sub(rtp) as i32)
                        / f64::from(clock_rate);
                    let by_clock = -(sr.received_at - p.timestamp).as_secs_f64();
                    assert!(
                        (by_rtp - by_clock).abs() < 0.001,
                        "{mid} packet {}: {by_rtp} s by its RTP time, {by_clock} s by the clock",
                        p.header.sequence_number
                    );
                }
            }
        }
    }
}

/// An ingest publisher (RTMP) whose Opus reaches the SFU 40 ms after the video of the same
/// source time (the AAC → Opus transcode), each track on the publisher's clock
/// (`PublishedTrack::source_time`): the viewer's reports of both tracks put the same source
/// time at the same NTP time, so it plays them in sync, however late each came.
#[test]
fn an_ingest_stream_s_reports_follow_its_source_clock_not_arrival() {
    use media::rtp;
    use media::sfu::peer::{PublishedTrack, SourceTime};

    let mut net = Net::new(MediaConfig::default());
    let zero = net.now; // the publisher's time 0
    let (video_base, audio_base) = (1_000u32, 7_000u32);
    let tracks = vec![
        PublishedTrack::h264("42e01f").with_source_time(SourceTime {
            ssrc: 1,
            rtp_ts: video_base,
            at: zero,
        }),
        PublishedTrack::opus().with_source_time(SourceTime {
            ssrc: 2,
            rtp_ts: audio_base,
            at: zero,
        }),
    ];
    let id = net.sfu.publish_ingest("demo", tracks).unwrap();
    let viewer = net.viewer("10.0.0.3:6000", "demo");
    net.run_until(Duration::from_secs(5), |n| n.peers[viewer].connected());

    // Source time t: video (a keyframe a second) reaches the SFU at t + 5 ms, audio at t + 40 ms.
    let packet = |ssrc, pt, seq: u16, ts, payload: Vec<u8>| rtp::Packet {
        header: rtp::Header {
            version: 2,
            marker: true,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            ..Default::default()
        },
        payload: payload.into(),
    };
    let start = net.now - zero;
    let (mut v, mut a) = (0u32, 0u32);
    loop {
        let video_t = start + Duration::from_millis(u64::from(v) * 1000 / 30);
        let audio_t = start + Duration::from_millis(u64::from(a) * 10);
        let (due, is_video) =
            if video_t + Duration::from_millis(5) <= audio_t + Duration::from_millis(40) {
                (video_t + Duration::from_millis(5), true)
            } else {
                (audio_t + Duration::from_millis(40), false)
            };
        if due > start + Duration::from_secs(6) {
            break;
        }
        net.advance((zero + due).saturating_duration_since(net.now));
        let p = if is_video {
            let ts = video_base + (video_t.as_micros() * 90 / 1000) as u32;
            let nal = if v % 30 == 0 { 0x65 } else { 0x41 };
            v += 1;
            packet(1, 96, v as u16, ts, vec![nal, 0x88, v as u8])
        } else {
            let ts = audio_base + (audio_t.as_micros() * 48 / 1000) as u32;
            a += 1;
            packet(2, 111, a as u16, ts, vec![0xfc, 0xff, 0xfe, a as u8])
        };
        net.sfu.push_ingest(net.now, id, vec![p]).unwrap();
    }

    // What source time each report names for its NTP time (the viewer got the publisher's
    // numbering: no reconnect, no GOP start), as NTP time minus source time: one instant, the
    // publisher's time 0, for every report of both tracks.
    let v = &net.peers[viewer];
    let mut zeros = Vec::new();
    for (mid, base, rate) in [
        (v.video.unwrap(), video_base, 90_000u32),
        (v.audio.unwrap(), audio_base, 48_000),
    ] {
        let srs = reports(&net, viewer, mid);
        assert!(srs.len() >= 4, "{mid}: {} reports", srs.len());
        for sr in srs {
            let ticks = (sr.sender_info.rtp_time.numer() as u32).wrapping_sub(base);
            let source = Duration::from_micros(u64::from(ticks) * 1_000_000 / u64::from(rate));
            zeros.push((mid, sr.sender_info.ntp_time - source));
        }
    }
    let (first_mid, first) = zeros[0];
    for (mid, z) in &zeros {
        let apart = z.duration_since(first).unwrap_or_else(|e| e.duration());
        assert!(
            apart < Duration::from_millis(1),
            "{mid} puts source time 0 {apart:?} from where {first_mid} does"
        );
    }
}
