//! Trajectories awaiting feedback: a sharded map with a capacity and a time-to-live.
//!
//! Many threads call `process` (insert) and `feedback` (remove) at once. Ids are global and
//! monotonic, so `id % SHARDS` spreads consecutive requests over shards and each shard's insertion
//! order is also its id order: eviction of the oldest and expiry both pop from the front of a
//! per-shard queue. Removed ids leave stale queue entries that are skipped, and the queue is compacted
//! when stale entries outnumber live ones. (A `dashmap` was measured against this; see
//! docs/decisions.md.)

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

/// Sentinel id of an empty recall slot.
pub const MISSING: u64 = u64::MAX;

/// What `feedback` needs to recompute the decision: the raw query, the recalled pattern ids (k slots,
/// [`MISSING`] where none) and the statistics blocks the router read (`k × S`).
#[derive(Debug, Clone)]
pub struct PendingEntry {
    /// `[query (d) | stats (k × S)]`.
    pub data: Box<[f32]>,
    pub ids: Box<[u64]>,
    pub tier: u8,
    pub propensity: f32,
    pub ts_ms: u64,
    /// What `process` computed from the recalled centroids, for `feedback` to reuse (absent for
    /// entries restored from a checkpoint or the log).
    pub projected: Option<Projected>,
}

/// The router's input projections `W₂ x_t` of a decision's recall rows (`k × r_w`), with what
/// they were computed from: the router weights (by identity: the `Weak` keeps the allocation, so
/// the address cannot be reused while this lives) and the bank's
/// [`centroid_epoch`](sona_reasoning::ReasoningBank::centroid_epoch) read before the recall. While
/// both are unchanged the projections are exactly what `feedback` would recompute from the
/// centroids, so it skips reading `k` cold `d`-wide centroids (see `Inner::feedback`).
#[derive(Debug, Clone)]
pub struct Projected {
    pub rows: Box<[f32]>,
    pub router: std::sync::Weak<Vec<f32>>,
    pub epoch: u64,
}

impl Projected {
    /// Heap bytes beyond the entry: the rows and the `Weak`'s share of a retired router's header.
    pub fn heap_bytes(&self) -> usize {
        self.rows.len() * 4 + 16
    }

    /// The rows, if computed by `router` at bank epoch `epoch`.
    pub fn valid_for(&self, router: &std::sync::Arc<Vec<f32>>, epoch: u64) -> Option<&[f32]> {
        (self.epoch == epoch && std::ptr::eq(self.router.as_ptr(), std::sync::Arc::as_ptr(router)))
            .then_some(&self.rows[..])
    }
}

const SHARDS: usize = 16;

#[derive(Debug, Default)]
struct Shard {
    /// Ids are the engine's own counter (a caller's unknown id is only looked up), so a fast hasher.
    map: FxHashMap<u64, PendingEntry>,
    order: VecDeque<(u64, u64)>,
}

/// Why an id was not found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    Unknown,
    Expired,
}

/// The sharded pending map.
#[derive(Debug)]
pub struct Pending {
    shards: Vec<Mutex<Shard>>,
    cap_per_shard: usize,
    ttl_ms: u64,
    pub expired: AtomicU64,
    pub evicted: AtomicU64,
}

impl Pending {
    pub fn new(capacity: usize, ttl_ms: u64) -> Self {
        Pending {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            cap_per_shard: capacity.div_ceil(SHARDS).max(1),
            ttl_ms,
            expired: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    fn shard(&self, id: u64) -> &Mutex<Shard> {
        &self.shards[(id % SHARDS as u64) as usize]
    }

    /// Drops expired entries at the front of one shard.
    fn expire_front(&self, s: &mut Shard, now: u64) {
        while let Some(&(id, ts)) = s.order.front() {
            if !s.map.contains_key(&id) {
                s.order.pop_front();
            } else if ts.saturating_add(self.ttl_ms) < now {
                s.order.pop_front();
                s.map.remove(&id);
                self.expired.fetch_add(1, Ordering::Relaxed);
            } else {
                break;
            }
        }
    }

    pub fn insert(&self, id: u64, e: PendingEntry, now: u64) {
        let mut s = self.shard(id).lock();
        self.expire_front(&mut s, now);
        while s.map.len() >= self.cap_per_shard {
            match s.order.pop_front() {
                Some((old, _)) => {
                    if s.map.remove(&old).is_some() {
                        self.evicted.fetch_add(1, Ordering::Relaxed);
                    }
                }
                None => break,
            }
        }
        s.order.push_back((id, e.ts_ms));
        s.map.insert(id, e);
        if s.order.len() > 2 * s.map.len() + 64 {
            let Shard { map, order } = &mut *s;
            order.retain(|(i, _)| map.contains_key(i));
        }
    }

    /// Takes the entry of `id` (so a repeated feedback finds nothing).
    pub fn take(&self, id: u64, now: u64) -> Result<PendingEntry, Missing> {
        let mut s = self.shard(id).lock();
        match s.map.remove(&id) {
            None => Err(Missing::Unknown),
            Some(e) if e.ts_ms.saturating_add(self.ttl_ms) < now => {
                self.expired.fetch_add(1, Ordering::Relaxed);
                Err(Missing::Expired)
            }
            Some(e) => Ok(e),
        }
    }

    /// Puts back an entry taken by [`take`](Self::take) (a feedback that failed after taking it).
    pub fn restore(&self, id: u64, e: PendingEntry) {
        let mut s = self.shard(id).lock();
        s.order.push_back((id, e.ts_ms));
        s.map.insert(id, e);
    }

    pub fn contains(&self, id: u64, now: u64) -> bool {
        let s = self.shard(id).lock();
        s.map
            .get(&id)
            .is_some_and(|e| e.ts_ms.saturating_add(self.ttl_ms) >= now)
    }

    /// Expires old entries in every shard; returns how many are left.
    pub fn expire(&self, now: u64) -> usize {
        self.shards
            .iter()
            .map(|m| {
                let mut s = m.lock();
                self.expire_front(&mut s, now);
                s.map.len()
            })
            .sum()
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map.len()).sum()
    }

    /// A copy of every entry, by id (for checkpoints; expired entries not yet dropped included).
    pub fn entries(&self) -> Vec<(u64, PendingEntry)> {
        let mut v: Vec<(u64, PendingEntry)> = self
            .shards
            .iter()
            .flat_map(|m| {
                let s = m.lock();
                s.map
                    .iter()
                    .map(|(&id, e)| (id, e.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        v.sort_unstable_by_key(|e| e.0);
        v
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate heap bytes.
    pub fn heap_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|m| {
                let s = m.lock();
                s.map
                    .values()
                    .map(|e| {
                        e.data.len() * 4
                            + e.ids.len() * 8
                            + 64
                            + e.projected.as_ref().map_or(0, Projected::heap_bytes)
                    })
                    .sum::<usize>()
                    + s.order.capacity() * 16
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ts: u64) -> PendingEntry {
        PendingEntry {
            data: vec![0.0; 4].into(),
            ids: vec![MISSING].into(),
            tier: 0,
            propensity: 1.0,
            ts_ms: ts,
            projected: None,
        }
    }

    #[test]
    fn take_once_expire_and_evict() {
        let p = Pending::new(32, 100);
        for id in 0..32 {
            p.insert(id, entry(0), 0);
        }
        assert_eq!(p.len(), 32);
        assert!(p.take(3, 50).is_ok());
        assert_eq!(p.take(3, 50).unwrap_err(), Missing::Unknown);
        assert_eq!(p.take(4, 500).unwrap_err(), Missing::Expired);
        // Capacity 2 per shard: inserting id 32 (shard 0) evicts id 0.
        p.insert(32, entry(60), 60);
        assert!(!p.contains(0, 60));
        assert!(p.contains(16, 60));
        assert_eq!(p.evicted.load(Ordering::Relaxed), 1);
        assert_eq!(p.expire(1000), 0);
    }
}
