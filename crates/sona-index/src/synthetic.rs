//! Clustered unit vectors and recall@k: the workload of design §11.4, shared by tests and benchmarks.
//!
//! Real embedding sets are clustered (topics), not uniform on the sphere; uniform high-dimensional
//! data is the worst case of every graph index and says little about pattern search.

use std::collections::HashSet;

use sona_core::{kernels, SeededRng};

/// `n` unit vectors of dimension `dim` (row-major): `clusters` random unit centres, each point
/// `normalize(c + spread · g)` with `g ~ N(0, I/dim)` (so `|g| ≈ 1` and a point's cosine to its centre
/// is about `1/√(1 + spread²)`: 0.8 for `spread = 0.75`). Points are assigned to clusters uniformly.
pub fn clustered_unit_vectors(
    n: usize,
    dim: usize,
    clusters: usize,
    spread: f32,
    seed: u64,
) -> Vec<f32> {
    let mut rng = SeededRng::new(seed);
    let clusters = clusters.max(1);
    let mut centres = vec![0.0f32; clusters * dim];
    rng.fill_normal(&mut centres, 1.0);
    for c in centres.chunks_exact_mut(dim) {
        kernels::normalize(c);
    }
    let mut out = vec![0.0f32; n * dim];
    let std = spread / (dim as f32).sqrt();
    for row in out.chunks_exact_mut(dim) {
        let c = rng.below(clusters as u64) as usize;
        rng.fill_normal(row, std);
        kernels::axpy(1.0, &centres[c * dim..(c + 1) * dim], row);
        kernels::normalize(row);
    }
    out
}

/// Mean over queries of `|approx ∩ exact| / |exact|` (recall@k with the exact top-k as truth).
pub fn recall(approx: &[Vec<u64>], exact: &[Vec<u64>]) -> f64 {
    let mut total = 0.0;
    for (a, e) in approx.iter().zip(exact) {
        if e.is_empty() {
            total += 1.0;
            continue;
        }
        let truth: HashSet<u64> = e.iter().copied().collect();
        total += a.iter().filter(|id| truth.contains(id)).count() as f64 / e.len() as f64;
    }
    total / exact.len().max(1) as f64
}

/// `n` unit points dealt round-robin to `c` random unit centres, each `normalize(centre + g)` with
/// `|g| ≈ noise`; returns the points (row-major, `d` wide) and each point's centre (its label).
pub fn blobs(n: usize, c: usize, d: usize, noise: f32, seed: u64) -> (Vec<f32>, Vec<usize>) {
    let mut rng = SeededRng::new(seed);
    let mut centres = vec![0.0f32; c * d];
    rng.fill_normal(&mut centres, 1.0);
    for x in centres.chunks_exact_mut(d) {
        kernels::normalize(x);
    }
    let mut pts = vec![0.0f32; n * d];
    let mut label = vec![0; n];
    for i in 0..n {
        let j = i % c;
        label[i] = j;
        let p = &mut pts[i * d..(i + 1) * d];
        rng.fill_normal(p, noise / (d as f32).sqrt());
        kernels::axpy(1.0, &centres[j * d..(j + 1) * d], p);
        kernels::normalize(p);
    }
    (pts, label)
}
