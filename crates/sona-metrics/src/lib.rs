//! Metrics users can check (design §8): what was learned, what was forgotten, what routing earned,
//! and what another policy would have earned — from logs alone.
//!
//! - [`continual`]: the accuracy matrix `R[i][j]` with ACC, BWT and forgetting.
//! - [`routing`]: mean reward and cost, regret against the best fixed tier and the oracle, the
//!   cost–quality front and the top-tier call share needed for a fraction of its quality.
//! - [`improvement`]: regret per window and its relative reduction (never a compounding score).
//! - [`ope`]: off-policy evaluation — IPS, self-normalized IPS and doubly robust estimates with
//!   confidence intervals, from logged decisions and their propensities.
//! - [`phi`]: the integration proxy Φ = algebraic connectivity of the memory graph's normalized
//!   Laplacian (a diagnostic, not a measure of consciousness).
//! - [`latency`]: a lock-free log-bucketed latency histogram with quantiles.

pub mod continual;
pub mod improvement;
pub mod latency;
pub mod ope;
pub mod phi;
pub mod routing;

pub use continual::AccuracyMatrix;
pub use latency::LatencyHistogram;
pub use ope::{Estimate, LoggedBandit};
pub use routing::RoutingSummary;
