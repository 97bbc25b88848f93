//! Fuzz target for every EWC++ loader (`EwcPlusPlus::from_bytes` / `from_checkpoint` / `load`;
//! the other EWC classes have no saved form). Stable Rust, proptest-driven, bounded case counts.
//!
//! Logical fields are mutated and written back through the real `Checkpoint` writer, so the
//! checksum is valid and the EWC validation is what is exercised: every meta value (wrong types,
//! out-of-range and huge numbers, missing), every tensor (wrong shape, NaN/Inf, negative or huge
//! values, missing, wrong dtype) and the counters. Bytes of a valid file are mutated too. Every
//! outcome must be `Err(Checkpoint)` or an object that works: its stored state finite and its
//! methods callable without panicking.

use proptest::prelude::*;
use serde_json::{json, Value};
use sona_core::{Checkpoint, SonaError};
use sona_ewc::{EwcConfig, EwcPlusPlus};

const P: usize = 6;

fn valid() -> EwcPlusPlus {
    let mut e = EwcPlusPlus::new(
        P,
        EwcConfig {
            lambda: 2.0,
            decay: 0.9,
            floor: 1e-6,
            ..Default::default()
        },
    )
    .unwrap();
    e.update_fisher(&[1.0, -2.0, 0.5, 0.0, 3.0, 1.0]).unwrap();
    e.complete_task(&[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], None, 1.0)
        .unwrap();
    e.update_fisher(&[0.5; P]).unwrap();
    e
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(1)),
        Just(json!(P)),
        Just(json!(1u64 << 40)),
        Just(json!(u64::MAX)),
        Just(json!(0.5)),
        Just(json!(1.0)),
        Just(json!(1e38)),
        Just(json!(1e300)),
        Just(json!(-1e-45)),
        any::<f32>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(|x| json!(x)),
        Just(json!("0.5")),
        Just(Value::Null),
        Just(json!([1])),
    ]
}

fn float() -> impl Strategy<Value = f32> {
    prop_oneof![
        Just(0.0f32),
        Just(1.0),
        Just(-1.0),
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(f32::MAX),
        Just(1e38),
        Just(1e-45),
        -10.0f32..10.0,
    ]
}

#[derive(Debug, Clone)]
enum Edit {
    Meta(&'static str, Option<Value>),
    Tensor(&'static str, Vec<usize>, Vec<f32>),
    Counts(Vec<u64>),
    TensorAsU64(&'static str),
}

fn edit() -> impl Strategy<Value = Edit> {
    let meta_key = prop::sample::select(vec![
        "param_count",
        "lambda",
        "lambda_min",
        "lambda_max",
        "gamma",
        "floor",
        "decay",
    ]);
    let tensor = prop::sample::select(vec!["fisher", "theta_star", "online_raw"]);
    prop_oneof![
        (meta_key, prop::option::weighted(0.9, number())).prop_map(|(k, v)| Edit::Meta(k, v)),
        (
            tensor.clone(),
            prop_oneof![
                Just(vec![P]),
                Just(vec![P - 1]),
                Just(vec![2, 3]),
                Just(vec![0])
            ],
            prop::collection::vec(float(), P),
        )
            .prop_map(|(t, shape, mut v)| {
                let n: usize = shape.iter().product();
                v.resize(n, 0.5);
                Edit::Tensor(t, shape, v)
            }),
        prop::collection::vec(
            prop_oneof![Just(0u64), Just(1), Just(u64::MAX), any::<u64>()],
            0..4
        )
        .prop_map(Edit::Counts),
        tensor.prop_map(Edit::TensorAsU64),
    ]
}

fn apply(ck: &mut Checkpoint, e: &Edit) {
    match e {
        Edit::Meta(k, Some(v)) => ck.set_meta(k, v).unwrap(),
        Edit::Meta(k, None) => {
            // "Missing" is written as a different key name, the closest the writer allows.
            let v: Value = ck.meta(k).unwrap_or(Value::Null);
            ck.set_meta(&format!("{k}_renamed"), &v).unwrap();
            ck.set_meta(k, &Value::Null).unwrap();
        }
        Edit::Tensor(name, shape, v) => ck.put_f32(name, shape, v),
        Edit::Counts(c) => ck.put_u64("counts", c),
        Edit::TensorAsU64(name) => ck.put_u64(name, &[1; P]),
    }
}

/// A loaded object must hold finite state and survive every public call.
fn check_usable(e: &mut EwcPlusPlus) {
    let p = e.param_count();
    assert!(e.fisher().iter().all(|x| x.is_finite() && *x >= 0.0));
    assert!(e.theta_star().iter().all(|x| x.is_finite()));
    if e.online().samples() > 0 {
        assert!(e.online().estimate().unwrap().iter().all(|x| x.is_finite()));
    }
    let theta = vec![0.25f32; p];
    let _ = e.penalty(&theta);
    let mut g = vec![0.5f32; p];
    let _ = e.apply(&theta, &mut g);
    let _ = e.update_fisher(&vec![1.0; p]);
    let _ = e.complete_task(&theta, None, 1.0);
    assert!(e.fisher().iter().all(|x| x.is_finite()));
    let again = EwcPlusPlus::from_bytes(&e.to_bytes().unwrap()).unwrap();
    assert_eq!(&again, e);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_logical_fields_are_refused_or_usable(edits in prop::collection::vec(edit(), 1..4)) {
        let mut ck = valid().to_checkpoint().unwrap();
        for e in &edits {
            apply(&mut ck, e);
        }
        let bytes = ck.to_bytes().unwrap();
        match EwcPlusPlus::from_bytes(&bytes) {
            Ok(mut e) => check_usable(&mut e),
            Err(err) => prop_assert!(matches!(err, SonaError::Checkpoint(_)), "{err:?}"),
        }
    }

    #[test]
    fn mutated_bytes_are_refused_or_identical(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let original = valid();
        let mut bytes = original.to_bytes().unwrap();
        for (i, b) in &edits {
            let at = i.index(bytes.len());
            bytes[at] = *b;
        }
        if let Some(c) = cut {
            let n = c.index(bytes.len());
            bytes.truncate(n);
        }
        match EwcPlusPlus::from_bytes(&bytes) {
            Ok(e) => prop_assert_eq!(e, original),
            Err(err) => prop_assert!(matches!(err, SonaError::Checkpoint(_)), "{err:?}"),
        }
    }
}

#[test]
fn load_from_disk_goes_through_the_same_checks() {
    let dir = std::env::temp_dir().join(format!("sona-ewc-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("e.sona");
    let mut ck = valid().to_checkpoint().unwrap();
    ck.set_meta("gamma", &1.5f32).unwrap();
    ck.save(&path).unwrap();
    assert!(matches!(
        EwcPlusPlus::load(&path),
        Err(SonaError::Checkpoint(_))
    ));
    valid().save(&path).unwrap();
    assert_eq!(EwcPlusPlus::load(&path).unwrap(), valid());
    std::fs::remove_dir_all(&dir).unwrap();
}
