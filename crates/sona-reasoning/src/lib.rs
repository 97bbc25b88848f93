//! ReasoningBank: trajectories, patterns, vector index and memory graph (SPEC §2, §5).
//!
//! - [`index`]: the [`index::VectorIndex`] trait over unit vectors (cosine = inner product), an exact
//!   flat index (small sets, and the oracle in tests) and an approximate index for large sets.
//! - [`trajectory`]: compact storage of completed trajectories (one unit vector + 24 bytes each).
//! - [`buffer`]: the drop-oldest ring of new trajectories, the Algorithm-R replay reservoir and the
//!   bounded map of trajectories awaiting feedback.
//! - [`kmeans`]: seeded spherical k-means (k-means++ seeding, Lloyd or mini-batch).
//! - [`extract`]: clustering a batch of new trajectories into cluster summaries (runs lock-free).
//! - [`bank`]: the [`ReasoningBank`]: extraction/merge, search, arm statistics, feedback.
//! - [`verdict`]: Welch t-tests with Holm correction (Student-t via the incomplete beta function).
//! - [`maintain`]: union-find consolidation, pruning, and the per-level hierarchy.
//! - [`graph`]: the memory graph with bounded multiplicative updates and personalized PageRank.
//! - [`persist`]: checkpoint save/load and pattern export/import.

pub mod bank;
pub mod buffer;
pub mod extract;
pub mod graph;
pub mod index;
pub mod kmeans;
pub mod maintain;
pub mod persist;
pub mod trajectory;
pub mod verdict;

pub use bank::{BankConfig, BankStats, ExtractReport, Hit, ReasoningBank};
pub use graph::{GraphConfig, MemoryGraph};
pub use maintain::PruneRule;
pub use persist::PatternRecord;
