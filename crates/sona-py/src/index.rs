//! Binding of the vector indexes of `sona-index`: `VectorIndex`, registered in `sona._sona` and
//! re-exported unchanged by `sona.index` (its `__module__`). This file is the Python API: the
//! docstrings are the doc comments below, the defaults are the core parameters' `Default`s, vectors
//! take any array-like ([`crate::convert::vector`]), ids any integer array-like ([`ids`]), sizes and
//! counts checked integers ([`crate::args`]).
//!
//! Lock discipline (no deadlock between the GIL and the index lock): the write lock is only ever
//! taken with the GIL released, and the lock is `parking_lot::RecursiveRwLock`, whose readers never
//! queue behind a waiting writer while another reader holds the lock — otherwise a thread holding the
//! GIL could wait for a read lock while the reader holding it (a search running a Python filter)
//! waits for the GIL.
//!
//! The index sits behind a reader-writer lock: searches share it, `add`/`remove` take it exclusively,
//! so an insert is visible to the next search and a search never sees a half-applied batch. Every
//! call validates its whole input before taking the write lock and releases the GIL while it works
//! (except a search with a Python-callable filter, which must call back into Python). Such a filter
//! runs while the search holds the read lock, so a write to the same index from inside it raises
//! `InvalidInputError` instead of waiting for that lock forever.
//!
//! numpy inputs are copied (with the GIL held) before the GIL is released, so another thread writing
//! the array during the call cannot tear what the index reads; the copy is what gets validated.

use std::cell::RefCell;
use std::collections::HashSet;

use numpy::{
    PyArray1, PyArray2, PyArrayDescrMethods, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods,
};
use parking_lot::RecursiveRwLock as RwLock;
use pyo3::prelude::*;
use pyo3::types::{PyFrozenSet, PyInt, PyList, PySet};
use sona_core::SonaError;
use sona_reasoning::index::{
    load, AnyIndex, HnswParams, IdFilter, IndexKind, IvfParams, VectorIndex as _,
};

use crate::args::{FsPath, Int, Size, Text};
use crate::convert::{matrix, out1, slice, vector};
use crate::errors::{guard, BindError, BindResult};

/// `(ids, similarities)` of one search.
type Hits<'py> = (Bound<'py, PyArray1<u64>>, Bound<'py, PyArray1<f32>>);
/// `(ids, similarities)` of a batch search, one row per query.
type BatchHits<'py> = (Bound<'py, PyArray2<u64>>, Bound<'py, PyArray2<f32>>);

/// Id placed in `search_batch` rows that have fewer than `k` hits (their similarity is NaN).
const MISSING: u64 = u64::MAX;

/// Ids: an int, or a 1-D array-like of non-negative integers (any integer dtype; a uint64 array is
/// read as is). Anything else — negative, fractional, beyond 64 bits, non-numeric, another rank —
/// raises `InvalidInputError`.
fn ids(what: &str, obj: &Bound<'_, PyAny>) -> BindResult<Vec<u64>> {
    let invalid = |msg: String| BindError::from(SonaError::invalid(format!("{what}: {msg}")));
    // A contiguous, native uint64 array is read as is; any other array (strided, big-endian)
    // goes through `ascontiguousarray` below.
    if let Ok(Ok(v)) = obj.cast::<PyArray1<u64>>().map(|a| a.to_vec()) {
        return Ok(v);
    }
    let py = obj.py();
    let np = py.import("numpy")?;
    let scalar = np.call_method1("isscalar", (obj,))?.is_truthy()?;
    let arr = if scalar {
        np.call_method1("asarray", (PyList::new(py, [obj])?,))
    } else {
        np.call_method1("asarray", (obj,))
    }
    .map_err(|e| invalid(format!("cannot convert to an id array ({e})")))?;
    let arr = arr
        .cast_into::<PyUntypedArray>()
        .map_err(|_| invalid("cannot convert to an id array".into()))?;
    if arr.ndim() != 1 {
        return Err(invalid(format!(
            "expected a 1-D array of ids, got shape {:?}",
            arr.shape()
        )));
    }
    if arr.len() == 0 {
        return Ok(Vec::new());
    }
    let kind = arr.dtype().kind();
    if !b"iu".contains(&kind) {
        return Err(invalid(format!(
            "ids must be integers, got dtype {}",
            arr.dtype()
        )));
    }
    // Integer dtypes widen losslessly to int64 (signed) or uint64 (unsigned).
    let wide = if kind == b'u' { "uint64" } else { "int64" };
    let arr = np.call_method1("ascontiguousarray", (arr, wide))?;
    if let Ok(a) = arr.cast::<PyArray1<u64>>() {
        return a.to_vec().map_err(|e| invalid(e.to_string()));
    }
    let signed = arr
        .cast::<PyArray1<i64>>()
        .map_err(|_| invalid("cannot convert to an id array".into()))?
        .to_vec()
        .map_err(|e| invalid(e.to_string()))?;
    signed
        .into_iter()
        .map(|i| {
            u64::try_from(i).map_err(|_| invalid(format!("ids must be non-negative, got {i}")))
        })
        .collect()
}

/// One id: an `int` in `[0, 2**64)`, else `InvalidInputError`.
fn one_id(id: Int) -> Result<u64, SonaError> {
    u64::try_from(id.0)
        .map_err(|_| SonaError::invalid(format!("id must be in [0, 2**64 - 1], got {}", id.0)))
}

/// The filter argument: `None`, the allowed ids (array-like or set), or a callable `id -> bool`.
enum Filter<'py> {
    None,
    Ids(HashSet<u64>),
    Callable(Bound<'py, PyAny>),
}

impl<'py> Filter<'py> {
    fn from_py(obj: Option<&Bound<'py, PyAny>>) -> BindResult<Self> {
        Ok(match obj {
            None => Filter::None,
            Some(o) if o.is_none() => Filter::None,
            Some(o) if o.is_callable() => Filter::Callable(o.clone()),
            Some(o) if o.is_instance_of::<PySet>() || o.is_instance_of::<PyFrozenSet>() => {
                Filter::Ids(
                    ids(
                        "filter",
                        &PyList::new(o.py(), o.try_iter()?.collect::<PyResult<Vec<_>>>()?)?
                            .into_any(),
                    )?
                    .into_iter()
                    .collect(),
                )
            }
            Some(o) => Filter::Ids(ids("filter", o)?.into_iter().collect()),
        })
    }
}

thread_local! {
    /// Addresses of the indexes whose search is running a Python filter on this thread. The search
    /// holds the index's read lock while the filter runs, so a write from the filter would wait for
    /// that lock forever: such writes raise instead.
    static FILTERING: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Marks `index` as running a filter on this thread until dropped.
struct InFilter(usize);

impl InFilter {
    fn enter(index: &RwLock<AnyIndex>) -> Self {
        let key = index as *const _ as usize;
        FILTERING.with(|f| f.borrow_mut().push(key));
        InFilter(key)
    }
}

impl Drop for InFilter {
    fn drop(&mut self) {
        FILTERING.with(|f| {
            let mut f = f.borrow_mut();
            if let Some(i) = f.iter().rposition(|&k| k == self.0) {
                f.remove(i);
            }
        });
    }
}

/// An `InvalidInput` error when called from a filter of a search on `index` (see [`FILTERING`]).
fn check_not_filtering(index: &RwLock<AnyIndex>) -> Result<(), SonaError> {
    let key = index as *const _ as usize;
    if FILTERING.with(|f| f.borrow().contains(&key)) {
        return Err(SonaError::invalid(
            "a search filter cannot modify the index it filters (the search holds it): \
             collect the changes and apply them after the search",
        ));
    }
    Ok(())
}

/// Runs `f` with the index read-locked and the filter as a Rust predicate. Array filters release
/// the GIL; a callable filter keeps it and re-raises the first exception the callable throws.
fn with_filter<T: Send>(
    py: Python<'_>,
    index: &RwLock<AnyIndex>,
    filter: &Filter<'_>,
    f: impl Fn(&AnyIndex, Option<IdFilter<'_>>) -> Result<T, SonaError> + Send + Sync,
) -> BindResult<T> {
    match filter {
        Filter::None => Ok(py.detach(|| f(&index.read(), None))?),
        Filter::Ids(set) => Ok(py.detach(|| {
            let keep = |id: u64| set.contains(&id);
            f(&index.read(), Some(&keep))
        })?),
        Filter::Callable(func) => {
            let failure: RefCell<Option<PyErr>> = RefCell::new(None);
            let keep = |id: u64| -> bool {
                if failure.borrow().is_some() {
                    return false;
                }
                match func.call1((id,)).and_then(|r| r.is_truthy()) {
                    Ok(b) => b,
                    Err(e) => {
                        *failure.borrow_mut() = Some(e);
                        false
                    }
                }
            };
            let marked = InFilter::enter(index);
            let out = f(&index.read(), Some(&keep));
            drop(marked);
            if let Some(e) = failure.into_inner() {
                return Err(BindError::Py(e));
            }
            Ok(out?)
        }
    }
}

/// An index of unit vectors keyed by non-negative integer ids.
///
/// Args:
///     dim: vector dimension.
///     kind: `"flat"` (exact scan), `"ivf"` or `"approx"` (inverted lists), or `"hnsw"`
///         (graph).
///     m: HNSW links per node on the upper layers (layer 0 keeps `2 m`).
///     ef_construction: HNSW candidate list while inserting (graph quality vs insert time).
///     ef_search: HNSW candidate list while searching (recall vs latency; raised to `k`).
///     nprobe: IVF: most lists scanned per search. After the nearest list, a list is scanned only
///         if it may hold a vector better than the current `k`-th hit (a statistical rule), so
///         on clustered data far fewer are scanned; raise it for recall on weakly clustered data.
///     seed: seed of the HNSW level draws and the IVF k-means (builds are reproducible).
///
/// Thread-safe: searches run concurrently, `add`/`remove` are exclusive, and long calls
/// release the GIL (numpy inputs are copied first, so a thread writing them meanwhile cannot tear
/// what is stored). A callable `filter` must not modify the index it filters (that raises).
#[pyclass(frozen, name = "VectorIndex", module = "sona.index")]
pub struct PyVectorIndex {
    inner: RwLock<AnyIndex>,
}

#[pymethods]
impl PyVectorIndex {
    #[new]
    #[pyo3(signature = (dim, kind = Text("flat".into()), *,
                        m = Size(HnswParams::default().m),
                        ef_construction = Size(HnswParams::default().ef_construction),
                        ef_search = Size(HnswParams::default().ef_search),
                        nprobe = Size(IvfParams::default().nprobe),
                        seed = Size(HnswParams::default().seed as usize)),
           // The `Text` default would show as `...`; the numeric ones live only in Rust.
           text_signature = "(dim, kind='flat', *, m=..., ef_construction=..., ef_search=..., \
                             nprobe=..., seed=...)")]
    #[allow(clippy::too_many_arguments)] // the Python constructor's keywords
    fn new(
        py: Python<'_>,
        dim: Size,
        kind: Text,
        m: Size,
        ef_construction: Size,
        ef_search: Size,
        nprobe: Size,
        seed: Size,
    ) -> PyResult<Self> {
        guard(py, || {
            let seed = seed.0 as u64;
            let kind = match kind.0.as_str() {
                "flat" => IndexKind::Flat,
                "ivf" | "approx" => IndexKind::Ivf(IvfParams {
                    nprobe: nprobe.0,
                    seed,
                    ..IvfParams::default()
                }),
                "hnsw" => IndexKind::Hnsw(HnswParams {
                    m: m.0,
                    ef_construction: ef_construction.0,
                    ef_search: ef_search.0,
                    seed,
                }),
                other => {
                    return Err(SonaError::Config(format!(
                        "kind must be \"flat\", \"ivf\", \"hnsw\" or \"approx\", got {other:?}"
                    ))
                    .into())
                }
            };
            Ok(PyVectorIndex {
                inner: RwLock::new(AnyIndex::new(dim.0, kind)?),
            })
        })
    }

    /// Vector dimension.
    #[getter]
    fn dim(&self) -> usize {
        self.inner.read().dim()
    }

    /// `"flat"`, `"ivf"` or `"hnsw"` (`"approx"` builds an `"ivf"` index).
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.read().kind_name()
    }

    /// HNSW search candidate-list size (`None` unless `kind="hnsw"`); settable any time.
    #[getter]
    fn ef_search(&self) -> Option<usize> {
        match &*self.inner.read() {
            AnyIndex::Hnsw(h) => Some(h.params().ef_search),
            _ => None,
        }
    }

    #[setter]
    fn set_ef_search(&self, py: Python<'_>, value: Size) -> PyResult<()> {
        guard(py, || {
            check_not_filtering(&self.inner)?;
            Ok(py.detach(|| match &mut *self.inner.write() {
                AnyIndex::Hnsw(h) => h.set_ef_search(value.0),
                _ => Err(SonaError::Config(
                    "ef_search applies to kind=\"hnsw\" only".into(),
                )),
            })?)
        })
    }

    /// IVF: most lists scanned per search (`None` unless `kind="ivf"`); settable.
    #[getter]
    fn nprobe(&self) -> Option<usize> {
        match &*self.inner.read() {
            AnyIndex::Ivf(i) => Some(i.params().nprobe),
            _ => None,
        }
    }

    #[setter]
    fn set_nprobe(&self, py: Python<'_>, value: Size) -> PyResult<()> {
        guard(py, || {
            check_not_filtering(&self.inner)?;
            Ok(py.detach(|| match &mut *self.inner.write() {
                AnyIndex::Ivf(i) => i.set_nprobe(value.0),
                _ => Err(SonaError::Config(
                    "nprobe applies to kind=\"ivf\" only".into(),
                )),
            })?)
        })
    }

    fn __len__(&self) -> usize {
        self.inner.read().len()
    }

    /// Any object may be tested: only an integer in `[0, 2**64)` can be stored.
    fn __contains__(&self, id: &Bound<'_, PyAny>) -> bool {
        // `bool` is an `int` here, as in Python (`True in index` looks up id 1).
        let integer = id.is_instance_of::<PyInt>() || id.extract::<Int>().is_ok();
        integer
            && id
                .extract::<u64>()
                .is_ok_and(|id| self.inner.read().contains(id))
    }

    fn __repr__(&self) -> String {
        let idx = self.inner.read();
        format!(
            "VectorIndex(dim={}, kind={:?}, len={})",
            idx.dim(),
            idx.kind_name(),
            idx.len()
        )
    }

    /// Insert `vectors[i]` under `ids[i]` (all or nothing).
    ///
    /// Raises:
    ///     DimensionError: `vectors` is not `(len(ids), dim)`.
    ///     NonFiniteError: a vector contains NaN or Inf.
    ///     InvalidInputError: an id is negative, repeated, already present, or a vector is zero.
    fn add(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        vectors: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        guard(py, || {
            let ids = self::ids("ids", ids)?;
            let m = matrix("vectors", vectors)?;
            if m.shape()[0] != ids.len() {
                return Err(SonaError::Dimension {
                    what: "vectors".into(),
                    expected: format!("{} rows (one per id)", ids.len()),
                    got: format!("{} rows", m.shape()[0]),
                }
                .into());
            }
            // Copied so no numpy buffer is read while the GIL is released (another thread could
            // write to it); the copy is cheap next to the insert.
            let data = slice(&m).to_vec();
            check_not_filtering(&self.inner)?;
            Ok(py.detach(|| self.inner.write().add_batch(&ids, &data))?)
        })
    }

    /// Delete `ids` (all or nothing); an absent or repeated id raises UnknownIdError.
    fn remove(&self, py: Python<'_>, ids: &Bound<'_, PyAny>) -> PyResult<()> {
        guard(py, || {
            let ids = self::ids("ids", ids)?;
            check_not_filtering(&self.inner)?;
            Ok(py.detach(|| self.inner.write().remove_batch(&ids))?)
        })
    }

    /// The `k` most similar ids and their cosine similarities, best first.
    ///
    /// `filter` restricts the result to some ids: an array/iterable of allowed ids, or a callable
    /// `id -> bool`. Fewer than `k` hits are returned when the index holds fewer vectors (as in
    /// every ANN library) or fewer ids pass the filter. A callable filter must not modify this
    /// index: that raises InvalidInputError (the search holds the index while the filter runs).
    ///
    /// Raises:
    ///     InvalidInputError: `k < 1`, or the filter modified this index.
    ///     DimensionError / NonFiniteError: bad `vector`.
    #[pyo3(signature = (vector, k, filter = None))]
    fn search<'py>(
        &self,
        py: Python<'py>,
        vector: &Bound<'py, PyAny>,
        k: Int,
        filter: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Hits<'py>> {
        guard(py, || {
            let q = slice(&self::vector("vector", vector)?).to_vec();
            let k = k.top_k()?;
            let filter = Filter::from_py(filter)?;
            let hits = with_filter(py, &self.inner, &filter, |idx, f| {
                idx.search(&q, k.min(idx.len()), f)
            })?;
            let (ids, sims): (Vec<u64>, Vec<f32>) = hits.into_iter().unzip();
            Ok((PyArray1::from_vec(py, ids), out1(py, sims)))
        })
    }

    /// `search` for every row: ids and similarities of shape `(rows, min(k, len))`.
    ///
    /// Rows with fewer hits (only with a filter) are padded with id `2**64 - 1` and similarity
    /// NaN.
    #[pyo3(signature = (vectors, k, filter = None))]
    fn search_batch<'py>(
        &self,
        py: Python<'py>,
        vectors: &Bound<'py, PyAny>,
        k: Int,
        filter: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<BatchHits<'py>> {
        guard(py, || {
            let m = matrix("vectors", vectors)?;
            let k = k.top_k()?;
            let rows = m.shape()[0];
            let data = slice(&m).to_vec();
            let filter = Filter::from_py(filter)?;
            let (k, ids, sims) = with_filter(py, &self.inner, &filter, |idx, f| {
                let k = k.min(idx.len());
                let dim = idx.dim();
                if data.len() != rows * dim {
                    return Err(SonaError::Dimension {
                        what: "vectors".into(),
                        expected: format!("{dim} columns"),
                        got: format!("{} columns", data.len() / rows.max(1)),
                    });
                }
                let mut ids = vec![MISSING; rows * k];
                let mut sims = vec![f32::NAN; rows * k];
                for (r, hits) in idx.search_batch(&data, k, f)?.into_iter().enumerate() {
                    for (j, (id, s)) in hits.into_iter().enumerate() {
                        ids[r * k + j] = id;
                        sims[r * k + j] = s;
                    }
                }
                Ok((k, ids, sims))
            })?;
            let shape = |e: ndarray::ShapeError| SonaError::Internal(format!("shape: {e}"));
            let ids = ndarray::Array2::from_shape_vec((rows, k), ids).map_err(shape)?;
            let sims = ndarray::Array2::from_shape_vec((rows, k), sims).map_err(shape)?;
            Ok((
                numpy::IntoPyArray::into_pyarray(ids, py),
                numpy::IntoPyArray::into_pyarray(sims, py),
            ))
        })
    }

    /// The stored ids.
    fn ids<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<u64>> {
        PyArray1::from_vec(py, self.inner.read().live_ids())
    }

    /// The stored unit vector of `id` (UnknownIdError if absent).
    fn get<'py>(&self, py: Python<'py>, id: Int) -> PyResult<Bound<'py, PyArray1<f32>>> {
        guard(py, || {
            let id = one_id(id)?;
            let idx = self.inner.read();
            let v = idx.get(id).ok_or(SonaError::UnknownId {
                kind: "vector",
                id: id.into(),
            })?;
            Ok(out1(py, v.to_vec()))
        })
    }

    /// Approximate heap bytes held by the index.
    fn memory_bytes(&self) -> usize {
        self.inner.read().memory_bytes()
    }

    /// Write a checksummed checkpoint (written to a temporary file, then renamed).
    fn save(&self, py: Python<'_>, path: FsPath) -> PyResult<()> {
        guard(py, || Ok(py.detach(|| self.inner.read().save(&path))?))
    }

    /// Read a file written by `save` (CheckpointError if corrupted or of another kind).
    #[staticmethod]
    fn load(py: Python<'_>, path: FsPath) -> PyResult<Self> {
        guard(py, || {
            let idx = py.detach(|| load(&path))?;
            Ok(PyVectorIndex {
                inner: RwLock::new(idx),
            })
        })
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyVectorIndex>()?;
    Ok(())
}
