//! Loop C through the engine: a deep cycle replays, distills and publishes only what does not
//! hurt the held-out probe; a harmful cycle leaves the served weights bit-identical; maintenance
//! reports Φ; under `all_three_tiers` the background thread runs deep cycles by itself.

use sona_core::SeededRng;
use sona_engine::{Engine, EngineConfig, FeedbackSource, LearningMode};

const D: usize = 24;

/// Feeds `n` decisions of a 3-cluster bandit (tier `c` is right for cluster `c`), running loop B
/// every 300. With `poison`, every decision but each fifth (the ones a deep cycle holds out as its
/// probe) is rewarded backwards.
fn traffic(e: &Engine, n: usize, seed: u64, poison: bool) {
    let mut rng = SeededRng::new(seed);
    let centers: Vec<Vec<f32>> = (0..3)
        .map(|_| {
            let mut c = vec![0.0f32; D];
            rng.fill_normal(&mut c, 1.0);
            sona_core::kernels::normalize(&mut c);
            c
        })
        .collect();
    for i in 0..n {
        let c = rng.below(3) as usize;
        let mut x = centers[c].clone();
        x.iter_mut()
            .for_each(|v| *v += 0.2 * rng.normal() / (D as f32).sqrt());
        let d = e.process(&x).unwrap();
        let right = d.tier == c;
        let r = if right != (poison && i % 5 != 4) {
            1.0
        } else {
            0.1
        };
        e.feedback(d.trajectory_id, r, FeedbackSource::Explicit)
            .unwrap();
        if !poison && (i + 1) % 300 == 0 {
            e.background_learn().unwrap();
        }
    }
}

fn config() -> EngineConfig {
    let mut cfg = EngineConfig::new(D);
    cfg.n_tiers = 3;
    cfg.learning_mode = LearningMode::InstantOnly;
    cfg.bank_index = "flat".into();
    cfg.deep_steps = 60;
    cfg.deep_synthetic = 64;
    cfg
}

fn weights_bits(e: &Engine) -> (u64, Vec<u32>) {
    let m = e.model();
    let bits = m
        .router
        .iter()
        .chain(&m.base.a)
        .chain(&m.base.bt)
        .chain(&m.micro.a)
        .chain(&m.head.a)
        .map(|v| v.to_bits())
        .collect();
    (m.generation, bits)
}

#[test]
fn a_deep_cycle_replays_distills_and_maintains_memory() {
    let e = Engine::new(config()).unwrap();
    // Before any traffic there is nothing to dream on: nothing changes.
    let before = weights_bits(&e);
    let r0 = e.deep_learn().unwrap();
    assert!(!r0.accepted && r0.steps == 0 && r0.probe_size == 0);
    assert_eq!(weights_bits(&e), before);

    traffic(&e, 1500, 1, false);
    let before = weights_bits(&e);
    let r = e.deep_learn().unwrap();
    assert!(r.probe_size > 50, "{r:?}");
    assert!(r.steps > 0 && r.replayed > 0 && r.synthesized > 0, "{r:?}");
    assert!(r.probe_after.is_finite() && r.probe_before.is_finite());
    assert!(r.phi.is_finite() && r.phi >= 0.0);
    if r.accepted {
        assert!(r.probe_after >= r.probe_before, "{r:?}");
        assert_eq!(r.generation, before.0 + 1);
        assert_ne!(weights_bits(&e).1, before.1);
    } else {
        assert_eq!(weights_bits(&e), before);
    }
    // Creative edges: at most the checked candidates are added.
    assert!(r.edges_added <= r.creative_proposed, "{r:?}");
    assert!(
        r.creative_proposed <= sona_engine::loop_c::MAX_CREATIVE,
        "{r:?}"
    );
    assert!(r.edges_removed <= r.edges_before, "{r:?}");
    let m: serde_json::Value = serde_json::from_str(&e.improvement_metrics()).unwrap();
    assert!(m["phi"].is_number(), "{m}");
    assert!(m.get("weekly_gain").is_some());
}

#[test]
fn a_cycle_forced_to_regress_is_rolled_back_bit_identically() {
    let mut cfg = config();
    // The replayed decisions were rewarded backwards, the held-out ones truly: fitting the former
    // can only hurt the probe.
    cfg.loop_b_lr = 0.05;
    cfg.deep_distill_weight = 0.0;
    cfg.deep_steps = 40;
    let e = Engine::new(cfg).unwrap();
    traffic(&e, 1200, 2, true);
    let before = weights_bits(&e);
    let r = e.deep_learn().unwrap();
    assert!(r.steps > 0 && !r.accepted, "{r:?}");
    assert!(r.probe_after < r.probe_before, "{r:?}");
    assert_eq!(weights_bits(&e), before);
}

#[test]
fn all_three_tiers_runs_deep_cycles_in_the_background() {
    let mut cfg = config();
    cfg.learning_mode = LearningMode::AllThreeTiers;
    cfg.loop_b_every = 100;
    cfg.loop_b_interval_s = 0.0;
    cfg.deep_every_b = 2;
    cfg.deep_budget_ms = 200;
    let e = Engine::new(cfg).unwrap();
    traffic(&e, 900, 3, false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let m: serde_json::Value = serde_json::from_str(&e.improvement_metrics()).unwrap();
        if m["phi"].is_number() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no deep cycle ran");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    e.close();
    assert!(e.deep_learn().is_err(), "closed engines refuse work");
}
