//! numpy ⇄ slices without copies.
//!
//! [`vector`] and [`matrix`] accept any array-like and convert it once (classes exposed directly,
//! such as `sona.ewc`'s). [`vec1`] and [`mat2`] take only what follows: inputs must be C-contiguous `float32` numpy arrays of the right rank; anything else raises
//! `InvalidInputError` (dtype/layout) or `DimensionError` (rank), naming the argument. The Python layer
//! (`sona._validate`) converts float64 or strided input before calling in, so only direct users of
//! `sona._sona` see these errors. Finite-ness is checked here too, before any state is touched.

use std::borrow::Cow;

use numpy::{
    PyArray1, PyArray2, PyArrayDescrMethods, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2,
    PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use sona_core::{validate, SonaError};

use crate::errors::BindResult;

fn describe(obj: &Bound<'_, PyAny>) -> String {
    match obj.cast::<PyUntypedArray>() {
        Ok(a) => format!("a {}-D array of dtype {}", a.ndim(), a.dtype()),
        Err(_) => format!(
            "an object of type {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "?".into())
        ),
    }
}

fn wrong(what: &str, want_ndim: usize, obj: &Bound<'_, PyAny>) -> SonaError {
    if let Ok(a) = obj.cast::<PyUntypedArray>() {
        if a.ndim() != want_ndim {
            return SonaError::Dimension {
                what: what.to_string(),
                expected: format!("a {want_ndim}-D array"),
                got: format!("{}-D with shape {:?}", a.ndim(), a.shape()),
            };
        }
    }
    SonaError::invalid(format!(
        "{what}: expected a C-contiguous float32 numpy array, got {} \
         (convert with numpy.ascontiguousarray(x, dtype=numpy.float32), or call through the `sona` package)",
        describe(obj)
    ))
}

/// `obj` as a C-contiguous float32 numpy array: itself when it already is one, else
/// `numpy.ascontiguousarray(obj, dtype=numpy.float32)` (lists, float64, strided views). A failed
/// conversion or a non-numeric array raises `InvalidInputError`.
fn as_f32<'py>(what: &str, obj: &Bound<'py, PyAny>) -> BindResult<Bound<'py, PyAny>> {
    let py = obj.py();
    if let Ok(a) = obj.cast::<PyUntypedArray>() {
        let dtype = a.dtype();
        if a.is_c_contiguous() && dtype.is_equiv_to(&numpy::dtype::<f32>(py)) {
            return Ok(obj.clone());
        }
        if !b"fiub".contains(&dtype.kind()) {
            return Err(SonaError::invalid(format!(
                "{what}: expected a numeric array, got dtype {dtype}"
            ))
            .into());
        }
    }
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("dtype", numpy::dtype::<f32>(py))?;
    py.import("numpy")?
        .call_method("ascontiguousarray", (obj,), Some(&kwargs))
        .map_err(|e| {
            SonaError::invalid(format!("{what}: cannot convert to a float32 array ({e})")).into()
        })
}

/// [`vec1`] of any array-like (converted as by [`as_f32`]): wrong rank raises `DimensionError`.
pub(crate) fn vector<'py>(
    what: &str,
    obj: &Bound<'py, PyAny>,
) -> BindResult<PyReadonlyArray1<'py, f32>> {
    vec1(what, &as_f32(what, obj)?)
}

/// [`mat2`] of any array-like (converted as by [`as_f32`]): wrong rank raises `DimensionError`.
pub(crate) fn matrix<'py>(
    what: &str,
    obj: &Bound<'py, PyAny>,
) -> BindResult<PyReadonlyArray2<'py, f32>> {
    mat2(what, &as_f32(what, obj)?)
}

/// A read-only 1-D float32 view; finite-ness is checked.
pub(crate) fn vec1<'py>(
    what: &str,
    obj: &Bound<'py, PyAny>,
) -> BindResult<PyReadonlyArray1<'py, f32>> {
    let arr = obj
        .cast::<PyArray1<f32>>()
        .map_err(|_| wrong(what, 1, obj))?;
    let ro = arr
        .try_readonly()
        .map_err(|e| SonaError::invalid(format!("{what}: {e}")))?;
    let s = ro.as_slice().map_err(|_| wrong(what, 1, obj))?;
    validate::check_finite(what, s)?;
    Ok(ro)
}

/// A read-only 2-D float32 view (C order); finite-ness is checked.
pub(crate) fn mat2<'py>(
    what: &str,
    obj: &Bound<'py, PyAny>,
) -> BindResult<PyReadonlyArray2<'py, f32>> {
    let arr = obj
        .cast::<PyArray2<f32>>()
        .map_err(|_| wrong(what, 2, obj))?;
    // `as_slice` accepts Fortran order too, whose memory is column-major: only C order is a
    // row-major matrix.
    if !arr.is_c_contiguous() {
        return Err(wrong(what, 2, obj).into());
    }
    let ro = arr
        .try_readonly()
        .map_err(|e| SonaError::invalid(format!("{what}: {e}")))?;
    let s = ro.as_slice().map_err(|_| wrong(what, 2, obj))?;
    validate::check_finite(what, s)?;
    Ok(ro)
}

/// The contiguous slice of a view returned by [`vec1`] or [`mat2`] (contiguity was checked there).
pub(crate) fn slice<'a, D: ndarray::Dimension>(
    ro: &'a numpy::PyReadonlyArray<'_, f32, D>,
) -> &'a [f32] {
    ro.as_slice().expect("contiguity checked on conversion")
}

/// The values of a view checked by [`vec1`] or [`mat2`], safe to read with the GIL released:
/// copied (fallibly) when `detach`, borrowed otherwise (the caller keeps the GIL, so no Python
/// thread can write the buffer meanwhile).
pub(crate) fn detachable<'a, D: ndarray::Dimension>(
    ro: &'a numpy::PyReadonlyArray<'_, f32, D>,
    detach: bool,
) -> BindResult<Cow<'a, [f32]>> {
    let s = slice(ro);
    if !detach {
        return Ok(Cow::Borrowed(s));
    }
    let mut v = Vec::new();
    v.try_reserve_exact(s.len())
        .map_err(|_| SonaError::Config(format!("cannot copy {} floats", s.len())))?;
    v.extend_from_slice(s);
    Ok(Cow::Owned(v))
}

/// A new 1-D numpy array owning `v`.
pub(crate) fn out1(py: Python<'_>, v: Vec<f32>) -> Bound<'_, PyArray1<f32>> {
    PyArray1::from_vec(py, v)
}

/// A new `rows × cols` numpy array owning `v` (row-major).
pub(crate) fn out2(
    py: Python<'_>,
    v: Vec<f32>,
    rows: usize,
    cols: usize,
) -> BindResult<Bound<'_, PyArray2<f32>>> {
    let a = ndarray::Array2::from_shape_vec((rows, cols), v)
        .map_err(|e| SonaError::Internal(format!("shape: {e}")))?;
    Ok(numpy::IntoPyArray::into_pyarray(a, py))
}
