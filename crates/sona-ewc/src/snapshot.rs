//! The end-of-task Fisher: one pass over a finished task's data at its converged parameters θ*.
//!
//! The online estimate ([`crate::OnlineFisher`]) is collected along the training trajectory, so it
//! mixes gradients taken before the task converged; EWC's Laplace argument asks for the curvature
//! *at θ\**. [`TaskFisher`] is the exact weighted mean `Σ_r w_r g_r² / Σ_r w_r` of per-sample
//! gradients taken there (weights let a caller pass the expected Fisher `Σ_c p_c g_c²` as one
//! gradient per class weighted by its probability). [`crate::EwcPlusPlus::consolidate_from`] folds it
//! into the quadratic, optionally blended with the online estimate.
//!
//! Sums are kept in `f64` (a task may have many thousands of samples) and every stored value is
//! finite: gradients with `|g| >` [`crate::fisher::MAX_GRAD`] are refused before anything changes.

use sona_core::validate::{check_size, check_vec, try_zeros, MAX_ELEMENTS};
use sona_core::{Result, SonaError};

use crate::fisher::check_grad_magnitude;

/// The exact weighted mean of squared per-sample gradients over `P` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFisher {
    sum: Vec<f64>,
    weight: f64,
    samples: u64,
}

impl TaskFisher {
    /// An empty accumulator over `param_count` parameters.
    pub fn new(param_count: usize) -> Result<Self> {
        check_size("param_count", param_count, 1, MAX_ELEMENTS)?;
        let mut sum = Vec::new();
        sum.try_reserve_exact(param_count)
            .map_err(|_| SonaError::invalid("param_count: allocation failed"))?;
        sum.resize(param_count, 0.0);
        Ok(TaskFisher {
            sum,
            weight: 0.0,
            samples: 0,
        })
    }

    pub fn param_count(&self) -> usize {
        self.sum.len()
    }

    /// Gradients added (of any weight > 0).
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Total weight added.
    pub fn total_weight(&self) -> f64 {
        self.weight
    }

    /// Adds `weight · g²` (`g` finite, length `P`; `weight` finite and ≥ 0; a zero weight is a
    /// no-op). Bad input changes nothing.
    pub fn add(&mut self, grad: &[f32], weight: f32) -> Result<()> {
        check_vec("grad", grad, self.sum.len())?;
        check_grad_magnitude("grad", grad)?;
        if !(weight.is_finite() && weight >= 0.0) {
            return Err(SonaError::invalid(format!(
                "weight must be finite and >= 0, got {weight}"
            )));
        }
        if weight == 0.0 {
            return Ok(());
        }
        let w = f64::from(weight);
        for (s, &g) in self.sum.iter_mut().zip(grad) {
            let g = f64::from(g);
            *s += w * g * g;
        }
        self.weight += w;
        self.samples = self.samples.saturating_add(1);
        Ok(())
    }

    /// The weighted mean `Σ w g² / Σ w`. Fails with `InvalidInput` when nothing was added (an empty
    /// Fisher would silently protect nothing).
    pub fn mean(&self) -> Result<Vec<f32>> {
        if self.weight <= 0.0 {
            return Err(SonaError::invalid(
                "the task Fisher has no samples: add() per-sample gradients at θ* first",
            ));
        }
        let mut out = try_zeros("fisher", self.sum.len())?;
        let inv = 1.0 / self.weight;
        for (o, &s) in out.iter_mut().zip(&self.sum) {
            // A weighted mean of g² ≤ MAX_GRAD² < f32::MAX: finite.
            *o = (s * inv) as f32;
        }
        Ok(out)
    }

    /// Forgets everything added.
    pub fn reset(&mut self) {
        self.sum.fill(0.0);
        self.weight = 0.0;
        self.samples = 0;
    }
}

/// `mix · online + (1 − mix) · pass`, element-wise (`mix` in `[0, 1]`), into `pass`.
pub(crate) fn blend(mix: f32, online: &[f32], pass: &mut [f32]) {
    for (p, &o) in pass.iter_mut().zip(online) {
        *p = mix * o + (1.0 - mix) * *p;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EwcConfig, EwcPlusPlus};

    #[test]
    fn mean_of_squares_by_hand() {
        let mut f = TaskFisher::new(2).unwrap();
        f.add(&[1.0, 2.0], 1.0).unwrap();
        f.add(&[3.0, 0.0], 1.0).unwrap();
        // (1 + 9) / 2, (4 + 0) / 2.
        assert_eq!(f.mean().unwrap(), vec![5.0, 2.0]);
        // Weights: the expected Fisher of a 2-class output with p = (0.25, 0.75).
        let mut e = TaskFisher::new(2).unwrap();
        e.add(&[2.0, 0.0], 0.25).unwrap();
        e.add(&[0.0, 4.0], 0.75).unwrap();
        assert_eq!(e.mean().unwrap(), vec![1.0, 12.0]);
        assert_eq!(e.samples(), 2);
        assert_eq!(e.total_weight(), 1.0);
        e.reset();
        assert!(e.mean().is_err());
    }

    #[test]
    fn bad_input_changes_nothing() {
        assert!(TaskFisher::new(0).is_err());
        assert!(TaskFisher::new(usize::MAX).is_err());
        let mut f = TaskFisher::new(2).unwrap();
        assert!(f.mean().is_err(), "empty");
        f.add(&[1.0, 1.0], 2.0).unwrap();
        let snap = f.clone();
        assert!(f.add(&[1.0], 1.0).is_err());
        assert!(f.add(&[f32::NAN, 1.0], 1.0).is_err());
        assert!(f.add(&[f32::INFINITY, 1.0], 1.0).is_err());
        assert!(f.add(&[1e20, 1.0], 1.0).is_err());
        assert!(f.add(&[1.0, 1.0], -1.0).is_err());
        assert!(f.add(&[1.0, 1.0], f32::NAN).is_err());
        assert!(f.add(&[1.0, 1.0], f32::INFINITY).is_err());
        assert_eq!(f, snap);
        f.add(&[5.0, 5.0], 0.0).unwrap();
        assert_eq!(f, snap, "zero weight is a no-op");
        // Extreme but accepted gradients stay finite.
        let mut big = TaskFisher::new(1).unwrap();
        big.add(&[1e19], f32::MAX).unwrap();
        big.add(&[1e19], f32::MAX).unwrap();
        assert!(big.mean().unwrap()[0].is_finite());
    }

    #[test]
    fn consolidate_from_folds_the_pass_and_blends_with_online() {
        let cfg = EwcConfig {
            gamma: 0.0,
            ..EwcConfig::default()
        };
        let theta = [1.0f32, -1.0];
        let mut pass = TaskFisher::new(2).unwrap();
        pass.add(&[2.0, 0.0], 1.0).unwrap(); // mean g² = (4, 0)
                                             // mix 0: the pass alone, whatever the online estimate says.
        let mut a = EwcPlusPlus::new(2, cfg).unwrap();
        a.update_fisher(&[0.0, 10.0]).unwrap(); // online (γ = 0): (0, 100)
        a.consolidate_from(&theta, &pass, 0.0).unwrap();
        assert_eq!(a.fisher(), &[4.0, 0.0]);
        assert_eq!(a.theta_star(), &theta);
        assert_eq!(a.online().samples(), 0, "online estimate reset");
        // mix 0.25: ¼ online + ¾ pass = (3, 25).
        let mut b = EwcPlusPlus::new(2, cfg).unwrap();
        b.update_fisher(&[0.0, 10.0]).unwrap();
        b.consolidate_from(&theta, &pass, 0.25).unwrap();
        assert_eq!(b.fisher(), &[3.0, 25.0]);
        // mix 1 without online samples, an empty pass, a bad mix or θ: refused, nothing changes.
        let mut c = EwcPlusPlus::new(2, cfg).unwrap();
        let snap = c.clone();
        assert!(c.consolidate_from(&theta, &pass, 1.0).is_err());
        assert!(c.consolidate_from(&theta, &pass, 0.5).is_err());
        assert!(c
            .consolidate_from(&theta, &TaskFisher::new(2).unwrap(), 0.0)
            .is_err());
        assert!(c.consolidate_from(&theta, &pass, -0.1).is_err());
        assert!(c.consolidate_from(&theta, &pass, f32::NAN).is_err());
        assert!(c.consolidate_from(&[1.0], &pass, 0.0).is_err());
        assert!(c.consolidate_from(&[f32::NAN, 0.0], &pass, 0.0).is_err());
        assert!(c
            .consolidate_from(&theta, &TaskFisher::new(3).unwrap(), 0.0)
            .is_err());
        assert_eq!(c, snap);
    }
}
