//! Fuzzing `Engine::load`: byte-level corruption of each file, and logical corruption written back
//! through the real checkpoint writer (valid CRC, so the parser and the validation are reached).
//! Load must return an error or a working engine, never panic or hang.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use sona_core::{Checkpoint, SeededRng};
use sona_engine::{Engine, EngineConfig, FeedbackSource, LearningMode};

fn saved() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sona-engine-fuzz-{}", std::process::id()));
        let mut c = EngineConfig::new(8);
        c.learning_mode = LearningMode::InstantOnly;
        c.bank_index = "flat".into();
        c.loop_b_steps = 2;
        let e = Engine::new(c).unwrap();
        let mut x = vec![0.0f32; 8 * 40];
        SeededRng::new(1).fill_normal(&mut x, 1.0);
        for row in x.chunks(8) {
            let d = e.process(row).unwrap();
            e.feedback(d.trajectory_id, 0.5, FeedbackSource::Explicit)
                .unwrap();
        }
        e.background_learn().unwrap();
        // Decisions still awaiting feedback are part of the checkpoint.
        for row in x.chunks(8).take(6) {
            e.process(row).unwrap();
        }
        e.save(&dir).unwrap();
        dir
    })
}

fn copy_to(tag: &str) -> PathBuf {
    let dst = std::env::temp_dir().join(format!(
        "sona-engine-fuzz-{}-{tag}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["engine.ckpt", "ewc.ckpt", "bank.ckpt", "MANIFEST"] {
        std::fs::copy(saved().join(f), dst.join(f)).unwrap();
    }
    dst
}

/// Load must not panic; a loaded engine must work.
fn check(dir: &Path) {
    if let Ok(e) = Engine::load(dir) {
        let d = e.config().dim;
        let x = vec![0.5f32; d];
        if let Ok(dec) = e.process(&x) {
            assert!(dec.tier < e.config().n_tiers);
            e.feedback(dec.trajectory_id, 1.0, FeedbackSource::Judge)
                .unwrap();
        }
        let _ = e.background_learn();
    }
}

#[test]
fn unmodified_save_loads() {
    let e = Engine::load(saved()).unwrap();
    assert_eq!(e.config().dim, 8);
    // The six decisions awaiting feedback at the save came back with it.
    let s: serde_json::Value = serde_json::from_str(&e.stats()).unwrap();
    assert_eq!(s["pending"], 6);
    let last = s["next_trajectory_id"].as_u64().unwrap() - 1;
    e.feedback(last, 1.0, FeedbackSource::Explicit).unwrap();
}

/// A format-1 `engine.ckpt` (no read-out, no replay arrival numbers, a config without the new
/// fields) still loads: the read-out is zero, i.e. the router it was saved from.
#[test]
fn format_1_file_loads_with_a_zero_readout() {
    let dir = copy_to("v1");
    let path = dir.join("engine.ckpt");
    let v2 = Checkpoint::load(&path, "sona-engine", 2).unwrap();
    let mut v1 = Checkpoint::new("sona-engine", 1);
    for key in [
        "save_token",
        "log_seq",
        "counters",
        "metrics",
        "writer_rng",
        "replay_rng",
    ] {
        let value: serde_json::Value = v2.meta(key).unwrap();
        v1.set_meta(key, &value).unwrap();
    }
    let mut cfg: serde_json::Value = v2.meta("config").unwrap();
    let obj = cfg.as_object_mut().unwrap();
    obj.remove("readout_lr");
    obj.remove("replay_half_life");
    v1.set_meta("config", &cfg).unwrap();
    for name in [
        "router",
        "base.a",
        "base.bt",
        "micro.a",
        "micro.bt",
        "head.a",
        "head.bt",
        "micro_mom.a",
        "micro_mom.bt",
        "head_mom.a",
        "head_mom.bt",
        "adam.m",
        "adam.v",
        "replay.data",
        "replay.meta",
    ] {
        let (shape, v) = v2.get_f32(name).unwrap();
        v1.put_f32(name, &shape, &v);
    }
    v1.put_u64("replay.ids", &v2.get_u64("replay.ids").unwrap());
    v1.save(&path).unwrap();
    sona_engine::checkpoint::reseal(&dir).unwrap();
    let e = Engine::load(&dir).unwrap();
    assert!(e.model().readout.iter().all(|&r| r == 0.0));
    assert_eq!(e.model().readout.len(), 4 * 9);
    check(&dir);
    // The saved engine had learned a non-zero read-out; format 2 keeps it.
    let e2 = Engine::load(saved()).unwrap();
    assert!(e2.model().readout.iter().any(|&r| r != 0.0));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn byte_corruption_never_panics(
        file in 0usize..3,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        truncate in prop::option::of(any::<prop::sample::Index>()),
        resealed in any::<bool>(),
    ) {
        let dir = copy_to("bytes");
        let name = ["engine.ckpt", "ewc.ckpt", "bank.ckpt"][file];
        let mut b = std::fs::read(dir.join(name)).unwrap();
        for (i, v) in flips {
            let at = i.index(b.len());
            b[at] ^= v | 1;
        }
        if let Some(t) = truncate {
            b.truncate(t.index(b.len()));
        }
        std::fs::write(dir.join(name), &b).unwrap();
        if resealed {
            // Past the MANIFEST's checksum, so the file's own checks are what refuse it.
            sona_engine::checkpoint::reseal(&dir).unwrap();
        }
        check(&dir);
    }

    #[test]
    fn logical_corruption_is_refused_or_valid(kind in 0usize..21, v in any::<u64>(), f in any::<f32>()) {
        let dir = copy_to("logic");
        let path = dir.join("engine.ckpt");
        let mut ck = Checkpoint::load(&path, sona_engine::persist::KIND, sona_engine::persist::VERSION).unwrap();
        let mut counters: serde_json::Value = ck.meta("counters").unwrap();
        let mut cfg: serde_json::Value = ck.meta("config").unwrap();
        match kind {
            0 => counters["next_id"] = v.into(),
            1 => counters["processed"] = v.into(),
            2 => counters["replay_seen"] = (v % 8).into(),
            3 => cfg["dim"] = (v % 20).into(),
            4 => cfg["n_tiers"] = (v % 20).into(),
            5 => cfg["k_recall"] = (v % 40).into(),
            6 => {
                let (shape, mut r) = ck.get_f32("router").unwrap();
                let i = (v as usize) % r.len();
                r[i] = f;
                ck.put_f32("router", &shape, &r);
            }
            7 => {
                let (shape, mut m) = ck.get_f32("replay.meta").unwrap();
                let i = (v as usize) % m.len();
                m[i] = f;
                ck.put_f32("replay.meta", &shape, &m);
            }
            8 => ck.put_f32("adam.v", &[3], &[f, f, f]),
            10 => {
                let (shape, mut m) = ck.get_f32("pending.meta").unwrap();
                let i = (v as usize) % m.len();
                m[i] = f;
                ck.put_f32("pending.meta", &shape, &m);
            }
            11 => {
                let mut k = ck.get_u64("pending.keys").unwrap();
                let i = (v as usize) % k.len();
                k[i] = [0, 1, u64::MAX, v, v % 64][(v % 5) as usize];
                ck.put_u64("pending.keys", &k);
            }
            12 => {
                let (shape, d) = ck.get_f32("pending.data").unwrap();
                let rows = (v as usize % 8).min(shape[0]);
                let width = shape[1] - (v as usize % 2);
                ck.put_f32("pending.data", &[rows, width], &d[..rows * width]);
            }
            13 => {
                let mut ids = ck.get_u64("pending.ids").unwrap();
                if v % 2 == 0 {
                    ids.pop();
                } else if let Some(x) = ids.first_mut() {
                    *x = v;
                }
                ck.put_u64("pending.ids", &ids);
            }
            // Latency histograms: a bucket out of range or repeated, a huge count, an unknown op.
            14 => {
                let mut lat: serde_json::Value = ck.meta("latency").unwrap();
                lat["process"] = serde_json::json!([[v % 500, 1], [v % 7, v]]);
                ck.set_meta("latency", &lat).unwrap();
            }
            15 => {
                let mut lat: serde_json::Value = ck.meta("latency").unwrap();
                lat[format!("op{}", v % 3)] = serde_json::json!([[1, 1]]);
                ck.set_meta("latency", &lat).unwrap();
            }
            16 => ck.set_meta("latency", &serde_json::json!({"feedback": [[v, f]]})).unwrap(),
            17 => {
                let (shape, mut r) = ck.get_f32("readout").unwrap();
                let i = (v as usize) % r.len();
                r[i] = f;
                ck.put_f32("readout", &shape, &r);
            }
            18 => {
                let (_, r) = ck.get_f32("readout").unwrap();
                let n = (v as usize) % (r.len() + 1);
                ck.put_f32("readout", &[n], &r[..n]);
            }
            19 => {
                let mut a = ck.get_u64("replay.arrivals").unwrap();
                if !a.is_empty() {
                    let i = (v as usize) % a.len();
                    a[i] = v % 64;
                }
                ck.put_u64("replay.arrivals", &a);
            }
            // Φ of the last deep cycle: any number, a string, or absent (older files).
            20 => match v % 3 {
                0 => ck.set_meta("phi", &serde_json::json!(f)).unwrap(),
                1 => ck.set_meta("phi", &serde_json::json!("high")).unwrap(),
                _ => ck.set_meta("phi", &serde_json::json!((v % 5) as f64 / 2.0)).unwrap(),
            },
            _ => {
                let (shape, d) = ck.get_f32("replay.data").unwrap();
                let rows = (v as usize % 5).min(shape[0]);
                let width = shape[1] - (v as usize % 2);
                ck.put_f32("replay.data", &[rows, width], &d[..rows * width]);
            }
        }
        ck.set_meta("counters", &counters).unwrap();
        ck.set_meta("config", &cfg).unwrap();
        ck.save(&path).unwrap();
        sona_engine::checkpoint::reseal(&dir).unwrap();
        check(&dir);
    }
}
