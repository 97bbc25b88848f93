//! Behaviour of the log: modes, ordering, reopen, retention, refusal of foreign files.

use std::sync::Arc;

use sona_log::{Durability, FeedbackRec, Log, LogConfig, LogReader, Record, TrajectoryRec};

fn cfg(path: &std::path::Path, durability: Durability) -> LogConfig {
    LogConfig {
        path: path.to_path_buf(),
        dim: 4,
        durability,
        group_commit_ms: 5,
        queue_capacity: 1024,
        retention_rows: 0,
        retention_s: 0.0,
    }
}

fn traj(id: u64) -> Record {
    Record::Trajectory(TrajectoryRec {
        id,
        ts_ms: 1000 + id,
        tier: (id % 4) as u8,
        propensity: 0.5,
        query: vec![id as f32, 1.0, 2.0, 3.0],
        features: vec![0.25; 6],
        recalled: vec![7, u64::MAX],
    })
}

fn fb(id: u64) -> Record {
    Record::Feedback(FeedbackRec {
        id,
        reward: 0.75,
        source: "judge".into(),
        ts_ms: 2000 + id,
    })
}

#[test]
fn sync_appends_are_committed_in_order_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("log.db");
    let log = Arc::new(Log::open(cfg(&p, Durability::Sync)).unwrap());
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let log = log.clone();
            s.spawn(move || {
                for i in 0..50u64 {
                    let id = 1 + t * 1000 + i;
                    let a = log.append(traj(id)).unwrap();
                    let b = log.append(fb(id)).unwrap();
                    assert!(b > a);
                    log.wait(b).unwrap();
                    assert!(log.committed() >= b);
                }
            });
        }
    });
    assert_eq!(log.last_seq(), 400);
    // Group commit: fewer transactions than records.
    assert!(log.commits() <= 400, "{}", log.commits());
    drop(log);
    let r = LogReader::open(&p, Some(4)).unwrap();
    assert_eq!(r.counts().unwrap(), (200, 200));
    let all = r.read_after(0, 1000).unwrap();
    assert_eq!(all.len(), 400);
    assert!(all.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    let (_, t) = r.trajectory(1005).unwrap().unwrap();
    assert_eq!(Record::Trajectory(t), traj(1005));
    assert!(r.trajectory(999_999).unwrap().is_none());
    assert_eq!(r.read_after(390, 1000).unwrap().len(), 10);
    // Reopening continues the sequence.
    let log = Log::open(cfg(&p, Durability::Group)).unwrap();
    assert_eq!(log.append(traj(5000)).unwrap(), 401);
    log.flush().unwrap();
}

#[test]
fn group_mode_commits_within_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("log.db");
    let log = Log::open(cfg(&p, Durability::Group)).unwrap();
    let t0 = std::time::Instant::now();
    let mut last = 0;
    for id in 1..=100 {
        last = log.append(traj(id)).unwrap();
    }
    log.wait(last).unwrap();
    assert!(t0.elapsed().as_millis() < 2000);
    assert!(
        log.commits() < 100,
        "group commit batched: {}",
        log.commits()
    );
    drop(log);
    assert_eq!(
        LogReader::open(&p, None).unwrap().counts().unwrap(),
        (100, 0)
    );
}

#[test]
fn retention_deletes_only_checkpointed_records() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("log.db");
    let mut c = cfg(&p, Durability::Sync);
    c.retention_rows = 10;
    let log = Log::open(c).unwrap();
    for id in 1..=100 {
        log.append(traj(id)).unwrap();
    }
    log.flush().unwrap();
    log.set_checkpointed(50);
    std::thread::sleep(std::time::Duration::from_millis(700));
    log.append(traj(101)).unwrap();
    log.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    log.close();
    let r = LogReader::open(&p, None).unwrap();
    let all = r.read_after(0, 1000).unwrap();
    // Everything after the checkpoint is kept even though it exceeds the row limit.
    assert_eq!(all.first().unwrap().seq, 51);
    assert_eq!(all.len(), 51);
}

#[test]
fn foreign_and_mismatched_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("log.db");
    drop(Log::open(cfg(&p, Durability::Sync)).unwrap());
    let mut c = cfg(&p, Durability::Sync);
    c.dim = 5;
    assert!(Log::open(c).is_err());
    assert!(LogReader::open(&p, Some(5)).is_err());
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"not a database at all, just text").unwrap();
    assert!(LogReader::open(&junk, None).is_err());
    assert!(LogReader::open(dir.path(), None).is_err());
    assert!(LogReader::open(dir.path().join("missing.db"), None).is_err());
    assert!(Log::open(cfg(&junk, Durability::Group)).is_err());
    assert!(Log::open(cfg(&p, Durability::Off)).is_err());
    let closed = Log::open(cfg(&dir.path().join("c.db"), Durability::Group)).unwrap();
    closed.close();
    assert!(closed.append(traj(1)).is_err());
}
