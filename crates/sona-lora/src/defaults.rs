//! Learning defaults that depend on the output dimension `d` (design §11.1, issue 10 item 6).
//!
//! The one source of these numbers: [`LoraConfig::micro`](crate::LoraConfig::micro),
//! [`LoraConfig::stacked_micro`](crate::LoraConfig::stacked_micro) and the Python defaults
//! (`sona.lora.scaled_defaults`, read through the binding) all call [`ScaledDefaults::for_dim`].
//!
//! What scales and why (measured with `sona eval adapt --dims … --clusters …`, chosen on validation
//! seeds 100-101; docs/benchmarks.md, "Defaults across sizes"):
//!
//! - exploration noise `σ = 0.1·√(256/d)` above d = 256: the noise `σ‖y‖ε` has norm about
//!   `σ√d‖y‖`, so this keeps it at its d = 256 size;
//! - the micro step of a two-tier stack `3e-4·√(d/256)` above 256 (its merges keep what larger steps
//!   learn); a micro adapter alone keeps `3e-4`;
//! - the Frobenius bound of a micro adapter alone `16·d/256` above 256: the exploration noise a
//!   REINFORCE step leaves in `ΔW` grows with the number of steps, which must itself grow like `d`
//!   (next point), and with a fixed bound that noise crowds out the signal (d = 1024: 0.50 → 0.67);
//! - the **feedback budget**: a scalar reward is one linear measurement of the hidden direction
//!   an output should turn to, so learning one direction in `d` dimensions needs a number of rewards
//!   proportional to `d` whatever the step, noise or baseline. [`feedback_budget`] is the number that
//!   reached ≥ 0.6 own-phase score on validation (`6·d` per direction).

use sona_core::{validate, Result};

/// Below this dimension nothing is scaled: the d = 256 values were tuned there and held at d = 128.
pub const REFERENCE_DIM: usize = 256;

/// Rewards per learned output direction, per unit of `d` (see [`feedback_budget`]).
pub const FEEDBACKS_PER_DIRECTION_PER_DIM: u64 = 6;

/// The d-dependent defaults of the adapters that learn from rewards (in `f64` so that Python sees
/// the exact decimal values; configs store them as `f32`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaledDefaults {
    /// Relative exploration noise (both tiers).
    pub sigma: f64,
    /// Step size of a micro adapter used alone.
    pub micro_lr: f64,
    /// Step size of the micro tier of a two-tier stack.
    pub stacked_lr: f64,
    /// Frobenius bound on `ΔW` of a micro adapter used alone.
    pub micro_max_norm: f64,
    /// Frobenius bound on the micro tier of a two-tier stack (merges empty it regularly).
    pub stacked_max_norm: f64,
    /// Rewards needed per learned output direction ([`feedback_budget`] with one direction).
    pub feedbacks_per_direction: u64,
}

impl ScaledDefaults {
    /// The defaults for output dimension `d` (any `d`; `d = 0` is treated as 1).
    pub fn for_dim(d: usize) -> Self {
        let ratio = d.max(1) as f64 / REFERENCE_DIM as f64;
        let up = ratio.max(1.0);
        ScaledDefaults {
            sigma: 0.1 / up.sqrt(),
            micro_lr: 3e-4,
            stacked_lr: 3e-4 * up.sqrt(),
            micro_max_norm: 16.0 * up,
            stacked_max_norm: 16.0,
            feedbacks_per_direction: feedback_budget(d, 1),
        }
    }

    /// [`ScaledDefaults::for_dim`] for a dimension in `1..=MAX_DIM` (Config error otherwise).
    pub fn checked(d: usize) -> Result<Self> {
        validate::check_size("d", d, 1, validate::MAX_DIM)?;
        Ok(Self::for_dim(d))
    }
}

/// Rewards an adapter needs to learn `directions` output directions at dimension `d`:
/// `6·d·directions` (saturating). Each reward measures the hidden direction along one random
/// exploration direction only, so even an ideal estimator needs about `0.36·d` rewards per direction
/// to reach cosine 0.6, and the REINFORCE sum `0.56·d`; the factor 6 is what the stack reached ≥ 0.6
/// with on validation seeds (4 did only at d ≤ 768). In `sona eval adapt` a direction is a query
/// cluster trained in the phase.
pub fn feedback_budget(d: usize, directions: usize) -> u64 {
    FEEDBACKS_PER_DIRECTION_PER_DIM
        .saturating_mul(d.max(1) as u64)
        .saturating_mul(directions as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_scales_up_to_the_reference_dim() {
        for d in [0, 1, 128, 256] {
            let s = ScaledDefaults::for_dim(d);
            assert_eq!((s.sigma, s.micro_lr, s.stacked_lr), (0.1, 3e-4, 3e-4));
            assert_eq!((s.micro_max_norm, s.stacked_max_norm), (16.0, 16.0));
        }
    }

    #[test]
    fn noise_step_bound_and_budget_scale_with_d() {
        let s = ScaledDefaults::for_dim(1024);
        assert!((s.sigma - 0.05).abs() < 1e-15);
        assert!((s.stacked_lr - 6e-4).abs() < 1e-15);
        assert_eq!(
            (s.micro_lr, s.micro_max_norm, s.stacked_max_norm),
            (3e-4, 64.0, 16.0)
        );
        assert_eq!(s.feedbacks_per_direction, 6144);
        assert_eq!(feedback_budget(256, 2), 3072);
        assert_eq!(feedback_budget(1024, 4), 24_576);
        assert_eq!(feedback_budget(usize::MAX, usize::MAX), u64::MAX);
    }

    #[test]
    fn checked_refuses_sizes_out_of_range() {
        assert!(ScaledDefaults::checked(0).is_err());
        assert!(ScaledDefaults::checked(validate::MAX_DIM + 1).is_err());
        assert!(ScaledDefaults::checked(usize::MAX).is_err());
        assert_eq!(
            ScaledDefaults::checked(768).unwrap(),
            ScaledDefaults::for_dim(768)
        );
    }
}
