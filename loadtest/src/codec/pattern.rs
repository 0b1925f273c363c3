//! The verification pattern carried by every synthetic RTP payload: an 8-byte big-endian
//! packet counter followed by filler derived from it, so a receiver can prove that the
//! bytes it got are the bytes the publisher wrote.

/// Bytes taken by the counter at the start of every pattern.
pub const COUNTER_LEN: usize = 8;

/// Filler byte used where the derivation would produce zero.
///
/// Filler is never zero so that the only zero runs in a pattern are inside the counter:
/// H.264 emulation prevention then adds at most a few bytes, and a pattern never ends in
/// 0x00, which could join the next FU-A fragment's leading zeros into a start code.
const NONZERO_SUBSTITUTE: u8 = 0xa5;

/// Why a received pattern does not match what a publisher would have sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternError {
    /// Fewer bytes than the counter needs.
    TooShort { len: usize },
    /// A filler byte differs from the one derived from the counter.
    Filler { counter: u64, offset: usize },
}

/// Appends the pattern for `counter`, `len` bytes long (at least [`COUNTER_LEN`]).
pub fn write(counter: u64, len: usize, out: &mut Vec<u8>) {
    let len = len.max(COUNTER_LEN);
    out.reserve(len);
    out.extend_from_slice(&counter.to_be_bytes());
    let seed = mix(counter);
    out.extend((COUNTER_LEN..len).map(|offset| filler(seed, offset)));
}

/// The pattern for `counter`, `len` bytes long (at least [`COUNTER_LEN`]).
pub fn encode(counter: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len.max(COUNTER_LEN));
    write(counter, len, &mut out);
    out
}

/// Checks a received pattern and returns the counter it carries.
pub fn verify(bytes: &[u8]) -> Result<u64, PatternError> {
    let Some((counter, rest)) = bytes.split_first_chunk::<COUNTER_LEN>() else {
        return Err(PatternError::TooShort { len: bytes.len() });
    };
    let counter = u64::from_be_bytes(*counter);
    let seed = mix(counter);
    for (index, &byte) in rest.iter().enumerate() {
        let offset = COUNTER_LEN + index;
        if byte != filler(seed, offset) {
            return Err(PatternError::Filler { counter, offset });
        }
    }
    Ok(counter)
}

/// SplitMix64 finaliser: spreads consecutive counters into unrelated filler.
fn mix(counter: u64) -> u64 {
    let mut z = counter.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn filler(seed: u64, offset: usize) -> u8 {
    let rotation = ((offset * 8) % 64) as u32;
    let byte = (seed.rotate_left(rotation) as u8).wrapping_add(offset as u8);
    if byte == 0 {
        NONZERO_SUBSTITUTE
    } else {
        byte
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_counter_and_length() {
        for counter in [0, 1, 255, 65_536, u64::MAX] {
            let bytes = encode(counter, 100);
            assert_eq!(bytes.len(), 100);
            assert_eq!(&bytes[..8], &counter.to_be_bytes());
            assert_eq!(verify(&bytes), Ok(counter));
        }
    }

    #[test]
    fn short_lengths_still_carry_the_counter() {
        let bytes = encode(7, 3);
        assert_eq!(bytes, 7u64.to_be_bytes());
        assert_eq!(verify(&bytes), Ok(7));
        assert_eq!(verify(&bytes[..5]), Err(PatternError::TooShort { len: 5 }));
    }

    #[test]
    fn filler_is_never_zero_and_differs_between_counters() {
        let a = encode(41, 1200);
        let b = encode(42, 1200);
        assert!(a[COUNTER_LEN..].iter().all(|&x| x != 0));
        let differing = a[COUNTER_LEN..]
            .iter()
            .zip(&b[COUNTER_LEN..])
            .filter(|(x, y)| x != y)
            .count();
        assert!(differing > 1000, "only {differing} filler bytes differ");
    }

    #[test]
    fn detects_a_flipped_byte_and_a_wrong_counter() {
        let mut bytes = encode(1234, 64);
        bytes[40] ^= 0x01;
        assert_eq!(
            verify(&bytes),
            Err(PatternError::Filler {
                counter: 1234,
                offset: 40
            })
        );

        let mut bytes = encode(1234, 64);
        bytes[7] = 0xd3; // counter now 1235-ish: filler no longer matches
        assert!(matches!(verify(&bytes), Err(PatternError::Filler { .. })));
    }

    #[test]
    fn appends_without_touching_existing_bytes() {
        let mut out = vec![0x65];
        write(9, 20, &mut out);
        assert_eq!(out[0], 0x65);
        assert_eq!(verify(&out[1..]), Ok(9));
    }
}
