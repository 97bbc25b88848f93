//! `cargo bench -p sona-core`: every kernel at d ∈ {256, 768, 4096}, fast path vs scalar reference.

use divan::{black_box, Bencher};
use sona_core::{kernels, SeededRng};

fn main() {
    println!("SIMD level: {}", kernels::simd_level().name());
    divan::main();
}

const DIMS: &[usize] = &[256, 768, 4096];

fn vecs(d: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = SeededRng::new(seed);
    let mut a = vec![0.0; d];
    let mut b = vec![0.0; d];
    rng.fill_normal(&mut a, 1.0);
    rng.fill_normal(&mut b, 1.0);
    (a, b)
}

#[divan::bench(args = DIMS)]
fn dot(bencher: Bencher, d: usize) {
    let (a, b) = vecs(d, 1);
    bencher.bench_local(|| kernels::dot(black_box(&a), black_box(&b)));
}

#[divan::bench(args = DIMS)]
fn dot_scalar_reference(bencher: Bencher, d: usize) {
    let (a, b) = vecs(d, 1);
    bencher.bench_local(|| kernels::scalar::dot(black_box(&a), black_box(&b)));
}

#[divan::bench(args = DIMS)]
fn cosine(bencher: Bencher, d: usize) {
    let (a, b) = vecs(d, 2);
    bencher.bench_local(|| kernels::cosine(black_box(&a), black_box(&b)));
}

#[divan::bench(args = DIMS)]
fn norm_sq(bencher: Bencher, d: usize) {
    let (a, _) = vecs(d, 3);
    bencher.bench_local(|| kernels::norm_sq(black_box(&a)));
}

#[divan::bench(args = DIMS)]
fn normalize(bencher: Bencher, d: usize) {
    let (a, _) = vecs(d, 4);
    let mut v = a.clone();
    // Normalise, then scale back: no copy inside the timed body (see `copy` below for why).
    bencher.bench_local(|| {
        let n = kernels::normalize(black_box(&mut v));
        kernels::scale(n, &mut v);
    });
}

#[divan::bench(args = DIMS)]
fn axpy(bencher: Bencher, d: usize) {
    let (x, mut y) = vecs(d, 5);
    bencher.bench_local(|| kernels::axpy(black_box(1e-3), black_box(&x), black_box(&mut y)));
}

/// The finiteness check every public entry point runs on its inputs.
#[divan::bench(args = DIMS)]
fn all_finite(bencher: Bencher, d: usize) {
    let (a, _) = vecs(d, 15);
    bencher.bench_local(|| kernels::all_finite(black_box(&a)));
}

#[divan::bench(args = DIMS)]
fn copy(bencher: Bencher, d: usize) {
    let (a, mut b) = vecs(d, 14);
    bencher.bench_local(|| kernels::copy(black_box(&a), black_box(&mut b)));
}

/// `copy_from_slice` (glibc `memcpy`) for comparison with [`copy`].
#[divan::bench(args = DIMS)]
fn copy_memcpy_reference(bencher: Bencher, d: usize) {
    let (a, mut b) = vecs(d, 14);
    bencher.bench_local(|| black_box(&mut b).copy_from_slice(black_box(&a)));
}

#[divan::bench(args = DIMS)]
fn scale(bencher: Bencher, d: usize) {
    let (mut x, _) = vecs(d, 6);
    bencher.bench_local(|| kernels::scale(black_box(0.999_9), black_box(&mut x)));
}

/// `r × d` times `d` (the LoRA down-projection `A x` at r = 8).
#[divan::bench(args = DIMS)]
fn matvec_r8(bencher: Bencher, d: usize) {
    let r = 8;
    let mut rng = SeededRng::new(7);
    let mut m = vec![0.0; r * d];
    rng.fill_normal(&mut m, 1.0);
    let (x, _) = vecs(d, 8);
    let mut y = vec![0.0; r];
    bencher.bench_local(|| kernels::matvec(black_box(&m), r, d, black_box(&x), &mut y));
}

/// `(r × d)ᵀ` times `r` (the LoRA gradient `Aᵀ v` at r = 8).
#[divan::bench(args = DIMS)]
fn matvec_t_r8(bencher: Bencher, d: usize) {
    let r = 8;
    let mut rng = SeededRng::new(9);
    let mut m = vec![0.0; r * d];
    rng.fill_normal(&mut m, 1.0);
    let x = vec![0.5; r];
    let mut y = vec![0.0; d];
    bencher.bench_local(|| kernels::matvec_t(black_box(&m), r, d, black_box(&x), &mut y));
}

/// Rank-2 update of a `d × 2` factor (the LoRA `B` gradient step).
#[divan::bench(args = DIMS)]
fn rank_update_r2(bencher: Bencher, d: usize) {
    let r = 2;
    let mut m = vec![0.0; d * r];
    let (u, _) = vecs(d * r, 10);
    let v = vec![0.25; r * r];
    bencher.bench_local(|| {
        kernels::rank_update(
            black_box(&mut m),
            d,
            r,
            1e-4,
            black_box(&u),
            black_box(&v),
            r,
        )
    });
}

/// Exact search step: 10k rows of d, scores then top-10.
#[divan::bench(args = DIMS, sample_count = 20)]
fn batch_dot_topk_10k(bencher: Bencher, d: usize) {
    let rows = 10_000;
    let mut rng = SeededRng::new(12);
    let mut m = vec![0.0; rows * d];
    rng.fill_normal(&mut m, 1.0);
    let (q, _) = vecs(d, 13);
    let mut scores = vec![0.0; rows];
    bencher.bench_local(|| {
        kernels::batch_dot(black_box(&m), rows, d, black_box(&q), &mut scores);
        kernels::top_k(&scores, 10)
    });
}
