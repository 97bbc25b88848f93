//! Binding of `sona-ewc`: `OnlineFisher`, `EwcPlusPlus`, `TaskBoundaryDetector`, `AdaptiveLambda`,
//! `GradientProjection`, registered in `sona._sona` and re-exported unchanged by `sona.ewc` (their
//! `__module__`). This file is the Python API: the docstrings are the doc comments below, the
//! defaults are the core configs' `Default`s, and arguments take any array-like
//! ([`crate::convert::vector`]) and checked sizes and reals ([`crate::args`]).
//!
//! Every method takes array-likes (converted once to C-contiguous float32) and returns numpy
//! float32. Wrong lengths raise `DimensionError`, NaN/Inf `NonFiniteError`, out-of-range settings
//! `ConfigError`, corrupted files `CheckpointError`, and values whose result `float32` cannot hold
//! (gradients beyond `1e19`, detector inputs beyond `1e15`, an overflowing fold or penalty)
//! `NumericalError`; a failing call leaves the object unchanged, and no stored value is ever NaN
//! or Inf.
//!
//! Each class holds its core object behind a `Mutex` (the classes are frozen). Every method validates
//! through the core before mutating, so a failing call leaves the state unchanged.
//!
//! Lock discipline (no deadlock between the GIL and an object's lock): a lock is never held while
//! waiting for the GIL. Calls whose cost grows with the input (at least [`DETACH_AT`] floats, and
//! file I/O) release the GIL *first* and take the lock inside ([`with_state`]); their numpy inputs
//! are copied out before the GIL is released ([`detachable`]). Small calls keep the GIL and hold the
//! lock only for the computation; results become Python objects after the lock is dropped.

use std::sync::{Mutex, MutexGuard};

use numpy::{PyArray1, PyArray2, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use sona_core::SonaError;
use sona_ewc::gpm::DEFAULT_THRESHOLD;
use sona_ewc::{
    AdaptiveLambda as CoreLambda, BoundaryConfig, EwcConfig, EwcPlusPlus as CoreEwc,
    GradientProjection as CoreGpm, LambdaConfig, LambdaStep, OnlineFisher as CoreFisher,
    TaskBoundaryDetector as CoreDetector,
};

use crate::args::{FsPath, Real, Size};
use crate::convert::{detachable, matrix, out1, out2, vector};
use crate::errors::{guard, BindResult};

/// Work on at least this many floats runs with the GIL released.
const DETACH_AT: usize = 1 << 16;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // State is only mutated after validation, so a panic cannot leave it half-updated: recover.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether work over `floats` values releases the GIL.
fn detaches(floats: usize) -> bool {
    floats >= DETACH_AT
}

/// Runs `f` on the locked state. With `detach`, the GIL is released *before* the lock is taken, so
/// another thread holding the GIL and waiting for this lock never blocks a thread that holds the
/// lock and waits for the GIL.
fn with_state<T: Send, R: Send>(
    py: Python<'_>,
    detach: bool,
    m: &Mutex<T>,
    f: impl FnOnce(&mut T) -> R + Send,
) -> R {
    if detach {
        py.detach(|| f(&mut lock(m)))
    } else {
        f(&mut lock(m))
    }
}

/// A checked `n × cols` matrix argument (C-contiguous float32, finite) and its `n`.
fn matrix_of<'py>(
    what: &str,
    obj: &Bound<'py, PyAny>,
    cols: usize,
) -> BindResult<(PyReadonlyArray2<'py, f32>, usize)> {
    let m = matrix(what, obj)?;
    let (rows, got) = (m.shape()[0], m.shape()[1]);
    if got != cols {
        return Err(SonaError::Dimension {
            what: what.into(),
            expected: format!("{cols} columns"),
            got: format!("{got} columns"),
        }
        .into());
    }
    Ok((m, rows))
}

/// Runs `f(state, rows, n_rows)` on a checked `n × cols` matrix argument (C-contiguous float32,
/// finite): with the GIL released and the matrix copied when it has at least [`DETACH_AT`] floats
/// or `always_detach`, else in place with the GIL held (see [`with_state`]).
fn with_matrix<T: Send, R: Send>(
    py: Python<'_>,
    state: &Mutex<T>,
    (what, obj, cols): (&str, &Bound<'_, PyAny>, usize),
    always_detach: bool,
    f: impl FnOnce(&mut T, &[f32], usize) -> Result<R, SonaError> + Send,
) -> BindResult<R> {
    let (m, rows) = matrix_of(what, obj, cols)?;
    let detach = always_detach || detaches(m.len());
    let data = detachable(&m, detach)?;
    Ok(with_state(py, detach, state, |s| f(s, &data, rows))?)
}

/// Running diagonal Fisher over `param_count` parameters from **per-sample** gradients,
/// `F ← γF + (1−γ)g²` (bias-corrected for its zero start, floored).
///
/// Args:
///     param_count: number of parameters `P`.
///     gamma: EMA decay per sample in `[0, 1)`; `0.999` averages over about the last 1000 samples.
///     floor: smallest value `estimate` returns (`≥ 0`).
#[pyclass(frozen, module = "sona.ewc")]
pub(crate) struct OnlineFisher {
    /// Fixed at construction, so shape checks never wait for the lock.
    p: usize,
    inner: Mutex<CoreFisher>,
}

#[pymethods]
impl OnlineFisher {
    #[new]
    #[pyo3(signature = (param_count, gamma = Real(EwcConfig::default().gamma.into()),
                        floor = Real(EwcConfig::default().floor.into())))]
    fn new(py: Python<'_>, param_count: Size, gamma: Real, floor: Real) -> PyResult<Self> {
        guard(py, || {
            Ok(OnlineFisher {
                p: param_count.0,
                inner: Mutex::new(CoreFisher::new(param_count.0, gamma.f32(), floor.f32())?),
            })
        })
    }

    /// Folds in one per-sample gradient (length `P`); `|g| > 1e19` raises NumericalError (its
    /// square would overflow the float32 Fisher).
    fn update(&self, py: Python<'_>, grad: &Bound<'_, PyAny>) -> PyResult<()> {
        guard(py, || {
            let g = vector("grad", grad)?;
            let detach = detaches(g.len());
            let g = detachable(&g, detach)?;
            Ok(with_state(py, detach, &self.inner, |f| f.update(&g))?)
        })
    }

    /// Folds in an `n × P` matrix of per-sample gradients, row by row (never their mean).
    fn update_batch(&self, py: Python<'_>, grads: &Bound<'_, PyAny>) -> PyResult<()> {
        guard(py, || {
            with_matrix(
                py,
                &self.inner,
                ("grads", grads, self.p),
                false,
                |s, data, rows| s.update_batch(data, rows),
            )
        })
    }

    /// `max(F / (1 − γⁿ), floor)`; raises InvalidInputError before the first sample.
    fn estimate<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<f32>>> {
        guard(py, || {
            let e = with_state(py, detaches(self.p), &self.inner, |f| f.estimate())?;
            Ok(out1(py, e))
        })
    }

    /// Forgets every sample.
    fn reset(&self, py: Python<'_>) {
        with_state(py, detaches(self.p), &self.inner, |f| f.reset())
    }

    /// Per-sample gradients folded in since creation or the last reset.
    #[getter]
    fn samples(&self) -> u64 {
        lock(&self.inner).samples()
    }

    #[getter]
    fn param_count(&self) -> usize {
        self.p
    }

    #[getter]
    fn gamma(&self) -> f32 {
        lock(&self.inner).gamma()
    }

    #[getter]
    fn floor(&self) -> f32 {
        lock(&self.inner).floor()
    }
}

/// EWC++ over `param_count` parameters: the online Fisher of the current task plus every finished
/// task folded into one quadratic in O(P), `penalty(θ) = λ/2 Σ F̄ (θ − θ̄*)²` and
/// `apply(θ, grad) = grad + λ F̄ ⊙ (θ − θ̄*)`. λ is applied once; per-task weights and the decay of
/// old tasks live in `F̄`.
///
/// Typical loop: during a task, feed per-sample gradients to `update_fisher_batch` and pass each
/// training gradient through `apply`; at the end of the task call `complete_task` with the
/// parameters to protect.
///
/// Args:
///     param_count: number of protected parameters `P`.
///     lambda_: penalty strength λ (applied once, in `penalty` and `apply`).
///     lambda_min, lambda_max: bounds every λ must respect (set, adapted or loaded).
///     gamma: EMA decay of the online Fisher per sample.
///     floor: smallest Fisher value a task contributes.
///     decay: factor in `(0, 1]` applied to the earlier tasks each time a task is completed.
#[pyclass(frozen, module = "sona.ewc")]
pub(crate) struct EwcPlusPlus {
    /// Fixed at construction, so shape checks never wait for the lock.
    p: usize,
    inner: Mutex<CoreEwc>,
}

impl EwcPlusPlus {
    fn wrap(e: CoreEwc) -> Self {
        EwcPlusPlus {
            p: e.param_count(),
            inner: Mutex::new(e),
        }
    }

    /// A copy of a `P`-vector of the state, taken under the lock; the numpy array is made after.
    fn copy_out<'py>(
        &self,
        py: Python<'py>,
        f: impl FnOnce(&CoreEwc) -> &[f32] + Send,
    ) -> Bound<'py, PyArray1<f32>> {
        let v = with_state(py, detaches(self.p), &self.inner, |e| f(e).to_vec());
        out1(py, v)
    }
}

#[pymethods]
impl EwcPlusPlus {
    #[new]
    #[pyo3(signature = (param_count, lambda_ = Real(EwcConfig::default().lambda.into()), *,
                        lambda_min = Real(EwcConfig::default().lambda_min.into()),
                        lambda_max = Real(EwcConfig::default().lambda_max.into()),
                        gamma = Real(EwcConfig::default().gamma.into()),
                        floor = Real(EwcConfig::default().floor.into()),
                        decay = Real(EwcConfig::default().decay.into())))]
    #[allow(clippy::too_many_arguments)] // the Python constructor's keywords
    fn new(
        py: Python<'_>,
        param_count: Size,
        lambda_: Real,
        lambda_min: Real,
        lambda_max: Real,
        gamma: Real,
        floor: Real,
        decay: Real,
    ) -> PyResult<Self> {
        guard(py, || {
            let cfg = EwcConfig {
                lambda: lambda_.f32(),
                lambda_min: lambda_min.f32(),
                lambda_max: lambda_max.f32(),
                gamma: gamma.f32(),
                floor: floor.f32(),
                decay: decay.f32(),
            };
            Ok(Self::wrap(CoreEwc::new(param_count.0, cfg)?))
        })
    }

    /// Folds one per-sample gradient of the current task into the online Fisher.
    fn update_fisher(&self, py: Python<'_>, grad: &Bound<'_, PyAny>) -> PyResult<()> {
        guard(py, || {
            let g = vector("grad", grad)?;
            let detach = detaches(g.len());
            let g = detachable(&g, detach)?;
            Ok(with_state(py, detach, &self.inner, |e| {
                e.update_fisher(&g)
            })?)
        })
    }

    /// Folds an `n × P` matrix of per-sample gradients into the online Fisher.
    fn update_fisher_batch(&self, py: Python<'_>, grads: &Bound<'_, PyAny>) -> PyResult<()> {
        guard(py, || {
            with_matrix(
                py,
                &self.inner,
                ("grads", grads, self.p),
                false,
                |s, data, rows| s.update_fisher_batch(data, rows),
            )
        })
    }

    /// Ends a task: adds `½ weight Σ F (θ − θ*)²` to the consolidated quadratic.
    ///
    /// `fisher` defaults to the online estimate, which raises InvalidInputError if it has no
    /// samples (a task is never "protected" by an empty Fisher). Either way the online estimate is
    /// reset afterwards, so the next task starts its own.
    #[pyo3(signature = (theta_star, fisher = None, weight = Real(1.0)))]
    fn complete_task(
        &self,
        py: Python<'_>,
        theta_star: &Bound<'_, PyAny>,
        fisher: Option<&Bound<'_, PyAny>>,
        weight: Real,
    ) -> PyResult<()> {
        let weight = weight.f32();
        guard(py, || {
            let t = vector("theta_star", theta_star)?;
            let f = fisher.map(|f| vector("fisher", f)).transpose()?;
            // The fold itself is O(P) whatever the inputs' lengths.
            let detach = detaches(self.p.max(t.len()));
            let t = detachable(&t, detach)?;
            let f = f.as_ref().map(|f| detachable(f, detach)).transpose()?;
            Ok(with_state(py, detach, &self.inner, |e| {
                e.complete_task(&t, f.as_deref(), weight)
            })?)
        })
    }

    /// `λ/2 · Σ F̄ (θ − θ̄*)²` (0 before the first completed task).
    fn penalty(&self, py: Python<'_>, theta: &Bound<'_, PyAny>) -> PyResult<f64> {
        guard(py, || {
            let t = vector("theta", theta)?;
            let detach = detaches(t.len());
            let t = detachable(&t, detach)?;
            Ok(with_state(py, detach, &self.inner, |e| e.penalty(&t))?)
        })
    }

    /// `grad + λ F̄ ⊙ (θ − θ̄*)` as a new array.
    ///
    /// With `projection`, the task gradient is projected off the protected directions first and
    /// the EWC term is added after, so the projection never cancels the pull toward `θ̄*`.
    #[pyo3(signature = (theta, grad, projection = None))]
    fn apply<'py>(
        &self,
        py: Python<'py>,
        theta: &Bound<'py, PyAny>,
        grad: &Bound<'py, PyAny>,
        projection: Option<&GradientProjection>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        guard(py, || {
            let (t, g) = (vector("theta", theta)?, vector("grad", grad)?);
            let detach = detaches(t.len().max(g.len()));
            let (t, g) = (detachable(&t, detach)?, detachable(&g, detach)?);
            let run = || -> Result<Vec<f32>, SonaError> {
                let e = lock(&self.inner);
                match projection {
                    None => {
                        // Single fused pass writing straight into the result.
                        let mut out = vec![0.0f32; g.len()];
                        e.apply_into(&t, &g, &mut out)?;
                        Ok(out)
                    }
                    Some(p) => {
                        // Lock order is always EWC then projection (nothing locks the reverse).
                        let p = lock(&p.inner);
                        let mut out = g.to_vec();
                        e.apply_projected(&t, &mut out, &p)?;
                        Ok(out)
                    }
                }
            };
            let out = if detach { py.detach(run) } else { run() }?;
            Ok(out1(py, out))
        })
    }

    /// Penalty strength λ; setting a value outside `[lambda_min, lambda_max]` raises
    /// ConfigError.
    #[getter]
    fn lambda_(&self) -> f32 {
        lock(&self.inner).lambda()
    }

    #[setter]
    fn set_lambda_(&self, py: Python<'_>, value: Real) -> PyResult<()> {
        guard(py, || Ok(lock(&self.inner).set_lambda(value.f32())?))
    }

    /// The consolidated Fisher `F̄` (without λ), a copy.
    #[getter]
    fn fisher<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        self.copy_out(py, |e| e.fisher())
    }

    /// The consolidated anchor `θ̄*`, a copy.
    #[getter]
    fn theta_star<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        self.copy_out(py, |e| e.theta_star())
    }

    /// The current task's online Fisher estimate (raises before its first sample).
    fn online_fisher<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<f32>>> {
        guard(py, || {
            let v = with_state(py, detaches(self.p), &self.inner, |e| e.online().estimate())?;
            Ok(out1(py, v))
        })
    }

    #[getter]
    fn online_samples(&self) -> u64 {
        lock(&self.inner).online().samples()
    }

    /// Tasks folded into the quadratic.
    #[getter]
    fn task_count(&self) -> u64 {
        lock(&self.inner).task_count()
    }

    #[getter]
    fn param_count(&self) -> usize {
        self.p
    }

    #[getter]
    fn lambda_min(&self) -> f32 {
        lock(&self.inner).config().lambda_min
    }

    #[getter]
    fn lambda_max(&self) -> f32 {
        lock(&self.inner).config().lambda_max
    }

    #[getter]
    fn gamma(&self) -> f32 {
        lock(&self.inner).config().gamma
    }

    #[getter]
    fn floor(&self) -> f32 {
        lock(&self.inner).config().floor
    }

    #[getter]
    fn decay(&self) -> f32 {
        lock(&self.inner).config().decay
    }

    /// Writes the whole state (atomic, checksummed SONA checkpoint, kind "ewc").
    fn save(&self, py: Python<'_>, path: FsPath) -> PyResult<()> {
        guard(py, || {
            Ok(py.detach(|| {
                // The lock is held only while the state is copied into the checkpoint, not during I/O.
                let ck = lock(&self.inner).to_checkpoint()?;
                ck.save(&path)
            })?)
        })
    }

    /// Reads a state written by `save`; corrupted or mismatched files raise CheckpointError.
    #[staticmethod]
    fn load(py: Python<'_>, path: FsPath) -> PyResult<Self> {
        guard(py, || Ok(Self::wrap(py.detach(|| CoreEwc::load(&path))?)))
    }
}

/// Detects changes of the input distribution with non-overlapping windows.
///
/// After each sample, once both windows are full, `S = Σ_j (μ_r−μ_b)² / (σ²_b (1/n_r + 1/n_b))` is
/// compared with the upper-`alpha` quantile of its null distribution (a sum of squared Student t's,
/// because σ²_b is estimated); `consecutive` hits declare a boundary, then the windows refill from
/// the new data and checks pause for `cooldown` samples.
///
/// Pass the current parameters to `observe` (`param_count > 0`) and, on a boundary,
/// `stable_snapshot` returns the parameters from before the change.
///
/// Args:
///     dim: input dimension.
///     window: recent window size `n_r`.
///     reference: reference window size `n_b` (≥ 10).
///     alpha: nominal false-positive probability of one check.
///     consecutive: `K` consecutive hits needed.
///     cooldown: samples without checks after a boundary.
///     snapshot_every: parameter snapshot period (samples).
///     param_count: parameter length for snapshots (0 disables them).
///     components: `k > 0` tests the top-`k` principal components of the reference window
///         (refitted after every boundary) instead of the raw coordinates. Use it for real
///         embeddings or images: the raw-coordinate null assumes independent coordinates and
///         fires constantly on correlated ones (measured on digits: 10 % of checks).
#[pyclass(frozen, module = "sona.ewc")]
pub(crate) struct TaskBoundaryDetector {
    /// Fixed at construction, so shape checks never wait for the lock.
    dim: usize,
    inner: Mutex<CoreDetector>,
}

#[pymethods]
impl TaskBoundaryDetector {
    #[new]
    #[pyo3(signature = (dim, window = Size(BoundaryConfig::default().window),
                        reference = Size(BoundaryConfig::default().reference), *,
                        alpha = Real(BoundaryConfig::default().alpha),
                        consecutive = Size(BoundaryConfig::default().consecutive),
                        cooldown = Size(BoundaryConfig::default().cooldown),
                        snapshot_every = Size(BoundaryConfig::default().snapshot_every),
                        param_count = Size(0),
                        components = Size(BoundaryConfig::default().components)))]
    #[allow(clippy::too_many_arguments)] // the Python constructor's keywords
    fn new(
        py: Python<'_>,
        dim: Size,
        window: Size,
        reference: Size,
        alpha: Real,
        consecutive: Size,
        cooldown: Size,
        snapshot_every: Size,
        param_count: Size,
        components: Size,
    ) -> PyResult<Self> {
        guard(py, || {
            let cfg = BoundaryConfig {
                window: window.0,
                reference: reference.0,
                alpha: alpha.0,
                consecutive: consecutive.0,
                cooldown: cooldown.0,
                snapshot_every: snapshot_every.0,
                components: components.0,
                ..BoundaryConfig::default()
            };
            Ok(TaskBoundaryDetector {
                dim: dim.0,
                inner: Mutex::new(CoreDetector::new(dim.0, param_count.0, cfg)?),
            })
        })
    }

    /// Feeds one input (and optionally the parameters before training on it); True at a
    /// boundary.
    #[pyo3(signature = (x, theta = None))]
    fn observe(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        theta: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        guard(py, || {
            let x = vector("x", x)?;
            let t = theta.map(|t| vector("theta", t)).transpose()?;
            // A PCA fit can run inside any observe; it is bounded by the window sizes, so the
            // threshold on input size is only a proxy, as for every other call.
            let detach = detaches(x.len() + t.as_ref().map_or(0, |t| t.len()));
            let x = detachable(&x, detach)?;
            let t = t.as_ref().map(|t| detachable(t, detach)).transpose()?;
            Ok(with_state(py, detach, &self.inner, |d| {
                d.observe(&x, t.as_deref())
            })?)
        })
    }

    /// Feeds the rows of an `n × dim` matrix; returns the sample indices of declared boundaries.
    fn observe_batch(&self, py: Python<'_>, xs: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
        guard(py, || {
            with_matrix(
                py,
                &self.inner,
                ("xs", xs, self.dim),
                false,
                |s, data, rows| s.observe_batch(data, rows),
            )
        })
    }

    /// `(sample_index, theta)` from before the last boundary, or None.
    fn stable_snapshot<'py>(&self, py: Python<'py>) -> Option<(u64, Bound<'py, PyArray1<f32>>)> {
        let snap = lock(&self.inner)
            .stable_snapshot()
            .map(|(i, t)| (i, t.to_vec()));
        snap.map(|(i, t)| (i, out1(py, t)))
    }

    #[getter]
    fn dim(&self) -> usize {
        self.dim
    }

    /// Samples observed.
    #[getter]
    fn observed(&self) -> u64 {
        lock(&self.inner).observed()
    }

    /// Tests run (one per sample while both windows are full and not cooling down).
    #[getter]
    fn checks(&self) -> u64 {
        lock(&self.inner).checks()
    }

    /// Checks whose statistic exceeded the threshold (before the consecutive rule).
    #[getter]
    fn exceedances(&self) -> u64 {
        lock(&self.inner).exceedances()
    }

    /// Boundaries declared.
    #[getter]
    fn detections(&self) -> u64 {
        lock(&self.inner).detections()
    }

    /// Sample index of the last declared boundary.
    #[getter]
    fn last_boundary(&self) -> Option<u64> {
        lock(&self.inner).last_boundary()
    }

    /// `(statistic, threshold)` of the last check (threshold is NaN before the first check).
    #[getter]
    fn last_check(&self) -> (f64, f64) {
        lock(&self.inner).last_check()
    }
}

/// λ controller: raise on probe-set forgetting, lower when the new task stalls below target.
///
/// Call `update` after each evaluation with the probe accuracy (old tasks) and the current task's
/// quality, then copy `value` into `EwcPlusPlus.lambda_`.
#[pyclass(frozen, module = "sona.ewc")]
pub(crate) struct AdaptiveLambda {
    inner: Mutex<CoreLambda>,
}

#[pymethods]
impl AdaptiveLambda {
    #[new]
    #[pyo3(signature = (initial = Real(LambdaConfig::default().initial.into()),
                        lambda_min = Real(LambdaConfig::default().lambda_min.into()),
                        lambda_max = Real(LambdaConfig::default().lambda_max.into()), *,
                        delta = Real(LambdaConfig::default().delta.into()),
                        raise_factor = Real(LambdaConfig::default().raise.into()),
                        lower_factor = Real(LambdaConfig::default().lower.into()),
                        stall = Real(LambdaConfig::default().stall.into()),
                        target = Real(LambdaConfig::default().target.into())))]
    #[allow(clippy::too_many_arguments)] // the Python constructor's keywords
    fn new(
        py: Python<'_>,
        initial: Real,
        lambda_min: Real,
        lambda_max: Real,
        delta: Real,
        raise_factor: Real,
        lower_factor: Real,
        stall: Real,
        target: Real,
    ) -> PyResult<Self> {
        guard(py, || {
            let cfg = LambdaConfig {
                initial: initial.f32(),
                lambda_min: lambda_min.f32(),
                lambda_max: lambda_max.f32(),
                delta: delta.f32(),
                raise: raise_factor.f32(),
                lower: lower_factor.f32(),
                stall: stall.f32(),
                target: target.f32(),
            };
            Ok(AdaptiveLambda {
                inner: Mutex::new(CoreLambda::new(cfg)?),
            })
        })
    }

    /// Reports both values (each in [0, 1]) and returns what λ did: "raised", "lowered" or
    /// "kept".
    fn update(
        &self,
        py: Python<'_>,
        probe_accuracy: Real,
        new_task_quality: Real,
    ) -> PyResult<&'static str> {
        guard(py, || {
            let step = lock(&self.inner).update(probe_accuracy.f32(), new_task_quality.f32())?;
            Ok(match step {
                LambdaStep::Raised => "raised",
                LambdaStep::Lowered => "lowered",
                LambdaStep::Kept => "kept",
            })
        })
    }

    /// Starts a new running maximum (the probe set changed).
    fn reset_probe(&self) {
        lock(&self.inner).reset_probe()
    }

    /// The current λ.
    #[getter]
    fn value(&self) -> f32 {
        lock(&self.inner).lambda()
    }

    #[getter]
    fn probe_max(&self) -> Option<f32> {
        lock(&self.inner).probe_max()
    }

    #[getter]
    fn lambda_min(&self) -> f32 {
        lock(&self.inner).config().lambda_min
    }

    #[getter]
    fn lambda_max(&self) -> f32 {
        lock(&self.inner).config().lambda_max
    }
}

/// Gradient projection memory: an orthonormal basis of directions to keep gradients out of.
#[pyclass(frozen, module = "sona.ewc")]
pub(crate) struct GradientProjection {
    /// Fixed at construction, so shape checks never wait for the lock.
    p: usize,
    inner: Mutex<CoreGpm>,
}

#[pymethods]
impl GradientProjection {
    #[new]
    #[pyo3(signature = (param_count, max_basis))]
    fn new(py: Python<'_>, param_count: Size, max_basis: Size) -> PyResult<Self> {
        guard(py, || {
            Ok(GradientProjection {
                p: param_count.0,
                inner: Mutex::new(CoreGpm::new(param_count.0, max_basis.0)?),
            })
        })
    }

    /// Adds directions of `m` (`n × P`, n ≤ 512) until `threshold` of its energy is spanned;
    /// returns how many.
    #[pyo3(signature = (m, threshold = Real(DEFAULT_THRESHOLD.into())))]
    fn add(&self, py: Python<'_>, m: &Bound<'_, PyAny>, threshold: Real) -> PyResult<usize> {
        let threshold = threshold.f32();
        guard(py, || {
            with_matrix(
                py,
                &self.inner,
                ("m", m, self.p),
                // An eigen-decomposition of the n × n Gram matrix: always worth releasing the GIL.
                true,
                |s, data, rows| s.add(data, rows, threshold),
            )
        })
    }

    /// `grad − V Vᵀ grad` as a new array.
    fn project<'py>(
        &self,
        py: Python<'py>,
        grad: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        guard(py, || {
            let g = vector("grad", grad)?;
            let detach = detaches(g.len());
            let mut out = detachable(&g, true)?.into_owned();
            with_state(py, detach, &self.inner, |p| p.project(&mut out))?;
            Ok(out1(py, out))
        })
    }

    /// `G − G Vᵀ V` for a block `G` (`n × P`) as a new array: every row projected. The layer
    /// form of GPM: with the basis spanning a layer's inputs, a weight gradient projected so no
    /// longer moves the layer's output on them.
    fn project_rows<'py>(
        &self,
        py: Python<'py>,
        block: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        guard(py, || {
            let (m, rows) = matrix_of("block", block, self.p)?;
            let detach = detaches(m.len());
            let mut out = detachable(&m, true)?.into_owned();
            with_state(py, detach, &self.inner, |p| p.project_rows(&mut out))?;
            out2(py, out, rows, self.p)
        })
    }

    /// The `k × P` orthonormal basis, a copy.
    #[getter]
    fn basis<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        guard(py, || {
            let (v, k) = with_state(py, detaches(self.p), &self.inner, |g| {
                (g.basis().to_vec(), g.basis_size())
            });
            out2(py, v, k, self.p)
        })
    }

    #[getter]
    fn basis_size(&self) -> usize {
        lock(&self.inner).basis_size()
    }

    #[getter]
    fn param_count(&self) -> usize {
        self.p
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<OnlineFisher>()?;
    m.add_class::<EwcPlusPlus>()?;
    m.add_class::<TaskBoundaryDetector>()?;
    m.add_class::<AdaptiveLambda>()?;
    m.add_class::<GradientProjection>()?;
    Ok(())
}
