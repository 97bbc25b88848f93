//! The FastGRNN router and the three learning loops.
//!
//! Not implemented yet: this crate compiles so the workspace layout is final; see the open issues.
