//! Entry points for fuzzing the parsers that read untrusted network input. Used by the
//! cargo-fuzz targets in `fuzz/` and by the bounded mutation test below, which runs in CI.

use crate::codec::PayloadFormat;

/// STUN demultiplexing of a datagram from anyone on the internet.
pub fn stun(data: &[u8]) {
    let _ = crate::stun::looks_like_stun(data);
    let _ = crate::stun::local_ufrag(data);
}

/// Keyframe detection on RTP payloads from a publisher.
pub fn keyframe(data: &[u8]) {
    for f in [PayloadFormat::H264, PayloadFormat::Vp8, PayloadFormat::Opus] {
        let _ = f.is_keyframe(data);
    }
}

/// SDP offers from WHIP/WHEP clients: parse and check, as signaling does before anything else.
pub fn offer(data: &[u8]) {
    if let Ok(sdp) = std::str::from_utf8(data) {
        let _ = crate::sfu::peer::parse_offer(sdp, true);
        let _ = crate::sfu::peer::parse_offer(sdp, false);
    }
}

/// Our own reading of negotiated m-lines (fed with arbitrary SDP, it must not panic either).
pub fn negotiated(data: &[u8]) {
    if let Ok(sdp) = std::str::from_utf8(data) {
        let _ = crate::sfu::peer::negotiated_tracks(sdp, "recvonly");
    }
}

/// Picture-size probing of publishers' keyframes for the HLS ladder: H.264 SPS (bytes as they
/// come, and as the payload of an SPS NAL unit whatever their first byte) and VP8 headers.
pub fn sps_probe(data: &[u8]) {
    use crate::hls::probe::{h264_sps_size, vp8_keyframe_size};
    let _ = h264_sps_size(data);
    let mut sps = Vec::with_capacity(data.len() + 1);
    sps.push(0x67);
    sps.extend_from_slice(data);
    let _ = h264_sps_size(&sps);
    let _ = vp8_keyframe_size(data);
}

/// LL-HLS requests from any player: the query of a blocking playlist reload, an object name,
/// and the reload decision for whatever numbers they carry, on a small live playlist.
pub fn hls_request(data: &[u8]) {
    use crate::hls::playlist::{Name, Part, Playlist};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut pl = Playlist::new("seg-1-".into(), 2, 0.34, 6);
    pl.add_init(bytes::Bytes::from_static(b"init"));
    for s in 0..3 {
        pl.open_segment(s == 1, 0);
        for _ in 0..6 {
            pl.push_part(Part {
                duration: 1.0 / 3.0,
                independent: false,
                bytes: bytes::Bytes::new(),
            });
        }
        if s < 2 {
            pl.close_segment();
        }
    }
    if let Ok(Some((msn, part))) = crate::hls::live::parse_query(text) {
        let _ = pl.reload(msn, part);
    }
    match Name::parse("seg-1-", text) {
        Some(Name::Part(msn, n)) => {
            let _ = pl.part(msn, n);
            let _ = pl.reload(msn, Some(n as u64));
        }
        Some(Name::Segment(msn)) => {
            let _ = pl.segment(msn);
        }
        Some(Name::Init(k)) => {
            let _ = pl.init(k);
        }
        None => {}
    }
    let _ = pl.render_low_latency(&[]);
}

/// RTMP from anyone who connects to the RTMP port: handshake, then chunks, then AMF0 bodies.
pub fn rtmp(data: &[u8]) {
    use crate::ingest::rtmp::{amf0, chunk::ChunkReader, handshake::Handshake};
    let _ = Handshake::default().feed(data, 0);
    let mut reader = ChunkReader::default();
    let mut rest = data;
    while let Ok((n, msg)) = reader.read(rest) {
        if let Some(m) = msg {
            let _ = amf0::decode_all(&m.payload);
        }
        if n == 0 {
            break;
        }
        rest = &rest[n..];
    }
    let _ = amf0::decode_all(data);
    if let Ok(crate::ingest::rtmp::flv::VideoTag::AvcFrame { nalus, .. }) =
        crate::ingest::rtmp::flv::parse_video(&bytes::Bytes::copy_from_slice(data))
    {
        let _ =
            crate::ingest::rtmp::flv::packetize(&nalus, crate::ingest::rtmp::flv::MAX_RTP_PAYLOAD);
    }
    // A whole session: a valid handshake prefix, then the fuzzed bytes as chunks.
    let mut session = crate::ingest::rtmp::session::ServerSession::new();
    let mut wire = vec![3u8];
    wire.extend(std::iter::repeat_n(
        0u8,
        2 * crate::ingest::rtmp::handshake::SIG_LEN,
    ));
    wire.extend_from_slice(data);
    let _ = session.feed(&wire, 0);
    if matches!(
        session.poll_event(),
        Some(crate::ingest::rtmp::session::SessionEvent::PublishRequested { .. })
    ) {
        session.accept_publish();
    }
    while session.poll_event().is_some() {}
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    const OFFER: &str = include_str!("../../tests/fixtures/obs_offer.sdp");
    const ITERATIONS: usize = 3000;

    /// A bounded, seeded mutation run of every target: what cargo-fuzz does, minus coverage
    /// guidance, so CI on stable Rust exercises them on every change.
    #[test]
    fn mutated_inputs_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x911e7);
        let seeds: [&[u8]; 9] = [
            b"_HLS_msn=2&_HLS_part=3",
            b"_HLS_msn=18446744073709551615&_HLS_part=18446744073709551615",
            b"seg-1-00002.5.m4s",
            OFFER.as_bytes(),
            &[
                0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
                12, 0x00, 0x06, 0x00, 0x03, b'a', b':', b'b', 0,
            ],
            &[0x7c, 0x85, 0x01, 0x02],
            &[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x01, 0x68],
            // An RTMP chunk carrying AMF0 `"publish", 5, null, "key"`.
            &[
                0x03, 0, 0, 0, 0, 0, 27, 0x14, 1, 0, 0, 0, 0x02, 0, 7, b'p', b'u', b'b', b'l',
                b'i', b's', b'h', 0x00, 0x40, 0x14, 0, 0, 0, 0, 0, 0, 0x05, 0x02, 0, 3, b'k', b'e',
                b'y',
            ],
            // x264's 640x360 High profile SPS (scaling matrices, cropping).
            &[
                0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00,
                0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2d, 0x96,
            ],
        ];
        for i in 0..ITERATIONS {
            let mut data = seeds[i % seeds.len()].to_vec();
            for _ in 0..rng.random_range(1..8) {
                match rng.random_range(0..4) {
                    0 if !data.is_empty() => {
                        let at = rng.random_range(0..data.len());
                        data[at] = rng.random();
                    }
                    1 if !data.is_empty() => {
                        let at = rng.random_range(0..data.len());
                        data.truncate(at);
                    }
                    2 => {
                        let at = rng.random_range(0..=data.len());
                        data.insert(at, rng.random());
                    }
                    _ => {
                        let at = rng.random_range(0..=data.len());
                        let line: &[u8] = [
                            b"\r\nm=video 9 UDP 96\r\n".as_slice(),
                            b"a=rtpmap:96 H264/x/y",
                            b"a=fmtp:",
                            b"\xff\xfe",
                        ][rng.random_range(0..4)];
                        data.splice(at..at, line.iter().copied());
                    }
                }
            }
            super::stun(&data);
            super::keyframe(&data);
            super::rtmp(&data);
            super::sps_probe(&data);
            super::hls_request(&data);
            if i % 10 == 0 {
                super::offer(&data);
                super::negotiated(&data);
            }
        }
    }
}
