//! What the bank's write lock guards: pattern nodes (a pattern plus the statistics that keep merges
//! exact), the hierarchy's levels, and the pattern state (nodes, index, graph, id counter).

use std::sync::atomic::{AtomicU64, Ordering};

use sona_core::types::{ArmStats, Pattern};
use sona_core::{kernels, Result, SonaError};
use sona_index::{FlatIndex, VectorIndex};

use crate::graph::MemoryGraph;

/// A pattern plus the bookkeeping that keeps merges exact and search lock-free for access stats.
#[derive(Debug)]
pub(crate) struct PatternNode {
    /// `last_access_ms` / `access_count` here are stale: the atomics below are authoritative.
    pub pattern: Pattern,
    /// Mean resultant length `‖Σx‖ / support` of the unit members: `support · resultant · centroid`
    /// is the exact sum of the members, so merges recompute the exact spherical mean.
    pub resultant: f32,
    /// Statistics of every reward attributed to the pattern (`avg_reward` is its mean).
    pub rewards: ArmStats,
    pub last_access: AtomicU64,
    pub accesses: AtomicU64,
}

impl Clone for PatternNode {
    fn clone(&self) -> Self {
        PatternNode {
            pattern: self.snapshot(),
            resultant: self.resultant,
            rewards: self.rewards,
            last_access: AtomicU64::new(self.last_access.load(Ordering::Relaxed)),
            accesses: AtomicU64::new(self.accesses.load(Ordering::Relaxed)),
        }
    }
}

impl PatternNode {
    pub fn new(pattern: Pattern, resultant: f32, rewards: ArmStats) -> Self {
        let last = pattern.last_access_ms;
        let count = pattern.access_count;
        PatternNode {
            pattern,
            resultant,
            rewards,
            last_access: AtomicU64::new(last),
            accesses: AtomicU64::new(count),
        }
    }

    /// The pattern with current access statistics.
    pub fn snapshot(&self) -> Pattern {
        let mut p = self.pattern.clone();
        p.last_access_ms = self.last_access.load(Ordering::Relaxed);
        p.access_count = self.accesses.load(Ordering::Relaxed);
        p
    }

    pub(crate) fn touch(&self, now: u64) {
        self.last_access.fetch_max(now, Ordering::Relaxed);
        self.accesses.fetch_add(1, Ordering::Relaxed);
    }

    /// One loop-A reward observed with `tier` (`< arms.len()`, checked by the caller).
    pub fn observe_reward(&mut self, tier: usize, reward: f32, now: u64) {
        self.pattern.arms[tier].push(reward as f64);
        self.rewards.push(reward as f64);
        self.pattern.avg_reward = self.rewards.mean as f32;
        self.pattern.updated_ms = now;
    }

    /// Time of the last update or access.
    pub fn last_activity(&self) -> u64 {
        self.pattern
            .updated_ms
            .max(self.last_access.load(Ordering::Relaxed))
    }

    /// Merges a disjoint set of members into this pattern: exact spherical mean, Chan-combined arm and
    /// reward statistics, summed support; the id is kept.
    pub fn absorb(
        &mut self,
        centroid: &[f32],
        resultant: f32,
        support: u32,
        arms: &[ArmStats],
        rewards: &ArmStats,
        exemplars: &[u64],
        max_exemplars: usize,
        now: u64,
    ) {
        let p = &mut self.pattern;
        let wa = p.support as f32 * self.resultant;
        let wb = support as f32 * resultant;
        let mut sum: Vec<f32> = p.centroid.iter().map(|x| x * wa).collect();
        kernels::axpy(wb, centroid, &mut sum);
        let total = p.support.saturating_add(support);
        let norm = kernels::normalize(&mut sum);
        if norm > 0.0 && norm.is_finite() {
            p.centroid = sum;
            self.resultant = (norm / total.max(1) as f32).clamp(0.0, 1.0);
        }
        p.support = total;
        for (a, b) in p.arms.iter_mut().zip(arms) {
            *a = a.merge(b);
        }
        self.rewards = self.rewards.merge(rewards);
        p.avg_reward = self.rewards.mean as f32;
        for &e in exemplars {
            if p.exemplars.len() >= max_exemplars {
                break;
            }
            if !p.exemplars.contains(&e) {
                p.exemplars.push(e);
            }
        }
        p.updated_ms = p.updated_ms.max(now);
    }

    /// Heap + inline bytes of this node (centroid, arms, exemplars, payload).
    pub fn bytes(&self) -> usize {
        let p = &self.pattern;
        std::mem::size_of::<PatternNode>()
            + p.centroid.capacity() * 4
            + p.arms.capacity() * std::mem::size_of::<ArmStats>()
            + p.exemplars.capacity() * 8
            + p.payload.as_ref().map_or(0, |v| v.capacity())
    }
}

/// One abstraction level of the hierarchy (rebuilt from scratch by `build_hierarchy`).
#[derive(Debug, Clone)]
pub struct Level {
    pub level: u8,
    pub patterns: Vec<Pattern>,
    /// Ids (one level down) of each pattern's members, aligned with `patterns`.
    pub children: Vec<Vec<u64>>,
    pub index: FlatIndex,
}

/// A map keyed by pattern id.
pub(crate) type IdMap<V> = rustc_hash::FxHashMap<u64, V>;

/// Patterns, their index and graph, and the hierarchy: everything under the bank's write lock.
pub(crate) struct PatternState {
    /// By id. Ids are issued by the bank (or validated on import), so a fast hasher: every
    /// `process` and `feedback` looks its recalled patterns up here.
    pub nodes: IdMap<PatternNode>,
    pub index: Box<dyn VectorIndex>,
    pub graph: MemoryGraph,
    pub levels: Vec<Level>,
    pub next_pattern_id: u64,
    pub extractions: u64,
}

/// Largest value an id counter may hold (2^63): ids below it are issued, loaders refuse counters
/// above it, and imports leave the counter at most here, so a bank that issued its last id still
/// saves a file that loads.
pub const ID_LIMIT: u64 = 1 << 63;

/// Hands out `*next` and advances it; at [`ID_LIMIT`] the id space is exhausted (a clear error,
/// nothing changed).
pub(crate) fn take_id(next: &mut u64, what: &str) -> Result<u64> {
    let id = *next;
    if id >= ID_LIMIT {
        return Err(SonaError::invalid(format!(
            "the {what} id space is exhausted"
        )));
    }
    *next = id + 1;
    Ok(id)
}

impl PatternState {
    /// A new pattern id; an exhausted id space is an error rather than a wrapped (reused) id.
    pub fn fresh_id(&mut self) -> Result<u64> {
        take_id(&mut self.next_pattern_id, "pattern")
    }

    /// Replaces `id`'s vector in the index (delete + insert: the trait has no update), all or
    /// nothing: when the insert fails the old vector is put back.
    pub fn reindex(&mut self, id: u64) -> Result<()> {
        let c = self.nodes[&id].pattern.centroid.clone();
        let old = match self.index.get(id) {
            Some(v) => Some(v.to_vec()),
            None if self.index.contains(id) => {
                return Err(SonaError::Internal(format!(
                    "pattern {id}: the index cannot return its stored vector"
                )))
            }
            None => None,
        };
        if old.is_some() {
            self.index.remove(id)?;
        }
        match self.index.add(id, &c) {
            Ok(()) => Ok(()),
            Err(e) => {
                if let Some(v) = old {
                    // Restores the state before the call; the vector was accepted once already.
                    self.index.add(id, &v)?;
                }
                Err(e)
            }
        }
    }

    pub fn node(&self, id: u64) -> Result<&PatternNode> {
        self.nodes.get(&id).ok_or(SonaError::UnknownId {
            kind: "pattern",
            id: id.into(),
        })
    }
}
