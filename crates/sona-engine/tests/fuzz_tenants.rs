//! Fuzzing the tenant adapters' part of `Engine::load`: the names list and the four tensors are
//! rewritten through the real checkpoint writer (valid CRC and manifest, so the tenant parser is
//! reached) with random names, counts, shapes and values, and byte flips hit a checkpoint that
//! holds tenants. Load must return an error or a working engine, never panic.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use sona_core::{Checkpoint, SeededRng};
use sona_engine::{Engine, EngineConfig, FeedbackSource, LearningMode};

const D: usize = 8;

fn saved() -> &'static (tempfile::TempDir, PathBuf) {
    static T: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    T.get_or_init(|| {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("ck");
        let mut c = EngineConfig::new(D);
        c.learning_mode = LearningMode::InstantOnly;
        c.bank_index = "flat".into();
        let e = Engine::new(c).unwrap();
        let mut x = vec![0.0f32; D * 20];
        SeededRng::new(1).fill_normal(&mut x, 1.0);
        for (i, row) in x.chunks(D).enumerate() {
            let d = e.process_tenant(row, ["a", "b", "c"][i % 3]).unwrap();
            e.feedback(d.trajectory_id, 0.0, FeedbackSource::Explicit)
                .unwrap();
        }
        e.save(&dir).unwrap();
        (t, dir)
    })
}

fn copy(dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for f in ["engine.ckpt", "ewc.ckpt", "bank.ckpt", "MANIFEST"] {
        std::fs::copy(saved().1.join(f), dst.join(f)).unwrap();
    }
}

fn check(dir: &Path) {
    if let Ok(e) = Engine::load(dir) {
        let x = vec![0.5f32; D];
        for t in ["a", "b", "zz"] {
            if let Ok(dec) = e.process_tenant(&x, t) {
                let _ = e.feedback(dec.trajectory_id, 1.0, FeedbackSource::Judge);
            }
        }
    }
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just(String::new()),
        "[a-z\n]{0,5}",
        Just("x".repeat(300)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn logical_tenant_corruption_never_panics(
        names in prop::collection::vec(name(), 0..5),
        which in 0usize..5,
        rows in 0usize..5,
        cols in prop::sample::select(vec![0usize, 8, 16, 17]),
        fill in prop::sample::select(vec![0.0f32, 1e30, f32::NAN, f32::INFINITY, -3.0]),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ck");
        copy(&dir);
        let path = dir.join("engine.ckpt");
        let mut ck = Checkpoint::from_bytes(&std::fs::read(&path).unwrap(), sona_engine::persist::KIND, sona_engine::persist::VERSION).unwrap();
        if which == 4 {
            ck.set_meta("tenants", &names).unwrap();
        } else {
            let key = ["a", "bt", "mom.a", "mom.bt"][which];
            ck.put_f32(&format!("tenants.{key}"), &[rows, cols], &vec![fill; rows * cols]);
        }
        std::fs::write(&path, ck.to_bytes().unwrap()).unwrap();
        sona_engine::checkpoint::reseal(&dir).unwrap();
        check(&dir);
    }

    #[test]
    fn byte_flips_in_a_tenant_checkpoint_never_panic(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        resealed in any::<bool>(),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ck");
        copy(&dir);
        let path = dir.join("engine.ckpt");
        let mut b = std::fs::read(&path).unwrap();
        for (i, v) in flips {
            let at = i.index(b.len());
            b[at] ^= v | 1;
        }
        std::fs::write(&path, b).unwrap();
        if resealed {
            let _ = sona_engine::checkpoint::reseal(&dir);
        }
        check(&dir);
    }
}

#[test]
fn template_loads_with_its_tenants() {
    let e = Engine::load(&saved().1).unwrap();
    assert_eq!(e.tenant_count(), 3);
}
