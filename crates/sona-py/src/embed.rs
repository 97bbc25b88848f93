//! Binding of `sona-embed`: `sona._sona.HashingEmbedder`, the default embedder of `SONAEngine.query`
//! (wrapped by `sona.embed.HashingEmbedder`).
//!
//! The embedder is immutable, so the class needs no lock: `embed` keeps the GIL (a short text takes
//! a few µs, less than releasing it would cost) and `embed_batch` copies the strings out, then
//! releases the GIL and splits the batch over two threads.

use numpy::PyArray2;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};
use sona_core::SonaError;
use sona_embed::HashingEmbedder as Inner;

use crate::args::Size;
use crate::convert::{out1, out2};
use crate::errors::{guard, BindResult};

const _: () = assert!(Inner::DEFAULT_MAX_TEXT_BYTES == 1048576);

/// Threads a batch is split over (the machine this targets has two cores).
const BATCH_THREADS: usize = 2;
/// Below this many texts a batch runs on the calling thread (spawning costs more).
const PARALLEL_MIN: usize = 64;

/// Signed feature hashing of char 3–5-grams, words and word bigrams into `dim` buckets.
#[pyclass(frozen, module = "sona._sona")]
pub(crate) struct HashingEmbedder {
    inner: Inner,
}

fn text_of(what: &str, obj: &Bound<'_, PyAny>) -> BindResult<String> {
    let s = obj.cast::<PyString>().map_err(|_| {
        SonaError::invalid(format!(
            "{what}: expected a str, got {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "?".into())
        ))
    })?;
    Ok(s.to_str()
        .map_err(|e| SonaError::invalid(format!("{what}: {e}")))?
        .to_owned())
}

#[pymethods]
impl HashingEmbedder {
    #[new]
    // The literal is `Inner::DEFAULT_MAX_TEXT_BYTES` (checked below): a path would show as `...`.
    // Sizes are checked `Size`s (a negative or huge seed is a ConfigError, not an OverflowError).
    #[pyo3(signature = (dim = Size(256), seed = Size(0), max_text_bytes = Size(1048576)),
           text_signature = "(dim=256, seed=0, max_text_bytes=1048576)")]
    fn new(py: Python<'_>, dim: Size, seed: Size, max_text_bytes: Size) -> PyResult<Self> {
        guard(py, || {
            Ok(Self {
                inner: Inner::with_max_text_bytes(dim.0, seed.0 as u64, max_text_bytes.0)?,
            })
        })
    }

    /// Output dimension.
    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// Hash seed.
    #[getter]
    fn seed(&self) -> u64 {
        self.inner.seed()
    }

    /// Longest accepted text in bytes.
    #[getter]
    fn max_text_bytes(&self) -> usize {
        self.inner.max_text_bytes()
    }

    /// The unit (or, for text without letters or digits, zero) vector of one text.
    fn embed<'py>(
        &self,
        py: Python<'py>,
        text: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, numpy::PyArray1<f32>>> {
        guard(py, || {
            let text = text_of("text", text)?;
            Ok(out1(py, self.inner.embed(&text)?))
        })
    }

    /// One row per text, `(len(texts), dim)`; the GIL is released while embedding.
    fn embed_batch<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        guard(py, || {
            let list = texts.cast::<PyList>().map_err(|_| {
                SonaError::invalid("texts: expected a list of str (call through sona.embed)")
            })?;
            let mut owned: Vec<String> = Vec::new();
            owned
                .try_reserve_exact(list.len())
                .map_err(|_| SonaError::invalid("texts: batch too large"))?;
            for (i, item) in list.iter().enumerate() {
                let s = text_of(&format!("texts[{i}]"), &item)?;
                // Checked before copying the rest, so a huge text fails fast.
                self.inner
                    .check_text(&s)
                    .map_err(|e| SonaError::invalid(format!("texts[{i}]: {e}")))?;
                owned.push(s);
            }
            let n = owned.len();
            let threads = if n >= PARALLEL_MIN { BATCH_THREADS } else { 1 };
            let inner = &self.inner;
            let rows = py.detach(|| inner.embed_batch(&owned, threads))?;
            out2(py, rows, n, inner.dim())
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "HashingEmbedder(dim={}, seed={}, max_text_bytes={})",
            self.inner.dim(),
            self.inner.seed(),
            self.inner.max_text_bytes()
        )
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<HashingEmbedder>()
}
