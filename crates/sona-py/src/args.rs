//! Argument types of the exposed classes, so the binding itself refuses the wrong kinds of value
//! with the error classes the Python API documents (no Python wrapper restates a signature):
//! a [`Size`] is an `int` or numpy integer (not `bool`; `1.5`, `"8"`, `-1`, `2**70` raise
//! `ConfigError`), a [`Real`] an `int`, `float` or numpy real (not `bool` or `str`: those raise
//! `InvalidInputError`). PyO3 adds a note naming the argument to the raised error.

use pyo3::exceptions::PyOverflowError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyFloat, PyInt, PyTuple};
use pyo3::Borrowed;
use sona_core::SonaError;

use crate::errors::to_pyerr;

/// `(numpy.integer, numpy.floating)`, imported once.
fn numpy_kinds(py: Python<'_>) -> PyResult<&Bound<'_, PyTuple>> {
    static KINDS: PyOnceLock<Py<PyTuple>> = PyOnceLock::new();
    KINDS
        .get_or_try_init(py, || {
            let np = py.import("numpy")?;
            Ok(PyTuple::new(py, [np.getattr("integer")?, np.getattr("floating")?])?.unbind())
        })
        .map(|t| t.bind(py))
}

/// The name of `obj`'s type, for messages.
pub(crate) fn kind_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

fn shown(obj: &Bound<'_, PyAny>) -> String {
    obj.repr()
        .map(|r| r.to_string_lossy().chars().take(80).collect())
        .unwrap_or_default()
}

/// A size or count: `int` or numpy integer in `[0, 2⁶⁴)`; anything else raises `ConfigError`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Size(pub usize);

impl<'a, 'py> FromPyObject<'a, 'py> for Size {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let (py, obj) = (obj.py(), obj.to_owned());
        if let Some(msg) = not_an_integer(&obj)? {
            return Err(to_pyerr(py, SonaError::Config(msg)));
        }
        match obj.extract::<u64>() {
            Ok(v) => usize::try_from(v).map(Size).map_err(|_| {
                to_pyerr(
                    py,
                    SonaError::Config(format!("{v} exceeds this platform's sizes")),
                )
            }),
            Err(e) if e.is_instance_of::<PyOverflowError>(py) => Err(to_pyerr(
                py,
                SonaError::Config(format!("must be in [0, 2**64 - 1], got {}", shown(&obj))),
            )),
            Err(e) => Err(e),
        }
    }
}

/// A real number: `int`, `float` or numpy integer/floating; anything else raises
/// `InvalidInputError` (range checks stay in the core, one place per bound).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Real(pub f64);

impl Real {
    /// As the `f32` the core stores (values beyond `f32` become ±inf, which the core refuses).
    pub(crate) fn f32(self) -> f32 {
        self.0 as f32
    }

    /// As a reward: in `[0, 1]` (checked before the `f32` rounding, so `1 + 1e-12` is refused),
    /// else `InvalidInput`.
    pub(crate) fn reward(self) -> Result<f32, SonaError> {
        let r = self.0;
        if !(r.is_finite() && (0.0..=1.0).contains(&r)) {
            return Err(SonaError::invalid(format!(
                "reward must be in [0, 1], got {r}"
            )));
        }
        Ok(r as f32)
    }
}

impl<'a, 'py> FromPyObject<'a, 'py> for Real {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let (py, obj) = (obj.py(), obj.to_owned());
        let real = !obj.is_instance_of::<PyBool>()
            && (obj.is_instance_of::<PyInt>()
                || obj.is_instance_of::<PyFloat>()
                || obj.is_instance(numpy_kinds(py)?)?);
        let invalid = |msg: String| to_pyerr(py, SonaError::invalid(msg));
        if !real {
            return Err(invalid(format!(
                "expected a real number, got {} {}",
                kind_name(&obj),
                shown(&obj)
            )));
        }
        obj.extract::<f64>()
            .map(Real)
            .map_err(|_| invalid(format!("too large: {}", shown(&obj))))
    }
}

/// An integer argument of any size: `int` or numpy integer (not `bool`); anything else raises
/// `InvalidInputError`. The caller maps it to its range (and to its error: a result count beyond
/// the stored items means "all", an id no object has issued is unknown). Values beyond `±2¹²⁷`
/// saturate (no range is that wide).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Int(pub i128);

impl Int {
    /// As the id of a `kind` of object the core issued (ids count up from 1 and stay below
    /// 2⁶³): anything outside `[0, 2⁶³)` cannot have been issued, so it is unknown.
    pub(crate) fn issued_id(self, kind: &'static str) -> Result<u64, SonaError> {
        i64::try_from(self.0)
            .ok()
            .and_then(|i| u64::try_from(i).ok())
            .ok_or(SonaError::UnknownId { kind, id: self.0 })
    }

    /// As a result count `k ≥ 1`: below raises `InvalidInputError`; above `usize` saturates.
    pub(crate) fn top_k(self) -> Result<usize, SonaError> {
        if self.0 < 1 {
            return Err(SonaError::invalid(format!(
                "k must be >= 1, got {}",
                self.0
            )));
        }
        Ok(usize::try_from(self.0).unwrap_or(usize::MAX))
    }
}

impl<'a, 'py> FromPyObject<'a, 'py> for Int {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let (py, obj) = (obj.py(), obj.to_owned());
        if let Some(msg) = not_an_integer(&obj)? {
            return Err(to_pyerr(py, SonaError::invalid(msg)));
        }
        match obj.extract::<i128>() {
            Ok(v) => Ok(Int(v)),
            Err(e) if e.is_instance_of::<PyOverflowError>(py) => {
                Ok(Int(if obj.gt(0)? { i128::MAX } else { i128::MIN }))
            }
            Err(e) => Err(e),
        }
    }
}

/// A real-valued configuration setting: as [`Real`], but the wrong kind of value raises
/// `ConfigError`, as every other constructor argument of the class does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Setting(pub f64);

impl Setting {
    /// As the `f32` the core stores.
    pub(crate) fn f32(self) -> f32 {
        self.0 as f32
    }
}

impl<'a, 'py> FromPyObject<'a, 'py> for Setting {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let py = obj.py();
        // The same check and message as `Real`'s, raised as the configuration error.
        obj.extract::<Real>()
            .map(|r| Setting(r.0))
            .map_err(|e| to_pyerr(py, SonaError::Config(e.value(py).to_string())))
    }
}

/// `None` for an `int` or numpy integer (not `bool`), else the message saying what `obj` is
/// ([`Size`] and [`Int`] raise it as their own error class).
fn not_an_integer(obj: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
    let integer = !obj.is_instance_of::<PyBool>()
        && (obj.is_instance_of::<PyInt>()
            || obj.is_instance(&numpy_kinds(obj.py())?.get_item(0)?)?);
    Ok((!integer).then(|| format!("expected an integer, got {} {}", kind_name(obj), shown(obj))))
}

/// A name or choice: a `str`; anything else raises `ConfigError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Text(pub String);

impl<'a, 'py> FromPyObject<'a, 'py> for Text {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let py = obj.py();
        match string(&obj)? {
            Ok(s) => Ok(Text(s)),
            Err(msg) => Err(to_pyerr(py, SonaError::Config(msg))),
        }
    }
}

/// The `str` `obj` holds, or the message saying what it is instead ([`Text`] and [`Choice`] raise
/// it as their own error class).
fn string(obj: &Bound<'_, PyAny>) -> PyResult<Result<String, String>> {
    Ok(match obj.cast::<pyo3::types::PyString>() {
        Ok(s) => s
            .to_str()
            .map(str::to_owned)
            .map_err(|_| format!("expected UTF-8 text, got {}", shown(obj))),
        Err(_) => Err(format!(
            "expected a str, got {} {}",
            kind_name(obj),
            shown(obj)
        )),
    })
}

/// A per-call choice (a reward source, ...): a `str`; anything else raises `InvalidInputError`,
/// as an unknown value of the right kind does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Choice(pub String);

impl<'a, 'py> FromPyObject<'a, 'py> for Choice {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let py = obj.py();
        match string(&obj)? {
            Ok(s) => Ok(Choice(s)),
            Err(msg) => Err(to_pyerr(py, SonaError::invalid(msg))),
        }
    }
}

/// A file path: `str`, `bytes` or `os.PathLike` (as `open` takes); anything else raises
/// `InvalidInputError` (a bare `TypeError` from deep inside is not a documented error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FsPath(pub std::path::PathBuf);

impl<'a, 'py> FromPyObject<'a, 'py> for FsPath {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let (py, obj) = (obj.py(), obj.to_owned());
        // `os.fsdecode` maps bytes (undecodable ones through surrogates, which the `PathBuf`
        // conversion encodes back) and path-likes to `str`, and refuses everything else.
        py.import("os")?
            .call_method1("fsdecode", (&obj,))
            .and_then(|s| s.extract::<std::path::PathBuf>())
            .map(FsPath)
            .map_err(|_| {
                to_pyerr(
                    py,
                    SonaError::invalid(format!(
                        "expected a path (str, bytes or os.PathLike), got {} {}",
                        kind_name(&obj),
                        shown(&obj)
                    )),
                )
            })
    }
}

impl std::ops::Deref for FsPath {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for FsPath {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}
