//! Prioritized replay (Schaul et al. 2016, proportional variant) over a fixed number of slots.
//!
//! Slot `i` is drawn with probability `p_i / Σ p` where `p_i = (|error_i| + ε)^α`; each draw
//! carries the importance weight `w_i = (N · P(i))^(−β) / max_j w_j`, which corrects the bias of
//! non-uniform sampling in the gradient. A sum tree makes sampling and updates O(log N).

use sona_core::{Result, SeededRng, SonaError};

/// A sum tree of non-negative priorities over `capacity` slots.
#[derive(Debug, Clone)]
pub struct PrioritizedReplay {
    cap: usize,
    tree: Vec<f64>,
    len: usize,
    alpha: f64,
    eps: f64,
    max_priority: f64,
}

impl PrioritizedReplay {
    /// `capacity` slots; priorities `(|e| + eps)^alpha` (`alpha = 0` is uniform replay).
    pub fn new(capacity: usize, alpha: f64, eps: f64) -> Result<Self> {
        sona_core::validate::check_size("replay capacity", capacity, 1, 1 << 26)?;
        sona_core::validate::check_range("alpha", alpha, 0.0, 4.0)?;
        sona_core::validate::check_range("eps", eps, 1e-12, 1.0)?;
        Ok(PrioritizedReplay {
            cap: capacity,
            tree: sona_core::validate::try_filled("replay tree", 2 * capacity, 0.0)?,
            len: 0,
            alpha,
            eps,
            max_priority: 1.0,
        })
    }

    /// Slots in use.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    fn set(&mut self, slot: usize, p: f64) {
        let mut i = slot + self.cap;
        let delta = p - self.tree[i];
        while i >= 1 {
            self.tree[i] += delta;
            i /= 2;
        }
    }

    /// Total priority.
    pub fn total(&self) -> f64 {
        self.tree[1].max(0.0)
    }

    /// Priority of `slot`.
    pub fn priority(&self, slot: usize) -> f64 {
        self.tree[slot + self.cap]
    }

    /// Adds a new item at the next slot (or `slot` when given, replacing it) with the largest
    /// priority seen so far, so new items are replayed at least once soon. Returns its slot.
    pub fn push(&mut self, slot: Option<usize>) -> Result<usize> {
        let s = match slot {
            Some(s) if s < self.cap => s,
            Some(s) => {
                return Err(SonaError::invalid(format!(
                    "slot {s} ≥ capacity {}",
                    self.cap
                )))
            }
            None if self.len < self.cap => self.len,
            None => return Err(SonaError::invalid("prioritized replay is full")),
        };
        if s >= self.len {
            self.len = s + 1;
        }
        self.set(s, self.max_priority);
        Ok(s)
    }

    /// Sets the priority of `slot` from its latest absolute prediction error.
    pub fn update(&mut self, slot: usize, abs_error: f64) -> Result<()> {
        if slot >= self.len {
            return Err(SonaError::invalid(format!("slot {slot} is not in use")));
        }
        if !abs_error.is_finite() {
            return Err(SonaError::invalid(format!(
                "error must be finite, got {abs_error}"
            )));
        }
        let p = (abs_error.abs() + self.eps).powf(self.alpha);
        self.max_priority = self.max_priority.max(p);
        self.set(slot, p);
        Ok(())
    }

    /// Draws `n` slots (with replacement) by stratified sampling, with importance weights for
    /// exponent `beta` normalised so the largest is 1.
    pub fn sample(&self, n: usize, beta: f64, rng: &mut SeededRng) -> Vec<(usize, f32)> {
        let total = self.total();
        if self.len == 0 || n == 0 || total <= 0.0 {
            return Vec::new();
        }
        let seg = total / n as f64;
        let mut out: Vec<(usize, f64)> = (0..n)
            .map(|i| {
                let u = (i as f64 + rng.next_f64()) * seg;
                let s = self.find(u.min(total * (1.0 - 1e-12)));
                let prob = self.priority(s) / total;
                (s, (self.len as f64 * prob).powf(-beta))
            })
            .collect();
        let wmax = out.iter().map(|x| x.1).fold(0.0, f64::max);
        out.iter_mut().for_each(|x| x.1 /= wmax.max(1e-300));
        out.into_iter().map(|(s, w)| (s, w as f32)).collect()
    }

    /// The slot whose cumulative priority interval holds `u`.
    fn find(&self, mut u: f64) -> usize {
        let mut i = 1;
        while i < self.cap {
            let left = self.tree[2 * i];
            if u < left {
                i *= 2;
            } else {
                u -= left;
                i = 2 * i + 1;
            }
        }
        (i - self.cap).min(self.len.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_follows_priorities() {
        let mut r = PrioritizedReplay::new(4, 1.0, 1e-6).unwrap();
        for _ in 0..4 {
            r.push(None).unwrap();
        }
        for (s, e) in [(0, 1.0), (1, 3.0), (2, 0.0), (3, 6.0)] {
            r.update(s, e).unwrap();
        }
        assert!((r.total() - 10.0).abs() < 1e-5);
        let mut rng = SeededRng::new(1);
        let mut counts = [0usize; 4];
        let draws = r.sample(100_000, 0.5, &mut rng);
        for (s, _) in &draws {
            counts[*s] += 1;
        }
        let freq: Vec<f64> = counts.iter().map(|&c| c as f64 / 1e5).collect();
        for (f, want) in freq.iter().zip([0.1, 0.3, 0.0, 0.6]) {
            assert!((f - want).abs() < 0.01, "{freq:?}");
        }
        // The rarest drawn slot gets weight 1; frequent ones less.
        let w = |slot| draws.iter().find(|d| d.0 == slot).unwrap().1;
        assert!((w(0) - 1.0).abs() < 1e-6 && w(3) < w(1) && w(1) < w(0));
    }

    #[test]
    fn uniform_when_alpha_is_zero_and_new_items_get_the_max() {
        let mut r = PrioritizedReplay::new(3, 0.0, 1e-6).unwrap();
        r.push(None).unwrap();
        r.update(0, 100.0).unwrap();
        r.push(None).unwrap();
        assert_eq!(r.priority(0), 1.0);
        assert_eq!(r.priority(1), 1.0);
        let mut a = PrioritizedReplay::new(3, 1.0, 1e-6).unwrap();
        a.push(None).unwrap();
        a.update(0, 5.0).unwrap();
        let s = a.push(None).unwrap();
        assert!(a.priority(s) >= 5.0);
    }

    #[test]
    fn bad_input() {
        assert!(PrioritizedReplay::new(0, 1.0, 1e-6).is_err());
        assert!(PrioritizedReplay::new(1 << 40, 1.0, 1e-6).is_err());
        assert!(PrioritizedReplay::new(4, f64::NAN, 1e-6).is_err());
        let mut r = PrioritizedReplay::new(1, 1.0, 1e-6).unwrap();
        assert!(r.sample(5, 0.4, &mut SeededRng::new(0)).is_empty());
        r.push(None).unwrap();
        assert!(r.push(None).is_err());
        assert!(r.push(Some(3)).is_err());
        assert!(r.update(0, f64::NAN).is_err());
        assert!(r.update(2, 1.0).is_err());
        assert_eq!(r.push(Some(0)).unwrap(), 0);
    }
}
