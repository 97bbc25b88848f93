//! Fuzz target of the log reader (stable Rust, proptest): a valid log is mutated (raw bytes of the
//! database file, and logical fields rewritten through SQLite so the file stays a valid database
//! and the row parser is reached); opening and reading must return `Ok` or `Err`, never panic.

use std::path::Path;

use proptest::prelude::*;
use rusqlite::Connection;
use sona_log::{Durability, FeedbackRec, Log, LogConfig, LogReader, Record, TrajectoryRec};

fn build(path: &Path) {
    let log = Log::open(LogConfig {
        path: path.to_path_buf(),
        dim: 3,
        durability: Durability::Sync,
        group_commit_ms: 1,
        queue_capacity: 64,
        retention_rows: 0,
        retention_s: 0.0,
    })
    .unwrap();
    for id in 1..=6u64 {
        log.append(Record::Trajectory(TrajectoryRec {
            id,
            ts_ms: id,
            tier: 1,
            propensity: 0.5,
            query: vec![1.0, 2.0, id as f32],
            features: vec![0.5; 4],
            recalled: vec![id, u64::MAX],
        }))
        .unwrap();
        log.append(Record::Feedback(FeedbackRec {
            id,
            reward: 0.5,
            source: "explicit".into(),
            ts_ms: id,
        }))
        .unwrap();
    }
    log.close();
    // Fold the WAL into the main file so byte mutations hit the records.
    let c = Connection::open(path).unwrap();
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;")
        .unwrap();
}

fn read_all(path: &Path) {
    if let Ok(r) = LogReader::open(path, None) {
        let _ = r.read_after(0, 1000);
        let _ = r.for_each_after(0, |_| Ok(()));
        let _ = r.trajectory(3);
        let _ = r.counts();
        let _ = r.last_seq();
    }
}

#[derive(Debug, Clone)]
enum Value {
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
    Null,
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::Int),
        prop_oneof![
            Just(-1i64),
            Just(0),
            Just(1),
            Just(2),
            Just(3),
            Just(255),
            Just(256)
        ]
        .prop_map(Value::Int),
        any::<f64>().prop_map(Value::Real),
        "[a-z]{0,20}".prop_map(Value::Text),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Blob),
        Just(Value::Null),
    ]
}

const COLUMNS: [&str; 11] = [
    "seq",
    "kind",
    "id",
    "ts_ms",
    "tier",
    "propensity",
    "reward",
    "source",
    "query",
    "features",
    "recalled",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn byte_mutations_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
                                  cut in proptest::option::of(any::<prop::sample::Index>())) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.db");
        build(&p);
        let mut bytes = std::fs::read(&p).unwrap();
        for (i, b) in flips {
            let at = i.index(bytes.len());
            bytes[at] ^= b | 1;
        }
        if let Some(c) = cut {
            bytes.truncate(c.index(bytes.len()));
        }
        std::fs::write(&p, &bytes).unwrap();
        read_all(&p);
    }

    #[test]
    fn logical_mutations_are_refused_or_valid(col in 0..COLUMNS.len(), row in 1i64..=12, v in value(),
                                              meta_key in prop_oneof![Just("format"), Just("dim")], meta_v in any::<i64>(),
                                              touch_meta in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.db");
        build(&p);
        {
            let c = Connection::open(&p).unwrap();
            let sql = format!("UPDATE records SET {} = ?1 WHERE seq = ?2", COLUMNS[col]);
            let r = match &v {
                Value::Int(x) => c.execute(&sql, rusqlite::params![x, row]),
                Value::Real(x) => c.execute(&sql, rusqlite::params![x, row]),
                Value::Text(x) => c.execute(&sql, rusqlite::params![x, row]),
                Value::Blob(x) => c.execute(&sql, rusqlite::params![x, row]),
                Value::Null => c.execute(&sql, rusqlite::params![Option::<i64>::None, row]),
            };
            let _ = r; // a constraint (NOT NULL, duplicate seq) may refuse the update
            if touch_meta {
                c.execute("UPDATE meta SET value = ?1 WHERE key = ?2", rusqlite::params![meta_v, meta_key]).unwrap();
            }
        }
        read_all(&p);
        // Whatever the reader accepts is a valid record.
        if let Ok(r) = LogReader::open(&p, None) {
            if let Ok(rows) = r.read_after(0, 1000) {
                for l in rows {
                    prop_assert!(l.record.validate().is_ok());
                }
            }
        }
    }
}
