//! Optional gradient projection memory (GPM, Saha et al. 2021), applied to the task gradient only.
//!
//! After a task, directions that its gradients (or representations) occupy are added to an orthonormal
//! basis `V_k` (rows of a `k × P` matrix). Later task gradients are projected onto the complement,
//! `g − V_k V_kᵀ g`, so steps do not move the old task along its important directions; the EWC gradient
//! is added after projection (see [`crate::EwcPlusPlus::apply_projected`]).
//!
//! New directions come from an SVD of the residual of the given matrix after projecting out the
//! current basis; the top singular vectors are kept until the basis captures `threshold` of the
//! matrix's energy (the GPM criterion). The SVD is done through the small `n × n` Gram matrix with
//! `nalgebra`'s symmetric eigensolver in `f64`, so `n` (rows per call) is capped at [`MAX_ROWS`].

use sona_core::kernels;
use sona_core::validate::{
    check_finite, check_len, check_matrix, check_size, element_count, MAX_ELEMENTS,
};
use sona_core::{Result, SonaError};

/// Energy share [`GradientProjection::add`] is usually asked to capture (GPM's 0.97).
pub const DEFAULT_THRESHOLD: f32 = 0.97;

/// Rows accepted per [`GradientProjection::add`] call (the Gram eigensolver is `O(n³)`).
pub const MAX_ROWS: usize = 512;

/// An orthonormal basis of protected gradient directions.
#[derive(Debug, Clone, PartialEq)]
pub struct GradientProjection {
    p: usize,
    max_basis: usize,
    basis: Vec<f32>,
}

impl GradientProjection {
    /// An empty basis over `param_count` parameters holding at most `max_basis` directions.
    pub fn new(param_count: usize, max_basis: usize) -> Result<Self> {
        check_size("param_count", param_count, 1, MAX_ELEMENTS)?;
        check_size("max_basis", max_basis, 1, param_count)?;
        // The basis grows to `max_basis × P` floats: bound it now rather than fail mid-`add`.
        element_count("max_basis × param_count", &[max_basis, param_count])?;
        Ok(GradientProjection {
            p: param_count,
            max_basis,
            basis: Vec::new(),
        })
    }

    pub fn param_count(&self) -> usize {
        self.p
    }

    /// Directions currently in the basis.
    pub fn basis_size(&self) -> usize {
        self.basis.len() / self.p
    }

    /// The basis, `basis_size × P` row-major, orthonormal rows.
    pub fn basis(&self) -> &[f32] {
        &self.basis
    }

    /// `g ← g − V Vᵀ g` in place. A gradient so large that its coefficients overflow `f32` is
    /// `Numerical` (then `grad` holds unspecified values).
    pub fn project(&self, grad: &mut [f32]) -> Result<()> {
        check_len("grad", grad, self.p)?;
        self.project_each_row("grad", grad)
    }

    /// `G ← G − G Vᵀ V` for a row-major block `G` of `P`-wide rows: the layer form of GPM, where
    /// the basis spans a layer's inputs and every output row of the weight gradient is projected
    /// (Saha et al. 2021). Errors as [`project`](Self::project).
    pub fn project_rows(&self, block: &mut [f32]) -> Result<()> {
        if !block.len().is_multiple_of(self.p) {
            return Err(SonaError::Dimension {
                what: "block".into(),
                expected: format!("rows of {}", self.p),
                got: format!("{} values", block.len()),
            });
        }
        self.project_each_row("block", block)
    }

    /// The body of [`project`](Self::project) and [`project_rows`](Self::project_rows) once the
    /// length is checked: finite input, every `P`-wide row projected, finite output.
    fn project_each_row(&self, what: &str, block: &mut [f32]) -> Result<()> {
        check_finite(what, block)?;
        for row in block.chunks_exact_mut(self.p) {
            self.project_unchecked(row);
        }
        if !kernels::all_finite(block) {
            return Err(SonaError::Numerical(
                "projected gradient overflowed f32 (rescale the gradient)".into(),
            ));
        }
        Ok(())
    }

    fn project_unchecked(&self, grad: &mut [f32]) {
        let k = self.basis_size();
        if k == 0 {
            return;
        }
        let mut c = vec![0.0f32; k];
        kernels::matvec(&self.basis, k, self.p, grad, &mut c);
        for (ci, row) in c.iter().zip(self.basis.chunks_exact(self.p)) {
            kernels::axpy(-ci, row, grad);
        }
    }

    /// Adds the directions of `m` (`rows × P`) needed for the basis to capture `threshold ∈ (0, 1]` of
    /// `‖m‖²_F`. Returns how many directions were added (0 if already captured or the basis is full).
    pub fn add(&mut self, m: &[f32], rows: usize, threshold: f32) -> Result<usize> {
        check_matrix("m", m, rows, self.p)?;
        if rows == 0 || rows > MAX_ROWS {
            return Err(SonaError::invalid(format!(
                "rows must be in [1, {MAX_ROWS}], got {rows}"
            )));
        }
        if !(threshold.is_finite() && threshold > 0.0 && threshold <= 1.0) {
            return Err(SonaError::Config(format!(
                "threshold must be in (0, 1], got {threshold}"
            )));
        }
        let p = self.p;
        // Directions do not depend on scale: work on m / max|m| so energies and the Gram matrix
        // stay finite for any finite input (1e38 entries) and do not underflow for denormal ones.
        let peak = m.iter().fold(0.0f32, |a, x| a.max(x.abs()));
        if peak == 0.0 {
            return Ok(0);
        }
        let mut resid: Vec<f32> = Vec::new();
        resid
            .try_reserve_exact(m.len())
            .map_err(|_| SonaError::Config(format!("m: cannot allocate {} floats", m.len())))?;
        resid.extend(m.iter().map(|x| x / peak));
        let total: f64 = resid
            .chunks_exact(p)
            .map(|r| kernels::norm_sq(r) as f64)
            .sum();
        // Residual of every row after removing what the basis already spans.
        for row in resid.chunks_exact_mut(p) {
            self.project_unchecked(row);
        }
        let resid_energy: f64 = resid
            .chunks_exact(p)
            .map(|r| kernels::norm_sq(r) as f64)
            .sum();
        let mut captured = (total - resid_energy).max(0.0);
        let target = threshold as f64 * total;
        if captured >= target {
            return Ok(0);
        }
        // Gram matrix of the residual rows and its eigenpairs (σ², u), largest first.
        let mut gram = vec![0.0f64; rows * rows];
        for i in 0..rows {
            for j in 0..=i {
                let v = kernels::dot(&resid[i * p..(i + 1) * p], &resid[j * p..(j + 1) * p]) as f64;
                gram[i * rows + j] = v;
                gram[j * rows + i] = v;
            }
        }
        let (vals, vecs) = sym_eigen(&gram, rows).ok_or_else(|| {
            SonaError::Numerical(
                "gradient projection: the Gram eigensolver did not converge".into(),
            )
        })?;
        let mut order: Vec<usize> = (0..rows).collect();
        order.sort_by(|&a, &b| vals[b].total_cmp(&vals[a]));
        let mut added = 0;
        for &e in &order {
            if captured >= target || self.basis_size() >= self.max_basis {
                break;
            }
            let s2 = vals[e];
            if s2 <= 1e-12 * total {
                break;
            }
            // Right singular vector: v = Rᵀ u / σ, re-orthogonalised against the basis for stability.
            let mut v = vec![0.0f32; p];
            for (i, row) in resid.chunks_exact(p).enumerate() {
                let ui = vecs[i * rows + e] as f32;
                if ui != 0.0 {
                    kernels::axpy(ui, row, &mut v);
                }
            }
            self.project_unchecked(&mut v);
            let n = kernels::normalize(&mut v);
            if !(n > 0.0 && n.is_finite()) {
                continue;
            }
            self.basis.extend_from_slice(&v);
            captured += s2;
            added += 1;
        }
        Ok(added)
    }
}

/// Eigen-decomposition of a symmetric `n × n` matrix (`nalgebra`'s symmetric QR algorithm).
/// Returns the eigenvalues (unordered) and the eigenvectors as columns of a row-major `n × n`
/// matrix; `None` for non-finite input.
pub(crate) fn sym_eigen(a: &[f64], n: usize) -> Option<(Vec<f64>, Vec<f64>)> {
    if !a.iter().all(|x| x.is_finite()) {
        return None;
    }
    // Never reached on finite input; bounds the work on anything else.
    let max_iterations = 1000 * n.max(1);
    let evd = nalgebra::DMatrix::from_column_slice(n, n, a)
        .try_symmetric_eigen(f64::EPSILON, max_iterations)?;
    let vals: Vec<f64> = evd.eigenvalues.iter().copied().collect();
    let mut vecs = vec![0.0; n * n];
    for i in 0..n {
        for e in 0..n {
            vecs[i * n + e] = evd.eigenvectors[(i, e)];
        }
    }
    Some((vals, vecs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sona_core::SeededRng;

    #[test]
    fn sym_eigen_recovers_eigenpairs() {
        let a = vec![4.0, 1.0, 2.0, 1.0, 3.0, 0.5, 2.0, 0.5, 5.0];
        let orig = a.clone();
        let (vals, vecs) = sym_eigen(&a, 3).unwrap();
        for e in 0..3 {
            for i in 0..3 {
                let av: f64 = (0..3).map(|j| orig[i * 3 + j] * vecs[j * 3 + e]).sum();
                assert!((av - vals[e] * vecs[i * 3 + e]).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn sym_eigen_of_non_finite_input_is_none() {
        for bad in [f64::NAN, f64::INFINITY] {
            let a = vec![1.0, bad, bad, 2.0];
            assert!(sym_eigen(&a, 2).is_none());
        }
    }

    #[test]
    fn basis_is_orthonormal_and_projection_removes_its_span() {
        let (p, r) = (200, 6);
        let mut rng = SeededRng::new(1);
        // Rows lie in a 3-dimensional subspace.
        let mut span = vec![0.0; 3 * p];
        rng.fill_normal(&mut span, 1.0);
        let mut m = vec![0.0f32; r * p];
        for i in 0..r {
            for k in 0..3 {
                let c = rng.normal();
                kernels::axpy(c, &span[k * p..(k + 1) * p], &mut m[i * p..(i + 1) * p]);
            }
        }
        let mut gpm = GradientProjection::new(p, 50).unwrap();
        let added = gpm.add(&m, r, 0.999).unwrap();
        assert_eq!(added, 3);
        let b = gpm.basis();
        for i in 0..3 {
            for j in 0..3 {
                let d = kernels::dot(&b[i * p..(i + 1) * p], &b[j * p..(j + 1) * p]);
                assert!((d - if i == j { 1.0 } else { 0.0 }).abs() < 1e-4);
            }
        }
        // A gradient inside the span projects to ~0; one orthogonal to it is unchanged.
        let mut g = m[..p].to_vec();
        gpm.project(&mut g).unwrap();
        assert!(kernels::norm_sq(&g) < 1e-6 * kernels::norm_sq(&m[..p]));
        // Adding the same data again adds nothing.
        assert_eq!(gpm.add(&m, r, 0.999).unwrap(), 0);
        // Bad input.
        assert!(gpm.add(&m, r, 1.5).is_err());
        assert!(gpm.add(&m[..p * r - 1], r, 0.9).is_err());
        assert!(gpm.project(&mut [0.0; 3]).is_err());
        assert!(GradientProjection::new(10, 11).is_err());
        assert!(GradientProjection::new(0, 1).is_err());
    }

    #[test]
    fn project_rows_keeps_the_layer_output_on_protected_inputs() {
        // Inputs of an earlier task span e0, e1; a weight update projected row by row leaves the
        // layer's output on them unchanged and keeps what acts on e2.
        let p = 4;
        let mut gpm = GradientProjection::new(p, p).unwrap();
        gpm.add(&[1.0, 2.0, 0.0, 0.0, -1.0, 0.5, 0.0, 0.0], 2, 1.0)
            .unwrap();
        let mut g = vec![1.0, 2.0, 3.0, 4.0, -1.0, 0.5, 0.25, 0.0];
        gpm.project_rows(&mut g).unwrap();
        for row in g.chunks_exact(p) {
            assert!(row[0].abs() < 1e-6 && row[1].abs() < 1e-6, "{row:?}");
        }
        assert_eq!((g[2], g[3], g[6]), (3.0, 4.0, 0.25));
        assert!(gpm.project_rows(&mut [0.0; 5]).is_err());
        let mut nan = [0.0, f32::NAN, 0.0, 0.0];
        assert!(matches!(
            gpm.project_rows(&mut nan),
            Err(SonaError::NonFinite { index: 1, .. })
        ));
    }

    #[test]
    fn threshold_limits_the_number_of_directions() {
        let p = 100;
        let mut m = vec![0.0f32; 2 * p];
        m[0] = 10.0; // row 0 along e0 with energy 100
        m[p + 1] = 1.0; // row 1 along e1 with energy 1
        let mut gpm = GradientProjection::new(p, 10).unwrap();
        assert_eq!(gpm.add(&m, 2, 0.9).unwrap(), 1);
        assert!((gpm.basis()[0].abs() - 1.0).abs() < 1e-6);
    }
}
