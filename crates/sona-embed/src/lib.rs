//! SONA's built-in text embedder: signed feature hashing of character and word n-grams.
//!
//! `SONAEngine.query(text)` needs a vector for every text without downloading a model. This crate is
//! that default: fast (a few µs per short query), dependency-free and bit-for-bit deterministic across
//! runs and platforms (its hash is written here, not taken from `std`, whose hasher may change).
//!
//! - [`features`]: text → the sorted list of hashed features (char 3–5-grams inside word
//!   boundaries, word unigrams and bigrams).
//! - [`hash`]: the seeded 64-bit string hash and the bucket/sign split.
//! - [`HashingEmbedder`]: features → sublinear-tf signed buckets → L2-normalized `f32` vector.

pub mod features;
pub mod hash;

mod embedder;

pub use embedder::{HashingEmbedder, MAX_DIM, MAX_TEXT_BYTES_LIMIT, MIN_DIM};
