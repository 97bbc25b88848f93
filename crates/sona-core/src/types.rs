//! The canonical records of design §2: one definition each, mirrored in Python.

use serde::{Deserialize, Serialize};

/// Global, monotonic, never-reused trajectory id.
pub type TrajectoryId = u64;
/// Global pattern id (fresh on creation, kept through merges by the surviving pattern).
pub type PatternId = u64;

/// Where a reward came from. Rewards only ever come from outside the model (design §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum RewardSource {
    /// A rating given by a user or the application.
    #[default]
    Explicit,
    /// Derived from behaviour (retry, abandon, copy...).
    Implicit,
    /// A judge model's score.
    Judge,
}

impl RewardSource {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "explicit" => Some(Self::Explicit),
            "implicit" => Some(Self::Implicit),
            "judge" => Some(Self::Judge),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Explicit => "explicit",
            Self::Implicit => "implicit",
            Self::Judge => "judge",
        }
    }
}

/// One intermediate state of a multi-step agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub activation: Vec<f32>,
    pub reward: Option<f32>,
}

/// What the router decided for one query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Chosen model tier (0 = cheapest).
    pub tier: u8,
    /// Probability the policy gave the chosen tier (for importance weighting).
    pub propensity: f32,
    /// Utility of every tier (`r̂_k − cost_weight · cost_k`).
    pub utilities: Vec<f32>,
    /// Continuous generation parameters (temperature, top_p, context bin...).
    pub params: Vec<f32>,
}

/// One query's full record, from request to feedback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trajectory {
    pub id: TrajectoryId,
    pub query: Vec<f32>,
    pub adapted: Vec<f32>,
    pub steps: Vec<Step>,
    pub decision: Option<Decision>,
    pub retrieved: Vec<PatternId>,
    /// In `[0, 1]` once feedback arrived.
    pub reward: Option<f32>,
    pub reward_source: Option<RewardSource>,
    pub latency_us: u32,
    pub ts_ms: u64,
    pub tenant: Option<String>,
}

/// Running reward statistics of one arm (tier) of one pattern: Welford's count/mean/M2, so two
/// arms merge exactly (Chan et al.) when patterns merge. Rewards lie in `[0, 1]`, so the mean does
/// too and `M2 ≤ n/4`; counts stop at [`ArmStats::MAX_COUNT`]. Everything `push`/`merge` produce
/// passes [`ArmStats::is_plausible`], which loaders check, so a saved bank always reloads.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ArmStats {
    pub count: u64,
    pub mean: f64,
    pub m2: f64,
}

impl ArmStats {
    /// Largest count kept (2^53, the last integer `f64` holds exactly).
    pub const MAX_COUNT: u64 = 1 << 53;

    /// Adds one reward in `[0, 1]`.
    pub fn push(&mut self, x: f64) {
        self.count = (self.count + 1).min(Self::MAX_COUNT);
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 = (self.m2 + delta * (x - self.mean)).min(Self::m2_bound(self.count));
    }

    /// Exact combination of two disjoint samples (the count saturates at `MAX_COUNT`).
    pub fn merge(&self, other: &ArmStats) -> ArmStats {
        if self.count == 0 {
            return *other;
        }
        if other.count == 0 {
            return *self;
        }
        let (a, b) = (self.count as f64, other.count as f64);
        let delta = other.mean - self.mean;
        let mean = self.mean + delta * b / (a + b);
        let count = self.count.saturating_add(other.count).min(Self::MAX_COUNT);
        let m2 =
            (self.m2 + other.m2 + delta * delta * (a * b) / (a + b)).min(Self::m2_bound(count));
        ArmStats { count, mean, m2 }
    }

    /// Whether the fields could have come from `push`/`merge` over rewards in `[0, 1]`: count at
    /// most `MAX_COUNT`, mean in `[0, 1]` (any finite value while the count is 0), `0 ≤ M2 ≤ n/4`.
    /// Loaders refuse anything else, so merging loaded arms can never overflow.
    pub fn is_plausible(&self) -> bool {
        let mean_ok = if self.count == 0 {
            self.mean.is_finite()
        } else {
            (0.0..=1.0).contains(&self.mean)
        };
        self.count <= Self::MAX_COUNT
            && mean_ok
            && (0.0..=Self::m2_bound(self.count)).contains(&self.m2)
    }

    /// The largest M2 `n` rewards in `[0, 1]` can have (n/4), with room for rounding.
    fn m2_bound(count: u64) -> f64 {
        0.25 * count as f64 * (1.0 + 1e-9) + 1e-9
    }

    /// Unbiased sample variance (0 with fewer than 2 observations).
    pub fn variance(&self) -> f64 {
        if self.count < 2 {
            0.0
        } else {
            self.m2 / (self.count - 1) as f64
        }
    }
}

/// A cluster of similar trajectories and what worked for them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pattern {
    pub id: PatternId,
    /// 0 concrete, ≥ 1 abstraction.
    pub level: u8,
    /// Unit-norm centroid.
    pub centroid: Vec<f32>,
    pub support: u32,
    /// One entry per tier.
    pub arms: Vec<ArmStats>,
    pub avg_reward: f32,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub last_access_ms: u64,
    pub access_count: u64,
    pub exemplars: Vec<TrajectoryId>,
    pub payload: Option<Vec<u8>>,
}

/// A statistically supported recommendation for one pattern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub pattern_id: PatternId,
    pub recommended_tier: u8,
    pub params: Vec<f32>,
    pub confidence: f32,
    /// Holm-adjusted p-value of the recommended arm against the default arm.
    pub p_value: f64,
    pub support: u32,
    /// Mean reward of the recommended arm minus the default arm's.
    pub improvement: f32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_merge_equals_pooled() {
        let xs = [0.1, 0.5, 0.9, 0.3, 1.0, 0.0, 0.7];
        let mut all = ArmStats::default();
        let mut a = ArmStats::default();
        let mut b = ArmStats::default();
        for (i, &x) in xs.iter().enumerate() {
            all.push(x);
            if i < 3 {
                a.push(x)
            } else {
                b.push(x)
            }
        }
        let m = a.merge(&b);
        assert_eq!(m.count, all.count);
        assert!((m.mean - all.mean).abs() < 1e-12);
        assert!((m.variance() - all.variance()).abs() < 1e-12);
    }

    /// CI found a bank checkpoint whose arm counts summed past u64::MAX when patterns merged;
    /// then a merged M2 that a reload refused. Whatever merge/push produce must stay plausible.
    #[test]
    fn huge_counts_saturate_and_stay_plausible() {
        let top = ArmStats::MAX_COUNT;
        let a = ArmStats {
            count: top,
            mean: 0.5,
            m2: 0.25 * top as f64,
        };
        assert!(a.is_plausible());
        let m = a.merge(&ArmStats { mean: 0.0, ..a });
        assert_eq!(m.count, top);
        assert!(m.is_plausible(), "{m:?}");
        let mut p = m;
        p.push(1.0);
        assert_eq!(p.count, top);
        assert!(p.is_plausible());
        assert!(!ArmStats {
            count: top + 1,
            ..a
        }
        .is_plausible());
        assert!(!ArmStats { m2: -1.0, ..a }.is_plausible());
        assert!(!ArmStats {
            m2: 0.3 * top as f64,
            ..a
        }
        .is_plausible());
        assert!(!ArmStats {
            mean: f64::NAN,
            ..a
        }
        .is_plausible());
        assert!(!ArmStats { mean: 1.5, ..a }.is_plausible());
    }
}
