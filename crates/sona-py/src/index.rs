//! Binding of the vector indexes of `sona-reasoning` (filled in by its issue).

use pyo3::prelude::*;

pub(crate) fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
