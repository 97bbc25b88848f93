//! `cargo bench -p sona-lora`: forward, batch forward, gradient + step, reward update and merge at
//! d ∈ {256, 768, 4096}, r ∈ {1, 2, 8, 16}. Sample counts are kept small (shared 2-core machine).
//! Targets (design §10): micro forward d=768 r=2 ≤ 1 µs; reward update d=768 r=2 ≤ 2 µs; base forward
//! d=4096 r=16 ≤ 15 µs; merge d=768 r 8+2 ≤ 200 µs.

use divan::{black_box, Bencher};
use sona_core::SeededRng;
use sona_lora::merge::merge;
use sona_lora::{Lora, LoraConfig, LoraWeights};

fn main() {
    println!("SIMD level: {}", sona_core::kernels::simd_level().name());
    divan::main();
}

const DIMS: &[usize] = &[256, 768, 4096];
const BATCH: usize = 32;

fn adapter(d: usize, r: usize) -> Lora {
    let mut c = LoraConfig::micro(d);
    c.rank = r;
    c.explore.capacity = 1024;
    let l = Lora::new(c).unwrap();
    // Non-zero B so the forward does its full work.
    let mut w = (*l.snapshot()).clone();
    SeededRng::new(9).fill_normal(&mut w.bt, 0.05);
    l.set_weights(w).unwrap();
    l
}

fn input(d: usize, seed: u64) -> Vec<f32> {
    let mut x = vec![0.0; d];
    SeededRng::new(seed).fill_normal(&mut x, (1.0 / d as f32).sqrt());
    x
}

#[divan::bench(args = DIMS, consts = [1, 2, 8, 16], sample_count = 30)]
fn forward<const R: usize>(bencher: Bencher, d: usize) {
    let l = adapter(d, R);
    let x = input(d, 1);
    let mut y = vec![0.0; d];
    bencher.bench_local(|| l.forward(black_box(&x), black_box(&mut y)).unwrap());
}

#[divan::bench(args = DIMS, consts = [1, 2, 8, 16], sample_count = 20)]
fn forward_batch_32<const R: usize>(bencher: Bencher, d: usize) {
    let l = adapter(d, R);
    let xs: Vec<f32> = (0..BATCH).flat_map(|i| input(d, i as u64)).collect();
    let mut ys = vec![0.0; BATCH * d];
    bencher.bench_local(|| {
        l.forward_batch(black_box(&xs), BATCH, black_box(&mut ys))
            .unwrap()
    });
}

#[divan::bench(args = DIMS, consts = [1, 2, 8, 16], sample_count = 30)]
fn gradient_step<const R: usize>(bencher: Bencher, d: usize) {
    let l = adapter(d, R);
    let x = input(d, 2);
    let e: Vec<f32> = input(d, 3).iter().map(|v| v * 1e-3).collect();
    bencher.bench_local(|| l.update(black_box(&x), black_box(&e)).unwrap());
}

/// `reward(token, r)` alone: tokens come from explored forwards made outside the timed region.
#[divan::bench(args = DIMS, consts = [1, 2, 8, 16], sample_count = 30, sample_size = 256)]
fn reward_update<const R: usize>(bencher: Bencher, d: usize) {
    let l = adapter(d, R);
    let x = input(d, 4);
    let mut y = vec![0.0; d];
    bencher
        .with_inputs(|| l.forward_explore(&x, &mut y).unwrap())
        .bench_local_values(|t| l.reward(black_box(t), 0.6).unwrap());
}

#[divan::bench(args = DIMS, consts = [1, 2, 8, 16], sample_count = 30)]
fn forward_explore<const R: usize>(bencher: Bencher, d: usize) {
    let l = adapter(d, R);
    let x = input(d, 5);
    let mut y = vec![0.0; d];
    bencher.bench_local(|| l.forward_explore(black_box(&x), black_box(&mut y)).unwrap());
}

/// Merge of a rank-2 micro adapter into a rank-R base (rank-(R+2) core, truncated to R).
#[divan::bench(args = DIMS, consts = [1, 2, 8, 16], sample_count = 10)]
fn merge_base_r_plus_2<const R: usize>(bencher: Bencher, d: usize) {
    let mut rng = SeededRng::new(7);
    let mut base = LoraWeights::init(d, d, R, 16.0, &mut rng).unwrap();
    let mut micro = LoraWeights::init(d, d, 2, 20.0, &mut rng).unwrap();
    rng.fill_normal(&mut base.bt, 0.05);
    rng.fill_normal(&mut micro.bt, 0.05);
    let mut out = base.clone();
    bencher.bench_local(|| merge(black_box(&base), black_box(&micro), &mut out).unwrap());
}

/// Where the time of a d=4096 forward goes: input check, `W x` (identity copy), `s·B(Ax)`.
#[divan::bench(args = ["check", "copy", "copy8", "delta"], sample_count = 15)]
fn forward_parts_4096_r16(bencher: Bencher, part: &str) {
    let l = adapter(4096, 16);
    let x = input(4096, 1);
    let mut y = vec![0.0; 4096];
    match part {
        "check" => bencher
            .bench_local(|| sona_core::validate::check_vec("x", black_box(&x), 4096).unwrap()),
        "copy" => bencher.bench_local(|| y.copy_from_slice(black_box(&x))),
        "copy8" => {
            bencher.bench_local(|| sona_core::kernels::copy(black_box(&x), black_box(&mut y)))
        }
        _ => bencher.bench_local(|| l.add_delta_unchecked(black_box(&x), black_box(&mut y))),
    }
}

/// The d=4096 forward with `y` shifted by 16 floats off the page offset of `x` (a 4K-aliasing check;
/// callers' buffers are not normally laid out at equal page offsets).
#[divan::bench(consts = [2, 16], sample_count = 20)]
fn forward_4096_offset_y<const R: usize>(bencher: Bencher) {
    let l = adapter(4096, R);
    let x = input(4096, 1);
    let mut buf = vec![0.0; 4096 + 16];
    bencher.bench_local(|| l.forward(black_box(&x), black_box(&mut buf[16..])).unwrap());
}
