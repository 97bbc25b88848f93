//! The online diagonal Fisher estimate (the "++" of EWC++).
//!
//! design §4: the Fisher is built from **per-sample** gradients of the loss, `F ← γF + (1−γ)g²`, never from
//! the square of a batch-mean gradient (which underestimates it by roughly the batch size and mixes
//! samples). Because the EMA starts at zero, the raw average is biased low by the factor `1 − γⁿ` after
//! `n` samples; [`OnlineFisher::estimate`] divides it out (as Adam does for its moments), so a task
//! with few samples is not protected less than one with many. Entries are then raised to `floor`.

use sona_core::validate::{check_len, check_range};
use sona_core::{Result, SonaError};

use crate::diag;

/// A running diagonal Fisher over `P` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct OnlineFisher {
    gamma: f32,
    floor: f32,
    raw: Vec<f32>,
    samples: u64,
    /// `γⁿ` for the `n` samples seen so far (the bias-correction factor is `1 − γⁿ`).
    gamma_pow: f64,
}

impl OnlineFisher {
    /// A zero estimate over `param_count` parameters.
    ///
    /// `gamma` in `[0, 1)` is the EMA decay per sample (`0.999` averages over roughly the last 1000
    /// samples); `floor ≥ 0` is the smallest value [`estimate`](Self::estimate) returns.
    pub fn new(param_count: usize, gamma: f32, floor: f32) -> Result<Self> {
        if param_count == 0 {
            return Err(SonaError::Config("param_count must be at least 1".into()));
        }
        check_gamma(gamma)?;
        check_range("floor", floor as f64, 0.0, f32::MAX as f64)?;
        Ok(OnlineFisher {
            gamma,
            floor,
            raw: vec![0.0; param_count],
            samples: 0,
            gamma_pow: 1.0,
        })
    }

    pub fn param_count(&self) -> usize {
        self.raw.len()
    }

    pub fn gamma(&self) -> f32 {
        self.gamma
    }

    pub fn floor(&self) -> f32 {
        self.floor
    }

    /// Per-sample gradients folded in since creation or the last [`reset`](Self::reset).
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// One per-sample gradient `g` (length `P`, finite).
    pub fn update(&mut self, grad: &[f32]) -> Result<()> {
        sona_core::validate::check_vec("grad", grad, self.raw.len())?;
        diag::ema_sq(self.gamma, &mut self.raw, grad);
        self.samples += 1;
        self.gamma_pow *= self.gamma as f64;
        Ok(())
    }

    /// `rows` per-sample gradients stored row-major (`rows × P`), folded in order: identical to
    /// calling [`update`](Self::update) on each row. The whole matrix is validated first.
    pub fn update_batch(&mut self, grads: &[f32], rows: usize) -> Result<()> {
        let expected = rows
            .checked_mul(self.raw.len())
            .ok_or_else(|| SonaError::invalid("grads: rows × P overflows"))?;
        if grads.len() != expected {
            return Err(SonaError::Dimension {
                what: "grads".into(),
                expected: format!("{rows}x{} ({expected} values)", self.raw.len()),
                got: format!("{} values", grads.len()),
            });
        }
        sona_core::validate::check_vec("grads", grads, expected)?;
        for g in grads.chunks_exact(self.raw.len()) {
            diag::ema_sq(self.gamma, &mut self.raw, g);
            self.gamma_pow *= self.gamma as f64;
        }
        self.samples += rows as u64;
        Ok(())
    }

    /// The bias-corrected estimate `max(F / (1 − γⁿ), floor)` written into `out`.
    /// Fails with `InvalidInput` before any sample was seen: an empty estimate protects nothing, and
    /// silently consolidating it is exactly the failure SONA exists to avoid.
    pub fn estimate_into(&self, out: &mut [f32]) -> Result<()> {
        check_len("out", out, self.raw.len())?;
        if self.samples == 0 {
            return Err(SonaError::invalid(
                "the online Fisher has no samples yet: call update() with per-sample gradients first",
            ));
        }
        let correction = 1.0 - self.gamma_pow;
        // γ = 0 or enough samples: the correction is 1 (or within rounding of it).
        let inv = if correction > 0.0 {
            (1.0 / correction) as f32
        } else {
            1.0
        };
        for (o, &r) in out.iter_mut().zip(&self.raw) {
            *o = (r * inv).max(self.floor);
        }
        Ok(())
    }

    /// The bias-corrected estimate as a new vector (see [`estimate_into`](Self::estimate_into)).
    pub fn estimate(&self) -> Result<Vec<f32>> {
        let mut out = vec![0.0; self.raw.len()];
        self.estimate_into(&mut out)?;
        Ok(out)
    }

    /// The raw EMA without bias correction or floor (what is saved).
    pub fn raw(&self) -> &[f32] {
        &self.raw
    }

    /// Forgets every sample (used when a task has been consolidated).
    pub fn reset(&mut self) {
        self.raw.fill(0.0);
        self.samples = 0;
        self.gamma_pow = 1.0;
    }

    /// Rebuilds an estimate from saved parts, validating them.
    pub(crate) fn from_parts(gamma: f32, floor: f32, raw: Vec<f32>, samples: u64) -> Result<Self> {
        let mut f = OnlineFisher::new(raw.len(), gamma, floor)?;
        sona_core::validate::check_finite("online fisher", &raw)?;
        if raw.iter().any(|&x| x < 0.0) {
            return Err(SonaError::invalid("online fisher has negative entries"));
        }
        f.raw = raw;
        f.samples = samples;
        f.gamma_pow = (gamma as f64).powf(samples as f64);
        Ok(f)
    }
}

pub(crate) fn check_gamma(gamma: f32) -> Result<()> {
    if gamma.is_finite() && (0.0..1.0).contains(&gamma) {
        Ok(())
    } else {
        Err(SonaError::Config(format!(
            "gamma must be in [0, 1), got {gamma}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sona_core::SeededRng;

    #[test]
    fn ema_matches_closed_form_and_is_bias_corrected() {
        let mut f = OnlineFisher::new(3, 0.5, 0.0).unwrap();
        f.update(&[1.0, 2.0, 0.0]).unwrap();
        // After one sample the corrected estimate is exactly g².
        assert_eq!(f.estimate().unwrap(), vec![1.0, 4.0, 0.0]);
        f.update(&[3.0, 0.0, 0.0]).unwrap();
        // raw = 0.5*0.5*1 + 0.5*9 = 4.75; correction 1 − 0.25 = 0.75.
        let e = f.estimate().unwrap();
        assert!((e[0] - 4.75 / 0.75).abs() < 1e-6);
        assert!((e[1] - 1.0 / 0.75).abs() < 1e-6);
        assert_eq!(f.samples(), 2);
    }

    #[test]
    fn estimate_converges_to_mean_of_squares() {
        // Per-sample gradients g ~ N(0, σ²) per coordinate: E[g²] = σ².
        let mut rng = SeededRng::new(7);
        let mut f = OnlineFisher::new(4, 0.99, 0.0).unwrap();
        let sig = [0.5f32, 1.0, 2.0, 0.1];
        for _ in 0..20_000 {
            let g: Vec<f32> = sig.iter().map(|s| s * rng.normal()).collect();
            f.update(&g).unwrap();
        }
        let e = f.estimate().unwrap();
        for (ei, s) in e.iter().zip(sig) {
            assert!((ei / (s * s) - 1.0).abs() < 0.35, "{ei} vs {}", s * s);
        }
    }

    #[test]
    fn batch_equals_sequential_updates() {
        let mut rng = SeededRng::new(3);
        let mut m = vec![0.0; 5 * 7];
        rng.fill_normal(&mut m, 1.0);
        let mut a = OnlineFisher::new(7, 0.9, 1e-6).unwrap();
        let mut b = a.clone();
        a.update_batch(&m, 5).unwrap();
        for row in m.chunks(7) {
            b.update(row).unwrap();
        }
        assert_eq!(a.samples(), b.samples());
        let (ea, eb) = (a.estimate().unwrap(), b.estimate().unwrap());
        for (x, y) in ea.iter().zip(&eb) {
            assert!((x - y).abs() <= 1e-6 * x.max(1.0));
        }
    }

    #[test]
    fn floor_and_errors() {
        let mut f = OnlineFisher::new(2, 0.9, 0.25).unwrap();
        assert!(matches!(f.estimate(), Err(SonaError::InvalidInput(_))));
        f.update(&[0.0, 1.0]).unwrap();
        assert_eq!(f.estimate().unwrap(), vec![0.25, 1.0]);
        let before = f.clone();
        assert!(matches!(f.update(&[1.0]), Err(SonaError::Dimension { .. })));
        assert!(matches!(
            f.update(&[1.0, f32::NAN]),
            Err(SonaError::NonFinite { .. })
        ));
        assert!(f.update_batch(&[1.0, 2.0, 3.0], 2).is_err());
        assert!(f.update_batch(&[1.0, 2.0, f32::INFINITY, 0.0], 2).is_err());
        assert_eq!(f, before, "a rejected call leaves the estimate unchanged");
        assert!(OnlineFisher::new(0, 0.9, 0.0).is_err());
        assert!(OnlineFisher::new(2, 1.0, 0.0).is_err());
        assert!(OnlineFisher::new(2, -0.1, 0.0).is_err());
        assert!(OnlineFisher::new(2, 0.9, -1.0).is_err());
        assert!(OnlineFisher::new(2, 0.9, f32::NAN).is_err());
        f.reset();
        assert_eq!(f.samples(), 0);
        assert!(f.estimate().is_err());
    }
}
