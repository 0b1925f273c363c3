//! What every GStreamer pipeline of the media core shares: initialising GStreamer once, and
//! making elements with errors that name the missing plugin.

use gstreamer as gst;
use gstreamer::prelude::*;

/// Initialise GStreamer (once per process; later calls return the first result).
pub(crate) fn init() -> Result<(), String> {
    static INIT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    INIT.get_or_init(|| gst::init().map_err(|e| e.to_string()))
        .clone()
}

/// `elements` linked one after the other in a new pipeline, playing.
pub(crate) fn linear(elements: &[&gst::Element]) -> Result<gst::Pipeline, String> {
    let pipeline = gst::Pipeline::new();
    pipeline.add_many(elements).map_err(|e| e.to_string())?;
    gst::Element::link_many(elements).map_err(|e| e.to_string())?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| format!("start: {e}"))?;
    Ok(pipeline)
}

/// An element by factory name; the error names it (its plugin may not be installed).
pub(crate) fn make(name: &str) -> Result<gst::Element, String> {
    gst::ElementFactory::make(name)
        .build()
        .map_err(|e| format!("{name}: {e}"))
}
