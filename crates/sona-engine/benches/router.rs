//! `cargo bench -p sona-engine`: router forward and backward (all parameters + the step-0 input)
//! at d ∈ {256, 768, 4096} with the default sizes (H = 16, r_W = 8, r_U = 4, T = 4) over the
//! engine's sequence (query + k = 4 recalled patterns, width d + 15).

use divan::{black_box, Bencher};
use sona_core::SeededRng;
use sona_engine::config::stat_width;
use sona_engine::router::backward::{backward, Scratch};
use sona_engine::router::{forward, Cache, Layout};

fn main() {
    divan::main();
}

const DIMS: &[usize] = &[256, 768, 4096];
const STEPS: usize = 5;

fn setup(d: usize) -> (Layout, Vec<f32>, Vec<f32>) {
    let l = Layout::new(d, stat_width(4), 16, 8, 4, 4).unwrap();
    let th = l.init(1);
    let mut seq = vec![0.0f32; STEPS * l.input];
    SeededRng::new(2).fill_normal(&mut seq, (1.0 / d as f32).sqrt());
    (l, th, seq)
}

#[divan::bench(args = DIMS, sample_count = 50)]
fn router_forward(bencher: Bencher, d: usize) {
    let (l, th, seq) = setup(d);
    let mut cache = Cache::default();
    bencher.bench_local(|| {
        forward(&l, &th, None, black_box(&seq), &mut cache);
        black_box(cache.out[0])
    });
}

#[divan::bench(args = DIMS, sample_count = 50)]
fn router_backward(bencher: Bencher, d: usize) {
    let (l, th, seq) = setup(d);
    let mut cache = Cache::default();
    forward(&l, &th, None, &seq, &mut cache);
    let mut grad = vec![0.0f32; l.n_params()];
    let mut dx0 = vec![0.0f32; d];
    let mut s = Scratch::default();
    let dl = [0.3f32, 0.0, 0.0, 0.0];
    bencher.bench_local(|| {
        backward(
            &l,
            &th,
            None,
            &seq,
            &cache,
            &dl,
            &mut grad,
            Some(&mut dx0),
            None,
            &mut s,
        );
        black_box(grad[0])
    });
}

#[divan::bench(args = DIMS, sample_count = 20)]
fn router_size_bytes(bencher: Bencher, d: usize) {
    let (l, _, _) = setup(d);
    println!(
        "d={d}: {} parameters, {} bytes",
        l.n_params(),
        l.n_params() * 4
    );
    bencher.bench_local(|| black_box(l.n_params()));
}
