//! Learning from a scalar reward on a continuous output: Gaussian exploration + REINFORCE.
//!
//! `forward(x, explore=True)` returns `ỹ = y + σ_y ε` with `ε ~ N(0, I)` and a token; `reward(token, R)`
//! turns `(x, ε, R)` into an output error `e` for the exact LoRA step:
//!
//! ```text
//! σ_y = σ · ‖y‖                      (relative exploration: the reward of a direction is scale-free)
//! A   = R − b(x)                     (advantage over a running linear baseline)
//! e   = −A · ‖y‖² · ε / σ_y = −A ‖y‖ ε / σ
//! ```
//!
//! `E[A ε / σ_y] = ∇_y E[R]` is the REINFORCE (score-function) gradient of the Gaussian policy; the
//! `‖y‖²` factor preconditions it for a reward that depends only on the direction of `y`, whose
//! gradient shrinks like `1/‖y‖` (without it the adapter slows down exactly when the output starts to
//! turn). The baseline `b(x) = w·x + c` is fitted by normalised LMS on the rewards seen; it is an
//! unbiased control variate that, unlike a single running mean, follows reward levels that differ
//! between input regions (a global mean would add the between-region spread to every advantage).
//! Measured choices are recorded in `docs/decisions.md`.
//!
//! Pending explorations live in a fixed ring of `capacity` slots allocated up front, so the hot path
//! never allocates. A token is valid once: unknown, evicted (older than `capacity` explorations) or
//! already rewarded tokens are [`SonaError::UnknownId`].

use sona_core::kernels as k;

use crate::fused::scaled_copy;
use sona_core::kernels::copy;
use sona_core::{validate, Result, SeededRng, SonaError};

/// Largest number of pending explorations (each keeps its input and noise: `capacity · (d_in +
/// d_out)` floats, also bounded by [`validate::MAX_ELEMENTS`]).
pub const MAX_CAPACITY: usize = 1 << 20;

/// Largest magnitude of one noise value drawn by [`fill_gaussian`] (`2√3`, rounded up).
pub const NOISE_BOUND: f32 = 3.47;

/// Exploration settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExploreConfig {
    /// Relative exploration scale: the noise has norm about `σ · ‖y‖ · √d_out`.
    pub sigma: f32,
    /// Step size of the normalised-LMS baseline, in `(0, 1]`.
    pub baseline_rate: f32,
    /// Pending explorations kept (older tokens are evicted).
    pub capacity: usize,
}

impl Default for ExploreConfig {
    fn default() -> Self {
        ExploreConfig {
            sigma: 0.1,
            baseline_rate: 0.05,
            capacity: 256,
        }
    }
}

impl ExploreConfig {
    /// Checks the ranges of every field.
    pub fn check(&self) -> Result<()> {
        validate::check_range("sigma", self.sigma as f64, 1e-6, 10.0)?;
        validate::check_range("baseline_rate", self.baseline_rate as f64, 1e-6, 1.0)?;
        validate::check_size("capacity", self.capacity, 1, MAX_CAPACITY)?;
        Ok(())
    }
}

/// `b(x) = w·x + c`, fitted by normalised LMS.
#[derive(Debug, Clone)]
pub struct LinearBaseline {
    pub w: Vec<f32>,
    pub c: f32,
    pub rate: f32,
}

impl LinearBaseline {
    /// Starts at `b = 0.5`, the middle of the reward range.
    pub fn new(d_in: usize, rate: f32) -> Result<Self> {
        Ok(LinearBaseline {
            w: validate::try_zeros("baseline", d_in)?,
            c: 0.5,
            rate,
        })
    }

    #[inline]
    pub fn predict(&self, x: &[f32]) -> f32 {
        k::dot(&self.w, x) + self.c
    }

    /// `(b(x), ‖x‖²)` in one pass over `x`.
    #[inline]
    pub fn predict_with_norm(&self, x: &[f32]) -> (f32, f32) {
        let (wx, _, xx) = k::dot3(&self.w, x);
        (wx + self.c, xx)
    }

    /// One NLMS step toward `reward` (`x_norm_sq = ‖x‖²`); the input norm (plus 1 for the bias)
    /// normalises the step so that its effect does not depend on the scale of `x`.
    #[inline]
    pub fn update(&mut self, x: &[f32], x_norm_sq: f32, predicted: f32, reward: f32) {
        let g = self.rate * (reward - predicted) / (x_norm_sq + 1.0);
        k::axpy(g, x, &mut self.w);
        self.c += g;
    }
}

/// Standard-normal-like samples: Irwin–Hall(4) from the four 16-bit lanes of one `u64`, rescaled to
/// unit variance. The REINFORCE estimate needs only zero mean and identity covariance; this is ~10×
/// faster than Box–Muller and keeps exploration off the latency budget (bounded at ±3.46σ).
/// Returns `Σ out_i²` (used later for the gradient norm without another pass).
#[inline]
pub fn fill_gaussian(rng: &mut SeededRng, out: &mut [f32]) -> f32 {
    const SQRT3: f32 = 1.732_050_8;
    const INV: f32 = 1.0 / 65536.0;
    let mut sum_sq = 0.0f32;
    for o in out.iter_mut() {
        let b = rng.next_u64();
        let s = (b & 0xFFFF) as u32
            + ((b >> 16) & 0xFFFF) as u32
            + ((b >> 32) & 0xFFFF) as u32
            + (b >> 48) as u32;
        // Each lane is uniform on {0..65535}; the +2 centres the sum (4 half-steps).
        *o = ((s as f32 + 2.0) * INV - 2.0) * SQRT3;
        sum_sq += *o * *o;
    }
    sum_sq
}

/// A reward checked and turned into an error by [`Explorer::prepare`], not yet applied.
#[derive(Debug, Clone, Copy)]
pub struct Pending {
    token: u64,
    slot: usize,
    predicted: f32,
    x_norm_sq: f32,
    reward: f32,
    /// `R − b(x)`.
    pub advantage: f32,
}

/// `‖y‖` without overflow: the fast `f32` sum of squares, redone in `f64` when it overflows.
fn robust_norm(y: &[f32]) -> f64 {
    let sq = k::norm_sq(y);
    if sq.is_finite() {
        return (sq as f64).sqrt();
    }
    y.iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt()
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    token: u64,
    used: bool,
    /// `‖y‖` of the unexplored output (scales both the noise and the error).
    y_norm: f32,
    /// `‖ε‖²`.
    eps_sq: f32,
}

/// The pending-exploration table, its RNG and the baseline.
#[derive(Debug, Clone)]
pub struct Explorer {
    pub config: ExploreConfig,
    d_in: usize,
    d_out: usize,
    rng: SeededRng,
    next_token: u64,
    slots: Vec<Slot>,
    xs: Vec<f32>,
    eps: Vec<f32>,
    pub baseline: LinearBaseline,
    /// Running mean of rewards seen (reported, not used for learning).
    pub reward_mean: f64,
    pub rewards: u64,
}

impl Explorer {
    pub fn new(config: ExploreConfig, d_in: usize, d_out: usize, seed: u64) -> Result<Self> {
        config.check()?;
        let xs = validate::element_count(
            "exploration inputs (capacity x d_in)",
            &[config.capacity, d_in],
        )?;
        let eps = validate::element_count(
            "exploration noise (capacity x d_out)",
            &[config.capacity, d_out],
        )?;
        Ok(Explorer {
            config,
            d_in,
            d_out,
            rng: SeededRng::new(seed),
            next_token: 1,
            slots: validate::try_filled("exploration slots", config.capacity, Slot::default())?,
            xs: validate::try_zeros("exploration inputs", xs)?,
            eps: validate::try_zeros("exploration noise", eps)?,
            baseline: LinearBaseline::new(d_in, config.baseline_rate)?,
            reward_mean: 0.0,
            rewards: 0,
        })
    }

    /// Perturbs `y` in place (`y ← y + σ‖y‖ε`), remembers `(x, ε, ‖y‖)` and returns the token.
    /// A zero output explores with absolute scale `σ`. An output so large that the perturbed one
    /// could overflow `f32` is a [`SonaError::Numerical`], checked before anything changes.
    pub fn explore(&mut self, x: &[f32], y: &mut [f32]) -> Result<u64> {
        let y_norm = robust_norm(y);
        let y_norm = if y_norm > 0.0 { y_norm } else { 1.0 };
        // |y_i + σ‖y‖ε_i| ≤ ‖y‖ (1 + σ · NOISE_BOUND): refuse before drawing if that could overflow.
        let reach = y_norm * (1.0 + self.config.sigma as f64 * NOISE_BOUND as f64);
        if reach.is_nan() || reach >= f32::MAX as f64 {
            return Err(SonaError::Numerical(format!(
                "output norm {y_norm:e} is too large to explore around without overflowing f32"
            )));
        }
        let y_norm = y_norm as f32;
        let token = self.next_token;
        self.next_token += 1;
        let i = (token % self.config.capacity as u64) as usize;
        let eps = &mut self.eps[i * self.d_out..(i + 1) * self.d_out];
        let eps_sq = fill_gaussian(&mut self.rng, eps);
        k::axpy(self.config.sigma * y_norm, eps, y);
        copy(x, &mut self.xs[i * self.d_in..(i + 1) * self.d_in]);
        self.slots[i] = Slot {
            token,
            used: false,
            y_norm,
            eps_sq,
        };
        Ok(token)
    }

    /// Validates `token` and `reward` without changing anything.
    pub fn check(&self, token: u64, reward: f32) -> Result<()> {
        validate::check_reward(reward)?;
        self.slot_of(token).map(|_| ())
    }

    fn slot_of(&self, token: u64) -> Result<usize> {
        let i = (token % self.config.capacity as u64) as usize;
        let s = &self.slots[i];
        if token == 0 || s.token != token || s.used {
            return Err(SonaError::UnknownId {
                kind: "exploration token",
                id: token.into(),
            });
        }
        Ok(i)
    }

    /// What redeeming `token` with `reward` will do, computed without changing anything: writes its
    /// input into `x` and the output error (see the module docs) into `e`, and returns the pending
    /// change of the baseline together with `(‖x‖², ‖e‖²)`. [`Explorer::commit`] applies it once the
    /// step it feeds has been applied, so a refused step leaves the token, baseline and reward
    /// statistics as they were.
    pub fn prepare(
        &self,
        token: u64,
        reward: f32,
        x: &mut [f32],
        e: &mut [f32],
    ) -> Result<(Pending, (f64, f64))> {
        validate::check_reward(reward)?;
        let i = self.slot_of(token)?;
        let slot = self.slots[i];
        copy(&self.xs[i * self.d_in..(i + 1) * self.d_in], x);
        let (b, xx) = self.baseline.predict_with_norm(x);
        if !b.is_finite() {
            return Err(SonaError::Numerical(format!(
                "the reward baseline is {b} at this input; reward rejected"
            )));
        }
        let adv = reward - b;
        let coef = -adv * slot.y_norm / self.config.sigma;
        scaled_copy(coef, &self.eps[i * self.d_out..(i + 1) * self.d_out], e);
        let e_sq = (coef as f64).powi(2) * slot.eps_sq as f64;
        let pending = Pending {
            token,
            slot: i,
            predicted: b,
            x_norm_sq: xx,
            reward,
            advantage: adv,
        };
        Ok((pending, (xx as f64, e_sq)))
    }

    /// Applies a prepared reward: marks the token used (unless it was evicted meanwhile), moves
    /// the baseline toward the reward at input `x` and counts it.
    pub fn commit(&mut self, p: &Pending, x: &[f32]) {
        if self.slots[p.slot].token == p.token {
            self.slots[p.slot].used = true;
        }
        self.baseline.update(x, p.x_norm_sq, p.predicted, p.reward);
        self.rewards += 1;
        self.reward_mean += (p.reward as f64 - self.reward_mean) / self.rewards as f64;
    }

    /// [`Explorer::prepare`] and [`Explorer::commit`] at once. Returns the advantage `R − b(x)` and
    /// `(‖x‖², ‖e‖²)`.
    pub fn take(
        &mut self,
        token: u64,
        reward: f32,
        x: &mut [f32],
        e: &mut [f32],
    ) -> Result<(f32, (f64, f64))> {
        let (p, norms) = self.prepare(token, reward, x, e)?;
        self.commit(&p, x);
        Ok((p.advantage, norms))
    }

    /// The noise RNG (for checkpoints).
    pub fn rng(&self) -> &SeededRng {
        &self.rng
    }

    /// Restores the RNG and the token counter after a load (`explored` must have been checked to
    /// be far below `u64::MAX`); pending explorations are dropped.
    pub fn restore(&mut self, rng: SeededRng, explored: u64) {
        self.rng = rng;
        self.next_token = explored + 1;
        self.slots.fill(Slot::default());
    }

    /// Tokens handed out so far.
    pub fn explored(&self) -> u64 {
        self.next_token - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_has_unit_moments() {
        let mut rng = SeededRng::new(3);
        let mut v = vec![0.0; 200_000];
        fill_gaussian(&mut rng, &mut v);
        let n = v.len() as f64;
        let mean = v.iter().map(|&t| t as f64).sum::<f64>() / n;
        let var = v.iter().map(|&t| (t as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
    }

    #[test]
    fn tokens_are_single_use_and_evicted() {
        let cfg = ExploreConfig {
            capacity: 4,
            ..Default::default()
        };
        let mut ex = Explorer::new(cfg, 3, 2, 1).unwrap();
        let x = [1.0, 0.0, 0.0];
        let mut y = [0.5, 0.5];
        let t1 = ex.explore(&x, &mut y).unwrap();
        let (mut xb, mut eb) = ([0.0; 3], [0.0; 2]);
        assert!(ex.check(t1, 1.5).is_err());
        assert!(ex.check(t1 + 100, 0.5).is_err());
        ex.take(t1, 0.7, &mut xb, &mut eb).unwrap();
        assert_eq!(xb, x);
        assert!(matches!(
            ex.take(t1, 0.7, &mut xb, &mut eb),
            Err(SonaError::UnknownId { .. })
        ));
        let t2 = ex.explore(&x, &mut y).unwrap();
        for _ in 0..4 {
            ex.explore(&x, &mut y).unwrap();
        }
        assert!(ex.check(t2, 0.5).is_err(), "evicted token must be unknown");
        assert!(ex.check(0, 0.5).is_err());
    }

    #[test]
    fn error_points_along_rewarded_noise() {
        // A reward above the baseline gives an error opposite to the noise (a descent step moves
        // the output toward the explored point), and vice versa.
        let mut ex = Explorer::new(ExploreConfig::default(), 2, 3, 9).unwrap();
        let x = [0.0, 1.0];
        let y0 = [1.0, 0.0, 0.0];
        let mut y = y0;
        let t = ex.explore(&x, &mut y).unwrap();
        let noise: Vec<f32> = y.iter().zip(&y0).map(|(a, b)| a - b).collect();
        let (mut xb, mut e) = ([0.0; 2], [0.0; 3]);
        let (adv, (xx, ee)) = ex.take(t, 1.0, &mut xb, &mut e).unwrap();
        assert!((xx - 1.0).abs() < 1e-6);
        assert!((ee - k::norm_sq(&e) as f64).abs() < 1e-3 * ee);
        assert!(adv > 0.0);
        assert!(k::dot(&e, &noise) < 0.0);
        // The baseline moved toward the reward.
        assert!(ex.baseline.predict(&x) > 0.5);
    }
}
