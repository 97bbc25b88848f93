//! ReasoningBank: trajectories, patterns, vector index and memory graph.
//!
//! Not implemented yet: this crate compiles so the workspace layout is final; see the open issues.
