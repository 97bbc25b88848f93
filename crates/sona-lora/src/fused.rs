//! Element-wise loops of the hot path that `sona_core::kernels` does not cover (finiteness checks
//! and plain copies use the core's `all_finite` and `copy`), written so LLVM
//! vectorises them and compiled twice: for the baseline target and, chosen at run time like the core
//! kernels, with AVX2+FMA enabled (the crate itself is built for baseline x86-64, whose SSE2 code
//! made these loops the bulk of a d = 768 reward update).

// `x - x` is deliberate: 0 for a finite `x`, NaN for ±Inf/NaN — a branch-free finiteness probe.
#![allow(clippy::eq_op)]

/// Defines `$avx`, a copy of the `#[inline(always)]` body `$name` compiled with AVX2+FMA enabled;
/// callers pick it at run time.
macro_rules! dispatch {
    ($name:ident, $avx:ident, ($($arg:ident : $ty:ty),*) -> $ret:ty) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $avx($($arg: $ty),*) -> $ret {
            $name($($arg),*)
        }
    };
}

#[inline(always)]
fn scaled_copy_body(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len();
    let blocks = n / 8;
    for bi in 0..blocks {
        let r = bi * 8..bi * 8 + 8;
        let xb: &[f32; 8] = x[r.clone()].try_into().expect("block");
        let mut out = [0.0f32; 8];
        for j in 0..8 {
            out[j] = alpha * xb[j];
        }
        y[r].copy_from_slice(&out);
    }
    for i in blocks * 8..n {
        y[i] = alpha * x[i];
    }
}
dispatch!(scaled_copy_body, scaled_copy_avx2, (alpha: f32, x: &[f32], y: &mut [f32]) -> ());

/// `y ← alpha · x` in one pass (a copy and a scale would be two).
#[inline]
pub fn scaled_copy(alpha: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "scaled_copy: length mismatch");
    #[cfg(target_arch = "x86_64")]
    if sona_core::kernels::has_avx2_fma() {
        // SAFETY: AVX2 and FMA are available (checked above); lengths asserted.
        return unsafe { scaled_copy_avx2(alpha, x, y) };
    }
    scaled_copy_body(alpha, x, y)
}

#[inline(always)]
fn combination_body(rows: &[f32], n: usize, c: &[f32], y: &mut [f32]) {
    let y = &mut y[..n];
    let mut k0 = 0;
    while k0 + 4 <= c.len() {
        let r0 = &rows[k0 * n..(k0 + 1) * n];
        let r1 = &rows[(k0 + 1) * n..(k0 + 2) * n];
        let r2 = &rows[(k0 + 2) * n..(k0 + 3) * n];
        let r3 = &rows[(k0 + 3) * n..(k0 + 4) * n];
        let (c0, c1, c2, c3) = (c[k0], c[k0 + 1], c[k0 + 2], c[k0 + 3]);
        for i in 0..n {
            y[i] += c0 * r0[i] + c1 * r1[i] + c2 * r2[i] + c3 * r3[i];
        }
        k0 += 4;
    }
    match c.len() - k0 {
        3 => {
            let r0 = &rows[k0 * n..(k0 + 1) * n];
            let r1 = &rows[(k0 + 1) * n..(k0 + 2) * n];
            let r2 = &rows[(k0 + 2) * n..(k0 + 3) * n];
            let (c0, c1, c2) = (c[k0], c[k0 + 1], c[k0 + 2]);
            for i in 0..n {
                y[i] += c0 * r0[i] + c1 * r1[i] + c2 * r2[i];
            }
        }
        2 => {
            let r0 = &rows[k0 * n..(k0 + 1) * n];
            let r1 = &rows[(k0 + 1) * n..(k0 + 2) * n];
            let (c0, c1) = (c[k0], c[k0 + 1]);
            for i in 0..n {
                y[i] += c0 * r0[i] + c1 * r1[i];
            }
        }
        1 => {
            let r0 = &rows[k0 * n..(k0 + 1) * n];
            let c0 = c[k0];
            for i in 0..n {
                y[i] += c0 * r0[i];
            }
        }
        _ => {}
    }
}
dispatch!(combination_body, combination_avx2, (rows: &[f32], n: usize, c: &[f32], y: &mut [f32]) -> ());

/// `y += Σ_k c_k · rows[k]` for `rows` of length `n` stored back to back. Up to four rows are
/// combined per pass, so `y` is read and written `⌈r/4⌉` times instead of `r` times.
#[inline]
pub fn add_combination(rows: &[f32], n: usize, c: &[f32], y: &mut [f32]) {
    assert_eq!(rows.len(), c.len() * n, "add_combination: size");
    assert_eq!(y.len(), n, "add_combination: y length");
    #[cfg(target_arch = "x86_64")]
    if sona_core::kernels::has_avx2_fma() {
        // SAFETY: AVX2 and FMA are available (checked above); sizes asserted.
        return unsafe { combination_avx2(rows, n, c, y) };
    }
    combination_body(rows, n, c, y)
}

#[inline(always)]
fn momentum_body(
    w: &[f32],
    m: &[f32],
    src: &[f32],
    coef: f32,
    mu: f32,
    lr: f32,
    keep: f32,
    w_out: &mut [f32],
    m_out: &mut [f32],
) -> f32 {
    // Fixed-size 8-value blocks (arrays, not slices) so LLVM emits vector code without bounds checks.
    let n = w.len();
    let mut acc = [0.0f32; 8];
    let mut big = [0.0f32; 8];
    let blocks = n / 8;
    for bi in 0..blocks {
        let r = bi * 8..bi * 8 + 8;
        let wb: &[f32; 8] = w[r.clone()].try_into().expect("block");
        let mb: &[f32; 8] = m[r.clone()].try_into().expect("block");
        let sb: &[f32; 8] = src[r.clone()].try_into().expect("block");
        let mut mo = [0.0f32; 8];
        let mut wo = [0.0f32; 8];
        for j in 0..8 {
            mo[j] = mu * mb[j] + coef * sb[j];
            wo[j] = (wb[j] - lr * mo[j]) * keep;
            acc[j] += (mo[j] - mo[j]) + (wo[j] - wo[j]);
            let a = wo[j].abs();
            big[j] = if a > big[j] { a } else { big[j] };
        }
        m_out[r.clone()].copy_from_slice(&mo);
        w_out[r].copy_from_slice(&wo);
    }
    let mut tail = 0.0f32;
    let mut tail_big = 0.0f32;
    for i in blocks * 8..n {
        let mn = mu * m[i] + coef * src[i];
        let wn = (w[i] - lr * mn) * keep;
        m_out[i] = mn;
        w_out[i] = wn;
        tail += (mn - mn) + (wn - wn);
        tail_big = tail_big.max(wn.abs());
    }
    if (acc.iter().sum::<f32>() + tail) == 0.0 {
        big.iter().fold(tail_big, |m, &b| m.max(b))
    } else {
        f32::NAN
    }
}
dispatch!(momentum_body, momentum_avx2, (w: &[f32], m: &[f32], src: &[f32], coef: f32, mu: f32, lr: f32, keep: f32, w_out: &mut [f32], m_out: &mut [f32]) -> f32);

/// One fused momentum row: `m' = μ m + coef · src`, `w' = keep · (w − lr m')`; returns the largest
/// `|w'|`, or NaN if any written value is not finite (both found in the same pass).
#[inline]
pub fn momentum_row(
    w: &[f32],
    m: &[f32],
    src: &[f32],
    coef: f32,
    mu: f32,
    lr: f32,
    keep: f32,
    w_out: &mut [f32],
    m_out: &mut [f32],
) -> f32 {
    let n = w.len();
    assert!(m.len() == n && src.len() == n && w_out.len() == n && m_out.len() == n);
    #[cfg(target_arch = "x86_64")]
    if sona_core::kernels::has_avx2_fma() {
        // SAFETY: AVX2 and FMA are available (checked above); lengths asserted.
        return unsafe { momentum_avx2(w, m, src, coef, mu, lr, keep, w_out, m_out) };
    }
    momentum_body(w, m, src, coef, mu, lr, keep, w_out, m_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combination_and_momentum_match_scalar() {
        for r in 1..=9 {
            let n = 37;
            let rows: Vec<f32> = (0..r * n).map(|i| (i as f32 * 0.37).sin()).collect();
            let c: Vec<f32> = (0..r).map(|k| k as f32 - 2.5).collect();
            let mut y = vec![1.0f32; n];
            let mut want = y.clone();
            for kk in 0..r {
                for i in 0..n {
                    want[i] += c[kk] * rows[kk * n + i];
                }
            }
            add_combination(&rows, n, &c, &mut y);
            for (a, b) in y.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4);
            }
            let mut out = vec![0.0; n];
            scaled_copy(-2.0, &rows[..n], &mut out);
            for (o, r0) in out.iter().zip(&rows[..n]) {
                assert_eq!(*o, -2.0 * r0);
            }
        }
        let n = 21;
        let w: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let m: Vec<f32> = (0..n).map(|i| -(i as f32)).collect();
        let s: Vec<f32> = (0..n).map(|i| (i as f32).cos()).collect();
        let (mut wo, mut mo) = (vec![0.0; n], vec![0.0; n]);
        let big = momentum_row(&w, &m, &s, 0.5, 0.9, 0.1, 0.99, &mut wo, &mut mo);
        for i in 0..n {
            let mn = 0.9 * m[i] + 0.5 * s[i];
            assert!((mo[i] - mn).abs() < 1e-5);
            assert!((wo[i] - (w[i] - 0.1 * mn) * 0.99).abs() < 1e-4);
        }
        let want = wo.iter().fold(0.0f32, |a, b| a.max(b.abs()));
        assert_eq!(big, want, "largest |w'| over blocks and tail");
        assert!(momentum_row(&w, &m, &s, f32::INFINITY, 0.9, 0.1, 1.0, &mut wo, &mut mo).is_nan());
    }
}
