//! One stream's GStreamer pipeline: its RTP in (two `appsrc`s), one `hlssink2` per rendition
//! out, objects handed to the uploader through [`UploadStream`]s.
//!
//! ```text
//! video appsrc ! rtpjitterbuffer ! depay ! (h264parse) ! tee ─┬─ source hlssink2   (H.264 passed through)
//!                                                           └─ decoder ! tee ─┬─ scale/rate ! x264enc ! hlssink2 (720p, ...)
//! audio appsrc ! rtpjitterbuffer ! rtpopusdepay ! opusdec ! avenc_aac ! tee ─ every hlssink2
//! ```
//!
//! Keyframes line up across renditions: a probe on the decoder's output sends every encoder a
//! force-key-unit event at each keyframe of a passed-through source (so segments of all
//! renditions start on the same frames), or every segment duration when everything is encoded.
//! Queues before the encoders are leaky: an encoder behind real time drops frames (counted in
//! `glint_hls_frames_dropped_total`) instead of queueing without bound.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use thiserror::Error;

use super::discontinuity::Marks;
use super::ladder::Rendition;
use super::output::UploadStream;
use super::replay::{Recording, ReplayBudget};
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

pub struct Settings {
    pub segment: Duration,
    /// Segments listed in a live media playlist.
    pub window: u32,
    pub audio_kbps: u32,
    pub with_audio: bool,
    /// Replays on: segments leaving the live window stay in the store.
    pub keep_segments: bool,
    /// Bytes of segments (all renditions) the broadcast keeps for its replay; later segments
    /// leave the store with the live window.
    pub replay_max_bytes: u64,
}

pub struct Transcoder {
    pipeline: gst::Pipeline,
    video: gst_app::AppSrc,
    audio: Option<gst_app::AppSrc>,
    /// Per rendition: its hlssink2 and its reconnect marks.
    sinks: Vec<(gst::Element, Arc<Marks>)>,
    /// Per rendition (by name): every segment its live playlists listed.
    recordings: Vec<(String, Arc<Recording>)>,
    /// The latest thumbnail (JPEG).
    thumbnail: Arc<Mutex<Option<bytes::Bytes>>>,
}

/// A JPEG of the stream this often, stored as `<stream>/thumb.jpg`.
pub const THUMBNAIL_EVERY: Duration = Duration::from_secs(10);
const THUMBNAIL_WIDTH: u32 = 320;
/// Bytes of RTP an input may queue before packets are dropped.
const INPUT_QUEUE_BYTES: u64 = 4 << 20;

impl Transcoder {
    /// `prefix` is `<stream>`; objects go to `<prefix>/<rendition>/...`. `epoch` makes segment
    /// names unique across restarts of the stream (segments are cached as immutable).
    pub fn start(
        input: VideoInput,
        renditions: &[Rendition],
        settings: &Settings,
        prefix: &str,
        epoch: u64,
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
        let video = appsrc("video")?;
        let audio = if settings.with_audio {
            Some(appsrc("audio")?)
        } else {
            None
        };
        for src in std::iter::once(&video).chain(audio.as_ref()) {
            src.set_max_bytes(INPUT_QUEUE_BYTES);
            src.set_property_from_str("leaky-type", "downstream");
        }
        let mut sinks = Vec::new();
        let mut recordings = Vec::new();
        let budget = ReplayBudget::new(prefix, settings.replay_max_bytes, metrics.clone());
        for r in renditions {
            let name = format!("hls_{}", r.name);
            let sink = pipeline
                .by_name(&name)
                .ok_or(TranscoderError::Missing(name))?;
            let marks = Arc::new(Marks::default());
            sinks.push((sink.clone(), marks.clone()));
            let m1 = marks.clone();
            let recording = Arc::new(Recording::new(budget.clone()));
            recordings.push((r.name.clone(), recording.clone()));
            let (r2, r3) = (recording.clone(), recording.clone());
            let dir = format!("{prefix}/{}", r.name);
            let (u1, u2, u3) = (uploads.clone(), uploads.clone(), uploads.clone());
            let d1 = dir.clone();
            sink.connect("get-playlist-stream", false, move |args| {
                let _location = args[1].get::<String>().ok()?;
                let s = UploadStream::playlist(
                    format!("{d1}/index.m3u8"),
                    u1.clone(),
                    m1.clone(),
                    recording.clone(),
                );
                Some(s.upcast::<gio::OutputStream>().to_value())
            });
            let d2 = dir.clone();
            sink.connect("get-fragment-stream", false, move |args| {
                let location = args[1].get::<String>().ok()?;
                marks.segment_requested(basename(&location));
                let s = UploadStream::segment(
                    format!("{d2}/{}", basename(&location)),
                    u2.clone(),
                    r2.clone(),
                );
                Some(s.upcast::<gio::OutputStream>().to_value())
            });
            let d3 = dir.clone();
            let keep = settings.keep_segments;
            sink.connect("delete-fragment", false, move |args| {
                let location = args[1].get::<String>().ok()?;
                let name = basename(&location);
                if !keep || !r3.is_kept(name) {
                    u3.delete(format!("{d3}/{name}"));
                }
                None // GStreamer 1.22's signal returns nothing
            });
            sink.set_property(
                "location",
                format!("{}%05d.ts", super::replay::segment_prefix(epoch)),
            );
        }
        let mut segmenters = Vec::new();
        for (sink, marks) in &sinks {
            if let Some(splitmux) = split_at_reconnects(sink, marks.clone()) {
                segmenters.push((splitmux, marks.clone()));
            }
        }
        // "splitmuxsink-fragment-opened" says where each segment starts (running time).
        if let Some(bus) = pipeline.bus() {
            bus.set_sync_handler(move |_, msg| {
                if let gst::MessageView::Element(e) = msg.view() {
                    if let Some(s) = e
                        .structure()
                        .filter(|s| s.name() == "splitmuxsink-fragment-opened")
                    {
                        // Its "location" is NULL with stream sinks: the segment is the one
                        // hlssink2 last asked a stream for.
                        let Ok(rt) = s.get::<u64>("running-time") else {
                            return gst::BusSyncReply::Pass;
                        };
                        if let Some((_, marks)) = segmenters
                            .iter()
                            .find(|(sm, _)| msg.src() == Some(sm.upcast_ref::<gst::Object>()))
                        {
                            marks.segment_opened(rt);
                        }
                    }
                }
                gst::BusSyncReply::Pass
            });
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
            sinks,
            recordings,
            thumbnail,
        })
    }

    /// Every rendition has written its first media playlist (its first segment is stored).
    pub fn playlists_ready(&self) -> bool {
        self.recordings.iter().all(|(_, r)| r.live())
    }

    /// Each rendition's recording (name, recording).
    pub fn recordings(&self) -> Vec<(String, Arc<Recording>)> {
        self.recordings.clone()
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
        self.video.push_buffer(gst::Buffer::from_slice(rtp)).is_ok()
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
        for (_, marks) in &self.sinks {
            marks.reconnected();
        }
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

    /// End of stream: every hlssink2 closes its last segment and writes `#EXT-X-ENDLIST`.
    /// Waits up to `timeout` for that, then stops the pipeline.
    pub fn finish(&self, timeout: Duration) {
        let _ = self.video.end_of_stream();
        if let Some(a) = &self.audio {
            let _ = a.end_of_stream();
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

/// When the new source's first keyframe reaches `sink` after a reconnect, close the segment
/// there: splitmuxsink's "split-after" ends the segment with the GOP it is gathering (the old
/// source's tail), so the tagged one starts with the new source.
fn split_at_reconnects(sink: &gst::Element, marks: Arc<Marks>) -> Option<gst::Element> {
    let bin = sink.downcast_ref::<gst::Bin>()?;
    let splitmux = bin
        .iterate_elements()
        .into_iter()
        .flatten()
        .find(|e| e.factory().is_some_and(|f| f.name() == "splitmuxsink"))?;
    let pad = sink.sink_pads().into_iter().find(|p| p.name() == "video")?;
    let sm = splitmux.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(b) = info.buffer() else {
            return gst::PadProbeReturn::Ok;
        };
        if b.flags().contains(gst::BufferFlags::DELTA_UNIT) {
            return gst::PadProbeReturn::Ok;
        }
        let running_time = b.pts().and_then(|pts| {
            pad.sticky_event::<gst::event::Segment>(0).and_then(|e| {
                e.segment()
                    .downcast_ref::<gst::ClockTime>()
                    .and_then(|s| s.to_running_time(pts))
            })
        });
        if let Some(rt) = running_time {
            if marks.keyframe_arrives(rt.nseconds()) {
                sm.emit_by_name::<()>("split-after", &[]);
            }
        }
        gst::PadProbeReturn::Ok
    });
    Some(splitmux)
}

fn basename(location: &str) -> &str {
    location.rsplit('/').next().unwrap_or(location)
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
         ! rtpjitterbuffer latency=200 ! {depay} ! tee name=vt ",
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
        let sink = format!(
            "hlssink2 name=hls_{} target-duration={} playlist-length={} max-files={} send-keyframe-requests=false",
            r.name,
            s.segment.as_secs().max(1),
            s.window,
            s.window + 2
        );
        if r.passthrough {
            d += &format!("vt. ! queue ! h264parse config-interval=-1 ! {sink} ");
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
                 ! x264enc tune=zerolatency speed-preset=veryfast bitrate={kbps} key-int-max={gop} option-string=scenecut=0 \
                 ! video/x-h264,profile=main ! h264parse ! {sink} ",
                name = r.name,
                w = r.width,
                h = r.height,
                kbps = r.video_kbps,
                gop = fps * 10,
            );
            scale_from = format!("scaled_{}", r.name);
        }
    }
    if s.with_audio {
        d += &format!(
            "appsrc name=audio format=time is-live=true do-timestamp=true \
             caps=\"application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,payload={}\" \
             ! rtpjitterbuffer latency=200 ! rtpopusdepay ! opusdec ! audioconvert ! audioresample \
             ! audio/x-raw,rate=48000,channels=2 ! avenc_aac bitrate={} ! aacparse ! tee name=at ",
            super::AUDIO_CAPS_PT,
            s.audio_kbps * 1000
        );
        for r in renditions {
            d += &format!("at. ! queue ! hls_{}.audio ", r.name);
        }
    }
    d
}

/// Force-key-unit events to every encoder, from a probe on the decoder's output.
fn install_keyframe_alignment(
    pipeline: &gst::Pipeline,
    input: VideoInput,
    renditions: &[Rendition],
    segment: Duration,
) {
    let Some(decoder_src) = pipeline
        .by_name("decoder")
        .and_then(|d| d.static_pad("src"))
    else {
        return;
    };
    let passthrough = renditions.iter().any(|r| r.passthrough);
    // Keyframe PTSs of the compressed input, seen before decoding.
    let keyframes: Arc<Mutex<std::collections::VecDeque<gst::ClockTime>>> = Default::default();
    if passthrough && input == VideoInput::H264 {
        // The tee after h264parse: compressed access units, keyframes not DELTA_UNIT.
        if let Some(tee_sink) = pipeline.by_name("vt").and_then(|t| t.static_pad("sink")) {
            let k = keyframes.clone();
            tee_sink.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(b) = info.buffer() {
                    if !b.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                        if let Some(pts) = b.pts() {
                            let mut k = k.lock().unwrap_or_else(|e| e.into_inner());
                            if k.len() < 64 {
                                k.push_back(pts);
                            }
                        }
                    }
                }
                gst::PadProbeReturn::Ok
            });
        }
    }
    let last_forced: Mutex<Option<gst::ClockTime>> = Mutex::new(None);
    let segment = gst::ClockTime::from_nseconds(segment.as_nanos() as u64);
    decoder_src.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(pts) = info.buffer().and_then(|b| b.pts()) else {
            return gst::PadProbeReturn::Ok;
        };
        let force = if passthrough {
            let mut k = keyframes.lock().unwrap_or_else(|e| e.into_inner());
            let mut hit = false;
            while k.front().is_some_and(|&kp| kp <= pts) {
                k.pop_front();
                hit = true;
            }
            hit
        } else {
            last_forced
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none_or(|l| pts >= l + segment)
        };
        if force {
            *last_forced.lock().unwrap_or_else(|e| e.into_inner()) = Some(pts);
            // "As soon as possible": the next frame each encoder takes, which is this one (the
            // event travels just ahead of it). A running time would be compared with
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
            pad.push_event(event);
        }
        gst::PadProbeReturn::Ok
    });
}
