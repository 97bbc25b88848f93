//! Top-k selection over a score slice.

use std::cmp::Ordering;

/// The `k` largest scores as `(index, score)`, best first. NaN scores rank last; ties keep the
/// lower index first so results are deterministic. `O(n + k log k)` via `select_nth_unstable`.
pub fn top_k(scores: &[f32], k: usize) -> Vec<(usize, f32)> {
    let k = k.min(scores.len());
    if k == 0 {
        return Vec::new();
    }
    let mut idx: Vec<(usize, f32)> = scores.iter().copied().enumerate().collect();
    let cmp = |a: &(usize, f32), b: &(usize, f32)| -> Ordering {
        let ka = if a.1.is_nan() { f32::NEG_INFINITY } else { a.1 };
        let kb = if b.1.is_nan() { f32::NEG_INFINITY } else { b.1 };
        kb.total_cmp(&ka).then(a.0.cmp(&b.0))
    };
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    idx.sort_unstable_by(cmp);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_largest_in_order() {
        let s = [0.1, 0.9, -1.0, 0.5, f32::NAN, 0.9];
        assert_eq!(top_k(&s, 3), vec![(1, 0.9), (5, 0.9), (3, 0.5)]);
        assert_eq!(top_k(&s, 0), vec![]);
        assert_eq!(top_k(&s, 100).len(), 6);
        assert_eq!(top_k(&s, 6)[5].0, 4, "NaN ranks last");
    }
}
