//! One stream's GStreamer pipeline: its RTP in (two `appsrc`s), encoded frames out (an
//! `appsink` per rendition's video, one for the AAC audio), handed to the stream's packager
//! (`packager.rs`), which cuts them into fMP4 parts and segments.
//!
//! ```text
//! video appsrc ! rtpjitterbuffer ! depay ! (h264parse) ! tee ─┬─ h264parse ! appsink v_source   (H.264 passed through)
//!                                                           └─ decoder ! tee ─┬─ scale/rate ! x264enc ! h264parse ! appsink v_720p ...
//! audio appsrc ! rtpjitterbuffer ! rtpopusdepay ! opusdec ! avenc_aac ! aacparse ! appsink aac
//! aac_in appsrc ! aacparse ! appsink aac          (an RTMP publisher's AAC, as it came)
//! ```
//!
//! Keyframes line up across renditions: a probe on each encoder's input sends it a
//! force-key-unit event at the frame nearest each keyframe of a passed-through source (so
//! segments of all renditions start on the same frames), or every segment duration when
//! everything is encoded.
//! Queues before the encoders are leaky: an encoder behind real time drops frames (counted in
//! `glint_hls_frames_dropped_total`) instead of queueing without bound.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use thiserror::Error;

use std::sync::mpsc::SyncSender;

use bytes::Bytes;

use super::fmp4::Codec;
use super::ladder::Rendition;
use super::packager::Msg;
use super::segmenter::{AudioFrame, VideoFrame};
use super::store::{Kind, Uploads};
use crate::metrics::Metrics;
use crate::pipeline;
pub use crate::pipeline::PipelineError;

/// Why a stream's HLS pipeline did not start, or stopped.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum TranscoderError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// GStreamer refused the pipeline description (an element or property it does not know).
    #[error("HLS pipeline: {0}")]
    Describe(#[source] glib::Error),
    /// The description names an element the built pipeline lacks (a bug in [`describe`]).
    #[error("HLS pipeline: no element {0:?} of the right type")]
    Missing(String),
    #[error("HLS pipeline start: {0}")]
    Start(#[source] gst::StateChangeError),
    /// An element posted an error on the bus while running (a decoder fed garbage, say).
    #[error("{element}: {source}{}", .debug.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Element {
        /// The element's path in the pipeline.
        element: String,
        #[source]
        source: glib::Error,
        /// GStreamer's debug text: where and why.
        debug: Option<String>,
    },
}

/// How a stream's video arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoInput {
    H264,
    Vp8,
}

/// How a stream's audio arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioInput {
    None,
    /// Opus RTP (WebRTC publishers): decoded and encoded as AAC.
    Opus,
    /// AAC frames as an ingest publisher sent them (its AudioSpecificConfig): passed through.
    Aac(Bytes),
}

pub struct Settings {
    /// How often every encoder makes a keyframe (when nothing is passed through).
    pub segment: Duration,
    pub audio_kbps: u32,
    pub audio: AudioInput,
}

/// Where the video's timeline starts: the running time its first packet was pushed at (the
/// jitter buffer's base, `mode=none`) and that packet's RTP timestamp. Set once.
#[derive(Debug, Clone, Copy)]
struct VideoStart {
    base: gst::ClockTime,
    ts: u32,
}

/// AAC passed through: its appsrc, the configuration of its caps, and the latest frame's RTP
/// timestamp with its distance from the video's first (90 kHz ticks, extended past wraps).
struct AacIn {
    src: gst_app::AppSrc,
    state: Mutex<(Bytes, Option<(u32, i64)>)>,
}

pub struct Transcoder {
    pipeline: gst::Pipeline,
    video: gst_app::AppSrc,
    audio: Option<gst_app::AppSrc>,
    /// AAC passed through (`AudioInput::Aac`).
    aac: Option<AacIn>,
    video_start: std::sync::OnceLock<VideoStart>,
    /// The stream's packager: told of publisher reconnects.
    packager: SyncSender<Msg>,
    /// The latest thumbnail (JPEG).
    thumbnail: Arc<Mutex<Option<bytes::Bytes>>>,
}

/// A JPEG of the stream this often, stored as `<stream>/thumb.jpg`.
pub const THUMBNAIL_EVERY: Duration = Duration::from_secs(10);
const THUMBNAIL_WIDTH: u32 = 320;
/// Bytes of RTP an input may queue before packets are dropped.
const INPUT_QUEUE_BYTES: u64 = 4 << 20;

impl Transcoder {
    /// `prefix` is `<stream>` (its thumbnail goes to `<prefix>/thumb.jpg`); the encoded frames
    /// go to `packager`, rendition `i`'s video as `Msg::Video { rendition: i, .. }`.
    pub fn start(
        input: VideoInput,
        renditions: &[Rendition],
        settings: &Settings,
        prefix: &str,
        packager: SyncSender<Msg>,
        uploads: Uploads,
        metrics: Arc<Metrics>,
    ) -> Result<Self, TranscoderError> {
        pipeline::init()?;
        let desc = describe(input, renditions, settings);
        let pipeline = gst::parse::launch(&desc)
            .map_err(TranscoderError::Describe)?
            .downcast::<gst::Pipeline>()
            .map_err(|_| TranscoderError::Missing("pipeline".into()))?;
        let appsrc = |name: &str| -> Result<gst_app::AppSrc, TranscoderError> {
            pipeline
                .by_name(name)
                .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
                .ok_or_else(|| TranscoderError::Missing(name.into()))
        };
        let appsink = |name: &str| -> Result<gst_app::AppSink, TranscoderError> {
            pipeline
                .by_name(name)
                .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
                .ok_or_else(|| TranscoderError::Missing(name.into()))
        };
        let video = appsrc("video")?;
        let audio = match settings.audio {
            AudioInput::Opus => Some(appsrc("audio")?),
            _ => None,
        };
        let aac = match &settings.audio {
            AudioInput::Aac(asc) => {
                let src = appsrc("aac_in")?;
                src.set_caps(Some(&aac_caps(asc)));
                src.set_max_bytes(INPUT_QUEUE_BYTES);
                src.set_property_from_str("leaky-type", "downstream");
                Some(AacIn {
                    src,
                    state: Mutex::new((asc.clone(), None)),
                })
            }
            _ => None,
        };
        for src in std::iter::once(&video).chain(audio.as_ref()) {
            src.set_max_bytes(INPUT_QUEUE_BYTES);
            src.set_property_from_str("leaky-type", "downstream");
        }
        for (i, r) in renditions.iter().enumerate() {
            video_out(&appsink(&format!("v_{}", r.name))?, i, packager.clone());
        }
        if settings.audio != AudioInput::None {
            audio_out(&appsink("aac")?, packager.clone());
        }
        install_keyframe_alignment(&pipeline, input, renditions, settings.segment);
        let thumbnail: Arc<Mutex<Option<bytes::Bytes>>> = Default::default();
        if let Some(sink) = pipeline
            .by_name("thumbnails")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        {
            let path = format!("{prefix}/thumb.jpg");
            let u = uploads.clone();
            let latest = thumbnail.clone();
            sink.set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |s| {
                        if let Ok(sample) = s.pull_sample() {
                            if let Some(map) = sample.buffer().and_then(|b| b.map_readable().ok()) {
                                let jpeg = bytes::Bytes::copy_from_slice(map.as_slice());
                                *latest.lock().unwrap_or_else(|e| e.into_inner()) =
                                    Some(jpeg.clone());
                                u.put(path.clone(), jpeg, Kind::Image);
                            }
                        }
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            );
        }
        for r in renditions.iter().filter(|r| !r.passthrough) {
            let last_warned: Arc<Mutex<Option<std::time::Instant>>> = Default::default();
            for queue in [format!("qs_{}", r.name), format!("q_{}", r.name)] {
                let Some(q) = pipeline.by_name(&queue) else {
                    continue;
                };
                let m = metrics.clone();
                let (stream, rendition) = (prefix.to_owned(), r.name.clone());
                let last_warned = last_warned.clone();
                q.connect("overrun", false, move |_| {
                    Metrics::add(&m.hls_frames_dropped, 1);
                    // Said at most every 10 s: the machine cannot keep up with the ladder.
                    let mut last = last_warned.lock().unwrap_or_else(|e| e.into_inner());
                    if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        *last = Some(std::time::Instant::now());
                        tracing::warn!(%stream, %rendition, "HLS encoder behind real time: dropping frames");
                    }
                    None
                });
            }
        }
        pipeline
            .set_state(gst::State::Playing)
            .map_err(TranscoderError::Start)?;
        Ok(Self {
            pipeline,
            video,
            audio,
            aac,
            video_start: std::sync::OnceLock::new(),
            packager,
            thumbnail,
        })
    }

    /// The latest thumbnail taken, if any.
    pub fn thumbnail(&self) -> Option<bytes::Bytes> {
        self.thumbnail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// One RTP packet of the stream (whole, header included). False when the pipeline refuses
    /// it (full or stopped).
    pub fn push_video(&self, rtp: bytes::Bytes) -> bool {
        if self.aac.is_some() && self.video_start.get().is_none() {
            if let (Some(ts), Some(base)) = (
                rtp.get(4..8)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
                self.pipeline.current_running_time(),
            ) {
                let _ = self.video_start.set(VideoStart { base, ts });
            }
        }
        self.video.push_buffer(gst::Buffer::from_slice(rtp)).is_ok()
    }

    /// An AAC frame as the ingest publisher sent it, `video_ts` on the video's RTP clock: its
    /// timestamp is where the video's timeline puts that time. A new configuration (the
    /// publisher reconnected with other settings) becomes new caps.
    pub fn push_aac(&self, config: &Bytes, frame: Bytes, video_ts: u32) -> bool {
        let Some(aac) = &self.aac else {
            return true;
        };
        let Some(start) = self.video_start.get() else {
            return true; // before the first video packet: no timeline yet
        };
        let pts = {
            let mut state = aac.state.lock().unwrap_or_else(|e| e.into_inner());
            let (caps, last) = &mut *state;
            if *caps != *config {
                aac.src.set_caps(Some(&aac_caps(config)));
                *caps = config.clone();
            }
            let (last_ts, ticks) = last.unwrap_or((start.ts, 0));
            let ticks = ticks + i64::from(video_ts.wrapping_sub(last_ts) as i32);
            *last = Some((video_ts, ticks));
            let ns = start.base.nseconds() as i64 + ticks * 1_000_000_000 / 90_000;
            if ns < 0 {
                return true; // earlier than the video's first frame
            }
            gst::ClockTime::from_nseconds(ns as u64)
        };
        let mut buffer = gst::Buffer::from_slice(frame);
        if let Some(b) = buffer.get_mut() {
            b.set_pts(pts);
            b.set_dts(pts);
        }
        aac.src.push_buffer(buffer).is_ok()
    }

    pub fn push_audio(&self, rtp: bytes::Bytes) -> bool {
        match &self.audio {
            Some(a) => a.push_buffer(gst::Buffer::from_slice(rtp)).is_ok(),
            None => true,
        }
    }

    /// The publisher reconnected: every rendition starts a new segment at the new publisher's
    /// first keyframe, tagged `#EXT-X-DISCONTINUITY` in its playlist.
    pub fn discontinuity(&self) {
        let _ = self.packager.try_send(Msg::Discontinuity);
    }

    /// The first error on the pipeline's bus, if any (a decoder fed garbage, say).
    pub fn error(&self) -> Option<TranscoderError> {
        let bus = self.pipeline.bus()?;
        while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
            if let gst::MessageView::Error(e) = msg.view() {
                return Some(TranscoderError::Element {
                    element: e
                        .src()
                        .map(|s| s.path_string().to_string())
                        .unwrap_or_default(),
                    source: e.error(),
                    debug: e.debug().map(|d| d.to_string()),
                });
            }
        }
        None
    }

    /// End of stream: the last frames reach the packager, which closes the last segments and
    /// ends the playlists. Waits up to `timeout` for that, then stops the pipeline.
    pub fn finish(&self, timeout: Duration) {
        let _ = self.video.end_of_stream();
        if let Some(a) = &self.audio {
            let _ = a.end_of_stream();
        }
        if let Some(a) = &self.aac {
            let _ = a.src.end_of_stream();
        }
        if let Some(bus) = self.pipeline.bus() {
            let _ = bus.timed_pop_filtered(
                gst::ClockTime::from_mseconds(timeout.as_millis() as u64),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            );
        }
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

impl Drop for Transcoder {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// 320 pixels wide (or the source's width if smaller), same aspect ratio, even.
fn thumbnail_size(w: u32, h: u32) -> (u32, u32) {
    let tw = w.min(THUMBNAIL_WIDTH) & !1;
    let th = ((h as u64 * tw as u64 / w.max(1) as u64) as u32 + 1) & !1;
    (tw.max(2), th.max(2))
}

/// Rendition `rendition`'s encoded video (`video/x-h264,stream-format=avc,alignment=au`) to
/// the packager, its codec configuration first and again whenever it changes.
fn video_out(sink: &gst_app::AppSink, rendition: usize, tx: SyncSender<Msg>) {
    let mut caps: Option<gst::Caps> = None;
    let on_eos = tx.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if let Some(codec) = changed_caps(&sample, &mut caps).and_then(|c| h264_codec(&c)) {
                    tx.send(Msg::VideoCaps { rendition, codec })
                        .map_err(|_| gst::FlowError::Flushing)?;
                }
                let Some((pts_ns, dts_ns, data, keyframe)) = frame_of(&sample) else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let frame = VideoFrame {
                    dts_ns,
                    pts_ns,
                    keyframe,
                    data,
                };
                tx.send(Msg::Video { rendition, frame })
                    .map_err(|_| gst::FlowError::Flushing)?;
                Ok(gst::FlowSuccess::Ok)
            })
            .eos(move |_| {
                let _ = on_eos.send(Msg::Eos { rendition });
            })
            .build(),
    );
}

/// The AAC audio (`audio/mpeg,stream-format=raw`) to the packager, which gives it to every
/// rendition.
fn audio_out(sink: &gst_app::AppSink, tx: SyncSender<Msg>) {
    let mut caps: Option<gst::Caps> = None;
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if let Some(codec) = changed_caps(&sample, &mut caps).and_then(|c| aac_codec(&c)) {
                    tx.send(Msg::AudioCaps(codec))
                        .map_err(|_| gst::FlowError::Flushing)?;
                }
                let duration_ns = sample
                    .buffer()
                    .and_then(|b| b.duration())
                    .map_or(0, |d| d.nseconds());
                let Some((pts_ns, _, data, _)) = frame_of(&sample) else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let frame = AudioFrame {
                    pts_ns,
                    duration_ns,
                    data,
                };
                tx.send(Msg::Audio(frame))
                    .map_err(|_| gst::FlowError::Flushing)?;
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}

/// The sample's caps when they differ from `last` (the first sample's, or a new configuration),
/// remembered as the last.
fn changed_caps(sample: &gst::Sample, last: &mut Option<gst::Caps>) -> Option<gst::Caps> {
    let caps = sample
        .caps()
        .filter(|c| last.as_deref() != Some(*c))?
        .to_owned();
    *last = Some(caps.clone());
    Some(caps)
}

/// A sample's presentation and decode times (running time, ns), bytes and keyframe flag.
fn frame_of(sample: &gst::Sample) -> Option<(u64, u64, Bytes, bool)> {
    let buffer = sample.buffer()?;
    let segment = sample.segment()?.downcast_ref::<gst::ClockTime>()?;
    let pts = segment.to_running_time(buffer.pts()?)?;
    let dts = buffer
        .dts()
        .and_then(|d| segment.to_running_time(d))
        .unwrap_or(pts);
    let map = buffer.map_readable().ok()?;
    let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
    Some((
        pts.nseconds(),
        dts.nseconds(),
        Bytes::copy_from_slice(map.as_slice()),
        keyframe,
    ))
}

/// Raw AAC with its AudioSpecificConfig (aacparse reads the rate and channels from it).
fn aac_caps(asc: &Bytes) -> gst::Caps {
    gst::Caps::builder("audio/mpeg")
        .field("mpegversion", 4i32)
        .field("stream-format", "raw")
        .field("codec_data", gst::Buffer::from_slice(asc.clone()))
        .build()
}

fn h264_codec(caps: &gst::CapsRef) -> Option<Codec> {
    let s = caps.structure(0)?;
    let avcc = s.get::<gst::Buffer>("codec_data").ok()?;
    let avcc = Bytes::copy_from_slice(avcc.map_readable().ok()?.as_slice());
    Some(Codec::H264 {
        avcc,
        width: s.get::<i32>("width").ok()?.max(0) as u32,
        height: s.get::<i32>("height").ok()?.max(0) as u32,
    })
}

fn aac_codec(caps: &gst::CapsRef) -> Option<Codec> {
    let s = caps.structure(0)?;
    let asc = s.get::<gst::Buffer>("codec_data").ok()?;
    let asc = Bytes::copy_from_slice(asc.map_readable().ok()?.as_slice());
    Some(Codec::Aac {
        asc,
        sample_rate: s.get::<i32>("rate").ok()?.max(1) as u32,
        channels: s.get::<i32>("channels").ok()?.max(1) as u16,
    })
}

/// `videoscale` options for pure resizing of 4:2:0 video in its own colorspace: planes scaled as
/// they are, no colour-matrix, gamma, primaries or chroma-siting conversion, no dithering. Three
/// times cheaper than the defaults (docs/benchmarks.md), the same picture.
const SCALE_ONLY: &str =
    "chroma-mode=none matrix-mode=none gamma-mode=none primaries-mode=none dither=none";

/// The pipeline, in gst-launch syntax.
fn describe(input: VideoInput, renditions: &[Rendition], s: &Settings) -> String {
    let seg_ns = s.segment.as_nanos();
    let mut d = String::new();
    let (caps, depay) = match input {
        VideoInput::H264 => ("H264", "rtph264depay ! h264parse"),
        VideoInput::Vp8 => ("VP8", "rtpvp8depay"),
    };
    d += &format!(
        "appsrc name=video format=time is-live=true do-timestamp=true \
         caps=\"application/x-rtp,media=video,encoding-name={caps},clock-rate=90000,payload={pt}\" \
         ! rtpjitterbuffer latency=200 mode=none ! {depay} ! tee name=vt ",
        pt = super::VIDEO_CAPS_PT
    );
    let decoder = match input {
        VideoInput::H264 => "avdec_h264",
        VideoInput::Vp8 => "vp8dec",
    };
    d += &format!("vt. ! queue ! {decoder} name=decoder ! videoconvert ! tee name=raw ");
    // A thumbnail every THUMBNAIL_EVERY, for the browse page.
    if let Some(source) = renditions.first() {
        let (w, h) = thumbnail_size(source.width, source.height);
        d += &format!(
            "raw. ! queue leaky=downstream max-size-buffers=2 max-size-bytes=0 max-size-time=0 \
             ! videorate ! video/x-raw,framerate=1/{} ! videoscale ! videoconvert \
             ! video/x-raw,width={w},height={h} ! jpegenc quality=80 \
             ! appsink name=thumbnails sync=false max-buffers=1 drop=true ",
            THUMBNAIL_EVERY.as_secs()
        );
    }
    // Each encoded rung scales from the one above it (720p → 480p → 360p), not all from the
    // source: GStreamer's scaler costs per source pixel, and this halves its share.
    let mut scale_from = "raw".to_string();
    for r in renditions {
        // Frames go out as they come: the packager cuts them (no clock sync, no preroll wait).
        let sink = format!(
            "h264parse ! video/x-h264,stream-format=avc,alignment=au ! appsink name=v_{} sync=false async=false",
            r.name
        );
        if r.passthrough {
            d += &format!("vt. ! queue ! {sink} ");
        } else {
            let fps = r.fps.round().max(1.0) as u32;
            // Leaky queues, before the scaler and before the encoder: a stage behind real time
            // drops frames rather than holding up the others.
            let leaky = format!(
                "leaky=downstream max-size-buffers=0 max-size-bytes=0 max-size-time={seg_ns}"
            );
            d += &format!(
                "{scale_from}. ! queue name=qs_{name} {leaky} \
                 ! videoscale {SCALE_ONLY} ! videorate ! video/x-raw,width={w},height={h},framerate={fps}/1 ! tee name=scaled_{name} \
                 scaled_{name}. ! queue name=q_{name} {leaky} \
                 ! x264enc name=enc_{name} tune=zerolatency speed-preset=veryfast bitrate={kbps} key-int-max={gop} option-string=scenecut=0 \
                 ! video/x-h264,profile=main ! {sink} ",
                name = r.name,
                w = r.width,
                h = r.height,
                kbps = r.video_kbps,
                gop = fps * 10,
            );
            scale_from = format!("scaled_{}", r.name);
        }
    }
    if let AudioInput::Aac(_) = s.audio {
        // As it came: parsed (framing, caps) and handed to the packager.
        d += "appsrc name=aac_in format=time is-live=true ! aacparse \
              ! audio/mpeg,mpegversion=4,stream-format=raw ! appsink name=aac sync=false async=false ";
    }
    if s.audio == AudioInput::Opus {
        d += &format!(
            "appsrc name=audio format=time is-live=true do-timestamp=true \
             caps=\"application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,payload={}\" \
             ! rtpjitterbuffer latency=200 mode=none ! rtpopusdepay ! opusdec ! audioconvert ! audioresample \
             ! audio/x-raw,rate=48000,channels=2 ! avenc_aac bitrate={} ! aacparse \
             ! audio/mpeg,mpegversion=4,stream-format=raw ! appsink name=aac sync=false async=false ",
            super::AUDIO_CAPS_PT,
            s.audio_kbps * 1000
        );
    }
    d
}

/// Keyframes line up across renditions. Where keyframes come from: the passed-through
/// source's own (a probe on the compressed input), or every segment duration of the decoded
/// input when everything is encoded. Each encoder's input has a probe of its own that sends the
/// encoder a force-key-unit event just ahead of the frame nearest that time: after `videorate`
/// (which holds a frame) a probe upstream of it would make the keyframe a frame or two early.
fn install_keyframe_alignment(
    pipeline: &gst::Pipeline,
    input: VideoInput,
    renditions: &[Rendition],
    segment: Duration,
) {
    type Times = Arc<Mutex<std::collections::VecDeque<gst::ClockTime>>>;
    let mut rungs: Vec<(gst::Pad, Times, gst::ClockTime)> = Vec::new();
    for r in renditions.iter().filter(|r| !r.passthrough) {
        let Some(pad) = pipeline
            .by_name(&format!("enc_{}", r.name))
            .and_then(|e| e.static_pad("sink"))
        else {
            continue;
        };
        let half_frame = gst::ClockTime::from_nseconds((5e8 / r.fps.max(1.0)) as u64);
        rungs.push((pad, Times::default(), half_frame));
    }
    if rungs.is_empty() {
        return;
    }
    let queues: Vec<Times> = rungs.iter().map(|(_, t, _)| t.clone()).collect();
    let announce = move |t: gst::ClockTime| {
        for q in &queues {
            let mut q = q.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() < 64 {
                q.push_back(t);
            }
        }
    };
    let passthrough = renditions.iter().any(|r| r.passthrough) && input == VideoInput::H264;
    if passthrough {
        // The tee after h264parse: compressed access units, keyframes not DELTA_UNIT.
        let Some(tee_sink) = pipeline.by_name("vt").and_then(|t| t.static_pad("sink")) else {
            return;
        };
        tee_sink.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(b) = info.buffer() {
                if !b.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                    if let Some(pts) = b.pts() {
                        announce(pts);
                    }
                }
            }
            gst::PadProbeReturn::Ok
        });
    } else {
        let Some(decoder_src) = pipeline
            .by_name("decoder")
            .and_then(|d| d.static_pad("src"))
        else {
            return;
        };
        let segment = gst::ClockTime::from_nseconds(segment.as_nanos() as u64);
        let last: Mutex<Option<gst::ClockTime>> = Mutex::new(None);
        decoder_src.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(pts) = info.buffer().and_then(|b| b.pts()) {
                let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
                if last.is_none_or(|l| pts >= l + segment) {
                    *last = Some(pts);
                    announce(pts);
                }
            }
            gst::PadProbeReturn::Ok
        });
    }
    for (pad, times, half_frame) in rungs {
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let Some(pts) = info.buffer().and_then(|b| b.pts()) else {
                return gst::PadProbeReturn::Ok;
            };
            let force = {
                let mut t = times.lock().unwrap_or_else(|e| e.into_inner());
                let mut hit = false;
                while t.front().is_some_and(|&k| k <= pts + half_frame) {
                    t.pop_front();
                    hit = true;
                }
                hit
            };
            if force {
                // "As soon as possible": the next frame the encoder takes, which is this one
                // (the event goes just ahead of it). A running time would be compared with
                // x264enc's shifted clock (it moves input below 1000 h up to there).
                const ASAP: u64 = u64::MAX; // GST_CLOCK_TIME_NONE
                let event = gst::event::CustomDownstream::new(
                    gst::Structure::builder("GstForceKeyUnit")
                        .field("timestamp", ASAP)
                        .field("stream-time", ASAP)
                        .field("running-time", ASAP)
                        .field("all-headers", true)
                        .field("count", 0u32)
                        .build(),
                );
                // Into the encoder, before this buffer (same streaming thread, serialized).
                pad.send_event(event);
            }
            gst::PadProbeReturn::Ok
        });
    }
}
