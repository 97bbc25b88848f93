//! Adam over a flat parameter vector (loop B and the standalone router's supervised step), and
//! [`penalized_step`], the one optimizer step with the EWC++ penalty that loops B and C and the
//! continual-learning classifier share.

use serde::{Deserialize, Serialize};
use sona_core::{Result, SonaError};
use sona_ewc::EwcPlusPlus;

/// First and second moment estimates and the step count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Adam {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    pub t: u64,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Global gradient-norm clip applied before the moments (`inf` disables it).
    pub clip: f32,
}

impl Adam {
    pub fn new(n: usize) -> Self {
        Adam {
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            clip: 5.0,
        }
    }

    /// Forgets the moments of `range` (after a merge changes the basis of those parameters).
    pub fn reset(&mut self, range: std::ops::Range<usize>) {
        self.m[range.clone()].fill(0.0);
        self.v[range].fill(0.0);
    }

    /// One step: `θ ← θ − lr · m̂ / (√v̂ + ε)`. Returns `false` (and changes nothing) when the
    /// gradient is not finite.
    pub fn step(&mut self, theta: &mut [f32], grad: &[f32], lr: f32) -> bool {
        let norm = grad.iter().map(|g| (*g as f64).powi(2)).sum::<f64>().sqrt();
        if !norm.is_finite() {
            return false;
        }
        let c = if norm > self.clip as f64 {
            self.clip as f64 / norm
        } else {
            1.0
        } as f32;
        self.t += 1;
        let b1t = 1.0 - (self.beta1 as f64).powi(self.t.min(1 << 30) as i32);
        let b2t = 1.0 - (self.beta2 as f64).powi(self.t.min(1 << 30) as i32);
        let a = (lr as f64 * b2t.sqrt() / b1t) as f32;
        for i in 0..theta.len() {
            let g = grad[i] * c;
            self.m[i] = self.beta1 * self.m[i] + (1.0 - self.beta1) * g;
            self.v[i] = self.beta2 * self.v[i] + (1.0 - self.beta2) * g * g;
            theta[i] -= a * self.m[i] / (self.v[i].sqrt() + self.eps);
        }
        true
    }
}

/// How the EWC++ penalty enters an Adam step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EwcStep {
    /// Its gradient `λ F̄ ⊙ (θ − θ̄*)` is added to the loss gradient before Adam (so Adam's second
    /// moment rescales it).
    #[default]
    Gradient,
    /// Adam on the loss gradient alone, then the exact proximal step of the penalty
    /// ([`EwcPlusPlus::pull`] with `exact`), `η` = Adam's learning rate.
    Proximal,
    /// Adam on the loss gradient alone, then a plain gradient step `θ −= η λ F̄ ⊙ (θ − θ̄*)`.
    Decoupled,
}

impl EwcStep {
    /// Parses `"gradient"`, `"proximal"` or `"decoupled"`; anything else is a `Config` error.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "gradient" => Ok(EwcStep::Gradient),
            "proximal" => Ok(EwcStep::Proximal),
            "decoupled" => Ok(EwcStep::Decoupled),
            _ => Err(SonaError::Config(format!(
                "ewc_step must be \"gradient\", \"proximal\" or \"decoupled\", got {s:?}"
            ))),
        }
    }

    /// The name [`EwcStep::parse`] reads.
    pub fn name(self) -> &'static str {
        match self {
            EwcStep::Gradient => "gradient",
            EwcStep::Proximal => "proximal",
            EwcStep::Decoupled => "decoupled",
        }
    }
}

/// One Adam step of the loss gradient `grad` (used as scratch) with the EWC++ penalty of `ewc`
/// entering as `mode` says. All or nothing: returns `false`, with `theta` and `adam` unchanged,
/// when the gradient, the penalty or the result is not finite.
pub fn penalized_step(
    adam: &mut Adam,
    theta: &mut [f32],
    grad: &mut [f32],
    lr: f32,
    ewc: Option<&EwcPlusPlus>,
    mode: EwcStep,
) -> bool {
    let ewc = ewc.filter(|e| e.task_count() > 0 && e.lambda() > 0.0);
    if let (Some(e), EwcStep::Gradient) = (ewc, mode) {
        if e.apply(theta, grad).is_err() {
            return false;
        }
    }
    let mut next = theta.to_vec();
    let mut a = adam.clone();
    if !a.step(&mut next, grad, lr) {
        return false;
    }
    if let Some(e) = ewc.filter(|_| mode != EwcStep::Gradient) {
        if e.pull(&mut next, lr, mode == EwcStep::Proximal).is_err() {
            return false;
        }
    }
    if !next.iter().all(|v| v.is_finite()) {
        return false;
    }
    theta.copy_from_slice(&next);
    *adam = a;
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use sona_ewc::EwcConfig;

    /// A loss pulling both coordinates to 1 against a penalty anchored at 0 with Fisher (100, 0).
    fn tug(mode: EwcStep, lambda: f32, steps: usize) -> Vec<f32> {
        let mut ewc = EwcPlusPlus::new(
            2,
            EwcConfig {
                lambda,
                ..EwcConfig::default()
            },
        )
        .unwrap();
        ewc.complete_task(&[0.0, 0.0], Some(&[100.0, 0.0]), 1.0)
            .unwrap();
        let mut th = vec![0.0f32, 0.0];
        let mut adam = Adam::new(2);
        for _ in 0..steps {
            let mut g = vec![th[0] - 1.0, th[1] - 1.0];
            assert!(penalized_step(
                &mut adam,
                &mut th,
                &mut g,
                0.01,
                Some(&ewc),
                mode
            ));
        }
        th
    }

    #[test]
    fn decoupled_penalty_keeps_its_curvature_inside_adam() {
        // Penalty λF = 100 against a unit loss: the minimiser is 1/101 on the protected
        // coordinate, 1 on the free one, in every mode (η λ F = 1: the plain step is stable).
        for mode in [EwcStep::Gradient, EwcStep::Proximal, EwcStep::Decoupled] {
            let th = tug(mode, 1.0, 3000);
            assert!(th[0].abs() < 0.05, "{mode:?}: {th:?}");
            assert!((th[1] - 1.0).abs() < 0.05, "{mode:?}: {th:?}");
            // λ = 0: the penalty is off in every mode (the same steps as plain Adam).
            assert_eq!(tug(mode, 0.0, 50), tug(EwcStep::Gradient, 0.0, 50));
        }
        // Huge λF: the proximal step stays finite and pinned at the anchor; the plain decoupled
        // step diverges and is refused (θ stays put).
        let th = tug(EwcStep::Proximal, 1e9, 100);
        assert!(th[0].abs() < 1e-6 && th[1] > 0.5, "{th:?}");
        let mut ewc = EwcPlusPlus::new(
            1,
            EwcConfig {
                lambda: 1e9,
                ..EwcConfig::default()
            },
        )
        .unwrap();
        ewc.complete_task(&[0.0], Some(&[1e38]), 1.0).unwrap();
        let (mut th, mut adam) = (vec![1.0f32], Adam::new(1));
        let before = (th.clone(), adam.clone());
        assert!(!penalized_step(
            &mut adam,
            &mut th,
            &mut [0.5],
            0.01,
            Some(&ewc),
            EwcStep::Decoupled
        ));
        assert_eq!((th, adam), before);
        assert_eq!(EwcStep::parse("proximal").unwrap(), EwcStep::Proximal);
        for m in [EwcStep::Gradient, EwcStep::Proximal, EwcStep::Decoupled] {
            assert_eq!(EwcStep::parse(m.name()).unwrap(), m);
        }
        assert!(matches!(EwcStep::parse("prox"), Err(SonaError::Config(_))));
    }

    #[test]
    fn minimises_a_quadratic_and_refuses_nan() {
        let mut th = vec![3.0f32, -2.0];
        let mut adam = Adam::new(2);
        for _ in 0..2000 {
            let g = [2.0 * th[0], 2.0 * (th[1] + 1.0)];
            assert!(adam.step(&mut th, &g, 0.01));
        }
        assert!(th[0].abs() < 1e-2 && (th[1] + 1.0).abs() < 1e-2, "{th:?}");
        let before = (th.clone(), adam.clone());
        assert!(!adam.step(&mut th, &[f32::NAN, 0.0], 0.01));
        assert_eq!((th, adam), before);
    }
}
