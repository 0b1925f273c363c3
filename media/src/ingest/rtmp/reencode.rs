//! H.264 with B-frames → H.264 without, for WebRTC viewers.
//!
//! Browsers' WebRTC receivers decode frames in arrival order and drop a frame whose timestamp
//! is older than one already decoded, so a stream with B-frames (OBS's x264 with its default
//! "high" profile may have them) stutters. Such streams go through a GStreamer pipeline per
//! stream: `appsrc ! h264parse ! avdec_h264 ! videoconvert ! x264enc (zerolatency, no B-frames)
//! ! appsink`. Timestamps travel through, so RTP timestamps stay on the RTMP clock the audio uses.

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::flv::{self, VideoTag};
use crate::pipeline::{self, make};

/// Bitrate of the re-encoded video (kbit/s): fits 720p30, fair for 1080p.
pub const BITRATE_KBPS: u32 = 3000;
/// A keyframe at least this often (frames), so viewers joining wait at most ~2 s at 30 fps.
const KEY_INT_MAX: u32 = 60;
/// x264enc's minimum PTS (`gst_video_encoder_set_min_pts`, 1000 h): it shifts earlier input by
/// an amount that depends on the first frame. Times are pushed this much later and taken back
/// on the way out, so they come through unchanged.
const X264ENC_MIN_PTS_NS: u64 = 1000 * 3600 * 1_000_000_000;
/// Bytes queued at the pipeline's input before pushes fail (bounded memory).
const MAX_QUEUED_BYTES: u64 = 8 << 20;

/// One re-encoded access unit.
#[derive(Debug)]
pub struct EncodedFrame {
    pub keyframe: bool,
    /// RTP timestamp (90 kHz) relative to the RTMP clock, as `flv::rtp_timestamp` gives.
    pub rtp_ts: u32,
    pub nalus: Vec<Bytes>,
    /// The encoder's SPS and PPS, given with keyframes.
    pub parameter_sets: Vec<Bytes>,
}

/// One stream's re-encoder. Dropping it stops the pipeline.
pub struct WithoutBFrames {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    sink: gst_app::AppSink,
}

impl WithoutBFrames {
    /// `avc_config` is the stream's AVCDecoderConfigurationRecord.
    pub fn new(avc_config: &Bytes) -> Result<Self, String> {
        pipeline::init()?;
        let caps = gst::Caps::builder("video/x-h264")
            .field("stream-format", "avc")
            .field("alignment", "au")
            .field("codec_data", gst::Buffer::from_slice(avc_config.clone()))
            .build();
        let src = gst_app::AppSrc::builder()
            .caps(&caps)
            .format(gst::Format::Time)
            .is_live(true)
            .max_bytes(MAX_QUEUED_BYTES)
            .build();
        let parse = make("h264parse")?;
        let dec = make("avdec_h264")?;
        // Slice threads only: frame threads would hold frames back (latency).
        dec.set_property_from_str("thread-type", "slice");
        let convert = make("videoconvert")?;
        let enc = make("x264enc")?;
        enc.set_property_from_str("tune", "zerolatency");
        enc.set_property_from_str("speed-preset", "superfast");
        enc.set_property("bframes", 0u32);
        enc.set_property("key-int-max", KEY_INT_MAX);
        enc.set_property("bitrate", BITRATE_KBPS);
        let filter = make("capsfilter")?;
        filter.set_property(
            "caps",
            gst::Caps::builder("video/x-h264")
                .field("stream-format", "avc")
                .field("alignment", "au")
                .build(),
        );
        let sink = gst_app::AppSink::builder()
            .sync(false)
            .max_buffers(120)
            .drop(true)
            .build();
        let pipeline = pipeline::linear(&[
            src.upcast_ref(),
            &parse,
            &dec,
            &convert,
            &enc,
            &filter,
            sink.upcast_ref(),
        ])?;
        Ok(Self {
            pipeline,
            src,
            sink,
        })
    }

    /// Push one frame (RTMP decode timestamp and composition offset in ms, the access unit in
    /// AVCC form) and collect every re-encoded frame ready now.
    pub fn push(
        &mut self,
        dts_ms: u32,
        cts_ms: i32,
        keyframe: bool,
        avcc: &Bytes,
    ) -> Result<Vec<EncodedFrame>, String> {
        let mut buf = gst::Buffer::from_slice(avcc.clone());
        {
            let b = buf.get_mut().expect("new buffer");
            let pts = (dts_ms as i64 + cts_ms as i64).max(0) as u64;
            let shifted =
                |ms: u64| gst::ClockTime::from_nseconds(X264ENC_MIN_PTS_NS + ms * 1_000_000);
            b.set_dts(shifted(dts_ms as u64));
            b.set_pts(shifted(pts));
            if !keyframe {
                b.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
        }
        self.src
            .push_buffer(buf)
            .map_err(|e| format!("push: {e:?}"))?;
        let mut out = Vec::new();
        while let Some(sample) = self.sink.try_pull_sample(gst::ClockTime::ZERO) {
            if let Some(frame) = encoded_frame(&sample) {
                out.push(frame);
            }
        }
        Ok(out)
    }
}

fn encoded_frame(sample: &gst::Sample) -> Option<EncodedFrame> {
    let b = sample.buffer()?;
    let keyframe = !b.flags().contains(gst::BufferFlags::DELTA_UNIT);
    let pts_ns = b.pts().map(|t| t.nseconds()).unwrap_or(0);
    let pts_ns = pts_ns.saturating_sub(X264ENC_MIN_PTS_NS);
    let rtp_ts = (pts_ns as u128 * 90_000 / 1_000_000_000) as u32;
    let map = b.map_readable().ok()?;
    let nalus = flv::split_avcc(&Bytes::copy_from_slice(map.as_slice())).ok()?;
    let parameter_sets = if keyframe {
        sample
            .caps()
            .and_then(|c| c.structure(0))
            .and_then(|s| s.get::<gst::Buffer>("codec_data").ok())
            .and_then(|record| {
                let record = Bytes::copy_from_slice(record.map_readable().ok()?.as_slice());
                match flv::parse_avc_config(&record).ok()? {
                    VideoTag::AvcConfig { sps, pps, .. } => {
                        Some(sps.into_iter().chain(pps).collect())
                    }
                    _ => None,
                }
            })
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    Some(EncodedFrame {
        keyframe,
        rtp_ts,
        nalus,
        parameter_sets,
    })
}

impl Drop for WithoutBFrames {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// H.264 with B-frames from GStreamer's own x264enc, as (dts ms, cts ms, keyframe, AVCC
    /// access unit), and its AVCDecoderConfigurationRecord.
    fn b_frame_stream(frames: u32) -> (Bytes, Vec<(u32, i32, bool, Bytes)>) {
        pipeline::init().unwrap();
        let desc = format!(
            "videotestsrc num-buffers={frames} ! video/x-raw,width=320,height=240,framerate=30/1 \
             ! x264enc bframes=2 b-adapt=false key-int-max=30 speed-preset=ultrafast \
             ! h264parse ! video/x-h264,stream-format=avc,alignment=au ! appsink name=out sync=false"
        );
        let pipeline = gst::parse::launch(&desc)
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        let sink = pipeline
            .by_name("out")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let mut record = Bytes::new();
        let mut out = Vec::new();
        while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
            if record.is_empty() {
                let s = sample.caps().unwrap().structure(0).unwrap();
                let cd = s.get::<gst::Buffer>("codec_data").unwrap();
                record = Bytes::copy_from_slice(cd.map_readable().unwrap().as_slice());
            }
            let b = sample.buffer().unwrap();
            let pts = b.pts().unwrap().mseconds() as i64;
            let dts = b.dts().map_or(pts, |d| d.mseconds() as i64);
            let au = Bytes::copy_from_slice(b.map_readable().unwrap().as_slice());
            let key = !b.flags().contains(gst::BufferFlags::DELTA_UNIT);
            out.push((dts, pts, key, au));
        }
        pipeline.set_state(gst::State::Null).unwrap();
        // x264enc offsets its times (by 1000 h) to keep DTS positive: rebase so the first DTS is
        // at 1 s of the RTMP clock, as a publisher's would be.
        let base = out.iter().map(|f| f.0).min().unwrap() - 1000;
        let out = out
            .into_iter()
            .map(|(dts, pts, key, au)| ((dts - base) as u32, (pts - dts) as i32, key, au))
            .collect();
        (record, out)
    }

    #[test]
    fn b_frames_come_out_in_presentation_order() {
        let (record, input) = b_frame_stream(90);
        assert!(
            input.iter().any(|f| f.1 != 0),
            "the source has B-frames (composition offsets)"
        );
        let mut r = WithoutBFrames::new(&record).unwrap();
        let mut frames = Vec::new();
        for (dts, cts, key, au) in &input {
            frames.extend(r.push(*dts, *cts, *key, au).unwrap());
        }
        r.src.end_of_stream().unwrap();
        while let Some(s) = r.sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
            frames.extend(encoded_frame(&s));
        }
        assert_eq!(frames.len(), input.len(), "every frame re-encoded");
        assert!(frames[0].keyframe && !frames[0].parameter_sets.is_empty());
        assert!(
            frames.windows(2).all(|w| w[1].rtp_ts > w[0].rtp_ts),
            "timestamps only go forward: no B-frames left"
        );
        // On the RTMP clock: the first frame shown at 1 s (+ its composition offset).
        let first_pts = input.iter().map(|f| f.0 as i64 + f.1 as i64).min().unwrap();
        assert_eq!(frames[0].rtp_ts as i64, first_pts * 90);
        assert!(frames.iter().all(|f| f.nalus.iter().all(|n| !n.is_empty())));
    }
}
