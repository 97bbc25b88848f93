//! The two small factorizations the merge needs, in `f64`: a thin Householder QR of a tall matrix and
//! a one-sided (Hestenes) Jacobi SVD of a small dense matrix. Both are textbook algorithms chosen for
//! being short, dependency-free and accurate to working precision at the sizes used here
//! (`m ≤ a few thousand`, `k ≤ 2 · MAX_RANK`).
//!
//! Matrices are column-major here (`col j` is `a[j*m..(j+1)*m]`): both algorithms work on columns.
//! The QR loops are compiled a second time with AVX2+FMA and chosen at run time (4-wide `f64`).

#[inline(always)]
fn dot64(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    // 16 independent lanes (four 4-wide accumulators) hide the add latency.
    let mut acc = [0.0f64; 16];
    let blocks = n / 16;
    for i in 0..blocks {
        let ab: &[f64; 16] = a[16 * i..16 * i + 16].try_into().expect("block");
        let bb: &[f64; 16] = b[16 * i..16 * i + 16].try_into().expect("block");
        for j in 0..16 {
            acc[j] += ab[j] * bb[j];
        }
    }
    let mut tail = 0.0;
    for i in blocks * 16..n {
        tail += a[i] * b[i];
    }
    acc.iter().sum::<f64>() + tail
}

#[inline(always)]
fn axpy64(alpha: f64, x: &[f64], y: &mut [f64]) {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &mut y[..n]);
    for i in 0..n {
        y[i] += alpha * x[i];
    }
}

/// A thin Householder QR `a = Q R` of an `m × k` column-major matrix, `p = min(m, k)`. `Q` is kept
/// in factored form (the reflectors) and applied with [`HouseholderQr::q_mul`], which costs
/// `O(m p c)` for `c` columns instead of forming the `m × p` matrix first.
#[derive(Debug, Clone)]
pub struct HouseholderQr {
    pub m: usize,
    pub k: usize,
    pub p: usize,
    /// Reflector `j` (unit norm) in rows `j..m` of column `j` (`m × k` column-major); `live[j]` is
    /// false when column `j` was already zero below the diagonal (no reflection).
    vs: Vec<f64>,
    live: Vec<bool>,
    /// `R`, `p × k` row-major, upper-trapezoidal.
    pub r: Vec<f64>,
}

#[inline(always)]
fn qr_body(mut w: Vec<f64>, m: usize, k: usize) -> HouseholderQr {
    let p = m.min(k);
    let mut live = vec![false; p];
    let mut r = vec![0.0; p * k];
    // Reflector j overwrites rows j..m of column j (LAPACK-style), so no second m × p buffer.
    for j in 0..p {
        let (head, tail) = w.split_at_mut((j + 1) * m);
        let v = &mut head[j * m + j..];
        let norm = dot64(v, v).sqrt();
        let alpha = if v[0] >= 0.0 { -norm } else { norm };
        v[0] -= alpha;
        let vn = dot64(v, v).sqrt();
        if vn > 0.0 && norm > 0.0 {
            for t in v.iter_mut() {
                *t /= vn;
            }
            live[j] = true;
            for c in j + 1..k {
                let col = &mut tail[(c - j - 1) * m + j..(c - j) * m];
                let d = dot64(col, v);
                axpy64(-2.0 * d, v, col);
            }
            r[j * k + j] = alpha;
        } else {
            r[j * k + j] = v[0] + alpha;
        }
        for c in j + 1..k {
            r[j * k + c] = w[c * m + j];
        }
    }
    HouseholderQr {
        m,
        k,
        p,
        vs: w,
        live,
        r,
    }
}

#[inline(always)]
fn q_mul_body(qr: &HouseholderQr, c: &[f64], cols: usize) -> Vec<f64> {
    let (m, p) = (qr.m, qr.p);
    let mut out = vec![0.0; m * cols];
    for t in 0..cols {
        let col = &mut out[t * m..(t + 1) * m];
        col[..p].copy_from_slice(&c[t * p..(t + 1) * p]);
        // Q = H_0 … H_{p-1}: apply right to left; H_j touches rows j..m only.
        for j in (0..p).rev() {
            if !qr.live[j] {
                continue;
            }
            let v = &qr.vs[j * m + j..(j + 1) * m];
            let seg = &mut col[j..];
            let d = dot64(seg, v);
            if d != 0.0 {
                axpy64(-2.0 * d, v, seg);
            }
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn qr_avx2(a: Vec<f64>, m: usize, k: usize) -> HouseholderQr {
    qr_body(a, m, k)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn q_mul_avx2(qr: &HouseholderQr, c: &[f64], cols: usize) -> Vec<f64> {
    q_mul_body(qr, c, cols)
}

impl HouseholderQr {
    /// Factors the `m × k` column-major matrix `a` (consumed: it becomes the reflector storage).
    pub fn new(a: Vec<f64>, m: usize, k: usize) -> Self {
        assert_eq!(a.len(), m * k, "householder_qr: size");
        #[cfg(target_arch = "x86_64")]
        if sona_core::kernels::has_avx2_fma() {
            // SAFETY: AVX2 and FMA are available (checked above).
            return unsafe { qr_avx2(a, m, k) };
        }
        qr_body(a, m, k)
    }

    /// `Q [C; 0]` for a `p × cols` column-major `C`: an `m × cols` column-major result.
    pub fn q_mul(&self, c: &[f64], cols: usize) -> Vec<f64> {
        assert_eq!(c.len(), self.p * cols, "q_mul: size");
        #[cfg(target_arch = "x86_64")]
        if sona_core::kernels::has_avx2_fma() {
            // SAFETY: AVX2 and FMA are available (checked above); sizes asserted.
            return unsafe { q_mul_avx2(self, c, cols) };
        }
        q_mul_body(self, c, cols)
    }

    /// The explicit `m × p` column-major `Q` (for tests).
    pub fn q(&self) -> Vec<f64> {
        let mut eye = vec![0.0; self.p * self.p];
        for j in 0..self.p {
            eye[j * self.p + j] = 1.0;
        }
        self.q_mul(&eye, self.p)
    }
}

/// Thin QR of the `m × k` column-major matrix `a`: returns `(Q, R, p)` with `p = min(m, k)`,
/// `Q` `m × p` column-major with orthonormal columns and `R` `p × k` row-major upper-trapezoidal,
/// such that `a = Q R`.
pub fn thin_qr(a: &[f64], m: usize, k: usize) -> (Vec<f64>, Vec<f64>, usize) {
    let qr = HouseholderQr::new(a.to_vec(), m, k);
    (qr.q(), qr.r.clone(), qr.p)
}

/// SVD of the `rows × cols` column-major matrix `a` by one-sided Jacobi rotations:
/// returns `(U, σ, V)` with `U` `rows × cols` column-major (unit columns, or zero where `σ_j = 0`),
/// `σ` sorted descending, and `V` `cols × cols` column-major orthogonal, so that `a = U diag(σ) Vᵀ`.
pub fn jacobi_svd(a: &[f64], rows: usize, cols: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    assert_eq!(a.len(), rows * cols, "jacobi_svd: size");
    let mut w = a.to_vec();
    let mut v = vec![0.0; cols * cols];
    for j in 0..cols {
        v[j * cols + j] = 1.0;
    }
    let col_dot = |w: &[f64], p: usize, q: usize| -> f64 {
        (0..rows).map(|i| w[p * rows + i] * w[q * rows + i]).sum()
    };
    for _sweep in 0..60 {
        let mut rotated = false;
        for p in 0..cols {
            for q in p + 1..cols {
                let alpha = col_dot(&w, p, p);
                let beta = col_dot(&w, q, q);
                let gamma = col_dot(&w, p, q);
                if gamma == 0.0 || gamma.abs() <= 1e-15 * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                for (mat, n) in [(&mut w, rows), (&mut v, cols)] {
                    for i in 0..n {
                        let (xp, xq) = (mat[p * n + i], mat[q * n + i]);
                        mat[p * n + i] = c * xp - s * xq;
                        mat[q * n + i] = s * xp + c * xq;
                    }
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let mut order: Vec<usize> = (0..cols).collect();
    let norms: Vec<f64> = (0..cols).map(|j| col_dot(&w, j, j).sqrt()).collect();
    order.sort_by(|&i, &j| norms[j].total_cmp(&norms[i]));
    let mut u = vec![0.0; rows * cols];
    let mut vv = vec![0.0; cols * cols];
    let mut sigma = vec![0.0; cols];
    for (dst, &src) in order.iter().enumerate() {
        sigma[dst] = norms[src];
        if norms[src] > 0.0 {
            for i in 0..rows {
                u[dst * rows + i] = w[src * rows + i] / norms[src];
            }
        }
        vv[dst * cols..(dst + 1) * cols].copy_from_slice(&v[src * cols..(src + 1) * cols]);
    }
    (u, sigma, vv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sona_core::SeededRng;

    fn random(m: usize, k: usize, seed: u64) -> Vec<f64> {
        let mut rng = SeededRng::new(seed);
        (0..m * k).map(|_| rng.normal() as f64).collect()
    }

    #[test]
    fn qr_reconstructs_and_is_orthonormal() {
        for &(m, k) in &[(50, 6), (7, 7), (4, 6)] {
            let a = random(m, k, m as u64);
            let (q, r, p) = thin_qr(&a, m, k);
            for c in 0..k {
                for i in 0..m {
                    let v: f64 = (0..p).map(|j| q[j * m + i] * r[j * k + c]).sum();
                    assert!((v - a[c * m + i]).abs() < 1e-10);
                }
            }
            for a1 in 0..p {
                for b1 in 0..p {
                    let d: f64 = (0..m).map(|i| q[a1 * m + i] * q[b1 * m + i]).sum();
                    let want = if a1 == b1 { 1.0 } else { 0.0 };
                    assert!((d - want).abs() < 1e-10);
                }
                for b1 in 0..a1.min(k) {
                    assert_eq!(r[a1 * k + b1], 0.0);
                }
            }
        }
    }

    #[test]
    fn svd_reconstructs_and_sorts() {
        let (rows, cols) = (9, 5);
        let a = random(rows, cols, 11);
        let (u, s, v) = jacobi_svd(&a, rows, cols);
        assert!(s.windows(2).all(|w| w[0] >= w[1]));
        for c in 0..cols {
            for i in 0..rows {
                let x: f64 = (0..cols)
                    .map(|j| u[j * rows + i] * s[j] * v[j * cols + c])
                    .sum();
                assert!((x - a[c * rows + i]).abs() < 1e-10);
            }
        }
        // Rank-deficient input: a zero singular value, still an exact factorization.
        let mut b = a.clone();
        for i in 0..rows {
            b[4 * rows + i] = b[i] * 2.0;
        }
        let (_, s2, _) = jacobi_svd(&b, rows, cols);
        assert!(s2[4] < 1e-10);
    }
}
