//! What every GStreamer pipeline of the media core shares: initialising GStreamer once, and
//! making elements with errors that name the missing plugin and keep GStreamer's own error.

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use thiserror::Error;

/// A GStreamer set-up step that failed, with GStreamer's error as its source.
#[derive(Debug, Clone, Error)]
pub enum PipelineError {
    #[error("GStreamer init: {0}")]
    Init(#[source] glib::Error),
    /// An element could not be made: usually its plugin is not installed.
    #[error("element {factory}: {source}")]
    Element {
        factory: String,
        #[source]
        source: glib::BoolError,
    },
    /// Elements could not be added to the pipeline or linked (their pads do not fit).
    #[error("pipeline: {0}")]
    Assemble(#[source] glib::BoolError),
    #[error("pipeline start: {0}")]
    Start(#[source] gst::StateChangeError),
}

/// The RTMP transcoders (`ingest/rtmp/audio.rs`, `reencode.rs`) still report text.
impl From<PipelineError> for String {
    fn from(e: PipelineError) -> Self {
        e.to_string()
    }
}

/// Initialise GStreamer (once per process; later calls return the first result).
pub(crate) fn init() -> Result<(), PipelineError> {
    static INIT: std::sync::OnceLock<Result<(), glib::Error>> = std::sync::OnceLock::new();
    INIT.get_or_init(gst::init)
        .clone()
        .map_err(PipelineError::Init)
}

/// `elements` linked one after the other in a new pipeline, playing.
pub(crate) fn linear(elements: &[&gst::Element]) -> Result<gst::Pipeline, PipelineError> {
    let pipeline = gst::Pipeline::new();
    pipeline
        .add_many(elements)
        .map_err(PipelineError::Assemble)?;
    gst::Element::link_many(elements).map_err(PipelineError::Assemble)?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(PipelineError::Start)?;
    Ok(pipeline)
}

/// An element by factory name; the error names it (its plugin may not be installed).
pub(crate) fn make(name: &str) -> Result<gst::Element, PipelineError> {
    gst::ElementFactory::make(name)
        .build()
        .map_err(|source| PipelineError::Element {
            factory: name.to_owned(),
            source,
        })
}
