//! `sona._sona`: the Python binding of the SONA core.
//!
//! This is the only crate that knows PyO3. Each submodule mirrors one core crate and registers its
//! functions and classes flat in `sona._sona`; the typed Python layer in `python/sona/` re-exports
//! them under `sona.lora`, `sona.ewc`, `sona.reasoning`, `sona.index`, ... Those four modules' classes
//! are the extension's own: their signatures, defaults and docstrings are written once, here
//! ([`lora`], [`ewc`], [`reasoning`], [`index`]); [`args`] checks their sizes, integers and reals.
//!
//! Conventions every binding follows:
//! - every entry point runs inside [`errors::guard`], which turns a `SonaError` into its Python
//!   exception and a Rust panic into `sona.InternalError` (never an abort);
//! - vectors come in as C-contiguous float32 numpy arrays read without copying ([`convert`]);
//!   directly exposed classes convert other array-likes once ([`convert::vector`]), the rest raise
//!   and their Python wrappers convert float64 / non-contiguous input first;
//! - classes are `#[pyclass(frozen)]` with interior mutability (a lock or an atomic snapshot), so a
//!   method never holds a Python-level borrow across a call, and long work releases the GIL.

mod args;
mod classifier;
mod convert;
mod embed;
mod engine;
mod errors;
mod ewc;
mod index;
mod kernels;
mod lora;
mod metrics;
mod reasoning;
mod router;

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// How this extension was built: profile, target, SIMD body in use and the core crates compiled in.
#[pyfunction]
fn build_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("version", env!("CARGO_PKG_VERSION"))?;
    d.set_item(
        "profile",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    )?;
    d.set_item("target_arch", std::env::consts::ARCH)?;
    d.set_item("target_os", std::env::consts::OS)?;
    d.set_item("simd", sona_core::kernels::simd_level().name())?;
    d.set_item(
        "crates",
        vec![
            "sona-core",
            "sona-lora",
            "sona-ewc",
            "sona-reasoning",
            "sona-embed",
        ],
    )?;
    d.set_item(
        "components",
        vec!["kernels", "lora", "ewc", "reasoning", "index", "embed"],
    )?;
    d.set_item("abi3", "cp311")?;
    Ok(d)
}

#[pymodule]
fn _sona(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    errors::register(m)?;
    kernels::register(m)?;
    lora::register(m)?;
    ewc::register(m)?;
    index::register(m)?;
    reasoning::register(m)?;
    embed::register(m)?;
    engine::register(m)?;
    router::register(m)?;
    classifier::register(m)?;
    metrics::register(m)?;
    Ok(())
}
