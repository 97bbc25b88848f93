//! The checkpoint's log position is an exact cut: checkpoints taken while several threads process
//! and reward, each loaded on its own with the log replayed, end with every logged feedback
//! applied exactly once.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

use sona_core::SeededRng;
use sona_engine::checkpoint::verify;
use sona_engine::{Engine, EngineConfig, FeedbackSource, LearningMode};
use sona_log::{LogReader, Record};

const DIM: usize = 16;

fn cfg(log: &Path, durability: &str) -> EngineConfig {
    let mut c = EngineConfig::new(DIM);
    c.learning_mode = LearningMode::InstantOnly;
    c.bank_index = "flat".into();
    c.log_path = Some(log.display().to_string());
    c.durability = durability.into();
    c.group_commit_ms = 2;
    c.fill_defaults();
    c
}

fn stat(s: &serde_json::Value, path: &[&str]) -> u64 {
    path.iter()
        .fold(s, |v, k| &v[*k])
        .as_u64()
        .unwrap_or_else(|| panic!("stats has no {path:?}"))
}

/// `(trajectories, feedbacks)` logged after `seq`.
fn logged_after(log: &Path, seq: u64) -> (u64, u64) {
    let reader = LogReader::open(log, Some(DIM)).unwrap();
    let (mut t, mut f) = (0, 0);
    reader
        .for_each_after(seq, |l| {
            match l.record {
                Record::Trajectory(_) => t += 1,
                Record::Feedback(_) => f += 1,
            }
            Ok(())
        })
        .unwrap();
    (t, f)
}

fn checkpoints_under_concurrent_feedback(durability: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log.db");
    let e = Engine::new(cfg(&log, durability)).unwrap();
    let done = AtomicBool::new(false);
    // Workers pause halfway until two checkpoints exist, so at least two cuts land mid-traffic
    // however fast the decisions are.
    let saved = AtomicUsize::new(0);
    let mut dirs: Vec<PathBuf> = Vec::new();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..4u64)
            .map(|k| {
                let (e, saved) = (&e, &saved);
                s.spawn(move || {
                    let mut rng = SeededRng::new(k + 1);
                    let mut x = vec![0.0f32; DIM];
                    for i in 0..250 {
                        while i == 125 && saved.load(Relaxed) < 2 {
                            std::thread::yield_now();
                        }
                        rng.fill_normal(&mut x, 1.0);
                        let d = e.process(&x).unwrap();
                        // Every fifth decision stays pending across the checkpoints.
                        if i % 5 != 0 {
                            e.feedback(d.trajectory_id, 0.5, FeedbackSource::Explicit)
                                .unwrap();
                        }
                    }
                })
            })
            .collect();
        let saver = s.spawn(|| {
            let mut out = Vec::new();
            while !done.load(Relaxed) && out.len() < 12 {
                let dir = tmp.path().join(format!("ck{}", out.len()));
                e.save(&dir).unwrap();
                out.push(dir);
                saved.fetch_add(1, Relaxed);
            }
            out
        });
        for w in workers {
            w.join().unwrap();
        }
        done.store(true, Relaxed);
        dirs = saver.join().unwrap();
    });
    e.flush_log().unwrap();
    let total: serde_json::Value = serde_json::from_str(&e.stats()).unwrap();
    e.close();
    let (all_t, all_f) = logged_after(&log, 0);
    assert_eq!((all_t, all_f), (1000, 800));
    assert_eq!(stat(&total, &["feedbacks"]), all_f);
    assert!(dirs.len() >= 2, "{} checkpoints", dirs.len());
    let mut cuts = Vec::new();
    for dir in &dirs {
        let seq = verify(dir).unwrap().log_seq;
        let (after_t, after_f) = logged_after(&log, seq);
        let r = Engine::load(dir).unwrap();
        let s: serde_json::Value = serde_json::from_str(&r.stats()).unwrap();
        r.close();
        // Applied exactly once: a feedback in the snapshot but logged after the cut would be
        // replayed again (its trajectory is re-read from the log), one logged before the cut but
        // missing from the snapshot would never be applied.
        assert_eq!(
            stat(&s, &["feedbacks"]),
            all_f,
            "{} (seq {seq})",
            dir.display()
        );
        assert_eq!(
            stat(&s, &["processed"]),
            all_t,
            "{} (seq {seq})",
            dir.display()
        );
        assert_eq!(stat(&s, &["durability", "replay_skipped"]), 0);
        assert_eq!(stat(&s, &["durability", "replayed"]), after_t + after_f);
        cuts.push(seq);
    }
    // The saves really raced the workers: at least one cut fell strictly inside the run.
    assert!(
        cuts.iter().any(|&c| c > 0 && c < all_t + all_f),
        "no checkpoint was taken during the load: {cuts:?}"
    );
}

#[test]
fn checkpoint_cut_is_exact_under_concurrent_feedback_group() {
    checkpoints_under_concurrent_feedback("group");
}

#[test]
fn checkpoint_cut_is_exact_under_concurrent_feedback_sync() {
    checkpoints_under_concurrent_feedback("sync");
}
