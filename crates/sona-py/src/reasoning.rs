//! Binding of the `sona-reasoning` ReasoningBank as `sona._sona.ReasoningBank`.
//!
//! Structured results (pattern records, verdicts, reports, stats) cross the boundary as JSON strings
//! plus float32 matrices for centroids: the typed wrapper `sona.reasoning` turns them into dataclasses.
//! That keeps this file free of hand-written dict conversions and the two sides in step through serde.
//! Integers arrive as `i64` so that a negative id or tier is a `SonaError`, not a conversion error.
//!
//! Every numpy input is copied first and the copy is what the bank validates and stores, so another
//! thread writing the array during the call (numpy releases the GIL while it writes) cannot slip
//! an unchecked value in. No lock of the bank is ever held while the GIL is released or awaited:
//! long calls release the GIL first and the bank takes its locks inside.

use std::sync::Arc;

use numpy::{PyArray1, PyArray2};
use pyo3::prelude::*;
use sona_core::types::RewardSource;
use sona_core::SonaError;
use sona_reasoning::index::{HnswParams, IndexKind, IvfParams};
use sona_reasoning::persist::{self, PatternRecord};
use sona_reasoning::{BankConfig, GraphConfig, PruneRule, ReasoningBank};

use crate::convert::{mat2, out1, out2, slice, vec1};
use crate::errors::{guard, BindResult};

fn reward(r: f64) -> BindResult<f32> {
    if !(r.is_finite() && (0.0..=1.0).contains(&r)) {
        return Err(SonaError::invalid(format!("reward must be in [0, 1], got {r}")).into());
    }
    Ok(r as f32)
}

fn tier(t: i64) -> BindResult<u8> {
    u8::try_from(t)
        .ok()
        .filter(|&t| t != u8::MAX)
        .ok_or_else(|| {
            SonaError::invalid(format!("tier must be a small non-negative int, got {t}")).into()
        })
}

fn id(kind: &'static str, i: i64) -> BindResult<u64> {
    u64::try_from(i).map_err(|_| SonaError::UnknownId { kind, id: i as u64 }.into())
}

fn count(what: &str, v: i64) -> BindResult<usize> {
    usize::try_from(v)
        .map_err(|_| SonaError::invalid(format!("{what} must be >= 0, got {v}")).into())
}

fn source(s: &str) -> BindResult<RewardSource> {
    RewardSource::parse(s).ok_or_else(|| {
        SonaError::invalid(format!(
            "reward source must be 'explicit', 'implicit' or 'judge', got {s:?}"
        ))
        .into()
    })
}

fn ts(v: Option<i64>) -> BindResult<Option<u64>> {
    v.map(|t| {
        u64::try_from(t)
            .map_err(|_| SonaError::invalid(format!("timestamps must be >= 0 ms, got {t}")).into())
    })
    .transpose()
}

type Records<'py> = (String, Bound<'py, PyArray2<f32>>);
/// `(ids, similarities)` of a search.
type Hits<'py> = (Bound<'py, PyArray1<u64>>, Bound<'py, PyArray1<f32>>);

fn records<'py>(
    py: Python<'py>,
    dim: usize,
    recs: Vec<PatternRecord>,
    cents: Vec<f32>,
) -> BindResult<Records<'py>> {
    let n = recs.len();
    Ok((persist::to_json(&recs)?, out2(py, cents, n, dim)?))
}

/// ReasoningBank: trajectories in, curated searchable patterns out. See `sona.reasoning`.
#[pyclass(frozen, name = "ReasoningBank", module = "sona._sona")]
pub(crate) struct PyReasoningBank {
    inner: Arc<ReasoningBank>,
}

/// `"flat"` (exact), `"ivf"` / `"approx"` (inverted lists) or `"hnsw"` (`ef_search` is its
/// recall/latency knob).
fn index_kind(name: &str, ef_search: Option<i64>, seed: u64) -> Result<IndexKind, SonaError> {
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
            if let Some(ef) = ef {
                p.ef_search = usize::try_from(ef)
                    .ok()
                    .filter(|&e| e > 0)
                    .ok_or_else(|| SonaError::Config(format!("ef_search must be > 0, got {ef}")))?;
            }
            Ok(IndexKind::Hnsw(p))
        }
        (other, _) => Err(SonaError::Config(format!(
            "index must be \"flat\", \"ivf\", \"hnsw\" or \"approx\", got {other:?}"
        ))),
    }
}

#[pymethods]
impl PyReasoningBank {
    #[new]
    #[pyo3(signature = (dim, n_tiers=4, *, seed=0, buffer_capacity=100_000, reservoir_capacity=10_000,
        pending_capacity=100_000, pending_ttl_ms=3_600_000, merge_threshold=0.9, merge_slack=Some(0.1), max_clusters=1024, min_cohesion=Some(0.75),
        kmeans_max_iter=8, minibatch_threshold=50_000, max_exemplars=4, default_tier=0, alpha=0.05,
        graph_max_nodes=100_000, graph_max_edges=1_000_000, eta_plus=0.2, eta_minus=0.1, w_init=0.1,
        graph_decay=0.01, w_min=1e-3, index="flat", ef_search=None))]
    fn new(
        py: Python<'_>,
        dim: i64,
        n_tiers: i64,
        seed: u64,
        buffer_capacity: i64,
        reservoir_capacity: i64,
        pending_capacity: i64,
        pending_ttl_ms: i64,
        merge_threshold: f64,
        merge_slack: Option<f64>,
        max_clusters: i64,
        min_cohesion: Option<f64>,
        kmeans_max_iter: i64,
        minibatch_threshold: i64,
        max_exemplars: i64,
        default_tier: i64,
        alpha: f64,
        graph_max_nodes: i64,
        graph_max_edges: i64,
        eta_plus: f64,
        eta_minus: f64,
        w_init: f64,
        graph_decay: f64,
        w_min: f64,
        index: &str,
        ef_search: Option<i64>,
    ) -> PyResult<Self> {
        guard(py, || {
            let cfgerr =
                |what: &str, v: i64| SonaError::Config(format!("{what} must be >= 0, got {v}"));
            let u = |what: &str, v: i64| usize::try_from(v).map_err(|_| cfgerr(what, v));
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
                if !x.is_finite() {
                    return Err(SonaError::Config(format!("{what} must be finite, got {x}")).into());
                }
            }
            let cfg = BankConfig {
                dim: u("dim", dim)?,
                n_tiers: u("n_tiers", n_tiers)?,
                seed,
                buffer_capacity: u("buffer_capacity", buffer_capacity)?,
                reservoir_capacity: u("reservoir_capacity", reservoir_capacity)?,
                pending_capacity: u("pending_capacity", pending_capacity)?,
                pending_ttl_ms: u64::try_from(pending_ttl_ms)
                    .map_err(|_| cfgerr("pending_ttl_ms", pending_ttl_ms))?,
                merge_threshold: merge_threshold as f32,
                merge_slack: merge_slack.map(|x| x as f32),
                max_clusters: u("max_clusters", max_clusters)?,
                min_cohesion: min_cohesion.map(|x| x as f32),
                kmeans_max_iter: u("kmeans_max_iter", kmeans_max_iter)?,
                minibatch_threshold: u("minibatch_threshold", minibatch_threshold)?,
                max_exemplars: u("max_exemplars", max_exemplars)?,
                default_tier: u("default_tier", default_tier)?,
                alpha,
                graph: GraphConfig {
                    max_nodes: u("graph_max_nodes", graph_max_nodes)?,
                    max_edges: u("graph_max_edges", graph_max_edges)?,
                    eta_plus: eta_plus as f32,
                    eta_minus: eta_minus as f32,
                    w_init: w_init as f32,
                    decay: graph_decay as f32,
                    w_min: w_min as f32,
                },
                index: index_kind(index, ef_search, seed)?,
            };
            Ok(PyReasoningBank {
                inner: Arc::new(ReasoningBank::new(cfg)?),
            })
        })
    }

    /// `"flat"`, `"ivf"` or `"hnsw"`.
    #[getter]
    fn index_kind(&self) -> &'static str {
        self.inner.config().index.name()
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    #[getter]
    fn n_tiers(&self) -> usize {
        self.inner.config().n_tiers
    }

    /// The configuration as JSON.
    fn config(&self, py: Python<'_>) -> PyResult<String> {
        guard(py, || Ok(persist::to_json(self.inner.config())?))
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    #[pyo3(signature = (embedding, reward=None, tier=None, source="explicit", ts_ms=None))]
    fn add_trajectory(
        &self,
        py: Python<'_>,
        embedding: &Bound<'_, PyAny>,
        reward: Option<f64>,
        tier: Option<i64>,
        source: &str,
        ts_ms: Option<i64>,
    ) -> PyResult<u64> {
        guard(py, || {
            let e = slice(&vec1("embedding", embedding)?).to_vec();
            let r = reward.map(self::reward).transpose()?;
            let t = tier.map(self::tier).transpose()?;
            let s = self::source(source)?;
            Ok(self.inner.add_trajectory(&e, r, t, s, ts(ts_ms)?)?)
        })
    }

    #[pyo3(signature = (trajectory_id, reward, source="explicit", tier=None))]
    fn set_reward(
        &self,
        py: Python<'_>,
        trajectory_id: i64,
        reward: f64,
        source: &str,
        tier: Option<i64>,
    ) -> PyResult<()> {
        guard(py, || {
            let r = self::reward(reward)?;
            let t = tier.map(self::tier).transpose()?;
            let s = self::source(source)?;
            let i = id("pending trajectory", trajectory_id)?;
            Ok(self.inner.set_reward(i, r, s, t)?)
        })
    }

    #[pyo3(signature = (now_ms=None))]
    fn expire_pending(&self, py: Python<'_>, now_ms: Option<i64>) -> PyResult<usize> {
        guard(py, || Ok(self.inner.expire_pending(ts(now_ms)?)))
    }

    /// Runs one extraction with the GIL released; returns the report as JSON.
    fn extract_patterns(&self, py: Python<'_>) -> PyResult<String> {
        let bank = self.inner.clone();
        let res = py.detach(move || bank.extract_patterns());
        guard(py, || Ok(persist::to_json(&res?)?))
    }

    fn search<'py>(
        &self,
        py: Python<'py>,
        query: &Bound<'py, PyAny>,
        k: i64,
    ) -> PyResult<Hits<'py>> {
        guard(py, || {
            let q = slice(&vec1("query", query)?).to_vec();
            let hits = self.inner.search(&q, count("k", k)?)?;
            let ids: Vec<u64> = hits.iter().map(|h| h.0).collect();
            let sims: Vec<f32> = hits.iter().map(|h| h.1).collect();
            Ok((PyArray1::from_vec(py, ids), out1(py, sims)))
        })
    }

    /// Search plus graph expansion: `(hits JSON, pattern records JSON, centroids)`.
    #[pyo3(signature = (query, k, expand=0))]
    fn search_patterns<'py>(
        &self,
        py: Python<'py>,
        query: &Bound<'py, PyAny>,
        k: i64,
        expand: i64,
    ) -> PyResult<(String, String, Bound<'py, PyArray2<f32>>)> {
        guard(py, || {
            let q = slice(&vec1("query", query)?).to_vec();
            let hits = self
                .inner
                .search_expanded(&q, count("k", k)?, count("expand", expand)?)?;
            let ids: Vec<u64> = hits.iter().map(|h| h.id).collect();
            let (recs, cents) = self.inner.records(&ids);
            let (rj, c) = records(py, self.inner.dim(), recs, cents)?;
            Ok((persist::to_json(&hits)?, rj, c))
        })
    }

    fn search_level<'py>(
        &self,
        py: Python<'py>,
        query: &Bound<'py, PyAny>,
        k: i64,
        level: i64,
    ) -> PyResult<Hits<'py>> {
        guard(py, || {
            let q = slice(&vec1("query", query)?).to_vec();
            let hits = self
                .inner
                .search_level(&q, count("k", k)?, count("level", level)?)?;
            let ids: Vec<u64> = hits.iter().map(|h| h.0).collect();
            let sims: Vec<f32> = hits.iter().map(|h| h.1).collect();
            Ok((PyArray1::from_vec(py, ids), out1(py, sims)))
        })
    }

    /// `(records JSON, centroids)` of one hierarchy level (0 = the concrete patterns).
    #[pyo3(signature = (level=0))]
    fn patterns<'py>(&self, py: Python<'py>, level: i64) -> PyResult<Records<'py>> {
        guard(py, || {
            let (recs, cents) = self.inner.level_records(count("level", level)?)?;
            records(py, self.inner.dim(), recs, cents)
        })
    }

    fn pattern<'py>(&self, py: Python<'py>, pattern_id: i64) -> PyResult<Records<'py>> {
        guard(py, || {
            let i = id("pattern", pattern_id)?;
            let (recs, cents) = self.inner.records(&[i]);
            if recs.is_empty() {
                return Err(SonaError::UnknownId {
                    kind: "pattern",
                    id: i,
                }
                .into());
            }
            records(py, self.inner.dim(), recs, cents)
        })
    }

    fn level_children(&self, py: Python<'_>, level: i64) -> PyResult<Vec<Vec<u64>>> {
        guard(py, || {
            Ok(self.inner.level_children(count("level", level)?)?)
        })
    }

    fn record_feedback(
        &self,
        py: Python<'_>,
        pattern_id: i64,
        tier: i64,
        reward: f64,
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

    fn record_usage(&self, py: Python<'_>, retrieved: Vec<i64>, used: Vec<i64>) -> PyResult<()> {
        guard(py, || {
            let r: Vec<u64> = retrieved
                .into_iter()
                .map(|x| id("pattern", x))
                .collect::<BindResult<_>>()?;
            let u: Vec<u64> = used
                .into_iter()
                .map(|x| id("pattern", x))
                .collect::<BindResult<_>>()?;
            Ok(self.inner.record_usage(&r, &u)?)
        })
    }

    fn decay_graph(&self, py: Python<'_>) -> PyResult<()> {
        guard(py, || {
            self.inner.decay_graph();
            Ok(())
        })
    }

    fn graph_edges(&self, py: Python<'_>) -> PyResult<Vec<(u64, u64, f32)>> {
        guard(py, || Ok(self.inner.graph_edges()))
    }

    fn verdicts(&self, py: Python<'_>) -> PyResult<String> {
        guard(py, || Ok(persist::to_json(&self.inner.verdicts())?))
    }

    #[pyo3(signature = (threshold=0.95))]
    fn consolidate(&self, py: Python<'_>, threshold: f64) -> PyResult<usize> {
        guard(py, || Ok(self.inner.consolidate(threshold as f32)?))
    }

    #[pyo3(signature = (min_support, min_reward, max_idle_ms, now_ms=None))]
    fn prune(
        &self,
        py: Python<'_>,
        min_support: i64,
        min_reward: f64,
        max_idle_ms: i64,
        now_ms: Option<i64>,
    ) -> PyResult<Vec<u64>> {
        guard(py, || {
            let rule = PruneRule {
                min_support: u32::try_from(min_support.max(0)).unwrap_or(u32::MAX),
                min_reward: self::reward(min_reward)?,
                max_idle_ms: ts(Some(max_idle_ms))?.unwrap_or(0),
            };
            Ok(self.inner.prune(rule, ts(now_ms)?)?)
        })
    }

    #[pyo3(signature = (branching=8, max_levels=1))]
    fn build_hierarchy(
        &self,
        py: Python<'_>,
        branching: i64,
        max_levels: i64,
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

    fn export<'py>(&self, py: Python<'py>) -> PyResult<Records<'py>> {
        guard(py, || {
            let (recs, cents) = self.inner.export();
            records(py, self.inner.dim(), recs, cents)
        })
    }

    fn import_(
        &self,
        py: Python<'_>,
        records_json: &str,
        centroids: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        guard(py, || {
            let recs: Vec<PatternRecord> = persist::records_from_json(records_json)?;
            let c = slice(&mat2("centroids", centroids)?).to_vec();
            Ok(self.inner.import(recs, &c)?)
        })
    }

    fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        let bank = self.inner.clone();
        let res = py.detach(move || bank.save(path));
        guard(py, || Ok(res?))
    }

    #[staticmethod]
    fn load(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        let res = py.detach(move || ReasoningBank::load(path));
        guard(py, || {
            Ok(PyReasoningBank {
                inner: Arc::new(res?),
            })
        })
    }

    fn stats(&self, py: Python<'_>) -> PyResult<String> {
        guard(py, || Ok(persist::to_json(&self.inner.stats())?))
    }

    /// The replay reservoir: `(ids, vectors, rewards, tiers)`; tier −1 means none was recorded.
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
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyReasoningBank>()?;
    Ok(())
}
