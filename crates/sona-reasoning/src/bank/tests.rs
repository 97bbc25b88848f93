use super::*;
use sona_index::synthetic::blobs;
use sona_index::IndexKind;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub(crate) fn small_bank(d: usize) -> ReasoningBank {
    let mut cfg = BankConfig::new(d, 4);
    cfg.seed = 7;
    ReasoningBank::new(cfg).unwrap()
}

/// Feeds `pts` as completed trajectories with tier = label % 4 and reward 1 for tier 2, else 0.2.
pub(crate) fn feed(bank: &ReasoningBank, pts: &[f32], label: &[usize]) {
    let d = bank.dim();
    for (i, &l) in label.iter().enumerate() {
        // A hash of i, so tiers are independent of the round-robin cluster labels.
        let tier = ((i as u64).wrapping_mul(2_654_435_761) >> 7) as u8 % 4;
        let r = if tier == 2 {
            1.0
        } else {
            0.2 + 0.01 * (l % 3) as f32
        };
        bank.add_trajectory(
            &pts[i * d..(i + 1) * d],
            Some(r),
            Some(tier),
            RewardSource::Explicit,
            Some(1),
        )
        .unwrap();
    }
}

#[test]
fn extraction_finds_clusters_and_replay_does_not_grow() {
    let d = 32;
    let (pts, label) = blobs(2000, 10, d, 0.4, 11);
    let bank = small_bank(d);
    feed(&bank, &pts, &label);
    let r1 = bank.extract_patterns().unwrap();
    assert_eq!(r1.trajectories, 2000);
    let n1 = bank.len();
    assert!(
        (10..=12).contains(&n1),
        "{n1} patterns for 10 clusters: {r1:?}"
    );
    let support: u32 = bank.patterns().iter().map(|p| p.support).sum();
    assert_eq!(support, 2000);
    for _ in 0..3 {
        feed(&bank, &pts, &label);
        let r = bank.extract_patterns().unwrap();
        assert_eq!(r.created, 0, "{r:?}");
        assert_eq!(bank.len(), n1);
    }
    let support: u32 = bank.patterns().iter().map(|p| p.support).sum();
    assert_eq!(support, 8000);
    // Search finds the pattern of each cluster's points.
    let hit = bank.search(&pts[..d], 1).unwrap()[0];
    assert!(hit.1 > 0.8);
    assert_eq!(bank.search(&pts[..d], n1).unwrap().len(), n1);
    // Tier 2 always earns 1.0: every pattern has a verdict for it.
    let v = bank.verdicts();
    assert_eq!(v.len(), n1);
    assert!(v
        .iter()
        .all(|v| v.recommended_tier == 2 && v.improvement > 0.7));
}

#[test]
fn replay_does_not_grow_when_groups_outnumber_k() {
    // 100 groups (some only cos 0.4 apart), 1500 points: k-means starts from k = 27 and lumps
    // groups. Bisecting unions of groups recovers them and replays add nothing; without it,
    // lumps form differently on each run and every replay adds patterns.
    let d = 64;
    let (pts, label) = blobs(1500, 100, d, 0.45, 12);
    let mut grown = Vec::new();
    for min_cohesion in [Some(0.75), None] {
        let mut cfg = BankConfig::new(d, 4);
        cfg.min_cohesion = min_cohesion;
        let bank = ReasoningBank::new(cfg).unwrap();
        feed(&bank, &pts, &label);
        bank.extract_patterns().unwrap();
        let n1 = bank.len();
        let mut created = 0;
        for _ in 0..3 {
            feed(&bank, &pts, &label);
            created += bank.extract_patterns().unwrap().created;
        }
        grown.push((n1, created));
    }
    let ((n_bisect, c_bisect), (n_plain, c_plain)) = (grown[0], grown[1]);
    assert!((90..=110).contains(&n_bisect) && n_plain < 60, "{grown:?}");
    assert!(
        c_bisect * 10 <= n_bisect,
        "≤ 10 % growth over 3 replays: {grown:?}"
    );
    assert!(c_plain > 2 * c_bisect.max(1), "{grown:?}");
}

/// A bank over an IVF index trained from 64 patterns on, with room for 400 clusters.
fn ivf_bank(d: usize) -> ReasoningBank {
    let mut cfg = BankConfig::new(d, 4);
    cfg.index = IndexKind::Ivf(sona_index::IvfParams {
        min_train: 64,
        ..Default::default()
    });
    cfg.max_clusters = 400;
    ReasoningBank::new(cfg).unwrap()
}

#[test]
fn bank_over_ivf_trains_its_index_outside_the_write_lock_and_finds_every_group() {
    // 300 groups: the IVF index (trained from 64 patterns on) re-partitions during extraction
    // through retrain_job/apply_retrain; every group's pattern must stay findable.
    let d = 32;
    let (pts, label) = blobs(3000, 300, d, 0.2, 13);
    let bank = ivf_bank(d);
    let half = 1500;
    feed(&bank, &pts[..half * d], &label[..half]);
    bank.extract_patterns().unwrap();
    feed(&bank, &pts[half * d..], &label[half..]);
    bank.extract_patterns().unwrap();
    assert!(bank.len() >= 250, "{} patterns", bank.len());
    {
        let st = bank.state.read();
        assert_eq!(st.index.len(), bank.len());
        // Past min_train, an IVF index offers a job; flat and HNSW never do.
        assert!(st.index.retrain_job(usize::MAX).is_some());
    }
    let mut found = 0;
    for i in 0..300 {
        let hit = bank.search(&pts[i * d..(i + 1) * d], 1).unwrap()[0];
        found += usize::from(hit.1 > 0.9);
    }
    assert!(
        found >= 290,
        "{found} of 300 points have their pattern at cos > 0.9"
    );
}

#[test]
fn batched_search_is_the_single_search_and_rejects_bad_rows_whole() {
    let d = 32;
    let (pts, label) = blobs(3000, 300, d, 0.2, 17);
    let bank = ivf_bank(d);
    assert_eq!(
        bank.search_batch(&pts[..2 * d], 3).unwrap(),
        vec![vec![]; 2]
    );
    feed(&bank, &pts, &label);
    bank.extract_patterns().unwrap();
    // Unnormalised queries: the batch normalises each row as `search` does.
    let queries: Vec<f32> = pts[..400 * d].iter().map(|v| 3.0 * v).collect();
    let batch = bank.search_batch(&queries, 4).unwrap();
    assert_eq!(batch.len(), 400);
    for (q, got) in queries.chunks_exact(d).zip(&batch) {
        assert_eq!(got, &bank.search(q, 4).unwrap());
    }
    // Prefetching is a hint: unknown ids are ignored.
    bank.prefetch_patterns(&[u64::MAX, batch[0][0].0]);
    let mut bad = queries[..10 * d].to_vec();
    assert!(bank.search_batch(&bad[..d + 3], 2).is_err());
    assert!(bank.search_batch(&bad, 0).is_err());
    bad[4 * d..5 * d].fill(0.0);
    let e = bank.search_batch(&bad, 2).unwrap_err();
    assert!(e.to_string().contains("row 4"), "{e}");
    bad[2 * d] = f32::INFINITY;
    assert!(matches!(
        bank.search_batch(&bad, 2),
        Err(SonaError::NonFinite { .. })
    ));
}

#[test]
fn merge_is_the_exact_spherical_mean() {
    let d = 8;
    let (pts, _) = blobs(40, 1, d, 0.5, 2);
    let bank = small_bank(d);
    let half = 20;
    for i in 0..half {
        bank.add_trajectory(
            &pts[i * d..(i + 1) * d],
            Some(0.5),
            Some(1),
            RewardSource::Explicit,
            None,
        )
        .unwrap();
    }
    bank.extract_patterns().unwrap();
    for i in half..40 {
        bank.add_trajectory(
            &pts[i * d..(i + 1) * d],
            Some(0.5),
            Some(1),
            RewardSource::Explicit,
            None,
        )
        .unwrap();
    }
    bank.extract_patterns().unwrap();
    // Collapse everything into one pattern regardless of how k-means split the batches.
    bank.consolidate(-1.0).unwrap();
    let p = &bank.patterns()[0];
    let mut mean = vec![0.0f32; d];
    for x in pts.chunks(d) {
        kernels::axpy(1.0, x, &mut mean);
    }
    kernels::normalize(&mut mean);
    assert!(kernels::cosine(&mean, &p.centroid) > 1.0 - 1e-5);
    assert_eq!(p.support, 40);
    assert_eq!(p.arms[1].count, 40);
}

#[test]
fn add_record_uses_adapted_embedding_and_decision_tier() {
    use sona_core::types::Decision;
    let bank = small_bank(2);
    let t = Trajectory {
        id: 999,
        query: vec![0.0, 1.0],
        adapted: vec![3.0, 0.0],
        steps: Vec::new(),
        decision: Some(Decision {
            tier: 2,
            propensity: 0.5,
            utilities: vec![0.0; 4],
            params: Vec::new(),
        }),
        retrieved: Vec::new(),
        reward: Some(0.75),
        reward_source: Some(RewardSource::Judge),
        latency_us: 10,
        ts_ms: 42,
        tenant: None,
    };
    let id = bank.add_record(&t).unwrap();
    assert_eq!(id, 1, "the bank issues its own ids");
    let r = bank.reservoir();
    assert_eq!(r.row(0), &[1.0, 0.0], "adapted, normalised");
    let m = r.meta[0];
    assert_eq!(
        (m.tier, m.reward, m.source, m.ts_ms),
        (2, 0.75, RewardSource::Judge, 42)
    );
    let pending = bank
        .add_record(&Trajectory {
            adapted: Vec::new(),
            reward: None,
            ..t
        })
        .unwrap();
    assert_eq!(bank.stats().pending, 1);
    bank.set_reward(pending, 0.1, RewardSource::Implicit, None)
        .unwrap();
    assert_eq!(
        bank.reservoir().row(1),
        &[0.0, 1.0],
        "query when adapted is empty"
    );
}

/// Finite embeddings whose norm exceeds `f32::MAX` (16 entries of 1e38) or underflows (denormal
/// entries) have a direction: they are recorded, searched and imported, never refused as zero.
#[test]
fn huge_and_denormal_embeddings_are_accepted() {
    let bank = small_bank(16);
    let (pts, label) = blobs(200, 4, 16, 0.2, 3);
    feed(&bank, &pts, &label);
    for v in [[1e38f32; 16], [1e-45f32; 16]] {
        bank.add_trajectory(&v, Some(0.5), Some(0), RewardSource::Explicit, Some(1))
            .unwrap();
    }
    bank.extract_patterns().unwrap();
    let hits = bank.search(&[3.4e38; 16], 3).unwrap();
    assert_eq!(hits.len(), 3);
    assert!(hits.iter().all(|h| h.1.is_finite()));
    let (recs, mut cents) = bank.export();
    cents[..16].fill(1e38);
    let other = small_bank(16);
    assert_eq!(other.import(recs.clone(), &cents).unwrap(), recs.len());
    assert!(other.export().1.iter().all(|x| x.is_finite()));
}

#[test]
fn bad_input_leaves_bank_unchanged() {
    let bank = small_bank(4);
    let ok = [1.0, 0.0, 0.0, 0.0];
    assert!(matches!(
        bank.add_trajectory(&[1.0; 3], None, None, RewardSource::Explicit, None),
        Err(SonaError::Dimension { .. })
    ));
    assert!(matches!(
        bank.add_trajectory(
            &[f32::NAN, 0.0, 0.0, 0.0],
            None,
            None,
            RewardSource::Explicit,
            None
        ),
        Err(SonaError::NonFinite { .. })
    ));
    assert!(bank
        .add_trajectory(&[0.0; 4], None, None, RewardSource::Explicit, None)
        .is_err());
    assert!(bank
        .add_trajectory(&ok, Some(1.5), None, RewardSource::Explicit, None)
        .is_err());
    assert!(bank
        .add_trajectory(&ok, Some(0.5), Some(4), RewardSource::Explicit, None)
        .is_err());
    assert_eq!(
        bank.stats().next_trajectory_id,
        1,
        "no id consumed by rejected calls"
    );
    // An empty bank has no hits (k above the pattern count returns them all); k = 0 is an error.
    assert_eq!(bank.search(&ok, 1).unwrap(), vec![]);
    assert!(matches!(
        bank.search(&ok, 0),
        Err(SonaError::InvalidInput(_))
    ));
    assert!(matches!(
        bank.set_reward(99, 0.5, RewardSource::Explicit, None),
        Err(SonaError::UnknownId { .. })
    ));
    assert!(matches!(
        bank.record_feedback(5, 0, 0.5),
        Err(SonaError::UnknownId { .. })
    ));
    assert!(bank.record_usage(&[1], &[]).is_err());
}

#[test]
fn clustering_phase_holds_no_lock() {
    let d = 16;
    let (pts, label) = blobs(500, 5, d, 0.3, 8);
    let bank = small_bank(d);
    feed(&bank, &pts, &label);
    let batch = bank.take_new();
    assert_eq!(batch.len(), 500);
    // Between the phases both locks are free: producers and searches proceed.
    assert!(bank.store.try_lock().is_some() && bank.state.try_write().is_some());
    let (clusters, mut report) = bank.cluster(&batch);
    assert!(bank.store.try_lock().is_some() && bank.state.try_write().is_some());
    bank.apply(clusters, &mut report).unwrap();
    assert_eq!(report.patterns, bank.len());
    assert!(bank.len() >= 5);
}

#[test]
fn search_runs_while_extraction_clusters() {
    let d = 64;
    let (pts, label) = blobs(6_000, 20, d, 0.5, 5);
    let bank = Arc::new(small_bank(d));
    feed(&bank, &pts[..2000 * d], &label[..2000]);
    bank.extract_patterns().unwrap();
    feed(&bank, &pts, &label);
    let done = Arc::new(AtomicBool::new(false));
    let (b2, done2) = (bank.clone(), done.clone());
    let worker = std::thread::spawn(move || {
        let r = b2.extract_patterns().unwrap();
        done2.store(true, Ordering::SeqCst);
        r
    });
    let mut during = 0;
    while !done.load(Ordering::SeqCst) {
        assert_eq!(bank.search(&pts[..d], 3).unwrap().len(), 3);
        if during < 1000 {
            bank.add_trajectory(&pts[..d], Some(0.5), None, RewardSource::Explicit, None)
                .unwrap();
            during += 1;
        }
    }
    let r = worker.join().unwrap();
    // Every trajectory is either in this extraction or waits for the next one; none is lost.
    assert_eq!(r.trajectories + bank.stats().buffered, 6_000 + during);
}

/// An exact index whose `add` fails once when the shared countdown reaches zero: a fault injected
/// into the middle of an extraction or a reindex.
struct FailingIndex {
    inner: sona_index::FlatIndex,
    adds_left: Arc<std::sync::atomic::AtomicUsize>,
}

impl FailingIndex {
    /// The index and the handle that arms it (`usize::MAX`: never fail).
    fn new(dim: usize) -> (Self, Arc<std::sync::atomic::AtomicUsize>) {
        let left = Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
        let idx = FailingIndex {
            inner: sona_index::FlatIndex::new(dim).unwrap(),
            adds_left: left.clone(),
        };
        (idx, left)
    }
}

impl VectorIndex for FailingIndex {
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn contains(&self, id: u64) -> bool {
        self.inner.contains(id)
    }
    fn get(&self, id: u64) -> Option<&[f32]> {
        VectorIndex::get(&self.inner, id)
    }
    fn add(&mut self, id: u64, vector: &[f32]) -> Result<()> {
        let left = self.adds_left.load(Ordering::SeqCst);
        if left == 0 {
            // One transient fault: the next insert (e.g. the rollback's) works again.
            self.adds_left.store(usize::MAX, Ordering::SeqCst);
            return Err(SonaError::Internal("injected index failure".into()));
        }
        if left != usize::MAX {
            self.adds_left.store(left - 1, Ordering::SeqCst);
        }
        self.inner.add(id, vector)
    }
    fn remove(&mut self, id: u64) -> Result<()> {
        self.inner.remove(id)
    }
    fn search(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<sona_index::IdFilter<'_>>,
    ) -> Result<Vec<(u64, f32)>> {
        self.inner.search(query, k, filter)
    }
}

/// Everything observable about a bank: patterns (with statistics), index answers, counters, buffer.
fn full_state(bank: &ReasoningBank, probes: &[f32]) -> String {
    let st = bank.stats();
    let hits: Vec<_> = probes
        .chunks_exact(bank.dim())
        .map(|q| bank.state.read().index.search(q, 4, None).unwrap())
        .collect();
    let ring = bank.store.lock().ring.snapshot();
    format!(
        "{:?}|{hits:?}|{:?}|{:?}|{:?}|{:?}",
        bank.patterns(),
        (
            st.patterns,
            st.buffered,
            st.dropped,
            st.next_pattern_id,
            st.extractions
        ),
        (st.completed, st.reservoir, st.pending),
        ring.meta.iter().map(|m| m.id).collect::<Vec<_>>(),
        ring.data,
    )
}

#[test]
fn a_failed_extraction_keeps_its_batch_and_changes_no_pattern() {
    let d = 16;
    let (pts, label) = blobs(900, 6, d, 0.3, 5);
    let mut cfg = BankConfig::new(d, 4);
    cfg.seed = 7;
    let (index, fail) = FailingIndex::new(d);
    let bank = ReasoningBank::with_index(cfg, Box::new(index)).unwrap();
    feed(&bank, &pts[..300 * d], &label[..300]);
    bank.extract_patterns().unwrap();
    // The next batch holds the old groups (merges: reindex = remove + add) and a new one.
    let (far, _) = blobs(60, 1, d, 0.2, 99);
    feed(&bank, &pts[300 * d..], &label[300..]);
    feed(&bank, &far, &[0; 60]);
    let before = full_state(&bank, &pts[..40 * d]);
    for budget in [0, 1, 3, 6] {
        // The (budget+1)-th index insert of this extraction fails: earlier merges were applied.
        fail.store(budget, Ordering::SeqCst);
        assert!(bank.extract_patterns().is_err(), "budget {budget}");
        assert!(
            full_state(&bank, &pts[..40 * d]) == before,
            "budget {budget}: the failed extraction changed the bank"
        );
    }
    // Once the index works again the kept batch is extracted as if nothing had happened.
    let r = bank.extract_patterns().unwrap();
    assert_eq!(r.trajectories, 660);
    assert!(r.created >= 1, "{r:?}");
    let support: u32 = bank.patterns().iter().map(|p| p.support).sum();
    assert_eq!(support, 960);
}

#[test]
fn a_failed_reindex_keeps_the_old_vector() {
    let d = 4;
    let (index, fail) = FailingIndex::new(d);
    let bank = ReasoningBank::with_index(BankConfig::new(d, 2), Box::new(index)).unwrap();
    bank.add_trajectory(
        &[1.0, 0.0, 0.0, 0.0],
        Some(1.0),
        Some(0),
        RewardSource::Explicit,
        None,
    )
    .unwrap();
    bank.extract_patterns().unwrap();
    let id = bank.patterns()[0].id;
    let mut st = bank.state.write();
    st.nodes.get_mut(&id).unwrap().pattern.centroid = vec![0.0, 1.0, 0.0, 0.0];
    fail.store(0, Ordering::SeqCst);
    assert!(st.reindex(id).is_err());
    assert_eq!(
        VectorIndex::get(&*st.index, id),
        Some(&[1.0, 0.0, 0.0, 0.0][..])
    );
}

#[test]
fn a_bank_with_a_huge_imported_id_is_refused_and_saves_stay_loadable() {
    let d = 4;
    let src = small_bank(d);
    src.add_trajectory(
        &[1.0, 0.0, 0.0, 0.0],
        Some(1.0),
        Some(0),
        RewardSource::Explicit,
        None,
    )
    .unwrap();
    src.extract_patterns().unwrap();
    let (mut recs, cents) = src.export();
    let bank = small_bank(d);
    for id in [u64::MAX, u64::MAX - 1, 1 << 63] {
        recs[0].id = id;
        assert!(matches!(
            bank.import(recs.clone(), &cents),
            Err(SonaError::InvalidInput(_))
        ));
        assert!(bank.is_empty());
    }
    let reload = |bank: &ReasoningBank| {
        let ck = bank.to_checkpoint().unwrap();
        let back =
            ReasoningBank::from_checkpoint(&ck, Box::new(sona_index::FlatIndex::new(d).unwrap()))
                .unwrap();
        assert_eq!(back.patterns(), bank.patterns());
    };
    let add = |bank: &ReasoningBank| {
        bank.add_trajectory(
            &[0.0, 1.0, 0.0, 0.0],
            Some(0.5),
            Some(1),
            RewardSource::Explicit,
            None,
        )
        .unwrap();
    };
    // Just below the limit, new patterns still get fresh ids, and the saved bank loads again.
    let roomy = small_bank(d);
    recs[0].id = crate::export::MAX_IMPORT_ID - 1;
    roomy.import(recs.clone(), &cents).unwrap();
    add(&roomy);
    roomy.extract_patterns().unwrap();
    assert_eq!(roomy.len(), 2);
    reload(&roomy);
    // At the limit, an extraction that needs a new id fails cleanly and the bank still saves.
    recs[0].id = crate::export::MAX_IMPORT_ID;
    bank.import(recs, &cents).unwrap();
    add(&bank);
    let before = bank.patterns();
    assert!(matches!(
        bank.extract_patterns(),
        Err(SonaError::InvalidInput(m)) if m.contains("exhausted")
    ));
    assert_eq!(bank.patterns(), before);
    reload(&bank);
}

/// A bank fed `n` points around `clusters` blobs (d = 16) and extracted once, with its pattern ids.
fn extracted(n: usize, clusters: usize) -> (ReasoningBank, Vec<u64>) {
    let d = 16;
    let (pts, label) = blobs(n, clusters, d, 0.3, 5);
    let bank = small_bank(d);
    feed(&bank, &pts, &label);
    bank.extract_patterns().unwrap();
    let ids: Vec<u64> = bank.patterns().iter().map(|p| p.id).collect();
    (bank, ids)
}

#[test]
fn link_adds_only_absent_edges_between_known_patterns() {
    let (bank, ids) = extracted(300, 3);
    assert!(ids.len() >= 3, "{ids:?}");
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    bank.record_usage(&[a, b], &[a, b]).unwrap();
    let before = bank.graph_edges();
    assert_eq!(before.len(), 1);
    // An unknown id refuses the whole call: nothing added.
    assert!(matches!(
        bank.link(&[(a, c), (b, u64::MAX)]),
        Err(SonaError::UnknownId { .. })
    ));
    assert_eq!(bank.graph_edges(), before);
    // (a, b) exists and keeps its weight; (a, c) is new at w_init; self-loops are ignored.
    assert_eq!(bank.link(&[(a, b), (a, c), (c, c)]).unwrap(), 1);
    let after = bank.graph_edges();
    assert_eq!(after.len(), 2);
    let w = |x: u64, y: u64| {
        after
            .iter()
            .find(|e| (e.0, e.1) == (x.min(y), x.max(y)))
            .map(|e| e.2)
    };
    assert_eq!(w(a, b), Some(before[0].2));
    assert_eq!(w(a, c), Some(crate::GraphConfig::default().w_init));
}

/// `centroid_epoch` moves on every change of centroids or of the pattern set (extraction,
/// import, eviction, consolidation, pruning), and not on arm statistics or graph updates.
#[test]
fn centroid_epoch_moves_exactly_when_centroids_may_change() {
    let d = 16;
    let (pts, label) = blobs(400, 4, d, 0.3, 5);
    let bank = small_bank(d);
    let e0 = bank.centroid_epoch();
    feed(&bank, &pts, &label);
    assert_eq!(
        bank.centroid_epoch(),
        e0,
        "recording trajectories changes no centroid"
    );
    bank.extract_patterns().unwrap();
    let e1 = bank.centroid_epoch();
    assert!(e1 > e0, "extraction");
    let ids: Vec<u64> = bank.patterns().iter().map(|p| p.id).collect();
    assert!(ids.len() >= 2);
    bank.record_outcome(&ids, 1, 0.9, &ids[..1]).unwrap();
    bank.record_feedback(ids[0], 2, 0.3).unwrap();
    bank.record_usage(&ids, &ids[..1]).unwrap();
    bank.decay_graph();
    let _ = bank.search(&pts[..d], 2).unwrap();
    assert_eq!(
        bank.centroid_epoch(),
        e1,
        "statistics, graph and search change no centroid"
    );
    // Eviction below the current size, and a no-op one.
    assert!(bank.evict_patterns(usize::MAX, None).unwrap().is_empty());
    assert_eq!(bank.centroid_epoch(), e1, "nothing evicted");
    let gone = bank.evict_patterns(1, None).unwrap();
    assert!(!gone.is_empty());
    let e2 = bank.centroid_epoch();
    assert!(e2 > e1, "eviction");
    let (recs, cents) = (Vec::new(), Vec::new());
    bank.import(recs, &cents).unwrap();
    let e3 = bank.centroid_epoch();
    assert!(e3 > e2, "import");
    bank.consolidate(0.99).unwrap();
    let e4 = bank.centroid_epoch();
    assert!(e4 > e3, "consolidation");
    let rule = crate::maintain::PruneRule {
        min_support: 0,
        min_reward: 0.0,
        max_idle_ms: 0,
    };
    assert!(bank.prune(rule, None).unwrap().is_empty());
    assert_eq!(bank.centroid_epoch(), e4, "nothing pruned");
}

/// `prefetch_outcome` is a hint: known, unknown, repeated and no ids change nothing (statistics,
/// graph, epoch), and `record_outcome` after it does what it does without it.
#[test]
fn prefetch_outcome_changes_nothing() {
    let (bank, ids) = extracted(400, 4);
    assert!(ids.len() >= 2);
    bank.record_outcome(&ids, 1, 0.9, &ids[..1]).unwrap();
    let snapshot = |b: &ReasoningBank| {
        let p: Vec<_> = b.patterns().into_iter().map(|p| (p.id, p.arms)).collect();
        (p, b.graph_edges(), b.centroid_epoch())
    };
    let before = snapshot(&bank);
    let many: Vec<u64> = (0..100_000).collect();
    for probe in [&ids[..], &[], &[u64::MAX, 0, ids[0], ids[0]], &many[..]] {
        bank.prefetch_outcome(probe);
    }
    assert_eq!(snapshot(&bank), before);
    bank.prefetch_outcome(&ids);
    assert_eq!(bank.record_outcome(&ids, 0, 0.2, &[]).unwrap(), ids.len());
}
