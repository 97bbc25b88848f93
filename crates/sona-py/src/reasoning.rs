//! Binding of the `sona-reasoning` ReasoningBank: `ReasoningBank`, registered in `sona._sona` and
//! re-exported unchanged by `sona.reasoning` (its `__module__`). This file is the Python API: the
//! docstrings are the doc comments below, the defaults are [`BankConfig::new`]'s and
//! [`GraphConfig::default`]'s, embeddings take any array-like ([`crate::convert::vector`]), sizes,
//! ints and reals are checked by [`crate::args`].
//!
//! Structured results (patterns, hits, verdicts, reports, stats) are the frozen dataclasses of
//! `sona.reasoning` (`Pattern` must stay one: users build and `dataclasses.replace` them for
//! `import_`). They cross the boundary as JSON strings plus float32 matrices for centroids and are
//! built by that module's converters ([`results`]), so this file has no hand-written dict
//! conversions and the two sides stay in step through serde.
//! Integers arrive as [`Int`] and are narrowed to `i64` ([`int64`]) so that a negative id or tier
//! is a `SonaError`, not a conversion error.
//!
//! Every numpy input is copied first and the copy is what the bank validates and stores, so another
//! thread writing the array during the call (numpy releases the GIL while it writes) cannot slip
//! an unchecked value in. No lock of the bank is ever held while the GIL is released or awaited:
//! long calls release the GIL first and the bank takes its locks inside.

use std::sync::Arc;

use numpy::{PyArray1, PyArray2};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;
use sona_core::types::RewardSource;
use sona_core::SonaError;
use sona_reasoning::index::{HnswParams, IndexKind, IvfParams};
use sona_reasoning::persist::{self, PatternRecord};
use sona_reasoning::{BankConfig, GraphConfig, PruneRule, ReasoningBank};

use crate::args::{kind_name, Choice, FsPath, Int, Real, Setting, Size, Text};
use crate::convert::{matrix, out1, out2, slice, vector};
use crate::errors::{guard, BindResult};

/// `int` arguments beyond `i64` (the range of every count, tier and timestamp here) are refused.
fn int64(what: &str, v: Int) -> BindResult<i64> {
    i64::try_from(v.0)
        .map_err(|_| SonaError::invalid(format!("{what} {} is out of range", v.0)).into())
}

fn reward(r: Real) -> BindResult<f32> {
    Ok(r.reward()?)
}

fn tier(t: Int) -> BindResult<u8> {
    u8::try_from(t.0)
        .ok()
        .filter(|&t| t != u8::MAX)
        .ok_or_else(|| {
            SonaError::invalid(format!(
                "tier must be a small non-negative int, got {}",
                t.0
            ))
            .into()
        })
}

/// An id no bank can have issued (negative, or beyond the `i64` range of its counter) is unknown.
fn id(kind: &'static str, i: Int) -> BindResult<u64> {
    Ok(i.issued_id(kind)?)
}

fn count(what: &str, v: Int) -> BindResult<usize> {
    let v = int64(what, v)?;
    usize::try_from(v)
        .map_err(|_| SonaError::invalid(format!("{what} must be >= 0, got {v}")).into())
}

/// A result count: beyond the `i64` range it means "all of them" (as in every ANN library).
fn top_k(k: Int) -> BindResult<usize> {
    count("k", Int(k.0.min(i128::from(i64::MAX))))
}

fn source(s: &str) -> BindResult<RewardSource> {
    RewardSource::parse(s).ok_or_else(|| {
        SonaError::invalid(format!(
            "reward source must be 'explicit', 'implicit' or 'judge', got {s:?}"
        ))
        .into()
    })
}

fn ts(what: &str, v: Option<Int>) -> BindResult<Option<u64>> {
    v.map(|t| {
        let t = int64(what, t)?;
        u64::try_from(t)
            .map_err(|_| SonaError::invalid(format!("timestamps must be >= 0 ms, got {t}")).into())
    })
    .transpose()
}

/// Calls the converter `name` of `sona.reasoning` (imported once), which builds its dataclasses.
fn results<'py>(
    py: Python<'py>,
    name: &str,
    args: impl pyo3::call::PyCallArgs<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    MODULE
        .get_or_try_init(py, || py.import("sona.reasoning").map(Bound::unbind))?
        .bind(py)
        .getattr(name)?
        .call1(args)
}

/// `(records JSON, centroids)` of patterns, as `sona.reasoning._patterns` reads them.
fn records<'py>(
    py: Python<'py>,
    dim: usize,
    recs: Vec<PatternRecord>,
    cents: Vec<f32>,
) -> BindResult<(String, Bound<'py, PyArray2<f32>>)> {
    let n = recs.len();
    Ok((persist::to_json(&recs)?, out2(py, cents, n, dim)?))
}

/// The patterns as `sona.reasoning.Pattern`s.
fn patterns<'py>(
    py: Python<'py>,
    dim: usize,
    (recs, cents): (Vec<PatternRecord>, Vec<f32>),
) -> BindResult<Bound<'py, PyAny>> {
    Ok(results(py, "_patterns", records(py, dim, recs, cents)?)?)
}

/// `(ids, similarities)` of a search.
type Hits<'py> = (Bound<'py, PyArray1<u64>>, Bound<'py, PyArray1<f32>>);

fn hits(py: Python<'_>, hits: Vec<(u64, f32)>) -> Hits<'_> {
    let (ids, sims): (Vec<u64>, Vec<f32>) = hits.into_iter().unzip();
    (PyArray1::from_vec(py, ids), out1(py, sims))
}

/// `"flat"` (exact), `"ivf"` / `"approx"` (inverted lists) or `"hnsw"` (`ef_search` is its
/// recall/latency knob).
fn index_kind(name: &str, ef_search: Option<Size>, seed: u64) -> Result<IndexKind, SonaError> {
    match (name, ef_search) {
        ("flat" | "ivf" | "approx", Some(_)) => Err(SonaError::Config(
            "ef_search applies to index=\"hnsw\" only".into(),
        )),
        ("flat", None) => Ok(IndexKind::Flat),
        ("ivf" | "approx", None) => Ok(IndexKind::Ivf(IvfParams {
            seed,
            ..IvfParams::default()
        })),
        ("hnsw", ef) => {
            let mut p = HnswParams {
                seed,
                ..HnswParams::default()
            };
            if let Some(Size(ef)) = ef {
                if ef == 0 {
                    return Err(SonaError::Config("ef_search must be > 0, got 0".into()));
                }
                p.ef_search = ef;
            }
            Ok(IndexKind::Hnsw(p))
        }
        (other, _) => Err(SonaError::Config(format!(
            "index must be \"flat\", \"ivf\", \"hnsw\" or \"approx\", got {other:?}"
        ))),
    }
}

/// The defaults of every setting but `dim` and `n_tiers`.
fn defaults() -> BankConfig {
    BankConfig::new(1, 4)
}

/// Options of the constructor's `**kwargs` that exist (the others raise `ConfigError`).
const MORE_OPTIONS: [&str; 3] = ["kmeans_max_iter", "max_exemplars", "minibatch_threshold"];

/// Trajectories in, curated searchable patterns out. Thread-safe; long calls release the GIL.
///
/// Args:
///     dim: embedding dimension.
///     n_tiers: number of model tiers (arms per pattern).
///     seed: seeds k-means and the replay reservoir (runs are reproducible).
///     buffer_capacity: new completed trajectories kept for the next extraction; beyond it the
///         oldest are dropped and counted (`stats().dropped`).
///     reservoir_capacity: size of the uniform replay sample (Algorithm R).
///     pending_capacity / pending_ttl_ms: trajectories awaiting a reward; the oldest are evicted
///         beyond the capacity and expire after the TTL.
///     merge_threshold: τ_merge, cosine at which a new cluster merges into an existing pattern.
///     merge_slack: a cluster also merges into its nearest pattern P when their cosine is at least
///         ρ_P − merge_slack, ρ_P being the mean cosine of P's own members to its centroid (the
///         cluster lies within P). This keeps replayed outliers and sub-groups from forming new
///         patterns; `None` keeps the plain τ_merge rule.
///     max_clusters: most clusters one extraction produces (k-means starts from √(n/2)).
///     min_cohesion: clusters whose members' mean cosine to their centroid (corrected for
///         cluster size) is below this, or that are clearly a union of two groups, are split in two
///         (bisecting k-means), so patterns follow the data's groups rather than k; `None`
///         disables the refinement.
///     default_tier: the arm verdicts test every other arm against; `alpha` their level.
///     graph_*, eta_plus, eta_minus, w_init, w_min: memory-graph bounds and update rates.
///     index: `"flat"` (exact scan, the default: fastest below a few thousand patterns),
///         `"ivf"` or `"approx"` (inverted lists, for large pattern sets), or `"hnsw"`
///         (graph; see `sona.index.VectorIndex` for when each wins).
///     ef_search: the HNSW candidate-list size (`index="hnsw"` only): recall vs latency.
///     kmeans_max_iter, minibatch_threshold, max_exemplars: further options of the Rust core;
///         any other keyword raises ConfigError.
///
/// Sizes must be `int` and settings real numbers (anything else raises ConfigError).
#[pyclass(frozen, name = "ReasoningBank", module = "sona.reasoning")]
pub(crate) struct PyReasoningBank {
    inner: Arc<ReasoningBank>,
}

#[pymethods]
impl PyReasoningBank {
    #[new]
    #[pyo3(signature = (dim, n_tiers = Size(4), *,
        seed = Size(defaults().seed as usize),
        buffer_capacity = Size(defaults().buffer_capacity),
        reservoir_capacity = Size(defaults().reservoir_capacity),
        pending_capacity = Size(defaults().pending_capacity),
        pending_ttl_ms = Size(defaults().pending_ttl_ms as usize),
        merge_threshold = Setting(defaults().merge_threshold.into()),
        merge_slack = defaults().merge_slack.map(|x| Setting(x.into())),
        max_clusters = Size(defaults().max_clusters),
        min_cohesion = defaults().min_cohesion.map(|x| Setting(x.into())),
        default_tier = Size(defaults().default_tier),
        alpha = Setting(defaults().alpha),
        graph_max_nodes = Size(GraphConfig::default().max_nodes),
        graph_max_edges = Size(GraphConfig::default().max_edges),
        eta_plus = Setting(GraphConfig::default().eta_plus.into()),
        eta_minus = Setting(GraphConfig::default().eta_minus.into()),
        w_init = Setting(GraphConfig::default().w_init.into()),
        graph_decay = Setting(GraphConfig::default().decay.into()),
        w_min = Setting(GraphConfig::default().w_min.into()),
        index = Text("flat".into()),
        ef_search = None,
        kmeans_max_iter = Size(defaults().kmeans_max_iter),
        minibatch_threshold = Size(defaults().minibatch_threshold),
        max_exemplars = Size(defaults().max_exemplars),
        **unknown),
        // As generated, but the `Text` default of `index` shown (it would read `...`).
        text_signature = "(dim, n_tiers=..., *, seed=..., buffer_capacity=..., \
            reservoir_capacity=..., pending_capacity=..., pending_ttl_ms=..., merge_threshold=..., \
            merge_slack=..., max_clusters=..., min_cohesion=..., default_tier=..., alpha=..., \
            graph_max_nodes=..., graph_max_edges=..., eta_plus=..., eta_minus=..., w_init=..., \
            graph_decay=..., w_min=..., index='flat', ef_search=None, kmeans_max_iter=..., \
            minibatch_threshold=..., max_exemplars=..., **unknown)")]
    #[allow(clippy::too_many_arguments)] // the Python constructor's keywords
    fn new(
        py: Python<'_>,
        dim: Size,
        n_tiers: Size,
        seed: Size,
        buffer_capacity: Size,
        reservoir_capacity: Size,
        pending_capacity: Size,
        pending_ttl_ms: Size,
        merge_threshold: Setting,
        merge_slack: Option<Setting>,
        max_clusters: Size,
        min_cohesion: Option<Setting>,
        default_tier: Size,
        alpha: Setting,
        graph_max_nodes: Size,
        graph_max_edges: Size,
        eta_plus: Setting,
        eta_minus: Setting,
        w_init: Setting,
        graph_decay: Setting,
        w_min: Setting,
        index: Text,
        ef_search: Option<Size>,
        kmeans_max_iter: Size,
        minibatch_threshold: Size,
        max_exemplars: Size,
        unknown: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        guard(py, || {
            if let Some(u) = unknown.filter(|u| !u.is_empty()) {
                let mut names: Vec<String> = u.keys().iter().map(|k| k.to_string()).collect();
                names.sort();
                return Err(SonaError::Config(format!(
                    "unknown option(s) {names:?}; known: {MORE_OPTIONS:?}"
                ))
                .into());
            }
            // Ranges are checked by `BankConfig::validate`; NaN/Inf must not reach the f32 casts.
            for (what, x) in [
                ("merge_threshold", merge_threshold),
                ("alpha", alpha),
                ("eta_plus", eta_plus),
                ("eta_minus", eta_minus),
                ("w_init", w_init),
                ("graph_decay", graph_decay),
                ("w_min", w_min),
            ]
            .into_iter()
            .chain(merge_slack.map(|x| ("merge_slack", x)))
            .chain(min_cohesion.map(|x| ("min_cohesion", x)))
            {
                if !x.0.is_finite() {
                    let x = x.0;
                    return Err(SonaError::Config(format!("{what} must be finite, got {x}")).into());
                }
            }
            let seed = seed.0 as u64;
            let cfg = BankConfig {
                dim: dim.0,
                n_tiers: n_tiers.0,
                seed,
                buffer_capacity: buffer_capacity.0,
                reservoir_capacity: reservoir_capacity.0,
                pending_capacity: pending_capacity.0,
                pending_ttl_ms: pending_ttl_ms.0 as u64,
                merge_threshold: merge_threshold.f32(),
                merge_slack: merge_slack.map(Setting::f32),
                max_clusters: max_clusters.0,
                min_cohesion: min_cohesion.map(Setting::f32),
                kmeans_max_iter: kmeans_max_iter.0,
                minibatch_threshold: minibatch_threshold.0,
                max_exemplars: max_exemplars.0,
                default_tier: default_tier.0,
                alpha: alpha.0,
                graph: GraphConfig {
                    max_nodes: graph_max_nodes.0,
                    max_edges: graph_max_edges.0,
                    eta_plus: eta_plus.f32(),
                    eta_minus: eta_minus.f32(),
                    w_init: w_init.f32(),
                    decay: graph_decay.f32(),
                    w_min: w_min.f32(),
                },
                index: index_kind(&index.0, ef_search, seed)?,
            };
            Ok(PyReasoningBank {
                inner: Arc::new(ReasoningBank::new(cfg)?),
            })
        })
    }

    /// Embedding dimension.
    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// `"flat"`, `"ivf"` or `"hnsw"`: the pattern index this bank searches.
    #[getter]
    fn index_kind(&self) -> &'static str {
        self.inner.config().index.name()
    }

    /// Number of tiers (arms per pattern).
    #[getter]
    fn n_tiers(&self) -> usize {
        self.inner.config().n_tiers
    }

    /// The full configuration.
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            let json = persist::to_json(self.inner.config())?;
            Ok(py.import("json")?.call_method1("loads", (json,))?)
        })
    }

    /// Number of concrete (level-0) patterns.
    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "ReasoningBank(dim={}, n_tiers={}, patterns={})",
            self.inner.dim(),
            self.inner.config().n_tiers,
            self.inner.len()
        )
    }

    // --- trajectories ---------------------------------------------------------------------------

    /// Record one trajectory; returns its global id (monotonic, never reused).
    ///
    /// `embedding` is the (adapted) query vector. With a `reward` in [0, 1] the trajectory is
    /// complete and waits for the next extraction; without one it is pending until
    /// `set_reward`. `tier` is the tier that served it (its arm gets the reward).
    #[pyo3(signature = (embedding, reward = None, tier = None, *, source = Choice("explicit".into()), ts_ms = None),
           text_signature = "($self, embedding, reward=None, tier=None, *, source='explicit', ts_ms=None)")]
    fn add_trajectory(
        &self,
        py: Python<'_>,
        embedding: &Bound<'_, PyAny>,
        reward: Option<Real>,
        tier: Option<Int>,
        source: Choice,
        ts_ms: Option<Int>,
    ) -> PyResult<u64> {
        guard(py, || {
            let e = slice(&vector("embedding", embedding)?).to_vec();
            let r = reward.map(self::reward).transpose()?;
            let t = tier.map(self::tier).transpose()?;
            let s = self::source(&source.0)?;
            Ok(self
                .inner
                .add_trajectory(&e, r, t, s, ts("ts_ms", ts_ms)?)?)
        })
    }

    /// Complete a pending trajectory with its reward (UnknownIdError if unknown, expired or
    /// already rewarded).
    #[pyo3(signature = (trajectory_id, reward, *, source = Choice("explicit".into()), tier = None),
           text_signature = "($self, trajectory_id, reward, *, source='explicit', tier=None)")]
    fn set_reward(
        &self,
        py: Python<'_>,
        trajectory_id: Int,
        reward: Real,
        source: Choice,
        tier: Option<Int>,
    ) -> PyResult<()> {
        guard(py, || {
            let r = self::reward(reward)?;
            let t = tier.map(self::tier).transpose()?;
            let s = self::source(&source.0)?;
            let i = id("pending trajectory", trajectory_id)?;
            Ok(self.inner.set_reward(i, r, s, t)?)
        })
    }

    /// Drop pending trajectories older than the TTL; returns how many.
    #[pyo3(signature = (now_ms = None))]
    fn expire_pending(&self, py: Python<'_>, now_ms: Option<Int>) -> PyResult<usize> {
        guard(py, || Ok(self.inner.expire_pending(ts("now_ms", now_ms)?)))
    }

    /// The replay sample `(ids, embeddings, rewards, tiers)`; tier −1 when none was
    /// recorded.
    #[allow(clippy::type_complexity)]
    fn reservoir<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(
        Bound<'py, PyArray1<u64>>,
        Bound<'py, PyArray2<f32>>,
        Bound<'py, PyArray1<f32>>,
        Bound<'py, PyArray1<i64>>,
    )> {
        guard(py, || {
            let s = self.inner.reservoir();
            let n = s.len();
            let ids = s.meta.iter().map(|m| m.id).collect();
            let rewards = s.meta.iter().map(|m| m.reward).collect();
            let tiers = s
                .meta
                .iter()
                .map(|m| m.tier().map_or(-1, i64::from))
                .collect();
            Ok((
                PyArray1::from_vec(py, ids),
                out2(py, s.data, n, s.dim)?,
                out1(py, rewards),
                PyArray1::from_vec(py, tiers),
            ))
        })
    }

    // --- patterns -------------------------------------------------------------------------------

    /// Cluster the trajectories completed since the last call into patterns (loop B).
    ///
    /// Releases the GIL and holds no lock while clustering: searches and new trajectories proceed
    /// from other threads meanwhile.
    fn extract_patterns<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let bank = self.inner.clone();
        let res = py.detach(move || bank.extract_patterns());
        guard(py, || {
            Ok(results(py, "_report", (persist::to_json(&res?)?,))?)
        })
    }

    /// The `k` patterns most similar to `vector`, best first (all of them when `k` exceeds
    /// `len(self)`, as in every ANN library; `k < 1` raises), plus up to `expand` more
    /// reached through the memory graph (personalized PageRank, restart 0.15).
    #[pyo3(signature = (vector, k, *, expand = Int(0)))]
    fn search<'py>(
        &self,
        py: Python<'py>,
        vector: &Bound<'py, PyAny>,
        k: Int,
        expand: Int,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            let q = slice(&self::vector("vector", vector)?).to_vec();
            let (k, expand) = (top_k(k)?, count("expand", expand)?);
            let hits = self.inner.search_expanded(&q, k, expand)?;
            let ids: Vec<u64> = hits.iter().map(|h| h.id).collect();
            let (recs, cents) = self.inner.records(&ids);
            let (recs, cents) = records(py, self.inner.dim(), recs, cents)?;
            Ok(results(
                py,
                "_hits",
                (persist::to_json(&hits)?, recs, cents),
            )?)
        })
    }

    /// Fast path of `search`: `(ids, similarities)` arrays only.
    fn search_ids<'py>(
        &self,
        py: Python<'py>,
        vector: &Bound<'py, PyAny>,
        k: Int,
    ) -> PyResult<Hits<'py>> {
        guard(py, || {
            let q = slice(&self::vector("vector", vector)?).to_vec();
            Ok(hits(py, self.inner.search(&q, top_k(k)?)?))
        })
    }

    /// Search within one hierarchy level (after `build_hierarchy`).
    fn search_level<'py>(
        &self,
        py: Python<'py>,
        vector: &Bound<'py, PyAny>,
        k: Int,
        level: Int,
    ) -> PyResult<Hits<'py>> {
        guard(py, || {
            let q = slice(&self::vector("vector", vector)?).to_vec();
            let (k, level) = (top_k(k)?, count("level", level)?);
            Ok(hits(py, self.inner.search_level(&q, k, level)?))
        })
    }

    /// All patterns of `level` (0 = concrete), ordered by id.
    #[pyo3(signature = (level = Int(0)))]
    fn patterns<'py>(&self, py: Python<'py>, level: Int) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            let level = self.inner.level_records(count("level", level)?)?;
            patterns(py, self.inner.dim(), level)
        })
    }

    /// One concrete pattern (UnknownIdError if absent).
    fn pattern<'py>(&self, py: Python<'py>, pattern_id: Int) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            let i = id("pattern", pattern_id)?;
            let found = self.inner.records(&[i]);
            if found.0.is_empty() {
                return Err(SonaError::UnknownId {
                    kind: "pattern",
                    id: i.into(),
                }
                .into());
            }
            Ok(patterns(py, self.inner.dim(), found)?.get_item(0)?)
        })
    }

    /// For each pattern of `level` ≥ 1 (in `patterns` order), its member ids one
    /// level down.
    fn level_children(&self, py: Python<'_>, level: Int) -> PyResult<Vec<Vec<u64>>> {
        guard(py, || {
            Ok(self.inner.level_children(count("level", level)?)?)
        })
    }

    /// Loop-A feedback: `tier` earned `reward` ∈ [0, 1] on a query matching the pattern.
    fn record_feedback(
        &self,
        py: Python<'_>,
        pattern_id: Int,
        tier: Int,
        reward: Real,
    ) -> PyResult<()> {
        guard(py, || {
            let (i, t, r) = (
                id("pattern", pattern_id)?,
                self::tier(tier)?,
                self::reward(reward)?,
            );
            Ok(self.inner.record_feedback(i, t, r)?)
        })
    }

    /// Loop-A graph update: patterns retrieved for one query and those actually used.
    fn record_usage(
        &self,
        py: Python<'_>,
        retrieved: &Bound<'_, PyAny>,
        used: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let ids = |what: &str, it: &Bound<'_, PyAny>| -> BindResult<Vec<u64>> {
            let iter = it.try_iter().map_err(|_| {
                SonaError::invalid(format!(
                    "{what}: expected an iterable of pattern ids, got {}",
                    kind_name(it)
                ))
            })?;
            iter.map(|x| id("pattern", x?.extract::<Int>()?)).collect()
        };
        guard(py, || {
            let (r, u) = (ids("retrieved", retrieved)?, ids("used", used)?);
            Ok(self.inner.record_usage(&r, &u)?)
        })
    }

    /// Loop-B global decay of the memory-graph weights.
    fn decay_graph(&self, py: Python<'_>) -> PyResult<()> {
        guard(py, || {
            self.inner.decay_graph();
            Ok(())
        })
    }

    /// Every memory-graph edge `(a, b, weight)` with `a < b`.
    fn graph_edges(&self, py: Python<'_>) -> PyResult<Vec<(u64, u64, f32)>> {
        guard(py, || Ok(self.inner.graph_edges()))
    }

    /// For each pattern where some tier beats the default tier (one-sided Welch t-test, Holm
    /// correction across tiers, family-wise level `alpha`): the best such tier.
    fn verdicts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            let json = persist::to_json(&self.inner.verdicts())?;
            Ok(results(py, "_verdicts", (json,))?)
        })
    }

    // --- maintenance ----------------------------------------------------------------------------

    /// Merge near-duplicate patterns transitively (union-find over cosine ≥ `threshold`);
    /// returns how many patterns disappeared.
    #[pyo3(signature = (threshold = Real(0.95)))]
    fn consolidate(&self, py: Python<'_>, threshold: Real) -> PyResult<usize> {
        guard(py, || Ok(self.inner.consolidate(threshold.f32())?))
    }

    /// Remove patterns with support < `min_support` AND avg reward < `min_reward` AND
    /// idle for more than `max_idle_ms`; returns the removed ids.
    #[pyo3(signature = (min_support, min_reward, max_idle_ms, *, now_ms = None))]
    fn prune(
        &self,
        py: Python<'_>,
        min_support: Int,
        min_reward: Real,
        max_idle_ms: Int,
        now_ms: Option<Int>,
    ) -> PyResult<Vec<u64>> {
        guard(py, || {
            let min_support = int64("min_support", min_support)?;
            let rule = PruneRule {
                min_support: u32::try_from(min_support.max(0)).unwrap_or(u32::MAX),
                min_reward: self::reward(min_reward)?,
                max_idle_ms: ts("max_idle_ms", Some(max_idle_ms))?.unwrap_or(0),
            };
            Ok(self.inner.prune(rule, ts("now_ms", now_ms)?)?)
        })
    }

    /// Rebuild the abstraction levels from scratch (level ℓ+1 = k-means over level-ℓ centroids,
    /// ⌈n/branching⌉ clusters); returns each level's size.
    #[pyo3(signature = (branching = Int(8), max_levels = Int(1)))]
    fn build_hierarchy(
        &self,
        py: Python<'_>,
        branching: Int,
        max_levels: Int,
    ) -> PyResult<Vec<usize>> {
        guard(py, || {
            let (b, l) = (
                count("branching", branching)?,
                count("max_levels", max_levels)?,
            );
            let bank = self.inner.clone();
            Ok(py.detach(move || bank.build_hierarchy(b, l))?)
        })
    }

    // --- export / persistence -------------------------------------------------------------------

    /// The concrete patterns, for `import_` into another bank.
    fn export<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || patterns(py, self.inner.dim(), self.inner.export()))
    }

    /// Add exported patterns. A repeated or existing id, a wrong dimension or bad statistics
    /// fail the whole import (InvalidInputError / DimensionError) and leave the bank unchanged.
    fn import_(&self, py: Python<'_>, patterns: &Bound<'_, PyAny>) -> PyResult<usize> {
        guard(py, || {
            let (json, cents): (String, Bound<'_, PyAny>) =
                results(py, "_records", (patterns, self.inner.dim()))?.extract()?;
            let recs: Vec<PatternRecord> = persist::records_from_json(&json)?;
            let c = slice(&matrix("centroids", &cents)?).to_vec();
            Ok(self.inner.import(recs, &c)?)
        })
    }

    /// Write the whole bank (patterns, hierarchy, graph, statistics, buffers, id counters) to
    /// one versioned, CRC-checked file, atomically.
    fn save(&self, py: Python<'_>, path: FsPath) -> PyResult<()> {
        let bank = self.inner.clone();
        let res = py.detach(move || bank.save(path));
        guard(py, || Ok(res?))
    }

    /// Read a bank written by `save` (CheckpointError if corrupted or of another kind).
    #[staticmethod]
    fn load(py: Python<'_>, path: FsPath) -> PyResult<Self> {
        let res = py.detach(move || ReasoningBank::load(path));
        guard(py, || {
            Ok(PyReasoningBank {
                inner: Arc::new(res?),
            })
        })
    }

    /// Counters (buffered, dropped, pending, expired, ...) and memory use.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            let json = persist::to_json(&self.inner.stats())?;
            Ok(results(py, "_stats", (json,))?)
        })
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyReasoningBank>()?;
    Ok(())
}
