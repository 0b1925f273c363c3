//! AAC from RTMP → Opus RTP for WebRTC viewers (browsers cannot play AAC over WebRTC), through a
//! GStreamer pipeline per stream: `appsrc ! aacparse ! avdec_aac ! audioconvert ! audioresample
//! ! opusenc ! appsink`. Timestamps travel through the pipeline, so Opus RTP timestamps follow
//! the RTMP clock the video uses.
//!
//! A viewer who plays audio and video in sync waits for the later of the two, so every
//! millisecond this adds to the audio is added to the video too. What it adds:
//! - Opus frames of [`FRAME_MS`] (10 ms): a frame goes out once its last sample is decoded, so a
//!   sample waits for at most one frame beyond the AAC frame (1024 samples, 21 ms at 48 kHz) that
//!   brought it; with 20 ms frames most frames needed the next AAC frame too.
//! - `restricted-lowdelay`: the encoder's lookahead is 2.5 ms instead of 6.5 ms.
//! - Packets are handed over from the appsink's callback as soon as they are encoded, through a
//!   bounded channel the connection task waits on ([`AacToOpus::next`]); they are not collected
//!   when the next AAC frame is pushed (which held every packet one AAC frame longer).
//!
//! Measured in `tests::transcoding_adds_a_frame_at_most` and docs/benchmarks.md (issue #16 §2).

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::sync::mpsc;

use crate::pipeline::{self, make};

/// FLV SoundFormat 10: AAC (FLV spec, AUDIODATA).
const SOUND_FORMAT_AAC: u8 = 10;
/// Bytes queued in the pipeline's source before pushes are refused (bounded memory).
const MAX_QUEUED_BYTES: u64 = 512 * 1024;
/// Opus clock rate (RFC 7587 §4.1).
pub const OPUS_CLOCK: u32 = 48_000;
/// Opus frame duration: what a sample may wait for its frame to fill (see the module doc).
pub const FRAME_MS: u32 = 10;
/// Opus packets encoded and not yet taken by the connection task: 1.3 s of audio. Beyond it
/// (a stalled task) packets are dropped rather than kept.
const MAX_WAITING_PACKETS: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTag {
    /// AudioSpecificConfig: starts (or restarts) the transcoder.
    AacConfig(Bytes),
    AacFrame(Bytes),
    /// Another codec (MP3, Speex, ...): not forwarded.
    Unsupported(u8),
}

pub fn parse_audio(data: &Bytes) -> Option<AudioTag> {
    let &b0 = data.first()?;
    if b0 >> 4 != SOUND_FORMAT_AAC {
        return Some(AudioTag::Unsupported(b0 >> 4));
    }
    match data.get(1)? {
        0 => Some(AudioTag::AacConfig(data.slice(2..))),
        _ => Some(AudioTag::AacFrame(data.slice(2..))),
    }
}

/// One Opus packet: its payload and RTP timestamp (48 kHz, from the RTMP clock's zero).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusPacket {
    pub payload: Bytes,
    pub rtp_ts: u32,
}

/// One stream's AAC → Opus pipeline. Dropping it stops the pipeline.
pub struct AacToOpus {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    out: mpsc::Receiver<OpusPacket>,
}

impl AacToOpus {
    pub fn new(audio_specific_config: &[u8]) -> Result<Self, String> {
        pipeline::init()?;
        let caps = gst::Caps::builder("audio/mpeg")
            .field("mpegversion", 4i32)
            .field("stream-format", "raw")
            .field(
                "codec_data",
                gst::Buffer::from_slice(audio_specific_config.to_vec()),
            )
            .build();
        let src = gst_app::AppSrc::builder()
            .caps(&caps)
            .format(gst::Format::Time)
            .is_live(true)
            .max_bytes(MAX_QUEUED_BYTES)
            .build();
        let parse = make("aacparse")?;
        let dec = make("avdec_aac")?;
        let convert = make("audioconvert")?;
        let resample = make("audioresample")?;
        let filter = make("capsfilter")?;
        filter.set_property(
            "caps",
            gst::Caps::builder("audio/x-raw")
                .field("rate", OPUS_CLOCK as i32)
                .field("channels", 2i32)
                .build(),
        );
        let enc = make("opusenc")?;
        enc.set_property_from_str("frame-size", &FRAME_MS.to_string());
        enc.set_property_from_str("audio-type", "restricted-lowdelay");
        enc.set_property("bitrate", 96_000i32);
        // Each packet's timestamp is the previous one's plus its samples: RTMP gives AAC frames
        // whole milliseconds, and timestamps that tracked them (±0.5 ms from 20 ms) told the
        // receiver of overlaps and gaps, which it filled with concealment (a third of the
        // samples) and a larger jitter buffer. It resyncs on a jump past `tolerance` (40 ms).
        enc.set_property("perfect-timestamp", true);
        let (tx, out) = mpsc::channel(MAX_WAITING_PACKETS);
        let sink = gst_app::AppSink::builder()
            .sync(false)
            .max_buffers(1)
            .callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        if let Some(packet) = opus_packet(&sample) {
                            // Full: the connection task is stalled; drop rather than queue.
                            if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(packet) {
                                return Err(gst::FlowError::Flushing);
                            }
                        }
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            )
            .build();
        let pipeline = pipeline::linear(&[
            src.upcast_ref(),
            &parse,
            &dec,
            &convert,
            &resample,
            &filter,
            &enc,
            sink.upcast_ref(),
        ])?;
        Ok(Self { pipeline, src, out })
    }

    /// Push one AAC frame (RTMP timestamp in ms). Its Opus packets come out of [`Self::next`]
    /// as soon as they are encoded.
    pub fn push(&mut self, timestamp_ms: u32, frame: &[u8]) -> Result<(), String> {
        let mut buf = gst::Buffer::from_slice(frame.to_vec());
        buf.get_mut()
            .expect("new buffer")
            .set_pts(gst::ClockTime::from_mseconds(timestamp_ms as u64));
        self.src
            .push_buffer(buf)
            .map(|_| ())
            .map_err(|e| format!("push: {e:?}"))
    }

    /// The next Opus packet, once it is encoded; `None` once the pipeline stopped.
    pub async fn next(&mut self) -> Option<OpusPacket> {
        self.out.recv().await
    }

    /// An Opus packet encoded already, if any.
    pub fn try_next(&mut self) -> Option<OpusPacket> {
        self.out.try_recv().ok()
    }
}

fn opus_packet(sample: &gst::Sample) -> Option<OpusPacket> {
    let b = sample.buffer()?;
    let map = b.map_readable().ok()?;
    let pts_ns = b.pts().map(|t| t.nseconds()).unwrap_or(0);
    Some(OpusPacket {
        payload: Bytes::copy_from_slice(map.as_slice()),
        rtp_ts: (pts_ns as u128 * OPUS_CLOCK as u128 / 1_000_000_000) as u32,
    })
}

impl Drop for AacToOpus {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn flv_audio_tags() {
        assert_eq!(
            parse_audio(&Bytes::from_static(&[0xaf, 0x00, 0x12, 0x10])),
            Some(AudioTag::AacConfig(Bytes::from_static(&[0x12, 0x10])))
        );
        assert_eq!(
            parse_audio(&Bytes::from_static(&[0xaf, 0x01, 0x21])),
            Some(AudioTag::AacFrame(Bytes::from_static(&[0x21])))
        );
        assert_eq!(
            parse_audio(&Bytes::from_static(&[0x2f, 0x01])),
            Some(AudioTag::Unsupported(2))
        );
        assert_eq!(parse_audio(&Bytes::new()), None);
    }

    const RATE: usize = 48_000;
    /// Samples per AAC frame.
    const AAC_FRAME: usize = 1024;

    /// `ms` of 48 kHz stereo silence with a 1 kHz click of 5 ms at `click_ms`, as AAC from
    /// GStreamer's `avenc_aac` (FFmpeg's encoder, as OBS and ffmpeg publish): the
    /// AudioSpecificConfig and (RTMP timestamp ms, raw frame), the first frame at 1 s.
    fn aac_stream(ms: usize, click_ms: usize) -> (Vec<u8>, Vec<(u32, Bytes)>) {
        pipeline::init().unwrap();
        let desc = "appsrc name=in format=time caps=audio/x-raw,format=S16LE,layout=interleaved,rate=48000,channels=2 \
                    ! audioconvert ! avenc_aac ! aacparse ! audio/mpeg,stream-format=raw \
                    ! appsink name=out sync=false";
        let pipeline = gst::parse::launch(desc)
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        let by_name = |n: &str| pipeline.by_name(n).unwrap();
        let src = by_name("in").downcast::<gst_app::AppSrc>().unwrap();
        let sink = by_name("out").downcast::<gst_app::AppSink>().unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let total = ms * RATE / 1000;
        let click = click_ms * RATE / 1000;
        for start in (0..total).step_by(AAC_FRAME) {
            let mut pcm = Vec::with_capacity(AAC_FRAME * 4);
            for s in start..(start + AAC_FRAME).min(total) {
                let v = match s.checked_sub(click) {
                    Some(i) if i < RATE / 200 => {
                        (26_000.0
                            * (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / RATE as f64).sin())
                            as i16
                    }
                    _ => 0,
                };
                pcm.extend_from_slice(&v.to_le_bytes());
                pcm.extend_from_slice(&v.to_le_bytes());
            }
            let mut buf = gst::Buffer::from_slice(pcm);
            let b = buf.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_nseconds(
                (start * 1_000_000_000 / RATE) as u64,
            ));
            src.push_buffer(buf).unwrap();
        }
        src.end_of_stream().unwrap();
        let mut asc = Vec::new();
        let mut frames = Vec::new();
        while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
            if asc.is_empty() {
                let s = sample.caps().unwrap().structure(0).unwrap();
                let cd = s.get::<gst::Buffer>("codec_data").unwrap();
                asc = cd.map_readable().unwrap().to_vec();
            }
            let b = sample.buffer().unwrap();
            let pts_ms = b.pts().unwrap().mseconds() as u32;
            frames.push((
                1000 + pts_ms,
                Bytes::copy_from_slice(b.map_readable().unwrap().as_slice()),
            ));
        }
        pipeline.set_state(gst::State::Null).unwrap();
        (asc, frames)
    }

    /// `frames` (pts ns, payload) decoded by `decoder` from `caps`: when (ns, on the frames'
    /// clock) the first sample louder than a third of full scale is.
    fn click_time(caps: gst::Caps, decoder: &str, frames: &[(u64, Bytes)]) -> u64 {
        let desc = format!(
            "appsrc name=in format=time ! {decoder} ! audioconvert \
             ! audio/x-raw,format=S16LE,layout=interleaved,channels=2 ! appsink name=out sync=false"
        );
        let pipeline = gst::parse::launch(&desc)
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        let by_name = |n: &str| pipeline.by_name(n).unwrap();
        let src = by_name("in").downcast::<gst_app::AppSrc>().unwrap();
        src.set_caps(Some(&caps));
        let sink = by_name("out").downcast::<gst_app::AppSink>().unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        for (pts, payload) in frames {
            let mut buf = gst::Buffer::from_slice(payload.clone());
            buf.get_mut()
                .unwrap()
                .set_pts(gst::ClockTime::from_nseconds(*pts));
            src.push_buffer(buf).unwrap();
        }
        src.end_of_stream().unwrap();
        let mut found = None;
        while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
            let b = sample.buffer().unwrap();
            let map = b.map_readable().unwrap();
            let loud = map
                .chunks_exact(4)
                .position(|s| i16::from_le_bytes([s[0], s[1]]).unsigned_abs() > 11_000);
            if let (None, Some(i)) = (found, loud) {
                found = Some(b.pts().unwrap().nseconds() + i as u64 * 1_000_000_000 / RATE as u64);
            }
        }
        pipeline.set_state(gst::State::Null).unwrap();
        found.expect("the click is heard")
    }

    /// Push `frames` one by one; after each, wait (bounded) for the Opus packets it completes
    /// (every Opus frame ending by the AAC frame's end), before pushing the next. Returns every
    /// packet and, per AAC frame, how long until those packets were out (`None`: not in 1 s).
    fn transcode_frame_by_frame(
        asc: &[u8],
        frames: &[(u32, Bytes)],
    ) -> (Vec<OpusPacket>, Vec<Option<Duration>>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut t = AacToOpus::new(asc).unwrap();
        let mut packets = Vec::new();
        let mut waits = Vec::new();
        let opus_frame = RATE * FRAME_MS as usize / 1000;
        for (i, (ts, frame)) in frames.iter().enumerate() {
            let pushed = Instant::now();
            t.push(*ts, frame).unwrap();
            let due = (i + 1) * AAC_FRAME / opus_frame;
            let wait = rt.block_on(async {
                while packets.len() < due {
                    match tokio::time::timeout(Duration::from_secs(1), t.next()).await {
                        Ok(Some(p)) => packets.push(p),
                        _ => return None,
                    }
                }
                Some(pushed.elapsed())
            });
            waits.push(wait);
        }
        (packets, waits)
    }

    #[test]
    fn transcoding_adds_a_frame_at_most() {
        let (asc, frames) = aac_stream(1000, 500);
        let (packets, waits) = transcode_frame_by_frame(&asc, &frames);
        let late = waits.iter().filter(|w| w.is_none()).count();
        assert_eq!(
            late, 0,
            "AAC frames whose Opus did not come out without the next one"
        );
        let mut waits: Vec<Duration> = waits.into_iter().flatten().collect();
        waits.sort();
        eprintln!(
            "{} AAC frames → {} Opus packets; from a push to its packets out: median {:?}, max {:?}",
            frames.len(),
            packets.len(),
            waits[waits.len() / 2],
            waits.last().unwrap()
        );
        let step = OPUS_CLOCK * FRAME_MS / 1000;
        // The first packet is shorter by the encoder's lookahead (2.5 ms, which GStreamer takes
        // off its time so that the decoded audio stays on the RTMP clock); the rest are whole.
        assert_eq!(
            packets[1].rtp_ts - packets[0].rtp_ts,
            step - OPUS_CLOCK / 400
        );
        assert!(
            packets[1..]
                .windows(2)
                .all(|w| w[1].rtp_ts.wrapping_sub(w[0].rtp_ts) == step),
            "timestamps advance by each packet's samples exactly (a receiver conceals any gap)"
        );
        assert_eq!(
            packets[0].rtp_ts,
            frames[0].0 * (OPUS_CLOCK / 1000),
            "on the RTMP clock"
        );
    }

    #[test]
    fn opus_keeps_the_rtmp_clock() {
        let (asc, frames) = aac_stream(1000, 500);
        let aac_caps = gst::Caps::builder("audio/mpeg")
            .field("mpegversion", 4i32)
            .field("stream-format", "raw")
            .field("codec_data", gst::Buffer::from_slice(asc.clone()))
            .build();
        let ms = |f: &[(u32, Bytes)]| -> Vec<(u64, Bytes)> {
            f.iter()
                .map(|(ts, b)| (u64::from(*ts) * 1_000_000, b.clone()))
                .collect()
        };
        let in_aac = click_time(aac_caps, "aacparse ! avdec_aac", &ms(&frames));
        let (packets, _) = transcode_frame_by_frame(&asc, &frames);
        let opus_caps = gst::Caps::builder("audio/x-opus")
            .field("channel-mapping-family", 0i32)
            .field("channels", 2i32)
            .field("rate", OPUS_CLOCK as i32)
            .build();
        let opus: Vec<(u64, Bytes)> = packets
            .iter()
            .map(|p| {
                (
                    u64::from(p.rtp_ts) * 1_000_000_000 / u64::from(OPUS_CLOCK),
                    p.payload.clone(),
                )
            })
            .collect();
        // Decoded as a WebRTC receiver does: each packet at its RTP time, no pre-skip.
        let in_opus = click_time(opus_caps, "opusdec", &opus);
        let shift_us = (in_opus as i64 - in_aac as i64) / 1000;
        eprintln!("click in the AAC at {in_aac} ns, in the Opus {shift_us} µs later");
        assert!(
            (0..=3_000).contains(&shift_us),
            "the Opus plays the click {shift_us} µs from the AAC (the encoder's 2.5 ms lookahead at most)"
        );
    }
}
