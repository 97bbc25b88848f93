//! Fuzz target of the engine checkpoint loader (stable Rust, proptest): a valid checkpoint
//! directory is mutated — raw bytes of any file, and logical fields of `engine.ckpt` rewritten
//! through the real writer with the MANIFEST re-signed so the parser is reached — and
//! `Engine::load` must return `Ok` or `Err`, never panic or hang.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use sona_core::Checkpoint;
use sona_engine::checkpoint::{decode_manifest, encode_manifest, FILES, MANIFEST};
use sona_engine::{Engine, EngineConfig, FeedbackSource};

fn build(dir: &Path) {
    let mut cfg = EngineConfig::new(8);
    cfg.bank_index = "flat".into();
    cfg.learning_mode = sona_engine::LearningMode::InstantOnly;
    let e = Engine::new(cfg).unwrap();
    for i in 0..30 {
        let x: Vec<f32> = (0..8).map(|j| ((i * 7 + j) % 5) as f32 - 2.0).collect();
        if let Ok(d) = e.process(&x) {
            let _ = e.feedback(d.trajectory_id, (i % 2) as f32, FeedbackSource::Explicit);
        }
    }
    e.background_learn().unwrap();
    e.save(dir).unwrap();
}

/// One valid checkpoint built once; each case works on a copy.
fn template() -> &'static Path {
    static T: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, p) = T.get_or_init(|| {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("ck");
        build(&p);
        (t, p)
    });
    p
}

fn copy_to(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for f in FILES.iter().chain([&MANIFEST]) {
        std::fs::copy(template().join(f), dir.join(f)).unwrap();
    }
}

/// Re-signs the MANIFEST after a file changed (so only the file's own checks can refuse it).
fn resign(dir: &Path) {
    let text = std::fs::read_to_string(dir.join(MANIFEST)).unwrap();
    let mut m = decode_manifest(&text).unwrap();
    for f in &mut m.files {
        let b = std::fs::read(dir.join(&f.name)).unwrap();
        f.bytes = b.len() as u64;
        f.crc32 = crc32fast::hash(&b);
    }
    std::fs::write(dir.join(MANIFEST), encode_manifest(&m)).unwrap();
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        Just(serde_json::json!(0)),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(null)),
        Just(serde_json::json!(1e300)),
        "[a-z]{0,8}".prop_map(serde_json::Value::from),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn byte_mutations_are_refused(file in 0..4usize, flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), resigned in any::<bool>()) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ck");
        copy_to(&dir);
        let name = if file == 3 { MANIFEST } else { FILES[file] };
        let p = dir.join(name);
        let mut bytes = std::fs::read(&p).unwrap();
        for (i, b) in flips {
            let at = i.index(bytes.len());
            bytes[at] ^= b | 1;
        }
        std::fs::write(&p, &bytes).unwrap();
        if resigned && file != 3 {
            resign(&dir);
        }
        // A flipped byte is caught by a checksum (MANIFEST's, or the file's own).
        prop_assert!(Engine::load(&dir).is_err());
    }

    #[test]
    fn logical_mutations_load_or_fail(key in prop_oneof![Just("counters"), Just("config"), Just("log_seq"), Just("metrics"), Just("save_token")],
                                      field in "[a-z_]{1,24}", v in json_value(), pick_known in any::<bool>()) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ck");
        copy_to(&dir);
        let p = dir.join("engine.ckpt");
        let mut ck = Checkpoint::load(&p, "sona-engine", u32::MAX).unwrap();
        let mut meta: serde_json::Value = ck.meta(key).unwrap();
        if let Some(obj) = meta.as_object_mut() {
            let keys: Vec<String> = obj.keys().cloned().collect();
            let k = if pick_known && !keys.is_empty() {
                keys[field.len() % keys.len()].clone()
            } else {
                field
            };
            obj.insert(k, v);
        } else {
            meta = v;
        }
        ck.set_meta(key, &meta).unwrap();
        ck.save(&p).unwrap();
        resign(&dir);
        if let Ok(e) = Engine::load(&dir) {
            // Whatever loads is usable.
            let _ = e.process(&[1.0; 8]);
            e.close();
        }
    }
}

#[test]
fn previous_checkpoint_is_the_fallback() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ck");
    build(&dir);
    build(&dir);
    assert!(dir.with_file_name("ck.prev").join(MANIFEST).exists());
    std::fs::remove_file(dir.join("ewc.ckpt")).unwrap();
    assert!(Engine::load(&dir).is_err());
    assert!(Engine::load_with(&dir, true).is_ok());
    // Crash between the two renames: only `ck.prev` exists.
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(Engine::load_with(&dir, true).is_ok());
}
