//! A synthetic contextual bandit where the best tier depends on the query's cluster: the engine's
//! per-window regret falls, and it ends far below a uniformly random policy and a context-free
//! policy (ε-greedy on the running mean reward of each tier, the best single tier it can find).

use sona_core::SeededRng;
use sona_engine::{Engine, EngineConfig, FeedbackSource, LearningMode};

/// `P[c][k]`: probability that tier `k` answers a query of cluster `c` well.
const P: [[f64; 4]; 4] = [
    [0.9, 0.5, 0.3, 0.6],
    [0.2, 0.9, 0.3, 0.6],
    [0.2, 0.4, 0.9, 0.6],
    [0.2, 0.3, 0.3, 0.9],
];
const D: usize = 32;
const N: usize = 3000;
const W: usize = 500;
const EPS: f64 = 0.1;

struct World {
    centers: Vec<Vec<f32>>,
    rng: SeededRng,
}

impl World {
    fn new(seed: u64) -> Self {
        let mut rng = SeededRng::new(seed);
        let centers = (0..4)
            .map(|_| {
                let mut c = vec![0.0f32; D];
                rng.fill_normal(&mut c, 1.0);
                sona_core::kernels::normalize(&mut c);
                c
            })
            .collect();
        World { centers, rng }
    }

    fn query(&mut self) -> (usize, Vec<f32>) {
        let c = self.rng.below(4) as usize;
        let mut x = self.centers[c].clone();
        for v in x.iter_mut() {
            *v += 0.3 * self.rng.normal() / (D as f32).sqrt();
        }
        (c, x)
    }

    fn reward(&mut self, c: usize, k: usize) -> f32 {
        (self.rng.next_f64() < P[c][k]) as u8 as f32
    }
}

/// Expected regret per window against the oracle (best tier of each cluster, 0.9).
fn windows(expected: &[f64]) -> Vec<f64> {
    windows_of(expected, W)
}

fn windows_of(expected: &[f64], w: usize) -> Vec<f64> {
    expected
        .chunks(w)
        .map(|w| 0.9 - w.iter().sum::<f64>() / w.len() as f64)
        .collect()
}

/// Expected reward per query of the engine with `readout_lr` (default when `None`), with or
/// without loop-B cycles.
fn run_engine_with(seed: u64, readout_lr: Option<f64>, loop_b: bool) -> Vec<f64> {
    let mut cfg = EngineConfig::new(D);
    cfg.learning_mode = LearningMode::InstantOnly;
    cfg.bank_index = "flat".into();
    cfg.seed = seed;
    cfg.epsilon = EPS;
    cfg.loop_b_steps = 20;
    if let Some(lr) = readout_lr {
        cfg.readout_lr = lr;
    }
    let e = Engine::new(cfg).unwrap();
    let mut world = World::new(seed);
    let mut expected = Vec::with_capacity(N);
    for i in 0..N {
        let (c, x) = world.query();
        let d = e.process(&x).unwrap();
        let r = world.reward(c, d.tier);
        e.feedback(d.trajectory_id, r, FeedbackSource::Explicit)
            .unwrap();
        expected.push(P[c][d.tier]);
        if loop_b && (i + 1) % 200 == 0 {
            e.background_learn().unwrap();
        }
    }
    expected
}

fn run_context_free(seed: u64) -> Vec<f64> {
    let mut world = World::new(seed);
    let mut rng = SeededRng::new(seed ^ 99);
    let (mut sum, mut n) = ([0.0f64; 4], [0u64; 4]);
    let mut expected = Vec::with_capacity(N);
    for _ in 0..N {
        let (c, _) = world.query();
        let k = if rng.next_f64() < EPS || n.contains(&0) {
            rng.below(4) as usize
        } else {
            (0..4)
                .max_by(|&a, &b| (sum[a] / n[a] as f64).total_cmp(&(sum[b] / n[b] as f64)))
                .unwrap()
        };
        let r = world.reward(c, k);
        sum[k] += r as f64;
        n[k] += 1;
        expected.push(P[c][k]);
    }
    windows(&expected)
}

#[test]
fn regret_falls_and_beats_random_and_context_free() {
    // Random: the mean over tiers of each cluster's expected reward.
    let random = 0.9 - P.iter().flatten().sum::<f64>() / 16.0;
    for seed in [11, 12] {
        let raw = run_engine_with(seed, None, true);
        let eng = windows(&raw);
        // The read-out learns within the first window: its first 25 queries are the "before".
        let first = windows_of(&raw[..25], 25)[0];
        let free = run_context_free(seed);
        let tail = |w: &[f64]| w[w.len() - 3..].iter().sum::<f64>() / 3.0;
        let (e_tail, f_tail) = (tail(&eng), tail(&free));
        eprintln!("seed {seed}: engine {eng:.3?}\n  context-free {free:.3?}, random {random:.3}");
        assert!(
            first > 1.5 * e_tail,
            "regret did not fall: {first} then {eng:?}"
        );
        assert!(
            e_tail < 0.6 * f_tail,
            "engine {e_tail} vs context-free {f_tail}"
        );
        assert!(e_tail < 0.4 * random, "engine {e_tail} vs random {random}");
    }
}

#[test]
fn the_readout_makes_loop_a_learn_the_per_tier_model() {
    // Loop A alone (no loop-B cycle): with the read-out the router learns which tier each cluster
    // needs within a few hundred feedbacks; without it (the router of format 1) loop A's micro
    // adapters barely move the decision.
    for seed in [21, 22] {
        let on = windows(&run_engine_with(seed, None, false));
        let off = windows(&run_engine_with(seed, Some(0.0), false));
        let tail = |w: &[f64]| w[w.len() - 3..].iter().sum::<f64>() / 3.0;
        eprintln!("seed {seed}: read-out {on:.3?}\n  none {off:.3?}");
        assert!(
            tail(&on) < 0.6 * tail(&off),
            "read-out {on:?} vs none {off:?}"
        );
    }
}
