//! Batched against one-by-one IVF search, single-threaded:
//! `cargo run --release -p sona-index --example batch_search -- D N QUERIES`
//! (defaults 256, 10 000, 4096). Prints µs per query of `search` in a loop and of one
//! `search_batch` over the same queries, best of 5 passes each (other tenants of a shared machine
//! only ever add time), for two spreads of clustered data (0.75: the index bench's, n/100 centres;
//! 0.3 with 64 centres: the engine bench's; 3.0: near-uniform, where many lists are scanned) and k ∈ {4, 10}, nprobe 16. Also checks the results agree.

use std::time::Instant;

use sona_index::synthetic::clustered_unit_vectors;
use sona_index::{IvfIndex, IvfParams, VectorIndex};

fn best_of<T>(passes: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..passes {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(r);
    }
    (best, out.expect("at least one pass"))
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let d = args.first().copied().unwrap_or(256);
    let n = args.get(1).copied().unwrap_or(10_000);
    let nq = args.get(2).copied().unwrap_or(4096);
    for (spread, centres) in [(0.75f32, n / 100), (0.3, 64), (3.0, n / 100)] {
        let all = clustered_unit_vectors(n + nq, d, centres, spread, 5);
        let (data, queries) = all.split_at(n * d);
        let ids: Vec<u64> = (0..n as u64).collect();
        let mut idx = IvfIndex::new(d, IvfParams::default()).expect("index");
        idx.add_batch(&ids, data).expect("build");
        for k in [4, 10] {
            let (t1, one) = best_of(5, || {
                queries
                    .chunks_exact(d)
                    .map(|q| idx.search(q, k, None).expect("search"))
                    .collect::<Vec<_>>()
            });
            let (tb, batch) = best_of(5, || idx.search_batch(queries, k, None).expect("batch"));
            assert_eq!(one, batch, "batched results differ");
            println!(
                "d={d} n={n} lists={} spread={spread} k={k}: search {:.2} us/query, search_batch {:.2} us/query ({:.2}x)",
                idx.nlist(),
                t1 / nq as f64 * 1e6,
                tb / nq as f64 * 1e6,
                t1 / tb
            );
        }
    }
}
