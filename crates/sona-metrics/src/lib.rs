//! Continual-learning, routing and improvement metrics; the integration proxy.
//!
//! Not implemented yet: this crate compiles so the workspace layout is final; see the open issues.
