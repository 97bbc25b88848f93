//! [`HashingEmbedder`]: hashed features → a unit `f32` vector.

use sona_core::{Result, SonaError};

use crate::features::feature_hashes;
use crate::hash::bucket_sign;

/// Smallest output dimension.
pub const MIN_DIM: usize = 2;
/// Largest output dimension (far above any embedding size in use; bounds the allocation).
pub const MAX_DIM: usize = 1 << 16;
/// Largest text length in bytes a caller may allow (`max_text_bytes` is capped here).
pub const MAX_TEXT_BYTES_LIMIT: usize = 64 << 20;

/// A deterministic text embedder: signed feature hashing of char 3–5-grams, words and word bigrams
/// into `dim` buckets, sublinear term frequency `1 + ln(tf)`, then L2 normalization.
///
/// Equal `(dim, seed)` give equal vectors for equal texts on every platform. Text without any
/// alphanumeric character embeds to the zero vector (there is nothing to hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashingEmbedder {
    dim: usize,
    seed: u64,
    max_text_bytes: usize,
}

impl HashingEmbedder {
    /// Default cap on one text (1 MiB): queries are short; a longer input is almost surely a mistake.
    pub const DEFAULT_MAX_TEXT_BYTES: usize = 1 << 20;

    /// A new embedder; `dim` in [`MIN_DIM`]..=[`MAX_DIM`].
    pub fn new(dim: usize, seed: u64) -> Result<Self> {
        Self::with_max_text_bytes(dim, seed, Self::DEFAULT_MAX_TEXT_BYTES)
    }

    /// A new embedder refusing texts longer than `max_text_bytes` (1..=[`MAX_TEXT_BYTES_LIMIT`]).
    pub fn with_max_text_bytes(dim: usize, seed: u64, max_text_bytes: usize) -> Result<Self> {
        if !(MIN_DIM..=MAX_DIM).contains(&dim) {
            return Err(SonaError::Config(format!(
                "dim must be in [{MIN_DIM}, {MAX_DIM}], got {dim}"
            )));
        }
        if !(1..=MAX_TEXT_BYTES_LIMIT).contains(&max_text_bytes) {
            return Err(SonaError::Config(format!(
                "max_text_bytes must be in [1, {MAX_TEXT_BYTES_LIMIT}], got {max_text_bytes}"
            )));
        }
        Ok(Self {
            dim,
            seed,
            max_text_bytes,
        })
    }

    /// Output dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Hash seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Longest accepted text in bytes.
    pub fn max_text_bytes(&self) -> usize {
        self.max_text_bytes
    }

    /// Rejects a text over the size cap (before any work).
    pub fn check_text(&self, text: &str) -> Result<()> {
        if text.len() > self.max_text_bytes {
            return Err(SonaError::invalid(format!(
                "text is {} bytes, more than the embedder's limit of {} bytes \
                 (truncate it, or raise max_text_bytes)",
                text.len(),
                self.max_text_bytes
            )));
        }
        Ok(())
    }

    /// Embeds `text` into `out` (length `dim`); `scratch` is reused between calls.
    pub fn embed_into(&self, text: &str, out: &mut [f32], scratch: &mut Vec<u64>) -> Result<()> {
        if out.len() != self.dim {
            return Err(SonaError::len_mismatch("out", self.dim, out.len()));
        }
        self.check_text(text)?;
        feature_hashes(text, self.seed, scratch);
        // Sorting makes equal features adjacent (their count is the run length) and fixes the order
        // in which buckets are summed, so results are bit-identical run to run.
        scratch.sort_unstable();
        out.fill(0.0);
        let mut i = 0;
        while i < scratch.len() {
            let h = scratch[i];
            let mut j = i + 1;
            while j < scratch.len() && scratch[j] == h {
                j += 1;
            }
            // ln in f64 then rounded: platform libms agree far below f32 precision.
            let weight = (1.0 + ((j - i) as f64).ln()) as f32;
            let (b, s) = bucket_sign(h, self.dim);
            out[b] += s * weight;
            i = j;
        }
        let norm = out
            .iter()
            .map(|v| f64::from(*v) * f64::from(*v))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            let inv = (1.0 / norm) as f32;
            out.iter_mut().for_each(|v| *v *= inv);
        }
        Ok(())
    }

    /// Embeds one text.
    pub fn embed(&self, text: &str) -> Result<Vec<f32>> {
        let mut out = vec![0.0; self.dim];
        self.embed_into(text, &mut out, &mut Vec::new())?;
        Ok(out)
    }

    /// Embeds `texts` into a row-major `texts.len() × dim` matrix, split over up to `threads`
    /// threads. Every text is size-checked first, so an error leaves no partial work.
    pub fn embed_batch<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        threads: usize,
    ) -> Result<Vec<f32>> {
        for (i, t) in texts.iter().enumerate() {
            self.check_text(t.as_ref())
                .map_err(|e| SonaError::invalid(format!("texts[{i}]: {e}")))?;
        }
        let len = texts
            .len()
            .checked_mul(self.dim)
            .ok_or_else(|| SonaError::invalid("batch too large"))?;
        let mut out = Vec::new();
        out.try_reserve_exact(len).map_err(|_| {
            SonaError::invalid(format!("cannot allocate {len} floats for the batch"))
        })?;
        out.resize(len, 0.0);
        let threads = threads.clamp(1, texts.len().max(1));
        let per = texts.len().div_ceil(threads).max(1);
        let run = |texts: &[S], rows: &mut [f32]| -> Result<()> {
            let mut scratch = Vec::new();
            for (t, row) in texts.iter().zip(rows.chunks_exact_mut(self.dim)) {
                self.embed_into(t.as_ref(), row, &mut scratch)?;
            }
            Ok(())
        };
        if threads == 1 {
            run(texts, &mut out)?;
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = texts
                    .chunks(per)
                    .zip(out.chunks_mut(per * self.dim))
                    .map(|(t, rows)| s.spawn(move || run(t, rows)))
                    .collect();
                handles.into_iter().try_for_each(|h| {
                    h.join()
                        .map_err(|_| SonaError::Internal("embed thread panicked".into()))?
                })
            })?;
        }
        Ok(out)
    }
}
