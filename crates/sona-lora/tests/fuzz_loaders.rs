//! Fuzz targets (stable Rust, proptest-driven) for every LoRA loader: the training checkpoint
//! (`Lora::from_bytes`), quantised copies (`QuantizedLora::from_bytes`) and PEFT directories
//! (`peft::parse_peft`).
//!
//! Each target builds a valid file and mutates it three ways: raw bytes (the checksum then fails
//! first), raw bytes with the checksum recomputed (so the container parser is reached), and logical
//! fields — settings, shapes, counters, RNG state, tensor values — written back through
//! `sona_core::Checkpoint` (or `safetensors` / JSON for PEFT) so the component's own parser is
//! reached with a well-formed file that says something absurd. Every load must return an error or
//! an object that works: a forward on a normal input succeeds and is finite, and an update does not
//! panic. A watchdog turns a hang into a failure. Case counts are small so `cargo test` stays fast.

use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Value};
use sona_core::SeededRng;
use sona_lora::peft::{self, PeftExport};
use sona_lora::{Frozen, Lora, LoraConfig, LoraWeights, QuantKind, QuantizedLora};

/// Cases per target: 96 in `cargo test`; `SONA_FUZZ_CASES=20000` for a longer local run.
fn cases() -> u32 {
    std::env::var("SONA_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96)
}

/// Runs `f` on another thread and fails if it does not finish in time (a hang) or panics.
fn watchdog<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(v) => {
            h.join().expect("loader thread");
            v
        }
        Err(_) => {
            if h.is_finished() {
                panic!("the loader panicked: {:?}", h.join().err());
            }
            panic!("the loader hung");
        }
    }
}

/// A valid, trained adapter of each kind of base map.
fn adapters() -> Vec<Lora> {
    let mut micro = LoraConfig::micro(8);
    micro.optim.lr = 0.01;
    micro.explore.capacity = 4;
    let mut dense = LoraConfig::base(6);
    dense.d_out = 4;
    dense.rank = 2;
    dense.frozen = Frozen::Dense((0..24).map(|i| (i as f32 * 0.3).sin()).collect());
    dense.optim.clip = f32::INFINITY;
    [micro, dense]
        .into_iter()
        .map(|c| {
            let l = Lora::new(c).unwrap();
            let (di, dout) = (l.config().d_in, l.config().d_out);
            let x: Vec<f32> = (0..di).map(|i| (i as f32 * 0.7).cos()).collect();
            let mut y = vec![0.0; dout];
            for _ in 0..3 {
                let t = l.forward_explore(&x, &mut y).unwrap();
                l.reward(t, 0.8).unwrap();
            }
            l.update(&x, &vec![0.1; dout]).unwrap();
            l
        })
        .collect()
}

/// What a loaded adapter must do: forward a normal input to a finite output; learning may refuse
/// but not panic.
fn assert_usable(l: &Lora) {
    let (di, dout) = (l.config().d_in, l.config().d_out);
    assert!(di <= 1 << 16 && dout <= 1 << 16);
    let x: Vec<f32> = (0..di).map(|i| ((i as f32) * 0.37).sin()).collect();
    let mut y = vec![0.0; dout];
    l.forward(&x, &mut y).expect("forward of a loaded adapter");
    assert!(y.iter().all(|v| v.is_finite()), "non-finite output");
    assert!(l.snapshot().is_finite());
    let _ = l.update(&x, &vec![0.01; dout]);
    if let Ok(t) = l.forward_explore(&x, &mut y) {
        let _ = l.reward(t, 0.5);
    }
    assert!(l.snapshot().is_finite());
}

fn check_lora(bytes: Vec<u8>) {
    if let Ok(l) = watchdog(move || Lora::from_bytes(&bytes)) {
        assert_usable(&l);
    }
}

/// Replaces the trailing CRC so the container accepts mutated bytes.
fn recrc(bytes: &mut [u8]) {
    if bytes.len() >= 4 {
        let n = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..n]);
        bytes[n..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Header of a checkpoint file as JSON, to be edited and written back (offsets recomputed).
fn edit_header(bytes: &[u8], edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let hlen = u64::from_le_bytes(bytes[12..20].try_into().unwrap()) as usize;
    let mut header: Value = serde_json::from_slice(&bytes[20..20 + hlen]).unwrap();
    edit(&mut header);
    let h = serde_json::to_vec(&header).unwrap();
    let mut out = bytes[..12].to_vec();
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[20 + hlen..]);
    recrc(&mut out);
    out
}

/// Values a hostile file might hold in a numeric field.
fn wild_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(-1)),
        Just(json!(u64::MAX)),
        Just(json!(1u64 << 40)),
        Just(json!(1u64 << 63)),
        Just(json!(65537)),
        Just(json!(1e300)),
        Just(json!(-0.0)),
        Just(json!(1e-30)),
        Just(json!(null)),
        Just(json!("8")),
        Just(json!(true)),
        (0u64..300).prop_map(|v| json!(v)),
        (-1e7f64..1e7).prop_map(|v| json!(v)),
    ]
}

fn wild_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(-f32::INFINITY),
        Just(f32::MAX),
        Just(1e38f32),
        Just(2e4f32),
        Just(0.0f32),
        Just(f32::MIN_POSITIVE / 4.0),
        -10.0f32..10.0,
    ]
}

const SETTINGS: &[&str] = &[
    "d_in",
    "d_out",
    "rank",
    "alpha",
    "frozen",
    "lr",
    "momentum",
    "decay",
    "sigma",
    "baseline_rate",
    "capacity",
    "seed",
    "module",
    "read_only",
];

const TENSORS: &[&str] = &[
    "W",
    "A",
    "Bt",
    "momentum_A",
    "momentum_Bt",
    "baseline_w",
    "baseline_c",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn checkpoint_bytes(which in 0usize..2, flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..6), cut in any::<prop::sample::Index>(), truncate in any::<bool>(), fix_crc in any::<bool>()) {
        let l = &adapters()[which];
        let mut bytes = l.to_checkpoint().unwrap().to_bytes().unwrap();
        for (i, x) in flips {
            let n = bytes.len();
            bytes[i.index(n)] ^= x;
        }
        if truncate {
            let n = bytes.len();
            bytes.truncate(cut.index(n));
        }
        if fix_crc {
            recrc(&mut bytes);
        }
        check_lora(bytes);
    }

    #[test]
    fn checkpoint_settings(which in 0usize..2, field in 0usize..SETTINGS.len(), value in wild_number(), clip in wild_number(), touch_clip in any::<bool>()) {
        let l = &adapters()[which];
        let mut ck = l.to_checkpoint().unwrap();
        let mut s: Value = ck.meta("settings").unwrap();
        s[SETTINGS[field]] = value;
        ck.set_meta("settings", &s).unwrap();
        if touch_clip {
            ck.set_meta(if field % 2 == 0 { "clip" } else { "max_norm" }, &clip).unwrap();
        }
        check_lora(ck.to_bytes().unwrap());
    }

    #[test]
    fn checkpoint_tensors(which in 0usize..2, name in 0usize..TENSORS.len(), rows in 0usize..12, cols in 0usize..12, fill in wild_f32(), at in any::<prop::sample::Index>(), one_dim in any::<bool>()) {
        let l = &adapters()[which];
        let mut ck = l.to_checkpoint().unwrap();
        let n = rows * cols;
        let mut v: Vec<f32> = (0..n).map(|i| (i as f32 * 0.1).sin()).collect();
        if n > 0 {
            v[at.index(n)] = fill;
        }
        let shape = if one_dim { vec![n] } else { vec![rows, cols] };
        ck.put_f32(TENSORS[name], &shape, &v);
        check_lora(ck.to_bytes().unwrap());
    }

    #[test]
    fn checkpoint_tensor_values_in_place(which in 0usize..2, name in 0usize..TENSORS.len(), fill in wild_f32(), at in any::<prop::sample::Index>()) {
        // Right shapes, one absurd value: what a bit flip with a recomputed checksum produces.
        let l = &adapters()[which];
        let mut ck = l.to_checkpoint().unwrap();
        if let Ok((shape, mut v)) = ck.get_f32(TENSORS[name]) {
            let n = v.len();
            v[at.index(n)] = fill;
            ck.put_f32(TENSORS[name], &shape, &v);
        }
        check_lora(ck.to_bytes().unwrap());
    }

    #[test]
    fn checkpoint_counters_and_rng(which in 0usize..2, counters in prop::collection::vec(prop_oneof![Just(u64::MAX), Just(u64::MAX - 1), Just(1u64 << 62), Just((1u64 << 62) + 1), 0u64..1000], 0..7), rng in prop_oneof![Just([0u64; 4]), any::<[u64; 4]>()]) {
        let l = &adapters()[which];
        let mut ck = l.to_checkpoint().unwrap();
        ck.put_u64("counters", &counters);
        let mut state: Value = ck.meta("explore_rng").unwrap();
        if let Some(obj) = state.as_object_mut() {
            if let Some(key) = obj.keys().next().cloned() {
                obj.insert(key, json!(rng));
            }
        }
        ck.set_meta("explore_rng", &state).unwrap();
        check_lora(ck.to_bytes().unwrap());
    }

    #[test]
    fn checkpoint_header_shapes(which in 0usize..2, name in 0usize..TENSORS.len(), shape in prop::collection::vec(prop_oneof![Just(0usize), Just(1usize << 31), 1usize..20], 0..3), offset in prop_oneof![Just(None), Just(Some(usize::MAX)), (0usize..5000).prop_map(Some)]) {
        let l = &adapters()[which];
        let bytes = l.to_checkpoint().unwrap().to_bytes().unwrap();
        let out = edit_header(&bytes, |h| {
            if let Some(t) = h["tensors"].get_mut(TENSORS[name]) {
                t["shape"] = json!(shape);
                if let Some(o) = offset {
                    t["offset"] = json!(o);
                }
            }
        });
        check_lora(out);
    }
}

// --- quantised copies --------------------------------------------------------------------------

fn quantized() -> Vec<QuantizedLora> {
    let mut rng = SeededRng::new(3);
    let mut w = LoraWeights::init(24, 16, 3, 6.0, &mut rng).unwrap();
    rng.fill_normal(&mut w.bt, 0.3);
    vec![
        QuantizedLora::quantize(&w, QuantKind::F16).unwrap(),
        QuantizedLora::quantize(&w, QuantKind::Q4 { group: 8 }).unwrap(),
    ]
}

fn check_quant(bytes: Vec<u8>) {
    if let Ok(q) = watchdog(move || QuantizedLora::from_bytes(&bytes)) {
        let w = q.dequantize();
        w.check().expect("a loaded copy has valid weights");
        assert!(q.rel_error.is_finite() && q.rel_error >= 0.0);
        let x: Vec<f32> = (0..w.d_in).map(|i| (i as f32).cos()).collect();
        let mut y = vec![0.0; w.d_out];
        w.add_delta(&x, &mut y);
        assert!(y.iter().all(|v| v.is_finite()));
    }
}

const QUANT_META: &[&str] = &["kind", "group", "shape", "scale", "rel_error"];
const QUANT_TENSORS: &[&str] = &["a.f16", "bt.f16", "a.q4", "bt.q4", "a.scales", "bt.scales"];

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn quant_bytes(which in 0usize..2, flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..6), fix_crc in any::<bool>()) {
        let mut bytes = quantized()[which].to_checkpoint().unwrap().to_bytes().unwrap();
        for (i, x) in flips {
            let n = bytes.len();
            bytes[i.index(n)] ^= x;
        }
        if fix_crc {
            recrc(&mut bytes);
        }
        check_quant(bytes);
    }

    #[test]
    fn quant_meta(which in 0usize..2, field in 0usize..QUANT_META.len(), value in wild_number(), shape in prop::collection::vec(prop_oneof![Just(0usize), Just(usize::MAX), Just(1usize << 40), 1usize..40], 0..4), kind in prop_oneof![Just("fp16"), Just("q4"), Just("q8")]) {
        let mut ck = quantized()[which].to_checkpoint().unwrap();
        match QUANT_META[field] {
            "shape" => ck.set_meta("shape", &shape).unwrap(),
            "kind" => ck.set_meta("kind", &kind).unwrap(),
            f => ck.set_meta(f, &value).unwrap(),
        }
        check_quant(ck.to_bytes().unwrap());
    }

    #[test]
    fn quant_tensors(which in 0usize..2, name in 0usize..QUANT_TENSORS.len(), len in 0usize..80, word in prop_oneof![Just(u64::MAX), Just(0u64), any::<u64>()], scale in wild_f32()) {
        let mut ck = quantized()[which].to_checkpoint().unwrap();
        let n = QUANT_TENSORS[name];
        if n.ends_with("scales") {
            let mut v = vec![0.05f32; len];
            if len > 0 {
                v[len / 2] = scale;
            }
            ck.put_f32(n, &[len], &v);
        } else {
            ck.put_u64(n, &vec![word; len]);
        }
        check_quant(ck.to_bytes().unwrap());
    }
}

// --- PEFT directories --------------------------------------------------------------------------

const MODULE: &str = "model.layers.0.self_attn.q_proj";

/// The two files of a valid PEFT directory (written once through the real writer).
fn peft_files() -> (String, Vec<u8>) {
    static FILES: std::sync::OnceLock<(String, Vec<u8>)> = std::sync::OnceLock::new();
    FILES.get_or_init(write_peft_files).clone()
}

fn write_peft_files() -> (String, Vec<u8>) {
    let dir = std::env::temp_dir().join(format!("sona-fuzz-peft-{}", std::process::id()));
    let mut rng = SeededRng::new(5);
    let mut w = LoraWeights::init(16, 12, 2, 8.0, &mut rng).unwrap();
    rng.fill_normal(&mut w.bt, 0.2);
    peft::save_peft(&dir, 8.0, &w, &PeftExport::module(MODULE)).unwrap();
    let cfg = std::fs::read_to_string(dir.join(peft::CONFIG_FILE)).unwrap();
    let st = std::fs::read(dir.join(peft::WEIGHTS_FILE)).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (cfg, st)
}

fn check_peft(cfg: String, st: Vec<u8>) {
    if let Ok(ad) = watchdog(move || peft::parse_peft(&cfg, &st, None)) {
        let w = &ad.weights;
        w.check().expect("imported weights are valid");
        assert!(ad.alpha.is_finite() && ad.alpha > 0.0);
        let x: Vec<f32> = (0..w.d_in).map(|i| (i as f32 * 0.2).sin()).collect();
        let mut y = vec![0.0; w.d_out];
        w.add_delta(&x, &mut y);
        assert!(y.iter().all(|v| v.is_finite()));
        // The imported weights are accepted by an adapter of that shape.
        let mut c = LoraConfig::base(w.d_in);
        c.d_out = w.d_out;
        c.rank = w.rank;
        c.alpha = ad.alpha;
        c.frozen = Frozen::Zero;
        if let Ok(l) = Lora::new(c) {
            l.set_weights(w.clone())
                .expect("imported weights load into an adapter");
            l.forward(&x, &mut y).unwrap();
            assert!(y.iter().all(|v| v.is_finite()));
        }
    }
}

const PEFT_KEYS: &[&str] = &[
    "r",
    "lora_alpha",
    "use_rslora",
    "use_dora",
    "lora_bias",
    "bias",
    "peft_type",
    "rank_pattern",
    "alpha_pattern",
    "modules_to_save",
];

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn peft_weight_bytes(flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..6), cut in prop::option::of(any::<prop::sample::Index>())) {
        let (cfg, mut st) = peft_files();
        for (i, x) in flips {
            let n = st.len();
            st[i.index(n)] ^= x;
        }
        if let Some(c) = cut {
            let n = st.len();
            st.truncate(c.index(n));
        }
        check_peft(cfg, st);
    }

    #[test]
    fn peft_config_fields(key in 0usize..PEFT_KEYS.len(), value in prop_oneof![wild_number(), Just(json!({"q_proj": 1e30})), Just(json!({"q_proj": 0})), Just(json!({"q_proj": 3})), Just(json!({"(.*)": 2})), Just(json!([])), Just(json!("none")), Just(json!("LORA")), Just(json!({}))], drop in any::<bool>()) {
        let (cfg, st) = peft_files();
        let mut c: Value = serde_json::from_str(&cfg).unwrap();
        if drop {
            c.as_object_mut().unwrap().remove(PEFT_KEYS[key]);
        } else {
            c[PEFT_KEYS[key]] = value;
        }
        check_peft(c.to_string(), st);
    }

    #[test]
    fn peft_config_bytes(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        let (cfg, st) = peft_files();
        let mut b = cfg.into_bytes();
        for (i, x) in flips {
            let n = b.len();
            b[i.index(n)] = x;
        }
        check_peft(String::from_utf8_lossy(&b).into_owned(), st);
    }

    #[test]
    fn peft_tensors(ra in 0usize..6, ca in 0usize..40, rb in 0usize..40, cb in 0usize..6, fill in wild_f32(), at in any::<prop::sample::Index>(), embedding in any::<bool>(), extra in prop_oneof![Just(None), Just(Some("lora_magnitude_vector")), Just(Some("lora_B.bias")), Just(Some("other.weight"))], dtype16 in any::<bool>()) {
        let (cfg, _) = peft_files();
        let mut a: Vec<f32> = (0..ra * ca).map(|i| (i as f32 * 0.3).sin() * 0.1).collect();
        let b: Vec<f32> = (0..rb * cb).map(|i| (i as f32 * 0.7).cos() * 0.1).collect();
        if !a.is_empty() {
            let n = a.len();
            a[at.index(n)] = fill;
        }
        let (ka, kb) = if embedding {
            (format!("base_model.model.{MODULE}.lora_embedding_A"), format!("base_model.model.{MODULE}.lora_embedding_B"))
        } else {
            (format!("base_model.model.{MODULE}.lora_A.weight"), format!("base_model.model.{MODULE}.lora_B.weight"))
        };
        let (ab, bb) = if dtype16 {
            let h = |v: &[f32]| v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect::<Vec<u8>>();
            (h(&a), h(&b))
        } else {
            (f32_bytes(&a), f32_bytes(&b))
        };
        let dt = if dtype16 { Dtype::F16 } else { Dtype::F32 };
        let eb = f32_bytes(&[1.0; 3]);
        let ke = extra.map(|e| format!("base_model.model.{MODULE}.{e}"));
        let mut views = vec![
            (ka, TensorView::new(dt, vec![ra, ca], &ab).unwrap()),
            (kb, TensorView::new(dt, vec![rb, cb], &bb).unwrap()),
        ];
        if let Some(k) = ke {
            views.push((k, TensorView::new(Dtype::F32, vec![3], &eb).unwrap()));
        }
        let st = safetensors::serialize(views, None).unwrap();
        check_peft(cfg, st);
    }
}

#[test]
fn unmutated_files_load() {
    for l in adapters() {
        let back = Lora::from_bytes(&l.to_checkpoint().unwrap().to_bytes().unwrap()).unwrap();
        assert_eq!(*back.snapshot(), *l.snapshot());
        assert_usable(&back);
    }
    for q in quantized() {
        let back =
            QuantizedLora::from_bytes(&q.to_checkpoint().unwrap().to_bytes().unwrap()).unwrap();
        assert_eq!(back, q);
    }
    let (cfg, st) = peft_files();
    assert!(peft::parse_peft(&cfg, &st, None).is_ok());
}
