//! λ adapted from measured forgetting (design §4).
//!
//! After each evaluation the caller reports the accuracy on a held-out probe set of *old* tasks and the
//! quality on the *current* task:
//! - probe accuracy below its running maximum by more than `delta` means the penalty is too weak:
//!   λ ← min(λ · `raise`, λ_max);
//! - otherwise, if new-task quality improved by less than `stall` since the last report while it is
//!   still below `target`, the penalty is holding learning back: λ ← max(λ · `lower`, λ_min).
//!
//! Multiplicative steps because useful λ spans orders of magnitude. [`AdaptiveLambda::reset_probe`]
//! starts a new running maximum (call it when the probe set changes, e.g. after a task is folded in).

use sona_core::validate::check_range;
use sona_core::{Result, SonaError};

/// Hyper-parameters of [`AdaptiveLambda`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LambdaConfig {
    pub initial: f32,
    pub lambda_min: f32,
    pub lambda_max: f32,
    /// Allowed probe-accuracy drop below its running maximum.
    pub delta: f32,
    /// Multiplier (> 1) applied when forgetting is detected.
    pub raise: f32,
    /// Multiplier in (0, 1) applied when new-task learning stalls below `target`.
    pub lower: f32,
    /// Smallest improvement of new-task quality that does not count as a stall.
    pub stall: f32,
    /// New-task quality considered good enough (no lowering above it).
    pub target: f32,
}

impl Default for LambdaConfig {
    fn default() -> Self {
        LambdaConfig {
            initial: 1.0,
            lambda_min: 1e-3,
            lambda_max: 1e6,
            delta: 0.02,
            raise: 2.0,
            lower: 0.5,
            stall: 0.005,
            target: 0.95,
        }
    }
}

/// What the last [`AdaptiveLambda::update`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LambdaStep {
    Raised,
    Lowered,
    Kept,
}

/// The controller (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveLambda {
    cfg: LambdaConfig,
    lambda: f32,
    probe_max: Option<f32>,
    last_new: Option<f32>,
}

impl AdaptiveLambda {
    pub fn new(cfg: LambdaConfig) -> Result<Self> {
        check_range("lambda_min", cfg.lambda_min as f64, 0.0, f32::MAX as f64)?;
        check_range(
            "lambda_max",
            cfg.lambda_max as f64,
            cfg.lambda_min as f64,
            f32::MAX as f64,
        )?;
        check_range(
            "initial",
            cfg.initial as f64,
            cfg.lambda_min as f64,
            cfg.lambda_max as f64,
        )?;
        check_range("delta", cfg.delta as f64, 0.0, 1.0)?;
        check_range("raise", cfg.raise as f64, 1.0, 1e6)?;
        check_range("lower", cfg.lower as f64, 1e-6, 1.0)?;
        check_range("stall", cfg.stall as f64, 0.0, 1.0)?;
        check_range("target", cfg.target as f64, 0.0, 1.0)?;
        Ok(AdaptiveLambda {
            cfg,
            lambda: cfg.initial,
            probe_max: None,
            last_new: None,
        })
    }

    pub fn config(&self) -> LambdaConfig {
        self.cfg
    }

    /// The current λ (always within `[lambda_min, lambda_max]`).
    pub fn lambda(&self) -> f32 {
        self.lambda
    }

    /// Running maximum of the probe accuracy since the last reset.
    pub fn probe_max(&self) -> Option<f32> {
        self.probe_max
    }

    /// Reports a probe accuracy (old tasks) and the current task's quality, both in `[0, 1]`.
    pub fn update(&mut self, probe_accuracy: f32, new_task_quality: f32) -> Result<LambdaStep> {
        for (what, v) in [
            ("probe_accuracy", probe_accuracy),
            ("new_task_quality", new_task_quality),
        ] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err(SonaError::invalid(format!(
                    "{what} must be in [0, 1], got {v}"
                )));
            }
        }
        let max = self
            .probe_max
            .map_or(probe_accuracy, |m| m.max(probe_accuracy));
        let stalled = self
            .last_new
            .is_some_and(|prev| new_task_quality - prev < self.cfg.stall);
        self.probe_max = Some(max);
        self.last_new = Some(new_task_quality);
        let step = if probe_accuracy < max - self.cfg.delta {
            self.lambda = (self.lambda * self.cfg.raise).min(self.cfg.lambda_max);
            LambdaStep::Raised
        } else if stalled && new_task_quality < self.cfg.target {
            self.lambda = (self.lambda * self.cfg.lower).max(self.cfg.lambda_min);
            LambdaStep::Lowered
        } else {
            LambdaStep::Kept
        };
        Ok(step)
    }

    /// Forgets the probe maximum and the last quality (a new probe set or a new task begins).
    pub fn reset_probe(&mut self) {
        self.probe_max = None;
        self.last_new = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_on_forgetting_lowers_on_stall_and_stays_in_bounds() {
        let cfg = LambdaConfig {
            initial: 10.0,
            lambda_min: 1.0,
            lambda_max: 50.0,
            ..Default::default()
        };
        let mut a = AdaptiveLambda::new(cfg).unwrap();
        assert_eq!(a.update(0.90, 0.50).unwrap(), LambdaStep::Kept);
        // Probe fell 5 points below its max: forgetting → raise.
        assert_eq!(a.update(0.85, 0.60).unwrap(), LambdaStep::Raised);
        assert_eq!(a.lambda(), 20.0);
        assert_eq!(a.update(0.80, 0.70).unwrap(), LambdaStep::Raised);
        assert_eq!(a.update(0.80, 0.80).unwrap(), LambdaStep::Raised);
        assert_eq!(a.lambda(), 50.0, "capped at lambda_max");
        a.reset_probe();
        // No forgetting; new task improves → keep.
        assert_eq!(a.update(0.9, 0.6).unwrap(), LambdaStep::Kept);
        // New task stalls below target → lower.
        assert_eq!(a.update(0.9, 0.6).unwrap(), LambdaStep::Lowered);
        assert_eq!(a.lambda(), 25.0);
        // Stalled but at target → keep.
        assert_eq!(a.update(0.9, 0.97).unwrap(), LambdaStep::Kept);
        for _ in 0..20 {
            a.update(0.9, 0.5).unwrap();
        }
        assert_eq!(a.lambda(), 1.0, "floored at lambda_min");
    }

    #[test]
    fn rejects_bad_input() {
        let mut a = AdaptiveLambda::new(LambdaConfig::default()).unwrap();
        let before = a.clone();
        assert!(a.update(1.5, 0.5).is_err());
        assert!(a.update(0.5, f32::NAN).is_err());
        assert_eq!(a, before);
        let bad = |c: LambdaConfig| AdaptiveLambda::new(c).is_err();
        assert!(bad(LambdaConfig {
            initial: 1e7,
            ..Default::default()
        }));
        assert!(bad(LambdaConfig {
            lambda_min: 2.0,
            lambda_max: 1.0,
            initial: 1.5,
            ..Default::default()
        }));
        assert!(bad(LambdaConfig {
            raise: 0.5,
            ..Default::default()
        }));
        assert!(bad(LambdaConfig {
            lower: 1.5,
            ..Default::default()
        }));
    }
}
