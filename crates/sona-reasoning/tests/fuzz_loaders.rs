//! Fuzz targets of the bank's loaders — the checkpoint (`ReasoningBank::load`) and pattern import
//! (`records_from_json` + `ReasoningBank::import`): a valid file or export is mutated — raw bytes
//! (with and without a recomputed checksum) and logical fields written back through the real
//! writers (`Checkpoint`, `to_json`) so the parser is reached — and the answer must be an error or a
//! bank that searches, records, extracts and saves a file that loads again; never a panic or hang.

#[path = "../../sona-index/tests/support/mod.rs"]
mod support;

use std::sync::OnceLock;

use proptest::prelude::*;
use sona_core::types::RewardSource;
use sona_core::{Checkpoint, SonaError};
use sona_index::synthetic::blobs;
use sona_reasoning::checkpoint::{KIND, VERSION};
use sona_reasoning::{records_from_json, to_json, BankConfig, PatternRecord, ReasoningBank};
use support::{resign, rewrite, within, Field, Mutation};

const D: usize = 8;

/// A bank with patterns, a hierarchy, graph edges, buffered, reservoir and pending trajectories.
fn bank() -> ReasoningBank {
    let (pts, _) = blobs(240, 6, D, 0.3, 3);
    let mut cfg = BankConfig::new(D, 3);
    cfg.seed = 5;
    cfg.reservoir_capacity = 32;
    cfg.pending_capacity = 16;
    let bank = ReasoningBank::new(cfg).unwrap();
    let add = |i: usize, reward: Option<f32>| {
        bank.add_trajectory(
            &pts[i * D..(i + 1) * D],
            reward,
            Some((i % 3) as u8),
            RewardSource::Explicit,
            Some(1_000 + i as u64),
        )
        .unwrap()
    };
    (0..180).for_each(|i| {
        add(i, Some((i % 5) as f32 / 4.0));
    });
    bank.extract_patterns().unwrap();
    bank.build_hierarchy(2, 1).unwrap();
    let ids: Vec<u64> = bank.patterns().iter().map(|p| p.id).collect();
    bank.record_usage(&ids[..3], &ids[..2]).unwrap();
    (180..230).for_each(|i| {
        add(i, Some(0.5));
    });
    (230..240).for_each(|i| {
        add(i, None);
    });
    bank
}

fn saved() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        bank()
            .to_checkpoint()
            .unwrap()
            .to_first_format_bytes()
            .unwrap()
    })
}

/// Every field the bank's loader reads.
fn fields(levels: usize) -> Vec<Field> {
    let mut f: Vec<Field> = ["config", "counters", "patterns", "levels"]
        .iter()
        .map(|m| Field::Meta(m.to_string()))
        .collect();
    f.push(Field::F32("patterns.centroids".into()));
    f.push(Field::U64("patterns.stats".into()));
    for l in 1..=levels {
        f.push(Field::F32(format!("level{l}.centroids")));
        f.push(Field::U64(format!("level{l}.stats")));
    }
    f.push(Field::U64("graph.edges".into()));
    f.push(Field::F32("graph.weights".into()));
    for s in ["ring", "reservoir", "pending"] {
        f.push(Field::F32(format!("{s}.vectors")));
        for t in ["ids", "ts", "small"] {
            f.push(Field::U64(format!("{s}.{t}")));
        }
        f.push(Field::F32(format!("{s}.rewards")));
    }
    f
}

fn load(bytes: &[u8]) -> Result<ReasoningBank, SonaError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bank.ckpt");
    std::fs::write(&path, bytes).unwrap();
    ReasoningBank::load(&path)
}

/// A loaded (or imported-into) bank must answer every operation and save a file that loads again.
fn exercise(bank: &ReasoningBank) {
    let d = bank.dim();
    let q: Vec<f32> = (0..d).map(|i| 1.0 + i as f32).collect();
    let n = bank.len();
    let hits = bank.search(&q, 4).unwrap();
    assert!(hits.len() <= 4.min(n));
    for (_, s) in &hits {
        assert!(s.is_finite() && s.abs() <= 1.0 + 1e-3);
    }
    bank.search_expanded(&q, 2, 2).unwrap();
    bank.verdicts();
    bank.stats();
    let n_tiers = bank.config().n_tiers as u8;
    // A counter loaded at its limit refuses new ids with a clear error; anything else must work.
    let exhausted =
        |e: &SonaError| matches!(e, SonaError::InvalidInput(m) if m.contains("exhausted"));
    match bank.add_trajectory(&q, Some(0.5), Some(n_tiers - 1), RewardSource::Judge, None) {
        Err(e) if exhausted(&e) => {}
        r => {
            r.unwrap();
            let pending = bank
                .add_trajectory(&q, None, None, RewardSource::Explicit, None)
                .unwrap();
            bank.set_reward(pending, 1.0, RewardSource::Explicit, Some(0))
                .unwrap();
        }
    }
    if let Err(e) = bank.extract_patterns() {
        assert!(exhausted(&e), "{e}");
    }
    let (recs, _) = bank.export();
    for r in &recs {
        assert!(r.avg_reward.is_finite() && r.arms.iter().all(|a| a.mean.is_finite()));
    }
    let bytes = bank.to_checkpoint().unwrap().to_bytes().unwrap();
    let back = load(&bytes).expect("a saved bank reloads");
    assert_eq!(back.patterns(), bank.patterns());
}

fn check(bytes: Vec<u8>) {
    within(30, move || {
        if let Ok(bank) = load(&bytes) {
            exercise(&bank);
        }
    });
}

fn level_count() -> usize {
    let ck = Checkpoint::from_bytes(saved(), KIND, VERSION).unwrap();
    ck.meta::<Vec<serde_json::Value>>("levels").unwrap().len()
}

#[test]
fn rewritten_checkpoint_without_mutation_loads_unchanged() {
    let ck = Checkpoint::from_bytes(saved(), KIND, VERSION).unwrap();
    let copy = rewrite(&ck, &fields(level_count()), None);
    let back = load(&copy.to_bytes().unwrap()).unwrap();
    let orig = load(saved()).unwrap();
    assert_eq!(back.patterns(), orig.patterns());
    assert_eq!(
        back.level_patterns(1).unwrap(),
        orig.level_patterns(1).unwrap()
    );
    assert_eq!(back.stats(), orig.stats());
    exercise(&back);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(160))]

    #[test]
    fn checkpoint_field_mutations_never_panic_or_hang(
        field in any::<usize>(),
        op in any::<u8>(),
        pos in any::<usize>(),
        pick in any::<usize>(),
        random in any::<u64>(),
    ) {
        let ck = Checkpoint::from_bytes(saved(), KIND, VERSION).unwrap();
        let m = Mutation { field, op, pos, pick, random };
        check(rewrite(&ck, &fields(level_count()), Some(m)).to_bytes().unwrap());
    }

    #[test]
    fn checkpoint_byte_mutations_never_panic_or_hang(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in proptest::option::of(any::<usize>()),
        sign in any::<bool>(),
    ) {
        let mut bytes = saved().to_vec();
        for (at, x) in flips {
            let i = at % bytes.len();
            bytes[i] ^= x.max(1);
        }
        if let Some(c) = cut {
            bytes.truncate(c % bytes.len());
        }
        if !(sign && resign(&mut bytes)) {
            prop_assert!(load(&bytes).is_err());
        }
        check(bytes);
    }

    #[test]
    fn import_mutations_never_panic_hang_or_leave_an_unloadable_bank(
        op in any::<u8>(),
        pos in any::<usize>(),
        pick in any::<usize>(),
        random in any::<u64>(),
        in_centroids in any::<bool>(),
    ) {
        let src = load(saved()).unwrap();
        let (recs, mut cents) = src.export();
        let mut json: serde_json::Value =
            serde_json::from_str(&to_json(&recs).unwrap()).unwrap();
        let m = Mutation { field: 0, op, pos, pick, random };
        let mut fields_ck = Checkpoint::new("import", 1);
        if in_centroids {
            fields_ck.put_f32("c", &[recs.len(), D], &cents);
            let out = rewrite(&fields_ck, &[Field::F32("c".into())], Some(m));
            cents = out.get_f32("c").unwrap().1;
        } else {
            fields_ck.set_meta("r", &json).unwrap();
            let out = rewrite(&fields_ck, &[Field::Meta("r".into())], Some(m));
            json = out.meta("r").unwrap();
        }
        let text = json.to_string();
        within(30, move || {
            let Ok(records) = records_from_json(&text) else { return };
            let dst = ReasoningBank::new(BankConfig::new(D, 3)).unwrap();
            let before = dst.stats();
            match dst.import(records, &cents) {
                Ok(_) => exercise(&dst),
                Err(_) => assert_eq!(dst.stats(), before, "a failed import changed the bank"),
            }
        });
    }
}

// --- crafted checkpoints of issue 9 --------------------------------------------------------------

fn with_meta(key: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let ck = Checkpoint::from_bytes(saved(), KIND, VERSION).unwrap();
    let mut out = rewrite(&ck, &fields(level_count()), None);
    let mut v: serde_json::Value = ck.meta(key).unwrap();
    edit(&mut v);
    out.set_meta(key, &v).unwrap();
    out.to_bytes().unwrap()
}

fn refused(bytes: &[u8], what: &str) {
    match load(bytes) {
        Err(SonaError::Checkpoint(_)) => {}
        Err(e) => panic!("{what}: expected a CheckpointError, got {e:?}"),
        Ok(_) => panic!("{what}: loaded"),
    }
}

/// Sets every number inside `v` to 0.
fn zero_all(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Number(_) => *v = 0.into(),
        serde_json::Value::Array(a) => a.iter_mut().for_each(zero_all),
        serde_json::Value::Object(o) => o.values_mut().for_each(zero_all),
        _ => {}
    }
}

#[test]
fn an_all_zero_reservoir_rng_is_refused_so_recording_cannot_hang() {
    // xoshiro's fixed point: every draw is 0, and the reservoir's rejection sampling looped
    // forever on the next completed trajectory.
    let bytes = with_meta("counters", |c| zero_all(&mut c["reservoir_rng"]));
    within(30, move || match load(&bytes) {
        Err(SonaError::Checkpoint(_)) => {}
        other => {
            // Should it ever load, recording must still return.
            let bank = other.expect("refused or loaded");
            for _ in 0..64 {
                bank.add_trajectory(&[1.0; D], Some(0.5), None, RewardSource::Explicit, None)
                    .unwrap();
            }
        }
    });
}

#[test]
fn counters_without_room_are_refused() {
    for key in ["next_pattern_id", "next_trajectory_id"] {
        refused(
            &with_meta("counters", |c| c[key] = u64::MAX.into()),
            &format!("{key} = 2^64 - 1"),
        );
    }
    refused(
        &with_meta("counters", |c| c["next_pattern_id"] = 1.into()),
        "pattern ids beyond the counter",
    );
}

#[test]
fn absurd_capacities_are_refused() {
    for key in [
        "buffer_capacity",
        "reservoir_capacity",
        "pending_capacity",
        "dim",
    ] {
        refused(
            &with_meta("config", |c| c[key] = (1u64 << 60).into()),
            &format!("{key} = 2^60"),
        );
    }
    refused(
        &with_meta("config", |c| c["graph"]["max_edges"] = (1u64 << 60).into()),
        "graph max_edges = 2^60",
    );
}

#[test]
fn repeated_or_foreign_level_ids_are_refused() {
    let first = load(saved()).unwrap().patterns()[0].id;
    refused(
        &with_meta("levels", |l| l[0]["patterns"][0]["id"] = first.into()),
        "a level pattern reusing a level-0 id",
    );
    refused(
        &with_meta("levels", |l| l[0]["level"] = 3.into()),
        "a level stored at the wrong position",
    );
}

#[test]
fn imported_records_with_ids_near_2_64_are_refused() {
    let src = load(saved()).unwrap();
    let (mut recs, cents) = src.export();
    let dst = ReasoningBank::new(BankConfig::new(D, 3)).unwrap();
    recs[0].id = u64::MAX - 1;
    let r: Vec<PatternRecord> = records_from_json(&to_json(&recs).unwrap()).unwrap();
    assert!(matches!(
        dst.import(r, &cents),
        Err(SonaError::InvalidInput(_))
    ));
    assert!(dst.is_empty());
}
