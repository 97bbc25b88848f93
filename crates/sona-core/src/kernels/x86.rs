//! AVX2 + FMA bodies. Every function here is `unsafe` because it must only run on a CPU with both
//! features; the dispatcher in `kernels` checks that once per call (a cached atomic load in `std`).

use std::arch::x86_64::*;

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps::<1>(v);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

/// # Safety
/// The CPU must support AVX2 and FMA; `a` and `b` must have equal length.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut i = 0;
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut acc2 = _mm256_setzero_ps();
    let mut acc3 = _mm256_setzero_ps();
    // SAFETY (all loads): i + 32 <= n, resp. i + 8 <= n, keeps every load inside both slices.
    unsafe {
        while i + 32 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
                acc1,
            );
            acc2 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 16)),
                _mm256_loadu_ps(pb.add(i + 16)),
                acc2,
            );
            acc3 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 24)),
                _mm256_loadu_ps(pb.add(i + 24)),
                acc3,
            );
            i += 32;
        }
        while i + 8 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            i += 8;
        }
    }
    let acc = _mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3));
    // SAFETY: same target features as this function.
    let mut s = unsafe { hsum(acc) };
    while i < n {
        s += a[i] * b[i];
        i += 1;
    }
    s
}

/// # Safety
/// The CPU must support AVX2 and FMA; `a` and `b` must have equal length.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot3(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut i = 0;
    let (mut ab0, mut aa0, mut bb0) = (
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
    );
    let (mut ab1, mut aa1, mut bb1) = (
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
    );
    // SAFETY: loads stay inside both slices (see `dot`).
    unsafe {
        while i + 16 <= n {
            let x0 = _mm256_loadu_ps(pa.add(i));
            let y0 = _mm256_loadu_ps(pb.add(i));
            let x1 = _mm256_loadu_ps(pa.add(i + 8));
            let y1 = _mm256_loadu_ps(pb.add(i + 8));
            ab0 = _mm256_fmadd_ps(x0, y0, ab0);
            aa0 = _mm256_fmadd_ps(x0, x0, aa0);
            bb0 = _mm256_fmadd_ps(y0, y0, bb0);
            ab1 = _mm256_fmadd_ps(x1, y1, ab1);
            aa1 = _mm256_fmadd_ps(x1, x1, aa1);
            bb1 = _mm256_fmadd_ps(y1, y1, bb1);
            i += 16;
        }
        while i + 8 <= n {
            let x0 = _mm256_loadu_ps(pa.add(i));
            let y0 = _mm256_loadu_ps(pb.add(i));
            ab0 = _mm256_fmadd_ps(x0, y0, ab0);
            aa0 = _mm256_fmadd_ps(x0, x0, aa0);
            bb0 = _mm256_fmadd_ps(y0, y0, bb0);
            i += 8;
        }
    }
    // SAFETY: same target features as this function.
    let (mut ab, mut aa, mut bb) = unsafe {
        (
            hsum(_mm256_add_ps(ab0, ab1)),
            hsum(_mm256_add_ps(aa0, aa1)),
            hsum(_mm256_add_ps(bb0, bb1)),
        )
    };
    while i < n {
        ab += a[i] * b[i];
        aa += a[i] * a[i];
        bb += b[i] * b[i];
        i += 1;
    }
    (ab, aa, bb)
}

/// # Safety
/// The CPU must support AVX2 and FMA; `x` and `y` must have equal length.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let va = _mm256_set1_ps(alpha);
    let mut i = 0;
    // SAFETY: i + 16 <= n (resp. 8) keeps loads and stores inside both slices.
    unsafe {
        while i + 16 <= n {
            let y0 = _mm256_fmadd_ps(va, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
            let y1 = _mm256_fmadd_ps(
                va,
                _mm256_loadu_ps(px.add(i + 8)),
                _mm256_loadu_ps(py.add(i + 8)),
            );
            _mm256_storeu_ps(py.add(i), y0);
            _mm256_storeu_ps(py.add(i + 8), y1);
            i += 16;
        }
        while i + 8 <= n {
            let y0 = _mm256_fmadd_ps(va, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
            _mm256_storeu_ps(py.add(i), y0);
            i += 8;
        }
    }
    while i < n {
        y[i] += alpha * x[i];
        i += 1;
    }
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn scale(alpha: f32, x: &mut [f32]) {
    let n = x.len();
    let px = x.as_mut_ptr();
    let va = _mm256_set1_ps(alpha);
    let mut i = 0;
    // SAFETY: i + 8 <= n keeps loads and stores inside the slice.
    unsafe {
        while i + 8 <= n {
            _mm256_storeu_ps(px.add(i), _mm256_mul_ps(va, _mm256_loadu_ps(px.add(i))));
            i += 8;
        }
    }
    while i < n {
        x[i] *= alpha;
        i += 1;
    }
}

/// # Safety
/// The CPU must support AVX2; `src` and `dst` must have equal length.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn copy(src: &[f32], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let (ps, pd) = (src.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    // SAFETY: i + 16 <= n (resp. 8) keeps loads and stores inside both slices.
    unsafe {
        while i + 16 <= n {
            let a = _mm256_loadu_ps(ps.add(i));
            let b = _mm256_loadu_ps(ps.add(i + 8));
            _mm256_storeu_ps(pd.add(i), a);
            _mm256_storeu_ps(pd.add(i + 8), b);
            i += 16;
        }
        while i + 8 <= n {
            _mm256_storeu_ps(pd.add(i), _mm256_loadu_ps(ps.add(i)));
            i += 8;
        }
    }
    dst[i..n].copy_from_slice(&src[i..n]);
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn all_finite(x: &[f32]) -> bool {
    super::portable::all_finite(x)
}

/// `e^x` on 8 lanes, `x` clamped to `[-87, 88]` (so `2^n` stays a normal `f32`; NaN becomes -87,
/// the callers put NaN back): Cephes' `expf` — `x = n ln 2 + r` with `ln 2` in two parts, a
/// degree-7 polynomial in `r` (≤ 1 ulp), `2^n` built in the exponent bits.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp8(x: __m256) -> __m256 {
    let x = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(-87.0)),
        _mm256_set1_ps(88.0),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let p = _mm256_fmadd_ps(
        p,
        _mm256_mul_ps(r, r),
        _mm256_add_ps(r, _mm256_set1_ps(1.0)),
    );
    let pow2n = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    )));
    _mm256_mul_ps(p, pow2n)
}

/// NaN lanes of `x` carried into `y`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn keep_nan(x: __m256, y: __m256) -> __m256 {
    _mm256_blendv_ps(y, x, _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x))
}

/// `σ(x) = 1 / (1 + e^{−x})` on 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn sigmoid8(x: __m256) -> __m256 {
    let one = _mm256_set1_ps(1.0);
    // SAFETY: same target features as this function.
    unsafe {
        let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
        keep_nan(x, _mm256_div_ps(one, _mm256_add_ps(one, e)))
    }
}

/// `tanh x` on 8 lanes: Cephes' `tanhf` — `x + x³ P(x²)` below `|x| = 0.625`, else
/// `sign(x) (1 − 2 / (e^{2|x|} + 1))` (no cancellation there: the result is above 0.55).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tanh8(x: __m256) -> __m256 {
    let one = _mm256_set1_ps(1.0);
    let sign = _mm256_set1_ps(-0.0);
    let ax = _mm256_andnot_ps(sign, x);
    let z = _mm256_mul_ps(x, x);
    let mut p = _mm256_set1_ps(-5.704_988_7e-3);
    for c in [2.063_909e-2, -5.373_971_6e-2, 0.133_314_42, -0.333_332_8] {
        p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(c));
    }
    // Both branches on |x|, the sign put back at the end (so tanh(−0) = −0).
    let small = _mm256_fmadd_ps(_mm256_mul_ps(p, z), ax, ax);
    // SAFETY: same target features as this function.
    let e = unsafe { exp8(_mm256_add_ps(ax, ax)) };
    let large = _mm256_sub_ps(
        one,
        _mm256_div_ps(_mm256_set1_ps(2.0), _mm256_add_ps(e, one)),
    );
    let is_small = _mm256_cmp_ps::<_CMP_LT_OQ>(ax, _mm256_set1_ps(0.625));
    let y = _mm256_or_ps(
        _mm256_blendv_ps(large, small, is_small),
        _mm256_and_ps(sign, x),
    );
    // SAFETY: same target features as this function.
    unsafe { keep_nan(x, y) }
}

/// [`tanh8`] (`TANH`) or [`sigmoid8`] over `x` in place, 8 lanes at a time; the tail goes through
/// the same body (padded), so every element gets the same function whatever its position.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn map8<const TANH: bool>(x: &mut [f32]) {
    // SAFETY: same target features as this function.
    let f = |v| unsafe {
        if TANH {
            tanh8(v)
        } else {
            sigmoid8(v)
        }
    };
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        // SAFETY: `c` holds exactly 8 values.
        unsafe { _mm256_storeu_ps(c.as_mut_ptr(), f(_mm256_loadu_ps(c.as_ptr()))) };
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let mut buf = [0.0f32; 8];
        buf[..rest.len()].copy_from_slice(rest);
        // SAFETY: `buf` holds 8 values.
        unsafe { _mm256_storeu_ps(buf.as_mut_ptr(), f(_mm256_loadu_ps(buf.as_ptr()))) };
        rest.copy_from_slice(&buf[..rest.len()]);
    }
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn sigmoid(x: &mut [f32]) {
    // SAFETY: same target features.
    unsafe { map8::<false>(x) }
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn tanh(x: &mut [f32]) {
    // SAFETY: same target features.
    unsafe { map8::<true>(x) }
}

/// `y += Mᵀ x` for rows of `cols < 16` values (`m` is `x.len() × cols`), rounding exactly as one
/// [`axpy`] per row: fused multiply-add over the first multiple of 8 columns, multiply then add
/// on the rest.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `m` holds `x.len()` rows of `cols = y.len()` values.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn matvec_t_narrow(m: &[f32], cols: usize, x: &[f32], y: &mut [f32]) {
    debug_assert!(cols < 16 && y.len() == cols);
    // The first 8 columns (when there are 8) stay in one register across the rows.
    let fused = cols / 8 * 8;
    let (yv, yt) = y.split_at_mut(fused);
    // SAFETY: `yv` holds `fused` = 0 or 8 values and is read only in the second case.
    let mut acc = if fused == 8 {
        unsafe { _mm256_loadu_ps(yv.as_ptr()) }
    } else {
        _mm256_setzero_ps()
    };
    for (&xi, row) in x.iter().zip(m.chunks_exact(cols)) {
        if xi != 0.0 {
            let (rv, rt) = row.split_at(fused);
            if fused == 8 {
                // SAFETY: `rv` holds 8 values.
                let r = unsafe { _mm256_loadu_ps(rv.as_ptr()) };
                acc = _mm256_fmadd_ps(_mm256_set1_ps(xi), r, acc);
            }
            for (yj, rj) in yt.iter_mut().zip(rt) {
                *yj += xi * rj;
            }
        }
    }
    if fused == 8 {
        // SAFETY: `yv` holds 8 values.
        unsafe { _mm256_storeu_ps(yv.as_mut_ptr(), acc) };
    }
}
