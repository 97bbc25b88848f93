//! Where trajectories wait: the bounded ring of new completed trajectories (input of the next
//! extraction), the uniform replay reservoir, and the bounded map of trajectories awaiting feedback.
//!
//! All three live in one [`TrajectoryStore`] behind one mutex in the bank: producers hold it for a
//! copy of one vector, extraction holds it only to take the ring's contents.

use std::collections::BTreeMap;

use sona_core::types::RewardSource;
use sona_core::{Result, SeededRng, SonaError};

use crate::trajectory::{TrajectoryMeta, TrajectorySlab};

/// A bounded FIFO of completed trajectories that overwrites the OLDEST entry when full and counts
/// every trajectory lost that way.
#[derive(Debug, Clone)]
pub struct RingBuffer {
    cap: usize,
    slab: TrajectorySlab,
    /// Index of the oldest row once the ring has wrapped.
    start: usize,
    dropped: u64,
}

impl RingBuffer {
    pub fn new(dim: usize, cap: usize) -> Self {
        RingBuffer {
            cap,
            slab: TrajectorySlab::new(dim),
            start: 0,
            dropped: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Trajectories overwritten before any extraction saw them.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn push(&mut self, meta: TrajectoryMeta, v: &[f32]) {
        if self.slab.len() < self.cap {
            self.slab.push(meta, v, self.cap);
        } else {
            self.slab.set(self.start, meta, v);
            self.start = (self.start + 1) % self.cap;
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    /// Removes and returns everything, oldest first (an O(1) move unless the ring wrapped).
    pub fn take(&mut self) -> TrajectorySlab {
        let dim = self.slab.dim;
        let mut out = std::mem::replace(&mut self.slab, TrajectorySlab::new(dim));
        if self.start != 0 {
            out.data.rotate_left(self.start * out.dim);
            out.meta.rotate_left(self.start);
            self.start = 0;
        }
        out
    }

    /// Takes back the allocation of a batch returned by [`take`](Self::take) and consumed (its rows
    /// are dropped), when it is larger than the ring's own; the rows that arrived since the
    /// `take` are kept, in order.
    pub fn recycle(&mut self, mut batch: TrajectorySlab) {
        if batch.dim != self.slab.dim || batch.data.capacity() <= self.slab.data.capacity() {
            return;
        }
        let newer = self.take();
        let dropped = self.dropped;
        batch.data.clear();
        batch.meta.clear();
        self.slab = batch;
        self.push_all(&newer);
        self.dropped = dropped;
    }

    /// Pushes every row of `slab`, oldest first.
    fn push_all(&mut self, slab: &TrajectorySlab) {
        for i in 0..slab.len() {
            self.push(slab.meta[i], slab.row(i));
        }
    }

    /// Puts back a batch taken by [`take`](Self::take) (an extraction that failed), before the
    /// trajectories that arrived since; beyond the capacity the oldest are dropped and counted, as
    /// if the batch had never left.
    pub fn put_back(&mut self, batch: TrajectorySlab) {
        let newer = self.take();
        let before = self.dropped;
        let mut r = RingBuffer::new(batch.dim, self.cap);
        r.push_all(&batch);
        r.push_all(&newer);
        r.dropped += before;
        *self = r;
    }

    /// A copy of the contents, oldest first (for checkpoints).
    pub fn snapshot(&self) -> TrajectorySlab {
        let mut c = self.clone();
        c.take()
    }

    /// Rebuilds a ring from a checkpoint.
    pub fn restore(dim: usize, cap: usize, slab: TrajectorySlab, dropped: u64) -> Self {
        let mut r = RingBuffer::new(dim, cap);
        r.push_all(&slab);
        r.dropped = dropped;
        r
    }

    pub fn heap_bytes(&self) -> usize {
        self.slab.heap_bytes()
    }
}

/// A uniform sample of every completed trajectory ever offered (Vitter's Algorithm R): after `n`
/// offers each one is in the reservoir with probability `cap / n`, so replay is unbiased over history.
#[derive(Debug, Clone)]
pub struct Reservoir {
    cap: usize,
    slab: TrajectorySlab,
    seen: u64,
    seed: u64,
    rng: SeededRng,
}

impl Reservoir {
    pub fn new(dim: usize, cap: usize, seed: u64) -> Self {
        Reservoir {
            cap,
            slab: TrajectorySlab::new(dim),
            seen: 0,
            seed,
            rng: SeededRng::new(seed),
        }
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// How many trajectories were offered in total.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    pub fn slab(&self) -> &TrajectorySlab {
        &self.slab
    }

    pub fn offer(&mut self, meta: TrajectoryMeta, v: &[f32]) {
        self.seen = self.seen.saturating_add(1);
        if self.slab.len() < self.cap {
            self.slab.push(meta, v, self.cap);
        } else if self.cap > 0 {
            let j = self.rng.below(self.seen) as usize;
            if j < self.cap {
                self.slab.set(j, meta, v);
            }
        }
    }

    /// Rebuilds from a checkpoint with the saved RNG state (bit-identical continuation). Without one
    /// (older files) the RNG is re-seeded from `(seed, seen)`, which keeps sampling uniform — each
    /// decision only needs an independent uniform draw — but not identical to an uninterrupted run.
    pub fn restore(
        dim: usize,
        cap: usize,
        seed: u64,
        slab: TrajectorySlab,
        seen: u64,
        rng: Option<SeededRng>,
    ) -> Self {
        let mut r = Reservoir::new(dim, cap, seed);
        r.rng =
            rng.unwrap_or_else(|| SeededRng::new(seed ^ seen.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        r.slab = slab;
        r.seen = seen;
        r
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The sampling RNG (saved in checkpoints).
    pub fn rng(&self) -> &SeededRng {
        &self.rng
    }

    pub fn heap_bytes(&self) -> usize {
        self.slab.heap_bytes()
    }
}

/// A trajectory recorded without a reward, waiting for `set_reward`.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEntry {
    pub embedding: Box<[f32]>,
    pub ts_ms: u64,
    pub tier: u8,
}

/// Bounded map of trajectories awaiting feedback. Ids are monotonic, so the `BTreeMap`'s first key is
/// always the oldest entry: eviction when full and expiry by age are both pops from the front.
#[derive(Debug, Clone, Default)]
pub struct PendingMap {
    cap: usize,
    ttl_ms: u64,
    map: BTreeMap<u64, PendingEntry>,
    expired: u64,
}

impl PendingMap {
    pub fn new(cap: usize, ttl_ms: u64) -> Self {
        PendingMap {
            cap,
            ttl_ms,
            map: BTreeMap::new(),
            expired: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Entries that expired or were evicted to make room, without ever receiving feedback.
    pub fn expired(&self) -> u64 {
        self.expired
    }

    pub fn contains(&self, id: u64) -> bool {
        self.map.contains_key(&id)
    }

    pub fn get(&self, id: u64) -> Option<&PendingEntry> {
        self.map.get(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&u64, &PendingEntry)> {
        self.map.iter()
    }

    /// Inserts, evicting the oldest entry when full.
    pub fn insert(&mut self, id: u64, e: PendingEntry) {
        if self.cap == 0 {
            self.expired = self.expired.saturating_add(1);
            return;
        }
        while self.map.len() >= self.cap {
            self.map.pop_first();
            self.expired = self.expired.saturating_add(1);
        }
        self.map.insert(id, e);
    }

    pub fn remove(&mut self, id: u64) -> Option<PendingEntry> {
        self.map.remove(&id)
    }

    /// Drops entries older than the TTL at `now_ms`; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let mut n = 0;
        // Ids are monotonic but caller-given timestamps need not be, so scan rather than stop at the
        // first young entry.
        self.map.retain(|_, e| {
            let keep = e.ts_ms.saturating_add(self.ttl_ms) > now_ms;
            n += usize::from(!keep);
            keep
        });
        self.expired += n as u64;
        n
    }

    pub fn restore(
        cap: usize,
        ttl_ms: u64,
        entries: Vec<(u64, PendingEntry)>,
        expired: u64,
    ) -> Self {
        let mut p = PendingMap::new(cap, ttl_ms);
        p.map = entries.into_iter().collect();
        p.expired = expired;
        p
    }

    /// Heap bytes, estimating the B-tree's per-entry overhead from its node layout (11 entries/node).
    pub fn heap_bytes(&self, dim: usize) -> usize {
        let per_entry = std::mem::size_of::<u64>() + std::mem::size_of::<PendingEntry>();
        // A B-tree leaf holds up to 11 entries and is on average ~3/4 full, plus parent/len fields.
        let per_entry_tree = per_entry * 4 / 3 + 8;
        self.map.len() * (per_entry_tree + dim * std::mem::size_of::<f32>())
    }
}

/// Everything the bank holds about trajectories, plus the global trajectory-id counter.
#[derive(Debug, Clone)]
pub struct TrajectoryStore {
    pub dim: usize,
    pub n_tiers: usize,
    /// Next id to hand out (ids start at 1 and are never reused, across save/load too).
    pub next_id: u64,
    pub ring: RingBuffer,
    pub reservoir: Reservoir,
    pub pending: PendingMap,
    /// Completed trajectories (ever).
    pub completed: u64,
}

impl TrajectoryStore {
    /// Records a trajectory whose embedding is already validated and unit-norm.
    pub fn add(
        &mut self,
        unit: &[f32],
        reward: Option<f32>,
        tier: u8,
        source: RewardSource,
        ts_ms: u64,
    ) -> Result<u64> {
        let id = crate::node::take_id(&mut self.next_id, "trajectory")?;
        match reward {
            Some(r) => self.complete(
                TrajectoryMeta {
                    id,
                    ts_ms,
                    reward: r,
                    tier,
                    source,
                },
                unit,
            ),
            None => self.pending.insert(
                id,
                PendingEntry {
                    embedding: unit.into(),
                    ts_ms,
                    tier,
                },
            ),
        }
        Ok(id)
    }

    fn complete(&mut self, meta: TrajectoryMeta, v: &[f32]) {
        self.ring.push(meta, v);
        self.reservoir.offer(meta, v);
        // Counters are statistics read back from files: they saturate rather than overflow.
        self.completed = self.completed.saturating_add(1);
    }

    /// Moves a pending trajectory to the completed stores with its reward. The reward and tier were
    /// validated by the caller; an unknown (never issued, expired or already rewarded) id is an error.
    pub fn set_reward(
        &mut self,
        id: u64,
        reward: f32,
        source: RewardSource,
        tier: Option<u8>,
    ) -> Result<()> {
        let e = self.pending.remove(id).ok_or(SonaError::UnknownId {
            kind: "pending trajectory",
            id: id.into(),
        })?;
        let meta = TrajectoryMeta {
            id,
            ts_ms: e.ts_ms,
            reward,
            tier: tier.unwrap_or(e.tier),
            source,
        };
        self.complete(meta, &e.embedding);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trajectory::NO_TIER;

    fn meta(id: u64) -> TrajectoryMeta {
        TrajectoryMeta {
            id,
            ts_ms: id,
            reward: 0.5,
            tier: NO_TIER,
            source: RewardSource::Explicit,
        }
    }

    #[test]
    fn ring_drops_oldest_and_counts() {
        let mut r = RingBuffer::new(2, 3);
        for i in 0..5u64 {
            r.push(meta(i), &[i as f32, 0.0]);
        }
        assert_eq!(r.dropped(), 2);
        let snap = r.snapshot();
        assert_eq!(
            snap.meta.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert_eq!(snap.row(0), &[2.0, 0.0]);
        let t = r.take();
        assert_eq!(t, snap);
        assert!(r.is_empty());
        r.push(meta(9), &[9.0, 0.0]);
        assert_eq!(r.take().meta[0].id, 9);
    }

    /// A consumed batch's allocation goes back to the ring; rows that arrived (and wrapped)
    /// since the take stay, in order, and a smaller batch is left alone.
    #[test]
    fn recycle_keeps_the_larger_allocation_and_the_newer_rows() {
        let mut r = RingBuffer::new(2, 3);
        for i in 0..3u64 {
            r.push(meta(i), &[i as f32, 0.0]);
        }
        let batch = r.take();
        let cap = batch.data.capacity();
        for i in 10..14u64 {
            r.push(meta(i), &[i as f32, 1.0]);
        }
        assert_eq!(r.dropped(), 1);
        r.recycle(batch);
        assert!(r.slab.data.capacity() >= cap);
        assert_eq!(r.dropped(), 1);
        let snap = r.snapshot();
        assert_eq!(
            snap.meta.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![11, 12, 13]
        );
        assert_eq!(snap.row(2), &[13.0, 1.0]);
        // Pushing after the recycle wraps as usual.
        r.push(meta(20), &[20.0, 2.0]);
        assert_eq!(
            r.snapshot().meta.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![12, 13, 20]
        );
        let before = r.slab.data.capacity();
        r.recycle(TrajectorySlab::new(2));
        assert_eq!(r.slab.data.capacity(), before);
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn reservoir_is_uniform_over_history() {
        // Offer 0..1000 into a reservoir of 100, many times: each id's inclusion rate must be ~0.1,
        // for old and recent ids alike (a FIFO would keep only the last 100).
        let (n, cap, reps) = (1000u64, 100usize, 400u64);
        let mut hits = vec![0u32; n as usize];
        for s in 0..reps {
            let mut r = Reservoir::new(1, cap, s);
            for i in 0..n {
                r.offer(meta(i), &[0.0]);
            }
            assert_eq!(r.len(), cap);
            for m in &r.slab().meta {
                hits[m.id as usize] += 1;
            }
        }
        let old: u32 = hits[..500].iter().sum();
        let new: u32 = hits[500..].iter().sum();
        let expect = (reps as f64) * cap as f64 / 2.0;
        for h in [old, new] {
            assert!((h as f64 - expect).abs() < 0.05 * expect, "{old} vs {new}");
        }
    }

    #[test]
    fn pending_evicts_oldest_and_expires() {
        let mut p = PendingMap::new(2, 100);
        let e = |ts| PendingEntry {
            embedding: vec![1.0].into(),
            ts_ms: ts,
            tier: 0,
        };
        p.insert(1, e(0));
        p.insert(2, e(50));
        p.insert(3, e(60));
        assert!(!p.contains(1));
        assert_eq!(p.expired(), 1);
        assert_eq!(p.expire(155), 1);
        assert!(p.contains(3) && !p.contains(2));
        assert_eq!(p.expired(), 2);
    }

    #[test]
    fn store_ids_are_monotonic_and_reward_completes() {
        let mut s = TrajectoryStore {
            dim: 1,
            n_tiers: 2,
            next_id: 1,
            ring: RingBuffer::new(1, 10),
            reservoir: Reservoir::new(1, 10, 0),
            pending: PendingMap::new(10, 1000),
            completed: 0,
        };
        let a = s.add(&[1.0], None, 1, RewardSource::Explicit, 0).unwrap();
        let b = s
            .add(&[1.0], Some(1.0), 0, RewardSource::Explicit, 0)
            .unwrap();
        assert!(b > a);
        assert_eq!(s.ring.len(), 1);
        s.set_reward(a, 0.25, RewardSource::Judge, None).unwrap();
        assert_eq!(s.ring.len(), 2);
        assert!(matches!(
            s.set_reward(a, 0.25, RewardSource::Judge, None),
            Err(SonaError::UnknownId { .. })
        ));
        let m = s.ring.snapshot().meta[1];
        assert_eq!(
            (m.id, m.reward, m.tier, m.source),
            (a, 0.25, 1, RewardSource::Judge)
        );
    }
}
