//! One rendition's segmenter: encoded frames in (H.264 access units and AAC frames, timestamps
//! in the pipeline's running time), fMP4 parts and segments out, written into the rendition's
//! [`Playlist`].
//!
//! - A **part** is cut every ~1/3 s at a video frame boundary: when a frame arrives that would
//!   make the part longer than that, the part before it is muxed (`moof` + `mdat` with the audio
//!   of the same time) and listed at once. A frame waits only for the next one, which gives its
//!   duration.
//! - A **segment** ends at the first keyframe past the segment duration (or at the new source's
//!   first keyframe after a publisher reconnect, or at a codec change), as soon as its last part
//!   is muxed: nothing waits for the next GOP.
//!
//! No clock: the caller passes what arrives; dates come from the running time and the wall
//! clock of running time zero.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::fmp4::{self, Codec, Run, Sample, Track};
use super::playlist::{Part, Playlist};

const VIDEO_TRACK: u32 = 1;
const AUDIO_TRACK: u32 = 2;
const VIDEO_TIMESCALE: u32 = 90_000;
/// Samples in an AAC frame (AAC-LC; for HE-AAC, at the core rate its configuration gives).
const AAC_FRAME_SAMPLES: u64 = 1024;
/// Audio frames kept while no video comes to cut them into parts (~10 s of AAC at 48 kHz).
const MAX_AUDIO_QUEUE: usize = 512;
/// How long (running time) video waits for the audio's configuration before starting without.
const AUDIO_WAIT_NS: u64 = 3_000_000_000;

/// An H.264 access unit (AVCC, length-prefixed NAL units).
#[derive(Debug, Clone)]
pub struct VideoFrame {
    pub dts_ns: u64,
    pub pts_ns: u64,
    pub keyframe: bool,
    pub data: Bytes,
}

/// One raw AAC frame.
#[derive(Debug, Clone)]
pub struct AudioFrame {
    pub pts_ns: u64,
    pub duration_ns: u64,
    pub data: Bytes,
}

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub segment_ns: u64,
    pub fps: f64,
    /// Wall clock (Unix ms) at running time zero: program date-times.
    pub epoch_unix_ms: u64,
}

impl Timing {
    fn frame_ns(&self) -> u64 {
        (1e9 / self.fps.max(1.0)) as u64
    }

    /// Frames per part: a third of a second, whole frames.
    fn part_ns(&self) -> u64 {
        let frames = (self.fps / 3.0).round().max(1.0);
        (frames * 1e9 / self.fps.max(1.0)) as u64
    }

    /// `PART-TARGET`: the part duration with 2 % for timestamp jitter, whole milliseconds.
    pub fn part_target(&self) -> f64 {
        (self.part_ns() as f64 * 1.02 / 1e6).ceil() / 1000.0
    }
}

/// What the store needs after a step.
#[derive(Debug, Default)]
pub struct Step {
    /// The playlist changed (a part or a segment was added): wake blocked requests.
    pub changed: bool,
    /// Parts cut.
    pub parts: u32,
    /// A new initialization segment: name and bytes.
    pub init: Option<(String, Bytes)>,
    pub closed: Option<Closed>,
    /// The standard media playlist, when it changed (a segment closed, or the stream ended).
    pub playlist: Option<String>,
}

/// A complete segment.
#[derive(Debug)]
pub struct Closed {
    pub name: String,
    pub bytes: Bytes,
    pub duration: f64,
    pub discontinuity: bool,
    /// Its initialization segment's name.
    pub init: String,
    /// Segments that left the playlist (names), for the store to delete unless kept.
    pub gone: Vec<String>,
}

pub struct Segmenter {
    timing: Timing,
    video: Option<Codec>,
    audio: Option<Codec>,
    audio_rate: u32,
    expect_audio: bool,
    /// The codecs changed since the last initialization segment.
    init_dirty: bool,
    /// The latest frame: its duration comes with the next one.
    held: Option<VideoFrame>,
    /// Video of the part being gathered, and its first frame's decode time.
    part_video: Vec<Sample>,
    part_first_dts_ns: u64,
    part_start_ns: u64,
    segment_start_ns: u64,
    audio_queue: VecDeque<AudioFrame>,
    sequence: u32,
    /// The publisher reconnected: the next keyframe starts a new segment, marked.
    armed: bool,
    first_video_ns: Option<u64>,
}

fn ticks(ns: u64, timescale: u32) -> u64 {
    (ns as u128 * timescale as u128 / 1_000_000_000) as u64
}

impl Segmenter {
    pub fn new(timing: Timing, expect_audio: bool) -> Self {
        Self {
            timing,
            video: None,
            audio: None,
            audio_rate: 48_000,
            expect_audio,
            init_dirty: true,
            held: None,
            part_video: Vec::new(),
            part_first_dts_ns: 0,
            part_start_ns: 0,
            segment_start_ns: 0,
            audio_queue: VecDeque::new(),
            sequence: 1,
            armed: false,
            first_video_ns: None,
        }
    }

    pub fn set_video(&mut self, codec: Codec) {
        if self.video.as_ref() != Some(&codec) {
            self.video = Some(codec);
            self.init_dirty = true;
        }
    }

    pub fn set_audio(&mut self, codec: Codec) {
        if let Codec::Aac { sample_rate, .. } = &codec {
            self.audio_rate = (*sample_rate).max(1);
        }
        if self.audio.as_ref() != Some(&codec) {
            self.audio = Some(codec);
            self.init_dirty = true;
        }
    }

    /// The publisher reconnected: the new source's first keyframe starts a segment tagged
    /// `#EXT-X-DISCONTINUITY`.
    pub fn discontinuity(&mut self) {
        self.armed = true;
    }

    pub fn push_audio(&mut self, frame: AudioFrame) {
        if self.audio_queue.len() >= MAX_AUDIO_QUEUE {
            self.audio_queue.pop_front();
        }
        self.audio_queue.push_back(frame);
    }

    pub fn push_video(&mut self, frame: VideoFrame, pl: &mut Playlist) -> Step {
        let mut step = Step::default();
        if let Some(prev) = self.held.take() {
            self.gather(prev, frame.dts_ns);
        }
        let half_frame = self.timing.frame_ns() / 2;
        if !pl.is_open() {
            if !frame.keyframe || !self.may_start(frame.dts_ns) {
                return step; // a segment starts at a keyframe
            }
            self.start_segment(frame.dts_ns, pl, &mut step);
        } else {
            let segment_elapsed = frame.dts_ns.saturating_sub(self.segment_start_ns);
            let part_elapsed = frame.dts_ns.saturating_sub(self.part_start_ns);
            if frame.keyframe
                && (self.armed
                    || self.init_dirty
                    || segment_elapsed + half_frame >= self.timing.segment_ns)
            {
                self.flush_part(frame.dts_ns, pl, &mut step);
                self.close(pl, &mut step);
                self.start_segment(frame.dts_ns, pl, &mut step);
            } else if part_elapsed + half_frame >= self.timing.part_ns() {
                self.flush_part(frame.dts_ns, pl, &mut step);
            }
        }
        self.held = Some(frame);
        step
    }

    /// End of stream: the held frame, the last part and segment, `#EXT-X-ENDLIST`.
    pub fn finish(&mut self, pl: &mut Playlist) -> Step {
        let mut step = Step::default();
        if let Some(prev) = self.held.take() {
            let end = prev.dts_ns + self.timing.frame_ns();
            if pl.is_open() {
                self.gather(prev, end);
                self.flush_part(end, pl, &mut step);
            }
        }
        self.close(pl, &mut step);
        pl.ended = true;
        step.playlist = Some(pl.render_standard());
        step.changed = true;
        step
    }

    /// Audio's configuration known (or waited for long enough).
    fn may_start(&mut self, dts_ns: u64) -> bool {
        if self.video.is_none() {
            return false;
        }
        if !self.expect_audio || self.audio.is_some() {
            return true;
        }
        let first = *self.first_video_ns.get_or_insert(dts_ns);
        if dts_ns.saturating_sub(first) >= AUDIO_WAIT_NS {
            self.expect_audio = false;
            return true;
        }
        false
    }

    /// `frame` into the part being gathered, lasting until `next_dts_ns`.
    fn gather(&mut self, frame: VideoFrame, next_dts_ns: u64) {
        let dts = ticks(frame.dts_ns, VIDEO_TIMESCALE);
        let duration = ticks(next_dts_ns, VIDEO_TIMESCALE)
            .saturating_sub(dts)
            .max(1);
        let cts = ticks(frame.pts_ns, VIDEO_TIMESCALE) as i64 - dts as i64;
        if self.part_video.is_empty() {
            self.part_first_dts_ns = frame.dts_ns;
        }
        self.part_video.push(Sample {
            data: frame.data,
            duration: duration as u32,
            cts_offset: cts.clamp(i32::MIN as i64, i32::MAX as i64) as i32,
            keyframe: frame.keyframe,
        });
    }

    fn start_segment(&mut self, at_ns: u64, pl: &mut Playlist, step: &mut Step) {
        let mut discontinuity = std::mem::take(&mut self.armed);
        if self.init_dirty || !pl.has_init() {
            // A codec change mid-stream is a discontinuity too (new decoder configuration).
            discontinuity |= pl.has_init();
            let bytes = fmp4::init_segment(&self.tracks());
            let index = pl.add_init(bytes.clone());
            step.init = Some((pl.init_name(index), bytes));
            self.init_dirty = false;
        }
        let date = self.timing.epoch_unix_ms + at_ns / 1_000_000;
        pl.open_segment(discontinuity, date);
        self.segment_start_ns = at_ns;
        self.part_start_ns = at_ns;
        // Audio from before the segment's first frame has no video to go with.
        while self.audio_queue.front().is_some_and(|a| a.pts_ns < at_ns) {
            self.audio_queue.pop_front();
        }
        step.changed = true;
    }

    fn tracks(&self) -> Vec<Track> {
        let mut t = Vec::with_capacity(2);
        if let Some(v) = &self.video {
            t.push(Track {
                id: VIDEO_TRACK,
                timescale: VIDEO_TIMESCALE,
                codec: v.clone(),
            });
        }
        if let Some(a) = &self.audio {
            t.push(Track {
                id: AUDIO_TRACK,
                timescale: self.audio_rate,
                codec: a.clone(),
            });
        }
        t
    }

    /// The part gathered so far, ending at `end_ns`, with the audio before then.
    fn flush_part(&mut self, end_ns: u64, pl: &mut Playlist, step: &mut Step) {
        if self.part_video.is_empty() {
            return;
        }
        let mut audio = Vec::new();
        let mut audio_start = None;
        if self.audio.is_some() {
            while let Some(a) = self.audio_queue.front().filter(|a| a.pts_ns < end_ns) {
                audio_start.get_or_insert(a.pts_ns);
                // AAC frames are 1024 samples; a passed-through frame may come without a duration.
                let d = match ticks(a.duration_ns, self.audio_rate) {
                    0 => AAC_FRAME_SAMPLES,
                    d => d,
                };
                audio.push(Sample {
                    data: a.data.clone(),
                    duration: d as u32,
                    cts_offset: 0,
                    keyframe: true,
                });
                self.audio_queue.pop_front();
            }
        }
        let independent = self.part_video.first().is_some_and(|s| s.keyframe);
        let mut runs = vec![Run {
            track_id: VIDEO_TRACK,
            base_decode_time: ticks(self.part_first_dts_ns, VIDEO_TIMESCALE),
            samples: &self.part_video,
        }];
        if let Some(start) = audio_start {
            runs.push(Run {
                track_id: AUDIO_TRACK,
                base_decode_time: ticks(start, self.audio_rate),
                samples: &audio,
            });
        }
        let bytes = fmp4::fragment(self.sequence, &runs);
        self.sequence = self.sequence.wrapping_add(1);
        self.part_video.clear();
        let duration = end_ns.saturating_sub(self.part_start_ns) as f64 / 1e9;
        pl.push_part(Part {
            duration,
            independent,
            bytes,
        });
        self.part_start_ns = end_ns;
        step.changed = true;
        step.parts += 1;
    }

    fn close(&mut self, pl: &mut Playlist, step: &mut Step) {
        let Some((seg, gone)) = pl.close_segment() else {
            return;
        };
        let mut bytes = BytesMut::with_capacity(seg.bytes_len());
        for p in &seg.parts {
            bytes.extend_from_slice(&p.bytes);
        }
        let (msn, duration, discontinuity, init) =
            (seg.msn, seg.duration, seg.discontinuity, seg.init);
        step.closed = Some(Closed {
            name: pl.segment_name(msn),
            bytes: bytes.freeze(),
            duration,
            discontinuity,
            init: pl.init_name(init),
            gone: gone.iter().map(|s| pl.segment_name(s.msn)).collect(),
        });
        step.playlist = Some(pl.render_standard());
        step.changed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME_NS: u64 = 1_000_000_000 / 30;

    fn codec() -> Codec {
        Codec::H264 {
            avcc: Bytes::from_static(&[1, 0x42, 0xc0, 0x1f, 0xff]),
            width: 320,
            height: 240,
        }
    }

    fn aac() -> Codec {
        Codec::Aac {
            asc: Bytes::from_static(&[0x11, 0x90]),
            sample_rate: 48_000,
            channels: 2,
        }
    }

    fn frame(i: u64, gop: u64) -> VideoFrame {
        VideoFrame {
            dts_ns: 1_000_000_000 + i * FRAME_NS,
            pts_ns: 1_000_000_000 + i * FRAME_NS,
            keyframe: i.is_multiple_of(gop),
            data: Bytes::from_static(b"frame"),
        }
    }

    fn setup(audio: bool) -> (Segmenter, Playlist) {
        let timing = Timing {
            segment_ns: 2_000_000_000,
            fps: 30.0,
            epoch_unix_ms: 1_000,
        };
        let mut s = Segmenter::new(timing, audio);
        s.set_video(codec());
        if audio {
            s.set_audio(aac());
        }
        let pl = Playlist::new("seg-1-".into(), 2, timing.part_target(), 6);
        (s, pl)
    }

    #[test]
    fn parts_of_ten_frames_and_segments_at_the_keyframe_past_two_seconds() {
        let (mut s, mut pl) = setup(false);
        assert_eq!(
            Timing {
                segment_ns: 0,
                fps: 30.0,
                epoch_unix_ms: 0
            }
            .part_target(),
            0.34
        );
        let mut closed = Vec::new();
        let mut inits = 0;
        for i in 0..=180 {
            let step = s.push_video(frame(i, 60), &mut pl);
            inits += usize::from(step.init.is_some());
            if let Some(c) = step.closed {
                // A segment closes the moment its last frame's successor (the keyframe) comes.
                assert_eq!(i % 60, 0, "closed at frame {i}");
                closed.push(c);
            }
        }
        assert_eq!(inits, 1);
        assert_eq!(closed.len(), 3);
        for (n, c) in closed.iter().enumerate() {
            assert_eq!(c.name, format!("seg-1-{n:05}.m4s"));
            assert!((c.duration - 2.0).abs() < 1e-6, "{}", c.duration);
            assert!(!c.discontinuity);
        }
        let text = pl.render_low_latency(&[]);
        // Six parts per segment, the first independent; frame 180 opened segment 3.
        assert_eq!(text.matches(",INDEPENDENT=YES").count(), 3, "{text}");
        assert_eq!(
            text.matches("#EXT-X-PART:DURATION=0.33333,").count(),
            18,
            "{text}"
        );
        assert!(text.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg-1-00003.0.m4s\""));
        // Program date-time: epoch + running time of the first frame (1 s).
        assert!(
            text.contains("#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:02.000Z\n"),
            "{text}"
        );
    }

    #[test]
    fn a_reconnect_cuts_at_the_new_sources_first_keyframe() {
        let (mut s, mut pl) = setup(false);
        for i in 0..=30 {
            s.push_video(frame(i, 30), &mut pl);
        }
        s.discontinuity();
        let mut closed = None;
        for i in 31..=60 {
            if let Some(c) = s.push_video(frame(i, 30), &mut pl).closed {
                closed = Some((i, c));
            }
        }
        let (at, c) = closed.expect("a segment closed");
        assert_eq!(
            at, 60,
            "at the first keyframe after the reconnect, 2 s not reached"
        );
        assert!(!c.discontinuity);
        let end = s.finish(&mut pl);
        let last = end.closed.expect("the open segment closes at the end");
        assert!(
            last.discontinuity,
            "the segment after the reconnect is marked"
        );
        let text = end.playlist.expect("a final playlist");
        assert!(text.contains("#EXT-X-DISCONTINUITY\n"));
        assert!(text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
    }

    #[test]
    fn a_new_codec_configuration_makes_a_new_init_and_a_discontinuity() {
        let (mut s, mut pl) = setup(false);
        for i in 0..=70 {
            s.push_video(frame(i, 60), &mut pl);
        }
        s.set_video(Codec::H264 {
            avcc: Bytes::from_static(&[1, 0x64, 0, 0x28, 0xff]),
            width: 1280,
            height: 720,
        });
        let mut init = None;
        for i in 71..=90 {
            let step = s.push_video(frame(i, 15), &mut pl);
            init = init.or(step.init.map(|(n, _)| (i, n)));
        }
        assert_eq!(init, Some((75, "seg-1-init1.mp4".to_string())));
        let text = pl.render_low_latency(&[]);
        assert!(
            text.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"seg-1-init1.mp4\"\n"),
            "{text}"
        );
    }

    #[test]
    fn audio_goes_into_the_part_of_its_time_and_video_waits_for_its_configuration() {
        let (mut s, mut pl) = setup(true);
        s.audio = None; // configuration not known yet
        assert!(s.push_video(frame(0, 30), &mut pl).init.is_none());
        s.set_audio(aac());
        for i in 0..40 {
            s.push_audio(AudioFrame {
                pts_ns: 1_000_000_000 + i * 21_333_333,
                duration_ns: 21_333_333,
                data: Bytes::from_static(b"aac"),
            });
        }
        let mut parts = 0;
        for i in 30..=40 {
            let step = s.push_video(frame(i, 30), &mut pl);
            if i == 30 {
                assert!(step.init.is_some(), "starts at the next keyframe");
            }
            parts += usize::from(step.changed);
        }
        assert!(parts >= 2);
        // Audio before the segment's first frame (1 s + 30 frames) was dropped; the first part
        // (frames 30-39) took the audio of its time.
        let remaining: Vec<u64> = s.audio_queue.iter().map(|a| a.pts_ns).collect();
        assert!(remaining
            .iter()
            .all(|&t| t >= 1_000_000_000 + 40 * FRAME_NS));
    }
}
