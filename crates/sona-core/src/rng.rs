//! A small, fast, seeded RNG (xoshiro256++ seeded through SplitMix64).
//!
//! Every stochastic piece of SONA (LoRA init, exploration noise, k-means++, reservoir sampling,
//! dreams) takes a seed, so experiments and tests are reproducible bit for bit. Kept in-house rather
//! than depending on `rand` to avoid its frequent API breaks; it is not cryptographic.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RngState")]
pub struct SeededRng {
    s: [u64; 4],
    /// Second value of the last Box–Muller pair, returned by the next `normal()` call.
    spare: Option<u32>,
}

/// The serialised form, checked before it becomes a generator: the all-zero state is xoshiro's
/// fixed point (every draw 0), which would make rejection loops spin forever and all noise constant.
#[derive(Deserialize)]
struct RngState {
    s: [u64; 4],
    spare: Option<u32>,
}

impl TryFrom<RngState> for SeededRng {
    type Error = String;

    fn try_from(r: RngState) -> Result<Self, String> {
        if r.s == [0; 4] {
            return Err("RNG state is all zeros (a stuck generator)".to_string());
        }
        if r.spare.is_some_and(|b| !f32::from_bits(b).is_finite()) {
            return Err("RNG spare normal is not finite".to_string());
        }
        Ok(SeededRng {
            s: r.s,
            spare: r.spare,
        })
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        let mut st = seed;
        let s = [
            splitmix64(&mut st),
            splitmix64(&mut st),
            splitmix64(&mut st),
            splitmix64(&mut st),
        ];
        SeededRng { s, spare: None }
    }

    /// An independent stream derived from this one (for per-thread or per-component RNGs).
    pub fn fork(&mut self, stream: u64) -> Self {
        SeededRng::new(self.next_u64() ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let result = (self.s[0].wrapping_add(self.s[3]))
            .rotate_left(23)
            .wrapping_add(self.s[0]);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 bits.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, 1)` with 24 bits.
    #[inline]
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Uniform integer in `[0, n)` (Lemire's multiply-shift with rejection; unbiased). `n` must be > 0.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Standard normal sample (Box–Muller, both values used).
    #[inline]
    pub fn normal(&mut self) -> f32 {
        if let Some(bits) = self.spare.take() {
            return f32::from_bits(bits);
        }
        // u1 in (0, 1] so ln(u1) is finite.
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let th = std::f64::consts::TAU * u2;
        self.spare = Some(((r * th.sin()) as f32).to_bits());
        (r * th.cos()) as f32
    }

    /// Fills `out` with `N(0, std²)` samples.
    pub fn fill_normal(&mut self, out: &mut [f32], std: f32) {
        for x in out {
            *x = self.normal() * std;
        }
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }

    /// Index drawn with probability proportional to `weights` (non-negative; all-zero → uniform).
    pub fn weighted_index(&mut self, weights: &[f64]) -> usize {
        assert!(!weights.is_empty(), "weighted_index on empty weights");
        let total: f64 = weights.iter().sum();
        if !(total > 0.0 && total.is_finite()) {
            return self.below(weights.len() as u64) as usize;
        }
        let mut target = self.next_f64() * total;
        for (i, w) in weights.iter().enumerate() {
            target -= w;
            if target < 0.0 {
                return i;
            }
        }
        weights.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stuck_or_corrupt_saved_state_is_refused() {
        let mut r = SeededRng::new(3);
        r.normal();
        let json = serde_json::to_string(&r).unwrap();
        let back: SeededRng = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        let zero = r#"{"s":[0,0,0,0],"spare":null}"#;
        assert!(serde_json::from_str::<SeededRng>(zero).is_err());
        let nan_spare = format!(r#"{{"s":[1,2,3,4],"spare":{}}}"#, f32::NAN.to_bits());
        assert!(serde_json::from_str::<SeededRng>(&nan_spare).is_err());
    }

    #[test]
    fn same_seed_same_stream() {
        let mut a = SeededRng::new(7);
        let mut b = SeededRng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(SeededRng::new(7).next_u64(), SeededRng::new(8).next_u64());
    }

    #[test]
    fn normal_has_unit_moments() {
        let mut r = SeededRng::new(1);
        let n = 200_000;
        let (mut s, mut s2) = (0.0f64, 0.0f64);
        for _ in 0..n {
            let x = r.normal() as f64;
            s += x;
            s2 += x * x;
        }
        let mean = s / n as f64;
        let var = s2 / n as f64 - mean * mean;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }

    #[test]
    fn below_is_in_range_and_roughly_uniform() {
        let mut r = SeededRng::new(3);
        let mut counts = [0u32; 5];
        for _ in 0..50_000 {
            counts[r.below(5) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }
}
