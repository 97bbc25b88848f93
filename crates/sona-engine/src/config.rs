//! [`EngineConfig`]: every tunable of the engine, its default and its valid range.
//!
//! This is the only place defaults live: the binding exposes them as JSON
//! (`engine_config_defaults`) and the Python `SONAConfig` reads them from there.
//!
//! Costs are used as given (any unit); the utility of tier `k` is `r̂_k − cost_weight · cost_k`
//! with `r̂_k ∈ [0, 1]`. The default `cost_weight = 0.002` makes the default most expensive tier
//! (cost 30) worth 0.06 of reward, i.e. it is chosen over the cheapest only when it is predicted to be
//! right ≈ 6 percentage points more often.

use serde::{Deserialize, Serialize};
use sona_core::{Result, SonaError};

/// How the engine learns (design §9 `LearningMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LearningMode {
    /// Loop A only: micro-LoRA steps, arm statistics, graph edges on each feedback.
    InstantOnly,
    /// Loops A and B (B on a background thread owned by the engine).
    InstantAndBackground,
    /// Loops A, B and C: loop B on the background thread, and a deep ("dream") cycle after every
    /// `deep_every_b` loop-B cycles there (and whenever `deep_learn` is called).
    AllThreeTiers,
}

/// Exploration rule of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exploration {
    /// With probability ε a uniformly random tier, otherwise the best utility.
    Epsilon,
    /// SquareCB (Foster & Rakhlin 2020): `p_k = 1 / (T + γ (u_best − u_k))`, the rest to the best.
    Squarecb,
}

/// Every tunable of the engine. Unknown fields are refused; missing ones take their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Embedding dimension `d` (1..=65536).
    pub dim: usize,
    /// Number of model tiers `T` (1..=16).
    pub n_tiers: usize,
    /// One name per tier (empty: `tier0`, `tier1`, ...).
    pub tier_names: Vec<String>,
    /// One cost per tier, finite and ≥ 0 (empty: `[1, 3, 10, 30]` truncated or extended ×3).
    pub tier_costs: Vec<f64>,
    /// Weight of cost in the utility (0..=1000).
    pub cost_weight: f64,
    /// Router hidden size `H` (1..=512).
    pub hidden: usize,
    /// Rank of `W = W₁W₂` (1..=64, ≤ min(H, d + S)).
    pub rank_w: usize,
    /// Rank of `U = U₁U₂` (1..=64, ≤ H).
    pub rank_u: usize,
    /// Patterns recalled and read by the router per query (0..=32).
    pub k_recall: usize,
    /// `"epsilon"` or `"squarecb"`.
    pub exploration: Exploration,
    /// ε of ε-greedy (0..=1).
    pub epsilon: f64,
    /// γ of SquareCB (0..=1e6).
    pub gamma: f64,
    /// Rank of the micro-LoRA on the embedding adapter (1..=2).
    pub micro_rank: usize,
    /// Step size of the embedding micro-LoRA (0..=10).
    pub micro_lr: f64,
    /// `α` of the embedding micro-LoRA (forward scale `α / r`, 1e-6..=1e6).
    pub micro_alpha: f64,
    /// Frobenius bound on the embedding micro-LoRA's `ΔW` (>0).
    pub micro_max_norm: f64,
    /// Rank of the micro-LoRA on the tier head (1..=2, ≤ T and ≤ H; reduced to fit).
    pub head_micro_rank: usize,
    /// Step size of the tier-head micro-LoRA (0..=10).
    pub head_micro_lr: f64,
    /// Normalized step of the per-tier read-out of the query on each feedback (0..=100; 0
    /// disables it, which is the router of checkpoint format 1): the chosen tier's logit on that
    /// query moves by `readout_lr · (reward − r̂)`, whatever `d` is.
    pub readout_lr: f64,
    /// Rank of the base LoRA of the embedding adapter (1..=64).
    pub base_rank: usize,
    /// `α` of the base LoRA (1e-6..=1e6). Small (0.1, scale 0.0125 at rank 8) because loop B's
    /// Adam steps on a scale-1 base warp the query space the router, the read-out and the memory's
    /// centroids all read (routing benchmark, docs/benchmarks.md).
    pub base_alpha: f64,
    /// Adam step size of loop B on router + base LoRA (0..=1).
    pub loop_b_lr: f64,
    /// Adam steps per loop-B cycle (0..=10000).
    pub loop_b_steps: usize,
    /// Replay minibatch size (1..=4096).
    pub loop_b_batch: usize,
    /// Run loop B after this many feedbacks (0 disables the count trigger).
    pub loop_b_every: u64,
    /// Run loop B after this many seconds when feedback arrived (0 disables the time trigger).
    pub loop_b_interval_s: f64,
    /// Merge the micro adapters into the base ones at the end of each loop-B cycle.
    pub merge_in_loop_b: bool,
    /// EWC++ penalty strength λ (0..=1e9).
    pub ewc_lambda: f64,
    /// Online-Fisher EMA decay per sample (0..1).
    pub ewc_gamma: f64,
    /// Detect task boundaries on the inputs during loop B.
    pub detect_boundaries: bool,
    /// Importance weight clip of the bandit loss (0 disables weighting; else weights
    /// `min(1/propensity, clip)`).
    pub iw_clip: f64,
    /// `"instant_only"`, `"instant_and_background"` or `"all_three_tiers"`.
    pub learning_mode: LearningMode,
    /// Seed of every random choice (weights, exploration, replay).
    pub seed: u64,
    /// Trajectories awaiting feedback (1..=10^7; the oldest are evicted beyond it).
    pub pending_capacity: usize,
    /// Seconds after which a pending trajectory expires (>0).
    pub pending_ttl_s: f64,
    /// Completed decisions kept for loop-B replay (1..=10^7).
    pub replay_capacity: usize,
    /// Half-life, in feedbacks, of the recency weights of loop-B replay (0..=10^9; 0 replays the
    /// reservoir uniformly).
    pub replay_half_life: u64,
    /// Feedbacks per window of `improvement_metrics` (1..=10^7).
    pub metrics_window: usize,
    /// Memory budget (1..=10^6 MB): sizes every store and evicts by the policy of
    /// [`crate::budget`]; a budget the weights alone exceed is refused.
    pub memory_budget_mb: f64,
    /// Pattern index of the bank: `"flat"` (exact), `"ivf"` or `"hnsw"`.
    pub bank_index: String,
    /// τ_merge of pattern extraction (−1..=1).
    pub bank_merge_threshold: f64,
    /// Most clusters one extraction produces (1..=100000).
    pub bank_max_clusters: usize,
    /// New completed trajectories kept for the next extraction (1..=10^7).
    pub bank_buffer_capacity: usize,
    /// Interaction log file (SQLite, WAL); `None`: no log.
    pub log_path: Option<String>,
    /// `"off"` (no log), `"group"` (committed within `group_commit_ms`) or `"sync"` (`feedback`
    /// returns after the commit that holds it).
    pub durability: String,
    /// Longest a record waits for its commit in `"group"` mode, ms (1..=60000).
    pub group_commit_ms: u64,
    /// Records queued for the log writer before callers block (1..=10^7).
    pub log_queue_capacity: usize,
    /// Keep at most this many newest log records (0: no limit; records after the last checkpoint
    /// are always kept).
    pub log_retention_rows: u64,
    /// Delete log records older than this many seconds (0: no limit; same exception).
    pub log_retention_s: f64,
    /// Directory loop B checkpoints into (`None`: no periodic checkpoints).
    pub checkpoint_dir: Option<String>,
    /// Checkpoint after every this many loop-B cycles (1..=10^6).
    pub checkpoint_every_cycles: u64,
    /// Loop C: optimizer steps of one deep cycle (0..=10^6).
    pub deep_steps: usize,
    /// Loop C: pseudo-rehearsal queries sampled around patterns per cycle (0..=10^6).
    pub deep_synthetic: usize,
    /// Loop C: synthetic queries distilled per step (0..=4096).
    pub deep_synthetic_batch: usize,
    /// Loop C: weight of the distillation loss (0..=10^6).
    pub deep_distill_weight: f64,
    /// Loop C: the held-out probe score may drop by at most this for a cycle to be kept (0..=10^6).
    pub deep_tolerance: f64,
    /// Loop C: wall-clock budget of the training steps, ms (1..=3.6·10^6).
    pub deep_budget_ms: u64,
    /// Loop C: spread of pseudo-rehearsal queries around a centroid, as σ·√dim (0..=10).
    pub deep_spread: f64,
    /// Loop C: cosine at which patterns are merged transitively (−1..=1).
    pub deep_consolidate_threshold: f64,
    /// Loop C: patterns idle this long (s) with support < 2 and mean reward < 0.05 are pruned.
    pub deep_prune_idle_s: f64,
    /// Under `all_three_tiers`, a deep cycle runs after every this many loop-B cycles (0 = only
    /// when `deep_learn` is called).
    pub deep_every_b: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            dim: 256,
            n_tiers: 4,
            tier_names: Vec::new(),
            tier_costs: Vec::new(),
            cost_weight: 0.002,
            hidden: 16,
            rank_w: 8,
            rank_u: 4,
            k_recall: 4,
            exploration: Exploration::Epsilon,
            epsilon: 0.05,
            gamma: 50.0,
            micro_rank: 2,
            micro_lr: 0.01,
            micro_alpha: 1.0,
            micro_max_norm: 4.0,
            head_micro_rank: 1,
            head_micro_lr: 0.05,
            readout_lr: 5.0,
            base_rank: 8,
            base_alpha: 0.1,
            loop_b_lr: 0.01,
            loop_b_steps: 50,
            loop_b_batch: 32,
            loop_b_every: 500,
            loop_b_interval_s: 30.0,
            merge_in_loop_b: true,
            ewc_lambda: 1.0,
            ewc_gamma: 0.999,
            detect_boundaries: true,
            iw_clip: 0.0,
            learning_mode: LearningMode::InstantAndBackground,
            seed: 0,
            pending_capacity: 100_000,
            pending_ttl_s: 3600.0,
            replay_capacity: 10_000,
            replay_half_life: 0,
            metrics_window: 500,
            memory_budget_mb: 512.0,
            bank_index: "ivf".into(),
            bank_merge_threshold: 0.9,
            bank_max_clusters: 64,
            bank_buffer_capacity: 100_000,
            log_path: None,
            durability: "group".into(),
            group_commit_ms: 10,
            log_queue_capacity: 65_536,
            log_retention_rows: 0,
            log_retention_s: 0.0,
            checkpoint_dir: None,
            checkpoint_every_cycles: 1,
            deep_steps: 200,
            deep_synthetic: 256,
            deep_synthetic_batch: 8,
            deep_distill_weight: 1.0,
            deep_tolerance: 0.0,
            deep_budget_ms: 5_000,
            deep_spread: 0.5,
            deep_consolidate_threshold: 0.95,
            deep_prune_idle_s: 7.0 * 86_400.0,
            deep_every_b: 10,
        }
    }
}

/// The default cost of tier `k`: 1, 3, 10, 30, then ×3 per further tier.
fn default_cost(k: usize) -> f64 {
    const BASE: [f64; 4] = [1.0, 3.0, 10.0, 30.0];
    if k < 4 {
        BASE[k]
    } else {
        30.0 * 3f64.powi((k - 3) as i32)
    }
}

fn int_range(what: &str, v: u64, lo: u64, hi: u64) -> Result<()> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(SonaError::Config(format!(
            "{what} must be in [{lo}, {hi}], got {v}"
        )))
    }
}

fn real_range(what: &str, v: f64, lo: f64, hi: f64) -> Result<()> {
    sona_core::validate::check_range(what, v, lo, hi)
}

/// A config that lists its tiers (`tier_names` or `tier_costs`) but omits `n_tiers` has as many
/// tiers as it lists, so `{"tier_names": ["small", "large"]}` needs no count beside it; lists of
/// different lengths are still refused by `validate`, naming them.
fn infer_n_tiers(value: &mut serde_json::Value) {
    let Some(obj) = value.as_object_mut() else {
        return;
    };
    if obj.contains_key("n_tiers") {
        return;
    }
    let listed = ["tier_names", "tier_costs"]
        .iter()
        .find_map(|k| obj.get(*k).and_then(|v| v.as_array()).map(Vec::len));
    if let Some(n) = listed.filter(|&n| n > 0) {
        obj.insert("n_tiers".into(), n.into());
    }
}

/// Width `S` of the per-step statistics block (see `router::features`).
pub fn stat_width(n_tiers: usize) -> usize {
    3 * n_tiers + 3
}

impl EngineConfig {
    /// Defaults for `dim`-dimensional embeddings.
    pub fn new(dim: usize) -> Self {
        EngineConfig {
            dim,
            ..EngineConfig::default()
        }
    }

    /// Parses JSON (unknown fields refused, missing fields defaulted), fills the derived defaults
    /// (tier names and costs) and validates every range.
    pub fn from_json(s: &str) -> Result<Self> {
        if s.len() > 1 << 20 {
            return Err(SonaError::Config("config JSON is larger than 1 MiB".into()));
        }
        let bad = |e: serde_json::Error| SonaError::Config(format!("config JSON: {e}"));
        let mut value: serde_json::Value = serde_json::from_str(s).map_err(bad)?;
        infer_n_tiers(&mut value);
        let mut c: EngineConfig = serde_json::from_value(value).map_err(bad)?;
        c.fill_defaults();
        c.validate()?;
        Ok(c)
    }

    /// The normalized JSON of this config.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("config serialises")
    }

    /// Fills tier names and costs left empty with their defaults for `n_tiers`.
    pub fn fill_defaults(&mut self) {
        if self.tier_names.is_empty() && self.n_tiers <= 16 {
            self.tier_names = (0..self.n_tiers).map(|k| format!("tier{k}")).collect();
        }
        if self.tier_costs.is_empty() && self.n_tiers <= 16 {
            self.tier_costs = (0..self.n_tiers).map(default_cost).collect();
        }
    }

    /// Checks every field; the error names the field and its range.
    pub fn validate(&self) -> Result<()> {
        int_range("dim", self.dim as u64, 1, 65_536)?;
        int_range("n_tiers", self.n_tiers as u64, 1, 16)?;
        let t = self.n_tiers;
        if self.tier_names.len() != t {
            return Err(SonaError::Config(format!(
                "tier_names must have n_tiers = {t} entries, got {}",
                self.tier_names.len()
            )));
        }
        if self
            .tier_names
            .iter()
            .any(|n| n.is_empty() || n.len() > 256)
        {
            return Err(SonaError::Config(
                "tier_names must be non-empty strings of at most 256 bytes".into(),
            ));
        }
        if self.tier_costs.len() != t {
            return Err(SonaError::Config(format!(
                "tier_costs must have n_tiers = {t} entries, got {}",
                self.tier_costs.len()
            )));
        }
        for (k, &c) in self.tier_costs.iter().enumerate() {
            real_range(&format!("tier_costs[{k}]"), c, 0.0, 1e12)?;
        }
        real_range("cost_weight", self.cost_weight, 0.0, 1e3)?;
        int_range("hidden", self.hidden as u64, 1, 512)?;
        let width = self.dim + stat_width(t);
        int_range(
            "rank_w",
            self.rank_w as u64,
            1,
            64.min(self.hidden.min(width)) as u64,
        )?;
        int_range("rank_u", self.rank_u as u64, 1, 64.min(self.hidden) as u64)?;
        int_range("k_recall", self.k_recall as u64, 0, 32)?;
        real_range("epsilon", self.epsilon, 0.0, 1.0)?;
        real_range("gamma", self.gamma, 0.0, 1e6)?;
        int_range(
            "micro_rank",
            self.micro_rank as u64,
            1,
            2.min(self.dim) as u64,
        )?;
        real_range("micro_lr", self.micro_lr, 0.0, 10.0)?;
        real_range("micro_alpha", self.micro_alpha, 1e-6, 1e6)?;
        real_range("micro_max_norm", self.micro_max_norm, 1e-6, 1e6)?;
        int_range("head_micro_rank", self.head_micro_rank as u64, 1, 2)?;
        real_range("head_micro_lr", self.head_micro_lr, 0.0, 10.0)?;
        real_range("readout_lr", self.readout_lr, 0.0, 100.0)?;
        int_range(
            "base_rank",
            self.base_rank as u64,
            1,
            64.min(self.dim) as u64,
        )?;
        real_range("base_alpha", self.base_alpha, 1e-6, 1e6)?;
        real_range("loop_b_lr", self.loop_b_lr, 0.0, 1.0)?;
        int_range("loop_b_steps", self.loop_b_steps as u64, 0, 10_000)?;
        int_range("loop_b_batch", self.loop_b_batch as u64, 1, 4096)?;
        int_range("loop_b_every", self.loop_b_every, 0, 1 << 40)?;
        real_range("loop_b_interval_s", self.loop_b_interval_s, 0.0, 1e7)?;
        real_range("ewc_lambda", self.ewc_lambda, 0.0, 1e9)?;
        real_range("ewc_gamma", self.ewc_gamma, 0.0, 0.999_999)?;
        if self.iw_clip != 0.0 {
            real_range("iw_clip", self.iw_clip, 1.0, 1e6)?;
        }
        int_range(
            "pending_capacity",
            self.pending_capacity as u64,
            1,
            10_000_000,
        )?;
        real_range("pending_ttl_s", self.pending_ttl_s, 1e-3, 1e9)?;
        int_range(
            "replay_capacity",
            self.replay_capacity as u64,
            1,
            10_000_000,
        )?;
        int_range("replay_half_life", self.replay_half_life, 0, 1_000_000_000)?;
        int_range("metrics_window", self.metrics_window as u64, 1, 10_000_000)?;
        real_range("memory_budget_mb", self.memory_budget_mb, 1.0, 1e6)?;
        int_range("deep_steps", self.deep_steps as u64, 0, 1_000_000)?;
        int_range("deep_synthetic", self.deep_synthetic as u64, 0, 1_000_000)?;
        int_range(
            "deep_synthetic_batch",
            self.deep_synthetic_batch as u64,
            0,
            4096,
        )?;
        real_range("deep_distill_weight", self.deep_distill_weight, 0.0, 1e6)?;
        real_range("deep_tolerance", self.deep_tolerance, 0.0, 1e6)?;
        int_range("deep_budget_ms", self.deep_budget_ms, 1, 3_600_000)?;
        real_range("deep_spread", self.deep_spread, 0.0, 10.0)?;
        real_range(
            "deep_consolidate_threshold",
            self.deep_consolidate_threshold,
            -1.0,
            1.0,
        )?;
        real_range("deep_prune_idle_s", self.deep_prune_idle_s, 0.0, 1e10)?;
        int_range("deep_every_b", self.deep_every_b, 0, 1 << 40)?;
        if !["flat", "ivf", "hnsw"].contains(&self.bank_index.as_str()) {
            return Err(SonaError::Config(format!(
                "bank_index must be \"flat\", \"ivf\" or \"hnsw\", got {:?}",
                self.bank_index
            )));
        }
        real_range("bank_merge_threshold", self.bank_merge_threshold, -1.0, 1.0)?;
        int_range(
            "bank_max_clusters",
            self.bank_max_clusters as u64,
            1,
            100_000,
        )?;
        int_range(
            "bank_buffer_capacity",
            self.bank_buffer_capacity as u64,
            1,
            10_000_000,
        )?;
        if !["off", "group", "sync"].contains(&self.durability.as_str()) {
            return Err(SonaError::Config(format!(
                "durability must be \"off\", \"group\" or \"sync\", got {:?}",
                self.durability
            )));
        }
        for (what, p) in [
            ("log_path", &self.log_path),
            ("checkpoint_dir", &self.checkpoint_dir),
        ] {
            if p.as_deref()
                .is_some_and(|p| p.is_empty() || p.len() > 4096 || p.contains('\0'))
            {
                return Err(SonaError::Config(format!(
                    "{what} must be a non-empty path of at most 4096 bytes"
                )));
            }
        }
        int_range("group_commit_ms", self.group_commit_ms, 1, 60_000)?;
        int_range(
            "log_queue_capacity",
            self.log_queue_capacity as u64,
            1,
            10_000_000,
        )?;
        int_range("log_retention_rows", self.log_retention_rows, 0, 1 << 62)?;
        real_range("log_retention_s", self.log_retention_s, 0.0, 1e10)?;
        int_range(
            "checkpoint_every_cycles",
            self.checkpoint_every_cycles,
            1,
            1_000_000,
        )?;
        Ok(())
    }

    /// The tier-head micro rank actually used (reduced to fit `T` and `H`).
    pub fn head_rank(&self) -> usize {
        self.head_micro_rank.min(self.n_tiers).min(self.hidden)
    }

    /// Whether a background loop-B thread runs.
    pub fn background(&self) -> bool {
        self.learning_mode != LearningMode::InstantOnly
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_validate() {
        let mut c = EngineConfig::default();
        c.fill_defaults();
        c.validate().unwrap();
        assert_eq!(c.tier_costs, vec![1.0, 3.0, 10.0, 30.0]);
        let back = EngineConfig::from_json(&c.to_json()).unwrap();
        assert_eq!(back, c);
        let partial = EngineConfig::from_json(r#"{"dim": 768, "n_tiers": 2}"#).unwrap();
        assert_eq!(partial.tier_costs, vec![1.0, 3.0]);
        assert_eq!(partial.tier_names, vec!["tier0", "tier1"]);
        let listed = EngineConfig::from_json(r#"{"tier_names": ["small", "large"]}"#).unwrap();
        assert_eq!((listed.n_tiers, listed.tier_costs.len()), (2, 2));
        let costed = EngineConfig::from_json(r#"{"tier_costs": [1, 5, 9]}"#).unwrap();
        assert_eq!(costed.n_tiers, 3);
    }

    #[test]
    fn bad_configs_name_the_field() {
        for (json, field) in [
            (r#"{"n_tiers": 0}"#, "n_tiers"),
            (r#"{"n_tiers": 17}"#, "n_tiers"),
            (r#"{"dim": 0}"#, "dim"),
            (r#"{"epsilon": 1.5}"#, "epsilon"),
            (r#"{"tier_costs": [1, -1, 2, 3]}"#, "tier_costs[1]"),
            (r#"{"tier_costs": [1, 2], "n_tiers": 4}"#, "tier_costs"),
            (
                r#"{"tier_names": ["a", "b"], "tier_costs": [1, 2, 3]}"#,
                "tier_costs",
            ),
            (r#"{"bank_index": "lsh"}"#, "bank_index"),
            (r#"{"nope": 1}"#, "nope"),
            (r#"{"exploration": "ucb"}"#, "ucb"),
            (r#"{"learning_mode": "sometimes"}"#, "sometimes"),
            (r#"[1, 2]"#, "config"),
        ] {
            let e = EngineConfig::from_json(json).unwrap_err();
            assert!(matches!(e, SonaError::Config(_)), "{json}: {e}");
            assert!(e.to_string().contains(field), "{json}: {e}");
        }
    }
}
