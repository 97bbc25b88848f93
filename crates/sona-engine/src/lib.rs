//! The FastGRNN router and the three learning loops (SPEC §1, §6).
//!
//! - [`config`]: [`EngineConfig`], every tunable, its default and its range (the only place defaults live).
//! - [`real`]: the float trait the router is written over (`f32` in production, `f64` in gradient checks).
//! - [`router`]: the FastGRNN cell, tier heads with a micro-LoRA, and the exact backward pass.

pub mod config;
pub mod real;
pub mod router;

pub use config::{EngineConfig, Exploration, LearningMode};
