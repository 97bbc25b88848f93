//! ReasoningBank: trajectories in, curated patterns out (design §2, §5).
//!
//! - [`index`]: the vector indexes and k-means, re-exported from the `sona-index` crate.
//! - [`trajectory`]: compact storage of completed trajectories (one unit vector + 24 bytes each).
//! - [`buffer`]: the drop-oldest ring of new trajectories, the Algorithm-R replay reservoir and the
//!   bounded map of trajectories awaiting feedback.
//! - [`extract`]: clustering a batch of new trajectories into cluster summaries (runs lock-free).
//! - [`config`]: [`BankConfig`], every tunable of a bank and its checks.
//! - [`node`]: pattern nodes, hierarchy levels and the pattern state the bank's write lock guards.
//! - [`bank`]: the [`ReasoningBank`]: extraction/merge, search, arm statistics, feedback.
//! - [`verdict`]: Welch t-tests with Holm correction.
//! - [`maintain`]: union-find consolidation, pruning, and the per-level hierarchy.
//! - [`graph`]: the memory graph with bounded multiplicative updates and personalized PageRank.
//! - [`checkpoint`]: saving and loading a whole bank.
//! - [`export`]: [`PatternRecord`]s, pattern export and import between banks.

pub use sona_index as index;

pub mod bank;
pub mod buffer;
pub mod checkpoint;
pub mod config;
pub mod export;
pub mod extract;
pub mod graph;
pub mod maintain;
pub mod node;
pub mod trajectory;
pub mod verdict;

/// The paths of checkpoint and export items before `persist.rs` was split in two, kept so that
/// dependents written against them still compile.
pub mod persist {
    pub use crate::checkpoint::{KIND, VERSION};
    pub use crate::export::{records_from_json, to_json, PatternRecord};
}

pub use bank::{BankStats, ExtractReport, Hit, ReasoningBank};
pub use config::BankConfig;
pub use export::{records_from_json, to_json, PatternRecord};
pub use graph::{GraphConfig, MemoryGraph};
pub use maintain::PruneRule;
