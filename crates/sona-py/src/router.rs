//! Binding of the FastGRNN router used alone: `sona._sona.Router`, wrapped by `sona.router.Router`.
//!
//! The router sits behind a mutex (its forward reuses activation buffers); every method validates
//! its input, then releases the GIL before taking the lock.

use numpy::{PyArray1, PyUntypedArrayMethods};
use parking_lot::Mutex;
use pyo3::prelude::*;
use sona_core::SonaError;
use sona_engine::router::Router;

use crate::args::Size;
use crate::convert::{mat2, out1, slice, vec1};
use crate::errors::{guard, BindResult};

/// The FastGRNN router of design §6 over sequences of `(steps, input_dim)` float32 rows.
#[pyclass(frozen, name = "Router", module = "sona._sona")]
pub(crate) struct PyRouter {
    inner: Mutex<Router>,
    input_dim: usize,
    n_tiers: usize,
}

fn seq_of<'py>(
    r: &PyRouter,
    seq: &Bound<'py, PyAny>,
) -> BindResult<numpy::PyReadonlyArray2<'py, f32>> {
    let m = mat2("seq", seq)?;
    if m.shape()[1] != r.input_dim {
        return Err(SonaError::Dimension {
            what: "seq".into(),
            expected: format!("{} columns", r.input_dim),
            got: format!("{} columns", m.shape()[1]),
        }
        .into());
    }
    Ok(m)
}

fn tier_of(t: i64, n: usize) -> BindResult<usize> {
    usize::try_from(t)
        .ok()
        .filter(|&t| t < n)
        .ok_or_else(|| SonaError::invalid(format!("tier must be in [0, {n}), got {t}")).into())
}

#[pymethods]
impl PyRouter {
    #[new]
    // Checked `Size`s: a negative or huge value is a ConfigError, not an OverflowError.
    #[pyo3(signature = (input_dim, n_tiers, hidden = Size(16), rank_w = Size(8), rank_u = Size(4),
                        seed = Size(0)),
           text_signature = "(input_dim, n_tiers, hidden=16, rank_w=8, rank_u=4, seed=0)")]
    fn new(
        py: Python<'_>,
        input_dim: Size,
        n_tiers: Size,
        hidden: Size,
        rank_w: Size,
        rank_u: Size,
        seed: Size,
    ) -> PyResult<Self> {
        let (input_dim, n_tiers) = (input_dim.0, n_tiers.0);
        guard(py, || {
            let r = Router::new(
                input_dim,
                n_tiers,
                hidden.0,
                rank_w.0,
                rank_u.0,
                seed.0 as u64,
            )?;
            Ok(PyRouter {
                inner: Mutex::new(r),
                input_dim,
                n_tiers,
            })
        })
    }

    #[getter]
    fn input_dim(&self) -> usize {
        self.input_dim
    }
    #[getter]
    fn n_tiers(&self) -> usize {
        self.n_tiers
    }
    #[getter]
    fn n_params(&self, py: Python<'_>) -> usize {
        py.detach(|| self.inner.lock().n_params())
    }
    #[getter]
    fn size_bytes(&self, py: Python<'_>) -> usize {
        py.detach(|| self.inner.lock().size_bytes())
    }

    fn forward<'py>(
        &self,
        py: Python<'py>,
        seq: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        guard(py, || {
            let m = seq_of(self, seq)?;
            let s = slice(&m);
            let out = py.detach(|| self.inner.lock().forward(s))?;
            Ok(out1(py, out))
        })
    }

    fn loss_and_grad<'py>(
        &self,
        py: Python<'py>,
        seq: &Bound<'py, PyAny>,
        tier: i64,
        reward: f64,
    ) -> PyResult<(f64, Bound<'py, PyArray1<f32>>)> {
        guard(py, || {
            let m = seq_of(self, seq)?;
            let t = tier_of(tier, self.n_tiers)?;
            let s = slice(&m);
            let (loss, g) = py.detach(|| self.inner.lock().loss_and_grad(s, t, reward as f32))?;
            Ok((loss, out1(py, g)))
        })
    }

    #[pyo3(signature = (seq, tier, reward, lr = 0.01))]
    fn train_step(
        &self,
        py: Python<'_>,
        seq: &Bound<'_, PyAny>,
        tier: i64,
        reward: f64,
        lr: f64,
    ) -> PyResult<f64> {
        guard(py, || {
            let m = seq_of(self, seq)?;
            let t = tier_of(tier, self.n_tiers)?;
            if !reward.is_finite() {
                return Err(
                    SonaError::invalid(format!("reward must be in [0, 1], got {reward}")).into(),
                );
            }
            let s = slice(&m);
            Ok(py.detach(|| self.inner.lock().train_step(s, t, reward as f32, lr as f32))?)
        })
    }

    fn parameters<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        let p = py.detach(|| self.inner.lock().parameters().to_vec());
        out1(py, p)
    }

    fn set_parameters(&self, py: Python<'_>, theta: &Bound<'_, PyAny>) -> PyResult<()> {
        guard(py, || {
            let v = vec1("theta", theta)?;
            let s = slice(&v);
            py.detach(|| self.inner.lock().set_parameters(s))?;
            Ok(())
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "Router(input_dim={}, n_tiers={})",
            self.input_dim, self.n_tiers
        )
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyRouter>()
}
