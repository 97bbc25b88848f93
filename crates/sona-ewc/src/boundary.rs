//! Task-boundary detection on a stream of input vectors.
//!
//! Two **non-overlapping** windows slide over the stream: a *reference* window of the `n_b` samples
//! before a *recent* window of the last `n_r` samples. After every sample (once both are full) the
//! two-sample statistic
//!
//! ```text
//! S = Σ_j (μ_r,j − μ_b,j)² / (σ²_b,j · (1/n_r + 1/n_b))
//! ```
//!
//! is compared with an upper quantile. With σ² known, `S ~ χ²_d` under "no change". Here σ²_b is
//! estimated from the reference window, so each term is a squared Student t with `ν = n_b − 1` degrees
//! of freedom (mean `ν/(ν−2)`, heavier tail), and the plain χ²_d quantile would fire far too often.
//! The threshold is therefore the upper-α quantile of the scaled `c·χ²_h` matching the mean and
//! variance of a sum of `d` independent `t²_ν` (Satterthwaite), with the χ² quantile from `statrs`
//! ([`sona_core::stats::chi2_quantile`]). A boundary is declared after `K` consecutive checks over the threshold; the windows
//! are then emptied (the new distribution becomes the next reference) and checks pause for `cooldown`
//! samples.
//!
//! The parameters to protect are those *before* the change, not at detection (by then the model has
//! trained on new-task data for a while). When given parameter snapshots, the detector keeps a few and,
//! on detection, returns the newest one taken no later than the start of the recent window at the
//! first of the `K` hits: everything after that point is what the test judged to be new.
//!
//! The null assumes roughly independent coordinates. Real inputs (images, embeddings) are correlated
//! and the raw test then fires far too often (measured: 11 % of checks on digit pixels), so with
//! `components = k > 0` the test runs on the top-`k` principal components of the reference window
//! instead, fitted once per distribution (when the windows first fill after a boundary).

use std::collections::VecDeque;

use sona_core::stats::chi2_quantile;
use sona_core::validate::{
    check_matrix, check_size, check_vec, element_count, try_zeros, MAX_DIM, MAX_ELEMENTS,
};
use sona_core::{Result, SonaError};

/// Largest recent or reference window.
pub const MAX_WINDOW: usize = 1 << 20;
/// Largest reference window in PCA mode (the basis is fitted from an `n_b × n_b` Gram matrix).
pub const MAX_PCA_REFERENCE: usize = 4096;
/// Largest accepted `|x_i|`: keeps the `f32` window statistics and PCA projections of up to
/// [`MAX_DIM`] coordinates finite (`MAX_DIM · (2·MAX_INPUT)²` is far below `f32::MAX`).
pub const MAX_INPUT: f32 = 1e15;

/// Refuses inputs whose statistics `f32` cannot hold (before any state changes).
fn check_magnitude(what: &str, x: &[f32]) -> Result<()> {
    match x.iter().position(|v| v.abs() > MAX_INPUT) {
        None => Ok(()),
        Some(i) => Err(SonaError::Numerical(format!(
            "{what}[{i}] = {} exceeds {MAX_INPUT:e}: rescale the inputs",
            x[i]
        ))),
    }
}

/// Hyper-parameters of [`TaskBoundaryDetector`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoundaryConfig {
    /// Recent window size `n_r`.
    pub window: usize,
    /// Reference window size `n_b` (≥ 10: σ² is estimated from it).
    pub reference: usize,
    /// Nominal false-positive probability of one check.
    pub alpha: f64,
    /// `K`: consecutive checks over the threshold needed to declare a boundary.
    pub consecutive: usize,
    /// Samples after a detection during which no check runs (refilling the windows also takes
    /// `window + reference` samples, whichever is longer applies).
    pub cooldown: usize,
    /// Take a parameter snapshot every this many samples (when parameters are passed).
    pub snapshot_every: usize,
    /// Reference variances at or below this count as zero (a constant coordinate).
    pub var_floor: f64,
    /// `k > 0`: test the top-`k` principal components of the reference window instead of the raw
    /// coordinates (for correlated or sparse inputs, where the independent-coordinate null fails).
    pub components: usize,
}

impl Default for BoundaryConfig {
    fn default() -> Self {
        BoundaryConfig {
            window: 100,
            reference: 200,
            alpha: 1e-4,
            consecutive: 3,
            cooldown: 0,
            snapshot_every: 25,
            var_floor: 1e-10,
            components: 0,
        }
    }
}

impl BoundaryConfig {
    fn validate(&self) -> Result<()> {
        let cfg = |m: String| Err(SonaError::Config(m));
        check_size("window", self.window, 2, MAX_WINDOW)?;
        check_size("reference", self.reference, 10, MAX_WINDOW)?;
        check_size("consecutive", self.consecutive, 1, u32::MAX as usize)?;
        if self.components > 0 {
            check_size(
                "reference (with components > 0)",
                self.reference,
                10,
                MAX_PCA_REFERENCE,
            )?;
        }
        if !(self.alpha > 0.0 && self.alpha < 0.5) {
            return cfg(format!("alpha must be in (0, 0.5), got {}", self.alpha));
        }
        if self.consecutive == 0 {
            return cfg("consecutive must be ≥ 1".into());
        }
        if self.snapshot_every == 0 {
            return cfg("snapshot_every must be ≥ 1".into());
        }
        if self.components >= self.reference {
            return cfg(format!(
                "components must be < reference ({}), got {}",
                self.reference, self.components
            ));
        }
        if !(self.var_floor.is_finite() && self.var_floor > 0.0) {
            return cfg(format!("var_floor must be > 0, got {}", self.var_floor));
        }
        Ok(())
    }
}

/// Streaming detector of input-distribution changes (see the module docs).
#[derive(Debug, Clone)]
pub struct TaskBoundaryDetector {
    dim: usize,
    cfg: BoundaryConfig,
    /// The threshold for the last seen number of active coordinates (a χ² quantile costs ~µs, and
    /// that number rarely changes).
    threshold_for: Option<(usize, f64)>,
    /// Width of the tested features: `dim`, or `components` once the PCA basis is fitted.
    width: usize,
    /// Features of the samples in both windows (`(window + reference) × width`, a ring).
    ring: Vec<f32>,
    /// PCA mode only: raw samples buffered until the first fit after a flush (`cap × dim`).
    raw: Vec<f32>,
    /// PCA mode only: the `components × dim` orthonormal basis (empty until fitted).
    basis: Vec<f32>,
    /// Samples in the windows since the last flush.
    filled: usize,
    sum_r: Vec<f64>,
    sum_b: Vec<f64>,
    sq_b: Vec<f64>,
    observed: u64,
    cooldown_left: usize,
    hits: usize,
    last_stat: f64,
    last_threshold: f64,
    checks: u64,
    exceedances: u64,
    detections: u64,
    last_boundary: Option<u64>,
    param_count: usize,
    snapshots: VecDeque<(u64, Vec<f32>)>,
    stable: Option<(u64, Vec<f32>)>,
}

impl TaskBoundaryDetector {
    /// A detector over `dim`-dimensional inputs. `param_count > 0` enables parameter snapshots.
    pub fn new(dim: usize, param_count: usize, cfg: BoundaryConfig) -> Result<Self> {
        check_size("dim", dim, 1, MAX_DIM)?;
        check_size("param_count", param_count, 0, MAX_ELEMENTS)?;
        cfg.validate()?;
        if cfg.components > dim {
            return Err(SonaError::Config(format!(
                "components must be ≤ dim ({dim}), got {}",
                cfg.components
            )));
        }
        let cap = cfg.window + cfg.reference;
        let pca = cfg.components > 0;
        let width = if pca { cfg.components } else { dim };
        let ring = element_count("(window + reference) × width", &[cap, width])?;
        let raw = if pca {
            element_count("(window + reference) × dim", &[cap, dim])?
        } else {
            0
        };
        Ok(TaskBoundaryDetector {
            dim,
            cfg,
            threshold_for: None,
            width,
            ring: try_zeros("window ring", ring)?,
            raw: try_zeros("raw window buffer", raw)?,
            basis: Vec::new(),
            filled: 0,
            sum_r: vec![0.0; width],
            sum_b: vec![0.0; width],
            sq_b: vec![0.0; width],
            observed: 0,
            cooldown_left: 0,
            hits: 0,
            last_stat: 0.0,
            last_threshold: f64::NAN,
            checks: 0,
            exceedances: 0,
            detections: 0,
            last_boundary: None,
            param_count,
            snapshots: VecDeque::new(),
            stable: None,
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn config(&self) -> BoundaryConfig {
        self.cfg
    }

    /// Samples observed in total.
    pub fn observed(&self) -> u64 {
        self.observed
    }

    /// Checks run so far (one per sample while armed).
    pub fn checks(&self) -> u64 {
        self.checks
    }

    /// Checks whose statistic exceeded the threshold (before the `K`-consecutive rule).
    pub fn exceedances(&self) -> u64 {
        self.exceedances
    }

    /// Boundaries declared so far.
    pub fn detections(&self) -> u64 {
        self.detections
    }

    /// The statistic and threshold of the last check (`NaN` threshold before the first check).
    pub fn last_check(&self) -> (f64, f64) {
        (self.last_stat, self.last_threshold)
    }

    /// Index (0-based) of the sample at which the last boundary was declared.
    pub fn last_boundary(&self) -> Option<u64> {
        self.last_boundary
    }

    /// After a detection: the sample index of the stable snapshot and the parameters then.
    pub fn stable_snapshot(&self) -> Option<(u64, &[f32])> {
        self.stable.as_ref().map(|(i, v)| (*i, v.as_slice()))
    }

    fn cap(&self) -> usize {
        self.cfg.window + self.cfg.reference
    }

    fn row(&self, slot: usize) -> &[f32] {
        &self.ring[slot * self.width..(slot + 1) * self.width]
    }

    fn flush(&mut self) {
        self.filled = 0;
        // A new distribution gets its own principal components.
        self.basis.clear();
        self.sum_r.fill(0.0);
        self.sum_b.fill(0.0);
        self.sq_b.fill(0.0);
        self.hits = 0;
    }

    /// Recomputes the window sums from the stored samples (bounds floating-point drift).
    fn resum(&mut self) {
        let (cap, nr) = (self.cap(), self.cfg.window);
        self.sum_r.fill(0.0);
        self.sum_b.fill(0.0);
        self.sq_b.fill(0.0);
        let n = self.filled.min(cap);
        for age in 0..n {
            // age 0 is the newest sample.
            let slot = (self.filled - 1 - age) % cap;
            let d = self.width;
            let row = &self.ring[slot * d..(slot + 1) * d];
            if age < nr {
                for (s, &x) in self.sum_r.iter_mut().zip(row) {
                    *s += x as f64;
                }
            } else {
                for ((s, q), &x) in self.sum_b.iter_mut().zip(self.sq_b.iter_mut()).zip(row) {
                    *s += x as f64;
                    *q += x as f64 * x as f64;
                }
            }
        }
    }

    /// The statistic `S` and its threshold for the current windows.
    fn statistic(&mut self) -> (f64, f64) {
        let (nr, nb) = (self.cfg.window as f64, self.cfg.reference as f64);
        let c = 1.0 / nr + 1.0 / nb;
        let mut stat = 0.0;
        let mut active = 0usize;
        for j in 0..self.width {
            let mb = self.sum_b[j] / nb;
            let var = ((self.sq_b[j] - self.sum_b[j] * mb) / (nb - 1.0)).max(0.0);
            let diff = self.sum_r[j] / nr - mb;
            if var > self.cfg.var_floor {
                active += 1;
                stat += diff * diff / (var * c);
            } else {
                // A coordinate constant in the reference: any real move of its mean is a change.
                stat += diff * diff / (self.cfg.var_floor * c);
            }
        }
        let threshold = match self.threshold_for {
            Some((n, t)) if n == active => t,
            _ => {
                let t = t2_sum_quantile(active, nb - 1.0, self.cfg.alpha);
                self.threshold_for = Some((active, t));
                t
            }
        };
        (stat, threshold)
    }

    fn take_snapshot(&mut self, index: u64, theta: &[f32]) {
        let horizon = (self.cfg.window + self.cfg.consecutive) as u64;
        self.snapshots.push_back((index, theta.to_vec()));
        // Keep exactly one snapshot older than the horizon: the candidate stable point.
        while self.snapshots.len() >= 2 && self.snapshots[1].0 + horizon <= index {
            self.snapshots.pop_front();
        }
    }

    /// Feeds one input vector (and optionally the current parameters, taken *before* training on
    /// it). Returns `true` when a task boundary is declared at this sample.
    pub fn observe(&mut self, x: &[f32], theta: Option<&[f32]>) -> Result<bool> {
        check_vec("x", x, self.dim)?;
        check_magnitude("x", x)?;
        if let Some(t) = theta {
            if self.param_count == 0 {
                return Err(SonaError::invalid(
                    "theta given but the detector was created with param_count = 0",
                ));
            }
            check_vec("theta", t, self.param_count)?;
        }
        Ok(self.observe_unchecked(x, theta))
    }

    /// Feeds `rows` inputs (`rows × dim`, validated first); returns the indices of declared boundaries.
    pub fn observe_batch(&mut self, xs: &[f32], rows: usize) -> Result<Vec<u64>> {
        check_matrix("xs", xs, rows, self.dim)?;
        check_magnitude("xs", xs)?;
        let mut out = Vec::new();
        for r in 0..rows {
            let x = &xs[r * self.dim..(r + 1) * self.dim];
            if self.observe_unchecked(x, None) {
                out.push(self.observed - 1);
            }
        }
        Ok(out)
    }

    fn observe_unchecked(&mut self, x: &[f32], theta: Option<&[f32]>) -> bool {
        let index = self.observed;
        self.observed += 1;
        if let Some(t) = theta {
            if index.is_multiple_of(self.cfg.snapshot_every as u64) {
                self.take_snapshot(index, t);
            }
        }
        let (cap, nr, d) = (self.cap(), self.cfg.window, self.width);
        let m = self.filled;
        let projected;
        let x: &[f32] = if self.cfg.components == 0 {
            x
        } else if self.basis.is_empty() {
            // Buffer raw samples until both windows are full, then fit the basis on the reference.
            let dim = self.dim;
            self.raw[(m % cap) * dim..(m % cap + 1) * dim].copy_from_slice(x);
            self.filled += 1;
            let cooling = self.cooldown_left > 0;
            self.cooldown_left = self.cooldown_left.saturating_sub(1);
            if self.filled < cap {
                return false;
            }
            self.fit_pca();
            return !cooling && self.check(index);
        } else {
            projected = self.project(x);
            &projected
        };
        if m >= cap {
            // The oldest reference sample leaves (its slot is about to be reused).
            let slot = m % cap;
            for j in 0..d {
                let v = self.ring[slot * d + j] as f64;
                self.sum_b[j] -= v;
                self.sq_b[j] -= v * v;
            }
        }
        if m >= nr {
            // The oldest recent sample moves into the reference window.
            let slot = (m - nr) % cap;
            for j in 0..d {
                let v = self.row(slot)[j] as f64;
                self.sum_r[j] -= v;
                self.sum_b[j] += v;
                self.sq_b[j] += v * v;
            }
        }
        let slot = m % cap;
        self.ring[slot * d..(slot + 1) * d].copy_from_slice(x);
        for (s, &v) in self.sum_r.iter_mut().zip(x) {
            *s += v as f64;
        }
        self.filled += 1;
        if self.filled.is_multiple_of(cap) {
            self.resum();
        }
        if self.cooldown_left > 0 {
            self.cooldown_left -= 1;
            return false;
        }
        if self.filled < cap {
            return false;
        }
        self.check(index)
    }

    /// `basis · x` (the PCA features of one raw sample).
    fn project(&self, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0f32; self.width];
        sona_core::kernels::matvec(&self.basis, self.width, self.dim, x, &mut out);
        out
    }

    /// Fits the top-`k` principal components of the reference window (the oldest `reference`
    /// buffered samples) through the `n_b × n_b` Gram matrix of the centred rows, then projects every
    /// buffered sample into the feature ring and recomputes the window sums.
    fn fit_pca(&mut self) {
        let (dim, nb, k, cap) = (self.dim, self.cfg.reference, self.width, self.cap());
        // Right after a flush the buffer was filled from slot 0, so slots 0..nb are the reference.
        let mut mean = vec![0.0f32; dim];
        for r in 0..nb {
            sona_core::kernels::axpy(
                1.0 / nb as f32,
                &self.raw[r * dim..(r + 1) * dim],
                &mut mean,
            );
        }
        let mut centred = self.raw[..nb * dim].to_vec();
        for row in centred.chunks_exact_mut(dim) {
            sona_core::kernels::axpy(-1.0, &mean, row);
        }
        let mut gram = vec![0.0f64; nb * nb];
        for i in 0..nb {
            for j in 0..=i {
                let v = sona_core::kernels::dot(
                    &centred[i * dim..(i + 1) * dim],
                    &centred[j * dim..(j + 1) * dim],
                ) as f64;
                gram[i * nb + j] = v;
                gram[j * nb + i] = v;
            }
        }
        // A Gram matrix with overflowed entries has no spectrum: no informative direction (below).
        let (vals, vecs) =
            crate::gpm::sym_eigen(&gram, nb).unwrap_or_else(|| (vec![0.0; nb], vec![0.0; nb * nb]));
        let mut order: Vec<usize> = (0..nb).collect();
        order.sort_by(|&a, &b| vals[b].total_cmp(&vals[a]));
        let mut basis = Vec::with_capacity(k * dim);
        for &e in order.iter().take(k) {
            let mut v = vec![0.0f32; dim];
            for (i, row) in centred.chunks_exact(dim).enumerate() {
                sona_core::kernels::axpy(vecs[i * nb + e] as f32, row, &mut v);
            }
            // Gram–Schmidt against the kept directions keeps the basis orthonormal in f32.
            for b in basis.chunks_exact(dim) {
                let c = sona_core::kernels::dot(b, &v);
                sona_core::kernels::axpy(-c, b, &mut v);
            }
            if sona_core::kernels::normalize(&mut v) <= 0.0 {
                // Fewer informative directions than asked for: a zero feature is constant, which
                // the statistic leaves out of its degrees of freedom.
                v.fill(0.0);
            }
            basis.extend_from_slice(&v);
        }
        self.basis = basis;
        for slot in 0..cap {
            let f = self.project(&self.raw[slot * dim..(slot + 1) * dim]);
            self.ring[slot * k..(slot + 1) * k].copy_from_slice(&f);
        }
        self.resum();
    }

    /// Runs one test on the current windows and applies the K-consecutive rule.
    fn check(&mut self, index: u64) -> bool {
        let nr = self.cfg.window;
        let (stat, thr) = self.statistic();
        self.checks += 1;
        self.last_stat = stat;
        self.last_threshold = thr;
        if stat <= thr {
            self.hits = 0;
            return false;
        }
        self.exceedances += 1;
        self.hits += 1;
        if self.hits < self.cfg.consecutive {
            return false;
        }
        // Declared. The first hit was at index − (K−1); its recent window began at that − n_r + 1.
        let first_hit = index + 1 - self.cfg.consecutive as u64;
        let start = (first_hit + 1).saturating_sub(nr as u64);
        self.stable = self
            .snapshots
            .iter()
            .rev()
            .find(|(i, _)| *i <= start)
            .cloned();
        self.snapshots.clear();
        self.detections += 1;
        self.last_boundary = Some(index);
        self.cooldown_left = self.cfg.cooldown;
        self.flush();
        true
    }
}

/// Upper-`alpha` threshold for a sum of `d` independent `t²_ν` variables: the moment-matched
/// `c·χ²_h` (Satterthwaite) and its exact χ² quantile.
pub fn t2_sum_quantile(d: usize, nu: f64, alpha: f64) -> f64 {
    if d == 0 {
        return 0.0;
    }
    let d = d as f64;
    // Moments of t²_ν = F(1, ν); ν > 4 is guaranteed by reference ≥ 10.
    let mean1 = nu / (nu - 2.0);
    let var1 = 2.0 * nu * nu * (nu - 1.0) / ((nu - 2.0).powi(2) * (nu - 4.0));
    let (mean, var) = (d * mean1, d * var1);
    let c = var / (2.0 * mean);
    let h = 2.0 * mean * mean / var;
    c * chi2_quantile(1.0 - alpha, h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sona_core::SeededRng;

    fn sample(rng: &mut SeededRng, d: usize, shift: f32, shifted: usize) -> Vec<f32> {
        let mut x = vec![0.0; d];
        rng.fill_normal(&mut x, 1.0);
        for v in x.iter_mut().take(shifted) {
            *v += shift;
        }
        x
    }

    #[test]
    fn quantiles_are_right() {
        // (The normal and χ² quantiles themselves are tested in `sona_core::stats`.)
        // With ν → ∞ the t² sum tends to χ²_d: χ²_100 upper 1% is 135.807.
        let q = t2_sum_quantile(100, 1e7, 0.01);
        assert!((q - 135.807).abs() < 0.3, "{q}");
        // Estimated variance (small ν) needs a higher threshold (α = P(N(0,1) > 2)).
        let alpha = 0.022_750_131_948_179_2;
        assert!(t2_sum_quantile(100, 20.0, alpha) > t2_sum_quantile(100, 1e7, alpha) + 5.0);
    }

    #[test]
    fn detects_half_sigma_shift_on_10_percent_of_768_dims_within_200_samples() {
        let d = 768;
        let mut delays = vec![];
        for seed in 0..5 {
            let mut rng = SeededRng::new(100 + seed);
            let mut det = TaskBoundaryDetector::new(d, 0, BoundaryConfig::default()).unwrap();
            for _ in 0..600 {
                assert!(!det.observe(&sample(&mut rng, d, 0.0, 0), None).unwrap());
            }
            let mut found = None;
            for t in 0..400 {
                if det
                    .observe(&sample(&mut rng, d, 0.5, d / 10), None)
                    .unwrap()
                {
                    found = Some(t + 1);
                    break;
                }
            }
            let delay = found.expect("shift not detected");
            assert!(delay <= 200, "delay {delay}");
            delays.push(delay);
        }
        eprintln!("detection delays: {delays:?}");
    }

    #[test]
    fn false_positives_on_stationary_data_are_below_1e_3_per_check() {
        let d = 768;
        let mut rng = SeededRng::new(9);
        let mut det = TaskBoundaryDetector::new(d, 0, BoundaryConfig::default()).unwrap();
        let n = 12_300;
        let mut xs = vec![0.0; 100 * d];
        let mut detections = 0;
        for _ in 0..n / 100 {
            rng.fill_normal(&mut xs, 1.0);
            detections += det.observe_batch(&xs, 100).unwrap().len();
        }
        let checks = det.checks();
        assert!(checks >= 12_000);
        let rate = det.exceedances() as f64 / checks as f64;
        eprintln!(
            "{checks} checks: {} exceedances, {detections} detections",
            det.exceedances()
        );
        assert!(rate < 1e-3, "per-check exceedance rate {rate}");
        assert!((detections as f64) / (checks as f64) < 1e-3);
    }

    #[test]
    fn threshold_is_calibrated_at_a_loose_level() {
        // At α = 0.05 events are frequent enough to measure the per-check rate directly.
        let d = 256;
        let cfg = BoundaryConfig {
            window: 50,
            reference: 50,
            alpha: 0.05,
            consecutive: 1_000_000,
            ..Default::default()
        };
        let mut rng = SeededRng::new(3);
        let mut det = TaskBoundaryDetector::new(d, 0, cfg).unwrap();
        let mut xs = vec![0.0; 100 * d];
        for _ in 0..200 {
            rng.fill_normal(&mut xs, 1.0);
            det.observe_batch(&xs, 100).unwrap();
        }
        let rate = det.exceedances() as f64 / det.checks() as f64;
        eprintln!("nominal 0.05, measured {rate} over {} checks", det.checks());
        assert!((0.02..0.09).contains(&rate), "{rate}");
    }

    #[test]
    fn stable_snapshot_predates_the_change() {
        let d = 64;
        let mut rng = SeededRng::new(4);
        let cfg = BoundaryConfig {
            window: 50,
            reference: 100,
            snapshot_every: 10,
            ..Default::default()
        };
        let mut det = TaskBoundaryDetector::new(d, 1, cfg).unwrap();
        let change = 500u64;
        let mut detected_at = None;
        for t in 0..800u64 {
            let shift = if t >= change { 1.0 } else { 0.0 };
            // θ is just the sample index, so the snapshot tells when it was taken.
            let x = sample(&mut rng, d, shift, d / 4);
            if det.observe(&x, Some(&[t as f32])).unwrap() {
                detected_at = Some(t);
                break;
            }
        }
        let at = detected_at.expect("detected");
        let (idx, theta) = det.stable_snapshot().expect("snapshot");
        assert!(
            at > change && idx <= change,
            "detected {at}, snapshot {idx}"
        );
        assert!(change - idx <= 60, "snapshot {idx} is too old");
        assert_eq!(theta, &[idx as f32]);
        assert_eq!(det.last_boundary(), Some(at));
    }

    /// Strongly correlated inputs: `x = A z + 0.1 ε` with `z ∈ R⁸`, `A` random `d × 8`.
    fn correlated(rng: &mut SeededRng, a: &[f32], d: usize, shift: f32) -> Vec<f32> {
        let mut z = vec![0.0; 8];
        rng.fill_normal(&mut z, 1.0);
        z[0] += shift;
        let mut x = vec![0.0; d];
        rng.fill_normal(&mut x, 0.1);
        for (i, xi) in x.iter_mut().enumerate() {
            *xi += sona_core::kernels::dot(&a[i * 8..(i + 1) * 8], &z);
        }
        x
    }

    #[test]
    fn pca_mode_is_calibrated_on_correlated_inputs_where_raw_mode_is_not() {
        let d = 128;
        let mut rng = SeededRng::new(12);
        let mut a = vec![0.0; d * 8];
        rng.fill_normal(&mut a, 1.0);
        let run = |components: usize, rng: &mut SeededRng| {
            let cfg = BoundaryConfig {
                components,
                ..Default::default()
            };
            let mut det = TaskBoundaryDetector::new(d, 0, cfg).unwrap();
            for _ in 0..4000 {
                det.observe(&correlated(rng, &a, d, 0.0), None).unwrap();
            }
            let (fp, checks) = (det.detections(), det.checks());
            let mut delay = None;
            for t in 0..300 {
                if det.observe(&correlated(rng, &a, d, 1.0), None).unwrap() {
                    delay = Some(t + 1);
                    break;
                }
            }
            (fp, checks, det.exceedances(), delay)
        };
        let (raw_fp, raw_checks, raw_exc, _) = run(0, &mut rng);
        let (fp, checks, exc, delay) = run(8, &mut rng);
        eprintln!(
            "raw: {raw_fp} boundaries, {raw_exc}/{raw_checks} exceedances; \
             pca: {fp} boundaries, {exc}/{checks} exceedances, shift found after {delay:?}"
        );
        assert!(
            raw_exc as f64 / raw_checks as f64 > 0.01,
            "raw mode should misfire here"
        );
        assert_eq!(fp, 0);
        assert!((exc as f64) / (checks as f64) < 1e-3);
        assert!(delay.is_some_and(|t| t <= 200), "{delay:?}");
        assert!(TaskBoundaryDetector::new(
            4,
            0,
            BoundaryConfig {
                components: 5,
                ..Default::default()
            }
        )
        .is_err());
    }

    #[test]
    fn pca_fit_on_overflowing_inputs_does_not_panic() {
        // Finite f32 inputs whose Gram entries would overflow are refused before any state
        // changes (MAX_INPUT keeps every statistic finite), so the PCA fit never sees them.
        let cfg = BoundaryConfig {
            window: 10,
            reference: 20,
            components: 2,
            ..Default::default()
        };
        let mut det = TaskBoundaryDetector::new(4, 0, cfg).unwrap();
        let mut rng = SeededRng::new(2);
        for _ in 0..60 {
            let x = sample(&mut rng, 4, 0.0, 0);
            let huge: Vec<f32> = x.iter().map(|v| v * 1e30).collect();
            assert!(matches!(
                det.observe(&huge, None),
                Err(SonaError::Numerical(_))
            ));
            let at_bound: Vec<f32> = x
                .iter()
                .map(|v| (v * 1e14).clamp(-MAX_INPUT, MAX_INPUT))
                .collect();
            assert!(!det.observe(&at_bound, None).unwrap());
        }
        assert!(det.checks() > 0);
    }

    #[test]
    fn cooldown_pauses_checks_and_windows_refill_from_new_data() {
        let d = 32;
        let cfg = BoundaryConfig {
            window: 20,
            reference: 40,
            cooldown: 200,
            ..Default::default()
        };
        let mut rng = SeededRng::new(8);
        let mut det = TaskBoundaryDetector::new(d, 0, cfg).unwrap();
        for _ in 0..200 {
            det.observe(&sample(&mut rng, d, 0.0, 0), None).unwrap();
        }
        let mut t = 0;
        while !det.observe(&sample(&mut rng, d, 2.0, d), None).unwrap() {
            t += 1;
            assert!(t < 100, "not detected");
        }
        let checks = det.checks();
        // The shifted distribution continues: during the cooldown nothing is checked, and once the
        // windows hold only new data it is the new normal (no second boundary).
        for _ in 0..200 {
            assert!(!det.observe(&sample(&mut rng, d, 2.0, d), None).unwrap());
        }
        assert_eq!(det.checks(), checks, "no checks during cooldown");
        for _ in 0..500 {
            assert!(!det.observe(&sample(&mut rng, d, 2.0, d), None).unwrap());
        }
        assert!(det.checks() > checks + 400);
        assert_eq!(det.detections(), 1);
    }

    #[test]
    fn windows_refill_after_detection_and_bad_input_is_rejected() {
        let mut det = TaskBoundaryDetector::new(4, 0, BoundaryConfig::default()).unwrap();
        assert!(det.observe(&[0.0; 3], None).is_err());
        assert!(det.observe(&[0.0, f32::NAN, 0.0, 0.0], None).is_err());
        assert!(det.observe(&[0.0; 4], Some(&[1.0])).is_err());
        assert!(det.observe_batch(&[0.0; 7], 2).is_err());
        assert_eq!(det.observed(), 0);
        assert!(TaskBoundaryDetector::new(0, 0, BoundaryConfig::default()).is_err());
        for bad in [
            BoundaryConfig {
                window: 1,
                ..Default::default()
            },
            BoundaryConfig {
                reference: 5,
                ..Default::default()
            },
            BoundaryConfig {
                alpha: 0.0,
                ..Default::default()
            },
            BoundaryConfig {
                alpha: f64::NAN,
                ..Default::default()
            },
            BoundaryConfig {
                consecutive: 0,
                ..Default::default()
            },
        ] {
            assert!(TaskBoundaryDetector::new(4, 0, bad).is_err());
        }
    }
}
