//! Process / feedback / loop B through the public API, and bad input leaving state unchanged.

use sona_core::{SeededRng, SonaError};
use sona_engine::{Engine, EngineConfig, FeedbackSource, LearningMode};

fn cfg(dim: usize) -> EngineConfig {
    let mut c = EngineConfig::new(dim);
    c.learning_mode = LearningMode::InstantOnly;
    c.bank_index = "flat".into();
    c.fill_defaults();
    c
}

fn vecs(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut v = vec![0.0; n * d];
    SeededRng::new(seed).fill_normal(&mut v, 1.0);
    v
}

#[test]
fn process_feedback_round_trip() {
    let e = Engine::new(cfg(16)).unwrap();
    let xs = vecs(10, 16, 1);
    let mut ids = Vec::new();
    for row in xs.chunks(16) {
        let d = e.process(row).unwrap();
        assert!(d.tier < 4);
        assert!(d.propensity > 0.0 && d.propensity <= 1.0);
        assert_eq!(d.utilities.len(), 4);
        assert!(d.predicted.iter().all(|p| (0.0..=1.0).contains(p)));
        ids.push(d.trajectory_id);
    }
    // Ids are fresh and increasing.
    assert!(ids.windows(2).all(|w| w[1] > w[0]));
    let g0 = e.model().generation;
    for &id in &ids {
        e.feedback(id, 0.7, FeedbackSource::Explicit).unwrap();
    }
    assert!(e.model().generation > g0);
    let s: serde_json::Value = serde_json::from_str(&e.stats()).unwrap();
    assert_eq!(s["processed"], 10);
    assert_eq!(s["feedbacks"], 10);
    assert_eq!(s["pending"], 0);
    let r = e.background_learn().unwrap();
    assert!(r.patterns_total > 0);
    assert!(r.replayed > 0);
    let d = e.process(&xs[..16]).unwrap();
    assert!(!d.patterns.is_empty());
}

#[test]
fn bad_input_leaves_state_unchanged() {
    let e = Engine::new(cfg(8)).unwrap();
    let x = vecs(1, 8, 2);
    let d = e.process(&x).unwrap();
    let before = e.stats();
    let gen = e.model().generation;
    assert!(matches!(
        e.process(&x[..7]),
        Err(SonaError::Dimension { .. })
    ));
    let mut bad = x.clone();
    bad[3] = f32::NAN;
    assert!(matches!(e.process(&bad), Err(SonaError::NonFinite { .. })));
    assert!(e.process(&[0.0; 8]).is_err());
    for r in [1.5, -0.1, f32::NAN, f32::INFINITY] {
        assert!(matches!(
            e.feedback(d.trajectory_id, r, FeedbackSource::Explicit),
            Err(SonaError::InvalidInput(_))
        ));
    }
    assert!(matches!(
        e.feedback(d.trajectory_id + 100, 0.5, FeedbackSource::Explicit),
        Err(SonaError::UnknownId { .. })
    ));
    assert!(e
        .feedback_batch(&[d.trajectory_id, 999], &[0.5, 0.5], FeedbackSource::Judge)
        .is_err());
    assert!(e
        .feedback_batch(
            &[d.trajectory_id, d.trajectory_id],
            &[0.5, 0.5],
            FeedbackSource::Judge
        )
        .is_err());
    assert!(e
        .feedback_batch(&[d.trajectory_id], &[0.5, 0.5], FeedbackSource::Judge)
        .is_err());
    assert!(e.process_batch(&x, 2).is_err());
    assert_eq!(e.stats(), before);
    assert_eq!(e.model().generation, gen);
    // The id still works once, then is gone.
    e.feedback(d.trajectory_id, 0.5, FeedbackSource::Error)
        .unwrap();
    assert!(matches!(
        e.feedback(d.trajectory_id, 0.5, FeedbackSource::Explicit),
        Err(SonaError::UnknownId { .. })
    ));
    assert!(FeedbackSource::parse("oracle").is_err());
    e.close();
    assert!(e.process(&x).is_err());
    assert!(e.background_learn().is_err());
    e.close();
}

#[test]
fn process_batch_matches_single_calls_in_shape() {
    let e = Engine::new(cfg(8)).unwrap();
    let xs = vecs(200, 8, 3);
    let ds = e.process_batch(&xs, 200).unwrap();
    assert_eq!(ds.len(), 200);
    let mut ids: Vec<u64> = ds.iter().map(|d| d.trajectory_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 200);
}

#[test]
fn process_batch_decides_exactly_as_process_row_after_row() {
    use sona_reasoning::index::synthetic::clustered_unit_vectors;
    // Every bank index (IVF: trained lists, the batched search), ε-greedy exploration seeded by
    // the trajectory id, weights moved by feedback first: two identical engines, one batched.
    for index in ["ivf", "flat", "hnsw"] {
        let d = 32;
        let mut c = cfg(d);
        c.bank_index = index.into();
        c.epsilon = 0.3;
        let (a, b) = (Engine::new(c.clone()).unwrap(), Engine::new(c).unwrap());
        let all = clustered_unit_vectors(2000 + 700, d, 24, 0.5, 7);
        let (pats, xs) = all.split_at(2000 * d);
        for e in [&a, &b] {
            e.import_patterns(pats, 2000).unwrap();
            for row in xs[..20 * d].chunks(d) {
                let t = e.process(row).unwrap().trajectory_id;
                e.feedback(t, 0.8, FeedbackSource::Explicit).unwrap();
            }
        }
        let rows = &xs[20 * d..];
        let n = rows.len() / d;
        let batched = a.process_batch(rows, n).unwrap();
        let single: Vec<_> = rows.chunks(d).map(|r| b.process(r).unwrap()).collect();
        assert_eq!(batched, single, "{index}");
        assert!(batched.iter().any(|x| x.explored) && batched.iter().any(|x| !x.explored));
        assert!(batched.iter().all(|x| x.patterns.len() == 4));
        // A batch of one, and the recorded trajectories take feedback.
        let one = a.process_batch(&rows[..d], 1).unwrap();
        assert_eq!(one, vec![b.process(&rows[..d]).unwrap()]);
        for x in batched.iter().take(50) {
            a.feedback(x.trajectory_id, 0.2, FeedbackSource::Judge)
                .unwrap();
        }
        // A row whose adapted query is zero fails the whole batch before anything is recorded.
        let before = a.stats();
        let mut bad = rows[..100 * d].to_vec();
        bad[70 * d..71 * d].fill(0.0);
        assert!(a.process_batch(&bad, 100).is_err());
        let now: serde_json::Value = serde_json::from_str(&a.stats()).unwrap();
        let was: serde_json::Value = serde_json::from_str(&before).unwrap();
        assert_eq!(now["processed"], was["processed"], "{index}");
    }
}

#[test]
fn background_thread_runs_and_stops() {
    let mut c = cfg(8);
    c.learning_mode = LearningMode::InstantAndBackground;
    c.loop_b_every = 20;
    c.loop_b_steps = 2;
    let e = Engine::new(c).unwrap();
    let xs = vecs(60, 8, 4);
    for row in xs.chunks(8) {
        let d = e.process(row).unwrap();
        e.feedback(d.trajectory_id, 1.0, FeedbackSource::Implicit)
            .unwrap();
    }
    let t0 = std::time::Instant::now();
    loop {
        let s: serde_json::Value = serde_json::from_str(&e.stats()).unwrap();
        if s["loop_b_runs"].as_u64().unwrap() >= 1 {
            break;
        }
        assert!(t0.elapsed().as_secs() < 20, "loop B never ran");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    e.close();
    assert!(e.is_closed());
}

#[test]
fn loop_b_publishes_one_consistent_snapshot_without_losing_loop_a_steps() {
    let mut c = cfg(16);
    c.loop_b_steps = 30;
    let e = Engine::new(c).unwrap();
    let xs = vecs(300, 16, 5);
    for row in xs[..100 * 16].chunks(16) {
        let d = e.process(row).unwrap();
        e.feedback(d.trajectory_id, 0.8, FeedbackSource::Explicit)
            .unwrap();
    }
    let g0 = e.model().generation;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (cycles, seen) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut last = 0;
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let m = e.model();
                assert!(m.generation >= last, "generation went back");
                assert!(m.is_finite());
                last = m.generation;
                n += 1;
            }
            n
        });
        let learner = s.spawn(|| {
            for _ in 0..3 {
                e.background_learn().unwrap();
            }
            3usize
        });
        for row in xs[100 * 16..].chunks(16) {
            let d = e.process(row).unwrap();
            e.feedback(d.trajectory_id, 0.3, FeedbackSource::Judge)
                .unwrap();
        }
        let cycles = learner.join().unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (cycles, reader.join().unwrap())
    });
    assert!(seen > 0);
    let s: serde_json::Value = serde_json::from_str(&e.stats()).unwrap();
    assert_eq!(s["rejected_steps"], 0);
    // Every loop-A step (one publish each) and every loop-B cycle is one generation: none lost.
    assert_eq!(e.model().generation, g0 + 200 + cycles as u64);
    assert_eq!(s["feedbacks"], 300);
}

#[test]
fn a_shift_of_the_inputs_is_a_task_boundary_and_consolidates_ewc() {
    let mut c = cfg(16);
    c.loop_b_steps = 5;
    let e = Engine::new(c).unwrap();
    let feed = |xs: &[f32]| {
        for row in xs.chunks(16) {
            let d = e.process(row).unwrap();
            e.feedback(d.trajectory_id, 0.5, FeedbackSource::Explicit)
                .unwrap();
        }
    };
    feed(&vecs(400, 16, 6));
    let r1 = e.background_learn().unwrap();
    assert!(!r1.boundary_detected);
    let mut shifted = vecs(300, 16, 7);
    for (i, v) in shifted.iter_mut().enumerate() {
        if i % 16 < 4 {
            *v += 2.0;
        }
    }
    feed(&shifted);
    let r2 = e.background_learn().unwrap();
    assert!(r2.boundary_detected);
    assert_eq!(r2.ewc_tasks, 1);
    assert!(r2.ewc_penalty.is_finite());
}
