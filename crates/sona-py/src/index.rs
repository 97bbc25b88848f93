//! Binding of the vector indexes of `sona-reasoning`: `sona._sona.VectorIndex`, wrapped by
//! `sona.index.VectorIndex`.
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
use std::path::PathBuf;

use numpy::{PyArray1, PyArray2, PyArrayMethods, PyUntypedArrayMethods};
use parking_lot::RecursiveRwLock as RwLock;
use pyo3::prelude::*;
use sona_core::SonaError;
use sona_reasoning::index::{
    load, AnyIndex, HnswParams, IdFilter, IndexKind, IvfParams, VectorIndex as _,
};

use crate::convert::{mat2, out1, slice, vec1};
use crate::errors::{guard, BindError, BindResult};

/// `(ids, similarities)` of one search.
type Hits<'py> = (Bound<'py, PyArray1<u64>>, Bound<'py, PyArray1<f32>>);
/// `(ids, similarities)` of a batch search, one row per query.
type BatchHits<'py> = (Bound<'py, PyArray2<u64>>, Bound<'py, PyArray2<f32>>);

/// Id placed in `search_batch` rows that have fewer than `k` hits (their similarity is NaN).
const MISSING: u64 = u64::MAX;

/// A 1-D uint64 id array (the Python layer converts ints and lists).
fn ids1(what: &str, obj: &Bound<'_, PyAny>) -> BindResult<Vec<u64>> {
    let arr = obj.cast::<PyArray1<u64>>().map_err(|_| {
        SonaError::invalid(format!(
            "{what}: expected a 1-D uint64 numpy array (call through `sona.index.VectorIndex`)"
        ))
    })?;
    Ok(arr
        .to_vec()
        .map_err(|e| SonaError::invalid(format!("{what}: {e}")))?)
}

/// The filter argument: `None`, a uint64 array of allowed ids, or a callable `id -> bool`.
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
            Some(o) => Filter::Ids(ids1("filter", o)?.into_iter().collect()),
        })
    }
}

/// `k` must be ≥ 1; above the number of stored vectors every vector is returned (as in every ANN
/// library), so the effective `k` is `min(k, len)`.
fn check_k(k: usize, len: usize) -> Result<usize, SonaError> {
    if k == 0 {
        return Err(SonaError::invalid("k must be >= 1, got 0"));
    }
    Ok(k.min(len))
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

/// An exact (`kind="flat"`), inverted-list (`"ivf"`, also `"approx"`) or HNSW (`"hnsw"`) index of
/// unit vectors keyed by uint64 ids.
#[pyclass(frozen, name = "VectorIndex", module = "sona._sona")]
pub struct PyVectorIndex {
    inner: RwLock<AnyIndex>,
}

#[pymethods]
impl PyVectorIndex {
    #[new]
    #[pyo3(signature = (dim, kind = "flat", m = 16, ef_construction = 100, ef_search = 32, nprobe = 16, seed = 0x534f_4e41))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        dim: usize,
        kind: &str,
        m: usize,
        ef_construction: usize,
        ef_search: usize,
        nprobe: usize,
        seed: u64,
    ) -> PyResult<Self> {
        guard(py, || {
            let kind = match kind {
                "flat" => IndexKind::Flat,
                "ivf" | "approx" => IndexKind::Ivf(IvfParams {
                    nprobe,
                    seed,
                    ..IvfParams::default()
                }),
                "hnsw" => IndexKind::Hnsw(HnswParams {
                    m,
                    ef_construction,
                    ef_search,
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
                inner: RwLock::new(AnyIndex::new(dim, kind)?),
            })
        })
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.read().dim()
    }

    /// `"flat"`, `"ivf"` or `"hnsw"`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.read().kind_name()
    }

    /// HNSW search candidate-list size (`None` unless `kind="hnsw"`).
    #[getter]
    fn ef_search(&self) -> Option<usize> {
        match &*self.inner.read() {
            AnyIndex::Hnsw(h) => Some(h.params().ef_search),
            _ => None,
        }
    }

    #[setter]
    fn set_ef_search(&self, py: Python<'_>, ef: usize) -> PyResult<()> {
        guard(py, || {
            check_not_filtering(&self.inner)?;
            Ok(py.detach(|| match &mut *self.inner.write() {
                AnyIndex::Hnsw(h) => h.set_ef_search(ef),
                _ => Err(SonaError::Config(
                    "ef_search applies to kind=\"hnsw\" only".into(),
                )),
            })?)
        })
    }

    /// IVF: most lists scanned per search (`None` unless `kind="ivf"`).
    #[getter]
    fn nprobe(&self) -> Option<usize> {
        match &*self.inner.read() {
            AnyIndex::Ivf(i) => Some(i.params().nprobe),
            _ => None,
        }
    }

    #[setter]
    fn set_nprobe(&self, py: Python<'_>, nprobe: usize) -> PyResult<()> {
        guard(py, || {
            check_not_filtering(&self.inner)?;
            Ok(py.detach(|| match &mut *self.inner.write() {
                AnyIndex::Ivf(i) => i.set_nprobe(nprobe),
                _ => Err(SonaError::Config(
                    "nprobe applies to kind=\"ivf\" only".into(),
                )),
            })?)
        })
    }

    fn __len__(&self) -> usize {
        self.inner.read().len()
    }

    fn __contains__(&self, id: u64) -> bool {
        self.inner.read().contains(id)
    }

    /// Inserts rows of `vectors` under `ids`, all or nothing.
    fn add(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        vectors: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        guard(py, || {
            let ids = ids1("ids", ids)?;
            let m = mat2("vectors", vectors)?;
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

    /// Removes `ids`, all or nothing.
    fn remove(&self, py: Python<'_>, ids: &Bound<'_, PyAny>) -> PyResult<()> {
        guard(py, || {
            let ids = ids1("ids", ids)?;
            check_not_filtering(&self.inner)?;
            Ok(py.detach(|| self.inner.write().remove_batch(&ids))?)
        })
    }

    /// The `k` nearest ids and their cosine similarities, best first.
    #[pyo3(signature = (query, k, filter = None))]
    fn search<'py>(
        &self,
        py: Python<'py>,
        query: &Bound<'py, PyAny>,
        k: usize,
        filter: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Hits<'py>> {
        guard(py, || {
            let q = slice(&vec1("query", query)?).to_vec();
            let filter = Filter::from_py(filter)?;
            let hits = with_filter(py, &self.inner, &filter, |idx, f| {
                idx.search(&q, check_k(k, idx.len())?, f)
            })?;
            let (ids, sims): (Vec<u64>, Vec<f32>) = hits.into_iter().unzip();
            Ok((PyArray1::from_vec(py, ids), out1(py, sims)))
        })
    }

    /// `search` for every row of `queries`: `(ids, similarities)` of shape `(rows, min(k, len))`. Rows
    /// with fewer hits (only possible with a filter) are padded with id `2**64 - 1` and similarity NaN.
    #[pyo3(signature = (queries, k, filter = None))]
    fn search_batch<'py>(
        &self,
        py: Python<'py>,
        queries: &Bound<'py, PyAny>,
        k: usize,
        filter: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<BatchHits<'py>> {
        guard(py, || {
            let m = mat2("queries", queries)?;
            let rows = m.shape()[0];
            let data = slice(&m).to_vec();
            let filter = Filter::from_py(filter)?;
            let (k, ids, sims) = with_filter(py, &self.inner, &filter, |idx, f| {
                let k = check_k(k, idx.len())?;
                let dim = idx.dim();
                if data.len() != rows * dim {
                    return Err(SonaError::Dimension {
                        what: "queries".into(),
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

    /// The live ids.
    fn ids<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<u64>> {
        PyArray1::from_vec(py, self.inner.read().live_ids())
    }

    /// The stored (unit-norm) vector of `id`.
    fn get<'py>(&self, py: Python<'py>, id: u64) -> PyResult<Bound<'py, PyArray1<f32>>> {
        guard(py, || {
            let idx = self.inner.read();
            let v = idx
                .get(id)
                .ok_or(SonaError::UnknownId { kind: "vector", id })?;
            Ok(out1(py, v.to_vec()))
        })
    }

    /// Approximate heap bytes held (vectors, codes, graph or lists, id map).
    fn memory_bytes(&self) -> usize {
        self.inner.read().memory_bytes()
    }

    /// Writes a checkpoint (kind `"vector_index"`, checksummed, written atomically).
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        guard(py, || Ok(py.detach(|| self.inner.read().save(&path))?))
    }

    /// Reads a checkpoint written by `save`; a corrupted or mismatched file raises `CheckpointError`.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        guard(py, || {
            let idx = py.detach(|| load(&path))?;
            Ok(PyVectorIndex {
                inner: RwLock::new(idx),
            })
        })
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
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyVectorIndex>()?;
    Ok(())
}
