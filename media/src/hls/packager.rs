//! One live stream's packager: owns its renditions' [`Segmenter`]s and playlists, takes the
//! encoded frames the transcoder's appsinks hand over, and puts what comes out where it goes —
//! parts and playlists into the [`LiveHls`] registry (for glint's LL-HLS origin), segments,
//! initialization segments and standard playlists into the store (for CDNs), segments into the
//! replay's [`Recording`].
//!
//! It runs on a blocking thread of its own and takes [`Msg`]s from a bounded channel: a full
//! channel makes GStreamer's streaming threads wait (backpressure, nothing dropped), and the
//! channel closing (the pipeline gone) ends every playlist.

use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use super::fmp4::Codec;
use super::live::{LiveHls, LiveStream};
use super::playlist::Playlist;
use super::replay::Recording;
use super::segmenter::{AudioFrame, Segmenter, Step, Timing, VideoFrame};
use super::store::{Kind, Uploads};
use crate::metrics::Metrics;

/// Frames queued between GStreamer and the packager.
const QUEUE: usize = 1024;

/// What the transcoder's appsinks (and the tap) send.
#[derive(Debug)]
pub enum Msg {
    VideoCaps {
        rendition: usize,
        codec: Codec,
    },
    AudioCaps(Codec),
    Video {
        rendition: usize,
        frame: VideoFrame,
    },
    Audio(AudioFrame),
    /// The publisher reconnected.
    Discontinuity,
    /// A rendition's video ended.
    Eos {
        rendition: usize,
    },
}

/// What a rendition is: its folder name and frame rate.
pub struct RenditionSpec {
    pub name: String,
    pub fps: f64,
    pub recording: Arc<Recording>,
}

pub struct Settings {
    pub segment: Duration,
    pub window: u32,
    pub with_audio: bool,
    /// Replays on: segments leaving the live window stay in the store.
    pub keep_segments: bool,
    /// Wall clock (Unix ms) at the pipeline's running time zero.
    pub epoch_unix_ms: u64,
    pub metrics: Arc<Metrics>,
}

struct Rendition {
    name: String,
    segmenter: Segmenter,
    playlist: watch::Sender<Playlist>,
    recording: Arc<Recording>,
    ended: bool,
}

/// Start the packager of `stream`; `prefix` is `seg-<epoch>-`. Returns the sender its
/// producers use and the thread's handle (it ends when every sender is gone).
pub fn spawn(
    stream: &str,
    prefix: &str,
    renditions: Vec<RenditionSpec>,
    master: Bytes,
    settings: Settings,
    uploads: Uploads,
    live: LiveHls,
) -> (SyncSender<Msg>, tokio::task::JoinHandle<()>) {
    let target = settings.segment.as_secs().max(1) as u32;
    let mut rends = Vec::new();
    let mut channels = Vec::new();
    for r in renditions {
        let timing = Timing {
            segment_ns: settings.segment.as_nanos() as u64,
            fps: r.fps,
            epoch_unix_ms: settings.epoch_unix_ms,
        };
        let playlist = Playlist::new(
            prefix.to_owned(),
            target,
            timing.part_target(),
            settings.window as usize,
        );
        let (tx, _) = watch::channel(playlist);
        channels.push((r.name.clone(), tx.clone()));
        rends.push(Rendition {
            name: r.name,
            segmenter: Segmenter::new(timing, settings.with_audio),
            playlist: tx,
            recording: r.recording,
            ended: false,
        });
    }
    let entry = Arc::new(LiveStream {
        prefix: prefix.to_owned(),
        renditions: channels,
        master: Mutex::new(None),
    });
    live.add(stream, entry.clone());
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
    let mut p = Packager {
        stream: stream.to_owned(),
        renditions: rends,
        master: Some(master),
        master_stored: false,
        keep_segments: settings.keep_segments,
        metrics: settings.metrics,
        uploads,
        entry: entry.clone(),
    };
    let handle = tokio::task::spawn_blocking(move || {
        p.run(rx);
        live.remove(&p.stream, &entry);
    });
    (tx, handle)
}

struct Packager {
    stream: String,
    renditions: Vec<Rendition>,
    master: Option<Bytes>,
    master_stored: bool,
    keep_segments: bool,
    metrics: Arc<Metrics>,
    uploads: Uploads,
    entry: Arc<LiveStream>,
}

impl Packager {
    fn run(&mut self, rx: Receiver<Msg>) {
        while let Ok(msg) = rx.recv() {
            match msg {
                Msg::VideoCaps { rendition, codec } => {
                    if let Some(r) = self.renditions.get_mut(rendition) {
                        r.segmenter.set_video(codec);
                    }
                }
                Msg::AudioCaps(codec) => {
                    for r in &mut self.renditions {
                        r.segmenter.set_audio(codec.clone());
                    }
                }
                Msg::Audio(frame) => {
                    for r in &mut self.renditions {
                        r.segmenter.push_audio(frame.clone());
                    }
                }
                Msg::Discontinuity => {
                    for r in &mut self.renditions {
                        r.segmenter.discontinuity();
                    }
                }
                Msg::Video { rendition, frame } => {
                    let Some(r) = self.renditions.get_mut(rendition) else {
                        continue;
                    };
                    if r.ended {
                        continue;
                    }
                    let Rendition {
                        segmenter,
                        playlist,
                        ..
                    } = r;
                    let mut step = Step::default();
                    playlist.send_if_modified(|pl| {
                        step = segmenter.push_video(frame, pl);
                        step.changed
                    });
                    self.apply(rendition, step);
                }
                Msg::Eos { rendition } => self.finish(rendition),
            }
        }
        for i in 0..self.renditions.len() {
            self.finish(i);
        }
    }

    fn finish(&mut self, rendition: usize) {
        let Some(r) = self.renditions.get_mut(rendition).filter(|r| !r.ended) else {
            return;
        };
        r.ended = true;
        let Rendition {
            segmenter,
            playlist,
            ..
        } = r;
        let mut step = Step::default();
        playlist.send_modify(|pl| step = segmenter.finish(pl));
        self.apply(rendition, step);
    }

    /// Store what a step made.
    fn apply(&mut self, rendition: usize, step: Step) {
        Metrics::add(&self.metrics.hls_parts, u64::from(step.parts));
        let r = &self.renditions[rendition];
        let dir = format!("{}/{}", self.stream, r.name);
        if let Some((name, bytes)) = step.init {
            self.uploads
                .put(format!("{dir}/{name}"), bytes, Kind::Segment);
        }
        if let Some(c) = step.closed {
            r.recording.segment_written(&c.name, c.bytes.len() as u64);
            self.uploads
                .put(format!("{dir}/{}", c.name), c.bytes, Kind::Segment);
            r.recording
                .listed(&c.name, c.duration, c.discontinuity, &c.init);
            for g in c.gone {
                if !self.keep_segments || !r.recording.is_kept(&g) {
                    self.uploads.delete(format!("{dir}/{g}"));
                }
            }
        }
        if let Some(text) = step.playlist {
            self.uploads
                .put(format!("{dir}/index.m3u8"), text.into(), Kind::Playlist);
        }
        if step.changed {
            self.master_ready();
        }
    }

    /// The master playlist: served from memory once every rendition has a part, stored once
    /// every rendition's first segment is (a player given it earlier would find the media
    /// playlists it names missing).
    fn master_ready(&mut self) {
        let Some(master) = &self.master else {
            return;
        };
        let all =
            |f: fn(&Playlist) -> bool| self.renditions.iter().all(|r| f(&r.playlist.borrow()));
        {
            let mut m = self.entry.master.lock().unwrap_or_else(|e| e.into_inner());
            if m.is_none() && all(Playlist::has_media) {
                *m = Some(master.clone());
            }
        }
        if !self.master_stored && all(Playlist::has_segment) {
            self.master_stored = true;
            self.uploads.put(
                format!("{}/master.m3u8", self.stream),
                master.clone(),
                Kind::Playlist,
            );
            self.master = None;
        }
    }
}
