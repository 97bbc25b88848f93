//! The FastGRNN router and the learning loops A and B, joined into the SONA engine (design §1, §6).
//!
//! - [`config`]: [`EngineConfig`], every tunable, its default and its range (the only place defaults live).
//! - [`real`]: the float trait the router is written over (`f32` in production, `f64` in gradient checks).
//! - [`router`]: the FastGRNN cell, tier heads with a micro-LoRA, and the exact backward pass.
//! - [`policy`]: utilities, ε-greedy / SquareCB exploration and the logged propensity.
//! - [`adam`]: Adam over a flat parameter vector.
//! - [`classifier`]: the router as a classifier for the continual-learning benchmark (§11.2).
//! - [`model`]: the published snapshot (router + base + micro + head micro together).
//! - [`budget`]: `memory_budget_mb` split across the stores, and what each evicts.
//! - [`pending`]: the sharded map of trajectories awaiting feedback.
//! - [`replay`]: the reservoir of completed decisions loop B replays.
//! - [`metrics`]: per-window reward, cost, utility, tier shares and IPS regret.
//! - [`latency`]: lock-free latency histograms per operation (p50/p99 in `improvement_metrics`).
//! - [`engine`]: [`Engine`]: `process`, `feedback` (loop A), the background thread.
//! - [`loop_b`]: one loop-B cycle and its [`LearningResult`].
//! - [`loop_c`]: one deep ("dream") cycle and its [`loop_c::DeepLearningResult`].
//! - [`persist`]: the files of every learned piece.
//! - [`checkpoint`]: `save(dir)` / `load(dir)`: atomic, verified checkpoint directories.
//! - [`tenants`]: per-tenant micro-LoRAs over the shared base and router (bounded, LRU).
//! - [`durable`]: the interaction log hooks of `process` / `feedback` and log replay.

pub mod adam;
pub mod budget;
pub mod checkpoint;
pub mod classifier;
pub mod config;
pub(crate) mod durable;
pub mod engine;
pub mod latency;
pub mod loop_b;
pub mod loop_c;
pub mod metrics;
pub mod model;
pub mod pending;
pub mod persist;
pub mod policy;
pub mod real;
pub mod replay;
pub mod router;
pub mod tenants;

pub use config::{EngineConfig, Exploration, LearningMode};
pub use engine::{Decision, Engine, FeedbackSource};
pub use loop_b::LearningResult;
pub use loop_c::DeepLearningResult;
