//! Two-tier LoRA adapters (base + micro) with exact gradients, merge and PEFT files.
//!
//! Not implemented yet: this crate compiles so the workspace layout is final; see the open issues.
