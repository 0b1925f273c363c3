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
