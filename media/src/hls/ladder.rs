//! Which renditions a stream gets, and the master playlist that lists them.
//!
//! The **source** rendition keeps the input's size and frame rate (H.264 passed through, other
//! codecs encoded); each rung of the configured ladder below the input's height is added, never
//! one at or above it (no upscaling).

use std::fmt::Write;

use super::probe::Size;

/// One rung of the configured ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rung {
    pub height: u32,
    pub fps: u32,
    pub video_kbps: u32,
}

/// A configured ladder rung that does not read, with the text as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RungError {
    #[error("ladder rung {0:?}: want HEIGHTpFPS:KBPS, e.g. 720p30:3000")]
    Syntax(String),
    #[error("ladder rung {0:?}: height must be even, 144-2160")]
    Height(String),
    #[error("ladder rung {0:?}: frame rate must be 1-120")]
    FrameRate(String),
    #[error("ladder rung {0:?}: bitrate must be 100-50000 kbit/s")]
    Bitrate(String),
}

impl Rung {
    /// `720p30:3000` (height, frame rate, video kbit/s); the frame rate may be left out (30).
    pub fn parse(text: &str) -> Result<Rung, RungError> {
        let bad = || RungError::Syntax(text.to_owned());
        let (size, kbps) = text.trim().split_once(':').ok_or_else(bad)?;
        let (height, fps) = size.split_once('p').ok_or_else(bad)?;
        let height: u32 = height.parse().map_err(|_| bad())?;
        let fps: u32 = if fps.is_empty() {
            30
        } else {
            fps.parse().map_err(|_| bad())?
        };
        let video_kbps: u32 = kbps.parse().map_err(|_| bad())?;
        if !(144..=2160).contains(&height) || !height.is_multiple_of(2) {
            return Err(RungError::Height(text.to_owned()));
        }
        if !(1..=120).contains(&fps) {
            return Err(RungError::FrameRate(text.to_owned()));
        }
        if !(100..=50_000).contains(&video_kbps) {
            return Err(RungError::Bitrate(text.to_owned()));
        }
        Ok(Rung {
            height,
            fps,
            video_kbps,
        })
    }
}

/// A configured ladder: rungs as [`Rung::parse`] reads them; `none` (or nothing) for the
/// source rendition alone.
pub fn parse_ladder<S: AsRef<str>>(rungs: &[S]) -> Result<Vec<Rung>, RungError> {
    let mut out = Vec::new();
    for r in rungs.iter().map(AsRef::as_ref) {
        if r.trim().is_empty() || r.trim() == "none" {
            continue;
        }
        out.push(Rung::parse(r)?);
    }
    Ok(out)
}

/// 720p30, 480p30, 360p30 at bitrates close to common streaming guidance.
pub fn default_ladder() -> Vec<Rung> {
    vec![
        Rung {
            height: 720,
            fps: 30,
            video_kbps: 3000,
        },
        Rung {
            height: 480,
            fps: 30,
            video_kbps: 1500,
        },
        Rung {
            height: 360,
            fps: 30,
            video_kbps: 800,
        },
    ]
}

/// One rendition of a stream's HLS output.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendition {
    /// Directory under the stream's prefix: `source`, `720p`, ...
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    /// Target (encoded) or estimated (passed through) video bitrate.
    pub video_kbps: u32,
    /// The input's H.264 goes out as is.
    pub passthrough: bool,
    /// RFC 6381 codecs of video and audio.
    pub codecs: String,
}

/// What the ladder is built from.
#[derive(Debug, Clone)]
pub struct Input {
    pub size: Size,
    pub fps: f64,
    /// `profile-level-id` when the input is H.264 (then the source rendition passes it through).
    pub h264_profile_level_id: Option<String>,
}

pub const AUDIO_CODEC: &str = "mp4a.40.2";

/// Renditions for `input`, largest first.
pub fn plan(input: &Input, ladder: &[Rung]) -> Vec<Rendition> {
    let (w, h) = input.size;
    // Passed through, the source keeps its rate. Encoded (a WebRTC publisher, whose rate swings
    // with its bandwidth estimate and starts low), it gets a steady 30 or 60.
    let source_fps = match (&input.h264_profile_level_id, input.fps) {
        (Some(_), fps) if fps > 0.0 => fps,
        (None, fps) if fps > 30.5 => 60.0,
        _ => 30.0,
    };
    let source_codec = match &input.h264_profile_level_id {
        Some(pli) => format!("avc1.{pli}"),
        None => encoded_codec(w, h, source_fps),
    };
    let mut out = vec![Rendition {
        name: "source".into(),
        width: w,
        height: h,
        fps: source_fps,
        video_kbps: estimate_kbps(w, h, source_fps),
        passthrough: input.h264_profile_level_id.is_some(),
        codecs: format!("{source_codec},{AUDIO_CODEC}"),
    }];
    let mut rungs: Vec<_> = ladder.iter().filter(|r| r.height < h).collect();
    rungs.sort_by_key(|r| std::cmp::Reverse(r.height));
    for r in rungs {
        // Same aspect ratio, even dimensions (4:2:0).
        let width = ((w as u64 * r.height as u64 / h as u64) as u32 + 1) & !1;
        let fps = (r.fps as f64).min(source_fps);
        out.push(Rendition {
            name: format!("{}p", r.height),
            width,
            height: r.height,
            fps,
            video_kbps: r.video_kbps,
            passthrough: false,
            codecs: format!("{},{AUDIO_CODEC}", encoded_codec(width, r.height, fps)),
        });
    }
    out
}

/// Our x264 renditions are Main profile; the level follows the picture rate (H.264 Table A-1:
/// 3.0 up to 414,720 luma samples/s per 1620 macroblocks, 3.1 to 720p30, 4.0 to 1080p30, 4.2).
fn encoded_codec(w: u32, h: u32, fps: f64) -> String {
    let mbs = (w.div_ceil(16) * h.div_ceil(16)) as f64;
    let level = match mbs * fps {
        r if r <= 40_500.0 && mbs <= 1_620.0 => 0x1e,
        r if r <= 108_000.0 && mbs <= 3_600.0 => 0x1f,
        r if r <= 245_760.0 && mbs <= 8_192.0 => 0x28,
        r if r <= 522_240.0 && mbs <= 8_704.0 => 0x2a,
        _ => 0x33,
    };
    format!("avc1.4d40{level:02x}")
}

/// A passed-through stream's bitrate is the publisher's; until measured, estimate it at 0.1 bit
/// per pixel (what 720p30 at ~2.8 Mbit/s is).
fn estimate_kbps(w: u32, h: u32, fps: f64) -> u32 {
    ((w as f64 * h as f64 * fps * 0.1) / 1000.0) as u32
}

/// The master playlist (RFC 8216 §4.3.4.2), renditions in `dir/index.m3u8`.
/// `uri` gives each rendition's media playlist URI from its name.
pub fn master_playlist(
    renditions: &[Rendition],
    audio_kbps: u32,
    uri: impl Fn(&str) -> String,
) -> String {
    let mut m = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for r in renditions {
        let average = (r.video_kbps + audio_kbps) as u64 * 1000;
        // Peak: encoders overshoot their average within a segment; 25 % headroom.
        let peak = (r.video_kbps as u64 * 1250) + audio_kbps as u64 * 1000;
        let _ = writeln!(
            m,
            "#EXT-X-STREAM-INF:BANDWIDTH={peak},AVERAGE-BANDWIDTH={average},RESOLUTION={}x{},FRAME-RATE={:.3},CODECS=\"{}\"\n{}",
            r.width,
            r.height,
            r.fps,
            r.codecs,
            uri(&r.name)
        );
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ladders_are_read_from_configuration() {
        assert_eq!(
            parse_ladder(&["1080p60:6000", "720p:3000", " 360p30:800 "]).unwrap(),
            [
                Rung {
                    height: 1080,
                    fps: 60,
                    video_kbps: 6000
                },
                Rung {
                    height: 720,
                    fps: 30,
                    video_kbps: 3000
                },
                Rung {
                    height: 360,
                    fps: 30,
                    video_kbps: 800
                },
            ]
        );
        assert!(parse_ladder(&["none"]).unwrap().is_empty());
        assert!(parse_ladder::<&str>(&[]).unwrap().is_empty());
        for bad in [
            "720",
            "720p30",
            "p30:100",
            "721p30:3000",
            "720p0:3000",
            "720p30:10",
            "720px:3000",
            "9999p30:3000",
        ] {
            assert!(Rung::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Rung::parse("721p30:3000"),
            Err(RungError::Height("721p30:3000".into()))
        );
        assert_eq!(
            parse_ladder(&["720p30:3000", "720p"]),
            Err(RungError::Syntax("720p".into()))
        );
    }

    fn input(size: Size, h264: bool) -> Input {
        Input {
            size,
            fps: 30.0,
            h264_profile_level_id: h264.then(|| "64001f".into()),
        }
    }

    #[test]
    fn never_upscales() {
        let names = |i: &Input| -> Vec<String> {
            plan(i, &default_ladder())
                .into_iter()
                .map(|r| r.name)
                .collect()
        };
        assert_eq!(
            names(&input((1920, 1080), true)),
            ["source", "720p", "480p", "360p"]
        );
        assert_eq!(names(&input((1280, 720), true)), ["source", "480p", "360p"]);
        assert_eq!(names(&input((640, 360), true)), ["source"]);
        assert_eq!(names(&input((320, 240), false)), ["source"]);
    }

    #[test]
    fn sizes_codecs_and_passthrough() {
        let p = plan(&input((1920, 1080), true), &default_ladder());
        assert!(p[0].passthrough);
        assert_eq!(p[0].codecs, "avc1.64001f,mp4a.40.2");
        assert_eq!((p[1].width, p[1].height), (1280, 720));
        assert_eq!(p[1].codecs, "avc1.4d401f,mp4a.40.2");
        assert_eq!((p[2].width, p[2].height), (854, 480));
        assert_eq!(p[3].codecs, "avc1.4d401e,mp4a.40.2");
        let vp8 = plan(&input((1280, 720), false), &default_ladder());
        assert!(!vp8[0].passthrough);
        let slow_start = Input {
            fps: 18.2,
            ..input((640, 360), false)
        };
        assert_eq!(plan(&slow_start, &default_ladder())[0].fps, 30.0);
        assert_eq!(vp8[0].codecs, "avc1.4d401f,mp4a.40.2");
    }

    #[test]
    fn master_playlist_lists_every_rendition() {
        let p = plan(&input((1280, 720), true), &default_ladder());
        let m = master_playlist(&p, 128, |n| format!("{n}/index.m3u8"));
        assert!(m.starts_with("#EXTM3U\n"));
        assert_eq!(m.matches("#EXT-X-STREAM-INF:").count(), 3);
        assert!(m.contains(
            "#EXT-X-STREAM-INF:BANDWIDTH=1128000,AVERAGE-BANDWIDTH=928000,RESOLUTION=640x360,FRAME-RATE=30.000,CODECS=\"avc1.4d401e,mp4a.40.2\"\n360p/index.m3u8\n"
        ), "{m}");
        assert!(m.contains("source/index.m3u8"));
    }
}
