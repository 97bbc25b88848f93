//! [`Engine`]: `process` (adapt → recall → route → record) and `feedback` (loop A), with loop B on
//! demand and on a background thread the engine owns.
//!
//! Concurrency:
//! - Readers (`process`) load one published [`Model`] snapshot (`ArcSwap`) and never take a lock a
//!   learner holds for long: the bank's read lock for the search, one pending-map shard for the insert.
//! - Loop-A steps (`feedback`) are serialised by the writer lock: each recomputes the decision on the
//!   current snapshot, steps the two micro adapters and publishes a new snapshot that shares the
//!   untouched weights (`Arc`s).
//! - Loop B (`background_learn`) computes on a copy of the router and base weights, outside every
//!   lock but its own, then publishes under the writer lock: it takes the micro adapters as they are
//!   at that moment (so micro steps made meanwhile are kept), merges them into the base (so they are
//!   counted exactly once: a merged micro restarts from zero) and swaps everything in one snapshot.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};
use sona_core::types::RewardSource;
use sona_core::{validate, Result, SeededRng, SonaError};
use sona_lora::optim::Optimizer;
use sona_lora::{LoraWeights, OptimConfig};
use sona_reasoning::index::{HnswParams, IndexKind, IvfParams};
use sona_reasoning::{BankConfig, ReasoningBank};

use crate::config::{stat_width, EngineConfig};
use crate::latency::OpLatency;
use crate::loop_b::{Learner, LearningResult};
use crate::metrics::Metrics;
use crate::model::Model;
use crate::pending::{Missing, Pending, PendingEntry, Projected, MISSING};
use crate::policy;
use crate::replay::{Replay, ReplayItem};
use crate::router::backward::{backward, Scratch as BwScratch};
use crate::router::{features, forward, forward_projected, Cache, Layout};

/// Where a reward came from (design §1): the three outside sources plus `Error`, a failed backend call
/// reported by the caller as reward 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedbackSource {
    Explicit,
    Implicit,
    Judge,
    Error,
}

impl FeedbackSource {
    /// `"explicit"`, `"implicit"`, `"judge"` or `"error"`; anything else is `InvalidInput`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "explicit" => Ok(Self::Explicit),
            "implicit" => Ok(Self::Implicit),
            "judge" => Ok(Self::Judge),
            "error" => Ok(Self::Error),
            _ => Err(SonaError::invalid(format!(
                "source must be 'explicit', 'implicit', 'judge' or 'error', got {s:?}"
            ))),
        }
    }

    /// The bank's record of the source (a failed call is an implicit signal there).
    pub fn reward_source(self) -> RewardSource {
        match self {
            Self::Explicit => RewardSource::Explicit,
            Self::Implicit | Self::Error => RewardSource::Implicit,
            Self::Judge => RewardSource::Judge,
        }
    }
}

/// What `process` returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub trajectory_id: u64,
    pub tier: usize,
    /// Probability the policy gave `tier`.
    pub propensity: f32,
    /// `r̂_k − cost_weight · cost_k` for every tier.
    pub utilities: Vec<f32>,
    /// `r̂_k`, the router's predicted reward of every tier.
    pub predicted: Vec<f32>,
    /// Recalled pattern ids, most similar first.
    pub patterns: Vec<u64>,
    /// Whether the tier is not the greedy choice.
    pub explored: bool,
    /// Generation of the weights that decided.
    pub generation: u64,
}

/// Loop-A optimiser state, behind the writer lock.
pub(crate) struct Writer {
    pub micro_opt: Optimizer,
    pub head_opt: Optimizer,
    pub rng: SeededRng,
    pub rejected: u64,
    pub loss_ema: f64,
    /// Weight buffers of the snapshot the last loop-A step replaced, when nothing else held it:
    /// the next step writes its micro adapters and read-out into them instead of allocating
    /// (and later freeing) ~30 KB at d = 768.
    pub spare: Spare,
}

/// See [`Writer::spare`].
#[derive(Default)]
pub(crate) struct Spare {
    pub micro: Option<LoraWeights>,
    pub head: Option<LoraWeights>,
    pub readout: Option<Vec<f32>>,
}

impl Spare {
    /// Keeps the buffers of `old` that no other snapshot or reader shares.
    fn recycle(&mut self, old: Arc<Model>) {
        let Ok(old) = Arc::try_unwrap(old) else {
            return;
        };
        self.micro = Arc::try_unwrap(old.micro).ok();
        self.head = Arc::try_unwrap(old.head).ok();
        self.readout = Arc::try_unwrap(old.readout).ok();
    }

    /// A buffer shaped like `w` for an optimiser step to overwrite (its contents are stale: the
    /// step writes every entry, see `Optimizer::step`), or a copy of `w` when none is spare.
    fn lora_like(spare: &mut Option<LoraWeights>, w: &LoraWeights) -> LoraWeights {
        match spare.take() {
            Some(s) if s.a.len() == w.a.len() && s.bt.len() == w.bt.len() => s,
            _ => w.clone(),
        }
    }
}

/// Scratch buffers of one thread.
#[derive(Default)]
pub(crate) struct Scratch {
    pub adapted: Vec<f32>,
    pub unit: Vec<f32>,
    pub seq: Vec<f32>,
    pub cache: Cache<f32>,
    pub bw: BwScratch<f32>,
    pub dx0: Vec<f32>,
    pub e: Vec<f32>,
    pub dl: Vec<f32>,
    /// Recalled patterns present in the bank (ids, `d`-wide centroids, `S`-wide statistics blocks).
    pub found: Vec<u64>,
    pub cents: Vec<f32>,
    pub feats: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

pub(crate) fn with_scratch<T>(f: impl FnOnce(&mut Scratch) -> T) -> T {
    SCRATCH.with(|s| f(&mut s.borrow_mut()))
}

/// Everything the engine shares with its background thread.
pub(crate) struct Inner {
    pub cfg: EngineConfig,
    pub layout: Layout,
    pub s_width: usize,
    pub model: ArcSwap<Model>,
    pub writer: Mutex<Writer>,
    pub bank: ReasoningBank,
    pub pending: Pending,
    pub replay: Mutex<Replay>,
    pub recent: Mutex<VecDeque<Arc<ReplayItem>>>,
    pub metrics: Mutex<Metrics>,
    pub learner: Mutex<Learner>,
    pub next_id: AtomicU64,
    pub processed: AtomicU64,
    pub feedbacks: AtomicU64,
    pub since_b: AtomicU64,
    pub loop_b_runs: AtomicU64,
    pub loop_b_errors: AtomicU64,
    pub last_b: Mutex<Instant>,
    pub last_result: Mutex<Option<LearningResult>>,
    pub closed: AtomicBool,
    pub wake: (Mutex<bool>, Condvar),
    pub durable: crate::durable::Durable,
    /// Deep (loop-C) cycles run, and Φ of the memory graph after the last one.
    pub deep_runs: AtomicU64,
    pub last_phi: Mutex<Option<f64>>,
    /// Capacities and bounds derived from `memory_budget_mb` (see [`crate::budget`]).
    pub budget: crate::budget::Budget,
    pub patterns_evicted: AtomicU64,
    /// Latency per public operation.
    pub latency: OpLatency,
    /// Per-tenant micro-LoRAs ([`crate::tenants`]).
    pub tenants: crate::tenants::Tenants,
    /// Whether `feedback` reuses `process`'s projections when valid (off only in tests that
    /// compare both paths).
    pub reuse_projections: bool,
    /// Feedbacks that reused `process`'s projections (the rest recomputed them).
    pub projections_reused: AtomicU64,
}

/// The gradient `g` w.r.t. a unit vector `û = a/‖a‖`, taken back through the normalisation:
/// `∂L/∂a = (g − û (û·g)) / ‖a‖`, written to `out`.
pub(crate) fn through_normalize(unit: &[f32], g: &[f32], norm: f32, out: &mut Vec<f32>) {
    let proj = sona_core::kernels::dot(unit, g);
    out.clear();
    out.extend(g.iter().zip(unit).map(|(g, u)| (g - u * proj) / norm));
}

/// The first phase of a batched `process` for some rows: their unit adapted queries (row-major)
/// and each row's recalled `(pattern id, cosine)`, best first.
/// A batch's unit rows, each row's recalled hits, and the bank's `centroid_epoch` read before the
/// search.
pub(crate) type Recalled = (Vec<f32>, Vec<Vec<(u64, f32)>>, u64);

/// How many rows ahead a batched `process` prefetches the recalled patterns (a row's decision
/// takes a few µs, about the time the loads need).
const PREFETCH_ROWS: usize = 2;

/// `f` over rows `0..n`, split in two halves on two threads from 64 rows up (their outputs
/// concatenated in row order).
fn in_halves<T: Send>(
    n: usize,
    f: impl Fn(std::ops::Range<usize>) -> Result<Vec<T>> + Sync,
) -> Result<Vec<T>> {
    if n < 64 {
        return f(0..n);
    }
    let mid = n / 2;
    let (a, b) = std::thread::scope(|s| {
        let h = s.spawn(|| f(mid..n));
        (f(0..mid), h.join())
    });
    let mut a = a?;
    a.extend(b.map_err(|_| worker_panicked())??);
    Ok(a)
}

fn worker_panicked() -> SonaError {
    SonaError::Internal("process_batch worker panicked".into())
}

/// The SONA engine. Every method takes `&self`; share it across threads.
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

pub(crate) fn now_ms() -> u64 {
    sona_reasoning::bank::now_ms()
}

pub(crate) fn bank_config(cfg: &EngineConfig, budget: &crate::budget::Budget) -> BankConfig {
    let mut b = BankConfig::new(cfg.dim, cfg.n_tiers);
    b.seed = cfg.seed;
    b.reservoir_capacity = budget.bank_reservoir;
    b.pending_capacity = 1;
    b.merge_threshold = cfg.bank_merge_threshold as f32;
    b.max_clusters = cfg.bank_max_clusters;
    b.buffer_capacity = budget.ring;
    b.graph.max_edges = budget.max_edges;
    b.index = match cfg.bank_index.as_str() {
        "ivf" => IndexKind::Ivf(IvfParams {
            seed: cfg.seed,
            ..IvfParams::default()
        }),
        "hnsw" => IndexKind::Hnsw(HnswParams {
            seed: cfg.seed,
            ..HnswParams::default()
        }),
        _ => IndexKind::Flat,
    };
    b
}

pub(crate) fn micro_optim(cfg: &EngineConfig) -> OptimConfig {
    OptimConfig {
        lr: cfg.micro_lr as f32,
        momentum: 0.5,
        clip: 10.0,
        max_norm: cfg.micro_max_norm as f32,
        decay: 1e-5,
    }
}

pub(crate) fn head_optim(cfg: &EngineConfig) -> OptimConfig {
    OptimConfig {
        lr: cfg.head_micro_lr as f32,
        momentum: 0.5,
        clip: 10.0,
        max_norm: 8.0,
        decay: 1e-5,
    }
}

/// A fresh micro adapter: `A ~ N(0, 1/d_in)`, `B = 0`.
pub(crate) fn fresh_lora(
    d_in: usize,
    d_out: usize,
    rank: usize,
    alpha: f32,
    rng: &mut SeededRng,
) -> Result<LoraWeights> {
    LoraWeights::init(d_in, d_out, rank, alpha, rng)
}

impl Inner {
    pub(crate) fn new(cfg: EngineConfig) -> Result<Self> {
        let mut cfg = cfg;
        cfg.fill_defaults();
        cfg.validate()?;
        let s_width = stat_width(cfg.n_tiers);
        let layout = Layout::new(
            cfg.dim,
            s_width,
            cfg.hidden,
            cfg.rank_w,
            cfg.rank_u,
            cfg.n_tiers,
        )?;
        let mut rng = SeededRng::new(cfg.seed ^ 0x454e_4749_4e45);
        let d = cfg.dim;
        let base = fresh_lora(d, d, cfg.base_rank, cfg.base_alpha as f32, &mut rng)?;
        let micro = fresh_lora(d, d, cfg.micro_rank, cfg.micro_alpha as f32, &mut rng)?;
        let hr = cfg.head_rank();
        let head = fresh_lora(cfg.hidden, cfg.n_tiers, hr, hr as f32, &mut rng)?;
        let model = Model {
            generation: 0,
            router: Arc::new(layout.init(cfg.seed)),
            base: Arc::new(base),
            micro: Arc::new(micro),
            head: Arc::new(head),
            readout: Arc::new(vec![0.0; crate::router::readout_len(d, cfg.n_tiers)]),
        };
        let writer = Writer {
            micro_opt: Optimizer::new(micro_optim(&cfg), d, d, cfg.micro_rank)?,
            head_opt: Optimizer::new(head_optim(&cfg), cfg.hidden, cfg.n_tiers, hr)?,
            rng: rng.fork(1),
            rejected: 0,
            loss_ema: f64::NAN,
            spare: Spare::default(),
        };
        let learner = Learner::new(&cfg, &layout)?;
        let budget = crate::budget::Budget::plan(&cfg, s_width, model.bytes() + learner.bytes())?;
        let bank = ReasoningBank::new(bank_config(&cfg, &budget))?;
        Ok(Inner {
            pending: Pending::new(
                budget.pending,
                (cfg.pending_ttl_s * 1000.0).round().max(1.0) as u64,
            ),
            replay: Mutex::new(Replay::new(budget.replay, cfg.seed)),
            recent: Mutex::new(VecDeque::new()),
            metrics: Mutex::new(Metrics::new(cfg.metrics_window, cfg.n_tiers)),
            learner: Mutex::new(learner),
            model: ArcSwap::from_pointee(model),
            writer: Mutex::new(writer),
            bank,
            layout,
            s_width,
            next_id: AtomicU64::new(1),
            processed: AtomicU64::new(0),
            feedbacks: AtomicU64::new(0),
            since_b: AtomicU64::new(0),
            loop_b_runs: AtomicU64::new(0),
            loop_b_errors: AtomicU64::new(0),
            last_b: Mutex::new(Instant::now()),
            last_result: Mutex::new(None),
            closed: AtomicBool::new(false),
            wake: (Mutex::new(false), Condvar::new()),
            durable: crate::durable::Durable::open(&cfg)?,
            deep_runs: AtomicU64::new(0),
            last_phi: Mutex::new(None),
            budget,
            patterns_evicted: AtomicU64::new(0),
            latency: OpLatency::default(),
            tenants: Default::default(),
            reuse_projections: true,
            projections_reused: AtomicU64::new(0),
            cfg,
        })
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Relaxed) {
            Err(SonaError::invalid("the engine is closed"))
        } else {
            Ok(())
        }
    }

    /// `unit = adapted / ‖adapted‖`; fails on a zero or non-finite adapted query.
    pub(crate) fn normalize(adapted: &[f32], unit: &mut Vec<f32>) -> Result<f32> {
        let n = sona_core::kernels::norm_sq(adapted).sqrt();
        if !(n.is_finite() && n > 0.0) {
            return Err(SonaError::invalid(
                "the query must be a non-zero vector (its adapted norm is 0 or not finite)",
            ));
        }
        unit.clear();
        unit.extend(adapted.iter().map(|v| v / n));
        Ok(n)
    }

    /// The recall step shared by `process` and the dream's pseudo-queries: up to `k_recall`
    /// patterns nearest the unit query `unit`, laid out as a decision's slots. Returns `ids`
    /// (missing first, then the hits from least to most similar) and `[x, slot statistics…]`; the
    /// present hits' ids and centroids (best first) are left in `found` / `cents`.
    pub(crate) fn recall_slots(
        &self,
        x: &[f32],
        unit: &[f32],
        found: &mut Vec<u64>,
        cents: &mut Vec<f32>,
        feats: &mut Vec<f32>,
    ) -> Result<(Vec<u64>, Vec<f32>)> {
        let k = self.cfg.k_recall.min(self.bank.len());
        let hits = if k > 0 {
            self.bank.search(unit, k)?
        } else {
            Vec::new()
        };
        Ok(self.slots_of(x, &hits, found, cents, feats))
    }

    /// The slots of [`Inner::recall_slots`] from the bank's `hits` for the query (`(id, cosine)`,
    /// best first): what is left of the recall once the search is done (one by one or batched).
    pub(crate) fn slots_of(
        &self,
        x: &[f32],
        hits: &[(u64, f32)],
        found: &mut Vec<u64>,
        cents: &mut Vec<f32>,
        feats: &mut Vec<f32>,
    ) -> (Vec<u64>, Vec<f32>) {
        let (d, s, kr) = (self.cfg.dim, self.s_width, self.cfg.k_recall);
        let hit_ids: Vec<u64> = hits.iter().map(|h| h.0).collect();
        found.clear();
        cents.clear();
        feats.clear();
        // Read in place under the bank's read lock.
        self.bank.visit_patterns(&hit_ids, |id, arms, c| {
            let cos = hits.iter().find(|h| h.0 == id).map_or(0.0, |h| h.1);
            found.push(id);
            cents.extend_from_slice(c);
            let at = feats.len();
            feats.resize(at + s, 0.0);
            features::pattern(arms, cos, &mut feats[at..]);
        });
        let present = found.len();
        let mut ids = vec![MISSING; kr];
        let mut data = vec![0.0f32; d + kr * s];
        data[..d].copy_from_slice(x);
        for (j, &id) in found.iter().enumerate() {
            let slot = kr - 1 - j;
            ids[slot] = id;
            data[d + slot * s..d + (slot + 1) * s].copy_from_slice(&feats[j * s..(j + 1) * s]);
        }
        for slot in 0..kr - present {
            features::missing(&mut data[d + slot * s..d + (slot + 1) * s]);
        }
        (ids, data)
    }

    /// Writes the router's input sequence: the unit query, then one row per recall slot
    /// (`ids[j]`, statistics `stats[j]`), using `centroid(id)` for present patterns.
    pub(crate) fn build_seq<'a>(
        &self,
        unit: &[f32],
        ids: &[u64],
        stats: &[f32],
        centroid: &dyn Fn(u64) -> Option<&'a [f32]>,
        seq: &mut Vec<f32>,
    ) {
        let (d, s, width) = (self.cfg.dim, self.s_width, self.layout.input);
        seq.clear();
        seq.resize((1 + ids.len()) * width, 0.0);
        seq[..d].copy_from_slice(unit);
        for (j, &id) in ids.iter().enumerate() {
            let row = &mut seq[(j + 1) * width..(j + 2) * width];
            let c = if id == MISSING { None } else { centroid(id) };
            match c {
                Some(c) => {
                    row[..d].copy_from_slice(c);
                    row[d..].copy_from_slice(&stats[j * s..(j + 1) * s]);
                }
                None => features::missing(&mut row[d..]),
            }
        }
    }

    /// Loop-A-free part of a decision: adapt, recall, route, record.
    pub(crate) fn process(&self, x: &[f32]) -> Result<Decision> {
        self.process_with(x, None)
    }

    /// `process` on `view` (a tenant's micro adapters over the shared weights) instead of the
    /// published model; such a decision is not written to the interaction log ([`crate::tenants`]).
    pub(crate) fn process_with(&self, x: &[f32], view: Option<&Model>) -> Result<Decision> {
        self.check_open()?;
        validate::check_vec("x", x, self.cfg.dim)?;
        let _gate = self.durable.gate.read();
        let published = self.model.load();
        let model: &Model = view.unwrap_or(&published);
        let d = self.cfg.dim;
        with_scratch(|sc| {
            sc.adapted.resize(d, 0.0);
            model.adapt(x, &mut sc.adapted);
            Self::normalize(&sc.adapted, &mut sc.unit)?;
            // Read before the recall: see `ReasoningBank::centroid_epoch`.
            let epoch = self.bank.centroid_epoch();
            let k = self.cfg.k_recall.min(self.bank.len());
            let hits = if k > 0 {
                self.bank.search(&sc.unit, k)?
            } else {
                Vec::new()
            };
            let unit = std::mem::take(&mut sc.unit);
            let out = self.decide(x, &unit, &hits, None, epoch, model, view, sc);
            sc.unit = unit;
            out
        })
    }

    /// The rest of `process` once the query is adapted (`unit`, normalised) and searched (`hits`):
    /// slots, route, record. `id`: the trajectory id reserved for it, or `None` to take the next;
    /// `epoch`: the bank's `centroid_epoch` read before the search.
    pub(crate) fn decide(
        &self,
        x: &[f32],
        unit: &[f32],
        hits: &[(u64, f32)],
        id: Option<u64>,
        epoch: u64,
        model: &Model,
        view: Option<&Model>,
        sc: &mut Scratch,
    ) -> Result<Decision> {
        let d = self.cfg.dim;
        {
            let (found, cents) = (&mut sc.found, &mut sc.cents);
            let (ids, data) = self.slots_of(x, hits, found, cents, &mut sc.feats);
            let lookup = |id: u64| -> Option<&[f32]> {
                let j = found.iter().position(|&f| f == id)?;
                Some(&cents[j * d..(j + 1) * d])
            };
            self.build_seq(unit, &ids, &data[d..], &lookup, &mut sc.seq);
            forward(
                &self.layout,
                &model.router,
                Some(model.head_view()),
                &sc.seq,
                &mut sc.cache,
            );
            let t = self.cfg.n_tiers;
            let predicted = sc.cache.out.clone();
            let mut utilities = vec![0.0f32; t];
            policy::utilities(
                &predicted,
                &self.cfg.tier_costs,
                self.cfg.cost_weight,
                &mut utilities,
            );
            let id = id.unwrap_or_else(|| self.next_id.fetch_add(1, Relaxed));
            let c = policy::choose(
                &utilities,
                self.cfg.exploration,
                self.cfg.epsilon,
                self.cfg.gamma,
                policy::draw(self.cfg.seed, id),
            );
            let now = now_ms();
            // Tenant feedback recomputes through its own path; only loop A reuses these.
            let projected = view.is_none().then(|| Projected {
                rows: sc.cache.p[self.layout.rank_w..].into(),
                router: Arc::downgrade(&model.router),
                epoch,
            });
            if view.is_none() {
                self.durable
                    .log_trajectory(d, id, now, c.tier, c.propensity, &data, &ids)?;
            }
            self.pending.insert(
                id,
                PendingEntry {
                    data: data.into(),
                    ids: ids.into(),
                    tier: c.tier as u8,
                    propensity: c.propensity,
                    ts_ms: now,
                    projected,
                },
                now,
            );
            self.processed.fetch_add(1, Relaxed);
            Ok(Decision {
                trajectory_id: id,
                tier: c.tier,
                propensity: c.propensity,
                utilities,
                predicted,
                patterns: found.to_vec(),
                explored: c.explored,
                generation: model.generation,
            })
        }
    }

    /// The first half of a batched `process` for the rows of `xs` (validated by the caller):
    /// every row adapted by `model` and normalised (the unit rows, `dim` wide) and its recalled
    /// patterns, by one batched bank search. Fails on a row whose adapted query is zero, before
    /// anything is recorded.
    pub(crate) fn recall_rows(&self, xs: &[f32], model: &Model) -> Result<Recalled> {
        let d = self.cfg.dim;
        let mut units = Vec::new();
        units
            .try_reserve_exact(xs.len())
            .map_err(|_| SonaError::invalid("the batch is too large"))?;
        with_scratch(|sc| -> Result<()> {
            sc.adapted.resize(d, 0.0);
            for x in xs.chunks_exact(d) {
                model.adapt(x, &mut sc.adapted);
                Self::normalize(&sc.adapted, &mut sc.unit)?;
                units.extend_from_slice(&sc.unit);
            }
            Ok(())
        })?;
        let epoch = self.bank.centroid_epoch();
        let k = self.cfg.k_recall.min(self.bank.len());
        let hits = if k > 0 {
            self.bank.search_batch(&units, k)?
        } else {
            vec![Vec::new(); xs.len() / d]
        };
        Ok((units, hits, epoch))
    }

    /// The second half: [`Inner::decide`] for every row, with trajectory ids `first_id`,
    /// `first_id + 1`, …; each row is timed as an equal share of the whole.
    pub(crate) fn decide_rows(
        &self,
        xs: &[f32],
        (units, hits, epoch): &Recalled,
        first_id: u64,
        model: &Model,
    ) -> Result<Vec<Decision>> {
        let t0 = Instant::now();
        let d = self.cfg.dim;
        let rows = xs.chunks_exact(d).zip(units.chunks_exact(d)).zip(hits);
        let mut ahead = Vec::with_capacity(self.cfg.k_recall);
        let out = with_scratch(|sc| {
            rows.enumerate()
                .map(|(r, ((x, unit), row_hits))| {
                    // The patterns a few rows ahead are cold in a large bank: start their loads.
                    if let Some(next) = hits.get(r + PREFETCH_ROWS) {
                        ahead.clear();
                        ahead.extend(next.iter().map(|h| h.0));
                        self.bank.prefetch_patterns(&ahead);
                    }
                    let id = Some(first_id + r as u64);
                    self.decide(x, unit, row_hits, id, *epoch, model, None, sc)
                })
                .collect::<Result<Vec<_>>>()
        })?;
        self.latency.record_each(0, t0, out.len());
        Ok(out)
    }

    /// Centroids of the present ids of a recorded decision, as looked up now.
    pub(crate) fn centroids(&self, ids: &[u64]) -> Vec<(u64, Arc<[f32]>)> {
        let present: Vec<u64> = ids.iter().copied().filter(|&i| i != MISSING).collect();
        if present.is_empty() {
            return Vec::new();
        }
        let d = self.cfg.dim;
        let (recs, cents) = self.bank.records(&present);
        recs.iter()
            .enumerate()
            .map(|(i, r)| (r.id, Arc::from(&cents[i * d..(i + 1) * d])))
            .collect()
    }

    /// The present ids among `ids` and their centroids (`d` each) as they are now.
    fn visit_centroids(&self, ids: &[u64], found: &mut Vec<u64>, cents: &mut Vec<f32>) {
        found.clear();
        cents.clear();
        self.bank.visit_patterns(ids, |id, _, c| {
            if id != MISSING {
                found.push(id);
                cents.extend_from_slice(c);
            }
        });
    }

    /// Loss weight of a logged decision: 1, or `min(1/p, clip)` with importance weighting on.
    pub(crate) fn weight(&self, propensity: f32) -> f32 {
        if self.cfg.iw_clip > 0.0 {
            (1.0 / propensity.max(1e-6) as f64).min(self.cfg.iw_clip) as f32
        } else {
            1.0
        }
    }

    /// Loop A for one feedback.
    pub(crate) fn feedback(&self, id: u64, reward: f32, source: FeedbackSource) -> Result<()> {
        self.check_open()?;
        validate::check_reward(reward)?;
        if let Some(done) = self.tenant_feedback(id, reward, source) {
            return done;
        }
        let gate = self.durable.gate.read();
        let now = now_ms();
        let entry = self.pending.take(id, now).map_err(|m| {
            let _ = m == Missing::Expired;
            SonaError::UnknownId {
                kind: "trajectory (unknown, expired or already rewarded)",
                id: id.into(),
            }
        })?;
        // The recalled patterns' statistics and graph rows are cold in a large bank: start their
        // loads now, the router step below hides them.
        self.bank.prefetch_outcome(&entry.ids);
        let (d, t) = (self.cfg.dim, entry.tier as usize);
        let x = &entry.data[..d];
        let stats = &entry.data[d..];
        let wgt = self.weight(entry.propensity);
        with_scratch(|sc| -> Result<()> {
            // The recalled patterns still present, with their centroids as they are now. While the
            // bank's centroids and the router are those `process` used, its projections of the
            // recall rows are exactly what the forward below would recompute from the centroids:
            // then the (cold, k × d) centroids are not read at all.
            let epoch = self.bank.centroid_epoch();
            let reusable = self.reuse_projections
                && entry.projected.as_ref().is_some_and(|p| p.epoch == epoch);
            let (found, cents) = (&mut sc.found, &mut sc.cents);
            found.clear();
            cents.clear();
            if reusable {
                // Same epoch: every recalled id is still present (see `centroid_epoch`).
                found.extend(entry.ids.iter().copied().filter(|&id| id != MISSING));
            } else {
                self.visit_centroids(&entry.ids, found, cents);
            }
            let mut wr = self.writer.lock();
            let model = self.model.load_full();
            let projected = entry
                .projected
                .as_ref()
                .filter(|_| reusable)
                .and_then(|p| p.valid_for(&model.router, epoch));
            if reusable && projected.is_none() {
                // Loop B published a new router since `process`: recompute from the centroids.
                self.visit_centroids(&entry.ids, found, cents);
            }
            let lookup = |id: u64| -> Option<&[f32]> {
                let j = found.iter().position(|&f| f == id)?;
                Some(&cents[j * d..(j + 1) * d])
            };
            sc.adapted.resize(d, 0.0);
            model.adapt(x, &mut sc.adapted);
            let mut unit = std::mem::take(&mut sc.unit);
            let norm = match Self::normalize(&sc.adapted, &mut unit) {
                Ok(n) => n,
                Err(e) => {
                    sc.unit = unit;
                    drop(wr);
                    self.pending.restore(id, entry.clone());
                    return Err(e);
                }
            };
            let head = model.head_view();
            match projected {
                Some(rows) => {
                    self.projections_reused.fetch_add(1, Relaxed);
                    // Step 0 alone: the unit query and a zero statistics block.
                    sc.seq.clear();
                    sc.seq.resize(self.layout.input, 0.0);
                    sc.seq[..d].copy_from_slice(&unit);
                    forward_projected(
                        &self.layout,
                        &model.router,
                        Some(head),
                        &sc.seq,
                        rows,
                        &mut sc.cache,
                    );
                }
                None => {
                    self.build_seq(&unit, &entry.ids, stats, &lookup, &mut sc.seq);
                    forward(
                        &self.layout,
                        &model.router,
                        Some(head),
                        &sc.seq,
                        &mut sc.cache,
                    );
                }
            }
            let pred = sc.cache.out[t];
            let loss = wgt as f64
                * crate::router::bce_from_logit(sc.cache.logits[t] as f64, reward as f64);
            wr.loss_ema = if wr.loss_ema.is_nan() {
                loss
            } else {
                0.99 * wr.loss_ema + 0.01 * loss
            };
            sc.dl.clear();
            sc.dl.resize(self.cfg.n_tiers, 0.0);
            sc.dl[t] = wgt * (pred - reward);
            sc.dx0.resize(d, 0.0);
            backward(
                &self.layout,
                &model.router,
                Some(head),
                &sc.seq,
                &sc.cache,
                &sc.dl,
                &mut [],
                Some(&mut sc.dx0),
                None,
                &mut sc.bw,
            );
            through_normalize(&unit, &sc.dx0, norm, &mut sc.e);
            let mut micro = Spare::lora_like(&mut wr.spare.micro, &model.micro);
            let mut head_w = Spare::lora_like(&mut wr.spare.head, &model.head);
            let hl = sc.cache.h_final(self.layout.hidden).to_vec();
            let ok_m = wr
                .micro_opt
                .step(&model.micro, &mut micro, x, &sc.e)
                .is_ok();
            let ok_h = wr
                .head_opt
                .step(&model.head, &mut head_w, &hl, &sc.dl)
                .is_ok();
            wr.rejected += (!ok_m) as u64 + (!ok_h) as u64;
            let readout = crate::router::readout_step_into(
                &model.readout,
                &unit,
                t,
                sc.dl[t],
                self.cfg.readout_lr as f32,
                wr.spare.readout.take().unwrap_or_default(),
            );
            if ok_m || ok_h || readout.is_some() {
                let next = Model {
                    generation: model.generation + 1,
                    router: model.router.clone(),
                    base: model.base.clone(),
                    micro: if ok_m {
                        Arc::new(micro)
                    } else {
                        model.micro.clone()
                    },
                    head: if ok_h {
                        Arc::new(head_w)
                    } else {
                        model.head.clone()
                    },
                    readout: readout.map_or_else(|| model.readout.clone(), Arc::new),
                };
                self.model.store(Arc::new(next));
                wr.spare.recycle(model);
            }
            drop(wr);
            // Memory: arm statistics and graph edges (one write lock), and the completed
            // trajectory for extraction.
            let present = &sc.found;
            if !present.is_empty() {
                let used: &[u64] = if reward >= 0.5 { present } else { &[] };
                let _ = self.bank.record_outcome(present, t as u8, reward, used);
            }
            let _ = self.bank.add_trajectory(
                &unit,
                Some(reward),
                Some(t as u8),
                source.reward_source(),
                Some(entry.ts_ms),
            );
            sc.unit = unit;
            Ok(())
        })?;
        let item = Arc::new(ReplayItem {
            data: entry.data,
            ids: entry.ids,
            tier: entry.tier,
            reward,
            propensity: entry.propensity,
        });
        self.replay.lock().offer(item.clone());
        {
            let mut q = self.recent.lock();
            if q.len() >= self.budget.recent {
                q.pop_front();
            }
            q.push_back(item.clone());
        }
        self.metrics.lock().push(
            t,
            reward,
            item.propensity,
            &self.cfg.tier_costs,
            self.cfg.cost_weight,
        );
        self.feedbacks.fetch_add(1, Relaxed);
        let since = self.since_b.fetch_add(1, Relaxed) + 1;
        if self.cfg.background() && self.cfg.loop_b_every > 0 && since >= self.cfg.loop_b_every {
            let mut g = self.wake.0.lock();
            *g = true;
            self.wake.1.notify_one();
        }
        let ticket = self.durable.log_feedback(id, reward, source, now)?;
        drop(gate);
        self.durable.wait(ticket)
    }

    /// Counters and sizes as a JSON object.
    pub(crate) fn stats_json(&self) -> String {
        let bank = self.bank.stats();
        let model = self.model.load();
        // Lock order everywhere: learner, then writer; here each is taken alone.
        let (rejected, loss_ema) = {
            let wr = self.writer.lock();
            (wr.rejected, wr.loss_ema)
        };
        let (replay_len, replay_seen) = {
            let r = self.replay.lock();
            (r.items.len(), r.seen)
        };
        let (ewc_tasks, boundaries) = {
            let l = self.learner.lock();
            (l.ewc.task_count(), l.boundaries)
        };
        let memory = self.memory_json();
        serde_json::json!({
            "processed": self.processed.load(Relaxed),
            "feedbacks": self.feedbacks.load(Relaxed),
            "pending": self.pending.len(),
            "expired": self.pending.expired.load(Relaxed),
            "evicted": self.pending.evicted.load(Relaxed),
            "patterns": bank.patterns,
            "graph_edges": bank.graph_edges,
            "loop_b_runs": self.loop_b_runs.load(Relaxed),
            "loop_b_errors": self.loop_b_errors.load(Relaxed),
            "since_loop_b": self.since_b.load(Relaxed),
            "generation": model.generation,
            "replay": replay_len,
            "replay_seen": replay_seen,
            "rejected_steps": rejected,
            "loop_a_loss_ema": if loss_ema.is_nan() { None } else { Some(loss_ema) },
            "ewc_tasks": ewc_tasks,
            "boundaries": boundaries,
            "router_params": self.layout.n_params(),
            "router_bytes": self.layout.n_params() * 4,
            "model_bytes": model.bytes(),
            "memory_bytes": memory["bytes"],
            "memory_budget_mb": self.cfg.memory_budget_mb,
            "over_budget": memory["over_budget"],
            "patterns_evicted": self.patterns_evicted.load(Relaxed),
            "memory": memory,
            "feedback_projections_reused": self.projections_reused.load(Relaxed),
            "tenant_adapters": self.tenants.len(),
            "tenant_feedbacks": self.tenants.feedbacks.load(Relaxed),
            "tenants_evicted": self.tenants.evicted.load(Relaxed),
            "closed": self.closed.load(Relaxed),
            "next_trajectory_id": self.next_id.load(Relaxed),
            "durability": self.durable.stats(),
        })
        .to_string()
    }
}

impl Engine {
    /// A new engine; starts the loop-B thread unless the mode is `instant_only`.
    pub fn new(cfg: EngineConfig) -> Result<Self> {
        let inner = Arc::new(Inner::new(cfg)?);
        inner.replay_log(0)?;
        Ok(Self::start(inner))
    }

    pub(crate) fn start(inner: Arc<Inner>) -> Self {
        let thread = if inner.cfg.background() {
            let worker = inner.clone();
            std::thread::Builder::new()
                .name("sona-loop-b".into())
                .spawn(move || background_thread(worker))
                .ok()
        } else {
            None
        };
        Engine {
            inner,
            thread: Mutex::new(thread),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.cfg
    }

    /// Adapt, recall, route and record one query (`x`: `dim` finite values).
    pub fn process(&self, x: &[f32]) -> Result<Decision> {
        let inner = &self.inner;
        inner.latency.time(0, || inner.process(x))
    }

    /// `process` with `tenant`'s own micro-LoRA over the shared base and router: its feedback
    /// adapts that tenant's representation only (see [`crate::tenants`]). A bad tenant name is
    /// `InvalidInput`.
    pub fn process_tenant(&self, x: &[f32], tenant: &str) -> Result<Decision> {
        let inner = &self.inner;
        inner.latency.time(0, || inner.process_tenant(x, tenant))
    }

    /// Number of tenant micro-LoRAs held (at most [`crate::tenants::MAX_TENANTS`]).
    pub fn tenant_count(&self) -> usize {
        self.inner.tenants.len()
    }

    /// `tenant`'s micro-LoRA now, if it has one.
    pub fn tenant_micro(&self, tenant: &str) -> Option<Arc<LoraWeights>> {
        self.inner.tenants.micro(tenant)
    }

    /// `process` over the rows of `xs` (`n × dim`): the same decisions as `process` row after row
    /// (trajectory ids consecutive in row order). All rows are validated first; large batches use
    /// two threads, each with one batched bank search for its half.
    pub fn process_batch(&self, xs: &[f32], n: usize) -> Result<Vec<Decision>> {
        self.inner.check_open()?;
        let d = self.inner.cfg.dim;
        if n > 10_000_000 {
            return Err(SonaError::invalid(format!(
                "batch of {n} rows is too large"
            )));
        }
        validate::check_matrix("xs", xs, n, d)?;
        let inner = &*self.inner;
        let _gate = inner.durable.gate.read();
        let model = inner.model.load_full();
        // Adapt and search every row before recording any (a bad row then records nothing).
        let recalled = in_halves(n, |rows| {
            let part = inner.recall_rows(&xs[rows.start * d..rows.end * d], &model)?;
            Ok(vec![(rows, part)])
        })?;
        // One block of ids for the batch, in row order: the decisions (exploration draws are
        // seeded by the id) are those of `process` called row after row, whatever the threads do.
        let first = inner.next_id.fetch_add(n as u64, Relaxed);
        let decide = |(rows, part): &(std::ops::Range<usize>, _)| {
            let xs = &xs[rows.start * d..rows.end * d];
            inner.decide_rows(xs, part, first + rows.start as u64, &model)
        };
        match &recalled[..] {
            [one] => decide(one),
            [a, b] => {
                let (a, b) = std::thread::scope(|s| {
                    let h = s.spawn(|| decide(b));
                    (decide(a), h.join())
                });
                let mut a = a?;
                a.extend(b.map_err(|_| worker_panicked())??);
                Ok(a)
            }
            _ => Ok(Vec::new()),
        }
    }

    /// Loop A: the reward of trajectory `id` (in `[0, 1]`). Unknown, expired or repeated ids are
    /// `UnknownId`; a bad reward is `InvalidInput`; either way nothing changes.
    pub fn feedback(&self, id: u64, reward: f32, source: FeedbackSource) -> Result<()> {
        let inner = &self.inner;
        inner.latency.time(1, || inner.feedback(id, reward, source))
    }

    /// `feedback` for each `(id, reward)`. Rewards, ids (known, not repeated in the batch) are all
    /// checked first, so a bad batch changes nothing (unless another thread completes one of its ids
    /// in between, which then fails that id alone).
    pub fn feedback_batch(
        &self,
        ids: &[u64],
        rewards: &[f32],
        source: FeedbackSource,
    ) -> Result<()> {
        self.inner.check_open()?;
        if ids.len() != rewards.len() {
            return Err(SonaError::len_mismatch("rewards", ids.len(), rewards.len()));
        }
        for &r in rewards {
            validate::check_reward(r)?;
        }
        let now = now_ms();
        let mut seen = std::collections::HashSet::with_capacity(ids.len());
        for &id in ids {
            if !seen.insert(id) || !self.inner.pending.contains(id, now) {
                return Err(SonaError::UnknownId {
                    kind: "trajectory (unknown, expired or repeated in the batch)",
                    id: id.into(),
                });
            }
        }
        for (&id, &r) in ids.iter().zip(rewards) {
            self.feedback(id, r, source)?;
        }
        Ok(())
    }

    /// Runs one loop-B cycle now (serialised with the background thread's cycles).
    pub fn background_learn(&self) -> Result<LearningResult> {
        self.inner.check_open()?;
        let inner = &self.inner;
        inner.latency.time(2, || inner.background_learn())
    }

    /// Runs one deep ("dream") cycle now (serialised with loop B); see [`crate::loop_c`].
    pub fn deep_learn(&self) -> Result<crate::loop_c::DeepLearningResult> {
        self.inner.check_open()?;
        let inner = &self.inner;
        inner.latency.time(3, || inner.deep_learn())
    }

    /// Per-window metrics as JSON (see [`crate::metrics`]), with the improvement rates of the
    /// estimated regret between consecutive windows, `weekly_gain` (the last of those rates: the
    /// relative regret reduction of the latest closed window against the one before — windows of
    /// `metrics_window` feedbacks, not calendar weeks) and Φ of the memory graph after the last deep
    /// cycle (`null` before one ran), and `latency`: per operation (`process`, `feedback`,
    /// `background_learn`, `deep_learn`) the count of successful calls and their p50/p99 in µs.
    pub fn improvement_metrics(&self) -> String {
        let json = self.inner.metrics.lock().to_json();
        let mut v: serde_json::Value = serde_json::from_str(&json).expect("metrics JSON");
        let regrets: Vec<f64> = v["regret"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
            .unwrap_or_default();
        let rates = sona_metrics::improvement::improvement_rates(&regrets);
        v["weekly_gain"] = serde_json::json!(rates.last());
        v["improvement_rates"] = serde_json::json!(rates);
        v["phi"] = serde_json::json!(*self.inner.last_phi.lock());
        v["memory"] = self.inner.memory_json();
        v["latency"] = self.inner.latency.to_json();
        v.to_string()
    }

    /// Counters and sizes as JSON.
    pub fn stats(&self) -> String {
        self.inner.stats_json()
    }

    /// The current weights.
    pub fn model(&self) -> Arc<Model> {
        self.inner.model.load_full()
    }

    /// Adds `n` patterns with the given centroids (`n × dim`, normalised) and no arm statistics,
    /// e.g. a memory built elsewhere or a benchmark's 10k-pattern bank. Fresh ids; all rows are
    /// validated first (nothing is added on error). Returns the new ids.
    pub fn import_patterns(&self, centroids: &[f32], n: usize) -> Result<Vec<u64>> {
        self.inner.check_open()?;
        let cfg = &self.inner.cfg;
        if n > 10_000_000 {
            return Err(SonaError::invalid(format!("{n} patterns is too many")));
        }
        validate::check_matrix("centroids", centroids, n, cfg.dim)?;
        let first = self.inner.bank.stats().next_pattern_id;
        let now = now_ms();
        let records = (0..n as u64)
            .map(|i| sona_reasoning::PatternRecord {
                id: first + i,
                level: 0,
                support: 1,
                arms: vec![sona_core::types::ArmStats::default(); cfg.n_tiers],
                avg_reward: 0.0,
                created_ms: now,
                updated_ms: now,
                last_access_ms: now,
                access_count: 0,
                exemplars: Vec::new(),
                payload: None,
                resultant: 1.0,
                rewards: None,
            })
            .collect();
        self.inner.bank.import(records, centroids)?;
        self.inner.enforce_budget()?;
        Ok((first..first + n as u64).collect())
    }

    pub fn bank(&self) -> &ReasoningBank {
        &self.inner.bank
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Relaxed)
    }

    /// Stops the background thread (waiting for a running cycle to end). Later calls fail with
    /// `InvalidInput("the engine is closed")`; closing twice is fine.
    pub fn close(&self) {
        self.inner.closed.store(true, Relaxed);
        {
            let mut g = self.inner.wake.0.lock();
            *g = true;
            self.inner.wake.1.notify_all();
        }
        if let Some(h) = self.thread.lock().take() {
            let _ = h.join();
        }
        if let Some(log) = &self.inner.durable.log {
            log.close();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.close();
    }
}

fn background_thread(inner: Arc<Inner>) {
    let cfg = inner.cfg.clone();
    let poll = Duration::from_secs_f64(if cfg.loop_b_interval_s > 0.0 {
        cfg.loop_b_interval_s.clamp(0.01, 1.0)
    } else {
        1.0
    });
    let deep =
        cfg.learning_mode == crate::config::LearningMode::AllThreeTiers && cfg.deep_every_b > 0;
    let mut b_since_deep = 0u64;
    loop {
        {
            let mut g = inner.wake.0.lock();
            if !*g && !inner.closed.load(Relaxed) {
                inner.wake.1.wait_for(&mut g, poll);
            }
            *g = false;
        }
        if inner.closed.load(Relaxed) {
            break;
        }
        let since = inner.since_b.load(Relaxed);
        let by_count = cfg.loop_b_every > 0 && since >= cfg.loop_b_every;
        let by_time = cfg.loop_b_interval_s > 0.0
            && since > 0
            && inner.last_b.lock().elapsed().as_secs_f64() >= cfg.loop_b_interval_s;
        if by_count || by_time {
            if inner.latency.time(2, || inner.background_learn()).is_ok() {
                inner.after_cycle();
            }
            b_since_deep += 1;
            if deep && b_since_deep >= cfg.deep_every_b && !inner.closed.load(Relaxed) {
                b_since_deep = 0;
                let _ = inner.latency.time(3, || inner.deep_learn());
            }
        }
    }
}

#[cfg(test)]
mod tests;
