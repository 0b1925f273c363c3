//! AAC from RTMP → Opus RTP for WebRTC viewers (browsers cannot play AAC over WebRTC), through a
//! GStreamer pipeline per stream: `appsrc ! aacparse ! avdec_aac ! audioconvert ! audioresample
//! ! opusenc ! appsink`. Timestamps travel through the pipeline, so Opus RTP timestamps follow
//! the RTMP clock the video uses.

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::pipeline::{self, make};

/// FLV SoundFormat 10: AAC (FLV spec, AUDIODATA).
const SOUND_FORMAT_AAC: u8 = 10;
/// Bytes queued in the pipeline's source before pushes are refused (bounded memory).
const MAX_QUEUED_BYTES: u64 = 512 * 1024;
/// Opus clock rate (RFC 7587 §4.1).
const OPUS_CLOCK: u64 = 48_000;

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

/// One stream's AAC → Opus pipeline. Dropping it stops the pipeline.
pub struct AacToOpus {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    sink: gst_app::AppSink,
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
                .field("rate", 48_000i32)
                .field("channels", 2i32)
                .build(),
        );
        let enc = make("opusenc")?;
        enc.set_property_from_str("frame-size", "20");
        enc.set_property("bitrate", 96_000i32);
        let sink = gst_app::AppSink::builder()
            .sync(false)
            .max_buffers(200)
            .drop(true)
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
        Ok(Self {
            pipeline,
            src,
            sink,
        })
    }

    /// Push one AAC frame (RTMP timestamp in ms) and collect every Opus packet ready now, as
    /// (payload, RTP timestamp at 48 kHz relative to the RTMP clock).
    pub fn push(&mut self, timestamp_ms: u32, frame: &[u8]) -> Result<Vec<(Bytes, u32)>, String> {
        let mut buf = gst::Buffer::from_slice(frame.to_vec());
        buf.get_mut()
            .expect("new buffer")
            .set_pts(gst::ClockTime::from_mseconds(timestamp_ms as u64));
        self.src
            .push_buffer(buf)
            .map_err(|e| format!("push: {e:?}"))?;
        let mut out = Vec::new();
        while let Some(sample) = self.sink.try_pull_sample(gst::ClockTime::ZERO) {
            let Some(b) = sample.buffer() else { continue };
            let Ok(map) = b.map_readable() else { continue };
            let pts_ns = b.pts().map(|t| t.nseconds()).unwrap_or(0);
            let ts = (pts_ns as u128 * OPUS_CLOCK as u128 / 1_000_000_000) as u32;
            out.push((Bytes::copy_from_slice(map.as_slice()), ts));
        }
        Ok(out)
    }
}

impl Drop for AacToOpus {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

#[cfg(test)]
mod tests {
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
}
