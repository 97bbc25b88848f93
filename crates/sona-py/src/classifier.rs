//! Binding of the router used as a classifier (the continual-learning benchmark):
//! `sona._sona.RouterClassifier`.
//!
//! Inputs are validated and copied while the GIL is held; the GIL is released before the lock.

use numpy::{PyArray1, PyUntypedArrayMethods};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use sona_core::SonaError;
use sona_engine::classifier::{ClassifierConfig, DreamConfig, RouterClassifier};

use crate::convert::{mat2, slice};
use crate::errors::{guard, BindResult};

/// SONA's FastGRNN router trained as a classifier with Adam, optional EWC++, replay and dreams.
#[pyclass(frozen, name = "RouterClassifier", module = "sona._sona")]
pub(crate) struct PyRouterClassifier {
    inner: Mutex<RouterClassifier>,
    input_dim: usize,
    n_classes: usize,
}

impl PyRouterClassifier {
    /// A copy of `xs` (`(n, input_dim)` float32, finite).
    fn xs(&self, xs: &Bound<'_, PyAny>) -> BindResult<Vec<f32>> {
        let m = mat2("xs", xs)?;
        if m.shape()[1] != self.input_dim {
            return Err(SonaError::Dimension {
                what: "xs".into(),
                expected: format!("{} columns", self.input_dim),
                got: format!("{} columns", m.shape()[1]),
            }
            .into());
        }
        Ok(slice(&m).to_vec())
    }
}

#[pymethods]
impl PyRouterClassifier {
    #[new]
    #[pyo3(signature = (input_dim, n_classes, hidden = 128, rank_w = 32, rank_u = 4, lr = 2e-3,
        ewc_lambda = 0.0, ewc_gamma = 0.995, fisher_batch = 8, replay_capacity = 0,
        replay_batch = 32, seed = 0, replay_balanced = false, gpm_threshold = 0.0,
        gpm_examples = 256))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        input_dim: usize,
        n_classes: usize,
        hidden: usize,
        rank_w: usize,
        rank_u: usize,
        lr: f64,
        ewc_lambda: f64,
        ewc_gamma: f64,
        fisher_batch: usize,
        replay_capacity: usize,
        replay_batch: usize,
        seed: u64,
        replay_balanced: bool,
        gpm_threshold: f64,
        gpm_examples: usize,
    ) -> PyResult<Self> {
        guard(py, || {
            let cfg = ClassifierConfig {
                input: input_dim,
                classes: n_classes,
                hidden,
                rank_w,
                rank_u,
                lr: lr as f32,
                ewc_lambda: ewc_lambda as f32,
                ewc_gamma: ewc_gamma as f32,
                fisher_batch,
                replay_capacity,
                replay_batch,
                replay_balanced,
                gpm_threshold: gpm_threshold as f32,
                gpm_examples,
                seed,
            };
            Ok(PyRouterClassifier {
                inner: Mutex::new(RouterClassifier::new(cfg)?),
                input_dim,
                n_classes,
            })
        })
    }

    #[getter]
    fn input_dim(&self) -> usize {
        self.input_dim
    }
    #[getter]
    fn n_classes(&self) -> usize {
        self.n_classes
    }
    #[getter]
    fn n_params(&self, py: Python<'_>) -> usize {
        py.detach(|| self.inner.lock().n_params())
    }
    #[getter]
    fn stored(&self, py: Python<'_>) -> usize {
        py.detach(|| self.inner.lock().stored())
    }

    #[pyo3(signature = (xs, ys, epochs = 1, batch = 32))]
    fn fit(
        &self,
        py: Python<'_>,
        xs: &Bound<'_, PyAny>,
        ys: Vec<i64>,
        epochs: usize,
        batch: usize,
    ) -> PyResult<f64> {
        guard(py, || {
            let x = self.xs(xs)?;
            Ok(py.detach(|| self.inner.lock().fit(&x, &ys, epochs, batch))?)
        })
    }

    fn predict<'py>(
        &self,
        py: Python<'py>,
        xs: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        guard(py, || {
            let x = self.xs(xs)?;
            let p = py.detach(|| self.inner.lock().predict(&x))?;
            Ok(PyArray1::from_vec(py, p))
        })
    }

    fn accuracy(&self, py: Python<'_>, xs: &Bound<'_, PyAny>, ys: Vec<i64>) -> PyResult<f64> {
        guard(py, || {
            let x = self.xs(xs)?;
            Ok(py.detach(|| self.inner.lock().accuracy(&x, &ys))?)
        })
    }

    fn remember(&self, py: Python<'_>, xs: &Bound<'_, PyAny>, ys: Vec<i64>) -> PyResult<()> {
        guard(py, || {
            let x = self.xs(xs)?;
            Ok(py.detach(|| self.inner.lock().remember(&x, &ys))?)
        })
    }

    #[pyo3(signature = (xs = None))]
    fn end_task(&self, py: Python<'_>, xs: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        guard(py, || {
            let x = xs.map(|a| self.xs(a)).transpose()?;
            Ok(py.detach(|| self.inner.lock().end_task(x.as_deref()))?)
        })
    }

    /// `(tasks protected, [x, p, h] basis sizes)` of GPM, or `None` when it is off.
    #[getter]
    fn gpm_bases(&self, py: Python<'_>) -> Option<(usize, [usize; 3])> {
        py.detach(|| self.inner.lock().gpm_bases())
    }

    #[pyo3(signature = (steps = 50, batch = 32, synthetic = 256, synthetic_batch = 16,
        distill_weight = 1.0, tolerance = 0.02))]
    #[allow(clippy::too_many_arguments)]
    fn dream<'py>(
        &self,
        py: Python<'py>,
        steps: usize,
        batch: usize,
        synthetic: usize,
        synthetic_batch: usize,
        distill_weight: f64,
        tolerance: f64,
    ) -> PyResult<Bound<'py, PyDict>> {
        guard(py, || {
            let cfg = DreamConfig {
                steps,
                batch,
                synthetic_batch,
                distill_weight: distill_weight as f32,
                tolerance,
                budget_ms: 60_000,
                ..DreamConfig::default()
            };
            let r = py.detach(|| self.inner.lock().dream(&cfg, synthetic))?;
            let d = PyDict::new(py);
            d.set_item("steps", r.steps)?;
            d.set_item("replayed", r.replayed)?;
            d.set_item("synthesized", r.synthesized)?;
            d.set_item("distill_loss", r.distill_loss)?;
            d.set_item("probe_before", r.probe_before)?;
            d.set_item("probe_after", r.probe_after)?;
            d.set_item("accepted", r.accepted)?;
            Ok(d)
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "RouterClassifier(input_dim={}, n_classes={})",
            self.input_dim, self.n_classes
        )
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyRouterClassifier>()
}
