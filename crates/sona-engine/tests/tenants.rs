//! Per-tenant micro-LoRAs: a tenant's feedback adapts its own representation and nothing another
//! tenant (or untenanted traffic) reads; the map is bounded; adapters survive save/load; bad input
//! changes nothing.

use sona_core::{Checkpoint, SeededRng, SonaError};
use sona_engine::tenants::MAX_TENANTS;
use sona_engine::{Engine, EngineConfig, FeedbackSource, LearningMode};

fn cfg(dim: usize) -> EngineConfig {
    let mut c = EngineConfig::new(dim);
    c.learning_mode = LearningMode::InstantOnly;
    c.bank_index = "flat".into();
    c.epsilon = 0.0;
    c.fill_defaults();
    c
}

fn vecs(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut v = vec![0.0; n * d];
    SeededRng::new(seed).fill_normal(&mut v, 1.0);
    v
}

/// `predicted` of every probe for `tenant` (None: untenanted); the decisions are left pending.
fn predictions(e: &Engine, probes: &[f32], d: usize, tenant: Option<&str>) -> Vec<Vec<f32>> {
    probes
        .chunks(d)
        .map(|x| match tenant {
            Some(t) => e.process_tenant(x, t).unwrap().predicted,
            None => e.process(x).unwrap().predicted,
        })
        .collect()
}

#[test]
fn tenant_feedback_adapts_only_that_tenant() {
    let d = 16;
    let e = Engine::new(cfg(d)).unwrap();
    let probes = vecs(8, d, 7);
    let b_before = predictions(&e, &probes, d, Some("b"));
    let shared_before = predictions(&e, &probes, d, None);
    let a_before = predictions(&e, &probes, d, Some("a"));
    let gen = e.model().generation;
    // Tenant A's traffic: every answer of the chosen tier is bad.
    let train = vecs(200, d, 3);
    for x in train.chunks(d) {
        let dec = e.process_tenant(x, "a").unwrap();
        e.feedback(dec.trajectory_id, 0.0, FeedbackSource::Explicit)
            .unwrap();
    }
    // Nothing shared moved: same weights generation, B and untenanted outputs bit-identical.
    assert_eq!(e.model().generation, gen);
    assert_eq!(predictions(&e, &probes, d, Some("b")), b_before);
    assert_eq!(predictions(&e, &probes, d, None), shared_before);
    // A's own representation moved, and its predictions with it.
    let (a, _) = (e.tenant_micro("a").unwrap(), ());
    assert!(a.bt.iter().any(|v| *v != 0.0));
    let a_after = predictions(&e, &probes, d, Some("a"));
    let moved: f32 = a_after
        .iter()
        .flatten()
        .zip(a_before.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .sum();
    assert!(
        moved > 1e-3,
        "tenant A's predictions did not move ({moved})"
    );
    let s: serde_json::Value = serde_json::from_str(&e.stats()).unwrap();
    assert_eq!(s["tenant_feedbacks"], 200);
    assert_eq!(s["tenant_adapters"], 2);
    // A tenant's trajectory takes one reward, like any other.
    let dec = e.process_tenant(&probes[..d], "a").unwrap();
    e.feedback(dec.trajectory_id, 1.0, FeedbackSource::Judge)
        .unwrap();
    assert!(matches!(
        e.feedback(dec.trajectory_id, 1.0, FeedbackSource::Judge),
        Err(SonaError::UnknownId { .. })
    ));
}

#[test]
fn untenanted_feedback_does_not_touch_tenants() {
    let d = 8;
    let e = Engine::new(cfg(d)).unwrap();
    let x = vecs(1, d, 1);
    e.process_tenant(&x, "a").unwrap();
    let a0 = e.tenant_micro("a").unwrap();
    for row in vecs(50, d, 2).chunks(d) {
        let dec = e.process(row).unwrap();
        e.feedback(dec.trajectory_id, 1.0, FeedbackSource::Explicit)
            .unwrap();
    }
    let a1 = e.tenant_micro("a").unwrap();
    assert_eq!((&a0.a, &a0.bt), (&a1.a, &a1.bt));
}

#[test]
fn map_is_bounded_lru() {
    let d = 8;
    let e = Engine::new(cfg(d)).unwrap();
    let x = vecs(1, d, 1);
    for i in 0..MAX_TENANTS {
        e.process_tenant(&x, &format!("t{i}")).unwrap();
    }
    e.process_tenant(&x, "t0").unwrap(); // t0 is now the most recently used
    e.process_tenant(&x, "new").unwrap();
    assert_eq!(e.tenant_count(), MAX_TENANTS);
    assert!(e.tenant_micro("t0").is_some());
    assert!(
        e.tenant_micro("t1").is_none(),
        "the least recently used is evicted"
    );
    let s: serde_json::Value = serde_json::from_str(&e.stats()).unwrap();
    assert_eq!(s["tenants_evicted"], 1);
}

#[test]
fn bad_tenants_and_vectors_change_nothing() {
    let d = 8;
    let e = Engine::new(cfg(d)).unwrap();
    let x = vecs(1, d, 1);
    let before = e.stats();
    let long = "x".repeat(257);
    for t in ["", "a\nb", long.as_str()] {
        assert!(matches!(
            e.process_tenant(&x, t),
            Err(SonaError::InvalidInput(_))
        ));
    }
    assert!(matches!(
        e.process_tenant(&x[..7], "a"),
        Err(SonaError::Dimension { .. })
    ));
    let mut nan = x.clone();
    nan[0] = f32::NAN;
    assert!(e.process_tenant(&nan, "a").is_err());
    assert_eq!(
        e.tenant_count(),
        1,
        "a valid name creates its adapter first"
    );
    let s0: serde_json::Value = serde_json::from_str(&before).unwrap();
    let s1: serde_json::Value = serde_json::from_str(&e.stats()).unwrap();
    assert_eq!(s0["processed"], s1["processed"]);
    assert_eq!(s0["pending"], s1["pending"]);
    let dec = e.process_tenant(&x, "a").unwrap();
    assert!(matches!(
        e.feedback(dec.trajectory_id, 1.5, FeedbackSource::Explicit),
        Err(SonaError::InvalidInput(_))
    ));
    e.feedback(dec.trajectory_id, 1.0, FeedbackSource::Explicit)
        .unwrap();
}

fn trained(dir: &std::path::Path) -> (Engine, Vec<f32>) {
    let d = 8;
    let e = Engine::new(cfg(d)).unwrap();
    let xs = vecs(40, d, 5);
    for (i, x) in xs.chunks(d).enumerate() {
        let t = if i % 2 == 0 { "a" } else { "b" };
        let dec = e.process_tenant(x, t).unwrap();
        e.feedback(
            dec.trajectory_id,
            (i % 3 == 0) as u8 as f32,
            FeedbackSource::Explicit,
        )
        .unwrap();
    }
    e.save(dir).unwrap();
    (e, xs)
}

#[test]
fn adapters_survive_save_and_load() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ck");
    let (e, xs) = trained(&dir);
    let l = Engine::load(&dir).unwrap();
    assert_eq!(l.tenant_count(), 2);
    for t in ["a", "b"] {
        let (w0, w1) = (e.tenant_micro(t).unwrap(), l.tenant_micro(t).unwrap());
        assert_eq!((&w0.a, &w0.bt), (&w1.a, &w1.bt));
        let p0 = e.process_tenant(&xs[..8], t).unwrap().predicted;
        let p1 = l.process_tenant(&xs[..8], t).unwrap().predicted;
        assert_eq!(p0, p1);
    }
}

#[test]
fn malformed_tenant_entries_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ck");
    let _ = trained(&dir);
    let path = dir.join("engine.ckpt");
    let original = std::fs::read(&path).unwrap();
    type Edit = Box<dyn Fn(&mut Checkpoint)>;
    let edits: Vec<Edit> = vec![
        Box::new(|ck| ck.set_meta("tenants", &serde_json::Value::Null).unwrap()),
        Box::new(|ck| ck.set_meta("tenants", &["a", "a"]).unwrap()),
        Box::new(|ck| ck.set_meta("tenants", &["a", ""]).unwrap()),
        Box::new(|ck| ck.set_meta("tenants", &["a"]).unwrap()),
        Box::new(|ck| ck.put_f32("tenants.bt", &[2, 16], &[f32::NAN; 32])),
        Box::new(|ck| ck.put_f32("tenants.mom.a", &[2, 15], &[0.0; 30])),
    ];
    for (i, edit) in edits.iter().enumerate() {
        let mut ck = Checkpoint::from_bytes(
            &original,
            sona_engine::persist::KIND,
            sona_engine::persist::VERSION,
        )
        .unwrap();
        edit(&mut ck);
        std::fs::write(&path, ck.to_bytes().unwrap()).unwrap();
        sona_engine::checkpoint::reseal(&dir).unwrap();
        assert!(
            matches!(Engine::load(&dir), Err(SonaError::Checkpoint(_))),
            "edit {i} was accepted"
        );
    }
}
