//! ReasoningBank: trajectories, patterns, vector index and memory graph (SPEC §2, §5).
//!
//! - [`index`]: the [`index::VectorIndex`] trait over unit vectors (cosine = inner product), an exact
//!   flat index (small sets, and the oracle in tests) and an approximate index for large sets.

pub mod index;
