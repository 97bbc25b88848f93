//! The cost-aware policy: utilities, exploration and the propensity of the chosen tier.
//!
//! `u_k = r̂_k − cost_weight · cost_k`. ε-greedy gives every tier `ε/T` and the best the rest;
//! SquareCB gives tier `k ≠ best` probability `1 / (T + γ (u_best − u_k))` and the best the rest.
//! The uniform draw comes from the caller (a hash of the seed and the trajectory id), so decisions
//! are reproducible without a shared RNG lock on the request path.

use crate::config::Exploration;

/// What the policy chose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    pub tier: usize,
    /// Probability the policy gave `tier`.
    pub propensity: f32,
    /// Whether `tier` is not the greedy (best-utility) tier.
    pub explored: bool,
}

/// `u_k = r̂_k − w · cost_k` into `out`.
pub fn utilities(predicted: &[f32], costs: &[f64], weight: f64, out: &mut [f32]) {
    for ((u, &r), &c) in out.iter_mut().zip(predicted).zip(costs) {
        *u = (r as f64 - weight * c) as f32;
    }
}

/// Index of the largest utility (the first on ties, so cheaper tiers win ties).
pub fn greedy(u: &[f32]) -> usize {
    let mut best = 0;
    for (k, &v) in u.iter().enumerate() {
        if v > u[best] {
            best = k;
        }
    }
    best
}

/// The action distribution over tiers, written into `probs`.
pub fn distribution(u: &[f32], rule: Exploration, epsilon: f64, gamma: f64, probs: &mut [f64]) {
    let t = u.len();
    let best = greedy(u);
    match rule {
        Exploration::Epsilon => {
            probs.fill(epsilon / t as f64);
            probs[best] += 1.0 - epsilon;
        }
        Exploration::Squarecb => {
            let mut rest = 0.0;
            for k in 0..t {
                if k != best {
                    let gap = (u[best] - u[k]).max(0.0) as f64;
                    probs[k] = 1.0 / (t as f64 + gamma * gap);
                    rest += probs[k];
                }
            }
            probs[best] = (1.0 - rest).max(0.0);
        }
    }
}

/// Samples a tier from the distribution with the uniform draw `draw ∈ [0, 1)`.
pub fn choose(u: &[f32], rule: Exploration, epsilon: f64, gamma: f64, draw: f64) -> Choice {
    let t = u.len();
    let mut probs = [0.0f64; 16];
    let probs = &mut probs[..t];
    distribution(u, rule, epsilon, gamma, probs);
    let best = greedy(u);
    let mut acc = 0.0;
    let mut tier = best;
    for (k, &p) in probs.iter().enumerate() {
        acc += p;
        if draw < acc {
            tier = k;
            break;
        }
    }
    if probs[tier] <= 0.0 {
        tier = best;
    }
    Choice {
        tier,
        propensity: probs[tier] as f32,
        explored: tier != best,
    }
}

/// A uniform draw in `[0, 1)` from `(seed, id)` (SplitMix64 finalizer): reproducible, lock-free.
pub fn draw(seed: u64, id: u64) -> f64 {
    let mut z = seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributions_sum_to_one_and_favour_the_best() {
        let u = [0.2f32, 0.9, 0.5, 0.1];
        for rule in [Exploration::Epsilon, Exploration::Squarecb] {
            for (eps, gamma) in [(0.0, 0.0), (0.1, 10.0), (1.0, 1000.0)] {
                let mut p = [0.0; 4];
                distribution(&u, rule, eps, gamma, &mut p);
                let s: f64 = p.iter().sum();
                assert!((s - 1.0).abs() < 1e-12, "{rule:?} {p:?}");
                assert!(p.iter().all(|&x| x >= 0.0));
                assert!(p[1] >= p[0] && p[1] >= p[2] && p[1] >= p[3]);
            }
        }
        let mut p = [0.0; 4];
        distribution(&u, Exploration::Squarecb, 0.0, 100.0, &mut p);
        // Larger gaps get less probability.
        assert!(p[2] > p[0] && p[0] > p[3]);
    }

    #[test]
    fn empirical_rates_match_propensities() {
        let u = [0.2f32, 0.9, 0.5, 0.1];
        for rule in [Exploration::Epsilon, Exploration::Squarecb] {
            let mut p = [0.0; 4];
            distribution(&u, rule, 0.2, 20.0, &mut p);
            let mut counts = [0usize; 4];
            let n = 200_000;
            let mut explored = 0;
            for id in 0..n {
                let c = choose(&u, rule, 0.2, 20.0, draw(7, id));
                assert!((c.propensity as f64 - p[c.tier]).abs() < 1e-6);
                counts[c.tier] += 1;
                explored += c.explored as usize;
            }
            for k in 0..4 {
                let rate = counts[k] as f64 / n as f64;
                assert!(
                    (rate - p[k]).abs() < 0.005,
                    "{rule:?} tier {k}: {rate} vs {}",
                    p[k]
                );
            }
            assert!((explored as f64 / n as f64 - (1.0 - p[1])).abs() < 0.005);
        }
        // ε = 0 never explores.
        assert!(
            (0..1000).all(|id| !choose(&u, Exploration::Epsilon, 0.0, 0.0, draw(1, id)).explored)
        );
    }

    #[test]
    fn utilities_subtract_weighted_cost() {
        let mut u = [0.0f32; 2];
        utilities(&[0.9, 0.95], &[1.0, 30.0], 0.01, &mut u);
        assert!((u[0] - 0.89).abs() < 1e-6 && (u[1] - 0.65).abs() < 1e-6);
        assert_eq!(greedy(&u), 0);
        assert_eq!(greedy(&[0.5, 0.5]), 0);
    }
}
