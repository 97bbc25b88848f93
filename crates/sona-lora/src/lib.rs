//! Two-tier LoRA adapters (base + micro) with exact gradients, merge and PEFT files (design §3).
//!
//! - [`adapter`]: the map `y = W x + s·B(A x)`, its weights ([`LoraWeights`]) and exact gradients.
//! - [`optim`]: momentum step with clipping, a Frobenius bound on `ΔW` and decay toward 0.
//! - [`fused`]: vectorised element-wise loops of the hot path (AVX2 chosen at run time).
//! - [`explore`]: Gaussian exploration and REINFORCE — learning from a scalar reward.
//! - [`snapshot`]: atomically swapped immutable weights, so readers never wait for writers.
//! - [`defaults`]: the learning defaults that scale with `d` ([`ScaledDefaults`], [`feedback_budget`]).
//! - [`lora`]: the live adapter [`Lora`] and its tiers [`MicroLoRA`], [`BaseLoRA`].
//! - [`stack`]: [`TwoTierLoRA`], base + micro with periodic merges.
//! - [`merge`] and [`decomp`]: micro → base merge, exact up to truncation (QR + small SVD).
//! - [`checkpoint`]: full training state (weights, momentum, baseline, RNG) for exact resumption.
//! - [`peft`]: PEFT-compatible `adapter_model.safetensors` + `adapter_config.json`.
//! - [`quant`]: FP16 / group-wise Q4 copies of frozen adapters, with their reconstruction error.

pub mod adapter;
pub mod checkpoint;
pub mod decomp;
pub mod defaults;
pub mod explore;
pub mod fused;
pub mod lora;
pub mod merge;
pub mod optim;
pub mod peft;
pub mod quant;
pub mod snapshot;
pub mod stack;

pub use adapter::{Frozen, LoraWeights, MAX_RANK, MAX_WEIGHT};
pub use defaults::{feedback_budget, ScaledDefaults};
pub use explore::ExploreConfig;
pub use lora::{BaseLoRA, Counters, Lora, LoraConfig, MicroLoRA};
pub use merge::MergeReport;
pub use optim::{OptimConfig, StepReport};
pub use quant::{QuantKind, QuantizedLora};
pub use stack::TwoTierLoRA;
