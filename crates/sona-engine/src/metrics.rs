//! Per-window improvement metrics of the routing loop.
//!
//! A window is `metrics_window` consecutive feedbacks. For each: mean reward, mean cost, mean utility
//! (`reward − cost_weight · cost`), tier shares, and an estimated regret against the best fixed tier:
//! the inverse-propensity (IPS) estimate of each tier's mean utility from the logged propensities,
//! `V̂_k = (1/n) Σ_i 1[a_i = k] u_i(k) / p_i`, minus the realized mean utility; the regret is
//! `max_k V̂_k − mean_i u_i`. It is an unbiased estimate of the regret against the best fixed tier
//! *within that window* (noisy when propensities are small).

use serde::{Deserialize, Serialize};

/// Running sums of one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowSums {
    pub n: u64,
    pub reward: f64,
    pub cost: f64,
    pub utility: f64,
    pub tier_counts: Vec<u64>,
    pub ips: Vec<f64>,
}

/// One finished (or the current partial) window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowReport {
    pub index: u64,
    pub n: u64,
    pub mean_reward: f64,
    pub mean_cost: f64,
    pub mean_utility: f64,
    pub tier_shares: Vec<f64>,
    pub ips_tier_utility: Vec<f64>,
    pub best_fixed_tier: usize,
    pub regret: f64,
}

/// All windows so far (the oldest are dropped past `MAX_WINDOWS`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub window: usize,
    pub tiers: usize,
    pub current: WindowSums,
    pub done: Vec<WindowReport>,
    pub windows_closed: u64,
    pub total: WindowSums,
}

const MAX_WINDOWS: usize = 10_000;

impl WindowSums {
    fn new(t: usize) -> Self {
        WindowSums {
            tier_counts: vec![0; t],
            ips: vec![0.0; t],
            ..Default::default()
        }
    }

    fn push(&mut self, tier: usize, reward: f64, propensity: f64, costs: &[f64], w: f64) {
        let u = reward - w * costs[tier];
        self.n += 1;
        self.reward += reward;
        self.cost += costs[tier];
        self.utility += u;
        self.tier_counts[tier] += 1;
        self.ips[tier] += u / propensity.max(1e-6);
    }

    fn report(&self, index: u64) -> WindowReport {
        let n = self.n.max(1) as f64;
        let ips: Vec<f64> = self.ips.iter().map(|s| s / n).collect();
        let mut best = 0;
        for k in 0..ips.len() {
            if ips[k] > ips[best] {
                best = k;
            }
        }
        WindowReport {
            index,
            n: self.n,
            mean_reward: self.reward / n,
            mean_cost: self.cost / n,
            mean_utility: self.utility / n,
            tier_shares: self.tier_counts.iter().map(|&c| c as f64 / n).collect(),
            best_fixed_tier: best,
            regret: ips[best] - self.utility / n,
            ips_tier_utility: ips,
        }
    }
}

impl Metrics {
    pub fn new(window: usize, tiers: usize) -> Self {
        Metrics {
            window,
            tiers,
            current: WindowSums::new(tiers),
            done: Vec::new(),
            windows_closed: 0,
            total: WindowSums::new(tiers),
        }
    }

    /// Records one feedback.
    pub fn push(&mut self, tier: usize, reward: f32, propensity: f32, costs: &[f64], w: f64) {
        let (r, p) = (reward as f64, propensity as f64);
        self.current.push(tier, r, p, costs, w);
        self.total.push(tier, r, p, costs, w);
        if self.current.n as usize >= self.window {
            let rep = self.current.report(self.windows_closed);
            self.windows_closed += 1;
            if self.done.len() >= MAX_WINDOWS {
                self.done.remove(0);
            }
            self.done.push(rep);
            self.current = WindowSums::new(self.tiers);
        }
    }

    /// JSON object: `window`, `windows` (finished), `current` (partial), `overall`, and the series
    /// `regret`, `mean_reward`, `mean_cost` over finished windows.
    pub fn to_json(&self) -> String {
        let series = |f: fn(&WindowReport) -> f64| self.done.iter().map(f).collect::<Vec<f64>>();
        serde_json::json!({
            "window": self.window,
            "windows": self.done,
            "current": self.current.report(self.windows_closed),
            "overall": self.total.report(0),
            "regret": series(|w| w.regret),
            "mean_reward": series(|w| w.mean_reward),
            "mean_cost": series(|w| w.mean_cost),
            "mean_utility": series(|w| w.mean_utility),
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_regret_of_uniform_logging() {
        // Uniform logging over 2 tiers; tier 1 always rewards 1, tier 0 never: the best fixed tier's
        // utility is 1, the realized mean 0.5, so the regret is ≈ 0.5.
        let mut m = Metrics::new(1000, 2);
        for i in 0..1000 {
            let t = i % 2;
            m.push(t, t as f32, 0.5, &[0.0, 0.0], 0.0);
        }
        let w = &m.done[0];
        assert_eq!(w.best_fixed_tier, 1);
        assert!((w.ips_tier_utility[1] - 1.0).abs() < 1e-9);
        assert!((w.regret - 0.5).abs() < 1e-9);
        assert!((w.tier_shares[0] - 0.5).abs() < 1e-9);
        assert!(m.to_json().contains("\"regret\""));
    }
}
