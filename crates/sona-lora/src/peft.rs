//! PEFT-compatible adapter directories (design §3): `adapter_model.safetensors` plus
//! `adapter_config.json`, as Hugging Face PEFT writes and reads them.
//!
//! **Export.** Tensors are keyed by the *full dotted path* of the target layer in the base model,
//! `base_model.model.<module>.lora_A.weight` `[r, d_in]` and `….lora_B.weight` `[d_out, r]` (float32,
//! little-endian) — `lora_embedding_A` / `lora_embedding_B` (no `.weight`) for an `nn.Embedding`
//! target, as PEFT's embedding layer names its parameters. PEFT loads a state dict by exact key, so
//! a short name such as `q_proj` would load as an adapter that silently does nothing: names without
//! a dot are refused with a message asking for the full path (`model.layers.0.self_attn.q_proj`).
//! The config carries only keys PEFT's `LoraConfig` knows (no SONA extras; SONA's format marker
//! lives in the safetensors `__metadata__`), `target_modules = [<module>]`, the caller's `task_type`
//! and `base_model_name_or_path` (needed by `AutoPeftModel*`), and `fan_in_fan_out: true` for a
//! GPT-2 style `Conv1D` target. PEFT computes `ΔW = (lora_alpha / r) · B A`, the same scale as ours.
//! Files are written with [`sona_core::fsio::write_atomic`].
//!
//! **Import.** Reads are capped ([`MAX_CONFIG_BYTES`], [`MAX_WEIGHTS_BYTES`]). `use_rslora` is
//! supported (`s = lora_alpha / √r`, reported as the equivalent SONA `alpha = lora_alpha · √r`), as
//! are `rank_pattern` / `alpha_pattern` entries that name modules (exact name or dotted suffix, as
//! PEFT matches them); features SONA cannot represent are refused with a clear error rather than
//! ignored: DoRA magnitudes (`use_dora`), `lora_bias`, trained base biases (`bias` other than
//! `"none"`), `modules_to_save`, trainable tokens, layer replication and regular-expression
//! patterns. PEFT files carry no checksum, so weights are checked: finite, within
//! [`crate::MAX_WEIGHT`], shapes consistent with the config. Float32 tensors round-trip bit for bit;
//! float16 / bfloat16 files written by other tools are accepted.
//!
//! Anything unexpected is a [`SonaError::Checkpoint`]; a bad export request is a
//! [`SonaError::Config`].

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde_json::{json, Map, Value};
use sona_core::{fsio, Result, SonaError};

use crate::adapter::{check_shape, LoraWeights};

pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
pub const CONFIG_FILE: &str = "adapter_config.json";

/// Largest `adapter_config.json` read (real ones are ~1 KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Largest `adapter_model.safetensors` read (a rank-64 adapter on every linear layer of a 70B
/// model is ~1.6 GiB).
pub const MAX_WEIGHTS_BYTES: u64 = 4 << 30;

/// PEFT's `TaskType` values.
pub const TASK_TYPES: &[&str] = &[
    "SEQ_CLS",
    "SEQ_2_SEQ_LM",
    "CAUSAL_LM",
    "TOKEN_CLS",
    "QUESTION_ANS",
    "FEATURE_EXTRACTION",
];

/// The kind of base-model layer an adapter targets (it decides tensor names and `fan_in_fan_out`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LayerKind {
    /// `nn.Linear`: `lora_A.weight` / `lora_B.weight`.
    Linear,
    /// `nn.Embedding`: `lora_embedding_A` / `lora_embedding_B`.
    Embedding,
    /// GPT-2's `Conv1D` (weight stored `[in, out]`): linear tensor names, `fan_in_fan_out: true`.
    Conv1D,
}

impl LayerKind {
    /// Parses `"linear"`, `"embedding"` or `"conv1d"`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "linear" => Ok(LayerKind::Linear),
            "embedding" => Ok(LayerKind::Embedding),
            "conv1d" => Ok(LayerKind::Conv1D),
            other => Err(SonaError::Config(format!(
                "layer must be 'linear', 'embedding' or 'conv1d', got {other:?}"
            ))),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            LayerKind::Linear => "linear",
            LayerKind::Embedding => "embedding",
            LayerKind::Conv1D => "conv1d",
        }
    }

    /// The kind Hugging Face models use for a layer of this name: embedding tables
    /// (`embed_tokens`, `wte`, `wpe`, `word_embeddings`, `embed_in`, `shared`), GPT-2 `Conv1D`
    /// projections (`c_attn`, `c_fc`, `c_proj`), else linear. Pass the kind explicitly for other
    /// architectures.
    pub fn infer(module: &str) -> Self {
        match module.rsplit('.').next().unwrap_or(module) {
            "embed_tokens" | "wte" | "wpe" | "word_embeddings" | "embed_in" | "shared" => {
                LayerKind::Embedding
            }
            "c_attn" | "c_fc" | "c_proj" => LayerKind::Conv1D,
            _ => LayerKind::Linear,
        }
    }

    fn keys(&self, module: &str) -> (String, String) {
        match self {
            LayerKind::Embedding => (
                format!("base_model.model.{module}.lora_embedding_A"),
                format!("base_model.model.{module}.lora_embedding_B"),
            ),
            _ => (
                format!("base_model.model.{module}.lora_A.weight"),
                format!("base_model.model.{module}.lora_B.weight"),
            ),
        }
    }
}

/// What to write besides the weights.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeftExport {
    /// Full dotted path of the target layer in the base model (required to contain a dot).
    pub module: String,
    /// The layer kind; `None` infers it from the name ([`LayerKind::infer`]).
    pub layer: Option<LayerKind>,
    /// PEFT `task_type` (one of [`TASK_TYPES`]) or `None`.
    pub task_type: Option<String>,
    /// `base_model_name_or_path` (a Hub id or a local path) or `None`.
    pub base_model: Option<String>,
}

impl PeftExport {
    /// Exports `module` with inferred layer kind and no task or base model.
    pub fn module(module: &str) -> Self {
        PeftExport {
            module: module.to_string(),
            ..Default::default()
        }
    }

    /// Checks the request: a full dotted module path of sane characters, a known task type, a
    /// base model name without control characters.
    pub fn check(&self) -> Result<()> {
        check_module(&self.module)?;
        if !self.module.contains('.') {
            return Err(SonaError::Config(format!(
                "PEFT loads adapter weights by the full dotted path of the layer in the base model; \
                 the short name {:?} would load as an adapter that does nothing. Pass the full \
                 path, e.g. 'model.layers.0.self_attn.{}'",
                self.module, self.module
            )));
        }
        if let Some(t) = &self.task_type {
            if !TASK_TYPES.contains(&t.as_str()) {
                return Err(SonaError::Config(format!(
                    "task_type must be one of {TASK_TYPES:?} or None, got {t:?}"
                )));
            }
        }
        if let Some(b) = &self.base_model {
            if b.is_empty() || b.len() > 4096 || b.chars().any(char::is_control) {
                return Err(SonaError::Config(format!(
                    "base_model_name_or_path must be a non-empty name or path, got {b:?}"
                )));
            }
        }
        Ok(())
    }
}

/// A module path: dot-separated identifiers (letters, digits, `_`, `-`), at most 1024 bytes.
fn check_module(module: &str) -> Result<()> {
    let ok = !module.is_empty()
        && module.len() <= 1024
        && module.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(SonaError::Config(format!(
            "module must be a dotted path of names made of letters, digits, '_' and '-', got \
             {module:?}"
        )))
    }
}

/// An adapter as read from a PEFT directory.
#[derive(Debug, Clone, PartialEq)]
pub struct PeftAdapter {
    pub module: String,
    /// The SONA `alpha` giving PEFT's scale (`scale · r`): `lora_alpha`, or `lora_alpha · √r` when
    /// the file uses rsLoRA.
    pub alpha: f32,
    /// `lora_alpha` as written in the file (after `alpha_pattern`).
    pub lora_alpha: f32,
    pub use_rslora: bool,
    pub layer: LayerKind,
    pub weights: LoraWeights,
}

fn view(shape: Vec<usize>, data: &[u8]) -> Result<TensorView<'_>> {
    TensorView::new(Dtype::F32, shape, data)
        .map_err(|e| SonaError::Internal(format!("safetensors view: {e}")))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes `weights` (scale `α/r`) as a PEFT adapter directory (see the module docs).
pub fn save_peft(dir: &Path, alpha: f32, weights: &LoraWeights, export: &PeftExport) -> Result<()> {
    export.check()?;
    weights.check()?;
    let module = export.module.as_str();
    let layer = export.layer.unwrap_or_else(|| LayerKind::infer(module));
    std::fs::create_dir_all(dir)?;
    let a = f32_bytes(&weights.a);
    let b = f32_bytes(&weights.b_peft());
    let (ka, kb) = layer.keys(module);
    let views = [
        (ka.as_str(), view(vec![weights.rank, weights.d_in], &a)?),
        (kb.as_str(), view(vec![weights.d_out, weights.rank], &b)?),
    ];
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    meta.insert("sona_format".to_string(), "2".to_string());
    meta.insert("sona_layer".to_string(), layer.name().to_string());
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| SonaError::checkpoint(format!("serializing safetensors: {e}")))?;
    fsio::write_atomic(dir.join(WEIGHTS_FILE), &bytes)?;
    let config = json!({
        "peft_type": "LORA",
        "task_type": export.task_type,
        "base_model_name_or_path": export.base_model,
        "revision": null,
        "r": weights.rank,
        "lora_alpha": alpha,
        "target_modules": [module],
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": layer == LayerKind::Conv1D,
        "inference_mode": true,
        "init_lora_weights": true,
        "use_rslora": false,
        "use_dora": false,
        "rank_pattern": {},
        "alpha_pattern": {},
        "modules_to_save": null,
        "layers_to_transform": null,
        "layers_pattern": null,
    });
    let text = serde_json::to_string_pretty(&config)
        .map_err(|e| SonaError::Internal(format!("json: {e}")))?;
    fsio::write_atomic(dir.join(CONFIG_FILE), text.as_bytes())
}

fn bad(msg: impl Into<String>) -> SonaError {
    SonaError::checkpoint(msg)
}

/// Settings of `adapter_config.json` that change what the tensors mean, read and checked.
#[derive(Debug)]
struct PeftConfig {
    rank: usize,
    lora_alpha: f64,
    use_rslora: bool,
    rank_pattern: Map<String, Value>,
    alpha_pattern: Map<String, Value>,
}

fn is_true(cfg: &Map<String, Value>, key: &str) -> bool {
    matches!(cfg.get(key), Some(Value::Bool(true)))
}

fn is_set(cfg: &Map<String, Value>, key: &str) -> bool {
    match cfg.get(key) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    }
}

fn parse_config(text: &str) -> Result<PeftConfig> {
    let cfg: Value =
        serde_json::from_str(text).map_err(|e| bad(format!("{CONFIG_FILE} is not JSON: {e}")))?;
    let Value::Object(cfg) = cfg else {
        return Err(bad(format!("{CONFIG_FILE} must hold a JSON object")));
    };
    match cfg.get("peft_type").and_then(Value::as_str) {
        Some("LORA") => {}
        other => return Err(bad(format!("peft_type must be \"LORA\", got {other:?}"))),
    }
    // Features SONA cannot represent: refused, never ignored (ignoring them changes the outputs).
    let refuse = |what: &str| {
        Err(bad(format!(
            "{CONFIG_FILE} uses {what}, which SONA adapters cannot represent; refusing rather \
             than loading an adapter that computes something else"
        )))
    };
    if is_true(&cfg, "use_dora") {
        return refuse("DoRA (use_dora: true, weight-decomposed magnitudes)");
    }
    if is_true(&cfg, "lora_bias") {
        return refuse("a bias on lora_B (lora_bias: true)");
    }
    match cfg.get("bias") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "none" => {}
        Some(other) => return refuse(&format!("trained base-layer biases (bias: {other})")),
    }
    for key in [
        "modules_to_save",
        "trainable_token_indices",
        "layer_replication",
        "megatron_config",
        "alora_invocation_tokens",
    ] {
        if is_set(&cfg, key) {
            return refuse(&format!("`{key}`"));
        }
    }
    if is_true(&cfg, "use_qalora") {
        return refuse("QALoRA (use_qalora: true)");
    }
    let rank = cfg
        .get("r")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad(format!("{CONFIG_FILE}: missing integer `r`")))?;
    let lora_alpha = cfg
        .get("lora_alpha")
        .and_then(Value::as_f64)
        .ok_or_else(|| bad(format!("{CONFIG_FILE}: missing number `lora_alpha`")))?;
    let use_rslora = match cfg.get("use_rslora") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(bad(format!("use_rslora must be a boolean, got {other}"))),
    };
    let pattern = |key: &str| -> Result<Map<String, Value>> {
        match cfg.get(key) {
            None | Some(Value::Null) => Ok(Map::new()),
            Some(Value::Object(m)) => Ok(m.clone()),
            Some(other) => Err(bad(format!("{key} must be an object, got {other}"))),
        }
    };
    Ok(PeftConfig {
        rank: usize::try_from(rank).map_err(|_| bad("r does not fit"))?,
        lora_alpha,
        use_rslora,
        rank_pattern: pattern("rank_pattern")?,
        alpha_pattern: pattern("alpha_pattern")?,
    })
}

/// The value of a `rank_pattern` / `alpha_pattern` entry that applies to `module`, matched as PEFT
/// does for plain names (the whole path or a dotted suffix of it). Keys with regular-expression
/// syntax are refused: SONA does not evaluate Python regular expressions.
fn pattern_value<'a>(
    pattern: &'a Map<String, Value>,
    what: &str,
    module: &str,
) -> Result<Option<&'a Value>> {
    let mut found = None;
    for (key, value) in pattern {
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        {
            return Err(bad(format!(
                "{what} key {key:?} is a regular expression; SONA only matches module names"
            )));
        }
        let hit = module == key
            || (module.len() > key.len()
                && module.ends_with(key.as_str())
                && module.as_bytes()[module.len() - key.len() - 1] == b'.');
        if hit && found.is_none() {
            found = Some(value);
        }
    }
    Ok(found)
}

/// Reads a PEFT adapter directory. `module` picks the target module when the file holds several
/// (`None` requires exactly one).
pub fn load_peft(dir: &Path, module: Option<&str>) -> Result<PeftAdapter> {
    let cfg_path = dir.join(CONFIG_FILE);
    let text = fsio::read_text_capped(&cfg_path, MAX_CONFIG_BYTES)
        .map_err(|e| bad(format!("cannot read {}: {e}", cfg_path.display())))?;
    let w_path = dir.join(WEIGHTS_FILE);
    let bytes = fsio::read_capped(&w_path, MAX_WEIGHTS_BYTES)
        .map_err(|e| bad(format!("cannot read {}: {e}", w_path.display())))?;
    parse_peft(&text, &bytes, module)
}

/// [`load_peft`] from the contents of the two files.
pub fn parse_peft(config: &str, weights: &[u8], module: Option<&str>) -> Result<PeftAdapter> {
    let cfg = parse_config(config)?;
    let st = SafeTensors::deserialize(weights).map_err(|e| {
        bad(format!(
            "{WEIGHTS_FILE} is not a valid safetensors file: {e}"
        ))
    })?;
    let mut modules: Vec<(String, LayerKind)> = Vec::new();
    for n in st.names() {
        let Some(rest) = n.strip_prefix("base_model.model.") else {
            continue;
        };
        if let Some(m) = rest.strip_suffix(".lora_A.weight") {
            modules.push((m.to_string(), LayerKind::Linear));
        } else if let Some(m) = rest.strip_suffix(".lora_embedding_A") {
            modules.push((m.to_string(), LayerKind::Embedding));
        } else if rest.ends_with(".lora_magnitude_vector")
            || rest.ends_with(".lora_magnitude_vector.weight")
        {
            return Err(bad(format!(
                "{WEIGHTS_FILE} holds DoRA magnitudes ({n}); SONA adapters cannot represent them"
            )));
        } else if rest.ends_with(".lora_B.bias") {
            return Err(bad(format!(
                "{WEIGHTS_FILE} holds a lora_B bias ({n}); SONA adapters cannot represent it"
            )));
        }
    }
    modules.sort();
    let (module, layer) = match module {
        Some(m) => modules
            .iter()
            .find(|(x, _)| x == m)
            .cloned()
            .ok_or_else(|| {
                bad(format!(
                    "module {m:?} not in {WEIGHTS_FILE} (found {:?})",
                    modules.iter().map(|x| &x.0).collect::<Vec<_>>()
                ))
            })?,
        None => match modules.as_slice() {
            [one] => one.clone(),
            [] => return Err(bad(format!("{WEIGHTS_FILE} holds no lora_A tensor"))),
            many => {
                return Err(bad(format!(
                    "{WEIGHTS_FILE} holds several modules {:?}; name one",
                    many.iter().map(|x| &x.0).collect::<Vec<_>>()
                )))
            }
        },
    };
    let rank = match pattern_value(&cfg.rank_pattern, "rank_pattern", &module)? {
        None => cfg.rank,
        Some(v) => v
            .as_u64()
            .and_then(|r| usize::try_from(r).ok())
            .ok_or_else(|| {
                bad(format!(
                    "rank_pattern value for {module:?} is not a rank: {v}"
                ))
            })?,
    };
    let lora_alpha = match pattern_value(&cfg.alpha_pattern, "alpha_pattern", &module)? {
        None => cfg.lora_alpha,
        Some(v) => v.as_f64().ok_or_else(|| {
            bad(format!(
                "alpha_pattern value for {module:?} is not a number: {v}"
            ))
        })?,
    };
    if !(lora_alpha.is_finite() && lora_alpha > 0.0 && lora_alpha <= 1e6) {
        return Err(bad(format!(
            "lora_alpha must be in (0, 1e6], got {lora_alpha}"
        )));
    }
    let (ka, kb) = layer.keys(&module);
    let (a_shape, a) = read_f32(&st, &ka)?;
    let (b_shape, b) = read_f32(&st, &kb)?;
    let (&[r_a, d_in], &[d_out, r_b]) = (a_shape.as_slice(), b_shape.as_slice()) else {
        return Err(bad("lora_A and lora_B must be 2-D"));
    };
    if r_a != rank || r_b != rank {
        return Err(bad(format!(
            "rank mismatch: config r = {rank}, lora_A has {r_a} rows, lora_B has {r_b} columns"
        )));
    }
    check_shape(d_in, d_out, rank).map_err(|e| bad(e.to_string()))?;
    // PEFT: scale = lora_alpha / r, or lora_alpha / √r with rsLoRA.
    let alpha = if cfg.use_rslora {
        lora_alpha * (rank as f64).sqrt()
    } else {
        lora_alpha
    };
    if alpha > 1e6 {
        return Err(bad(format!("effective alpha {alpha} is above 1e6")));
    }
    let weights = LoraWeights::from_peft(d_in, d_out, rank, (alpha / rank as f64) as f32, &a, &b)
        .map_err(|e| bad(format!("{WEIGHTS_FILE}, module {module:?}: {e}")))?;
    Ok(PeftAdapter {
        module,
        alpha: alpha as f32,
        lora_alpha: lora_alpha as f32,
        use_rslora: cfg.use_rslora,
        layer,
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
    use std::fs;

    const Q: &str = "model.layers.0.self_attn.q_proj";

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

    fn config(dir: &Path) -> Map<String, Value> {
        match serde_json::from_str(&fs::read_to_string(dir.join(CONFIG_FILE)).unwrap()).unwrap() {
            Value::Object(m) => m,
            _ => panic!("config is not an object"),
        }
    }

    fn set_config(dir: &Path, key: &str, value: Value) {
        let mut c = config(dir);
        c.insert(key.to_string(), value);
        fs::write(dir.join(CONFIG_FILE), Value::Object(c).to_string()).unwrap();
    }

    #[test]
    fn round_trip_is_bit_exact_and_the_config_is_plain_peft() {
        let dir = tmpdir("rt");
        let w = sample();
        let export = PeftExport {
            task_type: Some("CAUSAL_LM".into()),
            base_model: Some("hf-internal-testing/tiny-random-LlamaForCausalLM".into()),
            ..PeftExport::module(Q)
        };
        save_peft(&dir, 12.0, &w, &export).unwrap();
        let back = load_peft(&dir, None).unwrap();
        assert_eq!(
            (back.module.as_str(), back.alpha, back.layer),
            (Q, 12.0, LayerKind::Linear)
        );
        assert_eq!(back.weights.scale.to_bits(), w.scale.to_bits());
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back.weights.a), bits(&w.a));
        assert_eq!(bits(&back.weights.bt), bits(&w.bt));
        let c = config(&dir);
        assert!(!c.contains_key("sona"), "no keys PEFT does not know");
        assert_eq!(c["task_type"], "CAUSAL_LM");
        assert_eq!(
            c["base_model_name_or_path"],
            "hf-internal-testing/tiny-random-LlamaForCausalLM"
        );
        assert_eq!(c["target_modules"], json!([Q]));
        assert_eq!(c["fan_in_fan_out"], false);
        let bytes = fs::read(dir.join(WEIGHTS_FILE)).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = meta.metadata().clone().unwrap();
        assert_eq!(meta["format"], "pt");
        assert_eq!(meta["sona_format"], "2");
        assert!(!dir.read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_export_requests_are_config_errors() {
        let dir = tmpdir("export");
        let w = sample();
        for export in [
            PeftExport::module("q_proj"),
            PeftExport::module("model..q_proj"),
            PeftExport::module("model.q proj"),
            PeftExport {
                task_type: Some("CHAT".into()),
                ..PeftExport::module(Q)
            },
            PeftExport {
                base_model: Some("a\nb".into()),
                ..PeftExport::module(Q)
            },
        ] {
            assert!(
                matches!(
                    save_peft(&dir, 12.0, &w, &export),
                    Err(SonaError::Config(_))
                ),
                "{export:?}"
            );
        }
        let err = save_peft(&dir, 12.0, &w, &PeftExport::module("q_proj")).unwrap_err();
        assert!(err.to_string().contains("full dotted path"), "{err}");
        assert!(!dir.exists(), "nothing written");
    }

    #[test]
    fn embedding_and_conv1d_targets_use_peft_names() {
        let w = sample();
        let dir = tmpdir("emb");
        save_peft(&dir, 12.0, &w, &PeftExport::module("model.embed_tokens")).unwrap();
        let bytes = fs::read(dir.join(WEIGHTS_FILE)).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut names: Vec<String> = st.names().into_iter().map(|n| n.to_string()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "base_model.model.model.embed_tokens.lora_embedding_A",
                "base_model.model.model.embed_tokens.lora_embedding_B"
            ]
        );
        let back = load_peft(&dir, None).unwrap();
        assert_eq!(back.layer, LayerKind::Embedding);
        assert_eq!(back.weights.a, w.a);
        let dir2 = tmpdir("conv");
        save_peft(
            &dir2,
            12.0,
            &w,
            &PeftExport::module("transformer.h.0.attn.c_attn"),
        )
        .unwrap();
        assert_eq!(config(&dir2)["fan_in_fan_out"], true);
        let explicit = PeftExport {
            layer: Some(LayerKind::Conv1D),
            ..PeftExport::module("model.mlp.proj")
        };
        save_peft(&dir2, 12.0, &w, &explicit).unwrap();
        assert_eq!(config(&dir2)["fan_in_fan_out"], true);
        assert_eq!(load_peft(&dir2, None).unwrap().weights.a, w.a);
        let _ = fs::remove_dir_all(&dir);
        let _ = fs::remove_dir_all(&dir2);
    }

    #[test]
    fn rslora_and_patterns_set_the_scale_as_peft_does() {
        let dir = tmpdir("rs");
        let w = sample(); // rank 3
        save_peft(&dir, 12.0, &w, &PeftExport::module(Q)).unwrap();
        set_config(&dir, "use_rslora", json!(true));
        let back = load_peft(&dir, None).unwrap();
        let want = 12.0 / 3f32.sqrt();
        assert!(
            (back.weights.scale - want).abs() < 1e-6,
            "{}",
            back.weights.scale
        );
        assert!((back.alpha - 12.0 * 3f32.sqrt()).abs() < 1e-4);
        assert!(back.use_rslora && back.lora_alpha == 12.0);
        set_config(&dir, "use_rslora", json!(false));
        set_config(
            &dir,
            "alpha_pattern",
            json!({"q_proj": 6.0, "v_proj": 100.0}),
        );
        let back = load_peft(&dir, None).unwrap();
        assert_eq!(back.weights.scale, 2.0);
        set_config(&dir, "alpha_pattern", json!({"self_attn.q_proj": 9.0}));
        assert_eq!(load_peft(&dir, None).unwrap().weights.scale, 3.0);
        set_config(&dir, "alpha_pattern", json!({"elf_attn.q_proj": 9.0}));
        assert_eq!(
            load_peft(&dir, None).unwrap().weights.scale,
            4.0,
            "suffixes end at dots"
        );
        set_config(&dir, "alpha_pattern", json!({"^model.*q_proj$": 9.0}));
        assert!(matches!(
            load_peft(&dir, None),
            Err(SonaError::Checkpoint(_))
        ));
        set_config(&dir, "alpha_pattern", json!({}));
        set_config(&dir, "r", json!(8));
        assert!(
            load_peft(&dir, None).is_err(),
            "r disagrees with the tensors"
        );
        set_config(&dir, "rank_pattern", json!({"q_proj": 3}));
        assert_eq!(load_peft(&dir, None).unwrap().weights.rank, 3);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn unsupported_features_are_refused_not_ignored() {
        let dir = tmpdir("unsup");
        let w = sample();
        save_peft(&dir, 12.0, &w, &PeftExport::module(Q)).unwrap();
        let clean = fs::read_to_string(dir.join(CONFIG_FILE)).unwrap();
        for (key, value) in [
            ("use_dora", json!(true)),
            ("lora_bias", json!(true)),
            ("bias", json!("all")),
            ("bias", json!("lora_only")),
            ("modules_to_save", json!(["lm_head"])),
            ("trainable_token_indices", json!([1, 2])),
            ("layer_replication", json!([[0, 2]])),
        ] {
            fs::write(dir.join(CONFIG_FILE), &clean).unwrap();
            set_config(&dir, key, value.clone());
            let err = load_peft(&dir, None).unwrap_err();
            assert!(matches!(err, SonaError::Checkpoint(_)), "{key}");
            assert!(err.to_string().contains("cannot represent"), "{key}: {err}");
        }
        // A DoRA magnitude tensor in the weights is refused even if the config does not say so.
        fs::write(dir.join(CONFIG_FILE), &clean).unwrap();
        let a = f32_bytes(&w.a);
        let b = f32_bytes(&w.b_peft());
        let m = f32_bytes(&[1.0; 6]);
        let (ka, kb) = LayerKind::Linear.keys(Q);
        let km = format!("base_model.model.{Q}.lora_magnitude_vector");
        let views = [
            (ka.as_str(), view(vec![3, 10], &a).unwrap()),
            (kb.as_str(), view(vec![6, 3], &b).unwrap()),
            (km.as_str(), view(vec![6], &m).unwrap()),
        ];
        fs::write(
            dir.join(WEIGHTS_FILE),
            safetensors::serialize(views, None).unwrap(),
        )
        .unwrap();
        assert!(load_peft(&dir, None)
            .unwrap_err()
            .to_string()
            .contains("DoRA"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn non_finite_and_absurd_weights_are_refused() {
        let dir = tmpdir("absurd");
        let mut w = sample();
        save_peft(&dir, 12.0, &w, &PeftExport::module(Q)).unwrap();
        let clean = fs::read(dir.join(WEIGHTS_FILE)).unwrap();
        // Flip the top exponent bit of one lora_B value: 0.2 becomes ~7e37.
        w.bt[4] = f32::from_bits(w.bt[4].to_bits() ^ (1 << 30));
        let b = f32_bytes(&w.b_peft());
        let pos = clean.len() - b.len();
        let mut bytes = clean.clone();
        bytes[pos..].copy_from_slice(&b);
        fs::write(dir.join(WEIGHTS_FILE), &bytes).unwrap();
        let err = load_peft(&dir, None).unwrap_err();
        assert!(matches!(err, SonaError::Checkpoint(_)), "{err}");
        let mut bytes = clean.clone();
        let n = bytes.len();
        bytes[n - 2..].copy_from_slice(&[0xc0, 0x7f]); // NaN
        fs::write(dir.join(WEIGHTS_FILE), &bytes).unwrap();
        assert!(matches!(
            load_peft(&dir, None),
            Err(SonaError::Checkpoint(_))
        ));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupted_or_mismatched_files_are_checkpoint_errors() {
        let dir = tmpdir("bad");
        let w = sample();
        save_peft(&dir, 12.0, &w, &PeftExport::module("model.emb")).unwrap();
        assert!(matches!(
            load_peft(&dir, Some("other")),
            Err(SonaError::Checkpoint(_))
        ));
        let cfg = fs::read_to_string(dir.join(CONFIG_FILE)).unwrap();
        for broken in [
            cfg.replace("\"r\": 3", "\"r\": 4"),
            "{not json".to_string(),
            cfg.replace("\"LORA\"", "\"IA3\""),
            "[1, 2]".to_string(),
            cfg.replace("\"r\": 3", "\"r\": 18446744073709551615"),
            cfg.replace("\"lora_alpha\": 12.0", "\"lora_alpha\": 1e300"),
        ] {
            fs::write(dir.join(CONFIG_FILE), &broken).unwrap();
            assert!(
                matches!(load_peft(&dir, None), Err(SonaError::Checkpoint(_))),
                "{broken}"
            );
        }
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
