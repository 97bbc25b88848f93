//! The single error type of the Rust core.
//!
//! Every variant maps to one Python exception class in `sona-py` (see `errors.rs` there), so the
//! variant chosen here is the contract the Python user sees.

use thiserror::Error;

/// Result alias used throughout the workspace.
pub type Result<T, E = SonaError> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum SonaError {
    /// A vector or matrix has the wrong length/shape. Python: `DimensionError` (also a `ValueError`).
    #[error("{what}: expected {expected}, got {got}")]
    Dimension {
        what: String,
        expected: String,
        got: String,
    },
    /// A value contains NaN or ±Inf. Python: `NonFiniteError` (an `InvalidInputError`).
    #[error("{what} contains NaN or Inf (first at index {index})")]
    NonFinite { what: String, index: usize },
    /// A value is outside its allowed range or otherwise malformed. Python: `InvalidInputError`.
    #[error("{0}")]
    InvalidInput(String),
    /// A configuration value is out of range. Python: `ConfigError` (also a `ValueError`).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An id (trajectory, pattern, token) is unknown or was already used. Python: `UnknownIdError`.
    #[error("unknown {kind} id {id}")]
    UnknownId { kind: &'static str, id: i128 },
    /// A saved file is corrupted, truncated, of another version or mismatched. Python: `CheckpointError`.
    #[error("checkpoint error: {0}")]
    Checkpoint(String),
    /// An update was refused because it would make weights non-finite. Python: `NumericalError`.
    #[error("numerical error: {0}")]
    Numerical(String),
    /// A bug: an invariant broke or a panic was caught at the boundary. Python: `InternalError`.
    #[error("internal error (please report): {0}")]
    Internal(String),
}

impl SonaError {
    /// Shorthand for a length mismatch of a named vector.
    pub fn len_mismatch(what: impl Into<String>, expected: usize, got: usize) -> Self {
        SonaError::Dimension {
            what: what.into(),
            expected: format!("length {expected}"),
            got: format!("length {got}"),
        }
    }

    /// Shorthand for an invalid-input error.
    pub fn invalid(msg: impl Into<String>) -> Self {
        SonaError::InvalidInput(msg.into())
    }

    /// Shorthand for a checkpoint error.
    pub fn checkpoint(msg: impl Into<String>) -> Self {
        SonaError::Checkpoint(msg.into())
    }
}

impl From<std::io::Error> for SonaError {
    fn from(e: std::io::Error) -> Self {
        SonaError::Checkpoint(format!("I/O: {e}"))
    }
}
