//! A seeded 64-bit hash of byte strings, stable across platforms and Rust versions.
//!
//! FNV-1a over the bytes (seeded through its offset basis) followed by the SplitMix64 finalizer, so
//! nearby strings land in unrelated buckets. Not cryptographic: collisions only add noise to an
//! embedding, they are never a correctness issue.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// SplitMix64's output mix: a bijection on `u64` with full avalanche.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hash of `parts` concatenated, under `seed`. `kind` separates feature namespaces (a word and a
/// char-gram with the same bytes hash differently).
#[inline]
pub fn hash_parts(seed: u64, kind: u8, parts: &[&[u8]]) -> u64 {
    let mut h = FNV_OFFSET ^ mix64(seed);
    h = (h ^ u64::from(kind)).wrapping_mul(FNV_PRIME);
    for part in parts {
        for &b in *part {
            h = (h ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
        // A separator so ("ab", "c") and ("a", "bc") differ.
        h = (h ^ 0xff).wrapping_mul(FNV_PRIME);
    }
    mix64(h)
}

/// The bucket in `0..dim` and the sign (±1) a feature hash contributes to. The bucket uses the
/// high product (unbiased for any `dim`), the sign an independent bit.
#[inline]
pub fn bucket_sign(h: u64, dim: usize) -> (usize, f32) {
    let bucket = ((u128::from(h) * dim as u128) >> 64) as usize;
    let sign = if h & 1 == 0 { 1.0 } else { -1.0 };
    (bucket, sign)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_kind_and_part_boundaries_change_the_hash() {
        assert_eq!(hash_parts(0, 0, &[b"abc"]), hash_parts(0, 0, &[b"abc"]));
        assert_ne!(hash_parts(0, 0, &[b"abc"]), hash_parts(1, 0, &[b"abc"]));
        assert_ne!(hash_parts(0, 0, &[b"abc"]), hash_parts(0, 1, &[b"abc"]));
        assert_ne!(
            hash_parts(0, 0, &[b"ab", b"c"]),
            hash_parts(0, 0, &[b"a", b"bc"])
        );
    }

    #[test]
    fn buckets_cover_the_range() {
        let dim = 7;
        let mut seen = [0usize; 7];
        for i in 0u64..7000 {
            let (b, s) = bucket_sign(mix64(i), dim);
            assert!(b < dim);
            assert!(s == 1.0 || s == -1.0);
            seen[b] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
    }
}
