use super::*;
use sona_reasoning::index::synthetic::clustered_unit_vectors;

fn engine(reuse: bool) -> Engine {
    let mut cfg = EngineConfig::new(24);
    cfg.learning_mode = crate::config::LearningMode::InstantOnly;
    cfg.bank_index = "ivf".into();
    cfg.seed = 5;
    cfg.loop_b_steps = 20;
    cfg.loop_b_batch = 8;
    let mut inner = Inner::new(cfg).unwrap();
    inner.reuse_projections = reuse;
    let inner = Arc::new(inner);
    inner.replay_log(0).unwrap();
    Engine::start(inner)
}

/// Drives `e` through decisions that stay pending across bank changes (import, extraction,
/// pruning) and loop-B cycles (a new router), rewarding them in a shuffled order.
fn drive(e: &Engine, xs: &[f32], d: usize) {
    let rows: Vec<&[f32]> = xs.chunks_exact(d).collect();
    e.import_patterns(&clustered_unit_vectors(300, d, 8, 0.3, 9), 300)
        .unwrap();
    let mut open: Vec<u64> = Vec::new();
    for (i, x) in rows.iter().enumerate() {
        open.push(e.process(x).unwrap().trajectory_id);
        if i % 3 == 2 {
            // Reward an older one: some were decided before the changes below.
            let id = open.remove((i * 7) % open.len());
            let r = ((i * 37) % 11) as f32 / 10.0;
            e.feedback(id, r, FeedbackSource::Explicit).unwrap();
        }
        match i {
            60 => {
                e.bank().extract_patterns().unwrap();
            }
            90 => {
                e.background_learn().unwrap();
            }
            120 => {
                // (Eviction ranks by clock time, which two engines do not share; pruning by
                // support and reward is deterministic.)
                let rule = sona_reasoning::PruneRule {
                    min_support: 2,
                    min_reward: 0.5,
                    max_idle_ms: 0,
                };
                assert!(!e.bank().prune(rule, Some(u64::MAX)).unwrap().is_empty());
            }
            _ => {}
        }
    }
    for (j, id) in open.into_iter().enumerate() {
        e.feedback(id, (j % 2) as f32, FeedbackSource::Implicit)
            .unwrap();
    }
}

/// Reusing `process`'s projections changes nothing: after the same traffic (with an extraction,
/// pruning and a loop-B cycle between decisions and their rewards) the engine that reuses them
/// and the one that always re-reads the centroids hold bit-identical weights, arm statistics and
/// graph; and the reuse did happen (and did not where it could not).
#[test]
fn feedback_reuse_of_projections_is_exact() {
    let d = 24;
    let xs = clustered_unit_vectors(200, d, 8, 0.3, 3);
    let (fast, slow) = (engine(true), engine(false));
    drive(&fast, &xs, d);
    drive(&slow, &xs, d);
    let (mf, ms) = (fast.model(), slow.model());
    assert_eq!(mf.generation, ms.generation);
    assert_eq!(*mf.router, *ms.router);
    assert_eq!(mf.micro.a, ms.micro.a);
    assert_eq!(mf.micro.bt, ms.micro.bt);
    assert_eq!(mf.head.a, ms.head.a);
    assert_eq!(mf.head.bt, ms.head.bt);
    assert_eq!(*mf.readout, *ms.readout);
    let key = |e: &Engine| -> Vec<_> {
        // Timestamps aside (each engine has its own clock).
        let p = e.bank().patterns();
        p.into_iter()
            .map(|p| (p.id, p.centroid, p.arms, p.support, p.avg_reward))
            .collect()
    };
    assert_eq!(key(&fast), key(&slow));
    assert_eq!(fast.bank().graph_edges(), slow.bank().graph_edges());
    let reused = fast.inner.projections_reused.load(Relaxed);
    let total = fast.inner.feedbacks.load(Relaxed);
    assert_eq!(total, 200);
    assert_eq!(slow.inner.projections_reused.load(Relaxed), 0);
    assert!(reused > 50 && reused < total, "{reused} of {total} reused");
}

/// Loop A writes its micro adapters and read-out into the buffers of the snapshot it replaced
/// (when no reader holds it): an engine whose every old snapshot is still held by a reader (so it
/// always copies fresh buffers) ends with the same weights bit for bit, and the reuse happened.
#[test]
fn feedback_reuse_of_replaced_buffers_is_exact() {
    let d = 24;
    let xs = clustered_unit_vectors(120, d, 8, 0.3, 4);
    let (recycling, copying) = (engine(true), engine(true));
    let mut held = Vec::new();
    for (i, x) in xs.chunks_exact(d).enumerate() {
        let r = ((i * 37) % 11) as f32 / 10.0;
        for e in [&recycling, &copying] {
            let id = e.process(x).unwrap().trajectory_id;
            e.feedback(id, r, FeedbackSource::Explicit).unwrap();
        }
        held.push(copying.model());
        if i == 10 {
            let spare = &recycling.inner.writer.lock().spare;
            assert!(spare.micro.is_some() && spare.head.is_some() && spare.readout.is_some());
            assert!(copying.inner.writer.lock().spare.micro.is_none());
        }
    }
    let (a, b) = (recycling.model(), copying.model());
    assert_eq!(a.generation, b.generation);
    assert_eq!((&a.micro.a, &a.micro.bt), (&b.micro.a, &b.micro.bt));
    assert_eq!((&a.head.a, &a.head.bt), (&b.head.a, &b.head.bt));
    assert_eq!(*a.readout, *b.readout);
}
