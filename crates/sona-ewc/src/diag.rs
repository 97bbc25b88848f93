//! Element-wise kernels of a diagonal quadratic, which `sona-core` does not have.
//!
//! EWC++ works on three aligned vectors (a diagonal Fisher `F`, the parameters `θ` and an anchor `θ*`),
//! so its hot loops are fused element-wise passes: `F ← γF + (1−γ)g²`, `Σ F(θ−θ*)²` and
//! `g += α F(θ−θ*)`. Fusing them reads each vector once (the passes are memory-bound at large `P`),
//! which composing `sona-core` kernels through temporaries would not. Each body is written once
//! with independent fixed-width lanes; on x86-64 the same body is also compiled with AVX2+FMA enabled
//! and chosen at run time, so LLVM emits 256-bit code without hand-written intrinsics.

const W: usize = 16;
/// Partial sums are flushed to `f64` every `BLOCK` elements so long reductions stay accurate.
const BLOCK: usize = 4096;

#[inline(always)]
fn ema_sq_body(gamma: f32, f: &mut [f32], g: &[f32]) {
    let c = 1.0 - gamma;
    for (fi, gi) in f.iter_mut().zip(g) {
        *fi = gamma * *fi + c * (gi * gi);
    }
}

#[inline(always)]
fn weighted_sq_dist_body(w: &[f32], a: &[f32], b: &[f32]) -> f64 {
    let mut total = 0.0f64;
    for ((wb, ab), bb) in w.chunks(BLOCK).zip(a.chunks(BLOCK)).zip(b.chunks(BLOCK)) {
        let mut acc = [0.0f32; W];
        let mut cw = wb.chunks_exact(W);
        let mut ca = ab.chunks_exact(W);
        let mut cb = bb.chunks_exact(W);
        for ((x, y), z) in (&mut cw).zip(&mut ca).zip(&mut cb) {
            for i in 0..W {
                let d = y[i] - z[i];
                acc[i] += x[i] * d * d;
            }
        }
        let mut tail = 0.0f32;
        for ((x, y), z) in cw
            .remainder()
            .iter()
            .zip(ca.remainder())
            .zip(cb.remainder())
        {
            let d = y - z;
            tail += x * d * d;
        }
        total += acc.iter().map(|&v| v as f64).sum::<f64>() + tail as f64;
    }
    total
}

#[inline(always)]
fn add_weighted_diff_body(alpha: f32, w: &[f32], a: &[f32], b: &[f32], out: &mut [f32]) {
    for (((o, wi), ai), bi) in out.iter_mut().zip(w).zip(a).zip(b) {
        *o += alpha * wi * (ai - bi);
    }
}

/// Exponent bits of an `f32`: all ones exactly for ±Inf and NaN.
const EXP: u32 = 0x7f80_0000;

#[inline(always)]
fn add_weighted_diff_into_body(
    alpha: f32,
    w: &[f32],
    a: &[f32],
    b: &[f32],
    g: &[f32],
    out: &mut [f32],
) -> bool {
    let mut acc = [0u32; W];
    let mut co = out.chunks_exact_mut(W);
    let mut cw = w.chunks_exact(W);
    let mut ca = a.chunks_exact(W);
    let mut cb = b.chunks_exact(W);
    let mut cg = g.chunks_exact(W);
    for ((((o, w), a), b), g) in (&mut co)
        .zip(&mut cw)
        .zip(&mut ca)
        .zip(&mut cb)
        .zip(&mut cg)
    {
        for i in 0..W {
            let v = g[i] + alpha * w[i] * (a[i] - b[i]);
            o[i] = v;
            acc[i] |= ((v.to_bits() & EXP) == EXP) as u32;
        }
    }
    let mut ok = acc.iter().all(|&x| x == 0);
    let tail = co
        .into_remainder()
        .iter_mut()
        .zip(cw.remainder())
        .zip(ca.remainder())
        .zip(cb.remainder())
        .zip(cg.remainder());
    for ((((o, w), a), b), g) in tail {
        *o = g + alpha * w * (a - b);
        ok &= o.is_finite();
    }
    ok
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn ema_sq(gamma: f32, f: &mut [f32], g: &[f32]) {
        super::ema_sq_body(gamma, f, g)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weighted_sq_dist(w: &[f32], a: &[f32], b: &[f32]) -> f64 {
        super::weighted_sq_dist_body(w, a, b)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn add_weighted_diff_into(
        alpha: f32,
        w: &[f32],
        a: &[f32],
        b: &[f32],
        g: &[f32],
        out: &mut [f32],
    ) -> bool {
        super::add_weighted_diff_into_body(alpha, w, a, b, g, out)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn add_weighted_diff(
        alpha: f32,
        w: &[f32],
        a: &[f32],
        b: &[f32],
        out: &mut [f32],
    ) {
        super::add_weighted_diff_body(alpha, w, a, b, out)
    }
}

/// `f ← γ f + (1−γ) g²` element-wise (one EMA step of a diagonal second moment).
#[inline]
pub fn ema_sq(gamma: f32, f: &mut [f32], g: &[f32]) {
    assert_eq!(f.len(), g.len(), "ema_sq: length mismatch");
    #[cfg(target_arch = "x86_64")]
    if sona_core::kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { avx2::ema_sq(gamma, f, g) };
    }
    ema_sq_body(gamma, f, g)
}

/// `Σ_i w_i (a_i − b_i)²`, accumulated in `f64` per block.
#[inline]
pub fn weighted_sq_dist(w: &[f32], a: &[f32], b: &[f32]) -> f64 {
    assert!(
        w.len() == a.len() && a.len() == b.len(),
        "weighted_sq_dist: length mismatch"
    );
    #[cfg(target_arch = "x86_64")]
    if sona_core::kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { avx2::weighted_sq_dist(w, a, b) };
    }
    weighted_sq_dist_body(w, a, b)
}

/// `out ← out + α · w ⊙ (a − b)`.
#[inline]
pub fn add_weighted_diff(alpha: f32, w: &[f32], a: &[f32], b: &[f32], out: &mut [f32]) {
    assert!(
        w.len() == a.len() && a.len() == b.len() && b.len() == out.len(),
        "add_weighted_diff: length mismatch"
    );
    #[cfg(target_arch = "x86_64")]
    if sona_core::kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { avx2::add_weighted_diff(alpha, w, a, b, out) };
    }
    add_weighted_diff_body(alpha, w, a, b, out)
}

/// `out ← g + α · w ⊙ (a − b)` in one pass; returns whether every output is finite (with `w`, `b`
/// and `α` finite, a non-finite output means a non-finite `a` or `g`, or an overflow).
#[inline]
pub fn add_weighted_diff_into(
    alpha: f32,
    w: &[f32],
    a: &[f32],
    b: &[f32],
    g: &[f32],
    out: &mut [f32],
) -> bool {
    let n = out.len();
    assert!(
        w.len() == n && a.len() == n && b.len() == n && g.len() == n,
        "add_weighted_diff_into: length mismatch"
    );
    #[cfg(target_arch = "x86_64")]
    if sona_core::kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { avx2::add_weighted_diff_into(alpha, w, a, b, g, out) };
    }
    add_weighted_diff_into_body(alpha, w, a, b, g, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sona_core::SeededRng;

    fn vecs(n: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut rng = SeededRng::new(seed);
        let mut w = vec![0.0; n];
        let mut a = vec![0.0; n];
        let mut b = vec![0.0; n];
        rng.fill_normal(&mut w, 1.0);
        w.iter_mut().for_each(|x| *x = x.abs());
        rng.fill_normal(&mut a, 1.0);
        rng.fill_normal(&mut b, 1.0);
        (w, a, b)
    }

    #[test]
    fn match_scalar_references_at_awkward_lengths() {
        for n in [0, 1, 15, 16, 17, 4095, 4096, 4097, 10_001] {
            let (w, a, b) = vecs(n, n as u64);
            let want: f64 = (0..n)
                .map(|i| w[i] as f64 * ((a[i] - b[i]) as f64).powi(2))
                .sum();
            let got = weighted_sq_dist(&w, &a, &b);
            assert!((got - want).abs() <= 1e-5 * want.max(1.0), "n={n}");

            let mut f = w.clone();
            ema_sq(0.9, &mut f, &a);
            for i in 0..n {
                let want = 0.9 * w[i] + 0.1 * a[i] * a[i];
                assert!((f[i] - want).abs() <= 1e-6 * want.max(1.0));
            }

            let mut into = vec![0.0; n];
            assert!(add_weighted_diff_into(2.0, &w, &a, &b, &b, &mut into));
            if n > 0 {
                let mut bad = a.clone();
                bad[n - 1] = f32::NAN;
                bad[n / 2] = 1.0;
                assert!(!add_weighted_diff_into(2.0, &w, &bad, &b, &b, &mut into) || n == 1);
            }
            assert!(add_weighted_diff_into(2.0, &w, &a, &b, &b, &mut into));
            let mut out = b.clone();
            add_weighted_diff(2.0, &w, &a, &b, &mut out);
            for i in 0..n {
                assert_eq!(out[i], into[i]);
            }
            for i in 0..n {
                let want = b[i] + 2.0 * w[i] * (a[i] - b[i]);
                assert!((out[i] - want).abs() <= 1e-5 * want.abs().max(1.0));
            }
        }
    }
}
