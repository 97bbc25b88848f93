//! `cargo bench -p sona-ewc`: Fisher update, penalty and apply at P ∈ {1e3, 1e4, 1e5, 1e6}, plus one
//! boundary-detector observation at d ∈ {256, 768}. Targets (design §10 / issue 4): apply and Fisher
//! update at P = 1e5 ≤ 50 µs.

use divan::{black_box, Bencher};
use sona_core::SeededRng;
use sona_ewc::{BoundaryConfig, EwcConfig, EwcPlusPlus, OnlineFisher, TaskBoundaryDetector};

fn main() {
    println!("SIMD level: {}", sona_core::kernels::simd_level().name());
    divan::main();
}

const PS: &[usize] = &[1_000, 10_000, 100_000, 1_000_000];

fn randv(p: usize, seed: u64) -> Vec<f32> {
    let mut rng = SeededRng::new(seed);
    let mut v = vec![0.0; p];
    rng.fill_normal(&mut v, 1.0);
    v
}

fn consolidated(p: usize) -> EwcPlusPlus {
    let mut ewc = EwcPlusPlus::new(p, EwcConfig::default()).unwrap();
    let f: Vec<f32> = randv(p, 1).iter().map(|x| x * x).collect();
    ewc.complete_task(&randv(p, 2), Some(&f), 1.0).unwrap();
    ewc
}

#[divan::bench(args = PS)]
fn fisher_update(bencher: Bencher, p: usize) {
    let mut f = OnlineFisher::new(p, 0.999, 0.0).unwrap();
    let g = randv(p, 3);
    bencher.bench_local(|| f.update(black_box(&g)).unwrap());
}

#[divan::bench(args = PS)]
fn penalty(bencher: Bencher, p: usize) {
    let ewc = consolidated(p);
    let theta = randv(p, 4);
    bencher.bench_local(|| ewc.penalty(black_box(&theta)).unwrap());
}

#[divan::bench(args = PS)]
fn apply(bencher: Bencher, p: usize) {
    let ewc = consolidated(p);
    let theta = randv(p, 4);
    let mut grad = randv(p, 5);
    bencher.bench_local(|| ewc.apply(black_box(&theta), black_box(&mut grad)).unwrap());
}

#[divan::bench(args = PS)]
fn apply_into(bencher: Bencher, p: usize) {
    let ewc = consolidated(p);
    let theta = randv(p, 4);
    let grad = randv(p, 5);
    let mut out = vec![0.0; p];
    bencher.bench_local(|| {
        ewc.apply_into(black_box(&theta), black_box(&grad), black_box(&mut out))
            .unwrap()
    });
}

#[divan::bench(args = [256, 768])]
fn boundary_observe(bencher: Bencher, d: usize) {
    let mut det = TaskBoundaryDetector::new(d, 0, BoundaryConfig::default()).unwrap();
    let xs: Vec<Vec<f32>> = (0..512).map(|i| randv(d, 10 + i)).collect();
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) % xs.len();
        det.observe(black_box(&xs[i]), None).unwrap()
    });
}
