use super::*;
use crate::synthetic::{clustered_unit_vectors, recall};
use crate::testkit::{self, recall_vs};
use crate::{AnyIndex, FlatIndex};

/// Small `min_train` so the tests exercise trained lists at test sizes.
fn params() -> IvfParams {
    IvfParams {
        min_train: 256,
        ..IvfParams::default()
    }
}

fn build(n: usize, dim: usize, seed: u64) -> (IvfIndex, FlatIndex, Vec<f32>) {
    let mut h = IvfIndex::new(dim, params()).unwrap();
    let (f, data) = testkit::fill(&mut h, n, seed);
    (h, f, data)
}

#[test]
fn recall_at_10_beats_095_on_clustered_data_and_nprobe_is_a_real_knob() {
    let (h, f, _) = build(3000, 64, 1);
    // 3000 vectors trained at 2048: round(√2048) = 45 lists.
    assert_eq!(h.nlist(), 45);
    let queries = clustered_unit_vectors(3100, 64, 60, 0.75, 1)[3000 * 64..].to_vec();
    let r = recall_vs(&h, &f, &queries, 10);
    assert!(r >= 0.95, "recall@10 = {r}");
    // On weakly clustered data one list is not enough, and probing more lists finds more.
    let data = clustered_unit_vectors(3100, 64, 60, 2.5, 9);
    let ids: Vec<u64> = (0..3000).collect();
    let mut weak = IvfIndex::new(64, params()).unwrap();
    let mut wf = FlatIndex::new(64).unwrap();
    weak.add_batch(&ids, &data[..3000 * 64]).unwrap();
    wf.add_batch(&ids, &data[..3000 * 64]).unwrap();
    let q = &data[3000 * 64..];
    weak.set_nprobe(1).unwrap();
    let r1 = recall_vs(&weak, &wf, q, 10);
    weak.set_nprobe(45).unwrap();
    let r_all = recall_vs(&weak, &wf, q, 10);
    assert!(
        r1 < 0.9 && r_all > r1 + 0.05,
        "nprobe 1: {r1}, all: {r_all}"
    );
}

#[test]
fn list_skipping_rule_keeps_recall_of_probing_every_list() {
    // The statistical skip must not cost recall on clustered data: compare with nprobe = nlist
    // and the rule disabled (every list scanned is an exact 8-bit scan).
    let (mut h, f, _) = build(4000, 128, 4);
    let queries = clustered_unit_vectors(4100, 128, 80, 0.75, 4)[4000 * 128..].to_vec();
    let r = recall_vs(&h, &f, &queries, 10);
    h.set_nprobe(h.nlist()).unwrap();
    let r_all = recall_vs(&h, &f, &queries, 10);
    assert!(r >= r_all - 0.01, "with the rule {r}, every list {r_all}");
    assert!(r_all >= 0.99, "every list: {r_all}");
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
        assert_eq!(f.get(id).unwrap(), h.get(id).unwrap());
        assert!((kernels::cosine(q, h.get(id).unwrap()) - s).abs() < 1e-5);
    }
}

#[test]
fn insert_is_visible_delete_is_never_returned_and_size_changes_retrain() {
    let dim = 32;
    let data = clustered_unit_vectors(3000, dim, 40, 0.75, 3);
    let mut h = IvfIndex::new(dim, params()).unwrap();
    let mut f = FlatIndex::new(dim).unwrap();
    // Untrained below min_train: one list, an exact 8-bit scan.
    let ids: Vec<u64> = (0..255).collect();
    h.add_batch(&ids, &data[..255 * dim]).unwrap();
    f.add_batch(&ids, &data[..255 * dim]).unwrap();
    assert_eq!(h.nlist(), 1);
    // Crossing min_train trains √256 = 16 lists; doubling retrains.
    h.add(255, &data[255 * dim..256 * dim]).unwrap();
    f.add(255, &data[255 * dim..256 * dim]).unwrap();
    assert_eq!(h.nlist(), 16);
    for i in 256..600u64 {
        let row = &data[i as usize * dim..(i as usize + 1) * dim];
        h.add(i, row).unwrap();
        f.add(i, row).unwrap();
        // Each insert is visible to the next search.
        assert_eq!(h.search(row, 1, None).unwrap()[0].0, i);
    }
    assert_eq!(h.nlist(), 23, "retrained at 512: round(√512)");
    // Deletes are never returned.
    for i in 0..300u64 {
        h.remove(i).unwrap();
        f.remove(i).unwrap();
    }
    assert_eq!(h.nlist(), 23);
    for q in data.chunks_exact(dim).take(100) {
        let got = h.search(q, 10, None).unwrap();
        assert!(got.iter().all(|&(id, _)| id >= 300));
        assert_eq!(got.len(), 10);
    }
    let queries = &data[2000 * dim..2100 * dim];
    let r = {
        let (mut a, mut e) = (Vec::new(), Vec::new());
        for q in queries.chunks_exact(dim) {
            a.push(h.search(q, 10, None).unwrap().iter().map(|x| x.0).collect());
            e.push(f.search(q, 10, None).unwrap().iter().map(|x| x.0).collect());
        }
        recall(&a, &e)
    };
    assert!(r >= 0.95, "recall after churn {r}");
    // Every position map entry points at its id.
    let check_map = |h: &IvfIndex| {
        for id in h.live_ids() {
            let (l, p) = h.at[&id];
            assert_eq!(h.lists[l as usize].ids[p as usize], id);
        }
        assert_eq!(h.live_ids().len(), h.len());
    };
    check_map(&h);
    // Shrinking to a quarter of the trained size retrains; below min_train, one list again.
    for i in 300..480u64 {
        h.remove(i).unwrap();
    }
    assert_eq!((h.nlist(), h.len()), (1, 120));
    check_map(&h);
    assert_eq!(
        h.search(&data[500 * dim..501 * dim], 1, None).unwrap()[0].0,
        500
    );
    // Removing everything leaves an empty, usable index.
    for id in h.live_ids() {
        h.remove(id).unwrap();
    }
    assert!(h.is_empty());
    assert!(h.search(&data[..dim], 5, None).unwrap().is_empty());
    h.add(9, &data[..dim]).unwrap();
    assert_eq!(h.search(&data[..dim], 5, None).unwrap()[0].0, 9);
}

#[test]
fn filter_returns_only_accepted_ids_and_all_of_a_small_set() {
    let (h, f, data) = build(2000, 32, 5);
    let even = |id: u64| id.is_multiple_of(2);
    let q = &data[..32];
    let got = h.search(q, 10, Some(&even)).unwrap();
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|&(id, _)| even(id)));
    // Three accepted ids scattered over the lists: all three are found (probing continues).
    let few = |id: u64| id == 3 || id == 7 * 999 + 3 || id == 7 * 1999 + 3;
    let hits = h.search(q, 10, Some(&few)).unwrap();
    assert_eq!(hits.len(), 3);
    assert_eq!(hits, f.search(q, 10, Some(&few)).unwrap());
    let none = |_: u64| false;
    assert!(h.search(q, 10, Some(&none)).unwrap().is_empty());
}

#[test]
fn bad_input_leaves_the_index_unchanged() {
    let (mut h, _, data) = build(300, 16, 6);
    testkit::bad_input_leaves_the_index_unchanged(&mut h, &data);
    for bad in [
        IvfParams {
            nprobe: 0,
            ..params()
        },
        IvfParams {
            list_factor: f32::NAN,
            ..params()
        },
        IvfParams {
            min_train: 1,
            ..params()
        },
    ] {
        assert!(matches!(IvfIndex::new(16, bad), Err(SonaError::Config(_))));
    }
    assert!(h.set_nprobe(0).is_err());
    assert_eq!(h.params().nprobe, params().nprobe);
}

#[test]
fn save_load_round_trip_is_identical_and_corruption_is_rejected() {
    let (mut h, _, data) = build(600, 16, 7);
    for id in [3u64, 10, 17, 24] {
        h.remove(id).unwrap();
    }
    let AnyIndex::Ivf(mut back) = testkit::reload(&h, &data) else {
        panic!("kind changed on reload")
    };
    assert_eq!(back.nlist(), h.nlist());
    // Growing after load retrains exactly as before (the RNG state is saved too).
    let more = clustered_unit_vectors(700, 16, 12, 0.75, 8);
    let ids: Vec<u64> = (10_000..10_700).collect();
    h.add_batch(&ids, &more).unwrap();
    back.add_batch(&ids, &more).unwrap();
    assert_eq!(back.centroids, h.centroids);
    assert_eq!(back.live_ids(), h.live_ids());

    // Structurally invalid but well-checksummed data is a checkpoint error, never a panic.
    let mut evil = Checkpoint::new(crate::CHECKPOINT_KIND, 1);
    h.write_into(&mut evil, "").unwrap();
    let mut sizes: Vec<u64> = h.lists.iter().map(|l| l.len() as u64).collect();
    sizes[0] += 1;
    evil.put_u64("list_sizes", &sizes);
    assert!(matches!(
        AnyIndex::read_from(&evil, ""),
        Err(SonaError::Checkpoint(_))
    ));
    let mut evil = Checkpoint::new(crate::CHECKPOINT_KIND, 1);
    h.write_into(&mut evil, "").unwrap();
    let mut ids = evil.get_u64("ids").unwrap();
    ids[1] = ids[0];
    evil.put_u64("ids", &ids);
    assert!(matches!(
        AnyIndex::read_from(&evil, ""),
        Err(SonaError::Checkpoint(_))
    ));
    let mut evil = Checkpoint::new(crate::CHECKPOINT_KIND, 1);
    h.write_into(&mut evil, "").unwrap();
    evil.put_f32("centroids", &[1, 16], &[0.5; 16]);
    assert!(AnyIndex::read_from(&evil, "").is_err());

    testkit::file_round_trip_and_corruption(&h, "ivf");
}

#[test]
fn random_inserts_and_deletes_through_retrains_keep_the_index_consistent() {
    // min_train = 16 so the index trains, retrains on growth and falls back to one list on
    // shrinkage many times; after every operation the id map, the lists and the oracle agree.
    let dim = 8;
    let data = clustered_unit_vectors(600, dim, 6, 0.5, 21);
    let mut rng = SeededRng::new(5);
    let mut h = IvfIndex::new(
        dim,
        IvfParams {
            min_train: 16,
            ..IvfParams::default()
        },
    )
    .unwrap();
    let mut f = FlatIndex::new(dim).unwrap();
    let mut live: Vec<u64> = Vec::new();
    let (mut trainings, mut fallbacks, mut prev_nlist) = (0, 0, 1);
    for step in 0..1500u64 {
        // Grow for a while, then shrink, then grow again.
        let grow = (step / 250) % 2 == 0;
        if live.is_empty() || (grow && rng.below(4) != 0) || (!grow && rng.below(4) == 0) {
            let row = &data[(step as usize % 600) * dim..][..dim];
            h.add(step, row).unwrap();
            f.add(step, row).unwrap();
            live.push(step);
        } else {
            let id = live.swap_remove(rng.below(live.len() as u64) as usize);
            h.remove(id).unwrap();
            f.remove(id).unwrap();
        }
        if h.nlist() != prev_nlist {
            if h.nlist() == 1 {
                fallbacks += 1;
            } else {
                trainings += 1;
            }
            prev_nlist = h.nlist();
        }
        assert_eq!(h.len(), live.len());
        for (l, list) in h.lists.iter().enumerate() {
            assert_eq!(list.vectors.len(), list.len() * dim);
            assert_eq!(list.codes.len(), list.len() * dim);
            for (p, id) in list.ids.iter().enumerate() {
                assert_eq!(h.at[id], (l as u32, p as u32));
            }
        }
        if step % 50 == 0 && !live.is_empty() {
            let q = &data[(step as usize * 7 % 600) * dim..][..dim];
            let got = h.search(q, 5, None).unwrap();
            let want = f.search(q, 5, None).unwrap();
            assert_eq!(got.len(), want.len());
            // The best hit is the exact best (or ties with it).
            assert!((got[0].1 - want[0].1).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }
    assert!(
        trainings >= 4 && fallbacks >= 1,
        "{trainings} / {fallbacks}"
    );
}

#[test]
fn retrain_job_outside_the_index_replays_changes_made_meanwhile() {
    let dim = 16;
    let (mut h, _, data) = build(1200, dim, 17);
    // Not due before a doubling; due when the upcoming inserts would double the live count.
    assert_eq!(h.trained_at, 1024);
    assert!(h.retrain_job(0).is_none());
    let job = h.retrain_job(900).expect("due after 900 more");
    // No change meanwhile: the same result as retraining in place.
    let mut inline = h.clone();
    inline.retrain();
    let mut planned = h.clone();
    planned
        .apply_retrain(h.retrain_job(900).unwrap().run())
        .unwrap();
    assert_eq!(planned.centroids, inline.centroids);
    assert_eq!(planned.live_ids(), inline.live_ids());
    // Changes between the copy and the install: removed, added, and replaced (same id, new
    // vector) entries all end up as the index has them now.
    let more = clustered_unit_vectors(100, dim, 5, 0.75, 18);
    for i in 0..50u64 {
        h.add(100_000 + i, &more[i as usize * dim..(i as usize + 1) * dim])
            .unwrap();
    }
    for id in [3u64, 10, 17, 24] {
        h.remove(id).unwrap();
    }
    let replaced = 31u64;
    h.remove(replaced).unwrap();
    h.add(replaced, &more[60 * dim..61 * dim]).unwrap();
    let before: std::collections::HashMap<u64, Vec<f32>> = h
        .live_ids()
        .into_iter()
        .map(|id| (id, h.get(id).unwrap().to_vec()))
        .collect();
    h.apply_retrain(job.run()).unwrap();
    assert_eq!(h.len(), before.len());
    assert!(h.nlist() > 1 && h.trained_at == 1200);
    for (id, v) in &before {
        assert_eq!(h.get(*id).unwrap(), &v[..], "id {id}");
        let (l, p) = h.at[id];
        assert_eq!(h.lists[l as usize].ids[p as usize], *id);
    }
    assert!(!h.contains(3) && !h.contains(24));
    let hit = h.search(&more[60 * dim..61 * dim], 1, None).unwrap()[0];
    assert_eq!(hit.0, replaced);
    assert!((hit.1 - 1.0).abs() < 1e-5);
    let _ = data;
    // Flat and HNSW never offer a job, and refuse a plan; so does an index of another dimension.
    let (mut flat, _) = testkit::fill(&mut FlatIndex::new(dim).unwrap(), 1200, 1);
    assert!(flat.retrain_job(usize::MAX).is_none());
    let plan = h.retrain_job(usize::MAX).unwrap().run();
    assert!(matches!(
        flat.apply_retrain(plan),
        Err(SonaError::InvalidInput(_))
    ));
    let (mut other, _, _) = build(1100, 2 * dim, 3);
    let before = other.search(other.get(3).unwrap(), 5, None).unwrap();
    let plan = h.retrain_job(usize::MAX).unwrap().run();
    assert!(matches!(
        other.apply_retrain(plan),
        Err(SonaError::InvalidInput(_))
    ));
    assert_eq!(other.dim(), 2 * dim);
    assert_eq!(
        other.search(other.get(3).unwrap(), 5, None).unwrap(),
        before
    );
}

/// `search_batch` returns, row by row, exactly what `search` returns (ids and bit-equal scores).
fn assert_batch_is_search(
    h: &dyn VectorIndex,
    queries: &[f32],
    k: usize,
    filter: Option<IdFilter<'_>>,
) {
    let batch = h.search_batch(queries, k, filter).unwrap();
    assert_eq!(batch.len(), queries.len() / h.dim());
    for (i, (q, got)) in queries.chunks_exact(h.dim()).zip(&batch).enumerate() {
        let want = h.search(q, k, filter).unwrap();
        let bits = |v: &[(u64, f32)]| {
            v.iter()
                .map(|&(id, s)| (id, s.to_bits()))
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(got), bits(&want), "row {i}, k {k}");
    }
}

#[test]
fn batched_search_is_the_single_search_on_clustered_and_random_data() {
    for (dim, noise, n, seed) in [
        (64, 0.75, 3000, 1),
        (100, 2.5, 2500, 2),
        (256, 0.3, 2100, 3),
    ] {
        let data = clustered_unit_vectors(n + 1300, dim, 40, noise, seed);
        let ids: Vec<u64> = (0..n as u64).map(|i| 5 * i + 1).collect();
        let mut h = IvfIndex::new(dim, params()).unwrap();
        h.add_batch(&ids, &data[..n * dim]).unwrap();
        assert!(h.nlist() > 16, "trained: {} lists", h.nlist());
        // More rows than one chunk of the batched search, so chunks are stitched together.
        let queries = &data[n * dim..];
        for k in [1, 10] {
            assert_batch_is_search(&h, queries, k, None);
        }
        assert_batch_is_search(&h, &queries[..dim], 4, None);
        assert_batch_is_search(&h, &queries[..0], 4, None);
        // A selective filter: the probed lists hold too few matches and the search widens.
        let rare = |id: u64| id % 97 == 1;
        assert_batch_is_search(&h, &queries[..50 * dim], 5, Some(&rare));
        // Deleted ids, and one list emptied entirely.
        let doomed: Vec<u64> = h.lists[3].ids.clone();
        h.remove_batch(&doomed).unwrap();
        for &id in ids.iter().step_by(7) {
            if h.contains(id) {
                h.remove(id).unwrap();
            }
        }
        assert!(h.lists.iter().any(|l| l.ids.is_empty()));
        assert_batch_is_search(&h, &queries[..300 * dim], 10, None);
        // k above the live count: everything, in the same order.
        let mut small = IvfIndex::new(dim, params()).unwrap();
        small.add_batch(&ids[..40], &data[..40 * dim]).unwrap();
        assert_batch_is_search(&small, &queries[..20 * dim], 100, None);
        assert_batch_is_search(
            &IvfIndex::new(dim, params()).unwrap(),
            &queries[..dim],
            3,
            None,
        );
    }
}

#[test]
fn batched_search_of_every_index_kind_matches_and_rejects_bad_rows_whole() {
    let dim = 16;
    let data = clustered_unit_vectors(600, dim, 12, 0.75, 6);
    let ids: Vec<u64> = (0..500).collect();
    for kind in [
        crate::IndexKind::Flat,
        crate::IndexKind::Hnsw(Default::default()),
        crate::IndexKind::Ivf(params()),
    ] {
        let mut h = AnyIndex::new(dim, kind).unwrap();
        h.add_batch(&ids, &data[..500 * dim]).unwrap();
        assert_batch_is_search(&h, &data[500 * dim..], 7, None);
        let mut bad = data[500 * dim..510 * dim].to_vec();
        assert!(matches!(
            h.search_batch(&bad[..dim + 1], 3, None),
            Err(SonaError::Dimension { .. })
        ));
        bad[5 * dim + 2] = f32::NAN;
        assert!(matches!(
            h.search_batch(&bad, 3, None),
            Err(SonaError::NonFinite { .. })
        ));
        bad[5 * dim..6 * dim].fill(0.0);
        let e = h.search_batch(&bad, 3, None).unwrap_err();
        assert!(e.to_string().contains("row 5"), "{e}");
        assert_eq!(h.len(), 500);
    }
}
