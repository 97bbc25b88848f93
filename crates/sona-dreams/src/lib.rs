//! Dreams = replay (design §7): consolidation that measurably prevents forgetting.
//!
//! - [`priority`]: [`PrioritizedReplay`], a sum tree that samples stored items with probability
//!   ∝ (|prediction error| + ε)^α and returns their importance weights.
//! - [`rehearsal`]: generative pseudo-rehearsal inputs `x̃ ~ N(μ_c, σ_c² I)` around pattern clusters.
//! - [`cycle`]: one dream cycle over any [`cycle::DreamModel`]: replay + distillation toward a frozen
//!   pre-cycle teacher + the model's penalty (EWC++), within a time budget, accepted only if a
//!   held-out probe does not regress — otherwise rolled back to a bit-identical state.

pub mod cycle;
pub mod priority;
pub mod rehearsal;

pub use cycle::{run_cycle, DreamConfig, DreamModel, DreamReport};
pub use priority::PrioritizedReplay;
