//! Compact storage of completed trajectories: one unit-norm `f32` vector and 24 bytes of fixed fields.
//!
//! design §2's [`sona_core::types::Trajectory`] carries the query AND the adapted embedding, steps and the
//! full decision. The bank only clusters and replays one vector per trajectory (the adapted embedding
//! when the caller has one), so it keeps exactly that, at full precision, plus the fields extraction and
//! replay read. This keeps a stored 256-d trajectory at ~1.05 KB (target ≤ 1.5 KB).

use sona_core::types::RewardSource;

/// "No tier was recorded" in [`TrajectoryMeta::tier`].
pub const NO_TIER: u8 = u8::MAX;

/// The fixed-size fields of one stored trajectory (24 bytes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrajectoryMeta {
    /// Global, monotonic, never-reused id.
    pub id: u64,
    /// Time the trajectory was recorded (ms since the Unix epoch, or the caller's clock).
    pub ts_ms: u64,
    /// Reward in `[0, 1]`; `NaN` while none arrived (only pending trajectories lack one).
    pub reward: f32,
    /// Chosen tier, or [`NO_TIER`].
    pub tier: u8,
    pub source: RewardSource,
}

impl TrajectoryMeta {
    /// The tier as an `Option`.
    pub fn tier(&self) -> Option<u8> {
        (self.tier != NO_TIER).then_some(self.tier)
    }

    /// The reward as an `Option`.
    pub fn reward(&self) -> Option<f32> {
        (!self.reward.is_nan()).then_some(self.reward)
    }

    /// Packs tier and source into one `u64` for checkpoints (ids and timestamps are stored as-is).
    pub(crate) fn pack_small(&self) -> u64 {
        (self.tier as u64) | ((source_code(self.source) as u64) << 8)
    }

    pub(crate) fn unpack_small(v: u64) -> (u8, RewardSource) {
        ((v & 0xFF) as u8, source_from_code(((v >> 8) & 0xFF) as u8))
    }
}

pub(crate) fn source_code(s: RewardSource) -> u8 {
    match s {
        RewardSource::Explicit => 0,
        RewardSource::Implicit => 1,
        RewardSource::Judge => 2,
    }
}

pub(crate) fn source_from_code(c: u8) -> RewardSource {
    match c {
        1 => RewardSource::Implicit,
        2 => RewardSource::Judge,
        _ => RewardSource::Explicit,
    }
}

/// Trajectories stored contiguously: row `i` of `data` (`dim` floats) belongs to `meta[i]`.
///
/// Growth is geometric by 1.25× (not `Vec`'s 2×) so that allocated-but-unused space stays below a
/// quarter of the payload: that slack is what the memory target has to absorb.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrajectorySlab {
    pub dim: usize,
    pub data: Vec<f32>,
    pub meta: Vec<TrajectoryMeta>,
}

impl TrajectorySlab {
    pub fn new(dim: usize) -> Self {
        TrajectorySlab {
            dim,
            data: Vec::new(),
            meta: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.meta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Makes room for one more row, growing by max(64 rows, 25%) but never beyond `cap` rows.
    fn reserve_one(&mut self, cap: usize) {
        let n = self.meta.len();
        if n < self.meta.capacity() && (n + 1) * self.dim <= self.data.capacity() {
            return;
        }
        let grow = (n / 4).max(64).min(cap.saturating_sub(n)).max(1);
        self.data.reserve_exact(grow * self.dim);
        self.meta.reserve_exact(grow);
        // Fault the new rows in now, in one call, rather than one page every few appends (a
        // fresh ring at d = 768 took a page fault every 1.3 feedbacks).
        sona_core::mem::prefault_spare(&mut self.data);
    }

    /// Appends a row (the caller checked length and finiteness). `cap` bounds the growth step.
    pub fn push(&mut self, meta: TrajectoryMeta, v: &[f32], cap: usize) {
        debug_assert_eq!(v.len(), self.dim);
        self.reserve_one(cap);
        self.data.extend_from_slice(v);
        self.meta.push(meta);
    }

    /// Overwrites row `i`.
    pub fn set(&mut self, i: usize, meta: TrajectoryMeta, v: &[f32]) {
        self.data[i * self.dim..(i + 1) * self.dim].copy_from_slice(v);
        self.meta[i] = meta;
    }

    /// Heap bytes held (allocated capacity, not just the used part).
    pub fn heap_bytes(&self) -> usize {
        self.data.capacity() * std::mem::size_of::<f32>()
            + self.meta.capacity() * std::mem::size_of::<TrajectoryMeta>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_is_24_bytes_and_packs() {
        assert_eq!(std::mem::size_of::<TrajectoryMeta>(), 24);
        let m = TrajectoryMeta {
            id: 7,
            ts_ms: 1,
            reward: 0.5,
            tier: 3,
            source: RewardSource::Judge,
        };
        assert_eq!(
            TrajectoryMeta::unpack_small(m.pack_small()),
            (3, RewardSource::Judge)
        );
        assert_eq!(m.tier(), Some(3));
        let none = TrajectoryMeta {
            tier: NO_TIER,
            reward: f32::NAN,
            ..m
        };
        assert_eq!(none.tier(), None);
        assert_eq!(none.reward(), None);
    }

    #[test]
    fn slab_growth_slack_is_bounded() {
        let d = 256;
        let mut s = TrajectorySlab::new(d);
        let v = vec![0.1f32; d];
        let m = TrajectoryMeta {
            id: 0,
            ts_ms: 0,
            reward: 1.0,
            tier: 0,
            source: RewardSource::Explicit,
        };
        for i in 0..10_000u64 {
            s.push(TrajectoryMeta { id: i, ..m }, &v, usize::MAX);
        }
        let per = s.heap_bytes() as f64 / s.len() as f64;
        assert!(
            per <= 1.25 * (d as f64 * 4.0 + 24.0) + 1.0,
            "{per} bytes per row"
        );
    }
}
