//! EWC++ for SONA (design §4): protect what already works while learning continues.
//!
//! - [`fisher`]: [`OnlineFisher`], the per-sample-gradient EMA of the diagonal Fisher (the "++").
//! - [`consolidate`]: [`EwcPlusPlus`], every finished task folded into one O(P) quadratic;
//!   `penalty(θ)` and `apply(θ, grad)` with λ applied once; save/load.
//! - [`boundary`]: [`TaskBoundaryDetector`], a calibrated two-window test on input vectors that also
//!   keeps the parameters from before the change.
//! - [`lambda`]: [`AdaptiveLambda`], λ driven by measured probe-set forgetting.
//! - [`gpm`]: [`GradientProjection`], optional projection of the task gradient off protected directions.
//! - [`diag`]: the fused element-wise kernels of a diagonal quadratic.

pub mod boundary;
pub mod consolidate;
pub mod diag;
pub mod fisher;
pub mod gpm;
pub mod lambda;

pub use boundary::{BoundaryConfig, TaskBoundaryDetector};
pub use consolidate::{EwcConfig, EwcPlusPlus};
pub use fisher::OnlineFisher;
pub use gpm::GradientProjection;
pub use lambda::{AdaptiveLambda, LambdaConfig, LambdaStep};
