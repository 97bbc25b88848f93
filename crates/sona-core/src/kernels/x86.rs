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
