//! The ReasoningBank: trajectories in, curated patterns out (SPEC §5).
//!
//! Locking: trajectories live behind one mutex (`store`), patterns/index/graph behind one read-write
//! lock (`state`). Producers touch only `store`; searches take `state` for reading. Extraction takes
//! the new trajectories out of `store` (short), clusters them holding NO lock, and then merges the
//! clusters into `state` under a short write lock, so it can run on a background thread without
//! blocking the request path. Locks are always taken in the order `store` → `state`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use sona_core::types::{ArmStats, Pattern, RewardSource, Trajectory, Verdict};
use sona_core::{kernels, validate, Result, SeededRng, SonaError};

use crate::buffer::{PendingMap, Reservoir, RingBuffer, TrajectoryStore};
use crate::extract::{summarize, ClusterSummary};
use crate::graph::{GraphConfig, MemoryGraph};
use crate::index::{AnyIndex, FlatIndex, IndexKind, RetrainJob, VectorIndex};
use crate::kmeans::KMeansParams;
use crate::trajectory::{TrajectorySlab, NO_TIER};
use crate::verdict::verdict_for;

/// Every tunable of a bank; checked by [`BankConfig::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BankConfig {
    pub dim: usize,
    pub n_tiers: usize,
    pub seed: u64,
    /// New completed trajectories kept for the next extraction (the oldest are dropped beyond it).
    pub buffer_capacity: usize,
    /// Size of the uniform replay reservoir.
    pub reservoir_capacity: usize,
    /// Trajectories awaiting feedback (the oldest are evicted beyond it).
    pub pending_capacity: usize,
    /// Age after which a pending trajectory expires.
    pub pending_ttl_ms: u64,
    /// τ_merge: a new cluster merges into the nearest pattern when cosine ≥ this.
    pub merge_threshold: f32,
    /// Spread-aware merging: a cluster also merges into its nearest pattern P when its cosine to P
    /// is ≥ `ρ_P − merge_slack`, where `ρ_P` (P's mean resultant length) is the mean cosine of P's
    /// own members to its centroid: the cluster lies within P. `None` keeps the plain τ_merge rule.
    #[serde(default)]
    pub merge_slack: Option<f32>,
    /// Most clusters one extraction produces (k-means starts from `√(n/2)` of them).
    pub max_clusters: usize,
    /// Clusters whose members' mean cosine to their centroid is below this are bisected (so the
    /// result does not depend on k-means lumping distinct groups). `None` disables it.
    #[serde(default)]
    pub min_cohesion: Option<f32>,
    pub kmeans_max_iter: usize,
    /// Past this many new trajectories, extraction uses mini-batch k-means.
    pub minibatch_threshold: usize,
    pub max_exemplars: usize,
    /// The arm every other arm is tested against in verdicts.
    pub default_tier: usize,
    /// Family-wise significance level of verdicts.
    pub alpha: f64,
    pub graph: GraphConfig,
    /// The pattern index: exact (`Flat`, the default), or inverted lists (`Ivf`) or an HNSW graph
    /// (`Hnsw`) for large pattern sets.
    #[serde(default)]
    pub index: IndexKind,
}

impl BankConfig {
    /// Defaults for `dim`-dimensional embeddings and `n_tiers` tiers.
    pub fn new(dim: usize, n_tiers: usize) -> Self {
        BankConfig {
            dim,
            n_tiers,
            seed: 0,
            buffer_capacity: 100_000,
            reservoir_capacity: 10_000,
            pending_capacity: 100_000,
            pending_ttl_ms: 3_600_000,
            merge_threshold: 0.9,
            merge_slack: Some(0.1),
            max_clusters: 1024,
            min_cohesion: Some(0.75),
            kmeans_max_iter: 8,
            minibatch_threshold: 50_000,
            max_exemplars: 4,
            default_tier: 0,
            alpha: 0.05,
            graph: GraphConfig::default(),
            index: IndexKind::Flat,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("dim", self.dim),
            ("buffer_capacity", self.buffer_capacity),
            ("max_clusters", self.max_clusters),
            ("kmeans_max_iter", self.kmeans_max_iter),
            ("minibatch_threshold", self.minibatch_threshold),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(SonaError::Config(format!("{name} must be > 0")));
            }
        }
        if !(1..=64).contains(&self.n_tiers) {
            return Err(SonaError::Config(format!(
                "n_tiers must be in [1, 64], got {}",
                self.n_tiers
            )));
        }
        if self.default_tier >= self.n_tiers {
            return Err(SonaError::Config(format!(
                "default_tier {} must be < n_tiers {}",
                self.default_tier, self.n_tiers
            )));
        }
        validate::check_range("merge_threshold", self.merge_threshold as f64, -1.0, 1.0)?;
        if let Some(c) = self.min_cohesion {
            validate::check_range("min_cohesion", c as f64, 0.0, 1.0)?;
        }
        if let Some(s) = self.merge_slack {
            validate::check_range("merge_slack", s as f64, 0.0, 1.0)?;
        }
        validate::check_range("alpha", self.alpha, 0.0, 1.0)?;
        self.graph.validate()
    }
}

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

    fn touch(&self, now: u64) {
        self.last_access.fetch_max(now, Ordering::Relaxed);
        self.accesses.fetch_add(1, Ordering::Relaxed);
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

/// Patterns, their index and graph, and the hierarchy: everything under the bank's write lock.
pub(crate) struct PatternState {
    pub nodes: HashMap<u64, PatternNode>,
    pub index: Box<dyn VectorIndex>,
    pub graph: MemoryGraph,
    pub levels: Vec<Level>,
    pub next_pattern_id: u64,
    pub extractions: u64,
}

impl PatternState {
    pub fn fresh_id(&mut self) -> u64 {
        let id = self.next_pattern_id;
        self.next_pattern_id += 1;
        id
    }

    /// Replaces `id`'s vector in the index (delete + insert: the trait has no update).
    pub fn reindex(&mut self, id: u64) -> Result<()> {
        let c = self.nodes[&id].pattern.centroid.clone();
        if self.index.contains(id) {
            self.index.remove(id)?;
        }
        self.index.add(id, &c)
    }

    pub fn node(&self, id: u64) -> Result<&PatternNode> {
        self.nodes.get(&id).ok_or(SonaError::UnknownId {
            kind: "pattern",
            id,
        })
    }
}

/// What one extraction did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExtractReport {
    pub trajectories: usize,
    pub clusters: usize,
    pub merged: usize,
    pub created: usize,
    pub iterations: usize,
    pub patterns: usize,
    /// Time spent clustering without any lock.
    pub cluster_ms: f64,
    /// Time the pattern write lock was held.
    pub apply_ms: f64,
}

/// A search hit, optionally reached through the memory graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub id: u64,
    /// Cosine between the query and the pattern centroid.
    pub similarity: f32,
    /// Personalized-PageRank score (0 when not computed).
    pub ppr: f64,
    /// `true` when the pattern came from graph expansion rather than the vector index.
    pub expanded: bool,
}

/// Counters and sizes, for monitoring.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BankStats {
    pub patterns: usize,
    pub level_sizes: Vec<usize>,
    pub buffered: usize,
    pub buffer_capacity: usize,
    pub dropped: u64,
    pub reservoir: usize,
    pub reservoir_seen: u64,
    pub pending: usize,
    pub expired: u64,
    pub completed: u64,
    pub next_trajectory_id: u64,
    pub next_pattern_id: u64,
    pub extractions: u64,
    pub graph_nodes: usize,
    pub graph_edges: usize,
    /// Heap bytes of the ring buffer, reservoir and pending map (allocated capacity).
    pub trajectory_bytes: usize,
    /// Trajectories held in those three stores.
    pub stored_trajectories: usize,
    /// Bytes of level-0 patterns, including one index row and one hash-map slot per pattern.
    pub pattern_bytes: usize,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The bank. All methods take `&self`; share it across threads with an `Arc`.
pub struct ReasoningBank {
    pub(crate) cfg: BankConfig,
    pub(crate) store: Mutex<TrajectoryStore>,
    pub(crate) state: RwLock<PatternState>,
    /// Serialises extractions (each consumes the buffer it snapshotted).
    extract_lock: Mutex<()>,
}

impl std::fmt::Debug for ReasoningBank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReasoningBank")
            .field("dim", &self.cfg.dim)
            .field("patterns", &self.len())
            .finish()
    }
}

/// A method argument that must be finite and within `[lo, hi]` (an `InvalidInput`, not a `Config`
/// error: the bank's configuration is fine, the call is not).
pub(crate) fn check_arg(what: &str, x: f64, lo: f64, hi: f64) -> Result<()> {
    if x.is_finite() && x >= lo && x <= hi {
        Ok(())
    } else {
        Err(SonaError::invalid(format!(
            "{what} must be in [{lo}, {hi}], got {x}"
        )))
    }
}

/// Validates an embedding and returns its unit-norm copy.
pub(crate) fn unit(what: &str, v: &[f32], dim: usize) -> Result<Vec<f32>> {
    validate::check_vec(what, v, dim)?;
    let mut u = v.to_vec();
    let n = kernels::normalize(&mut u);
    if !(n > 0.0 && n.is_finite()) {
        return Err(SonaError::invalid(format!(
            "{what} must be a non-zero finite vector"
        )));
    }
    Ok(u)
}

impl ReasoningBank {
    /// A bank over the index its configuration names (exact [`FlatIndex`] by default).
    pub fn new(cfg: BankConfig) -> Result<Self> {
        cfg.validate()?;
        let index = Box::new(AnyIndex::new(cfg.dim, cfg.index)?);
        Self::with_index(cfg, index)
    }

    /// A bank over a caller-chosen (empty) index, e.g. an approximate one for large pattern sets.
    pub fn with_index(cfg: BankConfig, index: Box<dyn VectorIndex>) -> Result<Self> {
        cfg.validate()?;
        if index.dim() != cfg.dim || !index.is_empty() {
            return Err(SonaError::Config(format!(
                "the index must be empty and of dimension {} (got dim {}, {} vectors)",
                cfg.dim,
                index.dim(),
                index.len()
            )));
        }
        let store = TrajectoryStore {
            dim: cfg.dim,
            n_tiers: cfg.n_tiers,
            next_id: 1,
            ring: RingBuffer::new(cfg.dim, cfg.buffer_capacity),
            reservoir: Reservoir::new(cfg.dim, cfg.reservoir_capacity, cfg.seed ^ 0x5EED_5EED),
            pending: PendingMap::new(cfg.pending_capacity, cfg.pending_ttl_ms),
            completed: 0,
        };
        let state = PatternState {
            nodes: HashMap::new(),
            index,
            graph: MemoryGraph::new(cfg.graph),
            levels: Vec::new(),
            next_pattern_id: 1,
            extractions: 0,
        };
        Ok(Self::from_parts(cfg, store, state))
    }

    pub(crate) fn from_parts(cfg: BankConfig, store: TrajectoryStore, state: PatternState) -> Self {
        ReasoningBank {
            cfg,
            store: Mutex::new(store),
            state: RwLock::new(state),
            extract_lock: Mutex::new(()),
        }
    }

    pub fn config(&self) -> &BankConfig {
        &self.cfg
    }

    pub fn dim(&self) -> usize {
        self.cfg.dim
    }

    /// Number of level-0 patterns.
    pub fn len(&self) -> usize {
        self.state.read().nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check_tier(&self, tier: u8) -> Result<()> {
        if (tier as usize) < self.cfg.n_tiers {
            Ok(())
        } else {
            Err(SonaError::invalid(format!(
                "tier must be in [0, {}), got {tier}",
                self.cfg.n_tiers
            )))
        }
    }

    /// Records one trajectory and returns its id. With a reward it is complete (it enters the
    /// extraction buffer and the replay reservoir); without one it waits in the pending map for
    /// [`set_reward`](Self::set_reward). The embedding (the adapted query when there is one) is
    /// stored normalised.
    pub fn add_trajectory(
        &self,
        embedding: &[f32],
        reward: Option<f32>,
        tier: Option<u8>,
        source: RewardSource,
        ts_ms: Option<u64>,
    ) -> Result<u64> {
        let u = unit("embedding", embedding, self.cfg.dim)?;
        if let Some(r) = reward {
            validate::check_reward(r)?;
        }
        if let Some(t) = tier {
            self.check_tier(t)?;
        }
        let ts = ts_ms.unwrap_or_else(now_ms);
        Ok(self
            .store
            .lock()
            .add(&u, reward, tier.unwrap_or(NO_TIER), source, ts))
    }

    /// Records a full SPEC §2 trajectory: its adapted embedding (the query when `adapted` is empty),
    /// the decision's tier and the reward if present. The record's own `id` is ignored: the bank
    /// issues global ids.
    pub fn add_record(&self, t: &Trajectory) -> Result<u64> {
        let v = if t.adapted.is_empty() {
            &t.query
        } else {
            &t.adapted
        };
        self.add_trajectory(
            v,
            t.reward,
            t.decision.as_ref().map(|d| d.tier),
            t.reward_source.unwrap_or_default(),
            Some(t.ts_ms),
        )
    }

    /// Completes a pending trajectory with its reward (and tier, if it was not known at record time).
    pub fn set_reward(
        &self,
        id: u64,
        reward: f32,
        source: RewardSource,
        tier: Option<u8>,
    ) -> Result<()> {
        validate::check_reward(reward)?;
        if let Some(t) = tier {
            self.check_tier(t)?;
        }
        self.store.lock().set_reward(id, reward, source, tier)
    }

    /// Drops pending trajectories older than the TTL at `now_ms` (default: the clock); returns how many.
    pub fn expire_pending(&self, now: Option<u64>) -> usize {
        self.store.lock().pending.expire(now.unwrap_or_else(now_ms))
    }

    /// Pattern extraction (loop B): clusters the trajectories completed since the last extraction and
    /// merges the clusters into the patterns. Safe to call from a background thread while other
    /// threads search and record; concurrent extractions run one after the other.
    pub fn extract_patterns(&self) -> Result<ExtractReport> {
        let _one_at_a_time = self.extract_lock.lock();
        let batch = self.take_new();
        let (clusters, mut report) = self.cluster(&batch);
        drop(batch);
        self.apply(clusters, &mut report)?;
        Ok(report)
    }

    /// Extraction phase 1 (store lock only, O(1) unless the ring wrapped): the new trajectories.
    pub(crate) fn take_new(&self) -> TrajectorySlab {
        self.store.lock().ring.take()
    }

    /// Extraction phase 2, holding no lock: seeded clustering and summaries.
    pub(crate) fn cluster(&self, batch: &TrajectorySlab) -> (Vec<ClusterSummary>, ExtractReport) {
        let mut report = ExtractReport {
            trajectories: batch.len(),
            ..Default::default()
        };
        // Read the counter without holding the lock during clustering.
        let extraction = self.state.read().extractions + 1;
        let mut rng =
            SeededRng::new(self.cfg.seed ^ extraction.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let params = KMeansParams {
            max_iter: self.cfg.kmeans_max_iter,
            minibatch_threshold: self.cfg.minibatch_threshold,
            ..Default::default()
        };
        let t0 = Instant::now();
        let (clusters, iterations) = summarize(
            batch,
            self.cfg.n_tiers,
            self.cfg.max_clusters,
            self.cfg.max_exemplars,
            self.cfg.min_cohesion,
            &params,
            &mut rng,
        );
        report.cluster_ms = t0.elapsed().as_secs_f64() * 1e3;
        report.iterations = iterations;
        report.clusters = clusters.len();
        (clusters, report)
    }

    /// Extraction phase 3 (short write lock): merge or insert each cluster.
    pub(crate) fn apply(
        &self,
        clusters: Vec<ClusterSummary>,
        report: &mut ExtractReport,
    ) -> Result<()> {
        let t1 = Instant::now();
        // An index that re-partitions (IVF) does the clustering here, outside the write lock: only
        // the copy (read lock, searches continue) and the install (write lock) block anything.
        let plan = {
            let job = self.state.read().index.retrain_job(clusters.len());
            job.map(RetrainJob::run)
        };
        let mut st = self.state.write();
        if let Some(plan) = plan {
            st.index.apply_retrain(plan)?;
        }
        if report.trajectories > 0 {
            st.extractions += 1;
        }
        let (merged, created) = self.apply_clusters(&mut st, clusters)?;
        report.merged = merged;
        report.created = created;
        report.patterns = st.nodes.len();
        report.apply_ms = t1.elapsed().as_secs_f64() * 1e3;
        Ok(())
    }

    /// Merges each cluster (largest first) into its nearest pattern when cos ≥ τ_merge (or within the
    /// pattern's spread, see [`BankConfig::merge_slack`]), else inserts it
    /// as a new pattern. Clusters inserted earlier in the same call are merge targets too, so
    /// near-duplicate clusters of one batch collapse.
    fn apply_clusters(
        &self,
        st: &mut PatternState,
        clusters: Vec<ClusterSummary>,
    ) -> Result<(usize, usize)> {
        let now = now_ms();
        let (mut merged, mut created) = (0, 0);
        for c in clusters {
            let nearest = if st.index.is_empty() {
                None
            } else {
                st.index.search(&c.centroid, 1, None)?.into_iter().next()
            };
            // Without the spread-aware bound, a cluster of a pattern's own outlying members (a
            // singleton at cos 0.88 to a pattern whose members average 0.93), or one of two close
            // groups that an earlier extraction found lumped together, would become a new pattern
            // each time the same traffic is replayed.
            let threshold = |id: u64| -> f32 {
                let base = self.cfg.merge_threshold;
                match (self.cfg.merge_slack, st.nodes.get(&id)) {
                    (Some(slack), Some(n)) => base.min(n.resultant - slack),
                    _ => base,
                }
            };
            match nearest {
                Some((id, sim)) if st.nodes.contains_key(&id) && sim >= threshold(id) => {
                    let node = st.nodes.get_mut(&id).expect("checked above");
                    node.absorb(
                        &c.centroid,
                        c.resultant,
                        c.support,
                        &c.arms,
                        &c.rewards,
                        &c.exemplars,
                        self.cfg.max_exemplars,
                        now,
                    );
                    st.reindex(id)?;
                    merged += 1;
                }
                _ => {
                    let id = st.fresh_id();
                    let pattern = Pattern {
                        id,
                        level: 0,
                        centroid: c.centroid,
                        support: c.support,
                        arms: c.arms,
                        avg_reward: c.rewards.mean as f32,
                        created_ms: now,
                        updated_ms: now,
                        last_access_ms: 0,
                        access_count: 0,
                        exemplars: c.exemplars,
                        payload: None,
                    };
                    st.index.add(id, &pattern.centroid)?;
                    st.nodes
                        .insert(id, PatternNode::new(pattern, c.resultant, c.rewards));
                    created += 1;
                }
            }
        }
        Ok((merged, created))
    }

    fn check_k(&self, k: usize, size: usize) -> Result<()> {
        if k == 0 || k > size {
            return Err(SonaError::invalid(format!(
                "k must be in [1, {size}] (the number of patterns), got {k}"
            )));
        }
        Ok(())
    }

    /// The `k` level-0 patterns most similar to `query`, as `(id, cosine)`, best first. Counts as an
    /// access of each returned pattern (used by `prune`).
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<(u64, f32)>> {
        let q = unit("query", query, self.cfg.dim)?;
        let st = self.state.read();
        self.check_k(k, st.nodes.len())?;
        let hits = st.index.search(&q, k, None)?;
        let now = now_ms();
        for (id, _) in &hits {
            if let Some(n) = st.nodes.get(id) {
                n.touch(now);
            }
        }
        Ok(hits)
    }

    /// [`search`](Self::search) plus up to `expand` more patterns reached from the hits through the
    /// memory graph by personalized PageRank (restart 0.15, seeds weighted by similarity).
    pub fn search_expanded(&self, query: &[f32], k: usize, expand: usize) -> Result<Vec<Hit>> {
        let q = unit("query", query, self.cfg.dim)?;
        let hits = self.search(&q, k)?;
        let st = self.state.read();
        let seeds: Vec<(u64, f64)> = hits
            .iter()
            .map(|&(id, s)| (id, (s as f64).max(1e-6)))
            .collect();
        let ppr = if expand > 0 {
            st.graph.personalized_pagerank(&seeds, 0.15, 1e-4)
        } else {
            Vec::new()
        };
        let score: HashMap<u64, f64> = ppr.iter().copied().collect();
        let mut out: Vec<Hit> = hits
            .iter()
            .map(|&(id, s)| Hit {
                id,
                similarity: s,
                ppr: score.get(&id).copied().unwrap_or(0.0),
                expanded: false,
            })
            .collect();
        for (id, p) in ppr {
            if out.len() >= hits.len() + expand {
                break;
            }
            if hits.iter().any(|h| h.0 == id) {
                continue;
            }
            if let Some(n) = st.nodes.get(&id) {
                out.push(Hit {
                    id,
                    similarity: kernels::dot(&q, &n.pattern.centroid),
                    ppr: p,
                    expanded: true,
                });
            }
        }
        Ok(out)
    }

    /// One level-0 pattern.
    pub fn pattern(&self, id: u64) -> Result<Pattern> {
        Ok(self.state.read().node(id)?.snapshot())
    }

    /// All level-0 patterns, by id.
    pub fn patterns(&self) -> Vec<Pattern> {
        let st = self.state.read();
        let mut v: Vec<Pattern> = st.nodes.values().map(PatternNode::snapshot).collect();
        v.sort_by_key(|p| p.id);
        v
    }

    /// Patterns of hierarchy level `level` (0 = the concrete patterns).
    pub fn level_patterns(&self, level: usize) -> Result<Vec<Pattern>> {
        if level == 0 {
            return Ok(self.patterns());
        }
        let st = self.state.read();
        st.levels
            .get(level - 1)
            .map(|l| l.patterns.clone())
            .ok_or_else(|| {
                SonaError::invalid(format!(
                    "level {level} does not exist ({} levels built)",
                    st.levels.len()
                ))
            })
    }

    /// Children (one level down) of each pattern of `level` ≥ 1, aligned with `level_patterns(level)`.
    pub fn level_children(&self, level: usize) -> Result<Vec<Vec<u64>>> {
        let st = self.state.read();
        st.levels
            .get(level.wrapping_sub(1))
            .map(|l| l.children.clone())
            .ok_or_else(|| SonaError::invalid(format!("level {level} does not exist")))
    }

    /// Search within hierarchy level `level` ≥ 1.
    pub fn search_level(&self, query: &[f32], k: usize, level: usize) -> Result<Vec<(u64, f32)>> {
        if level == 0 {
            return self.search(query, k);
        }
        let q = unit("query", query, self.cfg.dim)?;
        let st = self.state.read();
        let l = st
            .levels
            .get(level - 1)
            .ok_or_else(|| SonaError::invalid(format!("level {level} does not exist")))?;
        self.check_k(k, l.patterns.len())?;
        l.index.search(&q, k, None)
    }

    /// Loop-A feedback for a pattern: `reward` observed when `tier` served a query matching it.
    pub fn record_feedback(&self, pattern_id: u64, tier: u8, reward: f32) -> Result<()> {
        validate::check_reward(reward)?;
        self.check_tier(tier)?;
        let mut st = self.state.write();
        let node = st.nodes.get_mut(&pattern_id).ok_or(SonaError::UnknownId {
            kind: "pattern",
            id: pattern_id,
        })?;
        node.pattern.arms[tier as usize].push(reward as f64);
        node.rewards.push(reward as f64);
        node.pattern.avg_reward = node.rewards.mean as f32;
        node.pattern.updated_ms = now_ms();
        Ok(())
    }

    /// Loop-A graph update: the patterns retrieved for one query and those actually used.
    pub fn record_usage(&self, retrieved: &[u64], used: &[u64]) -> Result<()> {
        let mut st = self.state.write();
        for &id in retrieved.iter().chain(used) {
            st.node(id)?;
        }
        st.graph.observe(retrieved, used);
        Ok(())
    }

    /// Loop-B global decay of the memory graph.
    pub fn decay_graph(&self) {
        self.state.write().graph.decay();
    }

    /// Graph edges `(a, b, w)` with `a < b`.
    pub fn graph_edges(&self) -> Vec<(u64, u64, f32)> {
        self.state.read().graph.edges()
    }

    /// Verdicts for every level-0 pattern where some arm significantly beats the default arm.
    pub fn verdicts(&self) -> Vec<Verdict> {
        let st = self.state.read();
        let mut v: Vec<Verdict> = st
            .nodes
            .values()
            .filter_map(|n| {
                verdict_for(
                    n.pattern.id,
                    n.pattern.support,
                    &n.pattern.arms,
                    self.cfg.default_tier,
                    self.cfg.alpha,
                )
            })
            .collect();
        v.sort_by_key(|x| x.pattern_id);
        v
    }

    /// The replay reservoir's contents (a uniform sample of every completed trajectory).
    pub fn reservoir(&self) -> TrajectorySlab {
        self.store.lock().reservoir.slab().clone()
    }

    /// Counters and memory use.
    pub fn stats(&self) -> BankStats {
        let store = self.store.lock();
        let st = self.state.read();
        // FlatIndex: the row, its id, and an (id, slot) hash entry with its control byte.
        let index_row = self.cfg.dim * 4 + 8 + 17;
        // The node itself is counted by `bytes()`; its hash slot adds the key and a control byte.
        let map_slot = 8 + 1;
        BankStats {
            patterns: st.nodes.len(),
            level_sizes: st.levels.iter().map(|l| l.patterns.len()).collect(),
            buffered: store.ring.len(),
            buffer_capacity: store.ring.capacity(),
            dropped: store.ring.dropped(),
            reservoir: store.reservoir.len(),
            reservoir_seen: store.reservoir.seen(),
            pending: store.pending.len(),
            expired: store.pending.expired(),
            completed: store.completed,
            next_trajectory_id: store.next_id,
            next_pattern_id: st.next_pattern_id,
            extractions: st.extractions,
            graph_nodes: st.graph.node_count(),
            graph_edges: st.graph.edge_count(),
            trajectory_bytes: store.ring.heap_bytes()
                + store.reservoir.heap_bytes()
                + store.pending.heap_bytes(self.cfg.dim),
            stored_trajectories: store.ring.len() + store.reservoir.len() + store.pending.len(),
            pattern_bytes: st
                .nodes
                .values()
                .map(|n| n.bytes() + index_row + map_slot)
                .sum(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kmeans::tests::blobs;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    pub(crate) fn small_bank(d: usize) -> ReasoningBank {
        let mut cfg = BankConfig::new(d, 4);
        cfg.seed = 7;
        ReasoningBank::new(cfg).unwrap()
    }

    /// Feeds `pts` as completed trajectories with tier = label % 4 and reward 1 for tier 2, else 0.2.
    pub(crate) fn feed(bank: &ReasoningBank, pts: &[f32], label: &[usize]) {
        let d = bank.dim();
        for (i, &l) in label.iter().enumerate() {
            // A hash of i, so tiers are independent of the round-robin cluster labels.
            let tier = ((i as u64).wrapping_mul(2_654_435_761) >> 7) as u8 % 4;
            let r = if tier == 2 {
                1.0
            } else {
                0.2 + 0.01 * (l % 3) as f32
            };
            bank.add_trajectory(
                &pts[i * d..(i + 1) * d],
                Some(r),
                Some(tier),
                RewardSource::Explicit,
                Some(1),
            )
            .unwrap();
        }
    }

    #[test]
    fn extraction_finds_clusters_and_replay_does_not_grow() {
        let d = 32;
        let (pts, label) = blobs(2000, 10, d, 0.4, 11);
        let bank = small_bank(d);
        feed(&bank, &pts, &label);
        let r1 = bank.extract_patterns().unwrap();
        assert_eq!(r1.trajectories, 2000);
        let n1 = bank.len();
        assert!(
            (10..=12).contains(&n1),
            "{n1} patterns for 10 clusters: {r1:?}"
        );
        let support: u32 = bank.patterns().iter().map(|p| p.support).sum();
        assert_eq!(support, 2000);
        for _ in 0..3 {
            feed(&bank, &pts, &label);
            let r = bank.extract_patterns().unwrap();
            assert_eq!(r.created, 0, "{r:?}");
            assert_eq!(bank.len(), n1);
        }
        let support: u32 = bank.patterns().iter().map(|p| p.support).sum();
        assert_eq!(support, 8000);
        // Search finds the pattern of each cluster's points.
        let hit = bank.search(&pts[..d], 1).unwrap()[0];
        assert!(hit.1 > 0.8);
        assert_eq!(bank.search(&pts[..d], n1).unwrap().len(), n1);
        // Tier 2 always earns 1.0: every pattern has a verdict for it.
        let v = bank.verdicts();
        assert_eq!(v.len(), n1);
        assert!(v
            .iter()
            .all(|v| v.recommended_tier == 2 && v.improvement > 0.7));
    }

    #[test]
    fn replay_does_not_grow_when_groups_outnumber_k() {
        // 100 groups (some only cos 0.4 apart), 1500 points: k-means starts from k = 27 and lumps
        // groups. Bisecting unions of groups recovers them and replays add nothing; without it,
        // lumps form differently on each run and every replay adds patterns.
        let d = 64;
        let (pts, label) = blobs(1500, 100, d, 0.45, 12);
        let mut grown = Vec::new();
        for min_cohesion in [Some(0.75), None] {
            let mut cfg = BankConfig::new(d, 4);
            cfg.min_cohesion = min_cohesion;
            let bank = ReasoningBank::new(cfg).unwrap();
            feed(&bank, &pts, &label);
            bank.extract_patterns().unwrap();
            let n1 = bank.len();
            let mut created = 0;
            for _ in 0..3 {
                feed(&bank, &pts, &label);
                created += bank.extract_patterns().unwrap().created;
            }
            grown.push((n1, created));
        }
        let ((n_bisect, c_bisect), (n_plain, c_plain)) = (grown[0], grown[1]);
        assert!((90..=110).contains(&n_bisect) && n_plain < 60, "{grown:?}");
        assert!(
            c_bisect * 10 <= n_bisect,
            "≤ 10 % growth over 3 replays: {grown:?}"
        );
        assert!(c_plain > 2 * c_bisect.max(1), "{grown:?}");
    }

    #[test]
    fn bank_over_ivf_trains_its_index_outside_the_write_lock_and_finds_every_group() {
        // 300 groups: the IVF index (trained from 64 patterns on) re-partitions during extraction
        // through retrain_job/apply_retrain; every group's pattern must stay findable.
        let d = 32;
        let (pts, label) = blobs(3000, 300, d, 0.2, 13);
        let mut cfg = BankConfig::new(d, 4);
        cfg.index = IndexKind::Ivf(crate::index::IvfParams {
            min_train: 64,
            ..Default::default()
        });
        cfg.max_clusters = 400;
        let bank = ReasoningBank::new(cfg).unwrap();
        let half = 1500;
        feed(&bank, &pts[..half * d], &label[..half]);
        bank.extract_patterns().unwrap();
        feed(&bank, &pts[half * d..], &label[half..]);
        bank.extract_patterns().unwrap();
        assert!(bank.len() >= 250, "{} patterns", bank.len());
        {
            let st = bank.state.read();
            assert_eq!(st.index.len(), bank.len());
            // Past min_train, an IVF index offers a job; flat and HNSW never do.
            assert!(st.index.retrain_job(usize::MAX).is_some());
        }
        let mut found = 0;
        for i in 0..300 {
            let hit = bank.search(&pts[i * d..(i + 1) * d], 1).unwrap()[0];
            found += usize::from(hit.1 > 0.9);
        }
        assert!(
            found >= 290,
            "{found} of 300 points have their pattern at cos > 0.9"
        );
    }

    #[test]
    fn merge_is_the_exact_spherical_mean() {
        let d = 8;
        let (pts, _) = blobs(40, 1, d, 0.5, 2);
        let bank = small_bank(d);
        let half = 20;
        for i in 0..half {
            bank.add_trajectory(
                &pts[i * d..(i + 1) * d],
                Some(0.5),
                Some(1),
                RewardSource::Explicit,
                None,
            )
            .unwrap();
        }
        bank.extract_patterns().unwrap();
        for i in half..40 {
            bank.add_trajectory(
                &pts[i * d..(i + 1) * d],
                Some(0.5),
                Some(1),
                RewardSource::Explicit,
                None,
            )
            .unwrap();
        }
        bank.extract_patterns().unwrap();
        // Collapse everything into one pattern regardless of how k-means split the batches.
        bank.consolidate(-1.0).unwrap();
        let p = &bank.patterns()[0];
        let mut mean = vec![0.0f32; d];
        for x in pts.chunks(d) {
            kernels::axpy(1.0, x, &mut mean);
        }
        kernels::normalize(&mut mean);
        assert!(kernels::cosine(&mean, &p.centroid) > 1.0 - 1e-5);
        assert_eq!(p.support, 40);
        assert_eq!(p.arms[1].count, 40);
    }

    #[test]
    fn add_record_uses_adapted_embedding_and_decision_tier() {
        use sona_core::types::Decision;
        let bank = small_bank(2);
        let t = Trajectory {
            id: 999,
            query: vec![0.0, 1.0],
            adapted: vec![3.0, 0.0],
            steps: Vec::new(),
            decision: Some(Decision {
                tier: 2,
                propensity: 0.5,
                utilities: vec![0.0; 4],
                params: Vec::new(),
            }),
            retrieved: Vec::new(),
            reward: Some(0.75),
            reward_source: Some(RewardSource::Judge),
            latency_us: 10,
            ts_ms: 42,
            tenant: None,
        };
        let id = bank.add_record(&t).unwrap();
        assert_eq!(id, 1, "the bank issues its own ids");
        let r = bank.reservoir();
        assert_eq!(r.row(0), &[1.0, 0.0], "adapted, normalised");
        let m = r.meta[0];
        assert_eq!(
            (m.tier, m.reward, m.source, m.ts_ms),
            (2, 0.75, RewardSource::Judge, 42)
        );
        let pending = bank
            .add_record(&Trajectory {
                adapted: Vec::new(),
                reward: None,
                ..t
            })
            .unwrap();
        assert_eq!(bank.stats().pending, 1);
        bank.set_reward(pending, 0.1, RewardSource::Implicit, None)
            .unwrap();
        assert_eq!(
            bank.reservoir().row(1),
            &[0.0, 1.0],
            "query when adapted is empty"
        );
    }

    #[test]
    fn bad_input_leaves_bank_unchanged() {
        let bank = small_bank(4);
        let ok = [1.0, 0.0, 0.0, 0.0];
        assert!(matches!(
            bank.add_trajectory(&[1.0; 3], None, None, RewardSource::Explicit, None),
            Err(SonaError::Dimension { .. })
        ));
        assert!(matches!(
            bank.add_trajectory(
                &[f32::NAN, 0.0, 0.0, 0.0],
                None,
                None,
                RewardSource::Explicit,
                None
            ),
            Err(SonaError::NonFinite { .. })
        ));
        assert!(bank
            .add_trajectory(&[0.0; 4], None, None, RewardSource::Explicit, None)
            .is_err());
        assert!(bank
            .add_trajectory(&ok, Some(1.5), None, RewardSource::Explicit, None)
            .is_err());
        assert!(bank
            .add_trajectory(&ok, Some(0.5), Some(4), RewardSource::Explicit, None)
            .is_err());
        assert_eq!(
            bank.stats().next_trajectory_id,
            1,
            "no id consumed by rejected calls"
        );
        assert!(matches!(
            bank.search(&ok, 1),
            Err(SonaError::InvalidInput(_))
        ));
        assert!(matches!(
            bank.set_reward(99, 0.5, RewardSource::Explicit, None),
            Err(SonaError::UnknownId { .. })
        ));
        assert!(matches!(
            bank.record_feedback(5, 0, 0.5),
            Err(SonaError::UnknownId { .. })
        ));
        assert!(bank.record_usage(&[1], &[]).is_err());
    }

    #[test]
    fn clustering_phase_holds_no_lock() {
        let d = 16;
        let (pts, label) = blobs(500, 5, d, 0.3, 8);
        let bank = small_bank(d);
        feed(&bank, &pts, &label);
        let batch = bank.take_new();
        assert_eq!(batch.len(), 500);
        // Between the phases both locks are free: producers and searches proceed.
        assert!(bank.store.try_lock().is_some() && bank.state.try_write().is_some());
        let (clusters, mut report) = bank.cluster(&batch);
        assert!(bank.store.try_lock().is_some() && bank.state.try_write().is_some());
        bank.apply(clusters, &mut report).unwrap();
        assert_eq!(report.patterns, bank.len());
        assert!(bank.len() >= 5);
    }

    #[test]
    fn search_runs_while_extraction_clusters() {
        let d = 64;
        let (pts, label) = blobs(6_000, 20, d, 0.5, 5);
        let bank = Arc::new(small_bank(d));
        feed(&bank, &pts[..2000 * d], &label[..2000]);
        bank.extract_patterns().unwrap();
        feed(&bank, &pts, &label);
        let done = Arc::new(AtomicBool::new(false));
        let (b2, done2) = (bank.clone(), done.clone());
        let worker = std::thread::spawn(move || {
            let r = b2.extract_patterns().unwrap();
            done2.store(true, Ordering::SeqCst);
            r
        });
        let mut during = 0;
        while !done.load(Ordering::SeqCst) {
            assert_eq!(bank.search(&pts[..d], 3).unwrap().len(), 3);
            if during < 1000 {
                bank.add_trajectory(&pts[..d], Some(0.5), None, RewardSource::Explicit, None)
                    .unwrap();
                during += 1;
            }
        }
        let r = worker.join().unwrap();
        // Every trajectory is either in this extraction or waits for the next one; none is lost.
        assert_eq!(r.trajectories + bank.stats().buffered, 6_000 + during);
    }
}
