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

/// `out[j] = Σ_i q_i · codes[j·len + i]` for every row `j` of the row-major `codes` (`len = q.len()`):
/// one call per inverted list, so the query's chunks are loaded once for four rows at a time.
pub(crate) fn dot_i8_rows(q: &[i8], codes: &[i8], out: &mut [i32]) {
    let n = q.len();
    assert_eq!(codes.len(), n * out.len(), "dot_i8_rows: shape");
    if n == 0 {
        out.fill(0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is available (checked just above) and the shapes were checked.
            return unsafe { dot_i8_rows_avx2(q, codes, out) };
        }
    }
    dot_i8_rows_scalar(q, codes, out);
}

/// Reference body of [`dot_i8_rows`] (also the fallback without AVX2); `q` is not empty.
fn dot_i8_rows_scalar(q: &[i8], codes: &[i8], out: &mut [i32]) {
    for (o, row) in out.iter_mut().zip(codes.chunks_exact(q.len())) {
        *o = dot_i8_scalar(q, row);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_i8_rows_avx2(q: &[i8], codes: &[i8], out: &mut [i32]) {
    use std::arch::x86_64::*;
    // SAFETY: see the loads below.
    unsafe {
        let n = q.len();
        let body = n - n % 32;
        let ones = _mm256_set1_epi16(1);
        let pq = q.as_ptr();
        let mut rows = out.len();
        let mut j = 0;
        // SAFETY (all loads): `i + 32 ≤ body ≤ n` and row `j + r < out.len()`, so every 32-byte load
        // lies inside `q` or inside row `j + r` of `codes` (`codes.len() = n · out.len()`).
        while rows >= 4 {
            let base = codes.as_ptr().add(j * n);
            let mut acc = [_mm256_setzero_si256(); 4];
            let mut i = 0;
            while i < body {
                let qv = _mm256_loadu_si256(pq.add(i) as *const __m256i);
                let qa = _mm256_sign_epi8(qv, qv);
                for (r, a) in acc.iter_mut().enumerate() {
                    let x = _mm256_loadu_si256(base.add(r * n + i) as *const __m256i);
                    let p = _mm256_maddubs_epi16(qa, _mm256_sign_epi8(x, qv));
                    *a = _mm256_add_epi32(*a, _mm256_madd_epi16(p, ones));
                }
                i += 32;
            }
            for (r, a) in acc.iter().enumerate() {
                let row = &codes[(j + r) * n..(j + r + 1) * n];
                out[j + r] = hsum_i32(*a) + dot_i8_scalar(&q[body..], &row[body..]);
            }
            j += 4;
            rows -= 4;
        }
        for r in j..out.len() {
            out[r] = dot_i8_avx2(q, &codes[r * n..(r + 1) * n]);
        }
    }
}

/// `out[j·m + r] = Σ_i qs[j·n + i] · codes[r·n + i]` for the `m = codes.len() / n` rows of `codes`
/// and the `qs.len() / n` queries of `qs` (both row-major, `n` wide; `out` query-major): one
/// inverted list against the group of queries that probe it, so each code row is loaded once for
/// several queries. Exact in `i32`, so every kernel returns the same numbers as [`dot_i8_scalar`].
pub(crate) fn dot_i8_block(qs: &[i8], codes: &[i8], n: usize, out: &mut [i32]) {
    assert!(n > 0, "dot_i8_block: width 0");
    assert!(
        qs.len().is_multiple_of(n) && codes.len().is_multiple_of(n),
        "dot_i8_block: shape"
    );
    let (g, m) = (qs.len() / n, codes.len() / n);
    assert_eq!(out.len(), g * m, "dot_i8_block: output shape");
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512vnni")
            && std::arch::is_x86_feature_detected!("avx512bw")
        {
            // SAFETY: the features are available (checked just above) and the shapes were checked.
            return unsafe { dot_i8_block_vnni(qs, codes, n, out) };
        }
    }
    for (q, o) in qs.chunks_exact(n).zip(out.chunks_exact_mut(m.max(1))) {
        dot_i8_rows(q, codes, o);
    }
}

/// Reference body of [`dot_i8_block`] (tests compare the fast path against it).
#[cfg(test)]
fn dot_i8_block_scalar(qs: &[i8], codes: &[i8], n: usize, out: &mut [i32]) {
    let m = codes.len() / n;
    for (j, q) in qs.chunks_exact(n).enumerate() {
        for (r, row) in codes.chunks_exact(n).enumerate() {
            out[j * m + r] = dot_i8_scalar(q, row);
        }
    }
}

/// [`dot_i8_block`] in tiles of up to 4 rows × 4 queries. `vpdpbusd` multiplies unsigned by
/// signed bytes, 64 per instruction with the four products of each lane summed into `i32` (no
/// saturation), so the rows are shifted into `u8` (`x + 128`, an `xor` per loaded row, shared by
/// the tile's queries) and `128 · Σ q` is subtracted at the end.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn dot_i8_block_vnni(qs: &[i8], codes: &[i8], n: usize, out: &mut [i32]) {
    let (g, m) = (qs.len() / n, codes.len() / n);
    let bias: Vec<i32> = qs
        .chunks_exact(n)
        .map(|q| 128 * q.iter().map(|&v| v as i32).sum::<i32>())
        .collect();
    let mut j = 0;
    while j < g {
        let mut r = 0;
        while r < m {
            // SAFETY: rows `r..r + R` of `codes` and queries `j..j + Q` of `qs` exist (`R ≤ m − r`,
            // `Q ≤ g − j`), and the tile writes `out[(j + b)·m + r + a]` for `a < R`, `b < Q` only.
            unsafe {
                match (m - r >= 4, g - j >= 4) {
                    (true, true) => vnni_tile::<4, 4>(qs, codes, n, j, r, m, out),
                    (true, false) => vnni_tile::<4, 1>(qs, codes, n, j, r, m, out),
                    (false, true) => vnni_tile::<1, 4>(qs, codes, n, j, r, m, out),
                    (false, false) => vnni_tile::<1, 1>(qs, codes, n, j, r, m, out),
                }
            }
            r += if m - r >= 4 { 4 } else { 1 };
        }
        j += if g - j >= 4 { 4 } else { 1 };
    }
    for (o, b) in out.chunks_exact_mut(m.max(1)).zip(&bias) {
        o.iter_mut().for_each(|v| *v -= b);
    }
}

/// One tile of [`dot_i8_block_vnni`]: rows `r..r + R` against queries `j..j + Q`, without the bias.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn vnni_tile<const R: usize, const Q: usize>(
    qs: &[i8],
    codes: &[i8],
    n: usize,
    j: usize,
    r: usize,
    m: usize,
    out: &mut [i32],
) {
    use std::arch::x86_64::*;
    let flip = _mm512_set1_epi8(i8::MIN);
    let body = n - n % 64;
    let tail: __mmask64 = (1u64 << (n % 64)).wrapping_sub(1);
    let pq = qs.as_ptr().wrapping_add(j * n);
    let pc = codes.as_ptr().wrapping_add(r * n);
    let mut acc = [[_mm512_setzero_si512(); Q]; R];
    let mut i = 0;
    // SAFETY (all loads): `i + 64 ≤ body ≤ n` for the full loads; the tail loads are masked to the
    // `n % 64` bytes left; query `b < Q` and row `a < R` lie inside `qs` / `codes` (caller).
    unsafe {
        while i < body {
            let mut qv = [_mm512_setzero_si512(); Q];
            for (b, v) in qv.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(pq.add(b * n + i) as *const _);
            }
            for (a, row) in acc.iter_mut().enumerate() {
                let x = _mm512_xor_si512(_mm512_loadu_si512(pc.add(a * n + i) as *const _), flip);
                for (b, v) in row.iter_mut().enumerate() {
                    *v = _mm512_dpbusd_epi32(*v, x, qv[b]);
                }
            }
            i += 64;
        }
        if body < n {
            // Masked-off bytes load as 0: the query's are 0, so the row's (`0 ^ 128`) add nothing.
            let mut qv = [_mm512_setzero_si512(); Q];
            for (b, v) in qv.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_epi8(tail, pq.add(b * n + body));
            }
            for (a, row) in acc.iter_mut().enumerate() {
                let x = _mm512_xor_si512(_mm512_maskz_loadu_epi8(tail, pc.add(a * n + body)), flip);
                for (b, v) in row.iter_mut().enumerate() {
                    *v = _mm512_dpbusd_epi32(*v, x, qv[b]);
                }
            }
        }
    }
    for b in 0..Q {
        let o = (j + b) * m + r;
        if R == 4 {
            let s = hsum4_512(acc[0][b], acc[1][b], acc[2][b], acc[3][b]);
            // SAFETY: `o + 4 ≤ (j + b)·m + m ≤ out.len()` since `r + 4 ≤ m`.
            unsafe { _mm_storeu_si128(out.as_mut_ptr().add(o) as *mut __m128i, s) };
        } else {
            for a in 0..R {
                out[o + a] = _mm512_reduce_add_epi32(acc[a][b]);
            }
        }
    }
}

/// The four lane sums of `a, b, c, d` in one vector, in that order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
fn hsum4_512(
    a: std::arch::x86_64::__m512i,
    b: std::arch::x86_64::__m512i,
    c: std::arch::x86_64::__m512i,
    d: std::arch::x86_64::__m512i,
) -> std::arch::x86_64::__m128i {
    use std::arch::x86_64::*;
    let half =
        |v: __m512i| _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v));
    let ab = _mm256_hadd_epi32(half(a), half(b));
    let cd = _mm256_hadd_epi32(half(c), half(d));
    let abcd = _mm256_hadd_epi32(ab, cd);
    _mm_add_epi32(
        _mm256_castsi256_si128(abcd),
        _mm256_extracti128_si256::<1>(abcd),
    )
}

/// Reference body (also the fallback without AVX2).
pub(crate) fn dot_i8_scalar(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

/// `a·b = Σ |a_i| · (sign(a_i) · b_i)`: `maddubs` multiplies 32 unsigned × signed bytes per
/// instruction (pairs summed into `i16`, at most `2 · 127² < 2¹⁵`, so never saturating for codes in
/// `[−127, 127]`), then `madd` with ones widens the pairs into `i32` lanes. Twice the bytes per
/// instruction of sign-extending to `i16` first.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
    use std::arch::x86_64::*;
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let ones = _mm256_set1_epi16(1);
    let mut acc0 = _mm256_setzero_si256();
    let mut acc1 = _mm256_setzero_si256();
    let mut i = 0;
    // SAFETY (all loads): `i + 64 ≤ n` or `i + 32 ≤ n` holds at each unaligned 32-byte load.
    while i + 64 <= n {
        unsafe {
            let a0 = _mm256_loadu_si256(pa.add(i) as *const __m256i);
            let b0 = _mm256_loadu_si256(pb.add(i) as *const __m256i);
            let a1 = _mm256_loadu_si256(pa.add(i + 32) as *const __m256i);
            let b1 = _mm256_loadu_si256(pb.add(i + 32) as *const __m256i);
            let p0 = _mm256_maddubs_epi16(_mm256_sign_epi8(a0, a0), _mm256_sign_epi8(b0, a0));
            let p1 = _mm256_maddubs_epi16(_mm256_sign_epi8(a1, a1), _mm256_sign_epi8(b1, a1));
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(p0, ones));
            acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(p1, ones));
        }
        i += 64;
    }
    if i + 32 <= n {
        unsafe {
            let a0 = _mm256_loadu_si256(pa.add(i) as *const __m256i);
            let b0 = _mm256_loadu_si256(pb.add(i) as *const __m256i);
            let p0 = _mm256_maddubs_epi16(_mm256_sign_epi8(a0, a0), _mm256_sign_epi8(b0, a0));
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(p0, ones));
        }
        i += 32;
    }
    hsum_i32(_mm256_add_epi32(acc0, acc1)) + dot_i8_scalar(&a[i..], &b[i..])
}

/// Sum of the eight `i32` lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn hsum_i32(v: std::arch::x86_64::__m256i) -> i32 {
    use std::arch::x86_64::*;
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_hadd_epi32(s, s);
    _mm_cvtsi128_si32(_mm_hadd_epi32(s, s))
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
        for n in [0usize, 5, 32, 100, 768] {
            for rows in 0..7 {
                let q: Vec<i8> = (0..n)
                    .map(|_| (rng.below(255) as i32 - 127) as i8)
                    .collect();
                let codes: Vec<i8> = (0..n * rows)
                    .map(|_| (rng.below(255) as i32 - 127) as i8)
                    .collect();
                let mut out = vec![-1i32; rows];
                dot_i8_rows(&q, &codes, &mut out);
                for (r, &o) in out.iter().enumerate() {
                    assert_eq!(
                        o,
                        dot_i8_scalar(&q, &codes[r * n..(r + 1) * n]),
                        "n={n} r={r}"
                    );
                }
            }
        }
        let a = vec![127i8; 1000];
        let b = vec![-127i8; 1000];
        assert_eq!(dot_i8(&a, &b), -127 * 127 * 1000);
    }

    #[test]
    fn block_dot_matches_reference_for_every_shape() {
        let mut rng = SeededRng::new(11);
        let mut codes = |len: usize| -> Vec<i8> {
            (0..len)
                .map(|_| (rng.below(255) as i32 - 127) as i8)
                .collect()
        };
        for n in [1usize, 5, 63, 64, 65, 100, 256, 300] {
            for g in 0..7 {
                for m in 0..10 {
                    let (q, c) = (codes(g * n), codes(m * n));
                    let mut fast = vec![-1i32; g * m];
                    let mut slow = vec![-2i32; g * m];
                    dot_i8_block(&q, &c, n, &mut fast);
                    dot_i8_block_scalar(&q, &c, n, &mut slow);
                    assert_eq!(fast, slow, "n={n} g={g} m={m}");
                }
            }
        }
        // Extremes: ±127 everywhere (the u8 shift must not overflow anything).
        let (q, c) = (vec![-127i8; 4 * 256], vec![127i8; 5 * 256]);
        let mut out = vec![0i32; 20];
        dot_i8_block(&q, &c, 256, &mut out);
        assert!(out.iter().all(|&v| v == -127 * 127 * 256));
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
