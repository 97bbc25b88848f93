//! Full training state of an adapter in the project's checkpoint container (kind `"lora"`):
//! configuration, weights, momentum, reward baseline, exploration RNG and counters, so training resumes
//! exactly where it stopped. Pending exploration tokens are not saved (a token from before a save is
//! unknown after a load). For exchange with other tools use the PEFT directory instead ([`crate::peft`]).

use std::path::Path;

use serde::{Deserialize, Serialize};
use sona_core::{Checkpoint, Result, SeededRng, SonaError};

use crate::adapter::{Frozen, LoraWeights};
use crate::explore::ExploreConfig;
use crate::lora::{Lora, LoraConfig};
use crate::optim::OptimConfig;

const KIND: &str = "lora";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Settings {
    d_in: usize,
    d_out: usize,
    rank: usize,
    alpha: f32,
    frozen: String,
    lr: f32,
    momentum: f32,
    decay: f32,
    sigma: f32,
    baseline_rate: f32,
    capacity: usize,
    seed: u64,
    module: String,
    read_only: bool,
}

fn bad(msg: impl Into<String>) -> SonaError {
    SonaError::checkpoint(msg)
}

// JSON has no infinity: the "no bound / no clipping" settings are stored as `null`.
fn enc(v: f32) -> Option<f32> {
    v.is_finite().then_some(v)
}

impl Lora {
    /// The adapter's full state as a checkpoint.
    pub fn to_checkpoint(&self) -> Result<Checkpoint> {
        let c = self.config();
        let mut ck = Checkpoint::new(KIND, VERSION);
        let s = Settings {
            d_in: c.d_in,
            d_out: c.d_out,
            rank: c.rank,
            alpha: c.alpha,
            frozen: c.frozen.name().to_string(),
            lr: c.optim.lr,
            momentum: c.optim.momentum,
            decay: c.optim.decay,
            sigma: c.explore.sigma,
            baseline_rate: c.explore.baseline_rate,
            capacity: c.explore.capacity,
            seed: c.seed,
            module: c.module.clone(),
            read_only: self.is_frozen(),
        };
        ck.set_meta("settings", &s)?;
        ck.set_meta("clip", &enc(c.optim.clip))?;
        ck.set_meta("max_norm", &enc(c.optim.max_norm))?;
        if let Frozen::Dense(w) = &c.frozen {
            ck.put_f32("W", &[c.d_out, c.d_in], w);
        }
        let w = self.snapshot();
        ck.put_f32("A", &[c.rank, c.d_in], &w.a);
        ck.put_f32("Bt", &[c.rank, c.d_out], &w.bt);
        let (ma, mb) = self.momentum();
        ck.put_f32("momentum_A", &[c.rank, c.d_in], &ma);
        ck.put_f32("momentum_Bt", &[c.rank, c.d_out], &mb);
        let (bw, bc) = self.baseline();
        ck.put_f32("baseline_w", &[c.d_in], &bw);
        ck.put_f32("baseline_c", &[1], &[bc]);
        let k = self.counters();
        ck.put_u64(
            "counters",
            &[k.updates, k.rejected, k.rewards, k.explored, k.merges],
        );
        ck.set_meta("explore_rng", &self.explore_rng())?;
        Ok(ck)
    }

    /// Rebuilds an adapter from [`Lora::to_checkpoint`]; any inconsistency is a checkpoint error.
    /// Every field is checked before use: the settings by [`LoraConfig::check`] (bounded sizes and
    /// ranges), every tensor's shape against them, weights finite and within
    /// [`crate::MAX_WEIGHT`], momentum and baseline finite, counters at most
    /// [`crate::lora::MAX_COUNTER`], and the RNG state non-zero (by `SeededRng` itself).
    pub fn from_checkpoint(ck: &Checkpoint) -> Result<Lora> {
        Self::parse(ck).map_err(|e| match e {
            SonaError::Checkpoint(_) => e,
            other => bad(other.to_string()),
        })
    }

    fn parse(ck: &Checkpoint) -> Result<Lora> {
        let s: Settings = ck.meta("settings")?;
        let clip: Option<f32> = ck.meta("clip")?;
        let max_norm: Option<f32> = ck.meta("max_norm")?;
        let frozen = match s.frozen.as_str() {
            "identity" => Frozen::Identity,
            "zero" => Frozen::Zero,
            "dense" => Frozen::Dense(Vec::new()),
            other => return Err(bad(format!("unknown base map {other:?}"))),
        };
        let mut config = LoraConfig {
            d_in: s.d_in,
            d_out: s.d_out,
            rank: s.rank,
            alpha: s.alpha,
            frozen: Frozen::Identity,
            optim: OptimConfig {
                lr: s.lr,
                momentum: s.momentum,
                clip: clip.unwrap_or(f32::INFINITY),
                max_norm: max_norm.unwrap_or(f32::INFINITY),
                decay: s.decay,
            },
            explore: ExploreConfig {
                sigma: s.sigma,
                baseline_rate: s.baseline_rate,
                capacity: s.capacity,
            },
            seed: s.seed,
            module: s.module,
        };
        // Sizes first (with an identity map, whose check needs no tensor), then the real map.
        if !matches!(frozen, Frozen::Identity) {
            config.frozen = Frozen::Zero;
        }
        config.check()?;
        config.frozen = match frozen {
            Frozen::Dense(_) => Frozen::Dense(ck.get_f32_shaped("W", &[s.d_out, s.d_in])?),
            other => other,
        };
        config.check()?;
        let a = ck.get_f32_shaped("A", &[s.rank, s.d_in])?;
        let bt = ck.get_f32_shaped("Bt", &[s.rank, s.d_out])?;
        let weights = LoraWeights {
            d_in: s.d_in,
            d_out: s.d_out,
            rank: s.rank,
            scale: config.scale(),
            a,
            bt,
        };
        let ma = ck.get_f32_shaped("momentum_A", &[s.rank, s.d_in])?;
        let mb = ck.get_f32_shaped("momentum_Bt", &[s.rank, s.d_out])?;
        let bw = ck.get_f32_shaped("baseline_w", &[s.d_in])?;
        let bc = ck.get_f32_shaped("baseline_c", &[1])?[0];
        let counters = ck.get_u64("counters")?;
        let rng: SeededRng = ck.meta("explore_rng")?;
        let lora = Lora::from_weights(config, weights)?;
        lora.restore_state(&ma, &mb, &bw, bc, &counters, rng)?;
        if s.read_only {
            lora.freeze();
        }
        Ok(lora)
    }

    /// [`Lora::load`] from the bytes of a file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Lora> {
        Lora::from_checkpoint(&Checkpoint::from_bytes(bytes, KIND, VERSION)?)
    }

    /// Writes [`Lora::to_checkpoint`] to `path` (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.to_checkpoint()?.save(path)
    }

    /// Reads an adapter written by [`Lora::save`].
    pub fn load(path: &Path) -> Result<Lora> {
        Lora::from_checkpoint(&Checkpoint::load(path, KIND, VERSION)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unbounded_base_with_dense_w_round_trips() {
        let mut c = LoraConfig::base(6);
        c.d_out = 4;
        c.rank = 2;
        c.frozen = Frozen::Dense((0..24).map(|i| i as f32 * 0.1).collect());
        c.optim.clip = f32::INFINITY;
        let a = Lora::new(c).unwrap();
        a.freeze();
        let b = Lora::from_checkpoint(&a.to_checkpoint().unwrap()).unwrap();
        assert_eq!(b.config(), a.config());
        assert!(b.is_frozen());
    }

    #[test]
    fn round_trip_resumes_identically() {
        let mut c = LoraConfig::micro(12);
        c.optim.lr = 0.01;
        let a = Lora::new(c).unwrap();
        let x: Vec<f32> = (0..12).map(|i| (i as f32).sin()).collect();
        let mut y = vec![0.0; 12];
        for _ in 0..5 {
            let t = a.forward_explore(&x, &mut y).unwrap();
            a.reward(t, 0.8).unwrap();
        }
        let path = std::env::temp_dir().join(format!("sona-lora-ck-{}.ckpt", std::process::id()));
        a.save(&path).unwrap();
        let b = Lora::load(&path).unwrap();
        assert_eq!(*a.snapshot(), *b.snapshot());
        assert_eq!(a.counters(), b.counters());
        // Same state → same next explored output and same next step.
        let (mut ya, mut yb) = (vec![0.0; 12], vec![0.0; 12]);
        let ta = a.forward_explore(&x, &mut ya).unwrap();
        let tb = b.forward_explore(&x, &mut yb).unwrap();
        assert_eq!(ya, yb);
        a.reward(ta, 0.3).unwrap();
        b.reward(tb, 0.3).unwrap();
        assert_eq!(*a.snapshot(), *b.snapshot());
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(Lora::load(&path), Err(SonaError::Checkpoint(_))));
        let _ = std::fs::remove_file(&path);
    }
}
