//! Replay-based consolidation (dreams).
//!
//! Not implemented yet: this crate compiles so the workspace layout is final; see the open issues.
