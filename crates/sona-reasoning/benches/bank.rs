//! `cargo bench -p sona-reasoning --bench bank`: ReasoningBank extraction and memory, d = 256.
//!
//! Extraction of 1k and 10k new trajectories (100k with `SONA_BENCH_100K=1`: it takes seconds per
//! sample on a shared 2-core machine). Memory per stored trajectory and per pattern is printed before
//! the timings (it is a size, not a time, so divan does not measure it).

use divan::{black_box, Bencher};
use sona_core::types::RewardSource;
use sona_core::{kernels, SeededRng};
use sona_reasoning::{BankConfig, ReasoningBank};

const D: usize = 256;

fn main() {
    memory_report();
    divan::main();
}

/// `n` unit vectors around `c` random unit centres, each at cosine ≈ 0.9 from its centre.
fn clustered(n: usize, c: usize, seed: u64) -> Vec<f32> {
    let mut rng = SeededRng::new(seed);
    let mut centres = vec![0.0f32; c * D];
    rng.fill_normal(&mut centres, 1.0);
    for x in centres.chunks_exact_mut(D) {
        kernels::normalize(x);
    }
    let mut pts = vec![0.0f32; n * D];
    for (i, p) in pts.chunks_exact_mut(D).enumerate() {
        let j = rng.below(c as u64) as usize;
        rng.fill_normal(p, 0.48 / (D as f32).sqrt());
        kernels::axpy(1.0, &centres[j * D..(j + 1) * D], p);
        kernels::normalize(p);
        let _ = i;
    }
    pts
}

fn bank_with(n: usize, pts: &[f32]) -> ReasoningBank {
    let mut cfg = BankConfig::new(D, 4);
    cfg.seed = 1;
    cfg.buffer_capacity = n.max(1);
    let bank = ReasoningBank::new(cfg).unwrap();
    for (i, v) in pts.chunks_exact(D).take(n).enumerate() {
        bank.add_trajectory(
            v,
            Some(0.5),
            Some((i % 4) as u8),
            RewardSource::Explicit,
            Some(0),
        )
        .unwrap();
    }
    bank
}

fn memory_report() {
    let n = 10_000;
    let pts = clustered(n, 100, 3);
    let mut cfg = BankConfig::new(D, 4);
    cfg.reservoir_capacity = n;
    let bank = ReasoningBank::new(cfg).unwrap();
    for v in pts.chunks_exact(D) {
        bank.add_trajectory(v, Some(0.5), Some(1), RewardSource::Explicit, Some(0))
            .unwrap();
    }
    let s = bank.stats();
    println!(
        "memory, d={D}: {} stored trajectories (ring + reservoir) use {} bytes = {:.0} B each (target ≤ 1536 B; payload 1024 B)",
        s.stored_trajectories,
        s.trajectory_bytes,
        s.trajectory_bytes as f64 / s.stored_trajectories as f64
    );
    let mut cfg = BankConfig::new(D, 4);
    cfg.merge_threshold = 1.0; // keep every cluster as its own pattern
    cfg.merge_slack = None;
    cfg.max_clusters = 1000;
    let bank = ReasoningBank::new(cfg).unwrap();
    for v in pts.chunks_exact(D) {
        bank.add_trajectory(v, Some(0.5), Some(1), RewardSource::Explicit, Some(0))
            .unwrap();
    }
    bank.extract_patterns().unwrap();
    let s = bank.stats();
    println!(
        "memory, d={D}: {} patterns use {} bytes = {:.0} B each (centroid + index row + stats, 4 tiers)",
        s.patterns,
        s.pattern_bytes,
        s.pattern_bytes as f64 / s.patterns.max(1) as f64
    );
}

fn sizes() -> Vec<usize> {
    let mut v = vec![1_000, 10_000];
    if std::env::var_os("SONA_BENCH_100K").is_some() {
        v.push(100_000);
    }
    v
}

/// Extraction of `n` new trajectories into an empty bank (clustering + merge).
#[divan::bench(args = sizes(), sample_count = 5, sample_size = 1)]
fn extract_new(bencher: Bencher, n: usize) {
    let pts = clustered(n, 100, 7);
    bencher
        .with_inputs(|| bank_with(n, &pts))
        .bench_local_values(|bank| black_box(bank.extract_patterns().unwrap()));
}

/// Extraction of `n` new trajectories of traffic the bank has already seen (steady state: clusters
/// merge into existing patterns).
#[divan::bench(args = sizes(), sample_count = 5, sample_size = 1)]
fn extract_repeat(bencher: Bencher, n: usize) {
    let pts = clustered(n, 100, 7);
    bencher
        .with_inputs(|| {
            let bank = bank_with(n, &pts);
            bank.extract_patterns().unwrap();
            for v in pts.chunks_exact(D) {
                bank.add_trajectory(v, Some(0.5), Some(0), RewardSource::Explicit, Some(0))
                    .unwrap();
            }
            bank
        })
        .bench_local_values(|bank| black_box(bank.extract_patterns().unwrap()));
}

/// Recording one completed trajectory (validation, normalisation, ring + reservoir insert).
#[divan::bench(sample_count = 20)]
fn add_trajectory(bencher: Bencher) {
    let pts = clustered(1, 1, 9);
    let mut cfg = BankConfig::new(D, 4);
    cfg.buffer_capacity = 10_000;
    let bank = ReasoningBank::new(cfg).unwrap();
    bencher.bench_local(|| {
        bank.add_trajectory(
            black_box(&pts),
            Some(0.5),
            Some(1),
            RewardSource::Explicit,
            Some(0),
        )
        .unwrap()
    });
}
