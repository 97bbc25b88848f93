//! The `SonaError` exception hierarchy and the panic guard.
//!
//! The classes are created once at import with Python's `type()` so that some can have two bases
//! (`DimensionError` is both a `SonaError` and a `ValueError`), which `create_exception!` cannot do.
//!
//! ```text
//! SonaError(Exception)
//! ├── DimensionError(SonaError, ValueError)     wrong length or shape
//! ├── InvalidInputError(SonaError, ValueError)  out of range, wrong dtype/layout
//! │   └── NonFiniteError                        NaN or Inf
//! ├── ConfigError(SonaError, ValueError)        configuration out of range
//! ├── UnknownIdError(SonaError, KeyError)       unknown or reused id / token
//! ├── CheckpointError(SonaError)                corrupted, truncated or mismatched file
//! ├── NumericalError(SonaError)                 an update that would make weights non-finite
//! └── InternalError(SonaError)                  a bug; includes Rust panics caught at the boundary
//! ```

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::{PyException, PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use pyo3::PyTypeInfo;
use sona_core::SonaError;

struct ErrorTypes {
    base: Py<PyType>,
    dimension: Py<PyType>,
    invalid: Py<PyType>,
    non_finite: Py<PyType>,
    config: Py<PyType>,
    unknown_id: Py<PyType>,
    checkpoint: Py<PyType>,
    numerical: Py<PyType>,
    internal: Py<PyType>,
}

static TYPES: PyOnceLock<ErrorTypes> = PyOnceLock::new();

fn make(
    py: Python<'_>,
    name: &str,
    bases: &[&Bound<'_, PyType>],
    doc: &str,
) -> PyResult<Py<PyType>> {
    let ns = PyDict::new(py);
    ns.set_item("__module__", "sona")?;
    ns.set_item("__doc__", doc)?;
    let bases = PyTuple::new(py, bases)?;
    let ty = py
        .import("builtins")?
        .getattr("type")?
        .call1((name, bases, ns))?;
    Ok(ty.cast_into::<PyType>()?.unbind())
}

fn build(py: Python<'_>) -> PyResult<ErrorTypes> {
    let exc = PyException::type_object(py);
    let value = PyValueError::type_object(py);
    let key = PyKeyError::type_object(py);
    let base = make(
        py,
        "SonaError",
        &[&exc],
        "Base class of every error SONA raises.",
    )?;
    let b = base.bind(py).clone();
    let invalid = make(
        py,
        "InvalidInputError",
        &[&b, &value],
        "An argument is out of range or of the wrong dtype/layout.",
    )?;
    let inv = invalid.bind(py).clone();
    Ok(ErrorTypes {
        dimension: make(
            py,
            "DimensionError",
            &[&b, &value],
            "A vector or matrix has the wrong length or shape.",
        )?,
        non_finite: make(
            py,
            "NonFiniteError",
            &[&inv],
            "An input contains NaN or Inf.",
        )?,
        config: make(
            py,
            "ConfigError",
            &[&b, &value],
            "A configuration value is out of range.",
        )?,
        unknown_id: make(
            py,
            "UnknownIdError",
            &[&b, &key],
            "An id or token is unknown or was already used.",
        )?,
        checkpoint: make(
            py,
            "CheckpointError",
            &[&b],
            "A saved file is corrupted, truncated or mismatched.",
        )?,
        numerical: make(
            py,
            "NumericalError",
            &[&b],
            "An update was refused because it would make weights non-finite.",
        )?,
        internal: make(
            py,
            "InternalError",
            &[&b],
            "An internal bug (including a Rust panic caught at the boundary).",
        )?,
        invalid,
        base,
    })
}

fn types(py: Python<'_>) -> &ErrorTypes {
    TYPES.get_or_init(py, || build(py).expect("creating SONA exception classes"))
}

/// The Python exception for a core error.
pub(crate) fn to_pyerr(py: Python<'_>, e: SonaError) -> PyErr {
    let t = types(py);
    let ty = match &e {
        SonaError::Dimension { .. } => &t.dimension,
        SonaError::NonFinite { .. } => &t.non_finite,
        SonaError::InvalidInput(_) => &t.invalid,
        SonaError::Config(_) => &t.config,
        SonaError::UnknownId { .. } => &t.unknown_id,
        SonaError::Checkpoint(_) => &t.checkpoint,
        SonaError::Numerical(_) => &t.numerical,
        SonaError::Internal(_) => &t.internal,
    };
    PyErr::from_type(ty.bind(py).clone(), e.to_string())
}

/// Runs a binding body: core errors become their Python class, panics become `InternalError`.
/// Python errors raised inside (`PyErr`) pass through unchanged.
pub(crate) fn guard<T>(py: Python<'_>, f: impl FnOnce() -> Result<T, BindError>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(BindError::Core(e))) => Err(to_pyerr(py, e)),
        Ok(Err(BindError::Py(e))) => Err(e),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(to_pyerr(
                py,
                SonaError::Internal(format!("Rust panic: {msg}")),
            ))
        }
    }
}

/// Either a core error or an already-built Python error; `?` converts both.
pub(crate) enum BindError {
    Core(SonaError),
    Py(PyErr),
}

impl From<SonaError> for BindError {
    fn from(e: SonaError) -> Self {
        BindError::Core(e)
    }
}

impl From<PyErr> for BindError {
    fn from(e: PyErr) -> Self {
        BindError::Py(e)
    }
}

pub(crate) type BindResult<T> = Result<T, BindError>;

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let t = types(py);
    for (name, ty) in [
        ("SonaError", &t.base),
        ("DimensionError", &t.dimension),
        ("InvalidInputError", &t.invalid),
        ("NonFiniteError", &t.non_finite),
        ("ConfigError", &t.config),
        ("UnknownIdError", &t.unknown_id),
        ("CheckpointError", &t.checkpoint),
        ("NumericalError", &t.numerical),
        ("InternalError", &t.internal),
    ] {
        m.add(name, ty.bind(py))?;
    }
    Ok(())
}

/// Deliberately panics inside the guard: lets the tests prove a panic surfaces as `InternalError`.
#[pyfunction]
pub(crate) fn _panic_for_tests(py: Python<'_>) -> PyResult<()> {
    guard(py, || -> BindResult<()> { panic!("deliberate test panic") })
}
