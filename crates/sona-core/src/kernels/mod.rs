//! Dense `f32` kernels over slices.
//!
//! Each kernel has three bodies: [`scalar`] (the reference, obviously correct, used by tests),
//! [`portable`] (independent accumulators in fixed-width chunks that LLVM vectorises for SSE/NEON),
//! and, on x86-64, an AVX2+FMA body in [`x86`] chosen at run time. `std::simd` is nightly-only, and
//! `f32::mul_add` without the `fma` target feature is a slow library call, so neither is used.
//!
//! Matrices are row-major and contiguous: element `(i, j)` of a `rows × cols` matrix is `m[i * cols + j]`.
//! Kernels assume lengths were validated by the caller (see [`crate::validate`]) and assert them, so a bug
//! panics instead of reading out of bounds; the Python boundary turns such a panic into `InternalError`.

pub mod portable;
pub mod scalar;
mod topk;
#[cfg(target_arch = "x86_64")]
pub mod x86;

pub use topk::top_k;

/// Which body the dispatching kernels use on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimdLevel {
    /// AVX2 + FMA intrinsics (x86-64 with both features at run time).
    Avx2Fma,
    /// Chunked independent accumulators, auto-vectorised for the baseline target (SSE2 or NEON).
    Portable,
}

impl SimdLevel {
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Avx2Fma => "avx2+fma",
            SimdLevel::Portable => {
                if cfg!(target_arch = "aarch64") {
                    "neon (portable)"
                } else {
                    "portable"
                }
            }
        }
    }
}

/// The level detected on this machine (cached by `std`'s feature detection).
#[inline]
pub fn simd_level() -> SimdLevel {
    if has_avx2_fma() {
        SimdLevel::Avx2Fma
    } else {
        SimdLevel::Portable
    }
}

/// Below this many columns, matrix kernels use plain loops instead of one vector call per row.
const NARROW: usize = 16;

/// Whether this CPU has AVX2 and FMA (cached by `std`): crates with their own fused loops use it to
/// pick the same body the core kernels pick.
#[inline(always)]
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

macro_rules! dispatch {
    ($name:ident ( $($arg:expr),* )) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if has_avx2_fma() {
                // SAFETY: the CPU supports AVX2 and FMA (checked just above); lengths were asserted.
                return unsafe { x86::$name($($arg),*) };
            }
        }
        portable::$name($($arg),*)
    }};
}

/// `Σ a_i b_i`.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot: length mismatch");
    dispatch!(dot(a, b))
}

/// `Σ a_i²`.
#[inline]
pub fn norm_sq(a: &[f32]) -> f32 {
    dispatch!(dot(a, a))
}

/// Squared norms in this range are computed without loss by the plain `f32` pass: nothing
/// overflowed, and squares small enough to underflow cannot matter next to the sum.
const SAFE_SQ: std::ops::RangeInclusive<f32> = 1e-20..=f32::MAX;

/// Largest `|a_i|` (NaN ignored).
#[inline]
fn max_abs(a: &[f32]) -> f32 {
    a.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

/// Scales `a` to unit L2 norm in place and returns its previous norm. A zero vector is left unchanged
/// (and `0.0` returned) so that callers can decide what a zero query means.
///
/// Any finite non-zero vector comes out unit length, also when `Σ a_i²` overflows (entries near
/// `1e19` and above) or underflows (denormal entries): those take a slower path that first divides
/// by `max |a_i|`. The returned norm is then `+Inf` when the true norm exceeds `f32::MAX`.
#[inline]
pub fn normalize(a: &mut [f32]) -> f32 {
    let sq = norm_sq(a);
    if SAFE_SQ.contains(&sq) {
        let n = sq.sqrt();
        scale(1.0 / n, a);
        return n;
    }
    let m = max_abs(a);
    if !(m > 0.0 && m.is_finite()) {
        // Zero (left unchanged) or not finite (nothing meaningful to do; callers validate).
        return if m == 0.0 { 0.0 } else { sq.sqrt() };
    }
    // Division, not multiplication by 1/m: 1/m overflows for denormal m.
    a.iter_mut().for_each(|x| *x /= m);
    let n = norm_sq(a).sqrt(); // in [1, √len]
    scale(1.0 / n, a);
    (m as f64 * n as f64) as f32
}

/// Cosine similarity; `0.0` when either vector is zero. Finite for every finite input, including
/// vectors whose squared norm overflows or underflows `f32` (computed on copies scaled by
/// `max |x|`).
#[inline]
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "cosine: length mismatch");
    let (ab, aa, bb) = dot3(a, b);
    if SAFE_SQ.contains(&aa) && SAFE_SQ.contains(&bb) && ab.is_finite() {
        // √aa·√bb, not √(aa·bb): the product of two large squared norms overflows.
        return (ab / (aa.sqrt() * bb.sqrt())).clamp(-1.0, 1.0);
    }
    let (ma, mb) = (max_abs(a), max_abs(b));
    if !(ma > 0.0 && mb > 0.0 && ma.is_finite() && mb.is_finite()) {
        return 0.0;
    }
    let sa: Vec<f32> = a.iter().map(|x| x / ma).collect();
    let sb: Vec<f32> = b.iter().map(|x| x / mb).collect();
    let (ab, aa, bb) = dot3(&sa, &sb);
    (ab / (aa.sqrt() * bb.sqrt())).clamp(-1.0, 1.0)
}

/// `(a·b, a·a, b·b)` in one pass.
#[inline]
pub fn dot3(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
    assert_eq!(a.len(), b.len(), "dot3: length mismatch");
    dispatch!(dot3(a, b))
}

/// `y ← y + alpha · x`.
#[inline]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy: length mismatch");
    dispatch!(axpy(alpha, x, y))
}

/// `dst ← src`. On x86-64 this is a vector loop rather than `memcpy`: glibc 2.36 on this project's AMD
/// machines copies buffers whose size is a multiple of 4 KiB with `rep movsb` at ~0.3 B/cycle
/// (6 µs for 16 KiB instead of 0.2 µs; see docs/decisions.md), and embedding sizes (1024, 4096 floats)
/// hit exactly that case.
#[inline]
pub fn copy(src: &[f32], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "copy: length mismatch");
    dispatch!(copy(src, dst))
}

/// `true` when no element is NaN or ±Inf. Branch-free inside 16-element chunks so it vectorises:
/// every public entry point runs this on every input, so it must cost far less than the work itself
/// (the early-exit `iter().all(is_finite)` ran at about one element per cycle).
#[inline]
pub fn all_finite(x: &[f32]) -> bool {
    dispatch!(all_finite(x))
}

/// `x_i ← σ(x_i) = 1 / (1 + e^{−x_i})` in place. The AVX2 body is a polynomial `expf` (within
/// 4 ulp of the correctly rounded value, checked in `tests/kernels_match_scalar.rs`; below
/// `x = −87` it returns σ(−87) ≈ 1.6e-38 instead of a smaller or zero value); elsewhere libm. NaN stays NaN.
#[inline]
pub fn sigmoid(x: &mut [f32]) {
    dispatch!(sigmoid(x))
}

/// `x_i ← tanh x_i` in place: as [`sigmoid`], a vector polynomial body within 4 ulp on AVX2,
/// libm elsewhere. NaN stays NaN, ±Inf gives ±1.
#[inline]
pub fn tanh(x: &mut [f32]) {
    dispatch!(tanh(x))
}

/// `x ← alpha · x`.
#[inline]
pub fn scale(alpha: f32, x: &mut [f32]) {
    dispatch!(scale(alpha, x))
}

/// `y = M x` for a row-major `rows × cols` matrix (`x` has `cols` values, `y` has `rows`).
#[inline]
pub fn matvec(m: &[f32], rows: usize, cols: usize, x: &[f32], y: &mut [f32]) {
    assert_eq!(m.len(), rows * cols, "matvec: matrix size");
    assert_eq!(x.len(), cols, "matvec: x length");
    assert_eq!(y.len(), rows, "matvec: y length");
    if cols == 0 {
        y.fill(0.0);
        return;
    }
    if cols < NARROW {
        // Rows too short for a vector body: a call per row would cost more than the row itself.
        for (yi, row) in y.iter_mut().zip(m.chunks_exact(cols)) {
            *yi = row.iter().zip(x).map(|(a, b)| a * b).sum();
        }
        return;
    }
    for (yi, row) in y.iter_mut().zip(m.chunks_exact(cols)) {
        *yi = dot(row, x);
    }
}

/// `y = Mᵀ x` for a row-major `rows × cols` matrix (`x` has `rows` values, `y` has `cols`).
/// Walks rows in order (one axpy each), so memory is read contiguously.
#[inline]
pub fn matvec_t(m: &[f32], rows: usize, cols: usize, x: &[f32], y: &mut [f32]) {
    assert_eq!(m.len(), rows * cols, "matvec_t: matrix size");
    assert_eq!(x.len(), rows, "matvec_t: x length");
    assert_eq!(y.len(), cols, "matvec_t: y length");
    y.fill(0.0);
    if cols == 0 {
        return;
    }
    if cols < NARROW {
        // Rows too short for a call each (the router's 16 × 8 and 16 × 4 factors: 240 calls of
        // 4–8 values per loop-A backward); same rounding as the calls.
        return dispatch!(matvec_t_narrow(m, cols, x, y));
    }
    for (&xi, row) in x.iter().zip(m.chunks_exact(cols)) {
        if xi != 0.0 {
            axpy(xi, row, y);
        }
    }
}

/// Rank-r outer-product update `M ← M + alpha · Σ_k u_k v_kᵀ`.
///
/// `u` holds the `r` column factors back to back (`r × rows`), `v` the row factors (`r × cols`).
/// With `r = 1` this is BLAS `ger`.
#[inline]
pub fn rank_update(
    m: &mut [f32],
    rows: usize,
    cols: usize,
    alpha: f32,
    u: &[f32],
    v: &[f32],
    r: usize,
) {
    assert_eq!(m.len(), rows * cols, "rank_update: matrix size");
    assert_eq!(u.len(), r * rows, "rank_update: u size");
    assert_eq!(v.len(), r * cols, "rank_update: v size");
    if cols == 0 || rows == 0 {
        return;
    }
    for k in 0..r {
        let uk = &u[k * rows..(k + 1) * rows];
        let vk = &v[k * cols..(k + 1) * cols];
        for (row, &ui) in m.chunks_exact_mut(cols).zip(uk) {
            let c = alpha * ui;
            if cols < NARROW {
                // Rows too short for a vector body: inline loops beat a call per row (4x at cols = 2).
                for (mij, vkj) in row.iter_mut().zip(vk) {
                    *mij += c * vkj;
                }
            } else if c != 0.0 {
                axpy(c, vk, row);
            }
        }
    }
}

/// `out_i = row_i(M) · q` for every row of a row-major `rows × cols` matrix (the scan behind
/// exact search; pair it with [`top_k`]).
#[inline]
pub fn batch_dot(m: &[f32], rows: usize, cols: usize, q: &[f32], out: &mut [f32]) {
    matvec(m, rows, cols, q, out)
}
