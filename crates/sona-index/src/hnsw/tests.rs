use super::*;
use crate::synthetic::clustered_unit_vectors;
use crate::testkit::{self, recall_vs};
use crate::{AnyIndex, FlatIndex};
use sona_core::Checkpoint;

fn build(n: usize, dim: usize, seed: u64) -> (HnswIndex, FlatIndex, Vec<f32>) {
    let mut h = HnswIndex::new(dim, HnswParams::default()).unwrap();
    let (f, data) = testkit::fill(&mut h, n, seed);
    (h, f, data)
}

#[test]
fn recall_at_10_beats_095_on_clustered_data() {
    let (h, f, _) = build(3000, 64, 1);
    let queries = clustered_unit_vectors(100, 64, 60, 0.75, 1);
    // Same seed ⇒ same centres; fresh points as queries.
    let r = recall_vs(&h, &f, &queries[..], 10);
    assert!(r >= 0.95, "recall@10 = {r}");
    // A tiny candidate list must do worse than the default: ef is a real knob.
    let mut small = h.clone();
    small.set_ef_search(1).unwrap();
    let r1 = recall_vs(&small, &f, &queries, 10);
    assert!(r1 <= r, "ef=1 recall {r1} vs default {r}");
}

#[test]
fn similarities_are_exact_and_sorted() {
    let (h, f, data) = build(500, 32, 2);
    let q = &data[..32];
    let hits = h.search(q, 10, None).unwrap();
    assert_eq!(hits[0].0, 3, "a stored vector finds itself first");
    assert!((hits[0].1 - 1.0).abs() < 1e-5);
    for w in hits.windows(2) {
        assert!(w[0].1 >= w[1].1);
    }
    for &(id, s) in &hits {
        let exact = kernels::dot(f.get(id).unwrap(), h.get(id).unwrap());
        assert!((exact - 1.0).abs() < 1e-5);
        assert!((kernels::cosine(q, h.get(id).unwrap()) - s).abs() < 1e-5);
    }
}

#[test]
fn insert_is_visible_and_delete_is_never_returned() {
    let (mut h, _, data) = build(1000, 32, 3);
    let q: Vec<f32> = data[32 * 10..32 * 11].iter().map(|x| -x).collect();
    h.add(99_999, &q).unwrap();
    assert_eq!(h.search(&q, 1, None).unwrap()[0].0, 99_999);
    h.remove(99_999).unwrap();
    assert!(h
        .search(&q, 50, None)
        .unwrap()
        .iter()
        .all(|x| x.0 != 99_999));
    assert!(!h.contains(99_999));
    // Delete a whole neighbourhood: none of it comes back, and k hits are still returned.
    let near: Vec<u64> = h
        .search(&data[..32], 40, None)
        .unwrap()
        .iter()
        .map(|x| x.0)
        .collect();
    for &id in &near {
        h.remove(id).unwrap();
    }
    let hits = h.search(&data[..32], 10, None).unwrap();
    assert_eq!(hits.len(), 10);
    assert!(hits.iter().all(|x| !near.contains(&x.0)));
    assert_eq!(h.len(), 1000 - 40);
    // The id can be reused after delete.
    h.add(near[0], &data[..32]).unwrap();
    assert_eq!(h.search(&data[..32], 1, None).unwrap()[0].0, near[0]);
}

#[test]
fn heavy_deletion_compacts_and_keeps_recall() {
    let (mut h, mut f, _) = build(2000, 32, 4);
    for id in (0..2000u64).filter(|i| i % 3 != 0).map(|i| i * 7 + 3) {
        h.remove(id).unwrap();
        f.remove(id).unwrap();
    }
    assert_eq!(h.len(), f.len());
    assert!(
        h.tombstones() <= h.len().max(64),
        "compaction bounds tombstones"
    );
    let queries = clustered_unit_vectors(50, 32, 40, 0.75, 4);
    assert!(recall_vs(&h, &f, &queries, 10) >= 0.95);
    // Removing everything leaves an empty, usable index.
    for id in f.ids().to_vec() {
        h.remove(id).unwrap();
    }
    assert!(h.is_empty());
    assert!(h.search(&queries[..32], 5, None).unwrap().is_empty());
    h.add(1, &queries[..32]).unwrap();
    assert_eq!(h.search(&queries[..32], 5, None).unwrap().len(), 1);
}

#[test]
fn filter_returns_only_accepted_ids_and_all_of_a_small_set() {
    let (h, f, data) = build(2000, 32, 5);
    let q = &data[32 * 5..32 * 6];
    let even = |id: u64| id.is_multiple_of(2);
    let hits = h.search(q, 10, Some(&even)).unwrap();
    assert_eq!(hits.len(), 10);
    assert!(hits.iter().all(|x| x.0 % 2 == 0));
    let exact = f.search(q, 10, Some(&even)).unwrap();
    let overlap = hits
        .iter()
        .filter(|x| exact.iter().any(|e| e.0 == x.0))
        .count();
    assert!(overlap >= 9, "filtered recall {overlap}/10");
    // A filter that accepts 3 far-apart ids: all 3 come back, exactly ordered.
    let few = |id: u64| id == 3 || id == 7 * 1500 + 3 || id == 7 * 1999 + 3;
    let hits = h.search(q, 10, Some(&few)).unwrap();
    assert_eq!(hits.len(), 3);
    assert_eq!(hits, f.search(q, 10, Some(&few)).unwrap());
}

#[test]
fn bad_input_leaves_the_index_unchanged() {
    let (mut h, _, data) = build(200, 16, 6);
    testkit::bad_input_leaves_the_index_unchanged(&mut h, &data);
    assert!(HnswIndex::new(
        16,
        HnswParams {
            m: 1,
            ..Default::default()
        }
    )
    .is_err());
    assert!(h.set_ef_search(0).is_err());
}

#[test]
fn save_load_round_trip_is_identical_and_corruption_is_rejected() {
    let (mut h, _, data) = build(600, 16, 7);
    for id in [3u64, 10, 17, 24] {
        h.remove(id).unwrap();
    }
    let AnyIndex::Hnsw(mut back) = testkit::reload(&h, &data) else {
        panic!("kind changed on reload")
    };
    assert_eq!(back.tombstones(), h.tombstones());
    // Inserting after load behaves exactly as inserting before (the RNG state is saved too).
    h.add(5_000, &data[..16]).unwrap();
    back.add(5_000, &data[..16]).unwrap();
    assert_eq!(back.levels, h.levels);
    assert_eq!(back.layer0, h.layer0);

    // Structurally invalid but well-checksummed data is a checkpoint error, never a panic.
    let mut evil = Checkpoint::new(crate::CHECKPOINT_KIND, 1);
    h.write_into(&mut evil, "").unwrap();
    let mut layer0: Vec<u64> = h.layer0.iter().map(|&x| x as u64).collect();
    layer0[1] = 1_000_000;
    evil.put_u64("layer0", &layer0);
    assert!(matches!(
        AnyIndex::read_from(&evil, ""),
        Err(SonaError::Checkpoint(_))
    ));
    let mut evil = Checkpoint::new(crate::CHECKPOINT_KIND, 1);
    h.write_into(&mut evil, "").unwrap();
    evil.set_meta("entry", &Some(100_000u32)).unwrap();
    assert!(AnyIndex::read_from(&evil, "").is_err());

    testkit::file_round_trip_and_corruption(&h, "hnsw");
}

/// From `SIGN_GATE_MIN_DIM` on, searches descend on sign codes and gate the 8-bit scoring with
/// them: recall, exact similarities, filters, deletes and save/load must behave as below it.
#[test]
fn sign_gated_search_at_large_dim_keeps_recall_filters_and_round_trip() {
    let d = SIGN_GATE_MIN_DIM;
    let (mut h, mut f, data) = build(2000, d, 11);
    let queries = clustered_unit_vectors(100, d, 40, 0.75, 11);
    let r = recall_vs(&h, &f, &queries, 10);
    assert!(r >= 0.95, "recall@10 = {r}");
    // A stored vector finds itself first, with the exact similarity.
    let hits = h.search(&data[..d], 10, None).unwrap();
    assert_eq!(hits[0].0, 3);
    assert!((hits[0].1 - 1.0).abs() < 1e-5);
    for &(id, s) in &hits {
        assert!((kernels::cosine(&data[..d], h.get(id).unwrap()) - s).abs() < 1e-5);
    }
    // Deleted ids never come back; filters are honoured.
    for id in [3u64, 10, 17] {
        h.remove(id).unwrap();
        f.remove(id).unwrap();
    }
    let hits = h.search(&data[..d], 10, None).unwrap();
    assert!(hits.iter().all(|x| ![3, 10, 17].contains(&x.0)));
    let even = |id: u64| id.is_multiple_of(2);
    let hits = h.search(&data[d..2 * d], 10, Some(&even)).unwrap();
    assert_eq!(hits.len(), 10);
    assert!(hits.iter().all(|x| x.0 % 2 == 0));
    let r = recall_vs(&h, &f, &queries, 10);
    assert!(r >= 0.95, "recall@10 after deletes = {r}");
    // The sign codes are rebuilt on load: identical answers.
    let mut ck = Checkpoint::new(crate::CHECKPOINT_KIND, 1);
    h.write_into(&mut ck, "idx.").unwrap();
    let ck2 = Checkpoint::from_bytes(&ck.to_bytes().unwrap(), crate::CHECKPOINT_KIND, 1).unwrap();
    let AnyIndex::Hnsw(back) = AnyIndex::read_from(&ck2, "idx.").unwrap() else {
        panic!("kind changed on reload")
    };
    assert_eq!(back.bits, h.bits);
    for q in queries.chunks_exact(d).take(20) {
        assert_eq!(
            back.search(q, 10, None).unwrap(),
            h.search(q, 10, None).unwrap()
        );
    }
}
