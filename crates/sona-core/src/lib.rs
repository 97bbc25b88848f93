//! SONA core: the pieces every other crate shares.
//!
//! - [`kernels`]: dense `f32` kernels over slices (dot, norms, axpy, mat-vec, rank-r updates, top-k),
//!   each with a scalar reference and a runtime-dispatched fast path.
//! - [`types`]: the canonical records of design §2 (trajectories, decisions, patterns, verdicts).
//! - [`checkpoint`]: the versioned, checksummed file container every component saves into.
//! - [`fsio`]: atomic, durable saves (unique temporary file, fsync, rename) and capped reads.
//! - [`error`]: the one error type, mirrored in Python as the `SonaError` hierarchy.
//! - [`mem`]: memory hints (page in a growing buffer's spare capacity off the per-append path).
//! - [`rng`]: a small seeded RNG so every experiment is reproducible.
//! - [`stats`]: Student-t tail, normal and χ² quantiles (from `statrs`) for the statistical tests.
//! - [`validate`]: input checks shared by every public entry point, size bounds, fallible allocation.

pub mod checkpoint;
pub mod error;
pub mod fsio;
pub mod kernels;
pub mod mem;
pub mod rng;
pub mod stats;
pub mod types;
pub mod validate;

pub use checkpoint::Checkpoint;
pub use error::{Result, SonaError};
pub use rng::SeededRng;
