//! `memory_budget_mb`: how the budget is split across the engine's stores, and how each store is
//! kept inside its share.
//!
//! The weights, optimiser and EWC++ states are fixed by the configuration (their size does not
//! grow with traffic); they come off the top. The rest is split by fixed shares:
//!
//! | store | share | bounded by |
//! |---|---|---|
//! | trajectories awaiting feedback | 30 % | capacity (the oldest is evicted) |
//! | the bank's extraction ring | 25 % | capacity (the oldest is overwritten, counted as `dropped`) |
//! | loop-B replay reservoir | 15 % | capacity (Algorithm R keeps a uniform sample) |
//! | level-0 patterns and abstraction levels | 20 % | bytes: the least valuable patterns are evicted after each extraction |
//! | memory graph | 5 % | edge count: the weakest edges are evicted |
//! | the bank's reservoir and the recent-query window | 2.5 % each | capacity |
//!
//! A capacity is `min(configured capacity, share / bytes per item)`, with the per-item bytes the
//! same estimates `stats()` reports, so the engine's measured use stays under the budget by
//! construction. A budget too small to give every store a useful minimum (16 items, 16 patterns,
//! 16 edges) is a `ConfigError` that says how much the fixed part takes.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use sona_core::{Result, SonaError};

use crate::config::EngineConfig;
use crate::engine::Inner;

/// Share of the budget left after the fixed part, per store (they sum to 1).
pub const PENDING_SHARE: f64 = 0.30;
pub const RING_SHARE: f64 = 0.25;
pub const REPLAY_SHARE: f64 = 0.15;
pub const PATTERN_SHARE: f64 = 0.20;
pub const GRAPH_SHARE: f64 = 0.05;
pub const BANK_RESERVOIR_SHARE: f64 = 0.025;
pub const RECENT_SHARE: f64 = 0.025;

/// Bytes budgeted per graph edge: both directions' hash slots (`(u64, f32)` and a control byte at
/// a load factor of 7/8, up to twice that while a map grows) and a share of its nodes' maps.
pub const EDGE_BYTES: usize = 96;

/// The smallest useful size of every store.
const MIN_ITEMS: usize = 16;

/// Per-entry overhead of a pending entry beyond its vectors: its hash slot and its place in the
/// shard's age queue (which may hold stale entries up to twice the live count, see `pending`).
pub const PENDING_OVERHEAD: usize = 64 + 64;
/// Per-item overhead of a replay item beyond its vectors: the `Arc` header and fields, and its
/// slot in the reservoir's vector (up to twice while it grows).
pub const REPLAY_OVERHEAD: usize = 64 + 16;
/// Bytes outside every store: the pending map's shard queues, metrics windows, scratch buffers.
pub const FIXED_OVERHEAD: usize = 256 * 1024;
/// Most recent queries kept for the task-boundary detector.
pub const RECENT_MAX: usize = 1024;
/// The bank's replay reservoir (not the engine's loop-B reservoir) at most.
pub const BANK_RESERVOIR_MAX: usize = 1024;

/// Capacities and byte bounds derived from `memory_budget_mb`.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// The whole budget, bytes.
    pub total: usize,
    /// Weights, optimiser and EWC++ states and fixed overhead, bytes.
    pub fixed: usize,
    pub pending: usize,
    pub replay: usize,
    pub recent: usize,
    pub ring: usize,
    pub bank_reservoir: usize,
    /// Bytes the level-0 patterns and abstraction levels may hold.
    pub pattern_bytes: usize,
    pub max_edges: usize,
}

/// Bytes of one decision's stored vectors: the query and the `k × S` statistics blocks, and the
/// `k` recalled ids.
pub fn decision_bytes(cfg: &EngineConfig, s_width: usize) -> usize {
    (cfg.dim + cfg.k_recall * s_width) * 4 + cfg.k_recall * 8
}

/// Bytes a pending decision keeps beyond [`decision_bytes`]: the router's `k × r_w` input
/// projections that `feedback` reuses (`pending::Projected`).
pub fn projected_bytes(cfg: &EngineConfig) -> usize {
    cfg.k_recall * cfg.rank_w * 4 + 16
}

/// Bytes of one row of the bank's trajectory stores.
pub fn bank_row_bytes(dim: usize) -> usize {
    dim * 4 + std::mem::size_of::<sona_reasoning::trajectory::TrajectoryMeta>()
}

fn cap(share: f64, per_item: usize, configured: usize) -> usize {
    ((share / per_item.max(1) as f64) as usize).min(configured)
}

impl Budget {
    /// Splits `cfg.memory_budget_mb` given the fixed bytes (weights and learner states).
    pub fn plan(cfg: &EngineConfig, s_width: usize, weights_bytes: usize) -> Result<Budget> {
        let total = (cfg.memory_budget_mb * 1e6) as usize;
        let fixed = weights_bytes + FIXED_OVERHEAD;
        let rest = total.saturating_sub(fixed) as f64;
        let dec = decision_bytes(cfg, s_width);
        let row = bank_row_bytes(cfg.dim);
        // A level-0 pattern costs its centroid, index row, statistics and exemplars (~2 rows).
        let pattern = 2 * cfg.dim * 4 + 512;
        let b = Budget {
            total,
            fixed,
            pending: cap(
                rest * PENDING_SHARE,
                dec + projected_bytes(cfg) + PENDING_OVERHEAD,
                cfg.pending_capacity,
            ),
            replay: cap(
                rest * REPLAY_SHARE,
                dec + REPLAY_OVERHEAD,
                cfg.replay_capacity,
            ),
            recent: cap(rest * RECENT_SHARE, dec + REPLAY_OVERHEAD, RECENT_MAX),
            ring: cap(rest * RING_SHARE, row, cfg.bank_buffer_capacity),
            bank_reservoir: cap(rest * BANK_RESERVOIR_SHARE, row, BANK_RESERVOIR_MAX),
            pattern_bytes: (rest * PATTERN_SHARE) as usize,
            max_edges: cap(rest * GRAPH_SHARE, EDGE_BYTES, 1_000_000),
        };
        let small = [
            (
                "trajectories awaiting feedback",
                b.pending,
                cfg.pending_capacity,
            ),
            ("replay items", b.replay, cfg.replay_capacity),
            ("recent queries", b.recent, RECENT_MAX),
            ("extraction-buffer rows", b.ring, cfg.bank_buffer_capacity),
            ("bank reservoir rows", b.bank_reservoir, BANK_RESERVOIR_MAX),
            ("patterns", b.pattern_bytes / pattern, usize::MAX),
            ("graph edges", b.max_edges, 1_000_000),
        ];
        for (what, n, configured) in small {
            if n < MIN_ITEMS.min(configured) {
                return Err(SonaError::Config(format!(
                    "memory_budget_mb = {} leaves room for only {n} {what} (at least {MIN_ITEMS} \
                     needed); the weights and optimiser states alone take {:.2} MB",
                    cfg.memory_budget_mb,
                    fixed as f64 / 1e6
                )));
            }
        }
        Ok(b)
    }

    /// The budget's bounds as JSON (for `stats()`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "budget_bytes": self.total,
            "fixed_bytes": self.fixed,
            "pending_capacity": self.pending,
            "replay_capacity": self.replay,
            "recent_capacity": self.recent,
            "bank_buffer_capacity": self.ring,
            "bank_reservoir_capacity": self.bank_reservoir,
            "pattern_bytes": self.pattern_bytes,
            "max_graph_edges": self.max_edges,
        })
    }
}

/// What the engine holds, by store (bytes, as estimated from allocated capacities).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MemoryUse {
    pub weights: usize,
    pub learner: usize,
    pub pending: usize,
    pub replay: usize,
    pub recent: usize,
    pub trajectories: usize,
    pub patterns: usize,
    pub graph: usize,
}

impl MemoryUse {
    pub fn total(&self) -> usize {
        self.weights
            + self.learner
            + self.pending
            + self.replay
            + self.recent
            + self.trajectories
            + self.patterns
            + self.graph
    }
}

impl Inner {
    /// The engine's memory in use, by store.
    pub(crate) fn memory_use(&self) -> MemoryUse {
        let bank = self.bank.stats();
        let model = self.model.load();
        let replay = self.replay.lock().heap_bytes();
        // Items of the recent window still in the replay reservoir are counted there.
        let recent = self
            .recent
            .lock()
            .iter()
            .filter(|i| Arc::strong_count(i) == 1)
            .map(|i| (i.data.len() * 4 + i.ids.len() * 8) + REPLAY_OVERHEAD)
            .sum();
        MemoryUse {
            weights: model.bytes(),
            learner: self.learner.lock().bytes(),
            pending: self.pending.heap_bytes(),
            replay,
            recent,
            trajectories: bank.trajectory_bytes,
            patterns: bank.pattern_bytes + bank.level_bytes,
            graph: bank.graph_bytes,
        }
    }

    /// Memory in use against the budget, as JSON (`stats()["memory"]`, `improvement_metrics()`).
    pub(crate) fn memory_json(&self) -> serde_json::Value {
        let m = self.memory_use();
        let total = m.total();
        serde_json::json!({
            "bytes": total,
            "budget_bytes": self.budget.total,
            "used_fraction": total as f64 / self.budget.total.max(1) as f64,
            "over_budget": total > self.budget.total,
            "patterns_evicted": self.patterns_evicted.load(Relaxed),
            "by_store": {
                "weights": m.weights,
                "learner": m.learner,
                "pending": m.pending,
                "replay": m.replay,
                "recent": m.recent,
                "bank_trajectories": m.trajectories,
                "patterns": m.patterns,
                "graph": m.graph,
            },
            "bounds": self.budget.to_json(),
        })
    }

    /// Evicts the least valuable patterns when the patterns (and abstraction levels) exceed their
    /// share; the graph, rings and reservoirs bound themselves. Called after every extraction,
    /// deep cycle and import.
    pub(crate) fn enforce_budget(&self) -> Result<usize> {
        let levels = self.bank.stats().level_bytes;
        let gone = self
            .bank
            .evict_patterns(self.budget.pattern_bytes.saturating_sub(levels), None)?;
        self.patterns_evicted.fetch_add(gone.len() as u64, Relaxed);
        Ok(gone.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_sum_to_one_and_capacities_fit_their_share() {
        let s = PENDING_SHARE
            + RING_SHARE
            + REPLAY_SHARE
            + PATTERN_SHARE
            + GRAPH_SHARE
            + BANK_RESERVOIR_SHARE
            + RECENT_SHARE;
        assert!((s - 1.0).abs() < 1e-12);
        let cfg = EngineConfig {
            memory_budget_mb: 8.0,
            ..EngineConfig::new(256)
        };
        let sw = crate::config::stat_width(cfg.n_tiers);
        let b = Budget::plan(&cfg, sw, 1_000_000).unwrap();
        let rest = 8_000_000 - 1_000_000 - FIXED_OVERHEAD;
        let dec = decision_bytes(&cfg, sw);
        let used = b.pending * (dec + projected_bytes(&cfg) + PENDING_OVERHEAD)
            + b.replay * (dec + REPLAY_OVERHEAD)
            + b.recent * (dec + REPLAY_OVERHEAD)
            + (b.ring + b.bank_reservoir) * bank_row_bytes(256)
            + b.pattern_bytes
            + b.max_edges * EDGE_BYTES;
        assert!(used <= rest && used > rest * 99 / 100, "{used} vs {rest}");
        // 8 MB at d = 256 cannot hold the configured 100k pending trajectories.
        assert!(b.pending < cfg.pending_capacity && b.pending > 1000);
        // The default budget keeps the configured replay and ring capacities at d = 256; pending
        // decisions (1.57 KB each with the projections `feedback` reuses) bind just below 100k.
        let b = Budget::plan(&EngineConfig::new(256), sw, 1_000_000).unwrap();
        assert_eq!((b.replay, b.ring), (10_000, 100_000));
        assert!((95_000..100_000).contains(&b.pending), "{}", b.pending);
    }

    #[test]
    fn a_budget_below_the_fixed_part_is_a_config_error() {
        let cfg = EngineConfig {
            memory_budget_mb: 1.0,
            ..EngineConfig::new(4096)
        };
        let sw = crate::config::stat_width(cfg.n_tiers);
        let e = Budget::plan(&cfg, sw, 900_000).unwrap_err();
        assert!(matches!(e, SonaError::Config(_)), "{e}");
        assert!(e.to_string().contains("memory_budget_mb"), "{e}");
    }
}
