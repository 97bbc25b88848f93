//! Vector indexes over unit-norm vectors keyed by `u64` ids; similarity is the inner product.
//!
//! Every index inserts (visible to the next search), deletes, and searches with an optional id filter.
//! Vectors are normalised on insert and queries on search, so callers may pass raw embeddings.

mod flat;

pub use flat::FlatIndex;

use sona_core::Result;

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
}
