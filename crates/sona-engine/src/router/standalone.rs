//! [`Router`]: the FastGRNN router used alone (`sona.router`), trained by supervised Adam steps on
//! the bandit loss (BCE of one tier's predicted reward).

use sona_core::{validate, Result, SonaError};

use super::backward::{backward, Scratch};
use super::{bce_from_logit, forward, Cache, Layout};
use crate::adam::Adam;

/// Most steps one sequence may have.
pub const MAX_STEPS: usize = 4096;

/// A router over sequences of `input_dim`-wide rows (expected at unit scale, like the engine's).
#[derive(Debug, Clone)]
pub struct Router {
    layout: Layout,
    theta: Vec<f32>,
    adam: Adam,
    cache: Cache<f32>,
    scratch: Scratch<f32>,
}

impl Router {
    pub fn new(
        input_dim: usize,
        n_tiers: usize,
        hidden: usize,
        rank_w: usize,
        rank_u: usize,
        seed: u64,
    ) -> Result<Self> {
        if !(1..=16).contains(&n_tiers) {
            return Err(SonaError::Config(format!(
                "n_tiers must be in [1, 16], got {n_tiers}"
            )));
        }
        if input_dim > 65_536 || hidden > 512 || rank_w > 64 || rank_u > 64 {
            return Err(SonaError::Config(
                "input_dim must be ≤ 65536, hidden ≤ 512, ranks ≤ 64".into(),
            ));
        }
        let layout = Layout::new(input_dim, 0, hidden, rank_w, rank_u, n_tiers)?;
        let theta = layout.init(seed);
        Ok(Router {
            adam: Adam::new(theta.len()),
            layout,
            theta,
            cache: Cache::default(),
            scratch: Scratch::default(),
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn n_params(&self) -> usize {
        self.theta.len()
    }

    /// Bytes of the parameters (f32).
    pub fn size_bytes(&self) -> usize {
        self.theta.len() * 4
    }

    pub fn parameters(&self) -> &[f32] {
        &self.theta
    }

    /// Replaces the parameters (same count, finite) and forgets the Adam moments.
    pub fn set_parameters(&mut self, theta: &[f32]) -> Result<()> {
        validate::check_vec("parameters", theta, self.theta.len())?;
        self.theta.copy_from_slice(theta);
        self.adam = Adam::new(theta.len());
        Ok(())
    }

    fn check_seq(&self, seq: &[f32]) -> Result<usize> {
        let d = self.layout.input;
        if seq.is_empty() || !seq.len().is_multiple_of(d) || seq.len() / d > MAX_STEPS {
            return Err(SonaError::Dimension {
                what: "seq".into(),
                expected: format!("(steps, {d}) with 1 ≤ steps ≤ {MAX_STEPS}"),
                got: format!("{} values", seq.len()),
            });
        }
        validate::check_finite("seq", seq)?;
        Ok(seq.len() / d)
    }

    /// Predicted reward of every tier for one sequence (`steps × input_dim`).
    pub fn forward(&mut self, seq: &[f32]) -> Result<Vec<f32>> {
        self.check_seq(seq)?;
        forward(&self.layout, &self.theta, None, seq, &mut self.cache);
        Ok(self.cache.out.clone())
    }

    /// BCE of tier `tier`'s prediction against `reward`, and its gradient w.r.t. every parameter.
    pub fn loss_and_grad(
        &mut self,
        seq: &[f32],
        tier: usize,
        reward: f32,
    ) -> Result<(f64, Vec<f32>)> {
        self.check_seq(seq)?;
        validate::check_reward(reward)?;
        if tier >= self.layout.tiers {
            return Err(SonaError::invalid(format!(
                "tier must be in [0, {}), got {tier}",
                self.layout.tiers
            )));
        }
        forward(&self.layout, &self.theta, None, seq, &mut self.cache);
        let loss = bce_from_logit(self.cache.logits[tier] as f64, reward as f64);
        let mut dl = vec![0.0f32; self.layout.tiers];
        dl[tier] = self.cache.out[tier] - reward;
        let mut grad = vec![0.0f32; self.theta.len()];
        backward(
            &self.layout,
            &self.theta,
            None,
            seq,
            &self.cache,
            &dl,
            &mut grad,
            None,
            None,
            &mut self.scratch,
        );
        Ok((loss, grad))
    }

    /// One Adam step on that loss; returns the loss before the step.
    pub fn train_step(&mut self, seq: &[f32], tier: usize, reward: f32, lr: f32) -> Result<f64> {
        validate::check_range("lr", lr as f64, 0.0, 1.0)
            .map_err(|e| SonaError::invalid(e.to_string()))?;
        let (loss, grad) = self.loss_and_grad(seq, tier, reward)?;
        let mut next = self.theta.clone();
        let mut adam = self.adam.clone();
        if !adam.step(&mut next, &grad, lr) || !next.iter().all(|x| x.is_finite()) {
            return Err(SonaError::Numerical(
                "router step would be non-finite; refused".into(),
            ));
        }
        self.theta = next;
        self.adam = adam;
        Ok(loss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sona_core::SeededRng;

    #[test]
    fn learns_a_sequence_dependent_target_and_rejects_bad_input() {
        // Tier 0 is rewarded when the last row's first coordinate is positive.
        let mut r = Router::new(4, 2, 8, 2, 2, 1).unwrap();
        let mut rng = SeededRng::new(5);
        let make = |rng: &mut SeededRng| {
            let mut s = vec![0.0f32; 12];
            rng.fill_normal(&mut s, 0.5);
            let y = if s[8] > 0.0 { 1.0 } else { 0.0 };
            (s, y)
        };
        for _ in 0..3000 {
            let (s, y) = make(&mut rng);
            r.train_step(&s, 0, y, 0.01).unwrap();
        }
        let mut correct = 0;
        for _ in 0..500 {
            let (s, y) = make(&mut rng);
            let p = r.forward(&s).unwrap()[0];
            correct += ((p > 0.5) == (y > 0.5)) as usize;
        }
        assert!(correct > 450, "{correct}/500");
        let before = r.parameters().to_vec();
        assert!(r.forward(&[0.0; 5]).is_err());
        assert!(r.forward(&[]).is_err());
        assert!(r.train_step(&[f32::NAN; 4], 0, 1.0, 0.01).is_err());
        assert!(r.train_step(&[0.0; 4], 2, 1.0, 0.01).is_err());
        assert!(r.train_step(&[0.0; 4], 0, 1.5, 0.01).is_err());
        assert!(r.set_parameters(&[0.0; 3]).is_err());
        assert_eq!(r.parameters(), &before[..]);
        assert_eq!(r.size_bytes(), 4 * r.n_params());
    }
}
