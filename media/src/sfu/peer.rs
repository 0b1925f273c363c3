//! Building webrtc-rs `rtc` peer connections for our two roles, and reading what was negotiated.
//!
//! Every connection is ICE-lite (RFC 8445 §2.5) with its own ufrag, shares the server's one UDP
//! socket as its single host candidate, and never gathers: the server's address is in the
//! answer, so clients that send no candidates (OBS, ffmpeg) connect without trickle.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::distr::{Alphanumeric, SampleString};
use rtc::crypto::SignatureScheme;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sdp::description::session::SessionDescription;

use super::fanout::Sent;
use super::rtcp_tap::{self, FeedbackTap};
use super::Role;
use crate::codec::{self, MediaKind, PayloadFormat};
use crate::error::{MediaError, Result};

/// The server's DTLS identity (ECDSA P-256, as browsers use).
pub(crate) fn generate_certificate() -> Result<RTCCertificate> {
    let provider = rtc::crypto::default_provider().map_err(MediaError::Crypto)?;
    let params = CertificateParams::new(vec!["glint".to_owned()])
        .map_err(|e| MediaError::Certificate(Box::new(e)))?;
    RTCCertificate::generate(provider.crypto(), SignatureScheme::EcdsaP256Sha256, params)
        .map_err(map_rtc("certificate"))
}

/// What every new connection is set up with.
#[derive(Debug, Clone)]
pub(crate) struct PeerSettings {
    pub host_candidates: Vec<SocketAddr>,
    /// One DTLS certificate for every connection: generating a key pair per peer costs CPU at
    /// every join and memory per viewer, and buys nothing (the fingerprint is in each answer).
    pub certificate: RTCCertificate,
    pub ice_disconnected_timeout: Duration,
    pub ice_failed_timeout: Duration,
}

/// ICE credentials of one connection; the ufrag is how the demultiplexer finds it.
#[derive(Debug, Clone)]
pub(crate) struct IceCredentials {
    pub ufrag: String,
    pub pwd: String,
}

impl IceCredentials {
    /// RFC 8445 §5.3: ufrag ≥ 24 bits, pwd ≥ 128 bits of randomness.
    pub fn random() -> Self {
        let mut rng = rand::rng();
        Self {
            ufrag: Alphanumeric.sample_string(&mut rng, 16),
            pwd: Alphanumeric.sample_string(&mut rng, 32),
        }
    }
}

/// One m-line of a publisher's answer that will carry media to us.
#[derive(Debug, Clone)]
pub struct PublishedTrack {
    pub kind: MediaKind,
    pub payload_type: u8,
    pub codec: RTCRtpCodecParameters,
    pub format: PayloadFormat,
    /// An ingest publisher's own timeline for this track (RTMP: the FLV clock), which its
    /// viewers' sender reports follow; `None` (WebRTC publishers): reports follow when its
    /// packets were forwarded.
    pub source_time: Option<SourceTime>,
}

/// Where a track's RTP time is on its source's clock: RTP timestamp `rtp_ts` of the packets of
/// SSRC `ssrc` (the publisher's numbering) is the source's time at `at`, and it advances at the
/// codec's clock rate. Tracks that give the same `at` for the same source time map it to the
/// same NTP time in sender reports, however late each reaches the SFU (an RTMP stream's Opus
/// comes out of a transcoder after its video): that is what receivers sync audio and video on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceTime {
    pub ssrc: u32,
    pub rtp_ts: u32,
    pub at: Instant,
}

impl PublishedTrack {
    /// This track's RTP time on its source's timeline (see [`SourceTime`]).
    pub fn with_source_time(mut self, source_time: SourceTime) -> Self {
        self.source_time = Some(source_time);
        self
    }

    /// H.264 from a non-WebRTC source (RTMP), on payload type 96, packetization-mode 1.
    pub fn h264(profile_level_id: &str) -> Self {
        let pt = 96;
        PublishedTrack {
            kind: MediaKind::Video,
            payload_type: pt,
            codec: RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: rtc::peer_connection::configuration::media_engine::MIME_TYPE_H264.into(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: format!("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile_level_id}"),
                    rtcp_feedback: vec![],
                },
                payload_type: pt,
            },
            format: PayloadFormat::H264,
            source_time: None,
        }
    }

    /// Opus from a non-WebRTC source (RTMP's AAC, transcoded), on payload type 111.
    pub fn opus() -> Self {
        let pt = 111;
        PublishedTrack {
            kind: MediaKind::Audio,
            payload_type: pt,
            codec: RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: rtc::peer_connection::configuration::media_engine::MIME_TYPE_OPUS
                        .into(),
                    clock_rate: 48_000,
                    channels: 2,
                    sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                    rtcp_feedback: vec![],
                },
                payload_type: pt,
            },
            format: PayloadFormat::Opus,
            source_time: None,
        }
    }
}

/// What a viewer's connection sends on for one kind of media, and what it has sent.
#[derive(Debug, Clone)]
pub(crate) struct ViewerTrack {
    pub kind: MediaKind,
    pub sender: RTCRtpSenderId,
    pub ssrc: u32,
    pub payload_type: u8,
    pub clock_rate: u32,
    /// Added to forwarded packets' RTP timestamps (a viewer started from the stream's GOP
    /// runs that much behind the stream's timeline: see `gop`).
    pub ts_offset: u32,
    /// Counters and the RTP-time anchor of its sender reports.
    pub sent: Sent,
}

fn map_rtc(context: &'static str) -> impl Fn(rtc::shared::error::Error) -> MediaError {
    move |source| MediaError::Rtc { context, source }
}

/// Most m-lines (media sections) an offer may have; more get 400. A publisher needs two (audio,
/// video), simulcast or a data channel a few more.
pub const MAX_MEDIA_SECTIONS: usize = 16;

/// Parse an offer and check it carries audio or video at all (RFC 9725 §4.2 → 400 / 406), with
/// at most [`MAX_MEDIA_SECTIONS`] m-lines.
pub fn parse_offer(sdp: &str, want_send: bool) -> Result<RTCSessionDescription> {
    // Counted before parsing: every m-line costs a transceiver, and an offer of hundreds (the
    // 64 KiB body limit allows ~2000) would be parsed, negotiated and answered in the media task.
    let m_lines = sdp.lines().filter(|l| l.starts_with("m=")).count();
    if m_lines > MAX_MEDIA_SECTIONS {
        return Err(MediaError::BadOffer(format!(
            "offer has {m_lines} m-lines; at most {MAX_MEDIA_SECTIONS} are accepted"
        )));
    }
    let desc = RTCSessionDescription::offer(sdp.to_owned())
        .map_err(|e| MediaError::BadOffer(e.to_string()))?;
    let parsed = desc
        .unmarshal()
        .map_err(|e| MediaError::BadOffer(e.to_string()))?;
    let mut media = 0;
    for md in &parsed.media_descriptions {
        let kind = md.media_name.media.as_str();
        if kind != "audio" && kind != "video" {
            continue;
        }
        media += 1;
        let dir = direction(md.attributes.iter().map(|a| a.key.as_str()));
        let ok = if want_send {
            matches!(dir, "sendonly" | "sendrecv")
        } else {
            matches!(dir, "recvonly" | "sendrecv")
        };
        if !ok {
            return Err(MediaError::NotAcceptable(format!(
                "{kind} m-line is {dir}; a {} offer must be {}",
                if want_send { "WHIP" } else { "WHEP" },
                if want_send {
                    "sendonly or sendrecv"
                } else {
                    "recvonly or sendrecv"
                }
            )));
        }
    }
    if media == 0 {
        return Err(MediaError::NotAcceptable(
            "offer has no audio or video m-line".into(),
        ));
    }
    if !parsed.attributes.iter().any(|a| a.key == "fingerprint")
        && !parsed
            .media_descriptions
            .iter()
            .any(|m| m.attributes.iter().any(|a| a.key == "fingerprint"))
    {
        return Err(MediaError::BadOffer(
            "offer has no a=fingerprint (DTLS is required)".into(),
        ));
    }
    Ok(desc)
}

/// The DTLS role the answer must take, from the offer's `a=setup` (RFC 5763 §5, RFC 8842):
/// `active` → we are passive (DTLS server), `passive` → we are active (client). `actpass` or
/// none: `None`, the default (active). The `rtc` core answers with its configured role
/// whatever the offer says, which gave `a=setup:active` to an `a=setup:active` offer.
fn answering_dtls_role(offer: &RTCSessionDescription) -> Option<RTCDtlsRole> {
    let parsed = offer.unmarshal().ok()?;
    let setup = parsed
        .attributes
        .iter()
        .chain(
            parsed
                .media_descriptions
                .iter()
                .flat_map(|m| m.attributes.iter()),
        )
        .find(|a| a.key == "setup")?
        .value
        .clone()?;
    match setup.trim() {
        "active" => Some(RTCDtlsRole::Server),
        "passive" => Some(RTCDtlsRole::Client),
        _ => None,
    }
}

fn direction<'a>(keys: impl Iterator<Item = &'a str>) -> &'static str {
    for k in keys {
        match k {
            "sendonly" => return "sendonly",
            "recvonly" => return "recvonly",
            "inactive" => return "inactive",
            "sendrecv" => return "sendrecv",
            _ => {}
        }
    }
    "sendrecv" // RFC 4566 §6: the default
}

fn build(
    now: Instant,
    settings: &PeerSettings,
    creds: &IceCredentials,
    mut engine: MediaEngine,
    role: Role,
    offer: &RTCSessionDescription,
) -> Result<RTCPeerConnection> {
    let registry = match role {
        // Viewers' RTP does not go through the connection (see `fanout`): retransmissions and
        // sender reports are ours, so the only interceptor is the tap that hands us their
        // PLI, FIR and NACK.
        Role::Viewer => Registry::new().with(Slot::from(rtcp_tap::SLOT), FeedbackTap::default()),
        // Publishers get the defaults: NACK generator, receiver reports, TWCC feedback.
        Role::Publisher => register_default_interceptors(Registry::new(), &mut engine)
            .map_err(map_rtc("interceptors"))?,
    };
    let mut setting_engine = SettingEngineBuilder::new()
        .with_ice_credentials(creds.ufrag.clone(), creds.pwd.clone())
        .with_lite(true)
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_ice_timeouts(
            Some(settings.ice_disconnected_timeout),
            Some(settings.ice_failed_timeout),
            Some(Duration::from_secs(1)),
        );
    if let Some(dtls) = answering_dtls_role(offer) {
        setting_engine = setting_engine.with_answering_dtls_role(dtls);
    }
    let setting_engine = setting_engine.build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(
            RTCConfigurationBuilder::new()
                .with_certificates(vec![settings.certificate.clone()])
                .build(),
        )
        .with_setting_engine(setting_engine)
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .build(now)
        .map_err(map_rtc("peer connection"))?;
    for addr in &settings.host_candidates {
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: addr.ip().to_string(),
                port: addr.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .map_err(map_rtc("host candidate"))?;
        let init = RTCIceCandidate::from(&candidate)
            .to_json()
            .map_err(map_rtc("host candidate"))?;
        pc.add_local_candidate(init)
            .map_err(map_rtc("add host candidate"))?;
    }
    Ok(pc)
}

fn answer(
    now: Instant,
    pc: &mut RTCPeerConnection,
    offer: RTCSessionDescription,
) -> Result<String> {
    pc.set_remote_description(now, offer)
        .map_err(|e| MediaError::BadOffer(e.to_string()))?;
    let answer = pc
        .create_answer(None)
        .map_err(|e| MediaError::NotAcceptable(e.to_string()))?;
    pc.set_local_description(now, answer)
        .map_err(map_rtc("set local description"))?;
    let local = pc
        .local_description()
        .ok_or(MediaError::Missing("local description"))?;
    Ok(local.sdp)
}

/// A publisher's connection: answer its offer with the first codec of each kind we forward.
pub(crate) fn build_publisher(
    now: Instant,
    settings: &PeerSettings,
    creds: &IceCredentials,
    offer: RTCSessionDescription,
) -> Result<(RTCPeerConnection, String, Vec<PublishedTrack>)> {
    let engine = codec::publisher_media_engine().map_err(map_rtc("media engine"))?;
    let mut pc = build(now, settings, creds, engine, Role::Publisher, &offer)?;
    let sdp = answer(now, &mut pc, offer)?;
    let tracks = negotiated_tracks(&sdp, "recvonly")?;
    if tracks.is_empty() {
        return Err(MediaError::NotAcceptable(
            "no offered codec is one we forward (H.264 packetization-mode=1, VP8, Opus)".into(),
        ));
    }
    Ok((pc, sdp, tracks))
}

/// A viewer's connection: one sending track per published track, in the publisher's codec.
pub(crate) fn build_viewer(
    now: Instant,
    settings: &PeerSettings,
    creds: &IceCredentials,
    offer: RTCSessionDescription,
    stream: &str,
    published: &[PublishedTrack],
) -> Result<(RTCPeerConnection, String, Vec<ViewerTrack>)> {
    let codecs: Vec<_> = published
        .iter()
        .map(|t| (t.kind, t.codec.clone()))
        .collect();
    let engine = codec::viewer_media_engine(&codecs).map_err(map_rtc("media engine"))?;
    let mut pc = build(now, settings, creds, engine, Role::Viewer, &offer)?;
    let mut senders = Vec::with_capacity(published.len());
    for t in published {
        let ssrc = rand::random::<u32>();
        let track = MediaStreamTrack::new(
            format!("glint-{stream}"),
            format!("{}-{}", t.kind.as_str(), ssrc),
            format!("{stream} {}", t.kind.as_str()),
            t.kind.to_rtc(),
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    // Retransmissions go on the media SSRC (RFC 4588 is not used).
                    ..Default::default()
                },
                codec: t.codec.rtp_codec.clone(),
                ..Default::default()
            }],
        );
        let sender = pc.add_track(track).map_err(map_rtc("add track"))?;
        senders.push((t.kind, sender, ssrc, t.codec.rtp_codec.clock_rate));
    }
    let sdp = ensure_directions(&answer(now, &mut pc, offer)?);
    let negotiated = negotiated_tracks(&sdp, "sendonly")?;
    let mut out = Vec::new();
    for (kind, sender, ssrc, clock_rate) in senders {
        if let Some(n) = negotiated.iter().find(|n| n.kind == kind) {
            out.push(ViewerTrack {
                kind,
                sender,
                ssrc,
                payload_type: n.payload_type,
                clock_rate,
                ts_offset: 0,
                sent: Sent::default(),
            });
        }
    }
    if out.is_empty() {
        return Err(MediaError::NotAcceptable(format!(
            "the viewer accepts none of the stream's codecs ({})",
            published
                .iter()
                .map(|t| t.codec.rtp_codec.mime_type.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok((pc, sdp, out))
}

/// webrtc-rs writes an m-section it has nothing for (audio, when a stream is video-only)
/// without a direction attribute; some peers (str0m) insist on one (RFC 3264 §6: such a stream
/// is inactive). Say so explicitly.
fn ensure_directions(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len() + 32);
    for (i, section) in sdp.split("\r\nm=").enumerate() {
        if i > 0 {
            out.push_str("\r\nm=");
        }
        let has_direction = section.lines().any(|l| {
            matches!(
                l.trim(),
                "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive"
            )
        });
        if i > 0 && !has_direction {
            out.push_str(section.trim_end_matches("\r\n"));
            out.push_str("\r\na=inactive");
            if section.ends_with("\r\n") {
                out.push_str("\r\n");
            }
        } else {
            out.push_str(section);
        }
    }
    out
}

/// Read our own answer: for each active m-line in `our_direction`, its kind and chosen codec.
pub fn negotiated_tracks(answer_sdp: &str, our_direction: &str) -> Result<Vec<PublishedTrack>> {
    let mut cursor = std::io::Cursor::new(answer_sdp.as_bytes());
    let parsed = SessionDescription::unmarshal(&mut cursor).map_err(|source| MediaError::Rtc {
        context: "reading our own answer",
        source,
    })?;
    let mut tracks = Vec::new();
    for md in &parsed.media_descriptions {
        let kind = match md.media_name.media.as_str() {
            "audio" => MediaKind::Audio,
            "video" => MediaKind::Video,
            _ => continue,
        };
        if md.media_name.port.value == 0 {
            continue;
        }
        if direction(md.attributes.iter().map(|a| a.key.as_str())) != our_direction {
            continue;
        }
        let Some(pt) = md
            .media_name
            .formats
            .first()
            .and_then(|f| f.parse::<u8>().ok())
        else {
            continue;
        };
        let mut codec = RTCRtpCodec::default();
        for attr in &md.attributes {
            let Some(value) = attr.value.as_deref() else {
                continue;
            };
            let Some((attr_pt, rest)) = value.split_once(' ') else {
                continue;
            };
            if attr_pt.parse::<u8>().ok() != Some(pt) {
                continue;
            }
            match attr.key.as_str() {
                "rtpmap" => {
                    // <encoding name>/<clock rate>[/<channels>]
                    let mut parts = rest.split('/');
                    let name = parts.next().unwrap_or_default();
                    codec.mime_type = format!("{}/{}", kind.as_str(), name);
                    codec.clock_rate = parts.next().and_then(|c| c.parse().ok()).unwrap_or(90_000);
                    codec.channels = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
                }
                "fmtp" => codec.sdp_fmtp_line = rest.to_owned(),
                _ => {}
            }
        }
        if codec.mime_type.is_empty() {
            continue;
        }
        let format = PayloadFormat::from_mime(&codec.mime_type);
        tracks.push(PublishedTrack {
            kind,
            payload_type: pt,
            codec: RTCRtpCodecParameters {
                rtp_codec: codec,
                payload_type: pt,
            },
            format,
            source_time: None,
        });
    }
    Ok(tracks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_without_direction_become_inactive() {
        let sdp =
            "v=0\r\ns=-\r\nm=video 9 X 96\r\na=mid:0\r\na=sendonly\r\nm=audio 0 X 0\r\na=mid:1\r\n";
        let fixed = ensure_directions(sdp);
        assert_eq!(fixed, "v=0\r\ns=-\r\nm=video 9 X 96\r\na=mid:0\r\na=sendonly\r\nm=audio 0 X 0\r\na=mid:1\r\na=inactive\r\n");
        assert_eq!(ensure_directions(&fixed), fixed, "idempotent");
    }
}
