//! Binding of the SONA engine (`sona-engine`): `Engine`, `Decision`, `LearningResult`,
//! `DeepLearningResult` and the config
//! helpers `engine_config_defaults` / `engine_config_validate`. The typed layer is `sona.engine`.
//!
//! Every method releases the GIL before touching the engine (whose locks are all Rust-side and
//! never held while calling back into Python), so threads calling `process` / `feedback` run in
//! parallel and a loop-B cycle never blocks the interpreter. Structured results (metrics, stats)
//! cross as JSON and are parsed with Python's `json` module.

use numpy::{PyArray1, PyArray2, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use sona_core::SonaError;
use sona_engine::engine::{Decision as RDecision, Engine as REngine, FeedbackSource};
use sona_engine::{DeepLearningResult as RDeep, EngineConfig, LearningResult as RResult};

use crate::args::{Choice, FsPath, Int, Real, Text};
use crate::convert::{mat2, out1, out2, slice, vec1};
use crate::errors::{guard, BindResult};

fn json_to_py<'py>(py: Python<'py>, s: &str) -> BindResult<Bound<'py, PyDict>> {
    let v = py.import("json")?.call_method1("loads", (s,))?;
    Ok(v.cast_into::<PyDict>().map_err(PyErr::from)?)
}

/// Every `EngineConfig` field and its default, as a JSON object.
#[pyfunction]
fn engine_config_defaults(py: Python<'_>) -> PyResult<String> {
    guard(py, || {
        let mut c = EngineConfig::default();
        c.fill_defaults();
        Ok(c.to_json())
    })
}

/// Parses a config JSON object (unknown keys refused, missing keys defaulted), validates every range
/// and returns the normalized JSON. Raises `ConfigError`.
#[pyfunction]
fn engine_config_validate(py: Python<'_>, config_json: &str) -> PyResult<String> {
    guard(py, || Ok(EngineConfig::from_json(config_json)?.to_json()))
}

/// One routing decision.
#[pyclass(frozen, name = "Decision", module = "sona._sona")]
pub(crate) struct PyDecision {
    inner: RDecision,
}

#[pymethods]
impl PyDecision {
    #[getter]
    fn trajectory_id(&self) -> u64 {
        self.inner.trajectory_id
    }
    #[getter]
    fn tier(&self) -> usize {
        self.inner.tier
    }
    #[getter]
    fn propensity(&self) -> f32 {
        self.inner.propensity
    }
    #[getter]
    fn utilities<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        out1(py, self.inner.utilities.clone())
    }
    #[getter]
    fn predicted<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        out1(py, self.inner.predicted.clone())
    }
    #[getter]
    fn patterns(&self) -> Vec<u64> {
        self.inner.patterns.clone()
    }
    #[getter]
    fn explored(&self) -> bool {
        self.inner.explored
    }
    #[getter]
    fn generation(&self) -> u64 {
        self.inner.generation
    }
    fn __repr__(&self) -> String {
        let d = &self.inner;
        format!(
            "Decision(trajectory_id={}, tier={}, propensity={:.4}, explored={}, patterns={:?})",
            d.trajectory_id,
            d.tier,
            d.propensity,
            if d.explored { "True" } else { "False" },
            d.patterns
        )
    }
}

/// What one loop-B cycle did.
#[pyclass(frozen, name = "LearningResult", module = "sona._sona")]
pub(crate) struct PyLearningResult {
    inner: RResult,
}

#[pymethods]
impl PyLearningResult {
    #[getter]
    fn cycle(&self) -> u64 {
        self.inner.cycle
    }
    #[getter]
    fn elapsed_ms(&self) -> f64 {
        self.inner.elapsed_ms
    }
    #[getter]
    fn replayed(&self) -> usize {
        self.inner.replayed
    }
    #[getter]
    fn steps(&self) -> usize {
        self.inner.steps
    }
    #[getter]
    fn loss_before(&self) -> f64 {
        self.inner.loss_before
    }
    #[getter]
    fn loss_after(&self) -> f64 {
        self.inner.loss_after
    }
    #[getter]
    fn merged(&self) -> bool {
        self.inner.merged
    }
    #[getter]
    fn merge_discarded(&self) -> f64 {
        self.inner.merge_discarded
    }
    #[getter]
    fn patterns_added(&self) -> usize {
        self.inner.patterns_added
    }
    #[getter]
    fn patterns_merged(&self) -> usize {
        self.inner.patterns_merged
    }
    #[getter]
    fn patterns_total(&self) -> usize {
        self.inner.patterns_total
    }
    #[getter]
    fn boundary_detected(&self) -> bool {
        self.inner.boundary_detected
    }
    #[getter]
    fn ewc_tasks(&self) -> u64 {
        self.inner.ewc_tasks
    }
    #[getter]
    fn ewc_penalty(&self) -> f64 {
        self.inner.ewc_penalty
    }
    #[getter]
    fn generation(&self) -> u64 {
        self.inner.generation
    }
    /// Every field as a dict.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guard(py, || json_to_py(py, &self.inner.to_json()))
    }
    fn __repr__(&self) -> String {
        let r = &self.inner;
        format!(
            "LearningResult(cycle={}, elapsed_ms={:.2}, replayed={}, loss_before={:.4}, loss_after={:.4}, \
             merged={}, patterns_added={}, patterns_total={}, boundary_detected={})",
            r.cycle,
            r.elapsed_ms,
            r.replayed,
            r.loss_before,
            r.loss_after,
            if r.merged { "True" } else { "False" },
            r.patterns_added,
            r.patterns_total,
            if r.boundary_detected { "True" } else { "False" }
        )
    }
}

/// What one loop-C ("dream") cycle did: replay and pseudo-rehearsal counts, whether the probe
/// accepted the result (`accepted`; `false` means rolled back, the served weights unchanged) with
/// its scores, the memory maintenance (patterns merged/pruned, hierarchy, edges) and Φ.
#[pyclass(frozen, name = "DeepLearningResult", module = "sona._sona")]
pub(crate) struct PyDeepLearningResult {
    inner: RDeep,
}

#[pymethods]
impl PyDeepLearningResult {
    #[getter]
    fn cycle(&self) -> u64 {
        self.inner.cycle
    }
    #[getter]
    fn elapsed_ms(&self) -> f64 {
        self.inner.elapsed_ms
    }
    #[getter]
    fn replayed(&self) -> usize {
        self.inner.replayed
    }
    #[getter]
    fn synthesized(&self) -> usize {
        self.inner.synthesized
    }
    #[getter]
    fn steps(&self) -> usize {
        self.inner.steps
    }
    #[getter]
    fn accepted(&self) -> bool {
        self.inner.accepted
    }
    #[getter]
    fn probe_before(&self) -> f64 {
        self.inner.probe_before
    }
    #[getter]
    fn probe_after(&self) -> f64 {
        self.inner.probe_after
    }
    #[getter]
    fn probe_size(&self) -> usize {
        self.inner.probe_size
    }
    #[getter]
    fn out_of_budget(&self) -> bool {
        self.inner.out_of_budget
    }
    #[getter]
    fn patterns_merged(&self) -> usize {
        self.inner.patterns_merged
    }
    #[getter]
    fn patterns_pruned(&self) -> usize {
        self.inner.patterns_pruned
    }
    #[getter]
    fn edges_before(&self) -> usize {
        self.inner.edges_before
    }
    #[getter]
    fn edges_after(&self) -> usize {
        self.inner.edges_after
    }
    #[getter]
    fn creative_proposed(&self) -> usize {
        self.inner.creative_proposed
    }
    #[getter]
    fn edges_added(&self) -> usize {
        self.inner.edges_added
    }
    #[getter]
    fn edges_removed(&self) -> usize {
        self.inner.edges_removed
    }
    #[getter]
    fn phi(&self) -> f64 {
        self.inner.phi
    }
    #[getter]
    fn generation(&self) -> u64 {
        self.inner.generation
    }
    /// Patterns per level of the hierarchy built after the cycle (level 1 upward).
    #[getter]
    fn hierarchy_levels(&self) -> Vec<usize> {
        self.inner.hierarchy_levels.clone()
    }
    /// Every field as a dict.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guard(py, || json_to_py(py, &self.inner.to_json()))
    }
    fn __repr__(&self) -> String {
        let r = &self.inner;
        let py_bool = |b: bool| if b { "True" } else { "False" };
        format!(
            "DeepLearningResult(cycle={}, elapsed_ms={:.2}, replayed={}, synthesized={}, accepted={}, \
             probe_before={:.4}, probe_after={:.4}, patterns_merged={}, patterns_pruned={}, \
             edges_added={}, edges_removed={}, phi={:.4})",
            r.cycle,
            r.elapsed_ms,
            r.replayed,
            r.synthesized,
            py_bool(r.accepted),
            r.probe_before,
            r.probe_after,
            r.patterns_merged,
            r.patterns_pruned,
            r.edges_added,
            r.edges_removed,
            r.phi
        )
    }
}

/// The SONA engine: `process` routes, `feedback` learns (loop A), `background_learn` runs loop B.
#[pyclass(frozen, name = "Engine", module = "sona._sona")]
pub(crate) struct PyEngine {
    inner: REngine,
}

fn ids_u64(obj: &Bound<'_, PyAny>) -> BindResult<Vec<u64>> {
    let arr = obj
        .cast::<PyArray1<u64>>()
        .map_err(|_| SonaError::invalid("trajectory_ids: expected a 1-D uint64 numpy array"))?;
    Ok(arr
        .to_vec()
        .map_err(|e| SonaError::invalid(format!("trajectory_ids: {e}")))?)
}

#[pymethods]
impl PyEngine {
    #[new]
    fn new(py: Python<'_>, config_json: Text) -> PyResult<Self> {
        guard(py, || {
            let cfg = EngineConfig::from_json(&config_json.0)?;
            let inner = py.detach(|| REngine::new(cfg))?;
            Ok(PyEngine { inner })
        })
    }

    /// Loads a checkpoint directory written by `save` and replays the interaction log written
    /// after it. A mismatched or corrupted checkpoint is a `CheckpointError`, unless `fallback`
    /// is set and `path + ".prev"` (the previous checkpoint) loads.
    #[staticmethod]
    #[pyo3(signature = (path, fallback = false))]
    fn load(py: Python<'_>, path: FsPath, fallback: bool) -> PyResult<Self> {
        guard(py, || {
            let inner = py.detach(|| REngine::load_with(&path, fallback))?;
            Ok(PyEngine { inner })
        })
    }

    #[getter]
    fn config_json(&self) -> String {
        self.inner.config().to_json()
    }
    #[getter]
    fn dim(&self) -> usize {
        self.inner.config().dim
    }
    #[getter]
    fn n_tiers(&self) -> usize {
        self.inner.config().n_tiers
    }
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    #[pyo3(signature = (x, tenant = None))]
    fn process(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        tenant: Option<Choice>,
    ) -> PyResult<PyDecision> {
        guard(py, || {
            let v = vec1("x", x)?;
            let s = slice(&v);
            let d = py.detach(|| match &tenant {
                None => self.inner.process(s),
                Some(t) => self.inner.process_tenant(s, &t.0),
            })?;
            Ok(PyDecision { inner: d })
        })
    }

    /// Number of tenant micro-LoRAs held.
    #[getter]
    fn tenant_count(&self, py: Python<'_>) -> usize {
        py.detach(|| self.inner.tenant_count())
    }

    /// The tenant's micro-LoRA as `(a, bt)` (`rank × dim` each), or None.
    #[allow(clippy::type_complexity)]
    fn tenant_adapter<'py>(
        &self,
        py: Python<'py>,
        tenant: Choice,
    ) -> PyResult<Option<(Bound<'py, PyArray2<f32>>, Bound<'py, PyArray2<f32>>)>> {
        guard(py, || {
            let Some(w) = py.detach(|| self.inner.tenant_micro(&tenant.0)) else {
                return Ok(None);
            };
            let a = out2(py, w.a.clone(), w.rank, w.d_in)?;
            let bt = out2(py, w.bt.clone(), w.rank, w.d_out)?;
            Ok(Some((a, bt)))
        })
    }

    fn process_batch(&self, py: Python<'_>, xs: &Bound<'_, PyAny>) -> PyResult<Vec<PyDecision>> {
        guard(py, || {
            let m = mat2("xs", xs)?;
            let n = m.shape()[0];
            let cols = m.shape()[1];
            if cols != self.inner.config().dim {
                return Err(SonaError::Dimension {
                    what: "xs".into(),
                    expected: format!("{} columns", self.inner.config().dim),
                    got: format!("{cols} columns"),
                }
                .into());
            }
            let s = slice(&m);
            let ds = py.detach(|| self.inner.process_batch(s, n))?;
            Ok(ds.into_iter().map(|inner| PyDecision { inner }).collect())
        })
    }

    #[pyo3(signature = (trajectory_id, reward, source = Choice("explicit".into())),
           text_signature = "($self, trajectory_id, reward, source='explicit')")]
    fn feedback(
        &self,
        py: Python<'_>,
        trajectory_id: Int,
        reward: Real,
        source: Choice,
    ) -> PyResult<()> {
        guard(py, || {
            let src = FeedbackSource::parse(&source.0)?;
            let id = trajectory_id.issued_id("trajectory")?;
            let r = reward.reward()?;
            py.detach(|| self.inner.feedback(id, r, src))?;
            Ok(())
        })
    }

    #[pyo3(signature = (trajectory_ids, rewards, source = Choice("explicit".into())),
           text_signature = "($self, trajectory_ids, rewards, source='explicit')")]
    fn feedback_batch(
        &self,
        py: Python<'_>,
        trajectory_ids: &Bound<'_, PyAny>,
        rewards: &Bound<'_, PyAny>,
        source: Choice,
    ) -> PyResult<()> {
        guard(py, || {
            let src = FeedbackSource::parse(&source.0)?;
            let ids = ids_u64(trajectory_ids)?;
            let arr = rewards
                .cast::<PyArray1<f32>>()
                .map_err(|_| SonaError::invalid("rewards: expected a 1-D float32 numpy array"))?;
            let rs = arr
                .to_vec()
                .map_err(|e| SonaError::invalid(format!("rewards: {e}")))?;
            py.detach(|| self.inner.feedback_batch(&ids, &rs, src))?;
            Ok(())
        })
    }

    /// Adds patterns with the given centroids (`(n, dim)`) and no arm statistics; returns their ids.
    fn import_patterns(&self, py: Python<'_>, centroids: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
        guard(py, || {
            let m = mat2("centroids", centroids)?;
            let n = m.shape()[0];
            if m.shape()[1] != self.inner.config().dim {
                return Err(SonaError::Dimension {
                    what: "centroids".into(),
                    expected: format!("{} columns", self.inner.config().dim),
                    got: format!("{} columns", m.shape()[1]),
                }
                .into());
            }
            let s = slice(&m);
            Ok(py.detach(|| self.inner.import_patterns(s, n))?)
        })
    }

    fn background_learn(&self, py: Python<'_>) -> PyResult<PyLearningResult> {
        guard(py, || {
            let r = py.detach(|| self.inner.background_learn())?;
            Ok(PyLearningResult { inner: r })
        })
    }

    /// One deep ("dream") cycle and its report (see `sona_engine::loop_c`).
    fn deep_learn(&self, py: Python<'_>) -> PyResult<PyDeepLearningResult> {
        guard(py, || {
            let inner = py.detach(|| self.inner.deep_learn())?;
            Ok(PyDeepLearningResult { inner })
        })
    }

    /// Per window of `metrics_window` feedbacks: mean reward, mean cost, mean utility
    /// (`reward − cost_weight·cost`), tier shares, and an estimated regret against the best fixed
    /// tier: the IPS estimate of each tier's mean utility from the logged propensities,
    /// `V̂_k = (1/n) Σ 1[a_i = k] u_i / p_i`, minus the realized mean utility. Keys: `window`,
    /// `windows` (finished), `current` (partial), `overall`, and the series `regret`, `mean_reward`,
    /// `mean_cost`, `mean_utility`.
    fn improvement_metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guard(py, || {
            let s = py.detach(|| self.inner.improvement_metrics());
            json_to_py(py, &s)
        })
    }

    /// Counters and sizes: processed, feedbacks, pending, expired, evicted, patterns, loop_b_runs,
    /// generation, replay, memory_bytes, ...
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guard(py, || {
            let s = py.detach(|| self.inner.stats());
            json_to_py(py, &s)
        })
    }

    fn save(&self, py: Python<'_>, path: FsPath) -> PyResult<()> {
        guard(py, || {
            py.detach(|| self.inner.save(&path))?;
            Ok(())
        })
    }

    /// Waits until every record handed to the interaction log is committed.
    fn flush_log(&self, py: Python<'_>) -> PyResult<()> {
        guard(py, || {
            py.detach(|| self.inner.flush_log())?;
            Ok(())
        })
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        guard(py, || {
            py.detach(|| self.inner.close());
            Ok(())
        })
    }

    fn __repr__(&self) -> String {
        let c = self.inner.config();
        format!(
            "Engine(dim={}, n_tiers={}, mode={:?}, closed={})",
            c.dim,
            c.n_tiers,
            c.learning_mode,
            if self.inner.is_closed() {
                "True"
            } else {
                "False"
            }
        )
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(engine_config_defaults, m)?)?;
    m.add_function(wrap_pyfunction!(engine_config_validate, m)?)?;
    m.add_class::<PyEngine>()?;
    m.add_class::<PyDecision>()?;
    m.add_class::<PyLearningResult>()?;
    m.add_class::<PyDeepLearningResult>()?;
    Ok(())
}
