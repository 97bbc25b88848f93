//! One dream cycle (design §7) over any model that exposes its loss gradients.
//!
//! 1. Freeze: keep the model's whole state (parameters *and* optimizer moments) and label the
//!    synthetic inputs with the frozen model's outputs (the teacher).
//! 2. Probe the held-out set (`probe_before`).
//! 3. Train for up to `steps` steps, stopping early when the time budget is spent: each step draws
//!    a prioritized batch of stored items (importance-weighted loss), adds a distillation term
//!    `½‖f(x̃) − teacher(x̃)‖²` on a slice of the synthetic inputs, adds the model's consolidation
//!    penalty gradient (EWC++), and takes one optimizer step; replayed items' priorities are updated
//!    from their new prediction errors.
//! 4. Probe again; accept when `probe_after ≥ probe_before − tolerance`, otherwise restore the state
//!    kept in step 1, so a rejected cycle leaves the model bit-identical to before it.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sona_core::{Result, SeededRng, SonaError};

use crate::priority::PrioritizedReplay;

/// What a dream cycle needs from the model it consolidates.
pub trait DreamModel {
    /// Everything a rollback must restore (parameters and optimizer state).
    type State;

    fn n_params(&self) -> usize;
    fn n_outputs(&self) -> usize;
    /// Number of synthetic (pseudo-rehearsal) inputs the model holds for this cycle.
    fn n_synthetic(&self) -> usize;
    fn state(&self) -> Self::State;
    fn restore(&mut self, state: Self::State);
    /// Adds `weight ×` the gradient of stored item `slot`'s loss into `grad`; returns the item's
    /// absolute prediction error (its new priority), or `None` when the item cannot be used.
    fn replay_grad(&self, slot: usize, weight: f32, grad: &mut [f32]) -> Option<f32>;
    /// The model's outputs on synthetic input `i`.
    fn synthetic_outputs(&self, i: usize, out: &mut [f32]);
    /// Adds `weight ×` the gradient of the distillation loss of synthetic input `i` toward
    /// `teacher` (e.g. `½‖outputs − teacher‖²`) into `grad`; returns that loss.
    fn distill_grad(&self, i: usize, teacher: &[f32], weight: f32, grad: &mut [f32]) -> f32;
    /// Adds the consolidation penalty's gradient at the current parameters (0 when none).
    fn penalty_grad(&self, grad: &mut [f32]) -> Result<()>;
    /// One optimizer step along `grad`; `false` (nothing changed) when it was refused.
    fn step(&mut self, grad: &[f32]) -> bool;
    /// Score on the held-out probe set; higher is better.
    fn probe(&self) -> f64;
}

/// Settings of one cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DreamConfig {
    pub steps: usize,
    pub batch: usize,
    /// Synthetic inputs distilled per step.
    pub synthetic_batch: usize,
    pub distill_weight: f32,
    /// Importance-sampling exponent β of prioritized replay.
    pub beta: f64,
    /// The probe may drop by at most this much for the cycle to be kept.
    pub tolerance: f64,
    /// Wall-clock budget for the training steps.
    pub budget_ms: u64,
}

impl Default for DreamConfig {
    fn default() -> Self {
        DreamConfig {
            steps: 200,
            batch: 32,
            synthetic_batch: 16,
            distill_weight: 1.0,
            beta: 0.5,
            tolerance: 0.0,
            budget_ms: 2_000,
        }
    }
}

impl DreamConfig {
    pub fn validate(&self) -> Result<()> {
        use sona_core::validate::{check_range, check_size};
        check_size("dream steps", self.steps, 0, 1 << 24)?;
        check_size("dream batch", self.batch, 1, 1 << 16)?;
        check_size("dream synthetic_batch", self.synthetic_batch, 0, 1 << 16)?;
        check_range(
            "dream distill_weight",
            f64::from(self.distill_weight),
            0.0,
            1e6,
        )?;
        check_range("dream beta", self.beta, 0.0, 1.0)?;
        check_range("dream tolerance", self.tolerance, 0.0, 1e6)?;
        check_range("dream budget_ms", self.budget_ms as f64, 1.0, 3.6e6)?;
        Ok(())
    }
}

/// What a cycle did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DreamReport {
    pub steps: usize,
    pub replayed: usize,
    pub synthesized: usize,
    pub distill_loss: f64,
    pub probe_before: f64,
    pub probe_after: f64,
    pub accepted: bool,
    /// Training stopped because the time budget was spent.
    pub out_of_budget: bool,
    pub elapsed_ms: f64,
}

/// Runs one cycle of `model` over the stored items in `replay` and the model's synthetic
/// inputs. See the module docs.
pub fn run_cycle<M: DreamModel>(
    model: &mut M,
    replay: &mut PrioritizedReplay,
    cfg: &DreamConfig,
    rng: &mut SeededRng,
) -> Result<DreamReport> {
    cfg.validate()?;
    let start = Instant::now();
    let saved = model.state();
    let k = model.n_outputs();
    let n_syn = model.n_synthetic();
    let len = sona_core::validate::element_count("teacher outputs", &[n_syn, k])?;
    let mut teacher = sona_core::validate::try_zeros("teacher outputs", len)?;
    for (i, t) in teacher.chunks_exact_mut(k.max(1)).enumerate().take(n_syn) {
        model.synthetic_outputs(i, t);
    }
    if let Some(i) = teacher.iter().position(|v| !v.is_finite()) {
        return Err(SonaError::NonFinite {
            what: "teacher outputs".into(),
            index: i,
        });
    }
    let probe_before = model.probe();
    let budget = Duration::from_millis(cfg.budget_ms);
    let mut grad = sona_core::validate::try_zeros("dream gradient", model.n_params())?;
    let (mut steps, mut replayed, mut synthesized) = (0, 0, 0);
    let (mut distill_sum, mut out_of_budget) = (0.0f64, false);
    let mut next_syn = 0usize;
    for _ in 0..cfg.steps {
        if start.elapsed() >= budget {
            out_of_budget = true;
            break;
        }
        grad.fill(0.0);
        let batch = replay.sample(cfg.batch, cfg.beta, rng);
        let mut used = 0usize;
        let mut errors = Vec::with_capacity(batch.len());
        let scale = 1.0 / batch.len().max(1) as f32;
        for &(slot, w) in &batch {
            if let Some(e) = model.replay_grad(slot, w * scale, &mut grad) {
                errors.push((slot, e));
                used += 1;
            }
        }
        let m = cfg.synthetic_batch.min(n_syn);
        if m > 0 && cfg.distill_weight > 0.0 {
            let w = cfg.distill_weight / m as f32;
            for _ in 0..m {
                let i = next_syn % n_syn;
                next_syn += 1;
                let t = &teacher[i * k..(i + 1) * k];
                distill_sum += f64::from(model.distill_grad(i, t, w, &mut grad));
            }
            synthesized += m;
        }
        if used == 0 && m == 0 {
            break;
        }
        model.penalty_grad(&mut grad)?;
        if model.step(&grad) {
            steps += 1;
            replayed += used;
            for (slot, e) in errors {
                replay.update(slot, f64::from(e))?;
            }
        }
    }
    let probe_after = model.probe();
    let accepted = probe_after.is_finite() && probe_after >= probe_before - cfg.tolerance;
    if !accepted {
        model.restore(saved);
    }
    Ok(DreamReport {
        steps,
        replayed,
        synthesized,
        distill_loss: if synthesized > 0 {
            distill_sum / synthesized as f64
        } else {
            0.0
        },
        probe_before,
        probe_after,
        accepted,
        out_of_budget,
        elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Softmax regression with SGD: `K` classes over `D` inputs; stored items with labels; a probe.
    #[derive(Clone)]
    struct Softmax {
        w: Vec<f32>,
        vel: Vec<f32>,
        lr: f32,
        items: Vec<(Vec<f32>, usize)>,
        probe: Vec<(Vec<f32>, usize)>,
        syn: Vec<Vec<f32>>,
    }

    const K: usize = 4;
    const D: usize = 8;

    impl Softmax {
        fn probs(&self, x: &[f32], out: &mut [f32]) {
            for c in 0..K {
                out[c] = sona_core::kernels::dot(&self.w[c * D..(c + 1) * D], x);
            }
            let m = out.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let s: f32 = out
                .iter_mut()
                .map(|v| {
                    *v = (*v - m).exp();
                    *v
                })
                .sum();
            out.iter_mut().for_each(|v| *v /= s);
        }

        fn accuracy(&self, set: &[(Vec<f32>, usize)]) -> f64 {
            let mut p = [0.0; K];
            let ok = set
                .iter()
                .filter(|(x, y)| {
                    self.probs(x, &mut p);
                    (0..K).max_by(|&a, &b| p[a].total_cmp(&p[b])) == Some(*y)
                })
                .count();
            ok as f64 / set.len() as f64
        }

        fn sgd(&mut self, x: &[f32], y: usize) {
            let mut g = vec![0.0; K * D];
            let mut p = [0.0; K];
            self.probs(x, &mut p);
            for c in 0..K {
                let e = p[c] - f32::from(u8::from(c == y));
                sona_core::kernels::axpy(e, x, &mut g[c * D..(c + 1) * D]);
            }
            self.step(&g);
        }
    }

    impl DreamModel for Softmax {
        type State = (Vec<f32>, Vec<f32>);
        fn n_params(&self) -> usize {
            K * D
        }
        fn n_outputs(&self) -> usize {
            K
        }
        fn n_synthetic(&self) -> usize {
            self.syn.len()
        }
        fn state(&self) -> Self::State {
            (self.w.clone(), self.vel.clone())
        }
        fn restore(&mut self, s: Self::State) {
            (self.w, self.vel) = s;
        }
        fn replay_grad(&self, slot: usize, weight: f32, grad: &mut [f32]) -> Option<f32> {
            let (x, y) = self.items.get(slot)?;
            let mut p = [0.0; K];
            self.probs(x, &mut p);
            for c in 0..K {
                let e = p[c] - f32::from(u8::from(c == *y));
                sona_core::kernels::axpy(weight * e, x, &mut grad[c * D..(c + 1) * D]);
            }
            Some(1.0 - p[*y])
        }
        fn synthetic_outputs(&self, i: usize, out: &mut [f32]) {
            self.probs(&self.syn[i], out);
        }
        fn distill_grad(&self, i: usize, t: &[f32], weight: f32, grad: &mut [f32]) -> f32 {
            let x = &self.syn[i];
            // Cross-entropy to the teacher's soft labels (gradient p − t on the logits).
            let mut p = [0.0; K];
            self.probs(x, &mut p);
            let mut loss = 0.0;
            for c in 0..K {
                sona_core::kernels::axpy(weight * (p[c] - t[c]), x, &mut grad[c * D..(c + 1) * D]);
                loss += 0.5 * (p[c] - t[c]).powi(2);
            }
            loss
        }
        fn penalty_grad(&self, _grad: &mut [f32]) -> Result<()> {
            Ok(())
        }
        fn step(&mut self, g: &[f32]) -> bool {
            if g.iter().any(|v| !v.is_finite()) {
                return false;
            }
            for i in 0..self.w.len() {
                self.vel[i] = 0.9 * self.vel[i] + g[i];
                self.w[i] -= self.lr * self.vel[i];
            }
            true
        }
        fn probe(&self) -> f64 {
            self.accuracy(&self.probe)
        }
    }

    /// Class `c` lives around its own random direction; task A = classes {0, 1}, B = {2, 3}.
    fn data(
        rng: &mut SeededRng,
        classes: &[usize],
        n: usize,
        centres: &[Vec<f32>],
    ) -> Vec<(Vec<f32>, usize)> {
        (0..n)
            .map(|i| {
                let c = classes[i % classes.len()];
                let mut x = vec![0.0; D];
                rng.fill_normal(&mut x, 0.35);
                sona_core::kernels::axpy(1.0, &centres[c], &mut x);
                x[D - 1] = 1.0; // bias input
                (x, c)
            })
            .collect()
    }

    type Set = Vec<(Vec<f32>, usize)>;

    fn setup(seed: u64) -> (Softmax, Set, Set, Vec<Vec<f32>>) {
        let mut rng = SeededRng::new(seed);
        let centres: Vec<Vec<f32>> = (0..K)
            .map(|_| {
                let mut c = vec![0.0; D];
                rng.fill_normal(&mut c[..D - 1], 1.0);
                sona_core::kernels::normalize(&mut c);
                c
            })
            .collect();
        let a = data(&mut rng, &[0, 1], 200, &centres);
        let b = data(&mut rng, &[2, 3], 200, &centres);
        let m = Softmax {
            w: vec![0.0; K * D],
            vel: vec![0.0; K * D],
            lr: 0.02,
            items: Vec::new(),
            probe: Vec::new(),
            syn: Vec::new(),
        };
        (m, a, b, centres)
    }

    /// Train on A, then on B with (or without) a dream cycle every 50 steps replaying a small
    /// store of A and B items; returns the final accuracy on held-out A.
    fn forgetting_run(seed: u64, dream: bool) -> (f64, f64) {
        let (mut m, a, b, centres) = setup(seed);
        let mut rng = SeededRng::new(seed ^ 99);
        let held_a = data(&mut rng, &[0, 1], 200, &centres);
        for _ in 0..3 {
            for (x, y) in &a {
                m.sgd(x, *y);
            }
        }
        // The store holds 20 items of A (a reservoir would) and gains B items as they arrive.
        m.items = a.iter().take(20).cloned().collect();
        m.probe = [&held_a[..50], &data(&mut rng, &[2, 3], 50, &centres)[..]].concat();
        let mut replay = PrioritizedReplay::new(256, 0.6, 1e-3).unwrap();
        for _ in 0..m.items.len() {
            replay.push(None).unwrap();
        }
        let cfg = DreamConfig {
            steps: 20,
            batch: 16,
            synthetic_batch: 0,
            tolerance: 0.05,
            ..DreamConfig::default()
        };
        for epoch in 0..3 {
            for (i, (x, y)) in b.iter().enumerate() {
                m.sgd(x, *y);
                if epoch == 0 && i % 10 == 0 && m.items.len() < 200 {
                    m.items.push((x.clone(), *y));
                    replay.push(None).unwrap();
                }
                if dream && i % 50 == 49 {
                    run_cycle(&mut m, &mut replay, &cfg, &mut rng).unwrap();
                }
            }
        }
        let held_b = data(&mut rng, &[2, 3], 200, &centres);
        (m.accuracy(&held_a), m.accuracy(&held_b))
    }

    #[test]
    fn dream_cycles_reduce_forgetting_against_no_protection() {
        let (mut none_a, mut dream_a, mut dream_b) = (0.0, 0.0, 0.0);
        for seed in 0..5 {
            none_a += forgetting_run(seed, false).0 / 5.0;
            let (a, b) = forgetting_run(seed, true);
            dream_a += a / 5.0;
            dream_b += b / 5.0;
        }
        assert!(none_a < 0.6, "no protection should forget task A: {none_a}");
        assert!(dream_a > none_a + 0.25, "dreams {dream_a} vs none {none_a}");
        assert!(dream_b > 0.85, "task B still learned: {dream_b}");
    }

    #[test]
    fn a_regressing_cycle_is_rolled_back_bit_identically() {
        let (mut m, a, b, _) = setup(3);
        for (x, y) in a.iter().chain(&b) {
            m.sgd(x, *y);
        }
        // Stored items with wrong labels and a huge step: the cycle can only hurt the probe.
        m.items = a.iter().map(|(x, y)| (x.clone(), (y + 2) % K)).collect();
        m.probe = a.clone();
        m.lr = 1.0;
        let mut replay = PrioritizedReplay::new(256, 0.6, 1e-3).unwrap();
        for _ in 0..m.items.len() {
            replay.push(None).unwrap();
        }
        let before: Vec<u32> = m.w.iter().chain(&m.vel).map(|v| v.to_bits()).collect();
        m.syn = vec![vec![0.1f32; D]; 4];
        let rep = run_cycle(
            &mut m,
            &mut replay,
            &DreamConfig::default(),
            &mut SeededRng::new(0),
        )
        .unwrap();
        assert!(
            !rep.accepted && rep.steps > 0 && rep.probe_after < rep.probe_before,
            "{rep:?}"
        );
        let after: Vec<u32> = m.w.iter().chain(&m.vel).map(|v| v.to_bits()).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn budget_and_bad_input() {
        let (mut m, a, _, _) = setup(1);
        m.items = a.clone();
        let mut replay = PrioritizedReplay::new(256, 0.6, 1e-3).unwrap();
        for _ in 0..200 {
            replay.push(None).unwrap();
        }
        m.probe = a;
        let cfg = DreamConfig {
            steps: 1 << 24,
            budget_ms: 30,
            tolerance: 1.0,
            ..DreamConfig::default()
        };
        let rep = run_cycle(&mut m, &mut replay, &cfg, &mut SeededRng::new(0)).unwrap();
        assert!(rep.out_of_budget && rep.elapsed_ms < 1000.0, "{rep:?}");
        let mut rng = SeededRng::new(0);
        // A non-finite synthetic input gives a non-finite teacher: refused before any step.
        m.syn = vec![vec![f32::NAN; D]];
        let before = m.w.clone();
        assert!(run_cycle(&mut m, &mut replay, &cfg, &mut rng).is_err());
        assert_eq!(before, m.w);
        m.syn.clear();
        let bad = DreamConfig {
            batch: 0,
            ..DreamConfig::default()
        };
        assert!(run_cycle(&mut m, &mut replay, &bad, &mut rng).is_err());
    }
}
