//! The ReasoningBank: trajectories in, curated patterns out (design §5).
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

pub use crate::config::BankConfig;
pub use crate::node::Level;

use crate::buffer::{PendingMap, Reservoir, RingBuffer, TrajectoryStore};
use crate::extract::{summarize, ClusterSummary};
use crate::graph::MemoryGraph;
use crate::node::{PatternNode, PatternState};
use crate::trajectory::{TrajectorySlab, NO_TIER};
use crate::verdict::verdict_for;
use sona_index::kmeans::KMeansParams;
use sona_index::{AnyIndex, RetrainJob, VectorIndex};

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
    /// Bytes of the abstraction levels (their patterns and flat indexes).
    #[serde(default)]
    pub level_bytes: usize,
    /// Heap bytes of the memory graph (see [`MemoryGraph::heap_bytes`]).
    #[serde(default)]
    pub graph_bytes: usize,
}

/// Heap bytes of one pattern held outside a [`PatternNode`] (an abstraction level's copy).
fn pattern_heap_bytes(p: &Pattern) -> usize {
    std::mem::size_of::<Pattern>()
        + p.centroid.capacity() * 4
        + p.arms.capacity() * std::mem::size_of::<sona_core::types::ArmStats>()
        + p.exemplars.capacity() * 8
        + p.payload.as_ref().map_or(0, |v| v.capacity())
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
    /// See [`centroid_epoch`](Self::centroid_epoch).
    centroid_epoch: AtomicU64,
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
    normalize_nonzero(what, &mut u)?;
    Ok(u)
}

/// Normalises `u` in place; a zero (or unnormalisable) vector is `InvalidInput`.
fn normalize_nonzero(what: &str, u: &mut [f32]) -> Result<()> {
    // The norm of a finite vector is +Inf beyond `f32::MAX` (entries near 1e38), yet `normalize`
    // still makes it unit (it divides by max |x| first): only zero has no direction.
    let n = kernels::normalize(u);
    if n == 0.0 {
        return Err(SonaError::invalid(format!(
            "{what} must be a non-zero finite vector"
        )));
    }
    Ok(())
}

thread_local! {
    /// [`unit`]'s buffer for callers that only read the result (no allocation per call).
    static UNIT: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`unit`] into a per-thread buffer, handed to `f` (which must not call it again).
pub(crate) fn with_unit<T>(
    what: &str,
    v: &[f32],
    dim: usize,
    f: impl FnOnce(&[f32]) -> Result<T>,
) -> Result<T> {
    validate::check_vec(what, v, dim)?;
    UNIT.with(|cell| {
        let mut u = cell.borrow_mut();
        u.clear();
        u.extend_from_slice(v);
        normalize_nonzero(what, &mut u)?;
        f(&u)
    })
}

/// One change of an extraction's merge phase, kept so a failure can restore the state before it.
pub(crate) enum Undo {
    /// The node as it was before a cluster merged into it.
    Merged(PatternNode),
    /// A pattern created under this id.
    Created(u64),
}

/// Reverts `undo` (newest first). Every step restores a vector the index held (or removes one it
/// accepted) moments ago, so it only fails if the index itself is broken.
pub(crate) fn rollback(st: &mut PatternState, undo: Vec<Undo>) {
    for step in undo.into_iter().rev() {
        match step {
            Undo::Created(id) => {
                st.nodes.remove(&id);
                if st.index.contains(id) {
                    let _ = st.index.remove(id);
                }
            }
            Undo::Merged(old) => {
                let id = old.pattern.id;
                st.nodes.insert(id, old);
                let _ = st.reindex(id);
            }
        }
    }
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
            nodes: Default::default(),
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
            centroid_epoch: AtomicU64::new(0),
        }
    }

    /// A counter that moves whenever a level-0 centroid may change or a pattern enters or leaves
    /// the table (extraction, import, eviction, consolidation, pruning): it is bumped under the
    /// write lock *before* the change. So if a caller reads it before reading some centroids
    /// (e.g. [`visit_patterns`](Self::visit_patterns)) and reads the same value later, those
    /// patterns are all still present with the centroids it read: the engine's `feedback` uses
    /// this to reuse what `process` computed from them instead of reading them again. Arm
    /// statistics and graph edges do not move it.
    pub fn centroid_epoch(&self) -> u64 {
        self.centroid_epoch.load(Ordering::Acquire)
    }

    /// Called with the write lock held, before changing centroids or the set of patterns.
    pub(crate) fn centroids_changing(&self) {
        self.centroid_epoch.fetch_add(1, Ordering::AcqRel);
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
        with_unit("embedding", embedding, self.cfg.dim, |u| {
            if let Some(r) = reward {
                validate::check_reward(r)?;
            }
            if let Some(t) = tier {
                self.check_tier(t)?;
            }
            let ts = ts_ms.unwrap_or_else(now_ms);
            self.store
                .lock()
                .add(u, reward, tier.unwrap_or(NO_TIER), source, ts)
        })
    }

    /// Records a full design §2 trajectory: its adapted embedding (the query when `adapted` is empty),
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
        match self.apply(clusters, &mut report) {
            Ok(()) => {
                // The batch's memory becomes the ring's again: rows written by later completions
                // land on pages already touched, rather than on fresh pages faulted in one by
                // one on the request path (each feedback writes a row).
                self.store.lock().ring.recycle(batch);
                Ok(report)
            }
            Err(e) => {
                // `apply` left the patterns as they were: the batch goes back for the next try.
                self.store.lock().ring.put_back(batch);
                Err(e)
            }
        }
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
        let extraction = self.state.read().extractions.saturating_add(1);
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
        // Checked before the write lock, so a bad summary (it cannot be, but the index would refuse
        // it half-way) fails with nothing changed.
        for c in &clusters {
            unit("cluster centroid", &c.centroid, self.cfg.dim)?;
        }
        let mut st = self.state.write();
        self.centroids_changing();
        if let Some(plan) = plan {
            // Changes only the partition, never the ids or vectors; an error changes nothing.
            st.index.apply_retrain(plan)?;
        }
        let saved = (st.next_pattern_id, st.extractions);
        if report.trajectories > 0 {
            st.extractions = st.extractions.saturating_add(1);
        }
        let mut undo = Vec::new();
        let (merged, created) = match self.apply_clusters(&mut st, clusters, &mut undo) {
            Ok(counts) => counts,
            Err(e) => {
                rollback(&mut st, undo);
                (st.next_pattern_id, st.extractions) = saved;
                return Err(e);
            }
        };
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
        undo: &mut Vec<Undo>,
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
                    undo.push(Undo::Merged(node.clone()));
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
                    let id = st.fresh_id()?;
                    undo.push(Undo::Created(id));
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

    /// `k` must be ≥ 1; above the number of patterns the search returns them all (as every ANN
    /// library does), so the effective `k` is capped at `size`.
    fn check_k(&self, k: usize, size: usize) -> Result<usize> {
        if k == 0 {
            return Err(SonaError::invalid("k must be >= 1, got 0"));
        }
        Ok(k.min(size))
    }

    /// The `k` level-0 patterns most similar to `query`, as `(id, cosine)`, best first. Counts as an
    /// access of each returned pattern (used by `prune`).
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<(u64, f32)>> {
        let q = unit("query", query, self.cfg.dim)?;
        let st = self.state.read();
        let k = self.check_k(k, st.nodes.len())?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let hits = st.index.search(&q, k, None)?;
        let now = now_ms();
        for (id, _) in &hits {
            if let Some(n) = st.nodes.get(id) {
                n.touch(now);
            }
        }
        Ok(hits)
    }

    /// [`search`](Self::search) for every row of the row-major `queries` (`dim` wide) under one
    /// read lock, with the index's batched search: the same hits, row by row. A bad row is an error
    /// naming it, and nothing is searched or touched.
    pub fn search_batch(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<(u64, f32)>>> {
        let d = self.cfg.dim;
        // Normalised as `search` normalises one query (then the index normalises its own copy).
        let units = sona_index::unit_rows(queries, d)?;
        let st = self.state.read();
        let k = self.check_k(k, st.nodes.len())?;
        if k == 0 {
            return Ok(vec![Vec::new(); units.len() / d]);
        }
        let hits = st.index.search_batch(&units, k, None)?;
        let now = now_ms();
        for (id, _) in hits.iter().flatten() {
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
        let k = self.check_k(k, l.patterns.len())?;
        l.index.search(&q, k, None)
    }

    /// Loop-A feedback for a pattern: `reward` observed when `tier` served a query matching it.
    pub fn record_feedback(&self, pattern_id: u64, tier: u8, reward: f32) -> Result<()> {
        validate::check_reward(reward)?;
        self.check_tier(tier)?;
        let mut st = self.state.write();
        let node = st.nodes.get_mut(&pattern_id).ok_or(SonaError::UnknownId {
            kind: "pattern",
            id: pattern_id.into(),
        })?;
        node.observe_reward(tier as usize, reward, now_ms());
        Ok(())
    }

    /// Starts loading the centroids and arm statistics of the present patterns among `ids` into
    /// the cache (a hint: nothing changes). A batched recall calls it for the next rows' hits
    /// before it reads the current row's with [`visit_patterns`](Self::visit_patterns), so the
    /// cold loads of a large pattern set overlap with work instead of stalling it.
    pub fn prefetch_patterns(&self, ids: &[u64]) {
        let st = self.state.read();
        for id in ids {
            if let Some(node) = st.nodes.get(id) {
                sona_index::prefetch_lines(&node.pattern.centroid);
                sona_index::prefetch_lines(&node.pattern.arms);
            }
        }
    }

    /// Starts loading what [`record_outcome`](Self::record_outcome) will touch for `ids` (their
    /// arm statistics and memory-graph rows) into the cache; a hint, nothing changes. Loop A calls
    /// it before its router step so those cold loads overlap with the arithmetic.
    pub fn prefetch_outcome(&self, ids: &[u64]) {
        let st = self.state.read();
        for id in ids {
            if let Some(node) = st.nodes.get(id) {
                sona_index::prefetch_lines(&node.pattern.arms);
            }
        }
        st.graph.touch_rows(ids);
    }

    /// Visits the present patterns among `ids`, in the order given, with their arm statistics and
    /// centroid, under one read lock and without copying them (the request path's recall: a
    /// [`pattern`](Self::pattern) snapshot would clone the centroid, arms and exemplars). Unknown
    /// ids (merged or pruned since) are skipped. Returns how many were visited.
    pub fn visit_patterns(
        &self,
        ids: &[u64],
        mut f: impl FnMut(u64, &[ArmStats], &[f32]),
    ) -> usize {
        let st = self.state.read();
        let mut n = 0;
        for id in ids {
            if let Some(node) = st.nodes.get(id) {
                f(*id, &node.pattern.arms, &node.pattern.centroid);
                n += 1;
            }
        }
        n
    }

    /// Loop-A feedback of one decision under one write lock: `reward` observed with `tier` for each
    /// of the `retrieved` patterns ([`record_feedback`](Self::record_feedback) on each) and the graph
    /// update of [`record_usage`](Self::record_usage) over them, `used` the ones that helped. Ids
    /// no longer present (merged or pruned since the decision) are skipped, by both parts. Returns
    /// how many patterns were updated; a bad reward or tier changes nothing.
    pub fn record_outcome(
        &self,
        retrieved: &[u64],
        tier: u8,
        reward: f32,
        used: &[u64],
    ) -> Result<usize> {
        validate::check_reward(reward)?;
        self.check_tier(tier)?;
        let now = now_ms();
        let mut st = self.state.write();
        let mut present = Vec::with_capacity(retrieved.len());
        for &id in retrieved {
            let Some(node) = st.nodes.get_mut(&id) else {
                continue;
            };
            node.observe_reward(tier as usize, reward, now);
            present.push(id);
        }
        if !present.is_empty() {
            if used.iter().all(|u| present.contains(u)) {
                st.graph.observe(&present, used);
            } else {
                let used: Vec<u64> = used
                    .iter()
                    .copied()
                    .filter(|u| present.contains(u))
                    .collect();
                st.graph.observe(&present, &used);
            }
        }
        Ok(present.len())
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

    /// Links pattern pairs in the memory graph at the initial weight where no edge exists yet
    /// (loop C's "creative" edges); unknown ids are refused and nothing is added then. Returns
    /// how many edges were added.
    pub fn link(&self, pairs: &[(u64, u64)]) -> Result<usize> {
        let mut st = self.state.write();
        for &(a, b) in pairs {
            st.node(a)?;
            st.node(b)?;
        }
        Ok(st.graph.add_absent(pairs))
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

    /// Bytes of one vector in the index: the row, its id, and an (id, slot) hash entry with its
    /// control byte (the flat layout; IVF and HNSW add list or link overhead on top).
    pub(crate) fn index_row_bytes(&self) -> usize {
        self.cfg.dim * 4 + 8 + 17
    }

    /// Bytes one level-0 pattern costs: the node, its index row, and its hash slot (key and
    /// control byte).
    pub(crate) fn node_bytes(&self, n: &PatternNode) -> usize {
        n.bytes() + self.index_row_bytes() + 8 + 1
    }

    /// Counters and memory use.
    pub fn stats(&self) -> BankStats {
        let store = self.store.lock();
        let st = self.state.read();
        let index_row = self.index_row_bytes();
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
            pattern_bytes: st.nodes.values().map(|n| self.node_bytes(n)).sum(),
            level_bytes: st
                .levels
                .iter()
                .map(|l| {
                    l.patterns.iter().map(pattern_heap_bytes).sum::<usize>()
                        + l.children
                            .iter()
                            .map(|c| c.capacity() * 8 + 24)
                            .sum::<usize>()
                        + l.patterns.len() * index_row
                })
                .sum(),
            graph_bytes: st.graph.heap_bytes(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
