//! Fuzz targets of the index loaders (flat, IVF, HNSW): a valid file is mutated — raw bytes (with
//! and without a recomputed checksum) and logical fields written back through the real writer so
//! the parser is reached — and loading must give an error or an index that searches, inserts,
//! deletes and saves; never a panic or a hang. Plus the crafted files of issue 9 as regressions.

mod support;

use proptest::prelude::*;
use sona_core::{Checkpoint, SonaError};
use sona_index::synthetic::clustered_unit_vectors;
use sona_index::{
    AnyIndex, HnswParams, IndexKind, IvfParams, VectorIndex, CHECKPOINT_KIND, CHECKPOINT_VERSION,
};
use support::{edit_header, resign, rewrite, within, Field, Mutation};

const DIM: usize = 8;
const N: usize = 60;

fn kind(k: usize) -> IndexKind {
    match k % 3 {
        0 => IndexKind::Flat,
        1 => IndexKind::Hnsw(HnswParams {
            m: 4,
            ef_construction: 16,
            ..HnswParams::default()
        }),
        _ => IndexKind::Ivf(IvfParams {
            min_train: 16,
            ..IvfParams::default()
        }),
    }
}

/// A saved index of each kind with `N` clustered vectors and a few deletions (tombstones, moved
/// rows), as a checkpoint.
fn saved(k: usize) -> Checkpoint {
    let mut idx = AnyIndex::new(DIM, kind(k)).unwrap();
    let data = clustered_unit_vectors(N, DIM, 4, 0.5, 7);
    let ids: Vec<u64> = (0..N as u64).map(|i| 3 * i + 1).collect();
    idx.add_batch(&ids, &data).unwrap();
    idx.remove_batch(&[4, 13, 28]).unwrap();
    let mut ck = Checkpoint::new(CHECKPOINT_KIND, CHECKPOINT_VERSION);
    idx.write_into(&mut ck, "").unwrap();
    ck
}

/// Every field each kind's loader reads.
fn fields(k: usize) -> Vec<Field> {
    let meta = |names: &[&str]| {
        names
            .iter()
            .map(|n| Field::Meta(n.to_string()))
            .collect::<Vec<_>>()
    };
    let mut f = meta(&["index_kind", "dim"]);
    match k % 3 {
        0 => f.extend([Field::U64("ids".into()), Field::F32("vectors".into())]),
        1 => {
            f.extend(meta(&["params", "entry", "max_level", "rng"]));
            f.extend([Field::U64("ids".into()), Field::F32("vectors".into())]);
            for t in ["deleted", "levels", "layer0", "upper"] {
                f.push(Field::U64(t.into()));
            }
        }
        _ => {
            f.extend(meta(&["ivf_params", "trained_at", "rng"]));
            f.extend([
                Field::U64("list_sizes".into()),
                Field::U64("ids".into()),
                Field::F32("vectors".into()),
                Field::F32("centroids".into()),
            ]);
        }
    }
    f
}

fn read(bytes: &[u8]) -> Result<AnyIndex, SonaError> {
    let ck = Checkpoint::from_bytes(bytes, CHECKPOINT_KIND, CHECKPOINT_VERSION)?;
    AnyIndex::read_from(&ck, "")
}

/// A loaded index must answer every operation sensibly and save a file that loads again.
fn exercise(mut idx: AnyIndex) {
    let dim = idx.dim();
    let n = idx.len();
    let q: Vec<f32> = (0..dim).map(|i| 1.0 + i as f32).collect();
    let hits = idx.search(&q, 5, None).unwrap();
    assert!(hits.len() <= 5.min(n));
    for (id, s) in &hits {
        assert!(idx.contains(*id), "hit {id} is not in the index");
        assert!(s.is_finite() && s.abs() <= 1.0 + 1e-3, "similarity {s}");
    }
    let even = |id: u64| id.is_multiple_of(2);
    for (id, _) in idx.search(&q, 3, Some(&even)).unwrap() {
        assert!(even(id));
    }
    assert!(idx.search(&q, usize::MAX, None).unwrap().len() <= n);
    let fresh = (u64::MAX - 64..u64::MAX)
        .find(|&i| !idx.contains(i))
        .unwrap();
    idx.add(fresh, &q).unwrap();
    assert!(idx.contains(fresh) && idx.len() == n + 1);
    idx.remove(fresh).unwrap();
    if let Some(&(id, _)) = hits.first() {
        idx.remove(id).unwrap();
    }
    let mut ck = Checkpoint::new(CHECKPOINT_KIND, CHECKPOINT_VERSION);
    idx.write_into(&mut ck, "").unwrap();
    let back = read(&ck.to_bytes().unwrap()).expect("a saved index reloads");
    assert_eq!(back.len(), idx.len());
}

fn check(bytes: Vec<u8>) {
    within(20, move || {
        if let Ok(idx) = read(&bytes) {
            exercise(idx);
        }
    });
}

#[test]
fn rewritten_files_without_mutation_load_unchanged() {
    for k in 0..3 {
        let ck = saved(k);
        let copy = rewrite(&ck, &fields(k), None);
        let idx = read(&copy.to_bytes().unwrap()).unwrap();
        assert_eq!(idx.len(), N - 3);
        assert_eq!(idx.kind_name(), kind(k).name());
        exercise(idx);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(160))]

    #[test]
    fn logical_field_mutations_never_panic_or_hang(
        k in 0usize..3,
        field in any::<usize>(),
        op in any::<u8>(),
        pos in any::<usize>(),
        pick in any::<usize>(),
        random in any::<u64>(),
    ) {
        let m = Mutation { field, op, pos, pick, random };
        let ck = rewrite(&saved(k), &fields(k), Some(m));
        check(ck.to_bytes().unwrap());
    }

    #[test]
    fn byte_mutations_never_panic_or_hang(
        k in 0usize..3,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in proptest::option::of(any::<usize>()),
        sign in any::<bool>(),
    ) {
        let mut bytes = saved(k).to_first_format_bytes().unwrap();
        for (at, x) in flips {
            let i = at % bytes.len();
            bytes[i] ^= x.max(1);
        }
        if let Some(c) = cut {
            bytes.truncate(c % bytes.len());
        }
        let signed = sign && resign(&mut bytes);
        if !signed {
            // An edit the checksum does not cover must always be refused.
            prop_assert!(read(&bytes).is_err());
        }
        check(bytes);
    }
}

// --- the crafted files of issue 9 ----------------------------------------------------------------

fn craft(k: usize, name: &str, mut edit: impl FnMut(&mut Vec<u64>)) -> Vec<u8> {
    let ck = saved(k);
    let f = fields(k);
    let mut out = Checkpoint::new(ck.kind(), ck.version());
    for field in &f {
        match field {
            Field::Meta(m) => out
                .set_meta(m, &ck.meta::<serde_json::Value>(m).unwrap())
                .unwrap(),
            Field::U64(t) if t == name => {
                let mut v = ck.get_u64(t).unwrap();
                edit(&mut v);
                out.put_u64(t, &v);
            }
            Field::U64(t) => out.put_u64(t, &ck.get_u64(t).unwrap()),
            Field::F32(t) => {
                let (s, v) = ck.get_f32(t).unwrap();
                out.put_f32(t, &s, &v);
            }
        }
    }
    out.to_bytes().unwrap()
}

fn refused(bytes: &[u8], what: &str) {
    match read(bytes) {
        Err(SonaError::Checkpoint(_)) => {}
        other => panic!("{what}: expected a CheckpointError, got {other:?}"),
    }
}

#[test]
fn zeroed_hnsw_graph_is_refused() {
    refused(&craft(1, "layer0", |v| v.fill(0)), "zeroed layer 0");
    refused(&craft(1, "upper", |v| v.fill(0)), "zeroed upper layers");
}

#[test]
fn hnsw_repeated_neighbour_or_self_loop_is_refused() {
    // Slot 0's list: [count, n1, n2, ...]; repeat its first neighbour, then point it at itself.
    refused(
        &craft(1, "layer0", |v| {
            if v[0] < 2 {
                v[0] = 2;
            }
            v[2] = v[1];
        }),
        "repeated neighbour",
    );
    refused(&craft(1, "layer0", |v| v[1] = 0), "self-loop");
}

#[test]
fn ivf_list_sizes_that_overflow_their_sum_are_refused() {
    // Two sizes raised by 2^63 each: the list count is unchanged and a wrapping sum still equals
    // the row count, so only a checked sum notices.
    refused(
        &craft(2, "list_sizes", |v| {
            v[0] = v[0].wrapping_add(1 << 63);
            v[1] = v[1].wrapping_add(1 << 63);
        }),
        "overflowing list sizes",
    );
}

#[test]
fn ivf_absurd_trained_at_is_refused() {
    let ck = saved(2);
    let mut out = rewrite(&ck, &fields(2), None);
    out.set_meta("trained_at", &(u64::MAX / 2)).unwrap();
    refused(&out.to_bytes().unwrap(), "trained_at near 2^63");
    out.set_meta("trained_at", &0u64).unwrap();
    refused(&out.to_bytes().unwrap(), "trained lists with trained_at 0");
}

#[test]
fn a_shape_whose_element_count_overflows_is_refused() {
    let bytes = saved(0).to_first_format_bytes().unwrap();
    let Some(crafted) = edit_header(&bytes, |h| {
        // [2^32, 2^32] has 2^64 elements: a wrapping product would read it as 0 (an empty index).
        h["tensors"]["ids"]["shape"] = serde_json::json!([1u64 << 32, 1u64 << 32]);
        h["tensors"]["vectors"]["shape"] = serde_json::json!([0, DIM]);
    }) else {
        return; // another container layout: its own tests cover its header
    };
    refused(&crafted, "overflowing shape");
}

#[test]
fn absurd_dimension_is_refused() {
    let mut out = rewrite(&saved(0), &fields(0), None);
    out.set_meta("dim", &(1u64 << 40)).unwrap();
    refused(&out.to_bytes().unwrap(), "dim 2^40");
}
