//! FP16 and group-wise Q4 copies of *frozen* adapters (design §3: never of weights still being trained),
//! with the reconstruction error they cost.
//!
//! Q4 is symmetric absmax quantisation per group of `g` consecutive values of a factor row:
//! `scale = max|v| / 7`, `q = clamp(round(v / scale), −8, 7)`, stored as `q + 8` in a nibble. Factors are
//! quantised (not `ΔW`), so the copy stays low-rank: `r (d_in + d_out) / 2` bytes plus one `f32` scale
//! per group. The reported error is `‖ΔW − ΔŴ‖_F / ‖ΔW‖_F`, computed from `r × r` Gram matrices.
//! Copies are saved in the project's checkpoint container (kind `"lora-quant"`).

use std::path::Path;

use sona_core::kernels as k;
use sona_core::{Checkpoint, Result, SonaError};

use crate::adapter::{check_shape, LoraWeights};

const KIND: &str = "lora-quant";
const VERSION: u32 = 1;

/// Storage format of a quantised copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantKind {
    F16,
    /// 4-bit with one scale per `group` values.
    Q4 {
        group: usize,
    },
}

impl QuantKind {
    pub fn name(&self) -> &'static str {
        match self {
            QuantKind::F16 => "fp16",
            QuantKind::Q4 { .. } => "q4",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum QTensor {
    F16(Vec<u16>),
    Q4 { scales: Vec<f32>, nibbles: Vec<u8> },
}

/// A quantised copy of an adapter's factors.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedLora {
    pub kind: QuantKind,
    pub d_in: usize,
    pub d_out: usize,
    pub rank: usize,
    pub scale: f32,
    a: QTensor,
    bt: QTensor,
    /// `‖ΔW − ΔŴ‖_F / ‖ΔW‖_F` against the weights it was made from (0 when `ΔW = 0`).
    pub rel_error: f32,
}

fn quantize_rows(v: &[f32], row_len: usize, kind: QuantKind) -> QTensor {
    match kind {
        QuantKind::F16 => QTensor::F16(
            v.iter()
                .map(|&x| half::f16::from_f32(x).to_bits())
                .collect(),
        ),
        QuantKind::Q4 { group } => {
            let mut scales = Vec::new();
            let mut nibbles = Vec::with_capacity(v.len());
            for row in v.chunks(row_len) {
                for g in row.chunks(group) {
                    let amax = g.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                    let s = if amax > 0.0 { amax / 7.0 } else { 1.0 };
                    scales.push(s);
                    nibbles.extend(
                        g.iter()
                            .map(|x| ((x / s).round().clamp(-8.0, 7.0) as i32 + 8) as u8),
                    );
                }
            }
            QTensor::Q4 { scales, nibbles }
        }
    }
}

fn dequantize_rows(t: &QTensor, n: usize, row_len: usize, group: usize) -> Vec<f32> {
    match t {
        QTensor::F16(bits) => bits
            .iter()
            .map(|&b| half::f16::from_bits(b).to_f32())
            .collect(),
        QTensor::Q4 { scales, nibbles } => {
            let mut out = Vec::with_capacity(n);
            let mut si = 0;
            for row in nibbles.chunks(row_len) {
                for g in row.chunks(group) {
                    let s = scales[si];
                    si += 1;
                    out.extend(g.iter().map(|&q| (q as i32 - 8) as f32 * s));
                }
            }
            out
        }
    }
}

/// `‖s_1 B_1 A_1 − s_2 B_2 A_2‖_F` via the Gram matrices of the stacked factors.
fn delta_diff_norm(w1: &LoraWeights, w2: &LoraWeights) -> f64 {
    let r = w1.rank;
    let mut acc = 0.0f64;
    for i in 0..2 * r {
        for j in 0..2 * r {
            let (wi, ii, si) = if i < r {
                (w1, i, w1.scale as f64)
            } else {
                (w2, i - r, -(w2.scale as f64))
            };
            let (wj, jj, sj) = if j < r {
                (w1, j, w1.scale as f64)
            } else {
                (w2, j - r, -(w2.scale as f64))
            };
            acc += si
                * sj
                * k::dot(wi.b_col(ii), wj.b_col(jj)) as f64
                * k::dot(wi.a_row(ii), wj.a_row(jj)) as f64;
        }
    }
    acc.max(0.0).sqrt()
}

impl QuantizedLora {
    /// Quantises `w`. `Q4` groups must be in `[2, 4096]`.
    pub fn quantize(w: &LoraWeights, kind: QuantKind) -> Result<Self> {
        if let QuantKind::Q4 { group } = kind {
            if !(2..=4096).contains(&group) {
                return Err(SonaError::Config(format!(
                    "Q4 group size must be in [2, 4096], got {group}"
                )));
            }
        }
        let mut q = QuantizedLora {
            kind,
            d_in: w.d_in,
            d_out: w.d_out,
            rank: w.rank,
            scale: w.scale,
            a: quantize_rows(&w.a, w.d_in, kind),
            bt: quantize_rows(&w.bt, w.d_out, kind),
            rel_error: 0.0,
        };
        let back = q.dequantize();
        let norm = w.delta_frob_sq().sqrt() as f64;
        q.rel_error = if norm > 0.0 {
            (delta_diff_norm(w, &back) / norm) as f32
        } else {
            0.0
        };
        Ok(q)
    }

    fn group(&self) -> usize {
        match self.kind {
            QuantKind::Q4 { group } => group,
            QuantKind::F16 => 1,
        }
    }

    /// The full-precision weights this copy represents.
    pub fn dequantize(&self) -> LoraWeights {
        LoraWeights {
            d_in: self.d_in,
            d_out: self.d_out,
            rank: self.rank,
            scale: self.scale,
            a: dequantize_rows(&self.a, self.rank * self.d_in, self.d_in, self.group()),
            bt: dequantize_rows(&self.bt, self.rank * self.d_out, self.d_out, self.group()),
        }
    }

    /// Bytes of payload (factors and scales, without file headers).
    pub fn payload_bytes(&self) -> usize {
        let one = |t: &QTensor| match t {
            QTensor::F16(b) => 2 * b.len(),
            QTensor::Q4 { scales, nibbles } => 4 * scales.len() + nibbles.len().div_ceil(2),
        };
        one(&self.a) + one(&self.bt)
    }

    /// Saves into a checkpoint file (packed into `u64` words), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.to_checkpoint()?.save(path)
    }

    /// Loads a copy written by [`QuantizedLora::save`]; any inconsistency is a checkpoint error.
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_checkpoint(&Checkpoint::load(path, KIND, VERSION)?)
    }

    /// [`QuantizedLora::load`] from the bytes of a file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Self::from_checkpoint(&Checkpoint::from_bytes(bytes, KIND, VERSION)?)
    }

    /// The copy as a checkpoint container (kind `"lora-quant"`).
    pub fn to_checkpoint(&self) -> Result<Checkpoint> {
        let mut ck = Checkpoint::new(KIND, VERSION);
        ck.set_meta("kind", &self.kind.name())?;
        ck.set_meta("group", &self.group())?;
        ck.set_meta("shape", &[self.d_in, self.d_out, self.rank])?;
        ck.set_meta("scale", &self.scale)?;
        ck.set_meta("rel_error", &self.rel_error)?;
        for (name, t) in [("a", &self.a), ("bt", &self.bt)] {
            match t {
                QTensor::F16(bits) => ck.put_u64(
                    &format!("{name}.f16"),
                    &pack(bits.iter().map(|&b| b as u64), 16),
                ),
                QTensor::Q4 { scales, nibbles } => {
                    ck.put_f32(&format!("{name}.scales"), &[scales.len()], scales);
                    ck.put_u64(
                        &format!("{name}.q4"),
                        &pack(nibbles.iter().map(|&b| b as u64), 4),
                    );
                }
            }
        }
        Ok(ck)
    }

    /// Rebuilds a copy from [`QuantizedLora::to_checkpoint`]. Every field is checked: the shape
    /// (bounded sizes), the kind and group size, the scale (finite, > 0), the recorded error
    /// (finite, ≥ 0), every packed tensor's length, the group scales (finite, ≥ 0) and the
    /// dequantised factors (finite, within [`crate::MAX_WEIGHT`]).
    pub fn from_checkpoint(ck: &Checkpoint) -> Result<Self> {
        let kind_name: String = ck.meta("kind")?;
        let group: usize = ck.meta("group")?;
        let shape: [usize; 3] = ck.meta("shape")?;
        let scale: f32 = ck.meta("scale")?;
        let rel_error: f32 = ck.meta("rel_error")?;
        let [d_in, d_out, rank] = shape;
        check_shape(d_in, d_out, rank).map_err(|e| SonaError::checkpoint(e.to_string()))?;
        if !(scale.is_finite() && scale > 0.0 && scale <= 1e6) {
            return Err(SonaError::checkpoint(format!(
                "scale must be in (0, 1e6], got {scale}"
            )));
        }
        if !(rel_error.is_finite() && rel_error >= 0.0) {
            return Err(SonaError::checkpoint(format!(
                "rel_error must be finite and >= 0, got {rel_error}"
            )));
        }
        let kind = match kind_name.as_str() {
            "fp16" => QuantKind::F16,
            "q4" if (2..=4096).contains(&group) => QuantKind::Q4 { group },
            other => {
                return Err(SonaError::checkpoint(format!(
                    "unknown quantisation {other:?} (group {group})"
                )))
            }
        };
        let read = |name: &str, n: usize, row: usize| -> Result<QTensor> {
            match kind {
                QuantKind::F16 => {
                    let bits = unpack(&ck.get_u64(&format!("{name}.f16"))?, 16, n)?;
                    Ok(QTensor::F16(bits.into_iter().map(|b| b as u16).collect()))
                }
                QuantKind::Q4 { group } => {
                    let groups = n / row * row.div_ceil(group);
                    let scales = ck.get_f32_shaped(&format!("{name}.scales"), &[groups])?;
                    if !scales.iter().all(|s| s.is_finite() && *s >= 0.0) {
                        return Err(SonaError::checkpoint(format!(
                            "{name}.scales: negative or non-finite group scale"
                        )));
                    }
                    let nibbles = unpack(&ck.get_u64(&format!("{name}.q4"))?, 4, n)?;
                    Ok(QTensor::Q4 {
                        scales,
                        nibbles: nibbles.into_iter().map(|b| b as u8).collect(),
                    })
                }
            }
        };
        let q = QuantizedLora {
            kind,
            d_in,
            d_out,
            rank,
            scale,
            a: read("a", rank * d_in, d_in)?,
            bt: read("bt", rank * d_out, d_out)?,
            rel_error,
        };
        q.dequantize()
            .check()
            .map_err(|e| SonaError::checkpoint(format!("quantised adapter refused: {e}")))?;
        Ok(q)
    }
}

fn pack(values: impl Iterator<Item = u64>, bits: u32) -> Vec<u64> {
    let per = (64 / bits) as usize;
    let vals: Vec<u64> = values.collect();
    vals.chunks(per)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u64, |acc, (i, &v)| acc | (v << (i as u32 * bits)))
        })
        .collect()
}

fn unpack(words: &[u64], bits: u32, n: usize) -> Result<Vec<u64>> {
    let per = (64 / bits) as usize;
    if words.len() != n.div_ceil(per) {
        return Err(SonaError::checkpoint(format!(
            "packed tensor has {} words, expected {}",
            words.len(),
            n.div_ceil(per)
        )));
    }
    let mask = (1u64 << bits) - 1;
    Ok((0..n)
        .map(|i| (words[i / per] >> ((i % per) as u32 * bits)) & mask)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sona_core::SeededRng;

    fn sample() -> LoraWeights {
        let mut rng = SeededRng::new(3);
        let mut w = LoraWeights::init(96, 64, 4, 8.0, &mut rng).unwrap();
        rng.fill_normal(&mut w.bt, 0.3);
        w
    }

    #[test]
    fn errors_are_small_and_ordered() {
        let w = sample();
        let f16 = QuantizedLora::quantize(&w, QuantKind::F16).unwrap();
        let q4 = QuantizedLora::quantize(&w, QuantKind::Q4 { group: 32 }).unwrap();
        assert!(f16.rel_error < 1e-3, "fp16 {}", f16.rel_error);
        assert!(
            q4.rel_error < 0.15 && q4.rel_error > f16.rel_error,
            "q4 {}",
            q4.rel_error
        );
        // The reported error is the true one.
        let back = q4.dequantize();
        let (d, b) = (w.delta_w(), back.delta_w());
        let num: f32 = d
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f32>()
            .sqrt();
        let den: f32 = d.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((num / den - q4.rel_error).abs() < 1e-3);
        assert!(q4.payload_bytes() * 6 < 4 * (w.a.len() + w.bt.len()));
    }

    #[test]
    fn save_load_round_trip_and_corruption() {
        let w = sample();
        let dir = std::env::temp_dir();
        for kind in [QuantKind::F16, QuantKind::Q4 { group: 16 }] {
            let q = QuantizedLora::quantize(&w, kind).unwrap();
            let p = dir.join(format!(
                "sona-lora-q-{}-{}.ckpt",
                kind.name(),
                std::process::id()
            ));
            q.save(&p).unwrap();
            assert_eq!(QuantizedLora::load(&p).unwrap(), q);
            let mut bytes = std::fs::read(&p).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x40;
            std::fs::write(&p, &bytes).unwrap();
            assert!(matches!(
                QuantizedLora::load(&p),
                Err(SonaError::Checkpoint(_))
            ));
            let _ = std::fs::remove_file(&p);
        }
        assert!(QuantizedLora::quantize(&w, QuantKind::Q4 { group: 1 }).is_err());
    }
}
