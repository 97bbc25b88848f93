//! Readers never wait for writers (design §3), and a reader of a two-tier stack sees both tiers of one
//! generation: the weights of every tier of one stack live in one immutable [`Generation`] swapped
//! atomically with `arc_swap::ArcSwap`.
//!
//! A reader's `load()` is a few atomic operations and never blocks, whatever a writer is doing. A
//! tier's writer (serialised by the tier's own lock) fills a *spare* weights buffer with its next
//! version and publishes it; a merge publishes the new base and the restarted micro tier in *one*
//! swap, so no reader can see the new base next to the old micro weights (which would count the
//! micro correction twice) or the old base next to the restarted micro (which would lose it).
//! Publications of two tiers are serialised by a short publish lock that readers never take.
//!
//! Buffers are recycled: the replaced weights become the writer's next spare once no reader holds
//! them, and the replaced generation is reused for the next swap, so steady-state updates do not
//! allocate; if a reader still holds one, a fresh buffer is allocated instead of waiting.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use parking_lot::Mutex;

/// Tiers a stack can have (base and micro).
pub const TIERS: usize = 2;

/// One published state of a stack: the weights of each tier and a counter that grows with every
/// publication.
#[derive(Debug)]
pub struct Generation<T> {
    pub number: u64,
    tiers: [Option<Arc<T>>; TIERS],
}

impl<T> Generation<T> {
    /// The weights of `tier` (every tier of a stack is always present).
    #[inline]
    pub fn tier(&self, tier: usize) -> &T {
        self.tiers[tier]
            .as_deref()
            .expect("every tier of a stack is published")
    }

    /// The weights of `tier` as an owned `Arc`.
    #[inline]
    pub fn tier_arc(&self, tier: usize) -> Arc<T> {
        Arc::clone(
            self.tiers[tier]
                .as_ref()
                .expect("every tier of a stack is published"),
        )
    }
}

/// The published weights of a stack of up to [`TIERS`] tiers.
#[derive(Debug)]
pub struct Snapshot<T> {
    cell: ArcSwap<Generation<T>>,
    /// Serialises publications of different tiers; holds the replaced generation for reuse.
    publish: Mutex<Option<Arc<Generation<T>>>>,
}

impl<T: Clone> Snapshot<T> {
    /// A stack whose tiers start at `values` (one per tier, at most [`TIERS`]).
    pub fn new(values: Vec<T>) -> Self {
        assert!(
            !values.is_empty() && values.len() <= TIERS,
            "1 to {TIERS} tiers"
        );
        let mut tiers: [Option<Arc<T>>; TIERS] = Default::default();
        for (slot, v) in tiers.iter_mut().zip(values) {
            *slot = Some(Arc::new(v));
        }
        Snapshot {
            cell: ArcSwap::from_pointee(Generation { number: 0, tiers }),
            publish: Mutex::new(None),
        }
    }

    /// The current generation, for a short read (never blocks, does not allocate).
    #[inline]
    pub fn load(&self) -> Guard<Arc<Generation<T>>> {
        self.cell.load()
    }

    /// The current weights of `tier` as an owned `Arc` (for longer use).
    #[inline]
    pub fn load_tier(&self, tier: usize) -> Arc<T> {
        self.cell.load().tier_arc(tier)
    }

    /// A uniquely owned buffer for the next version: the recycled spare if nobody else holds it,
    /// else a clone of `like`. Its contents are stale; the writer overwrites them.
    pub fn take_spare(&self, spare: &mut Option<Arc<T>>, like: &T) -> Arc<T> {
        match spare.take() {
            Some(mut s) => {
                if Arc::get_mut(&mut s).is_some() {
                    s
                } else {
                    Arc::new(like.clone())
                }
            }
            None => Arc::new(like.clone()),
        }
    }

    /// Publishes new weights for one or more tiers in one swap (`None` keeps a tier as it is) and
    /// returns the replaced weights of the changed tiers (the writers' next spares).
    pub fn publish(&self, next: [Option<Arc<T>>; TIERS]) -> [Option<Arc<T>>; TIERS] {
        let mut reuse = self.publish.lock();
        // Publications are serialised by `reuse`'s lock, so `cur` stays current until the swap.
        let cur = self.cell.load_full();
        let mut gen = match reuse.take() {
            Some(g) if Arc::strong_count(&g) == 1 && Arc::weak_count(&g) == 0 => g,
            _ => Arc::new(Generation {
                number: 0,
                tiers: Default::default(),
            }),
        };
        let mut replaced: [Option<Arc<T>>; TIERS] = Default::default();
        {
            let g = Arc::get_mut(&mut gen).expect("unique generation");
            g.number = cur.number + 1;
            for (t, n) in next.into_iter().enumerate() {
                match n {
                    Some(n) => {
                        g.tiers[t] = Some(n);
                        replaced[t] = cur.tiers[t].clone();
                    }
                    None => g.tiers[t] = cur.tiers[t].clone(),
                }
            }
        }
        drop(cur);
        let mut old = self.cell.swap(gen);
        // Drop the old generation's references so the replaced weights can be recycled; if a
        // reader still holds the generation, it keeps its weights and the next swap allocates.
        if let Some(g) = Arc::get_mut(&mut old) {
            g.tiers = Default::default();
            *reuse = Some(old);
        }
        replaced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_keep_their_version_and_buffers_are_recycled() {
        let snap = Snapshot::new(vec![vec![1.0f32; 4]]);
        let mut spare = None;
        let held = snap.load_tier(0);
        let cur = snap.load_tier(0);
        let mut next = snap.take_spare(&mut spare, &cur);
        Arc::get_mut(&mut next).unwrap().fill(2.0);
        drop(cur);
        spare = snap.publish([Some(next), None])[0].take();
        assert_eq!(held[0], 1.0, "a reader keeps the version it loaded");
        assert_eq!(snap.load().tier(0)[0], 2.0);
        assert_eq!(snap.load().number, 1);
        // The spare is still held by `held`: a fresh buffer is used instead of waiting.
        let cur = snap.load_tier(0);
        let n2 = snap.take_spare(&mut spare, &cur);
        assert!(!Arc::ptr_eq(&n2, &held));
        drop(held);
        // Once released, the replaced version is recycled.
        spare = snap.publish([Some(n2), None])[0].take();
        drop(cur);
        let p = Arc::as_ptr(spare.as_ref().unwrap());
        let like = snap.load_tier(0);
        let n3 = snap.take_spare(&mut spare, &like);
        assert_eq!(Arc::as_ptr(&n3), p);
    }

    #[test]
    fn two_tiers_change_in_one_generation() {
        let snap = Snapshot::new(vec![1u32, 10]);
        let g0 = snap.load_full_gen();
        let old = snap.publish([Some(Arc::new(2)), Some(Arc::new(20))]);
        assert_eq!(
            (*old[0].clone().unwrap(), *old[1].clone().unwrap()),
            (1, 10)
        );
        let g = snap.load();
        assert_eq!((*g.tier(0), *g.tier(1), g.number), (2, 20, 1));
        assert_eq!(
            (*g0.tier(0), *g0.tier(1)),
            (1, 10),
            "old readers keep theirs"
        );
        let old = snap.publish([None, Some(Arc::new(30))]);
        assert!(old[0].is_none());
        assert_eq!((*snap.load().tier(0), *snap.load().tier(1)), (2, 30));
    }

    impl<T: Clone> Snapshot<T> {
        fn load_full_gen(&self) -> Arc<Generation<T>> {
            self.cell.load_full()
        }
    }
}
