//! The two small factorizations the merge needs, in `f64`: a thin Householder QR of a tall matrix and
//! a one-sided (Hestenes) Jacobi SVD of a small dense matrix. Both are textbook algorithms chosen for
//! being short, dependency-free and accurate to working precision at the sizes used here
//! (`m ≤ a few thousand`, `k ≤ 2 · MAX_RANK`).
//!
//! Matrices are column-major here (`col j` is `a[j*m..(j+1)*m]`): both algorithms work on columns.

/// Thin QR of the `m × k` column-major matrix `a`: returns `(Q, R, p)` with `p = min(m, k)`,
/// `Q` `m × p` column-major with orthonormal columns and `R` `p × k` row-major upper-trapezoidal,
/// such that `a = Q R`.
pub fn thin_qr(a: &[f64], m: usize, k: usize) -> (Vec<f64>, Vec<f64>, usize) {
    assert_eq!(a.len(), m * k, "thin_qr: size");
    let p = m.min(k);
    let mut w = a.to_vec();
    // Householder vectors, v_j has length m - j (stored unit-norm, or empty when the column is 0).
    let mut vs: Vec<Vec<f64>> = Vec::with_capacity(p);
    let mut r = vec![0.0; p * k];
    for j in 0..p {
        let x = &w[j * m + j..(j + 1) * m];
        let norm = x.iter().map(|t| t * t).sum::<f64>().sqrt();
        let mut v = x.to_vec();
        let alpha = if x[0] >= 0.0 { -norm } else { norm };
        v[0] -= alpha;
        let vn = v.iter().map(|t| t * t).sum::<f64>().sqrt();
        if vn > 0.0 && norm > 0.0 {
            for t in v.iter_mut() {
                *t /= vn;
            }
            for c in j..k {
                let col = &mut w[c * m + j..(c + 1) * m];
                let d: f64 = col.iter().zip(&v).map(|(a, b)| a * b).sum();
                for (ci, vi) in col.iter_mut().zip(&v) {
                    *ci -= 2.0 * d * vi;
                }
            }
        } else {
            v.clear();
        }
        vs.push(v);
        for c in j..k {
            r[j * k + c] = w[c * m + j];
        }
    }
    // Q = H_0 H_1 … H_{p-1} [I_p; 0], applying the reflectors right to left.
    let mut q = vec![0.0; m * p];
    for j in 0..p {
        q[j * m + j] = 1.0;
    }
    for j in (0..p).rev() {
        let v = &vs[j];
        if v.is_empty() {
            continue;
        }
        for c in 0..p {
            let col = &mut q[c * m + j..(c + 1) * m];
            let d: f64 = col.iter().zip(v).map(|(a, b)| a * b).sum();
            if d != 0.0 {
                for (ci, vi) in col.iter_mut().zip(v) {
                    *ci -= 2.0 * d * vi;
                }
            }
        }
    }
    (q, r, p)
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
