//! Best-of-N timing of the micro → base merge and its parts, for a loaded shared machine where
//! `cargo bench` medians mostly measure preemption: `cargo run --release -p sona-lora --example
//! merge_timing -- 4096 16` (d, base rank; the micro rank is 2, data as in `benches/lora.rs`).

use sona_core::SeededRng;
use sona_lora::decomp::ThinQr;
use sona_lora::merge::merge;
use sona_lora::LoraWeights;
use std::hint::black_box;
use std::time::Instant;

const REPS: usize = 200;

fn best_us(mut f: impl FnMut()) -> f64 {
    (0..REPS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e6
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let (d, r) = (arg(1, 4096), arg(2, 16));
    let mut rng = SeededRng::new(7);
    let mut base = LoraWeights::init(d, d, r, 16.0, &mut rng).unwrap();
    let mut micro = LoraWeights::init(d, d, 2, 20.0, &mut rng).unwrap();
    rng.fill_normal(&mut base.bt, 0.05);
    rng.fill_normal(&mut micro.bt, 0.05);
    let mut out = base.clone();
    let merge_us = best_us(|| {
        merge(black_box(&base), black_box(&micro), &mut out).unwrap();
    });
    let kk = r + 2;
    let a: Vec<f64> = base.a.iter().chain(&micro.a).map(|&t| t as f64).collect();
    let qr_us = best_us(|| {
        black_box(ThinQr::new(black_box(&a), d, kk));
    });
    let ratio = micro.scale as f64 / base.scale as f64;
    let b: Vec<f64> = (base.bt.iter().map(|&t| t as f64))
        .chain(micro.bt.iter().map(|&t| t as f64 * ratio))
        .collect();
    let qr_b_us = best_us(|| {
        black_box(ThinQr::new(black_box(&b), d, kk));
    });
    let qr = ThinQr::new(&a, d, kk);
    let c = vec![0.3; kk * r];
    let q_mul_us = best_us(|| {
        black_box(qr.q_mul(black_box(&c), r));
    });
    println!(
        "d={d} r={r}+2, best of {REPS}: merge {merge_us:.0} µs; one {d}×{kk} factor: \
         QR with Q {qr_us:.0} µs (A) {qr_b_us:.0} µs (B), Q·C {q_mul_us:.0} µs"
    );
}
