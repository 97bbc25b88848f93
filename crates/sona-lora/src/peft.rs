//! PEFT-compatible adapter directories (SPEC §3): `adapter_model.safetensors` with
//! `base_model.model.<module>.lora_A.weight` `[r, d_in]` and `base_model.model.<module>.lora_B.weight`
//! `[d_out, r]` (float32, little-endian), plus `adapter_config.json` with `peft_type = "LORA"`, `r`,
//! `lora_alpha` and `target_modules`. Hugging Face PEFT computes `ΔW = (lora_alpha / r) · B A`, the same
//! scale as ours, so the files load there unchanged. Float32 tensors round-trip bit for bit; float16 /
//! bfloat16 files written by other tools are accepted on import.
//!
//! Anything unexpected — missing files, malformed JSON, another `peft_type`, absent or mis-shaped
//! tensors, non-finite values, a rank that disagrees with the config — is a [`SonaError::Checkpoint`].

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde_json::{json, Value};
use sona_core::{Result, SonaError};

use crate::adapter::{check_shape, LoraWeights};

pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
pub const CONFIG_FILE: &str = "adapter_config.json";

/// An adapter as read from a PEFT directory.
#[derive(Debug, Clone, PartialEq)]
pub struct PeftAdapter {
    pub module: String,
    pub alpha: f32,
    pub weights: LoraWeights,
}

fn key(module: &str, which: &str) -> String {
    format!("base_model.model.{module}.lora_{which}.weight")
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes `weights` (scale `α/r`) as a PEFT adapter directory for target module `module`.
pub fn save_peft(dir: &Path, module: &str, alpha: f32, weights: &LoraWeights) -> Result<()> {
    fs::create_dir_all(dir)?;
    let a = f32_bytes(&weights.a);
    let b = f32_bytes(&weights.b_peft());
    let ka = key(module, "A");
    let kb = key(module, "B");
    let views = [
        (
            ka.as_str(),
            TensorView::new(Dtype::F32, vec![weights.rank, weights.d_in], &a)
                .map_err(|e| SonaError::Internal(format!("safetensors view: {e}")))?,
        ),
        (
            kb.as_str(),
            TensorView::new(Dtype::F32, vec![weights.d_out, weights.rank], &b)
                .map_err(|e| SonaError::Internal(format!("safetensors view: {e}")))?,
        ),
    ];
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| SonaError::checkpoint(format!("serializing safetensors: {e}")))?;
    write_atomic(&dir.join(WEIGHTS_FILE), &bytes)?;
    let config = json!({
        "peft_type": "LORA",
        "task_type": null,
        "base_model_name_or_path": null,
        "r": weights.rank,
        "lora_alpha": alpha,
        "target_modules": [module],
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "sona": {"d_in": weights.d_in, "d_out": weights.d_out, "format": 1},
    });
    let text = serde_json::to_string_pretty(&config)
        .map_err(|e| SonaError::Internal(format!("json: {e}")))?;
    write_atomic(&dir.join(CONFIG_FILE), text.as_bytes())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)?;
    Ok(())
}

fn bad(msg: impl Into<String>) -> SonaError {
    SonaError::checkpoint(msg)
}

/// Reads a PEFT adapter directory. `module` picks the target module when the file holds several
/// (`None` requires exactly one).
pub fn load_peft(dir: &Path, module: Option<&str>) -> Result<PeftAdapter> {
    let cfg_path = dir.join(CONFIG_FILE);
    let text = fs::read_to_string(&cfg_path)
        .map_err(|e| bad(format!("cannot read {}: {e}", cfg_path.display())))?;
    let cfg: Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("{CONFIG_FILE} is not JSON: {e}")))?;
    match cfg.get("peft_type").and_then(Value::as_str) {
        Some("LORA") => {}
        other => return Err(bad(format!("peft_type must be \"LORA\", got {other:?}"))),
    }
    let rank = cfg
        .get("r")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("adapter_config.json: missing integer `r`"))? as usize;
    let alpha = cfg
        .get("lora_alpha")
        .and_then(Value::as_f64)
        .ok_or_else(|| bad("adapter_config.json: missing number `lora_alpha`"))?;
    if !(alpha.is_finite() && alpha > 0.0) {
        return Err(bad(format!("lora_alpha must be > 0, got {alpha}")));
    }
    let w_path = dir.join(WEIGHTS_FILE);
    let bytes =
        fs::read(&w_path).map_err(|e| bad(format!("cannot read {}: {e}", w_path.display())))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        bad(format!(
            "{WEIGHTS_FILE} is not a valid safetensors file: {e}"
        ))
    })?;
    let modules: Vec<String> = st
        .names()
        .iter()
        .filter_map(|n| {
            n.strip_prefix("base_model.model.")
                .and_then(|r| r.strip_suffix(".lora_A.weight"))
                .map(str::to_string)
        })
        .collect();
    let module = match module {
        Some(m) => {
            if !modules.iter().any(|x| x == m) {
                return Err(bad(format!(
                    "module {m:?} not in {WEIGHTS_FILE} (found {modules:?})"
                )));
            }
            m.to_string()
        }
        None => match modules.as_slice() {
            [one] => one.clone(),
            [] => return Err(bad(format!("{WEIGHTS_FILE} holds no lora_A tensor"))),
            many => {
                return Err(bad(format!(
                    "{WEIGHTS_FILE} holds several modules {many:?}; name one"
                )))
            }
        },
    };
    let (a_shape, a) = read_f32(&st, &key(&module, "A"))?;
    let (b_shape, b) = read_f32(&st, &key(&module, "B"))?;
    if a_shape.len() != 2 || b_shape.len() != 2 {
        return Err(bad("lora_A and lora_B must be 2-D"));
    }
    let (r_a, d_in) = (a_shape[0], a_shape[1]);
    let (d_out, r_b) = (b_shape[0], b_shape[1]);
    if r_a != rank || r_b != rank {
        return Err(bad(format!(
            "rank mismatch: config r = {rank}, lora_A has {r_a} rows, lora_B has {r_b} columns"
        )));
    }
    check_shape(d_in, d_out, rank).map_err(|e| bad(e.to_string()))?;
    let weights = LoraWeights::from_peft(d_in, d_out, rank, (alpha / rank as f64) as f32, &a, &b)
        .map_err(|e| bad(e.to_string()))?;
    Ok(PeftAdapter {
        module,
        alpha: alpha as f32,
        weights,
    })
}

fn read_f32(st: &SafeTensors<'_>, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let t = st
        .tensor(name)
        .map_err(|e| bad(format!("tensor {name}: {e}")))?;
    let data = t.data();
    let values: Vec<f32> = match t.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => return Err(bad(format!("tensor {name}: unsupported dtype {other:?}"))),
    };
    if values.iter().any(|v| !v.is_finite()) {
        return Err(bad(format!("tensor {name} contains NaN or Inf")));
    }
    Ok((t.shape().to_vec(), values))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sona_core::SeededRng;

    fn tmpdir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("sona-lora-peft-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn sample() -> LoraWeights {
        let mut rng = SeededRng::new(7);
        let mut w = LoraWeights::init(10, 6, 3, 12.0, &mut rng).unwrap();
        rng.fill_normal(&mut w.bt, 0.2);
        w
    }

    #[test]
    fn round_trip_is_bit_exact() {
        let dir = tmpdir("rt");
        let w = sample();
        save_peft(&dir, "q_proj", 12.0, &w).unwrap();
        let back = load_peft(&dir, None).unwrap();
        assert_eq!(back.module, "q_proj");
        assert_eq!(back.alpha, 12.0);
        assert_eq!(back.weights.scale.to_bits(), w.scale.to_bits());
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back.weights.a), bits(&w.a));
        assert_eq!(bits(&back.weights.bt), bits(&w.bt));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupted_or_mismatched_files_are_checkpoint_errors() {
        let dir = tmpdir("bad");
        let w = sample();
        save_peft(&dir, "emb", 12.0, &w).unwrap();
        assert!(matches!(
            load_peft(&dir, Some("other")),
            Err(SonaError::Checkpoint(_))
        ));
        // Rank in the config disagrees with the tensors.
        let cfg = fs::read_to_string(dir.join(CONFIG_FILE)).unwrap();
        fs::write(dir.join(CONFIG_FILE), cfg.replace("\"r\": 3", "\"r\": 4")).unwrap();
        assert!(matches!(
            load_peft(&dir, None),
            Err(SonaError::Checkpoint(_))
        ));
        fs::write(dir.join(CONFIG_FILE), "{not json").unwrap();
        assert!(matches!(
            load_peft(&dir, None),
            Err(SonaError::Checkpoint(_))
        ));
        fs::write(dir.join(CONFIG_FILE), cfg.replace("LORA", "IA3")).unwrap();
        assert!(matches!(
            load_peft(&dir, None),
            Err(SonaError::Checkpoint(_))
        ));
        fs::write(dir.join(CONFIG_FILE), &cfg).unwrap();
        let mut bytes = fs::read(dir.join(WEIGHTS_FILE)).unwrap();
        bytes.truncate(bytes.len() - 7);
        fs::write(dir.join(WEIGHTS_FILE), &bytes).unwrap();
        assert!(matches!(
            load_peft(&dir, None),
            Err(SonaError::Checkpoint(_))
        ));
        fs::remove_file(dir.join(WEIGHTS_FILE)).unwrap();
        assert!(matches!(
            load_peft(&dir, None),
            Err(SonaError::Checkpoint(_))
        ));
        let _ = fs::remove_dir_all(&dir);
    }
}
