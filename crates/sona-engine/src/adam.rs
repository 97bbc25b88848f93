//! Adam over a flat parameter vector (loop B and the standalone router's supervised step).

use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;

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
