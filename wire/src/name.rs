//! Field names compared as HTTP compares them: ASCII letters in either
//! case, a word of eight bytes at a time. Proxying looks names up all the
//! time (framing, hop-by-hop, hidden names), and the byte-at-a-time
//! `eq_ignore_ascii_case` spent a dozen instructions on each letter.
//!
//! nginx counterpart: the lower-cased copy of each name its parser makes
//! (`h->lowcase_key`) for its hash lookups.

/// Eight bytes, one per lane.
const LANES: u64 = 0x0101_0101_0101_0101;

/// `word`'s bytes `A` to `Z` lower-cased, every other byte as it is: a
/// lane is upper case when its low seven bits are at least `A` and not
/// past `Z`, and its top bit is clear. No lane carries into the next.
#[inline(always)]
fn lower(word: u64) -> u64 {
    let low7 = word & (0x7f * LANES);
    let from_a = low7 + (0x80 - u64::from(b'A')) * LANES;
    let past_z = low7 + (0x80 - u64::from(b'Z') - 1) * LANES;
    let upper = from_a & !past_z & !word & (0x80 * LANES);
    word | (upper >> 2)
}

/// Eight bytes of `b` from `at` (which leaves eight) as a word.
#[inline(always)]
fn word(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Whether `a` and `b` are the same ignoring ASCII case: exactly
/// `a.eq_ignore_ascii_case(b)`.
#[inline(always)]
pub fn same_name(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 4 {
        return a.eq_ignore_ascii_case(b);
    }
    if n < 8 {
        // The first four bytes and the last four, overlapping, as a word.
        let halves = |s: &[u8]| {
            let (mut first, mut last) = ([0u8; 4], [0u8; 4]);
            first.copy_from_slice(&s[..4]);
            last.copy_from_slice(&s[n - 4..]);
            u64::from(u32::from_le_bytes(first)) | u64::from(u32::from_le_bytes(last)) << 32
        };
        return lower(halves(a)) == lower(halves(b));
    }
    // Whole words, the last one overlapping the one before it.
    let mut at = 0;
    while at + 8 < n {
        if lower(word(a, at)) != lower(word(b, at)) {
            return false;
        }
        at += 8;
    }
    lower(word(a, n - 8)) == lower(word(b, n - 8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_pair_compares_as_eq_ignore_ascii_case_does() {
        // Each pair of bytes, in each lane of a word and in a short name.
        for x in 0..=255u8 {
            for y in 0..=255u8 {
                let want = x.eq_ignore_ascii_case(&y);
                for lane in 0..9 {
                    let mut a = *b"content-length";
                    let mut b = *b"CONTENT-LENGTH";
                    a[lane] = x;
                    b[lane] = y;
                    assert_eq!(same_name(&a, &b), want, "{x:#x} {y:#x} in lane {lane}");
                }
                assert_eq!(same_name(&[x, b'a'], &[y, b'A']), want);
                assert_eq!(
                    same_name(&[b'e', x, b'a', b'g', b'z'], &[b'E', y, b'A', b'G', b'Z']),
                    want
                );
            }
        }
    }

    #[test]
    fn names_of_every_length_match_only_themselves() {
        let long = b"X-Accel-Buffering-And-Then-Some-More-Bytes";
        for n in 0..long.len() {
            let a = &long[..n];
            let lower = a.to_ascii_lowercase();
            assert!(same_name(a, &lower), "{n}");
            assert!(!same_name(a, &long[..n + 1]), "{n}");
            for i in 0..n {
                let mut other = lower.clone();
                other[i] ^= 0x01;
                assert_eq!(
                    same_name(a, &other),
                    a.eq_ignore_ascii_case(&other),
                    "{n} {i}"
                );
            }
        }
    }
}
