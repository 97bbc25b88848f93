//! The `sona-core` kernels under their plain names, for tests, benches and power users.
//! Each returns a new array (inputs are never mutated) and validates lengths before computing.

use numpy::{PyArray1, PyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use sona_core::{kernels as k, SonaError};

use crate::convert::{mat2, out1, out2, slice, vec1};
use crate::errors::{_panic_for_tests, guard, BindResult};

fn same_len(what: &str, a: &[f32], b: &[f32]) -> BindResult<()> {
    if a.len() != b.len() {
        return Err(SonaError::len_mismatch(what, a.len(), b.len()).into());
    }
    Ok(())
}

/// Inner product of two equal-length vectors.
#[pyfunction]
fn dot(py: Python<'_>, a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<f32> {
    guard(py, || {
        let (a, b) = (vec1("a", a)?, vec1("b", b)?);
        let (a, b) = (slice(&a), slice(&b));
        same_len("b", a, b)?;
        Ok(k::dot(a, b))
    })
}

/// Squared L2 norm.
#[pyfunction]
fn norm_sq(py: Python<'_>, a: &Bound<'_, PyAny>) -> PyResult<f32> {
    guard(py, || Ok(k::norm_sq(slice(&vec1("a", a)?))))
}

/// Cosine similarity (0 when either vector is zero).
#[pyfunction]
fn cosine(py: Python<'_>, a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<f32> {
    guard(py, || {
        let (a, b) = (vec1("a", a)?, vec1("b", b)?);
        let (a, b) = (slice(&a), slice(&b));
        same_len("b", a, b)?;
        Ok(k::cosine(a, b))
    })
}

/// Unit-norm copy of `a` (a zero vector is returned unchanged).
#[pyfunction]
fn normalize<'py>(py: Python<'py>, a: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArray1<f32>>> {
    guard(py, || {
        let mut v = slice(&vec1("a", a)?).to_vec();
        k::normalize(&mut v);
        Ok(out1(py, v))
    })
}

/// `y + alpha * x` as a new array.
#[pyfunction]
fn axpy<'py>(
    py: Python<'py>,
    alpha: f32,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    guard(py, || {
        check_scalar("alpha", alpha)?;
        let (x, y) = (vec1("x", x)?, vec1("y", y)?);
        let (x, y) = (slice(&x), slice(&y));
        same_len("y", x, y)?;
        let mut out = y.to_vec();
        k::axpy(alpha, x, &mut out);
        Ok(out1(py, out))
    })
}

/// `alpha * x` as a new array.
#[pyfunction]
fn scale<'py>(
    py: Python<'py>,
    alpha: f32,
    x: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    guard(py, || {
        check_scalar("alpha", alpha)?;
        let mut out = slice(&vec1("x", x)?).to_vec();
        k::scale(alpha, &mut out);
        Ok(out1(py, out))
    })
}

/// `M @ x` for a 2-D `M`.
#[pyfunction]
fn matvec<'py>(
    py: Python<'py>,
    m: &Bound<'py, PyAny>,
    x: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    guard(py, || {
        let (m, x) = (mat2("m", m)?, vec1("x", x)?);
        let (rows, cols) = (m.shape()[0], m.shape()[1]);
        let xs = slice(&x);
        if xs.len() != cols {
            return Err(SonaError::len_mismatch("x", cols, xs.len()).into());
        }
        let mut y = vec![0.0; rows];
        k::matvec(slice(&m), rows, cols, xs, &mut y);
        Ok(out1(py, y))
    })
}

/// `M.T @ x` for a 2-D `M`.
#[pyfunction]
fn matvec_t<'py>(
    py: Python<'py>,
    m: &Bound<'py, PyAny>,
    x: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    guard(py, || {
        let (m, x) = (mat2("m", m)?, vec1("x", x)?);
        let (rows, cols) = (m.shape()[0], m.shape()[1]);
        let xs = slice(&x);
        if xs.len() != rows {
            return Err(SonaError::len_mismatch("x", rows, xs.len()).into());
        }
        let mut y = vec![0.0; cols];
        k::matvec_t(slice(&m), rows, cols, xs, &mut y);
        Ok(out1(py, y))
    })
}

/// `M + alpha * U.T @ V` as a new array, with `U: r × rows` and `V: r × cols` (rank-r update).
#[pyfunction]
fn rank_update<'py>(
    py: Python<'py>,
    m: &Bound<'py, PyAny>,
    alpha: f32,
    u: &Bound<'py, PyAny>,
    v: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    guard(py, || {
        check_scalar("alpha", alpha)?;
        let (m, u, v) = (mat2("m", m)?, mat2("u", u)?, mat2("v", v)?);
        let (rows, cols) = (m.shape()[0], m.shape()[1]);
        let r = u.shape()[0];
        if u.shape()[1] != rows || v.shape()[0] != r || v.shape()[1] != cols {
            return Err(SonaError::Dimension {
                what: "u, v".into(),
                expected: format!("u: r x {rows}, v: r x {cols}"),
                got: format!("u: {:?}, v: {:?}", u.shape(), v.shape()),
            }
            .into());
        }
        let mut out = slice(&m).to_vec();
        k::rank_update(&mut out, rows, cols, alpha, slice(&u), slice(&v), r);
        out2(py, out, rows, cols)
    })
}

/// `M @ q` (one score per row), the scan behind exact search.
#[pyfunction]
fn batch_dot<'py>(
    py: Python<'py>,
    m: &Bound<'py, PyAny>,
    q: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    matvec(py, m, q)
}

/// `(indices, scores)` as returned by [`top_k`].
type TopK<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<f32>>);

/// Indices and values of the `k` largest scores, best first (`k` is capped at the length).
#[pyfunction]
fn top_k<'py>(py: Python<'py>, scores: &Bound<'py, PyAny>, k: usize) -> PyResult<TopK<'py>> {
    guard(py, || {
        let top = k::top_k(slice(&vec1("scores", scores)?), k);
        let idx: Vec<i64> = top.iter().map(|&(i, _)| i as i64).collect();
        let val: Vec<f32> = top.iter().map(|&(_, s)| s).collect();
        Ok((PyArray1::from_vec(py, idx), out1(py, val)))
    })
}

/// The kernel body chosen on this CPU: `"avx2+fma"`, `"portable"` or `"neon (portable)"`.
#[pyfunction]
fn simd_level() -> &'static str {
    k::simd_level().name()
}

fn check_scalar(what: &str, x: f32) -> BindResult<()> {
    if x.is_finite() {
        Ok(())
    } else {
        Err(SonaError::NonFinite {
            what: what.into(),
            index: 0,
        }
        .into())
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(dot, m)?)?;
    m.add_function(wrap_pyfunction!(norm_sq, m)?)?;
    m.add_function(wrap_pyfunction!(cosine, m)?)?;
    m.add_function(wrap_pyfunction!(normalize, m)?)?;
    m.add_function(wrap_pyfunction!(axpy, m)?)?;
    m.add_function(wrap_pyfunction!(scale, m)?)?;
    m.add_function(wrap_pyfunction!(matvec, m)?)?;
    m.add_function(wrap_pyfunction!(matvec_t, m)?)?;
    m.add_function(wrap_pyfunction!(rank_update, m)?)?;
    m.add_function(wrap_pyfunction!(batch_dot, m)?)?;
    m.add_function(wrap_pyfunction!(top_k, m)?)?;
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    Ok(())
}
