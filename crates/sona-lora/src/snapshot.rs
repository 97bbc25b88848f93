//! Readers never wait for writers (SPEC §3): the current weights are an immutable `Arc` swapped
//! atomically with `arc_swap::ArcSwap`.
//!
//! A reader's `load()` is a few atomic operations and never blocks, whatever a writer is doing. The
//! single writer (serialised by its own lock) fills a *spare* buffer with the next version and publishes
//! it; the version it replaces becomes the next spare once no reader holds it any more. In the usual
//! case (no reader mid-forward at that instant) the spare is uniquely owned and reused, so steady-state
//! updates do not allocate; if a reader still holds it, a fresh buffer is allocated instead of waiting.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

/// An atomically swappable immutable value with buffer recycling for its single writer.
#[derive(Debug)]
pub struct Snapshot<T> {
    cell: ArcSwap<T>,
}

impl<T: Clone> Snapshot<T> {
    pub fn new(value: T) -> Self {
        Snapshot {
            cell: ArcSwap::from_pointee(value),
        }
    }

    /// The current version, for a short read (never blocks, does not allocate).
    #[inline]
    pub fn load(&self) -> Guard<Arc<T>> {
        self.cell.load()
    }

    /// The current version as an owned `Arc` (for longer use).
    #[inline]
    pub fn load_full(&self) -> Arc<T> {
        self.cell.load_full()
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

    /// Publishes `next`; the replaced version is kept as the next spare.
    pub fn publish(&self, next: Arc<T>, spare: &mut Option<Arc<T>>) {
        *spare = Some(self.cell.swap(next));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_keep_their_version_and_buffers_are_recycled() {
        let snap = Snapshot::new(vec![1.0f32; 4]);
        let mut spare = None;
        let held = snap.load_full();
        let cur = snap.load_full();
        let mut next = snap.take_spare(&mut spare, &cur);
        Arc::get_mut(&mut next).unwrap().fill(2.0);
        drop(cur);
        snap.publish(next, &mut spare);
        assert_eq!(held[0], 1.0, "a reader keeps the version it loaded");
        assert_eq!(snap.load()[0], 2.0);
        // The spare is still held by `held`: a fresh buffer is used instead of waiting.
        let cur = snap.load_full();
        let n2 = snap.take_spare(&mut spare, &cur);
        assert!(!Arc::ptr_eq(&n2, &held));
        drop(held);
        // Once released, the replaced version is recycled.
        snap.publish(n2, &mut spare);
        drop(cur);
        let p = Arc::as_ptr(spare.as_ref().unwrap());
        let like = snap.load_full();
        let n3 = snap.take_spare(&mut spare, &like);
        assert_eq!(Arc::as_ptr(&n3), p);
    }
}
