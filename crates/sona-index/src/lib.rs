//! Vector indexes over unit-norm vectors keyed by `u64` ids; similarity is the inner product.
//!
//! Every index inserts (visible to the next search), deletes, and searches with an optional id filter.
//! Vectors are normalised on insert and queries on search, so callers may pass raw embeddings.
//! `k` above the number of (filtered) live vectors returns them all, as every ANN library does.
//!
//! - [`VectorIndex`]: what every index offers (add, remove, search, batches, save).
//! - [`FlatIndex`]: exact scan (small sets, and the oracle in tests).
//! - [`IvfIndex`]: approximate search by inverted lists (k-means partitions scanned as contiguous
//!   8-bit codes); the default approximate index (large, clustered sets: see `docs/decisions.md`).
//!   [`RetrainJob`]/[`RetrainPlan`] re-partition it without holding it.
//! - [`HnswIndex`]: approximate search on a hierarchical navigable small-world graph with incremental
//!   insert and tombstone delete (the better choice on weakly clustered data).
//! - [`AnyIndex`]: any of them behind one type, with persistence through [`sona_core::Checkpoint`]
//!   (kind [`CHECKPOINT_KIND`]) and [`load`].
//! - [`kmeans`]: seeded spherical k-means (k-means++ seeding, Lloyd or mini-batch), used by IVF and
//!   by the ReasoningBank's pattern extraction.
//! - `quant` (private): the int8/sign-bit codes the scans read; [`prefetch_lines`]: the cache-line
//!   prefetch hint the scans (and the ReasoningBank's batched recall) issue.
//! - [`unit_rows`]: the validated unit copy of a query batch that every batched search starts from.
//! - [`synthetic`]: clustered unit vectors and recall@k, shared by tests and benchmarks.

mod any;
mod flat;
mod hnsw;
mod ivf;
pub mod kmeans;
mod prefetch;
mod quant;
pub mod synthetic;
#[cfg(test)]
mod testkit;

pub use any::{load, AnyIndex, IndexKind};
pub use flat::FlatIndex;
pub use hnsw::{HnswIndex, HnswParams};
pub use ivf::{IvfIndex, IvfParams, RetrainJob, RetrainPlan};
pub use prefetch::prefetch_lines;

use std::collections::HashSet;
use std::path::Path;

use sona_core::{kernels, validate, Checkpoint, Result, SonaError};

/// The checkpoint `kind` of a saved index file.
pub const CHECKPOINT_KIND: &str = "vector_index";
/// The format version written by this build (and the newest one it reads).
pub const CHECKPOINT_VERSION: u32 = 1;

/// A predicate on ids: only ids for which it returns `true` are returned by a filtered search.
pub type IdFilter<'a> = &'a dyn Fn(u64) -> bool;

/// What every vector index offers. Implementations validate their inputs (dimension, finiteness,
/// duplicate or unknown ids) and leave themselves unchanged on error.
pub trait VectorIndex: Send + Sync {
    /// Dimension of the stored vectors.
    fn dim(&self) -> usize;
    /// Number of live (not deleted) vectors.
    fn len(&self) -> usize;
    /// `true` when the index holds no live vector.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether `id` is present.
    fn contains(&self, id: u64) -> bool;
    /// The stored unit vector of `id` (`None` if absent, or for an index that keeps no exact copy).
    fn get(&self, id: u64) -> Option<&[f32]> {
        let _ = id;
        None
    }
    /// Inserts `vector` under a new `id` (an existing id is an `InvalidInput` error).
    fn add(&mut self, id: u64, vector: &[f32]) -> Result<()>;
    /// Removes `id`; `UnknownId` if absent.
    fn remove(&mut self, id: u64) -> Result<()>;
    /// The `k` most similar live vectors as `(id, cosine)`, best first. `k` larger than the number of
    /// (filtered) vectors returns them all.
    fn search(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<IdFilter<'_>>,
    ) -> Result<Vec<(u64, f32)>>;

    /// [`search`](Self::search) for every row of the row-major `queries` (`dim` wide), with the
    /// same results row by row. All rows are validated before any search, so a bad row (wrong
    /// width, non-finite, zero) is an error naming it and nothing is searched.
    fn search_batch(
        &self,
        queries: &[f32],
        k: usize,
        filter: Option<IdFilter<'_>>,
    ) -> Result<Vec<Vec<(u64, f32)>>> {
        // Validation only: `search` normalises its own copy (normalising twice could move an ulp).
        unit_rows(queries, self.dim())?;
        queries
            .chunks_exact(self.dim())
            .map(|q| self.search(q, k, filter))
            .collect()
    }

    /// Inserts `ids.len()` rows of the row-major `vectors` matrix, all or nothing: every row and id is
    /// validated (dimension, finiteness, non-zero, no id already present or repeated in the batch)
    /// before the first insert.
    fn add_batch(&mut self, ids: &[u64], vectors: &[f32]) -> Result<()> {
        check_batch(self, ids, vectors)?;
        for (&id, row) in ids.iter().zip(vectors.chunks_exact(self.dim())) {
            self.add(id, row)?;
        }
        Ok(())
    }

    /// Removes every id, all or nothing: an unknown or repeated id removes none.
    fn remove_batch(&mut self, ids: &[u64]) -> Result<()> {
        let mut seen = HashSet::with_capacity(ids.len());
        for &id in ids {
            if !self.contains(id) || !seen.insert(id) {
                return Err(SonaError::UnknownId {
                    kind: "vector",
                    id: id.into(),
                });
            }
        }
        for &id in ids {
            self.remove(id)?;
        }
        Ok(())
    }

    /// For indexes that re-partition their vectors now and then (IVF): a copy of what a
    /// re-partition needs when one would be due within `upcoming` more inserts, else `None` (always
    /// `None` for the others). Run it with [`RetrainJob::run`] without holding the index, then
    /// install the result with [`VectorIndex::apply_retrain`]: a caller that keeps the index behind a
    /// lock then holds the lock only for the copy and the install, not for the clustering.
    fn retrain_job(&self, upcoming: usize) -> Option<RetrainJob> {
        let _ = upcoming;
        None
    }

    /// Installs a plan computed from this index's [`VectorIndex::retrain_job`], replaying the
    /// inserts and deletes made since the job's copy (a plan from another index of the same kind
    /// and dimension is therefore still correct, only slower to install). A plan of another
    /// dimension, or given to an index without jobs, is an `InvalidInput` error that changes nothing.
    fn apply_retrain(&mut self, plan: RetrainPlan) -> Result<()> {
        let _ = plan;
        Err(SonaError::invalid("this index kind has no retrain plans"))
    }

    /// Writes the index into `ck` under tensor/meta names starting with `prefix`, so that a larger
    /// component (the ReasoningBank) can embed it in its own checkpoint. Read back with
    /// [`AnyIndex::read_from`].
    fn write_into(&self, ck: &mut Checkpoint, prefix: &str) -> Result<()> {
        let _ = (ck, prefix);
        Err(SonaError::Internal(
            "this index type cannot be saved".into(),
        ))
    }

    /// Saves to `path` as a checkpoint of kind [`CHECKPOINT_KIND`]; read back with [`load`].
    fn save(&self, path: &Path) -> Result<()> {
        let mut ck = Checkpoint::new(CHECKPOINT_KIND, CHECKPOINT_VERSION);
        self.write_into(&mut ck, "")?;
        ck.save(path)
    }
}

/// An index dimension must lie in `[1, MAX_DIM]` (a `Config` error, never a huge allocation later).
pub(crate) fn check_dim(dim: usize) -> Result<usize> {
    validate::check_size("index dimension", dim, 1, validate::MAX_DIM)
}

/// Validates an id batch and its row-major vectors against `index` without changing it.
pub(crate) fn check_batch<I: VectorIndex + ?Sized>(
    index: &I,
    ids: &[u64],
    vectors: &[f32],
) -> Result<()> {
    let dim = index.dim();
    validate::check_matrix("vectors", vectors, ids.len(), dim)?;
    let mut seen = HashSet::with_capacity(ids.len());
    for (i, (&id, row)) in ids.iter().zip(vectors.chunks_exact(dim)).enumerate() {
        if index.contains(id) {
            return Err(SonaError::invalid(format!(
                "id {id} is already in the index"
            )));
        }
        if !seen.insert(id) {
            return Err(SonaError::invalid(format!(
                "id {id} appears twice in the batch"
            )));
        }
        if is_zero(row) {
            return Err(SonaError::invalid(format!(
                "vectors row {i} is the zero vector"
            )));
        }
    }
    Ok(())
}

/// The validated unit-norm copy of `vector` for inserting it under `id` into `index`: an id already
/// present is an `InvalidInput` error (the one check every index's `add` shares).
pub(crate) fn new_entry<I: VectorIndex + ?Sized>(
    index: &I,
    id: u64,
    vector: &[f32],
) -> Result<Vec<f32>> {
    if index.contains(id) {
        return Err(SonaError::invalid(format!(
            "id {id} is already in the index"
        )));
    }
    unit_vector("vector", vector, index.dim())
}

/// The first row of the row-major `rows` (`dim` wide) that is not unit-norm (finite, norm² within
/// 1e-3 of 1): the check every index runs on vectors read back from a file.
pub fn first_non_unit_row(rows: &[f32], dim: usize) -> Option<usize> {
    rows.chunks_exact(dim).position(|row| {
        let n = kernels::norm_sq(row);
        !n.is_finite() || (n - 1.0).abs() > 1e-3
    })
}

/// Validated unit-norm copies of the rows of `queries` (`dim` wide), normalised exactly as
/// [`unit_vector`] does one row, so a batched search scores the same numbers as a single one.
pub fn unit_rows(queries: &[f32], dim: usize) -> Result<Vec<f32>> {
    if !queries.len().is_multiple_of(dim) {
        return Err(SonaError::Dimension {
            what: "queries".into(),
            expected: format!("rows of {dim} values"),
            got: format!("{} values", queries.len()),
        });
    }
    validate::check_finite("queries", queries)?;
    let mut units = Vec::new();
    units
        .try_reserve_exact(queries.len())
        .map_err(|_| SonaError::invalid("the query batch is too large to copy"))?;
    units.extend_from_slice(queries);
    for (i, u) in units.chunks_exact_mut(dim).enumerate() {
        if kernels::normalize(u) == 0.0 {
            return Err(SonaError::invalid(format!(
                "queries row {i} is the zero vector"
            )));
        }
    }
    Ok(units)
}

/// A validated unit-norm copy of `v` (dimension, finiteness, non-zero).
pub(crate) fn unit_vector(what: &str, v: &[f32], dim: usize) -> Result<Vec<f32>> {
    validate::check_vec(what, v, dim)?;
    let mut u = v.to_vec();
    // The returned norm is +Inf beyond `f32::MAX` (entries near 1e38), yet `u` is still unit.
    if kernels::normalize(&mut u) == 0.0 {
        return Err(SonaError::invalid(format!("{what} is the zero vector")));
    }
    Ok(u)
}

/// Whether the finite `row` is all zeros. Not `norm_sq(row) == 0`: that squared norm underflows
/// for denormal entries and overflows near 1e19, while `normalize` makes both unit.
fn is_zero(row: &[f32]) -> bool {
    row.iter().all(|&x| x == 0.0)
}
