//! EWC++: online Fisher, consolidated multi-task penalty, task boundaries.
//!
//! Not implemented yet: this crate compiles so the workspace layout is final; see the open issues.
