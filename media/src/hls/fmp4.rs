//! Fragmented MP4 (ISO/IEC 14496-12 "ISO BMFF", as CMAF and HLS use it): the init segment
//! (`ftyp` + `moov`) of a set of H.264 / AAC tracks, and the `moof` + `mdat` chunks that follow
//! it. One chunk is an LL-HLS part; the parts of a segment concatenated are the segment.
//!
//! Pure byte writing: no I/O, no clock, no parsing beyond the profile bytes `codec_string`
//! needs. Box layouts are quoted from ISO/IEC 14496-12 (§ numbers of the 2015 edition),
//! 14496-14 (`esds`) and 14496-15 (`avcC`).

use bytes::Bytes;

/// `mvhd` timescale: the movie header's own clock; nothing is measured in it (durations are 0).
const MOVIE_TIMESCALE_HZ: u32 = 1000;
/// `tkhd`/`mvhd` unity transformation matrix (§8.2.2.3).
const UNITY_MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];
/// ISO 639-2 "und" packed as three 5-bit letters (`mdhd`, §8.4.2.3).
const LANGUAGE_UND: u16 =
    (((b'u' - 0x60) as u16) << 10) | (((b'n' - 0x60) as u16) << 5) | (b'd' - 0x60) as u16;
/// 72 dpi in 16.16 (`VisualSampleEntry`, §12.1.3).
const DPI_72: u32 = 0x0048_0000;

/// `tkhd` flags: track_enabled | track_in_movie (§8.3.2.3).
const TKHD_ENABLED_IN_MOVIE: u32 = 0x00_0003;
/// `tfhd` flags: default-base-is-moof, so data offsets count from this chunk's `moof` (§8.8.7.1).
const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
/// `trun` flags (§8.8.8.1).
const TRUN_DATA_OFFSET: u32 = 0x00_0001;
const TRUN_SAMPLE_DURATION: u32 = 0x00_0100;
const TRUN_SAMPLE_SIZE: u32 = 0x00_0200;
const TRUN_SAMPLE_FLAGS: u32 = 0x00_0400;
const TRUN_SAMPLE_CTS_OFFSET: u32 = 0x00_0800;
/// Sample flags (§8.8.3.1): a sync sample depends on no other (sample_depends_on = 2).
const SAMPLE_FLAGS_SYNC: u32 = 2 << 24;
/// A non-sync sample depends on others (sample_depends_on = 1, sample_is_non_sync_sample = 1).
const SAMPLE_FLAGS_NON_SYNC: u32 = (1 << 24) | (1 << 16);

/// MPEG-4 descriptor tags (ISO/IEC 14496-1 §7.2.2.1) and the values `esds` carries.
const TAG_ES_DESCRIPTOR: u8 = 0x03;
const TAG_DECODER_CONFIG: u8 = 0x04;
const TAG_DEC_SPECIFIC_INFO: u8 = 0x05;
const TAG_SL_CONFIG: u8 = 0x06;
/// objectTypeIndication "Audio ISO/IEC 14496-3" (AAC of any object type).
const OBJECT_TYPE_AAC: u8 = 0x40;
/// streamType AudioStream (5) << 2, upStream 0, reserved 1.
const STREAM_TYPE_AUDIO: u8 = (5 << 2) | 1;
/// SLConfigDescriptor predefined = 2: "reserved for use in MP4 files" (14496-14 §3.1.2).
const SL_PREDEFINED_MP4: u8 = 2;

/// A track's codec and the configuration a decoder needs before its first sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Codec {
    /// `avcc`: the AVCDecoderConfigurationRecord (GStreamer's `codec_data` of
    /// video/x-h264,stream-format=avc), copied into `avcC` as is.
    H264 {
        avcc: Bytes,
        width: u32,
        height: u32,
    },
    /// `asc`: the AudioSpecificConfig (codec_data of audio/mpeg,mpegversion=4,stream-format=raw).
    Aac {
        asc: Bytes,
        sample_rate: u32,
        channels: u16,
    },
}

/// One track of the init segment. `id` is what [`Run::track_id`] names; `timescale` is the
/// clock (Hz) of its sample durations, decode times and composition offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    pub id: u32,
    pub timescale: u32,
    pub codec: Codec,
}

/// One access unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Video: AVCC length-prefixed NAL units (4-byte lengths, as h264parse
    /// stream-format=avc,alignment=au gives); audio: one raw AAC frame.
    pub data: Bytes,
    /// In the track's timescale.
    pub duration: u32,
    /// Presentation minus decode time, in the track's timescale (B-frames; 0 otherwise).
    pub cts_offset: i32,
    /// A sync sample (IDR). Audio samples are all sync: set it for every AAC frame.
    pub keyframe: bool,
}

/// A track's consecutive samples in one chunk.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    pub track_id: u32,
    /// Decode time of the first sample (`tfdt`), in the track's timescale.
    pub base_decode_time: u64,
    pub samples: &'a [Sample],
}

/// `ftyp` + `moov` of `tracks`: sample entries (`avc1`/`mp4a`) with their decoder
/// configuration, empty sample tables (every sample is in a fragment) and a `trex` per track.
///
/// Brands: major `iso6` (the edition with `tfdt` v1 and signed `trun` offsets), compatible
/// `iso6`, `isom`, `mp41`, `avc1` if there is video, and `cmfc` only for a single-track init
/// segment (a CMAF track file holds one track; a muxed audio+video file claiming CMAF would be
/// a lie that a strict player may act on).
pub fn init_segment(tracks: &[Track]) -> Bytes {
    let mut w = Writer::with_capacity(1024);
    w.plain(b"ftyp", |w| {
        w.bytes(b"iso6");
        w.u32(0); // minor_version
        w.bytes(b"iso6");
        w.bytes(b"isom");
        w.bytes(b"mp41");
        if tracks.iter().any(|t| matches!(t.codec, Codec::H264 { .. })) {
            w.bytes(b"avc1");
        }
        if tracks.len() == 1 {
            w.bytes(b"cmfc");
        }
    });
    w.plain(b"moov", |w| {
        let next_track_id = tracks
            .iter()
            .map(|t| t.id)
            .max()
            .unwrap_or(0)
            .saturating_add(1);
        mvhd(w, next_track_id);
        for track in tracks {
            trak(w, track);
        }
        w.plain(b"mvex", |w| {
            for track in tracks {
                // §8.8.3: defaults unused, every trun carries duration, size and flags.
                w.full(b"trex", 0, 0, |w| {
                    w.u32(track.id);
                    w.u32(1); // default_sample_description_index
                    w.u32(0); // default_sample_duration
                    w.u32(0); // default_sample_size
                    w.u32(0); // default_sample_flags
                });
            }
        });
    });
    w.finish()
}

/// One CMAF chunk: `moof` (`mfhd` with `sequence`, a `traf` per non-empty run) and one `mdat`
/// with every run's samples in order. `sequence` must increase from chunk to chunk of a track
/// (§8.8.5); `base_decode_time` of a run is the previous run's plus its durations.
///
/// # Panics
/// If one sample is 4 GiB or more (`trun` sizes are 32-bit).
pub fn fragment(sequence: u32, runs: &[Run<'_>]) -> Bytes {
    let all = runs;
    let runs = || all.iter().filter(|r| !r.samples.is_empty());
    let payload: u64 = runs()
        .flat_map(|r| r.samples)
        .map(|s| s.data.len() as u64)
        .sum();
    let samples = runs().map(|r| r.samples.len()).sum::<usize>();
    // An mdat over 4 GiB takes a 64-bit largesize (§4.2).
    let mdat_header: u64 = if payload + 8 > u64::from(u32::MAX) {
        16
    } else {
        8
    };
    let moof_estimate = 64 + runs().count() * 64 + samples * 16;
    let mut w = Writer::with_capacity(moof_estimate + payload as usize + mdat_header as usize);
    // Where each trun's data_offset goes, and its run's first byte within the mdat payload:
    // known only once the moof is closed.
    let mut data_offsets: Vec<(usize, u64)> = Vec::with_capacity(all.len());
    w.plain(b"moof", |w| {
        w.full(b"mfhd", 0, 0, |w| w.u32(sequence));
        let mut within_mdat = 0u64;
        for run in runs() {
            w.plain(b"traf", |w| {
                w.full(b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF, |w| {
                    w.u32(run.track_id)
                });
                w.full(b"tfdt", 1, 0, |w| w.u64(run.base_decode_time));
                let with_cts = run.samples.iter().any(|s| s.cts_offset != 0);
                let flags = TRUN_DATA_OFFSET
                    | TRUN_SAMPLE_DURATION
                    | TRUN_SAMPLE_SIZE
                    | TRUN_SAMPLE_FLAGS
                    | if with_cts { TRUN_SAMPLE_CTS_OFFSET } else { 0 };
                // Version 1: composition offsets are signed (§8.8.8.2).
                w.full(b"trun", 1, flags, |w| {
                    w.u32(run.samples.len() as u32);
                    data_offsets.push((w.len(), within_mdat));
                    w.u32(0); // data_offset, patched below
                    for s in run.samples {
                        let size = u32::try_from(s.data.len()).expect("sample under 4 GiB");
                        w.u32(s.duration);
                        w.u32(size);
                        w.u32(if s.keyframe {
                            SAMPLE_FLAGS_SYNC
                        } else {
                            SAMPLE_FLAGS_NON_SYNC
                        });
                        if with_cts {
                            w.i32(s.cts_offset);
                        }
                        within_mdat += u64::from(size);
                    }
                });
            });
        }
    });
    let moof_len = w.len() as u64;
    for (at, within) in data_offsets {
        // Signed 32-bit from the moof's first byte: a chunk past 2 GiB cannot be addressed.
        let offset = i32::try_from(moof_len + mdat_header + within).expect("chunk under 2 GiB");
        w.patch_u32(at, offset as u32);
    }
    if mdat_header == 16 {
        w.u32(1);
        w.bytes(b"mdat");
        w.u64(16 + payload);
    } else {
        w.u32((8 + payload) as u32);
        w.bytes(b"mdat");
    }
    for s in runs().flat_map(|r| r.samples) {
        w.bytes(&s.data);
    }
    w.finish()
}

/// The HLS `CODECS` attribute value of a track (RFC 6381): `avc1.PPCCLL` from the avcC's
/// profile, compatibility and level bytes; `mp4a.40.<aot>` from the ASC's audio object type.
/// A configuration too short to read gives `avc1.42e01e` (baseline 3.0) / `mp4a.40.2`
/// (AAC-LC), the commonest values, rather than a string no player parses.
pub fn codec_string(codec: &Codec) -> String {
    match codec {
        Codec::H264 { avcc, .. } => match avcc.get(1..4) {
            Some(pcl) => format!("avc1.{:02x}{:02x}{:02x}", pcl[0], pcl[1], pcl[2]),
            None => "avc1.42e01e".to_owned(),
        },
        Codec::Aac { asc, .. } => {
            // ISO/IEC 14496-3 §1.6.2.1: 5 bits, 31 escapes to 32 + the next 6 bits.
            let aot = match (asc.first(), asc.get(1)) {
                (Some(&b0), _) if b0 >> 3 != 31 => u32::from(b0 >> 3),
                (Some(&b0), Some(&b1)) => 32 + ((u32::from(b0 & 0x07) << 3) | u32::from(b1 >> 5)),
                _ => 2,
            };
            format!("mp4a.40.{aot}")
        }
    }
}

/// `mvhd` (§8.2.2): no duration (fragmented), unity rate/volume/matrix.
fn mvhd(w: &mut Writer, next_track_id: u32) {
    w.full(b"mvhd", 0, 0, |w| {
        w.u32(0); // creation_time
        w.u32(0); // modification_time
        w.u32(MOVIE_TIMESCALE_HZ);
        w.u32(0); // duration
        w.u32(0x0001_0000); // rate 1.0
        w.u16(0x0100); // volume 1.0
        w.zeros(2 + 8); // reserved
        for m in UNITY_MATRIX {
            w.u32(m);
        }
        w.zeros(6 * 4); // pre_defined
        w.u32(next_track_id);
    });
}

fn trak(w: &mut Writer, track: &Track) {
    let (is_video, width, height) = match track.codec {
        Codec::H264 { width, height, .. } => (true, width, height),
        Codec::Aac { .. } => (false, 0, 0),
    };
    w.plain(b"trak", |w| {
        // §8.3.2
        w.full(b"tkhd", 0, TKHD_ENABLED_IN_MOVIE, |w| {
            w.u32(0); // creation_time
            w.u32(0); // modification_time
            w.u32(track.id);
            w.u32(0); // reserved
            w.u32(0); // duration
            w.zeros(8); // reserved
            w.u16(0); // layer
            w.u16(0); // alternate_group
            w.u16(if is_video { 0 } else { 0x0100 }); // volume
            w.u16(0); // reserved
            for m in UNITY_MATRIX {
                w.u32(m);
            }
            w.u32(fixed_16_16(width));
            w.u32(fixed_16_16(height));
        });
        w.plain(b"mdia", |w| {
            // §8.4.2
            w.full(b"mdhd", 0, 0, |w| {
                w.u32(0); // creation_time
                w.u32(0); // modification_time
                w.u32(track.timescale);
                w.u32(0); // duration
                w.u16(LANGUAGE_UND);
                w.u16(0); // pre_defined
            });
            // §8.4.3
            w.full(b"hdlr", 0, 0, |w| {
                w.u32(0); // pre_defined
                w.bytes(if is_video { b"vide" } else { b"soun" });
                w.zeros(3 * 4); // reserved
                w.bytes(if is_video {
                    b"VideoHandler\0"
                } else {
                    b"SoundHandler\0"
                });
            });
            w.plain(b"minf", |w| {
                if is_video {
                    // §12.1.2: flags 1 is required.
                    w.full(b"vmhd", 0, 1, |w| w.zeros(2 + 3 * 2));
                } else {
                    w.full(b"smhd", 0, 0, |w| w.zeros(2 + 2));
                }
                // §8.7.1: one data reference, "self-contained" (flag 1, no URL).
                w.plain(b"dinf", |w| {
                    w.full(b"dref", 0, 0, |w| {
                        w.u32(1);
                        w.full(b"url ", 0, 1, |_| {});
                    });
                });
                stbl(w, &track.codec);
            });
        });
    });
}

/// `stbl` with the one sample entry and the empty tables §8.5.1 still requires.
fn stbl(w: &mut Writer, codec: &Codec) {
    w.plain(b"stbl", |w| {
        w.full(b"stsd", 0, 0, |w| {
            w.u32(1); // entry_count
            match codec {
                Codec::H264 {
                    avcc,
                    width,
                    height,
                } => avc1(w, avcc, *width, *height),
                Codec::Aac {
                    asc,
                    sample_rate,
                    channels,
                } => mp4a(w, asc, *sample_rate, *channels),
            }
        });
        w.full(b"stts", 0, 0, |w| w.u32(0));
        w.full(b"stsc", 0, 0, |w| w.u32(0));
        w.full(b"stsz", 0, 0, |w| {
            w.u32(0); // sample_size
            w.u32(0); // sample_count
        });
        w.full(b"stco", 0, 0, |w| w.u32(0));
    });
}

/// `avc1` VisualSampleEntry (§12.1.3) + `avcC` (14496-15 §5.3.3). `avc1` (not `avc3`): the
/// parameter sets are in `avcC`; in-band repeats in samples are still allowed.
fn avc1(w: &mut Writer, avcc: &[u8], width: u32, height: u32) {
    w.plain(b"avc1", |w| {
        w.zeros(6); // reserved
        w.u16(1); // data_reference_index
        w.u16(0); // pre_defined
        w.u16(0); // reserved
        w.zeros(3 * 4); // pre_defined
        w.u16(u16::try_from(width).unwrap_or(u16::MAX));
        w.u16(u16::try_from(height).unwrap_or(u16::MAX));
        w.u32(DPI_72); // horizresolution
        w.u32(DPI_72); // vertresolution
        w.u32(0); // reserved
        w.u16(1); // frame_count
        w.zeros(32); // compressorname: empty Pascal string
        w.u16(0x0018); // depth: colour, no alpha
        w.u16(0xffff); // pre_defined = -1
        w.plain(b"avcC", |w| w.bytes(avcc));
    });
}

/// `mp4a` AudioSampleEntry (§12.2.3) + `esds` (14496-14 §5.6): ES_Descriptor >
/// DecoderConfigDescriptor > DecSpecificInfo (the ASC), and SLConfigDescriptor.
fn mp4a(w: &mut Writer, asc: &[u8], sample_rate: u32, channels: u16) {
    w.plain(b"mp4a", |w| {
        w.zeros(6); // reserved
        w.u16(1); // data_reference_index
        w.zeros(2 * 4); // reserved
        w.u16(channels);
        w.u16(16); // samplesize
        w.u16(0); // pre_defined
        w.u16(0); // reserved
                  // 16.16; rates above 65535 Hz do not fit (the ASC carries the real rate).
        w.u32(fixed_16_16(sample_rate));
        w.full(b"esds", 0, 0, |w| {
            let dsi_len = asc.len();
            let dcd_len = 13 + descriptor_header_len(dsi_len) + dsi_len;
            let sl_len = 1;
            let es_len = 3 + descriptor_header_len(dcd_len) + dcd_len + 2 + sl_len;
            w.descriptor_header(TAG_ES_DESCRIPTOR, es_len);
            w.u16(0); // ES_ID: 0 in MP4 files (14496-14 §3.1.2)
            w.u8(0); // no stream dependence, URL or OCR stream; priority 0
            w.descriptor_header(TAG_DECODER_CONFIG, dcd_len);
            w.u8(OBJECT_TYPE_AAC);
            w.u8(STREAM_TYPE_AUDIO);
            w.zeros(3); // bufferSizeDB: unknown
            w.u32(0); // maxBitrate: unknown
            w.u32(0); // avgBitrate: unknown (variable)
            w.descriptor_header(TAG_DEC_SPECIFIC_INFO, dsi_len);
            w.bytes(asc);
            w.descriptor_header(TAG_SL_CONFIG, sl_len);
            w.u8(SL_PREDEFINED_MP4);
        });
    });
}

/// `v` in 16.16 fixed point, saturating (a side over 65535 px does not occur).
fn fixed_16_16(v: u32) -> u32 {
    v.min(0xffff) << 16
}

/// Bytes of a descriptor's tag and expandable size (14496-1 §8.3.3: 7 bits per byte).
fn descriptor_header_len(len: usize) -> usize {
    1 + match len {
        0..=0x7f => 1,
        0x80..=0x3fff => 2,
        0x4000..=0x1f_ffff => 3,
        _ => 4,
    }
}

/// A growing buffer of big-endian fields and boxes whose sizes are patched when they close.
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
        }
    }

    fn finish(self) -> Bytes {
        Bytes::from(self.buf)
    }

    fn len(&self) -> usize {
        self.buf.len()
    }

    /// A box (§4.2): size placeholder, type, `body`, then the size patched in.
    fn plain(&mut self, kind: &[u8; 4], body: impl FnOnce(&mut Self)) {
        let start = self.buf.len();
        self.u32(0);
        self.bytes(kind);
        body(self);
        let size = u32::try_from(self.buf.len() - start).expect("box under 4 GiB");
        self.patch_u32(start, size);
    }

    /// A FullBox (§4.2): a box whose body starts with version (8 bits) and flags (24 bits).
    fn full(&mut self, kind: &[u8; 4], version: u8, flags: u32, body: impl FnOnce(&mut Self)) {
        self.plain(kind, |w| {
            w.u32((u32::from(version) << 24) | (flags & 0x00ff_ffff));
            body(w);
        });
    }

    fn descriptor_header(&mut self, tag: u8, len: usize) {
        self.u8(tag);
        let extra = descriptor_header_len(len) - 2;
        for i in (1..=extra).rev() {
            self.u8(0x80 | ((len >> (7 * i)) & 0x7f) as u8);
        }
        self.u8((len & 0x7f) as u8);
    }

    fn patch_u32(&mut self, at: usize, v: u32) {
        self.buf[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }

    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    fn zeros(&mut self, n: usize) {
        self.buf.resize(self.buf.len() + n, 0);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, OnceLock};

    use gstreamer as gst;
    use gstreamer::prelude::*;
    use gstreamer_app as gst_app;

    use super::*;

    const FFMPEG: &str = "/usr/bin/ffmpeg";
    const FFPROBE: &str = "/usr/bin/ffprobe";
    const VIDEO_TIMESCALE_HZ: u32 = 90_000;
    const AUDIO_RATE_HZ: u32 = 48_000;
    /// 30 fps in the video timescale.
    const FRAME_TICKS: u32 = 3000;
    /// Samples per AAC-LC frame.
    const AAC_FRAME_SAMPLES: u32 = 1024;
    /// Chunks (LL-HLS parts) of 1/3 s: 10 video frames each.
    const PARTS_PER_SECOND: u64 = 3;
    const VIDEO_FRAMES: usize = 60;
    const VIDEO_KEYFRAMES: usize = 2;

    #[test]
    fn codec_strings_come_from_the_configuration() {
        let h264 = |avcc: &'static [u8]| Codec::H264 {
            avcc: Bytes::from_static(avcc),
            width: 0,
            height: 0,
        };
        let aac = |asc: &'static [u8]| Codec::Aac {
            asc: Bytes::from_static(asc),
            sample_rate: 0,
            channels: 0,
        };
        assert_eq!(
            codec_string(&h264(&[1, 0x42, 0xc0, 0x1f, 0xff])),
            "avc1.42c01f"
        );
        assert_eq!(
            codec_string(&h264(&[1, 0x64, 0x00, 0x28, 0xff])),
            "avc1.640028"
        );
        assert_eq!(
            codec_string(&aac(&[0x11, 0x90])),
            "mp4a.40.2",
            "LC 48 kHz stereo"
        );
        assert_eq!(
            codec_string(&aac(&[0x2b, 0x92, 0x08, 0x00])),
            "mp4a.40.5",
            "HE-AAC"
        );
        // Object type 42 (USAC) escapes: 31, then 42 - 32 = 10 in six bits.
        assert_eq!(codec_string(&aac(&[0xf9, 0x40])), "mp4a.40.42");
        assert_eq!(
            codec_string(&h264(&[1])),
            "avc1.42e01e",
            "unreadable: a default"
        );
        assert_eq!(
            codec_string(&aac(&[])),
            "mp4a.40.2",
            "unreadable: a default"
        );
    }

    #[test]
    fn descriptor_sizes_expand_past_127() {
        let mut w = Writer::with_capacity(8);
        w.descriptor_header(TAG_DEC_SPECIFIC_INFO, 5);
        w.descriptor_header(TAG_DEC_SPECIFIC_INFO, 200);
        w.descriptor_header(TAG_DEC_SPECIFIC_INFO, 0x4000);
        assert_eq!(w.buf, [5, 5, 5, 0x81, 0x48, 5, 0x81, 0x80, 0x00]);
        assert_eq!(descriptor_header_len(200), 3);
    }

    #[test]
    fn data_offsets_point_at_each_runs_first_byte() {
        let sample = |data: &'static [u8], keyframe| Sample {
            data: Bytes::from_static(data),
            duration: 10,
            cts_offset: 0,
            keyframe,
        };
        let video = [sample(b"key", true), sample(b"delta", false)];
        let audio = [sample(b"aac1", true), sample(b"aac2", true)];
        let chunk = fragment(
            7,
            &[
                Run {
                    track_id: 1,
                    base_decode_time: 90_000,
                    samples: &video,
                },
                Run {
                    track_id: 3,
                    base_decode_time: 0,
                    samples: &[],
                },
                Run {
                    track_id: 2,
                    base_decode_time: 48_000,
                    samples: &audio,
                },
            ],
        );
        let top = boxes(&chunk);
        assert_eq!(kinds(&top), ["moof", "mdat"]);
        assert_eq!(top[1].1, b"keydeltaaac1aac2");
        let moof = boxes(top[0].1);
        assert_eq!(
            kinds(&moof),
            ["mfhd", "traf", "traf"],
            "the empty run has no traf"
        );
        assert_eq!(moof[0].1, [0, 0, 0, 0, 0, 0, 0, 7]);
        for (traf, track_id, decode_time, first) in [
            (moof[1].1, 1u32, 90_000u64, &b"key"[..]),
            (moof[2].1, 2, 48_000, b"aac1"),
        ] {
            let traf = boxes(traf);
            assert_eq!(kinds(&traf), ["tfhd", "tfdt", "trun"]);
            assert_eq!(be32(traf[0].1, 0), TFHD_DEFAULT_BASE_IS_MOOF);
            assert_eq!(be32(traf[0].1, 4), track_id);
            assert_eq!(traf[1].1[0], 1, "tfdt version 1");
            assert_eq!(
                u64::from_be_bytes(traf[1].1[4..12].try_into().unwrap()),
                decode_time
            );
            let trun = traf[2].1;
            assert_eq!(trun[0], 1, "trun version 1");
            assert_eq!(
                be32(trun, 0) & 0xff_ffff,
                0x701,
                "no cts offsets when all are 0"
            );
            assert_eq!(be32(trun, 4), 2, "sample_count");
            let offset = be32(trun, 8) as usize;
            assert_eq!(&chunk[offset..offset + first.len()], first);
        }
    }

    #[test]
    fn signed_composition_offsets_when_there_are_b_frames() {
        let samples = [
            Sample {
                data: Bytes::from_static(b"I"),
                duration: 3000,
                cts_offset: 3000,
                keyframe: true,
            },
            Sample {
                data: Bytes::from_static(b"B"),
                duration: 3000,
                cts_offset: -3000,
                keyframe: false,
            },
        ];
        let chunk = fragment(
            1,
            &[Run {
                track_id: 1,
                base_decode_time: 0,
                samples: &samples,
            }],
        );
        let moof = boxes(boxes(&chunk)[0].1);
        let traf = boxes(moof[1].1);
        let trun = traf[2].1;
        assert_eq!(be32(trun, 0) & 0xff_ffff, 0xf01);
        // Per sample: duration, size, flags, cts offset, after count and data offset.
        assert_eq!(be32(trun, 12 + 8), 0x0200_0000, "depends on no other");
        assert_eq!(be32(trun, 12 + 12) as i32, 3000);
        assert_eq!(be32(trun, 12 + 16 + 8), 0x0101_0000, "depends, non-sync");
        assert_eq!(be32(trun, 12 + 16 + 12) as i32, -3000);
    }

    #[test]
    fn init_segment_layout() {
        let Some(clip) = clip() else { return };
        let init = init_segment(&[clip.video.clone(), clip.audio.clone()]);
        let top = boxes(&init);
        assert_eq!(kinds(&top), ["ftyp", "moov"]);
        assert_eq!(top[0].1, b"iso6\0\0\0\0iso6isommp41avc1", "muxed: no cmfc");
        let moov = boxes(top[1].1);
        assert_eq!(kinds(&moov), ["mvhd", "trak", "trak", "mvex"]);
        assert_eq!(be32(moov[0].1, 96), 3, "next_track_ID");
        let mvex = boxes(moov[3].1);
        assert_eq!(kinds(&mvex), ["trex", "trex"]);
        let audio_only = init_segment(std::slice::from_ref(&clip.audio));
        assert_eq!(boxes(&audio_only)[0].1, b"iso6\0\0\0\0iso6isommp41cmfc");
    }

    #[test]
    fn ffmpeg_reads_muxed_audio_and_video() {
        let Some(clip) = clip() else { return };
        let dir = TempDir::new("muxed");
        let path = dir.path().join("muxed.mp4");
        std::fs::write(
            &path,
            mux(&[
                (&clip.video, &clip.video_samples),
                (&clip.audio, &clip.audio_samples),
            ]),
        )
        .unwrap();
        let probe = ffprobe(&path);
        assert_eq!(probe["streams.stream.0.codec_name"], "h264", "{probe:?}");
        assert_eq!(probe["streams.stream.0.width"], "320");
        assert_eq!(probe["streams.stream.0.height"], "240");
        assert_eq!(
            probe["streams.stream.0.nb_read_frames"],
            VIDEO_FRAMES.to_string()
        );
        assert_eq!(probe["streams.stream.1.codec_name"], "aac");
        assert_eq!(
            probe["streams.stream.1.sample_rate"],
            AUDIO_RATE_HZ.to_string()
        );
        assert_eq!(probe["streams.stream.1.channels"], "1");
        assert_eq!(
            probe["streams.stream.1.nb_read_frames"],
            clip.audio_samples.len().to_string()
        );
        assert_eq!(probe["format.nb_streams"], "2");
        assert_duration_about_2s(&probe);
        assert_packets(&path, "v", FRAME_TICKS, VIDEO_FRAMES);
        assert_packets(&path, "a", AAC_FRAME_SAMPLES, clip.audio_samples.len());
        assert_decodes_cleanly(&path);
        assert_eq!(
            codec_string(&clip.video.codec),
            "avc1.64000d",
            "x264 High 1.3"
        );
        assert_eq!(codec_string(&clip.audio.codec), "mp4a.40.2");
    }

    #[test]
    fn ffmpeg_reads_video_only() {
        let Some(clip) = clip() else { return };
        let dir = TempDir::new("video");
        let path = dir.path().join("video.mp4");
        std::fs::write(&path, mux(&[(&clip.video, &clip.video_samples)])).unwrap();
        let probe = ffprobe(&path);
        assert_eq!(probe["format.nb_streams"], "1", "{probe:?}");
        assert_eq!(probe["streams.stream.0.codec_name"], "h264");
        assert_eq!(
            probe["streams.stream.0.nb_read_frames"],
            VIDEO_FRAMES.to_string()
        );
        assert_duration_about_2s(&probe);
        assert_packets(&path, "v", FRAME_TICKS, VIDEO_FRAMES);
        assert_decodes_cleanly(&path);
    }

    #[test]
    fn ffmpeg_reads_audio_only() {
        let Some(clip) = clip() else { return };
        let dir = TempDir::new("audio");
        let path = dir.path().join("audio.mp4");
        std::fs::write(&path, mux(&[(&clip.audio, &clip.audio_samples)])).unwrap();
        let probe = ffprobe(&path);
        assert_eq!(probe["format.nb_streams"], "1", "{probe:?}");
        assert_eq!(probe["streams.stream.0.codec_name"], "aac");
        assert_eq!(probe["streams.stream.0.profile"], "LC");
        assert_eq!(
            probe["streams.stream.0.nb_read_frames"],
            clip.audio_samples.len().to_string()
        );
        assert_duration_about_2s(&probe);
        let n = clip.audio_samples.len();
        assert_packets(&path, "a", AAC_FRAME_SAMPLES, n);
        assert_decodes_cleanly(&path);
    }

    #[test]
    fn gstreamer_qtdemux_decodes_muxed() {
        let Some(clip) = clip() else { return };
        let dir = TempDir::new("gst");
        let path = dir.path().join("muxed.mp4");
        std::fs::write(
            &path,
            mux(&[
                (&clip.video, &clip.video_samples),
                (&clip.audio, &clip.audio_samples),
            ]),
        )
        .unwrap();
        let Some(decoded) = gst_decode(&path, true) else {
            return;
        };
        assert_eq!(decoded.video_pts.len(), VIDEO_FRAMES);
        assert_eq!(decoded.keyframes, VIDEO_KEYFRAMES);
        assert_eq!(decoded.audio_frames, clip.audio_samples.len());
    }

    #[test]
    fn b_frames_keep_their_presentation_order() {
        let Some(clip) = b_frames_clip() else { return };
        let dir = TempDir::new("bframes");
        let path = dir.path().join("bframes.mp4");
        std::fs::write(&path, mux(&[(&clip.video, &clip.samples)])).unwrap();
        let probe = ffprobe(&path);
        assert_eq!(
            probe["streams.stream.0.nb_read_frames"],
            VIDEO_FRAMES.to_string()
        );
        assert_duration_about_2s(&probe);
        assert_decodes_cleanly(&path);
        // Decode order, as ffmpeg's own MP4 had it: presentation times relative to the first
        // frame's are the source's (negative trun offsets read back as such).
        let ours = packet_times(&path, "v");
        assert_eq!(ours.len(), clip.source_pts.len());
        for (i, (&(pts, _), &source)) in ours.iter().zip(&clip.source_pts).enumerate() {
            assert_eq!(
                pts - ours[0].0,
                source - clip.source_pts[0],
                "frame {i} in decode order"
            );
        }
        assert!(ours.windows(2).all(|w| w[0].1 < w[1].1), "dts increase");
        assert!(
            ours.iter()
                .any(|&(pts, dts)| pts < dts + (ours[0].0 - ours[0].1)),
            "some offsets below the first's: negative trun offsets were written"
        );
        if let Some(decoded) = gst_decode(&path, false) {
            assert_eq!(decoded.video_pts.len(), VIDEO_FRAMES);
            assert!(
                decoded.video_pts.windows(2).all(|w| w[0] < w[1]),
                "frames leave the decoder in presentation order: {:?}",
                decoded.video_pts
            );
        }
    }

    /// What qtdemux and the libav decoders made of a file.
    struct Decoded {
        /// Presentation times (ns) of the decoded pictures, in output order.
        video_pts: Vec<u64>,
        /// Video buffers qtdemux did not mark DELTA_UNIT (from trun's sample_is_non_sync_sample).
        keyframes: usize,
        audio_frames: usize,
    }

    /// Decodes `path` with GStreamer (qtdemux, a second demuxer after ffmpeg's); `None` (and a
    /// note) when a plugin is missing. Panics on a GStreamer error.
    fn gst_decode(path: &Path, with_audio: bool) -> Option<Decoded> {
        crate::pipeline::init().unwrap();
        let mut description = format!(
            "filesrc location={} ! qtdemux name=d \
             d.video_0 ! queue name=vq ! h264parse ! avdec_h264 ! appsink name=v sync=false",
            path.display()
        );
        if with_audio {
            description += " d.audio_0 ! queue ! aacparse ! avdec_aac ! appsink name=a sync=false";
        }
        let pipeline = match gst::parse::launch(&description) {
            Ok(p) => p.downcast::<gst::Pipeline>().unwrap(),
            Err(e) => {
                eprintln!("skipping GStreamer: plugins missing ({e})");
                return None;
            }
        };
        let video_pts = Arc::new(Mutex::new(Vec::new()));
        let audio_frames = Arc::new(AtomicUsize::new(0));
        let keyframes = Arc::new(AtomicUsize::new(0));
        let sink = |name: &str| {
            pipeline
                .by_name(name)
                .unwrap()
                .downcast::<gst_app::AppSink>()
                .unwrap()
        };
        let seen = video_pts.clone();
        sink("v").set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let pts = sample.buffer().and_then(|b| b.pts()).map(|t| t.nseconds());
                    seen.lock()
                        .unwrap()
                        .push(pts.expect("a decoded picture has a pts"));
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        if with_audio {
            let seen = audio_frames.clone();
            sink("a").set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        seen.fetch_add(1, Ordering::Relaxed);
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            );
        }
        let seen = keyframes.clone();
        pipeline
            .by_name("vq")
            .unwrap()
            .static_pad("sink")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(buffer) = info.buffer() {
                    if !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                        seen.fetch_add(1, Ordering::Relaxed);
                    }
                }
                gst::PadProbeReturn::Ok
            });
        pipeline.set_state(gst::State::Playing).unwrap();
        let msg = pipeline
            .bus()
            .unwrap()
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(30),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
            .expect("EOS or error within 30 s");
        pipeline.set_state(gst::State::Null).unwrap();
        if let gst::MessageView::Error(e) = msg.view() {
            panic!("GStreamer: {} ({:?})", e.error(), e.debug());
        }
        let video_pts = std::mem::take(&mut *video_pts.lock().unwrap());
        Some(Decoded {
            video_pts,
            keyframes: keyframes.load(Ordering::Relaxed),
            audio_frames: audio_frames.load(Ordering::Relaxed),
        })
    }

    /// 2 s of testsrc2 with two B-frames between references (ffmpeg's MP4 for the timing,
    /// its Annex B copy for the bytes): `cts_offset` = pts - dts less the first frame's, so the
    /// stream starts presenting at its first decode time and the B-frames' offsets go negative.
    struct BFramesClip {
        video: Track,
        samples: Vec<Sample>,
        /// ffmpeg's presentation times, decode order, in the video timescale.
        source_pts: Vec<i64>,
    }

    fn b_frames_clip() -> Option<&'static BFramesClip> {
        static CLIP: OnceLock<Option<BFramesClip>> = OnceLock::new();
        CLIP.get_or_init(|| {
            if !Path::new(FFMPEG).exists() {
                return None;
            }
            let dir = TempDir::new("input-bframes");
            let mp4 = dir.path().join("in.mp4");
            let h264 = dir.path().join("in.h264");
            run(Command::new(FFMPEG)
                .args([
                    "-v",
                    "error",
                    "-f",
                    "lavfi",
                    "-i",
                    "testsrc2=size=320x240:rate=30",
                ])
                .args(["-t", "2", "-c:v", "libx264", "-g", "30", "-bf", "2"])
                .args(["-video_track_timescale", "90000"])
                .arg(&mp4));
            run(Command::new(FFMPEG)
                .args(["-v", "error", "-i"])
                .arg(&mp4)
                .args(["-c", "copy", "-bsf:v", "h264_mp4toannexb", "-f", "h264"])
                .arg(&h264));
            let times = packet_times(&mp4, "v");
            let (avcc, mut samples) = avc_samples(&std::fs::read(&h264).unwrap());
            assert_eq!(samples.len(), times.len());
            let (first_pts, first_dts) = times[0];
            for (sample, &(pts, dts)) in samples.iter_mut().zip(&times) {
                sample.cts_offset = i32::try_from((pts - dts) - (first_pts - first_dts)).unwrap();
            }
            assert!(
                samples.iter().any(|s| s.cts_offset < 0),
                "x264 made B-frames"
            );
            Some(BFramesClip {
                video: Track {
                    id: 1,
                    timescale: VIDEO_TIMESCALE_HZ,
                    codec: Codec::H264 {
                        avcc,
                        width: 320,
                        height: 240,
                    },
                },
                samples,
                source_pts: times.iter().map(|t| t.0).collect(),
            })
        })
        .as_ref()
        .or_else(|| {
            eprintln!("skipping: {FFMPEG} is not installed");
            None
        })
    }

    /// Input made once by ffmpeg: 2 s of testsrc2 (x264, a keyframe a second, no B-frames) and
    /// a 440 Hz sine (AAC-LC, mono), as the samples h264parse / aacparse would hand us.
    struct Clip {
        video: Track,
        video_samples: Vec<Sample>,
        audio: Track,
        audio_samples: Vec<Sample>,
    }

    /// `None` (and a note) when ffmpeg is not installed.
    fn clip() -> Option<&'static Clip> {
        static CLIP: OnceLock<Option<Clip>> = OnceLock::new();
        CLIP.get_or_init(|| {
            if !Path::new(FFMPEG).exists() {
                return None;
            }
            let dir = TempDir::new("input");
            let h264 = dir.path().join("in.h264");
            let aac = dir.path().join("in.aac");
            run(Command::new(FFMPEG)
                .args(["-v", "error", "-f", "lavfi", "-i"])
                .args([
                    "testsrc2=size=320x240:rate=30",
                    "-t",
                    "2",
                    "-c:v",
                    "libx264",
                    "-g",
                    "30",
                    "-bf",
                    "0",
                    "-f",
                    "h264",
                ])
                .arg(&h264));
            run(Command::new(FFMPEG)
                .args(["-v", "error", "-f", "lavfi", "-i"])
                .args(["sine=f=440:r=48000", "-t", "2", "-c:a", "aac", "-f", "adts"])
                .arg(&aac));
            let (avcc, video_samples) = avc_samples(&std::fs::read(&h264).unwrap());
            let (asc, channels, audio_samples) = adts_samples(&std::fs::read(&aac).unwrap());
            Some(Clip {
                video: Track {
                    id: 1,
                    timescale: VIDEO_TIMESCALE_HZ,
                    codec: Codec::H264 {
                        avcc,
                        width: 320,
                        height: 240,
                    },
                },
                video_samples,
                audio: Track {
                    id: 2,
                    timescale: AUDIO_RATE_HZ,
                    codec: Codec::Aac {
                        asc,
                        sample_rate: AUDIO_RATE_HZ,
                        channels,
                    },
                },
                audio_samples,
            })
        })
        .as_ref()
        .or_else(|| {
            eprintln!("skipping: {FFMPEG} is not installed");
            None
        })
    }

    /// Init segment and chunks of 1/3 s (each track's samples that start before the chunk's
    /// end), sequence numbers from 1: an HLS segment made of its LL-HLS parts.
    fn mux(tracks: &[(&Track, &Vec<Sample>)]) -> Vec<u8> {
        let owned: Vec<Track> = tracks.iter().map(|(t, _)| (*t).clone()).collect();
        let mut out = init_segment(&owned).to_vec();
        let mut next = vec![(0usize, 0u64); tracks.len()]; // (sample index, decode time)
        for part in 0..100u64 {
            if tracks
                .iter()
                .zip(&next)
                .all(|((_, s), (i, _))| *i == s.len())
            {
                return out;
            }
            let runs: Vec<Run<'_>> = tracks
                .iter()
                .zip(next.iter_mut())
                .map(|((track, samples), (index, decode_time))| {
                    let end = (part + 1) * u64::from(track.timescale) / PARTS_PER_SECOND;
                    let first = *index;
                    let base_decode_time = *decode_time;
                    while *index < samples.len() && *decode_time < end {
                        *decode_time += u64::from(samples[*index].duration);
                        *index += 1;
                    }
                    Run {
                        track_id: track.id,
                        base_decode_time,
                        samples: &samples[first..*index],
                    }
                })
                .collect();
            out.extend_from_slice(&fragment(part as u32 + 1, &runs));
        }
        panic!("input longer than 100 parts");
    }

    /// Annex B to AVCC access units: SPS and PPS go to the avcC, the rest of each AU is
    /// length-prefixed. An AU starts at an SPS/PPS/SEI/AUD or a slice with first_mb_in_slice
    /// 0 (its first bit set) once the current AU has a slice.
    fn avc_samples(annex_b: &[u8]) -> (Bytes, Vec<Sample>) {
        let (mut sps, mut pps) = (None, None);
        let mut samples = Vec::new();
        let mut au: Vec<u8> = Vec::new();
        let (mut has_slice, mut keyframe) = (false, false);
        let mut flush = |au: &mut Vec<u8>, keyframe: bool| {
            samples.push(Sample {
                data: Bytes::from(std::mem::take(au)),
                duration: FRAME_TICKS,
                cts_offset: 0,
                keyframe,
            });
        };
        for nal in annex_b_nals(annex_b) {
            let kind = nal[0] & 0x1f;
            let slice = kind == 1 || kind == 5;
            let starts_au =
                matches!(kind, 6..=9) || (slice && nal.get(1).is_some_and(|b| b & 0x80 != 0));
            if has_slice && starts_au {
                flush(&mut au, keyframe);
                (has_slice, keyframe) = (false, false);
            }
            match kind {
                7 => sps = Some(nal.to_vec()),
                8 => pps = Some(nal.to_vec()),
                9 => {}
                _ => {
                    au.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                    au.extend_from_slice(nal);
                }
            }
            has_slice |= slice;
            keyframe |= kind == 5;
        }
        if has_slice {
            flush(&mut au, keyframe);
        }
        let (sps, pps) = (sps.expect("an SPS"), pps.expect("a PPS"));
        // 14496-15 §5.3.3.1: version 1, profile/compat/level, 4-byte lengths, one SPS, one PPS.
        let mut avcc = vec![1, sps[1], sps[2], sps[3], 0xfc | 3, 0xe0 | 1];
        avcc.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        avcc.extend_from_slice(&sps);
        avcc.push(1);
        avcc.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        avcc.extend_from_slice(&pps);
        (Bytes::from(avcc), samples)
    }

    /// NAL units between 00 00 01 start codes (a 4-byte start code's zero and trailing zero
    /// bytes trimmed: a NAL unit never ends in 00).
    fn annex_b_nals(data: &[u8]) -> Vec<&[u8]> {
        let mut starts = Vec::new();
        let mut i = 0;
        while i + 3 <= data.len() {
            if data[i..i + 3] == [0, 0, 1] {
                starts.push(i + 3);
                i += 3;
            } else {
                i += 1;
            }
        }
        let mut nals = Vec::new();
        for (n, &start) in starts.iter().enumerate() {
            let end = starts.get(n + 1).map_or(data.len(), |&next| next - 3);
            let mut nal = &data[start..end];
            while let [rest @ .., 0] = nal {
                nal = rest;
            }
            if !nal.is_empty() {
                nals.push(nal);
            }
        }
        nals
    }

    /// ADTS frames to raw AAC frames and the 2-byte AudioSpecificConfig (14496-3 §1.A.2).
    fn adts_samples(mut data: &[u8]) -> (Bytes, u16, Vec<Sample>) {
        let mut config = None;
        let mut samples = Vec::new();
        while data.len() >= 7 {
            assert_eq!(data[0], 0xff, "ADTS sync");
            assert_eq!(data[1] & 0xf0, 0xf0, "ADTS sync");
            let protection_absent = data[1] & 1 == 1;
            let aot = (data[2] >> 6) + 1;
            let rate_index = (data[2] >> 2) & 0x0f;
            let channels = ((data[2] & 1) << 2) | (data[3] >> 6);
            let frame_len = (usize::from(data[3] & 3) << 11)
                | (usize::from(data[4]) << 3)
                | usize::from(data[5] >> 5);
            let header = if protection_absent { 7 } else { 9 };
            config.get_or_insert((aot, rate_index, channels));
            samples.push(Sample {
                data: Bytes::copy_from_slice(&data[header..frame_len]),
                duration: AAC_FRAME_SAMPLES,
                cts_offset: 0,
                keyframe: true,
            });
            data = &data[frame_len..];
        }
        let (aot, rate_index, channels) = config.expect("an ADTS frame");
        let asc = [
            (aot << 3) | (rate_index >> 1),
            ((rate_index & 1) << 7) | (channels << 3),
        ];
        (Bytes::copy_from_slice(&asc), u16::from(channels), samples)
    }

    /// `ffprobe -of flat`: `streams.stream.0.codec_name` → `h264` (quotes removed).
    fn ffprobe(path: &Path) -> HashMap<String, String> {
        let out = run(Command::new(FFPROBE)
            .args([
                "-v",
                "error",
                "-show_streams",
                "-show_format",
                "-count_frames",
                "-of",
                "flat",
            ])
            .arg(path));
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect()
    }

    fn assert_duration_about_2s(probe: &HashMap<String, String>) {
        let duration: f64 = probe["format.duration"].parse().unwrap();
        assert!((1.95..2.1).contains(&duration), "duration {duration}");
    }

    /// Every packet of the stream at `step` ticks after the previous (decode times carried
    /// across chunks by tfdt), `count` of them. (Not ffprobe's K flags: its H.264 parser sets
    /// them from the bitstream, whatever trun says; the GStreamer test checks our flags.)
    fn assert_packets(path: &Path, stream: &str, step: u32, count: usize) {
        let packets = packet_times(path, stream);
        assert_eq!(packets.len(), count);
        for (i, &(pts, dts)) in packets.iter().enumerate() {
            let expected = i as i64 * i64::from(step);
            assert_eq!((pts, dts), (expected, expected), "packet {i}");
        }
    }

    /// (pts, dts) of every packet of `stream` (`v`, `a`) in file order, in its timescale.
    fn packet_times(path: &Path, stream: &str) -> Vec<(i64, i64)> {
        let out = run(Command::new(FFPROBE)
            .args(["-v", "error", "-select_streams", stream])
            .args(["-show_entries", "packet=pts,dts", "-of", "csv=p=0"])
            .arg(path));
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let (pts, dts) = l.split_once(',').expect("pts,dts");
                (pts.parse().unwrap(), dts.parse().unwrap())
            })
            .collect()
    }

    fn assert_decodes_cleanly(path: &Path) {
        let out = run(Command::new(FFMPEG)
            .args(["-v", "error", "-i"])
            .arg(path)
            .args(["-f", "null", "-"]));
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn run(cmd: &mut Command) -> Output {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Top-level boxes of `buf`: (type, body).
    fn boxes(mut buf: &[u8]) -> Vec<(String, &[u8])> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let size = be32(buf, 0) as usize;
            assert!(
                size >= 8 && size <= buf.len(),
                "box size {size} of {}",
                buf.len()
            );
            out.push((
                String::from_utf8_lossy(&buf[4..8]).into_owned(),
                &buf[8..size],
            ));
            buf = &buf[size..];
        }
        out
    }

    fn kinds(boxes: &[(String, &[u8])]) -> Vec<String> {
        boxes.iter().map(|b| b.0.clone()).collect()
    }

    fn be32(buf: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(buf[at..at + 4].try_into().unwrap())
    }

    /// A directory removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "glint-fmp4-{}-{name}-{}",
                std::process::id(),
                rand::random::<u32>()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
