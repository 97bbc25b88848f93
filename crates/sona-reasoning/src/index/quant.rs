//! Symmetric 8-bit scalar quantisation of unit vectors, used by the HNSW graph walk.
//!
//! A graph search scores hundreds of vectors scattered over memory, so at d = 768 it is bound by
//! memory traffic, not arithmetic: an `i8` copy of each vector is 4× smaller than the `f32` one (a
//! 10k × 768 set then fits in the last-level cache). The walk ranks by the quantised inner product;
//! the final candidates are re-scored with the exact `f32` vectors, so returned similarities are exact.
//!
//! `x ≈ scale · code` with `scale = max|x_i| / 127`, so `⟨x, y⟩ ≈ scale_x · scale_y · Σ code_x · code_y`;
//! the rounding error per coordinate is at most `scale / 2`.

/// Writes the codes of `x` into `out` and returns the scale (0 for the zero vector).
pub(crate) fn quantize(x: &[f32], out: &mut [i8]) -> f32 {
    assert_eq!(x.len(), out.len(), "quantize: length");
    let max = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if max == 0.0 {
        out.fill(0);
        return 0.0;
    }
    let inv = 127.0 / max;
    for (o, &v) in out.iter_mut().zip(x) {
        // Round half away from zero without a libm call (`f32::round` is one without SSE4.1).
        let r = (v * inv).clamp(-127.0, 127.0);
        *o = (r + 0.5f32.copysign(r)) as i8;
    }
    max / 127.0
}

/// `Σ a_i b_i` over `i8` codes, exact in `i32` (|Σ| ≤ 127² · len, no overflow below 133k dims).
#[inline]
pub(crate) fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    assert_eq!(a.len(), b.len(), "dot_i8: length");
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is available (checked just above) and the lengths are equal.
            return unsafe { dot_i8_avx2(a, b) };
        }
    }
    dot_i8_scalar(a, b)
}

/// Reference body (also the fallback without AVX2).
pub(crate) fn dot_i8_scalar(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

/// Sign-extends 16 codes at a time to `i16` and multiplies-adds pairs into `i32` lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
    use std::arch::x86_64::*;
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc0 = _mm256_setzero_si256();
    let mut acc1 = _mm256_setzero_si256();
    let mut i = 0;
    // SAFETY (all loads): `i + 16 ≤ n` or `i + 32 ≤ n` holds at each unaligned 16-byte load.
    while i + 32 <= n {
        unsafe {
            let a0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pa.add(i) as *const __m128i));
            let b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pb.add(i) as *const __m128i));
            let a1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pa.add(i + 16) as *const __m128i));
            let b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pb.add(i + 16) as *const __m128i));
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(a0, b0));
            acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(a1, b1));
        }
        i += 32;
    }
    if i + 16 <= n {
        unsafe {
            let a0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pa.add(i) as *const __m128i));
            let b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pb.add(i) as *const __m128i));
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(a0, b0));
        }
        i += 16;
    }
    let acc = _mm256_add_epi32(acc0, acc1);
    let s = _mm_add_epi32(
        _mm256_castsi256_si128(acc),
        _mm256_extracti128_si256::<1>(acc),
    );
    let s = _mm_hadd_epi32(s, s);
    let s = _mm_hadd_epi32(s, s);
    _mm_cvtsi128_si32(s) + dot_i8_scalar(&a[i..], &b[i..])
}

/// Writes the sign bits of `x` (bit `i` of word `i / 64` set when `x_i > 0`) into `out`
/// (`⌈len / 64⌉` words; the padding bits stay 0).
pub(crate) fn sign_bits(x: &[f32], out: &mut [u64]) {
    assert_eq!(out.len(), x.len().div_ceil(64), "sign_bits: length");
    for (o, chunk) in out.iter_mut().zip(x.chunks(64)) {
        // Branch-free: the signs of a query are unpredictable.
        *o = chunk
            .iter()
            .enumerate()
            .fold(0u64, |w, (j, &v)| w | ((v > 0.0) as u64) << j);
    }
}

/// Hamming distance between two sign codes: the number of coordinates whose signs differ.
#[inline]
pub(crate) fn hamming(a: &[u64], b: &[u64]) -> u32 {
    assert_eq!(a.len(), b.len(), "hamming: length");
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: POPCNT is available (checked just above) and the lengths are equal.
            return unsafe { hamming_popcnt(a, b) };
        }
    }
    hamming_scalar(a, b)
}

#[inline(always)]
fn hamming_scalar(a: &[u64], b: &[u64]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
unsafe fn hamming_popcnt(a: &[u64], b: &[u64]) -> u32 {
    hamming_scalar(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sona_core::{kernels, SeededRng};

    #[test]
    fn fast_dot_matches_reference_for_every_tail_length() {
        let mut rng = SeededRng::new(9);
        for n in 0..100 {
            let a: Vec<i8> = (0..n)
                .map(|_| (rng.below(255) as i32 - 127) as i8)
                .collect();
            let b: Vec<i8> = (0..n)
                .map(|_| (rng.below(255) as i32 - 127) as i8)
                .collect();
            assert_eq!(dot_i8(&a, &b), dot_i8_scalar(&a, &b), "n = {n}");
        }
        let a = vec![127i8; 1000];
        let b = vec![-127i8; 1000];
        assert_eq!(dot_i8(&a, &b), -127 * 127 * 1000);
    }

    #[test]
    fn quantised_inner_product_is_close_to_exact() {
        let mut rng = SeededRng::new(3);
        for d in [16, 256, 768] {
            let (mut x, mut y) = (vec![0.0f32; d], vec![0.0f32; d]);
            rng.fill_normal(&mut x, 1.0);
            rng.fill_normal(&mut y, 1.0);
            kernels::normalize(&mut x);
            kernels::axpy(2.0, &x.clone(), &mut y);
            kernels::normalize(&mut y);
            let (mut cx, mut cy) = (vec![0i8; d], vec![0i8; d]);
            let (sx, sy) = (quantize(&x, &mut cx), quantize(&y, &mut cy));
            let approx = dot_i8(&cx, &cy) as f32 * sx * sy;
            let exact = kernels::dot(&x, &y);
            assert!((approx - exact).abs() < 5e-3, "d={d}: {approx} vs {exact}");
        }
        let mut z = [0i8; 4];
        assert_eq!(quantize(&[0.0; 4], &mut z), 0.0);
    }

    #[test]
    fn sign_codes_estimate_the_angle() {
        let mut rng = SeededRng::new(5);
        let d = 768;
        for target in [0.0f32, 0.5, 0.9] {
            let mut x = vec![0.0f32; d];
            let mut g = vec![0.0f32; d];
            rng.fill_normal(&mut x, 1.0);
            rng.fill_normal(&mut g, 1.0);
            kernels::normalize(&mut x);
            kernels::normalize(&mut g);
            // y = target·x + sqrt(1 − target²)·g (g almost orthogonal to x).
            let mut y: Vec<f32> = x.iter().map(|v| v * target).collect();
            kernels::axpy((1.0 - target * target).sqrt(), &g, &mut y);
            kernels::normalize(&mut y);
            let (mut bx, mut by) = (vec![0u64; 12], vec![0u64; 12]);
            sign_bits(&x, &mut bx);
            sign_bits(&y, &mut by);
            let h = hamming(&bx, &by);
            assert_eq!(h, hamming_scalar(&bx, &by));
            let est = (std::f32::consts::PI * h as f32 / d as f32).cos();
            let exact = kernels::dot(&x, &y);
            assert!((est - exact).abs() < 0.15, "{est} vs {exact}");
        }
        let mut b = [0u64; 1];
        sign_bits(&[1.0, -1.0, 0.0, 2.0], &mut b);
        assert_eq!(b[0], 0b1001);
    }
}
