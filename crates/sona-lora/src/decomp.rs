//! The two small factorizations the merge needs, in `f64`, from `nalgebra`: a thin QR of a tall
//! matrix and the SVD of a small dense matrix. This module only adapts shapes: matrices are
//! column-major slices here (`col j` is `a[j*m..(j+1)*m]`), the layout of `nalgebra`'s `DMatrix`.
//! Why `nalgebra` and not `faer` (faster on large matrices, slower on these skinny ones): measured in
//! `docs/decisions.md`.

use nalgebra::DMatrix;

/// Iteration cap of the SVD (never reached on finite input; bounds the work on anything else).
const MAX_SVD_ITERATIONS: usize = 10_000;

/// A thin QR `a = Q R` of an `m × k` column-major matrix, `p = min(m, k)`, with the explicit `m × p`
/// `Q` (forming it costs `O(m p²)`, as much as applying the reflectors to the `p × r_b` factors
/// the merge multiplies it with).
#[derive(Debug, Clone)]
pub struct ThinQr {
    pub m: usize,
    pub k: usize,
    pub p: usize,
    q: DMatrix<f64>,
    /// `R`, `p × k` row-major, upper-trapezoidal.
    pub r: Vec<f64>,
}

impl ThinQr {
    /// Factors the `m × k` column-major matrix `a`.
    pub fn new(a: &[f64], m: usize, k: usize) -> Self {
        assert_eq!(a.len(), m * k, "thin_qr: size");
        let p = m.min(k);
        let qr = DMatrix::from_column_slice(m, k, a).qr();
        let rm = qr.r();
        let mut r = vec![0.0; p * k];
        for i in 0..p {
            for j in i..k {
                r[i * k + j] = rm[(i, j)];
            }
        }
        ThinQr {
            m,
            k,
            p,
            q: qr.q(),
            r,
        }
    }

    /// `Q C` for a `p × cols` column-major `C`: an `m × cols` column-major result.
    pub fn q_mul(&self, c: &[f64], cols: usize) -> Vec<f64> {
        assert_eq!(c.len(), self.p * cols, "q_mul: size");
        (&self.q * DMatrix::from_column_slice(self.p, cols, c))
            .as_slice()
            .to_vec()
    }

    /// The explicit `m × p` column-major `Q` (for tests).
    pub fn q(&self) -> Vec<f64> {
        self.q.as_slice().to_vec()
    }
}

/// Thin QR of the `m × k` column-major matrix `a`: returns `(Q, R, p)` with `p = min(m, k)`,
/// `Q` `m × p` column-major with orthonormal columns and `R` `p × k` row-major upper-trapezoidal,
/// such that `a = Q R`.
pub fn thin_qr(a: &[f64], m: usize, k: usize) -> (Vec<f64>, Vec<f64>, usize) {
    let qr = ThinQr::new(a, m, k);
    (qr.q(), qr.r, qr.p)
}

/// SVD of the `rows × cols` column-major matrix `a`: returns `(U, σ, V)` with `U` `rows × cols`
/// column-major (unit columns for the first `min(rows, cols)`, zero after), `σ` (`cols` values,
/// zero-padded) sorted descending, and `V` `cols × cols` column-major orthogonal, so that
/// `a = U diag(σ) Vᵀ`. `None` for non-finite input (no convergence).
pub fn svd(a: &[f64], rows: usize, cols: usize) -> Option<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    assert_eq!(a.len(), rows * cols, "svd: size");
    if !a.iter().all(|x| x.is_finite()) {
        return None;
    }
    // A wide matrix gets zero rows appended, so `V` comes out square (the merge uses all of it).
    let n = rows.max(cols);
    let mut padded = DMatrix::zeros(n, cols);
    padded
        .rows_mut(0, rows)
        .copy_from(&DMatrix::from_column_slice(rows, cols, a));
    let s = padded.try_svd(true, true, f64::EPSILON, MAX_SVD_ITERATIONS)?;
    let (fu, fv_t) = (s.u.as_ref()?, s.v_t.as_ref()?);
    let mut u = vec![0.0; rows * cols];
    let mut sigma = vec![0.0; cols];
    let mut v = vec![0.0; cols * cols];
    for j in 0..rows.min(cols) {
        sigma[j] = s.singular_values[j];
        for i in 0..rows {
            u[j * rows + i] = fu[(i, j)];
        }
    }
    for j in 0..cols {
        for i in 0..cols {
            v[j * cols + i] = fv_t[(j, i)];
        }
    }
    Some((u, sigma, v))
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
        let (u, s, v) = svd(&a, rows, cols).unwrap();
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
        let (_, s2, _) = svd(&b, rows, cols).unwrap();
        assert!(s2[4] < 1e-10);
    }

    #[test]
    fn non_finite_input_gives_no_svd_and_no_hang() {
        for bad in [f64::NAN, f64::INFINITY] {
            let mut a = random(6, 6, 5);
            a[7] = bad;
            assert!(svd(&a, 6, 6).is_none());
            // QR propagates it (the merge rejects non-finite results).
            let qr = ThinQr::new(&a, 6, 6);
            assert!(!qr.q().iter().chain(&qr.r).all(|x| x.is_finite()));
        }
        // Zero matrix: exact, orthonormal Q, zero R and σ.
        let (q, r, p) = thin_qr(&[0.0; 12], 4, 3);
        assert!(r.iter().all(|&x| x == 0.0));
        for a1 in 0..p {
            let n: f64 = (0..4).map(|i| q[a1 * 4 + i] * q[a1 * 4 + i]).sum();
            assert!((n - 1.0).abs() < 1e-12);
        }
        assert!(svd(&[0.0; 9], 3, 3).unwrap().1.iter().all(|&s| s == 0.0));
    }
}
