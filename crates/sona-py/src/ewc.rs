//! Binding of `sona-ewc`: `OnlineFisher`, `EwcPlusPlus`, `TaskBoundaryDetector`, `AdaptiveLambda`,
//! `GradientProjection`, registered flat in `sona._sona` and wrapped by `python/sona/ewc.py`.
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

use numpy::{PyArray1, PyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use sona_core::SonaError;
use sona_ewc::{
    AdaptiveLambda as CoreLambda, BoundaryConfig, EwcConfig, EwcPlusPlus as CoreEwc,
    GradientProjection as CoreGpm, LambdaConfig, LambdaStep, OnlineFisher as CoreFisher,
    TaskBoundaryDetector as CoreDetector,
};

use crate::convert::{detachable, mat2, out1, out2, vec1};
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
    let m = mat2(what, obj)?;
    let (rows, got) = (m.shape()[0], m.shape()[1]);
    if got != cols {
        return Err(SonaError::Dimension {
            what: what.into(),
            expected: format!("{cols} columns"),
            got: format!("{got} columns"),
        }
        .into());
    }
    let detach = always_detach || detaches(m.len());
    let data = detachable(&m, detach)?;
    Ok(with_state(py, detach, state, |s| f(s, &data, rows))?)
}

/// Online diagonal Fisher from per-sample gradients: `F ← γF + (1−γ)g²`, bias-corrected, floored.
#[pyclass(frozen, module = "sona._sona")]
pub(crate) struct OnlineFisher {
    /// Fixed at construction, so shape checks never wait for the lock.
    p: usize,
    inner: Mutex<CoreFisher>,
}

#[pymethods]
impl OnlineFisher {
    #[new]
    #[pyo3(signature = (param_count, gamma = 0.999, floor = 0.0))]
    fn new(py: Python<'_>, param_count: usize, gamma: f32, floor: f32) -> PyResult<Self> {
        guard(py, || {
            Ok(OnlineFisher {
                p: param_count,
                inner: Mutex::new(CoreFisher::new(param_count, gamma, floor)?),
            })
        })
    }

    /// Folds in one per-sample gradient.
    fn update(&self, py: Python<'_>, grad: &Bound<'_, PyAny>) -> PyResult<()> {
        guard(py, || {
            let g = vec1("grad", grad)?;
            let detach = detaches(g.len());
            let g = detachable(&g, detach)?;
            Ok(with_state(py, detach, &self.inner, |f| f.update(&g))?)
        })
    }

    /// Folds in the rows of an `n × P` matrix of per-sample gradients, in order.
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

    /// The bias-corrected, floored estimate (raises if no sample was seen).
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

/// EWC++: online Fisher of the current task plus the consolidated quadratic of finished tasks.
#[pyclass(frozen, module = "sona._sona")]
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
    #[pyo3(signature = (param_count, lambda_ = 1.0, lambda_min = 0.0, lambda_max = 1e9,
                        gamma = 0.999, floor = 0.0, decay = 1.0))]
    fn new(
        py: Python<'_>,
        param_count: usize,
        lambda_: f32,
        lambda_min: f32,
        lambda_max: f32,
        gamma: f32,
        floor: f32,
        decay: f32,
    ) -> PyResult<Self> {
        guard(py, || {
            let cfg = EwcConfig {
                lambda: lambda_,
                lambda_min,
                lambda_max,
                gamma,
                floor,
                decay,
            };
            Ok(Self::wrap(CoreEwc::new(param_count, cfg)?))
        })
    }

    /// Folds one per-sample gradient into the online Fisher.
    fn update_fisher(&self, py: Python<'_>, grad: &Bound<'_, PyAny>) -> PyResult<()> {
        guard(py, || {
            let g = vec1("grad", grad)?;
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

    /// Ends a task: folds `weight · F` anchored at `theta_star` (F defaults to the online estimate).
    #[pyo3(signature = (theta_star, fisher = None, weight = 1.0))]
    fn complete_task(
        &self,
        py: Python<'_>,
        theta_star: &Bound<'_, PyAny>,
        fisher: Option<&Bound<'_, PyAny>>,
        weight: f32,
    ) -> PyResult<()> {
        guard(py, || {
            let t = vec1("theta_star", theta_star)?;
            let f = fisher.map(|f| vec1("fisher", f)).transpose()?;
            // The fold itself is O(P) whatever the inputs' lengths.
            let detach = detaches(self.p.max(t.len()));
            let t = detachable(&t, detach)?;
            let f = f.as_ref().map(|f| detachable(f, detach)).transpose()?;
            Ok(with_state(py, detach, &self.inner, |e| {
                e.complete_task(&t, f.as_deref(), weight)
            })?)
        })
    }

    /// `λ/2 · Σ F̄ (θ − θ̄*)²`.
    fn penalty(&self, py: Python<'_>, theta: &Bound<'_, PyAny>) -> PyResult<f64> {
        guard(py, || {
            let t = vec1("theta", theta)?;
            let detach = detaches(t.len());
            let t = detachable(&t, detach)?;
            Ok(with_state(py, detach, &self.inner, |e| e.penalty(&t))?)
        })
    }

    /// `grad + λ F̄ ⊙ (θ − θ̄*)` as a new array; with `projection`, the task gradient is projected first.
    #[pyo3(signature = (theta, grad, projection = None))]
    fn apply<'py>(
        &self,
        py: Python<'py>,
        theta: &Bound<'py, PyAny>,
        grad: &Bound<'py, PyAny>,
        projection: Option<&GradientProjection>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        guard(py, || {
            let (t, g) = (vec1("theta", theta)?, vec1("grad", grad)?);
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

    /// Sets λ (must lie in `[lambda_min, lambda_max]`).
    fn set_lambda(&self, py: Python<'_>, value: f32) -> PyResult<()> {
        guard(py, || Ok(lock(&self.inner).set_lambda(value)?))
    }

    /// The consolidated Fisher `F̄` (without λ).
    fn fisher<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        self.copy_out(py, |e| e.fisher())
    }

    /// The consolidated anchor `θ̄*`.
    fn theta_star<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        self.copy_out(py, |e| e.theta_star())
    }

    /// The current task's bias-corrected online Fisher (raises if it has no samples).
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

    #[getter]
    fn task_count(&self) -> u64 {
        lock(&self.inner).task_count()
    }

    #[getter]
    fn param_count(&self) -> usize {
        self.p
    }

    #[getter]
    fn lambda_(&self) -> f32 {
        lock(&self.inner).lambda()
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

    /// Writes the whole state to `path` (SONA checkpoint, kind "ewc").
    fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        guard(py, || {
            Ok(py.detach(|| {
                // The lock is held only while the state is copied into the checkpoint, not during I/O.
                let ck = lock(&self.inner).to_checkpoint()?;
                ck.save(&path)
            })?)
        })
    }

    /// Reads a state written by `save`; a corrupted or mismatched file raises `CheckpointError`.
    #[staticmethod]
    fn load(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        guard(py, || Ok(Self::wrap(py.detach(|| CoreEwc::load(&path))?)))
    }
}

/// Two-window χ²-calibrated detector of input-distribution changes.
#[pyclass(frozen, module = "sona._sona")]
pub(crate) struct TaskBoundaryDetector {
    /// Fixed at construction, so shape checks never wait for the lock.
    dim: usize,
    inner: Mutex<CoreDetector>,
}

#[pymethods]
impl TaskBoundaryDetector {
    #[new]
    #[pyo3(signature = (dim, window = 100, reference = 200, alpha = 1e-4, consecutive = 3,
                        cooldown = 0, snapshot_every = 25, param_count = 0, components = 0))]
    fn new(
        py: Python<'_>,
        dim: usize,
        window: usize,
        reference: usize,
        alpha: f64,
        consecutive: usize,
        cooldown: usize,
        snapshot_every: usize,
        param_count: usize,
        components: usize,
    ) -> PyResult<Self> {
        guard(py, || {
            let cfg = BoundaryConfig {
                window,
                reference,
                alpha,
                consecutive,
                cooldown,
                snapshot_every,
                components,
                ..BoundaryConfig::default()
            };
            Ok(TaskBoundaryDetector {
                dim,
                inner: Mutex::new(CoreDetector::new(dim, param_count, cfg)?),
            })
        })
    }

    /// Feeds one input (and optionally the parameters before training on it); `True` at a boundary.
    #[pyo3(signature = (x, theta = None))]
    fn observe(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        theta: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        guard(py, || {
            let x = vec1("x", x)?;
            let t = theta.map(|t| vec1("theta", t)).transpose()?;
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

    /// `(sample_index, theta)` of the stable point before the last boundary, or `None`.
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

    #[getter]
    fn observed(&self) -> u64 {
        lock(&self.inner).observed()
    }

    #[getter]
    fn checks(&self) -> u64 {
        lock(&self.inner).checks()
    }

    #[getter]
    fn exceedances(&self) -> u64 {
        lock(&self.inner).exceedances()
    }

    #[getter]
    fn detections(&self) -> u64 {
        lock(&self.inner).detections()
    }

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

/// λ controller driven by probe-set forgetting and new-task progress.
#[pyclass(frozen, module = "sona._sona")]
pub(crate) struct AdaptiveLambda {
    inner: Mutex<CoreLambda>,
}

#[pymethods]
impl AdaptiveLambda {
    #[new]
    #[pyo3(signature = (initial = 1.0, lambda_min = 1e-3, lambda_max = 1e6, delta = 0.02,
                        raise_factor = 2.0, lower_factor = 0.5, stall = 0.005, target = 0.95))]
    fn new(
        py: Python<'_>,
        initial: f32,
        lambda_min: f32,
        lambda_max: f32,
        delta: f32,
        raise_factor: f32,
        lower_factor: f32,
        stall: f32,
        target: f32,
    ) -> PyResult<Self> {
        guard(py, || {
            let cfg = LambdaConfig {
                initial,
                lambda_min,
                lambda_max,
                delta,
                raise: raise_factor,
                lower: lower_factor,
                stall,
                target,
            };
            Ok(AdaptiveLambda {
                inner: Mutex::new(CoreLambda::new(cfg)?),
            })
        })
    }

    /// Reports probe accuracy and new-task quality (both in [0, 1]); returns
    /// `"raised"`, `"lowered"` or `"kept"`.
    fn update(
        &self,
        py: Python<'_>,
        probe_accuracy: f32,
        new_task_quality: f32,
    ) -> PyResult<&'static str> {
        guard(py, || {
            let step = lock(&self.inner).update(probe_accuracy, new_task_quality)?;
            Ok(match step {
                LambdaStep::Raised => "raised",
                LambdaStep::Lowered => "lowered",
                LambdaStep::Kept => "kept",
            })
        })
    }

    /// Starts a new probe maximum (call when the probe set changes).
    fn reset_probe(&self) {
        lock(&self.inner).reset_probe()
    }

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

/// Orthonormal basis of protected gradient directions (GPM).
#[pyclass(frozen, module = "sona._sona")]
pub(crate) struct GradientProjection {
    /// Fixed at construction, so shape checks never wait for the lock.
    p: usize,
    inner: Mutex<CoreGpm>,
}

#[pymethods]
impl GradientProjection {
    #[new]
    #[pyo3(signature = (param_count, max_basis))]
    fn new(py: Python<'_>, param_count: usize, max_basis: usize) -> PyResult<Self> {
        guard(py, || {
            Ok(GradientProjection {
                p: param_count,
                inner: Mutex::new(CoreGpm::new(param_count, max_basis)?),
            })
        })
    }

    /// Adds directions of `m` (`n × P`) until `threshold` of its energy is captured; returns how many.
    #[pyo3(signature = (m, threshold = 0.97))]
    fn add(&self, py: Python<'_>, m: &Bound<'_, PyAny>, threshold: f32) -> PyResult<usize> {
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
            let g = vec1("grad", grad)?;
            let detach = detaches(g.len());
            let mut out = detachable(&g, true)?.into_owned();
            with_state(py, detach, &self.inner, |p| p.project(&mut out))?;
            Ok(out1(py, out))
        })
    }

    /// The basis as a `k × P` array (orthonormal rows).
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
