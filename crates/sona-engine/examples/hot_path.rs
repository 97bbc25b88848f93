//! Profiling driver for the request path (no Python in the way):
//! `cargo run --release -p sona-engine --example hot_path -- D MODE N`
//! with MODE `process`, `feedback`, `steady` or `batch`; 10k imported patterns around 64 centres.
//! `feedback` times N decisions, then their N rewards, on a fresh engine (its extraction ring
//! grows into fresh memory all along); `steady` does the same in rounds of 500 with an untimed
//! pattern extraction after each (what loop B does every `loop_b_every` = 500 feedbacks).
//! To profile the feedbacks alone: `mkfifo ctl ack; SONA_PERF_CTL=ctl perf record --control
//! fifo:ctl,ack -D -1 … hot_path 768 feedback 20000` (sampling starts at the first timed feedback).

use std::time::Instant;

use sona_engine::{Engine, EngineConfig, FeedbackSource};
use sona_reasoning::index::synthetic::clustered_unit_vectors;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let d: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(768);
    let mode = args.get(2).map(String::as_str).unwrap_or("feedback");
    let n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let mut cfg = EngineConfig::new(d);
    cfg.learning_mode = sona_engine::LearningMode::InstantOnly;
    cfg.bank_index = "ivf".into();
    let e = Engine::new(cfg).expect("engine");
    // One draw, so patterns and queries share the centres.
    let all = clustered_unit_vectors(10_000 + n, d, 64, 0.3, 1);
    let (pats, xs) = all.split_at(10_000 * d);
    e.import_patterns(pats, 10_000).expect("import");
    let t0 = Instant::now();
    match mode {
        "batch" => {
            let cpu0 = cpu_seconds();
            for c in xs.chunks(4096 * d) {
                e.process_batch(c, c.len() / d).expect("batch");
            }
            let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
            println!(
                "batch: {:.0} q/s wall, {:.0} q per CPU-second ({:.2} us CPU per query)",
                n as f64 / wall,
                n as f64 / cpu,
                cpu / n as f64 * 1e6
            );
        }
        "steady" => {
            let (mut tp, mut tf) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for round in xs.chunks(500 * d) {
                let mut ids = Vec::with_capacity(500);
                for x in round.chunks_exact(d) {
                    let t = Instant::now();
                    ids.push(e.process(x).expect("process").trajectory_id);
                    tp.push(t.elapsed().as_nanos() as u64);
                }
                for id in ids {
                    let t = Instant::now();
                    e.feedback(id, 1.0, FeedbackSource::Explicit)
                        .expect("feedback");
                    tf.push(t.elapsed().as_nanos() as u64);
                }
                e.bank().extract_patterns().expect("extract");
            }
            println!("process: p50 {:.2} us", p50(&mut tp));
            println!(
                "feedback: p50 {:.2} us p10 {:.2}",
                p50(&mut tf),
                tf[tf.len() / 10] as f64 / 1e3
            );
        }
        _ => {
            let mut ids = Vec::with_capacity(n);
            let mut ts = Vec::with_capacity(n);
            for x in xs.chunks_exact(d) {
                let t = Instant::now();
                ids.push(e.process(x).expect("process").trajectory_id);
                ts.push(t.elapsed().as_nanos() as u64);
            }
            println!(
                "process: p50 {:.2} us p10 {:.2}",
                p50(&mut ts),
                ts[ts.len() / 10] as f64 / 1e3
            );
            if mode == "feedback" {
                perf_enable();
                ts.clear();
                for id in ids {
                    let t = Instant::now();
                    e.feedback(id, 1.0, FeedbackSource::Explicit)
                        .expect("feedback");
                    ts.push(t.elapsed().as_nanos() as u64);
                }
                let mean = ts.iter().sum::<u64>() as f64 / ts.len() as f64 / 1e3;
                println!(
                    "feedback: p50 {:.2} us p10 {:.2} mean {mean:.2}",
                    p50(&mut ts),
                    ts[ts.len() / 10] as f64 / 1e3
                );
            }
        }
    }
    println!(
        "{mode}: {:.0} q/s overall",
        n as f64 / t0.elapsed().as_secs_f64()
    );
}

/// Tells a waiting `perf record --control fifo:CTL,ACK -D -1` to start sampling (the path of
/// CTL in `SONA_PERF_CTL`), so a profile holds the timed feedbacks alone.
fn perf_enable() {
    if let Ok(path) = std::env::var("SONA_PERF_CTL") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(path) {
            let _ = f.write_all(b"enable\n");
        }
    }
}

fn p50(ts: &mut [u64]) -> f64 {
    ts.sort_unstable();
    ts[ts.len() / 2] as f64 / 1e3
}

/// CPU time of this process so far (user + system, all threads), from `/proc/self/stat` (Linux;
/// clock ticks of 10 ms, so only for runs of seconds). 0 where that file does not exist.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}
