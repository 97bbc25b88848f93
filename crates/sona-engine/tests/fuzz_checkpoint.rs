//! Fuzz target of the checkpoint directory layer (stable Rust, proptest): the MANIFEST and any
//! file of a valid checkpoint directory get flipped bytes (with the MANIFEST resealed or not);
//! `Engine::load` must refuse every one, never panic. Logical corruption of the files themselves
//! is `fuzz_load.rs`. Also: the previous checkpoint is the fallback.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use sona_engine::checkpoint::{FILES, MANIFEST};
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
            sona_engine::checkpoint::reseal(&dir).unwrap();
        }
        // A flipped byte is caught by a checksum (MANIFEST's, or the file's own).
        prop_assert!(Engine::load(&dir).is_err());
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
