//! Synthetic media sources: which frames and packets a publisher sends, and when. Pure; the
//! caller passes the current time in, so tests step through a minute of media instantly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clip::Clip;
use crate::codec::{h264, opus, pattern, vp8, VideoCodec};

/// RTP clock rate of every video codec we send (RFC 6184 §8.2.1, RFC 7741 §6.1).
pub const VIDEO_CLOCK_HZ: u64 = 90_000;
/// Video frame rate.
pub const VIDEO_FPS: u64 = 30;
/// RTP clock rate of Opus (RFC 7587 §4.1).
pub const AUDIO_CLOCK_HZ: u64 = 48_000;
/// One Opus packet's duration.
pub const AUDIO_PACKET_DURATION: Duration = Duration::from_millis(20);

const NANOS_PER_SEC: u64 = 1_000_000_000;
const AUDIO_PACKETS_PER_SEC: u64 = 50;
/// Largest picture ID before wrapping (15 bits, RFC 7741 §4.2).
const VP8_PICTURE_ID_MODULO: u16 = 1 << 15;

/// How big synthetic video frames are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoShape {
    /// RTP packets in a delta frame.
    pub delta_packets: usize,
    /// RTP packets in a keyframe, parameter sets included.
    pub keyframe_packets: usize,
    /// RTP payload bytes per slice packet, before H.264 emulation prevention.
    pub payload_bytes: usize,
}

impl Default for VideoShape {
    fn default() -> Self {
        VideoShape {
            delta_packets: 2,
            keyframe_packets: 6,
            payload_bytes: 1000,
        }
    }
}

/// One RTP packet's worth of media, before str0m adds the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPacket {
    pub payload: Vec<u8>,
    /// RTP marker: last packet of a video frame, first packet of a talkspurt for audio.
    pub marker: bool,
    pub rtp_time: u32,
}

/// One video frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub keyframe: bool,
    pub packets: Vec<MediaPacket>,
}

/// Fixed-rate frame clock shared by the video and audio sources: tick `n` is due at
/// `start + ceil(n / rate)` so that [`Clock::due`] at exactly that instant returns `n`.
#[derive(Debug, Clone)]
struct Clock {
    start: Instant,
    per_sec: u64,
    next: u64,
}

impl Clock {
    fn at(&self, tick: u64) -> Instant {
        let nanos =
            (u128::from(tick) * u128::from(NANOS_PER_SEC)).div_ceil(u128::from(self.per_sec));
        self.start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// The tick due at `now`, skipping ticks the caller was too late for (an encoder drops
    /// frames rather than bursting them), or `None` if the next tick is not due yet.
    fn due(&mut self, now: Instant) -> Option<u64> {
        let elapsed = now.saturating_duration_since(self.start).as_nanos();
        let current = u64::try_from(elapsed * u128::from(self.per_sec) / u128::from(NANOS_PER_SEC))
            .unwrap_or(u64::MAX);
        if current < self.next {
            return None;
        }
        self.next = current + 1;
        Some(current)
    }
}

/// 30 fps synthetic video: keyframes on a fixed interval and on request.
#[derive(Debug, Clone)]
pub struct VideoSource {
    codec: VideoCodec,
    shape: VideoShape,
    keyframe_interval: Duration,
    clock: Clock,
    rtp_base: u32,
    counter: u64,
    picture_id: u16,
    last_keyframe: Option<Instant>,
    keyframe_requested: bool,
    /// Frames from a clip (looped) instead of synthetic ones, and the next frame's index.
    clip: Option<(Arc<Clip>, usize)>,
    /// H.264: a capture-time SEI before every frame; the Unix time (µs) at an instant.
    capture_clock: Option<(Instant, u64)>,
}

/// Largest RTP payload of a clip's packets (FU-A beyond).
const CLIP_MAX_PAYLOAD: usize = 1200;

/// Unix time in µs now, paired with `Instant::now()`.
pub fn unix_clock() -> (Instant, u64) {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (Instant::now(), unix.as_micros() as u64)
}

/// Unix µs at `at`, from a clock pairing.
pub fn unix_micros_at(clock: (Instant, u64), at: Instant) -> u64 {
    let (base, unix) = clock;
    if at >= base {
        unix + at.duration_since(base).as_micros() as u64
    } else {
        unix.saturating_sub(base.duration_since(at).as_micros() as u64)
    }
}

impl VideoSource {
    /// Send the frames of `clip` (H.264), looped, instead of synthetic ones. A keyframe request
    /// is answered by the clip's next keyframe (every second).
    pub fn with_clip(mut self, clip: Arc<Clip>) -> Self {
        self.codec = VideoCodec::H264;
        self.clip = Some((clip, 0));
        self
    }

    /// Put a capture-time SEI before every H.264 frame (Unix time from `clock`).
    pub fn with_capture_time(mut self, clock: (Instant, u64)) -> Self {
        self.capture_clock = Some(clock);
        self
    }

    /// A source whose first frame is due at `start` with RTP time `rtp_base`.
    pub fn new(
        codec: VideoCodec,
        shape: VideoShape,
        keyframe_interval: Duration,
        start: Instant,
        rtp_base: u32,
    ) -> Self {
        VideoSource {
            codec,
            shape,
            keyframe_interval,
            clock: Clock {
                start,
                per_sec: VIDEO_FPS,
                next: 0,
            },
            rtp_base,
            counter: 0,
            picture_id: (rtp_base as u16) % VP8_PICTURE_ID_MODULO,
            last_keyframe: None,
            keyframe_requested: false,
            clip: None,
            capture_clock: None,
        }
    }

    /// When the next frame is due.
    pub fn next_frame_at(&self) -> Instant {
        self.clock.at(self.clock.next)
    }

    /// Makes the next frame a keyframe (answer to PLI/FIR, RFC 4585 §6.3.1, RFC 5104 §4.3.1).
    pub fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    /// RTP packets produced so far; the next packet's pattern carries this counter.
    pub fn packets_produced(&self) -> u64 {
        self.counter
    }

    /// The frame due at `now`, if one is due.
    pub fn poll_frame(&mut self, now: Instant) -> Option<Frame> {
        let tick = self.clock.due(now)?;
        let rtp_time = self
            .rtp_base
            .wrapping_add(rtp_ticks(tick, VIDEO_CLOCK_HZ, VIDEO_FPS));
        let mut payloads = Vec::new();
        if let (Some(clock), VideoCodec::H264) = (self.capture_clock, self.codec) {
            payloads.push(h264::capture_sei(unix_micros_at(clock, now)));
        }
        if let Some((clip, next)) = &mut self.clip {
            let au = &clip.video[*next % clip.video.len()];
            *next = (*next + 1) % clip.video.len();
            for nal in &au.nals {
                payloads.extend(h264::packetize(nal, CLIP_MAX_PAYLOAD));
            }
            self.counter += payloads.len() as u64;
            return Some(frame_of(au.keyframe, payloads, rtp_time));
        }
        let keyframe = self.keyframe_requested
            || self
                .last_keyframe
                .is_none_or(|at| now.saturating_duration_since(at) >= self.keyframe_interval);
        if keyframe {
            self.keyframe_requested = false;
            self.last_keyframe = Some(now);
        }
        payloads.extend(match self.codec {
            VideoCodec::H264 => self.h264_payloads(keyframe),
            VideoCodec::Vp8 => self.vp8_payloads(keyframe),
        });
        Some(frame_of(keyframe, payloads, rtp_time))
    }

    /// Keyframe: STAP-A with SPS and PPS, then the IDR slice; delta frame: a non-IDR slice.
    /// A slice spanning several packets goes out as FU-A, one pattern per fragment; else as
    /// a single NAL unit packet.
    fn h264_payloads(&mut self, keyframe: bool) -> Vec<Vec<u8>> {
        let mut payloads = Vec::new();
        let (nal_header, slice_packets) = if keyframe {
            payloads.push(h264::stap_a(&[&h264::SPS, &h264::PPS]));
            self.counter += 1;
            (
                h264::IDR_NAL_HEADER,
                self.shape.keyframe_packets.saturating_sub(1).max(1),
            )
        } else {
            (h264::SLICE_NAL_HEADER, self.shape.delta_packets.max(1))
        };
        if slice_packets == 1 {
            let mut payload = vec![nal_header];
            let len = self
                .shape
                .payload_bytes
                .saturating_sub(h264::SINGLE_NAL_HEADER_LEN);
            h264::escape(&pattern::encode(self.counter, len), &mut payload);
            self.counter += 1;
            payloads.push(payload);
            return payloads;
        }
        let len = self
            .shape
            .payload_bytes
            .saturating_sub(h264::FU_A_HEADER_LEN);
        let fragments: Vec<Vec<u8>> = (0..slice_packets)
            .map(|_| {
                let mut escaped = Vec::new();
                h264::escape(&pattern::encode(self.counter, len), &mut escaped);
                self.counter += 1;
                escaped
            })
            .collect();
        let fragments: Vec<&[u8]> = fragments.iter().map(Vec::as_slice).collect();
        payloads.extend(h264::fu_a(nal_header, &fragments));
        payloads
    }

    fn vp8_payloads(&mut self, keyframe: bool) -> Vec<Vec<u8>> {
        let packets = if keyframe {
            self.shape.keyframe_packets
        } else {
            self.shape.delta_packets
        }
        .max(1);
        let picture_id = self.picture_id;
        self.picture_id = (self.picture_id + 1) % VP8_PICTURE_ID_MODULO;
        let len = self.shape.payload_bytes.saturating_sub(vp8::DESCRIPTOR_LEN);
        (0..packets)
            .map(|i| {
                let mut payload = vp8::descriptor(i == 0, picture_id).to_vec();
                let pattern_len = if i == 0 {
                    let header = vp8::frame_header(keyframe, len as u32);
                    let rest = len.saturating_sub(header.len());
                    payload.extend(header);
                    rest
                } else {
                    len
                };
                pattern::write(self.counter, pattern_len, &mut payload);
                self.counter += 1;
                payload
            })
            .collect()
    }
}

/// A frame of `payloads`, the marker on the last.
fn frame_of(keyframe: bool, payloads: Vec<Vec<u8>>, rtp_time: u32) -> Frame {
    let last = payloads.len().saturating_sub(1);
    let packets = payloads
        .into_iter()
        .enumerate()
        .map(|(i, payload)| MediaPacket {
            payload,
            marker: i == last,
            rtp_time,
        })
        .collect();
    Frame { keyframe, packets }
}

/// Opus audio, one 20 ms packet at a time.
#[derive(Debug, Clone)]
pub struct AudioSource {
    payload_bytes: usize,
    clock: Clock,
    rtp_base: u32,
    counter: u64,
    /// Packets from a clip (looped) instead of synthetic ones.
    clip: Option<Arc<Clip>>,
}

impl AudioSource {
    /// Send the Opus packets of `clip`, looped, instead of synthetic ones.
    pub fn with_clip(mut self, clip: Arc<Clip>) -> Self {
        self.clip = Some(clip).filter(|c| !c.audio.is_empty());
        self
    }

    /// A source whose first packet is due at `start` with RTP time `rtp_base`.
    pub fn new(payload_bytes: usize, start: Instant, rtp_base: u32) -> Self {
        AudioSource {
            payload_bytes,
            clock: Clock {
                start,
                per_sec: AUDIO_PACKETS_PER_SEC,
                next: 0,
            },
            rtp_base,
            counter: 0,
            clip: None,
        }
    }

    /// When the next packet is due.
    pub fn next_packet_at(&self) -> Instant {
        self.clock.at(self.clock.next)
    }

    /// RTP packets produced so far.
    pub fn packets_produced(&self) -> u64 {
        self.counter
    }

    /// The packet due at `now`, if one is due.
    pub fn poll_packet(&mut self, now: Instant) -> Option<MediaPacket> {
        let tick = self.clock.due(now)?;
        let rtp_time =
            self.rtp_base
                .wrapping_add(rtp_ticks(tick, AUDIO_CLOCK_HZ, AUDIO_PACKETS_PER_SEC));
        let payload = match &self.clip {
            Some(clip) => clip.audio[(self.counter % clip.audio.len() as u64) as usize].clone(),
            None => {
                let mut payload = vec![opus::TOC_CELT_FB_20MS];
                let len = self.payload_bytes.saturating_sub(opus::HEADER_LEN);
                pattern::write(self.counter, len, &mut payload);
                payload
            }
        };
        // RFC 3551 §4.1: the marker flags the first packet of a talkspurt; we talk throughout.
        let marker = self.counter == 0;
        self.counter += 1;
        Some(MediaPacket {
            payload,
            marker,
            rtp_time,
        })
    }
}

/// RTP time of tick `tick` at `per_sec` ticks per second, modulo 2^32 (RFC 3550 §5.1).
fn rtp_ticks(tick: u64, clock_hz: u64, per_sec: u64) -> u32 {
    (tick.wrapping_mul(clock_hz / per_sec)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{check_audio, check_video, is_keyframe, Check};

    const MS: Duration = Duration::from_millis(1);

    fn h264_source(start: Instant) -> VideoSource {
        VideoSource::new(
            VideoCodec::H264,
            VideoShape::default(),
            Duration::from_secs(2),
            start,
            1000,
        )
    }

    #[test]
    fn frames_follow_30fps_and_90khz() {
        let start = Instant::now();
        let mut v = h264_source(start);
        let first = v.poll_frame(start).unwrap();
        assert!(first.keyframe, "the first frame is a keyframe");
        assert_eq!(first.packets[0].rtp_time, 1000);
        assert_eq!(v.poll_frame(start), None, "one frame per tick");
        assert_eq!(v.poll_frame(start + 33 * MS), None);

        let second_at = v.next_frame_at();
        assert_eq!(second_at, start + Duration::from_nanos(33_333_334));
        let second = v.poll_frame(second_at).unwrap();
        assert!(!second.keyframe);
        assert_eq!(second.packets[0].rtp_time, 1000 + 3000);
    }

    #[test]
    fn late_polls_skip_frames_but_keep_rtp_time_on_the_clock() {
        let start = Instant::now();
        let mut v = h264_source(start);
        v.poll_frame(start).unwrap();
        let late = v.poll_frame(start + 100 * MS).unwrap();
        assert_eq!(late.packets[0].rtp_time, 1000 + 3 * 3000);
        assert_eq!(v.next_frame_at(), start + Duration::from_nanos(133_333_334));
    }

    #[test]
    fn keyframes_every_interval_and_on_request() {
        let start = Instant::now();
        let mut v = h264_source(start);
        let mut keyframes = vec![];
        let mut now = start;
        while now < start + Duration::from_millis(4500) {
            if let Some(f) = v.poll_frame(now) {
                if f.keyframe {
                    keyframes.push(now.duration_since(start));
                }
            }
            now = v.next_frame_at();
        }
        assert_eq!(keyframes.len(), 3, "{keyframes:?}");
        assert_eq!(keyframes[0], Duration::ZERO);
        assert!(
            keyframes[1] >= Duration::from_secs(2) && keyframes[1] < Duration::from_millis(2034)
        );

        v.request_keyframe();
        let f = v.poll_frame(v.next_frame_at()).unwrap();
        assert!(f.keyframe, "next frame after a PLI is a keyframe");
        let f = v.poll_frame(v.next_frame_at()).unwrap();
        assert!(!f.keyframe, "only one");
    }

    #[test]
    fn h264_frames_are_well_formed_and_patterned() {
        let start = Instant::now();
        let mut v = h264_source(start);
        let key = v.poll_frame(start).unwrap();
        assert_eq!(key.packets.len(), 6);
        let types: Vec<u8> = key
            .packets
            .iter()
            .map(|p| h264::nal_type(p.payload[0]))
            .collect();
        assert_eq!(
            types,
            vec![
                h264::STAP_A,
                h264::FU_A,
                h264::FU_A,
                h264::FU_A,
                h264::FU_A,
                h264::FU_A
            ]
        );
        assert!(is_keyframe(VideoCodec::H264, &key.packets[0].payload));
        assert!(is_keyframe(VideoCodec::H264, &key.packets[1].payload));
        assert_eq!(h264::nal_type(key.packets[1].payload[1]), h264::NAL_IDR);
        let markers: Vec<bool> = key.packets.iter().map(|p| p.marker).collect();
        assert_eq!(markers, vec![false, false, false, false, false, true]);

        let mut scratch = vec![];
        let checks: Vec<Check> = key
            .packets
            .iter()
            .map(|p| check_video(VideoCodec::H264, &p.payload, &mut scratch))
            .collect();
        assert_eq!(checks[0], Check::NoPattern);
        assert_eq!(&checks[1..], &[1, 2, 3, 4, 5].map(Check::Intact));
        assert!(key.packets.iter().all(|p| p.payload.len() <= 1000 + 4));

        let delta = v.poll_frame(v.next_frame_at()).unwrap();
        assert_eq!(delta.packets.len(), 2);
        assert_eq!(h264::nal_type(delta.packets[0].payload[1]), h264::NAL_SLICE);
        assert!(!delta
            .packets
            .iter()
            .any(|p| is_keyframe(VideoCodec::H264, &p.payload)));
        assert_eq!(
            check_video(VideoCodec::H264, &delta.packets[1].payload, &mut scratch),
            Check::Intact(7)
        );
        assert_eq!(v.packets_produced(), 8);
    }

    #[test]
    fn single_packet_h264_frames_use_single_nal_units() {
        let start = Instant::now();
        let shape = VideoShape {
            delta_packets: 1,
            keyframe_packets: 2,
            payload_bytes: 200,
        };
        let mut v = VideoSource::new(VideoCodec::H264, shape, Duration::from_secs(2), start, 0);
        let key = v.poll_frame(start).unwrap();
        assert_eq!(key.packets.len(), 2);
        assert_eq!(key.packets[1].payload[0], h264::IDR_NAL_HEADER);
        let delta = v.poll_frame(v.next_frame_at()).unwrap();
        assert_eq!(delta.packets[0].payload[0], h264::SLICE_NAL_HEADER);
        let mut scratch = vec![];
        assert_eq!(
            check_video(VideoCodec::H264, &delta.packets[0].payload, &mut scratch),
            Check::Intact(2)
        );
    }

    #[test]
    fn vp8_frames_start_with_a_keyframe_header() {
        let start = Instant::now();
        let mut v = VideoSource::new(
            VideoCodec::Vp8,
            VideoShape::default(),
            Duration::from_secs(2),
            start,
            7,
        );
        let key = v.poll_frame(start).unwrap();
        assert_eq!(key.packets.len(), 6);
        assert!(is_keyframe(VideoCodec::Vp8, &key.packets[0].payload));
        assert!(!is_keyframe(VideoCodec::Vp8, &key.packets[1].payload));
        let mut scratch = vec![];
        for (i, p) in key.packets.iter().enumerate() {
            assert_eq!(
                check_video(VideoCodec::Vp8, &p.payload, &mut scratch),
                Check::Intact(i as u64)
            );
            assert_eq!(p.payload.len(), 1000);
        }
        let delta = v.poll_frame(v.next_frame_at()).unwrap();
        let first = vp8::parse(&delta.packets[0].payload).unwrap();
        assert_eq!(first.picture_id, Some(8), "picture id advances per frame");
        assert!(first.frame_start && !first.keyframe);
    }

    #[test]
    fn audio_packets_every_20ms_at_48khz() {
        let start = Instant::now();
        let mut a = AudioSource::new(61, start, 5);
        let p0 = a.poll_packet(start).unwrap();
        assert!(p0.marker);
        assert_eq!(p0.rtp_time, 5);
        assert_eq!(p0.payload.len(), 61);
        assert_eq!(check_audio(&p0.payload), Check::Intact(0));
        assert_eq!(a.poll_packet(start + 19 * MS), None);
        assert_eq!(a.next_packet_at(), start + 20 * MS);
        let p1 = a.poll_packet(start + 20 * MS).unwrap();
        assert!(!p1.marker);
        assert_eq!(p1.rtp_time, 5 + 960);
        assert_eq!(check_audio(&p1.payload), Check::Intact(1));
        assert_eq!(a.packets_produced(), 2);
    }

    #[test]
    fn rtp_time_wraps_at_32_bits() {
        let start = Instant::now();
        let mut a = AudioSource::new(20, start, u32::MAX - 100);
        a.poll_packet(start).unwrap();
        let p = a.poll_packet(start + 20 * MS).unwrap();
        assert_eq!(p.rtp_time, 859);
    }
}
