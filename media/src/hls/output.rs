//! A `GOutputStream` that collects what hlssink2 writes to one file (a segment or a playlist)
//! and hands the whole object to the uploader when hlssink2 closes it: the bytes come from the
//! muxer, no file is watched.

use gio::glib;
use gio::subclass::prelude::*;

use std::sync::Arc;

use super::discontinuity::Marks;
use super::replay::Recording;
use super::store::{Kind, Uploads};

mod imp {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    pub struct UploadStream {
        pub target: Mutex<Option<(String, Kind, Uploads)>>,
        pub buf: Mutex<Vec<u8>>,
        /// A media playlist: reconnect marks to add before it is stored.
        pub marks: Mutex<Option<Arc<Marks>>>,
        /// A media playlist: the rendition's recording reads it. A segment: the recording
        /// decides whether it is kept for the replay.
        pub recording: Mutex<Option<Arc<Recording>>>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for UploadStream {
        const NAME: &'static str = "GlintUploadStream";
        type Type = super::UploadStream;
        type ParentType = gio::OutputStream;
    }

    impl ObjectImpl for UploadStream {}

    impl OutputStreamImpl for UploadStream {
        fn write(
            &self,
            buffer: &[u8],
            _cancellable: Option<&gio::Cancellable>,
        ) -> Result<usize, glib::Error> {
            self.buf
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buffer);
            Ok(buffer.len())
        }

        fn close(&self, _cancellable: Option<&gio::Cancellable>) -> Result<(), glib::Error> {
            let mut body = std::mem::take(&mut *self.buf.lock().unwrap_or_else(|e| e.into_inner()));
            if let Some(marks) = self.marks.lock().unwrap_or_else(|e| e.into_inner()).take() {
                body = marks.apply(&String::from_utf8_lossy(&body)).into_bytes();
            }
            let recording = self
                .recording
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some((path, kind, uploads)) =
                self.target.lock().unwrap_or_else(|e| e.into_inner()).take()
            {
                if let Some(r) = recording {
                    match kind {
                        Kind::Segment => {
                            let name = path.rsplit('/').next().unwrap_or(&path);
                            r.segment_written(name, body.len() as u64);
                        }
                        _ => r.observe(&String::from_utf8_lossy(&body)),
                    }
                }
                uploads.put(path, body.into(), kind);
            }
            Ok(())
        }
    }
}

glib::wrapper! {
    pub struct UploadStream(ObjectSubclass<imp::UploadStream>) @extends gio::OutputStream;
}

impl UploadStream {
    /// A stream whose bytes become the object `path` when it is closed.
    pub fn new(path: String, kind: Kind, uploads: Uploads) -> Self {
        let s: Self = glib::Object::new();
        *s.imp().target.lock().unwrap_or_else(|e| e.into_inner()) = Some((path, kind, uploads));
        s
    }

    /// A segment, kept for the replay or not by `recording`.
    pub fn segment(path: String, uploads: Uploads, recording: Arc<Recording>) -> Self {
        let s = Self::new(path, Kind::Segment, uploads);
        *s.imp().recording.lock().unwrap_or_else(|e| e.into_inner()) = Some(recording);
        s
    }

    /// A media playlist, stored with `marks` applied, and read by `recording`.
    pub fn playlist(
        path: String,
        uploads: Uploads,
        marks: Arc<Marks>,
        recording: Arc<Recording>,
    ) -> Self {
        let s = Self::new(path, Kind::Playlist, uploads);
        *s.imp().marks.lock().unwrap_or_else(|e| e.into_inner()) = Some(marks);
        *s.imp().recording.lock().unwrap_or_else(|e| e.into_inner()) = Some(recording);
        s
    }
}
