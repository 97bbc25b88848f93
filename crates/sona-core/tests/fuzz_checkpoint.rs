//! Fuzz target for the checkpoint container (stable Rust, proptest-driven; bounded case counts).
//!
//! Every input must give `Err(SonaError::Checkpoint)` or a checkpoint, never a panic or a hang:
//! - byte mutations and truncations of a valid file (a loaded mutant must equal the original: the
//!   checksum covers everything that carries meaning);
//! - crafted safetensors headers (shapes whose element count overflows, offsets past the data,
//!   foreign dtypes, absurd header lengths, missing or malformed SONA fields), which reach the
//!   parser directly (the checksum is verified after it);
//! - crafted first-format (`SONACKPT`) files with a recomputed CRC, so their parser is reached;
//! - logical fields (meta values, odd shapes) written through the real writer.

use proptest::prelude::*;
use sona_core::{Checkpoint, SonaError};

fn sample() -> Checkpoint {
    let mut c = Checkpoint::new("fuzz", 1);
    c.set_meta("n", &3u64).unwrap();
    c.set_meta("name", &"weights").unwrap();
    c.put_f32("a", &[2, 3], &[1.0, -2.0, 3.5, 0.0, 1e-3, 7.0]);
    c.put_f32("b", &[1], &[42.0]);
    c.put_u64("ids", &[1, u64::MAX]);
    c
}

fn same(a: &Checkpoint, b: &Checkpoint) -> bool {
    a.get_f32("a").ok() == b.get_f32("a").ok()
        && a.get_f32("b").ok() == b.get_f32("b").ok()
        && a.get_u64("ids").ok() == b.get_u64("ids").ok()
        && a.meta::<u64>("n").ok() == b.meta::<u64>("n").ok()
        && a.meta::<String>("name").ok() == b.meta::<String>("name").ok()
}

fn load(bytes: &[u8]) -> Result<Checkpoint, SonaError> {
    let r = Checkpoint::from_bytes(bytes, "fuzz", 1);
    if let Err(e) = &r {
        assert!(matches!(e, SonaError::Checkpoint(_)), "{e:?}");
    }
    r
}

/// Sizes that break unchecked arithmetic, plus ordinary ones.
fn dim() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..5,
        Just(1u64 << 32),
        Just(1u64 << 62),
        Just(1u64 << 63),
        Just(u64::MAX),
        any::<u64>(),
    ]
}

fn dtype() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "F32", "U64", "F16", "BF16", "I8", "U8", "BOOL", "F64", "XX",
    ])
}

fn metadata() -> impl Strategy<Value = String> {
    let field = |k: &'static str, good: &'static str| {
        prop_oneof![
            Just(format!(r#""{k}":"{good}","#)),
            Just(String::new()),
            "[a-z0-9{}\\[\\]\":,]{0,12}".prop_map(move |v| format!(r#""{k}":"{v}","#)),
        ]
    };
    (
        field("format", "sona-checkpoint"),
        field("format_version", "2"),
        field("kind", "fuzz"),
        field("version", "1"),
        field("meta", "{}"),
        field("crc32", "00000000"),
    )
        .prop_map(|(a, b, c, d, e, f)| {
            let body = format!("{a}{b}{c}{d}{e}{f}");
            format!(r#""__metadata__":{{{}}}"#, body.trim_end_matches(','))
        })
}

/// Name, dtype, shape and data offsets of one crafted header entry.
type CraftedTensor = (String, &'static str, Vec<u64>, (u64, u64));

fn safetensors_file(
    tensors: Vec<CraftedTensor>,
    meta: String,
    data_len: usize,
    header_len: Option<u64>,
) -> Vec<u8> {
    let mut entries: Vec<String> = tensors
        .iter()
        .map(|(name, dt, shape, (s, e))| {
            format!(r#""{name}":{{"dtype":"{dt}","shape":{shape:?},"data_offsets":[{s},{e}]}}"#)
        })
        .collect();
    entries.push(meta);
    let header = format!("{{{}}}", entries.join(","));
    let mut out = Vec::new();
    out.extend_from_slice(&header_len.unwrap_or(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend(std::iter::repeat_n(0x3fu8, data_len));
    out
}

fn legacy_file(header: &str, data_len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"SONACKPT");
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend(std::iter::repeat_n(0u8, data_len));
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn byte_mutations_are_refused_or_harmless(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)
    ) {
        let original = sample();
        let mut bytes = original.to_bytes().unwrap();
        for (i, b) in &edits {
            let at = i.index(bytes.len());
            bytes[at] = *b;
        }
        if let Ok(c) = load(&bytes) {
            prop_assert!(same(&c, &original), "a mutated file loaded with different content");
        }
    }

    #[test]
    fn truncations_and_extensions_are_refused(cut in any::<prop::sample::Index>(), extra in prop::collection::vec(any::<u8>(), 1..16)) {
        let bytes = sample().to_bytes().unwrap();
        let n = cut.index(bytes.len());
        prop_assert!(load(&bytes[..n]).is_err());
        let mut longer = bytes.clone();
        longer.extend_from_slice(&extra);
        prop_assert!(load(&longer).is_err());
    }

    #[test]
    fn crafted_safetensors_headers_never_panic(
        tensors in prop::collection::vec(
            ("[a-c]{1,2}", dtype(), prop::collection::vec(dim(), 0..4), (dim(), dim())),
            0..4,
        ),
        meta in metadata(),
        data_len in 0usize..64,
        header_len in prop::option::weighted(0.8, prop_oneof![any::<u64>(), 0u64..512]),
    ) {
        let bytes = safetensors_file(tensors, meta, data_len, header_len);
        let _ = load(&bytes);
    }

    #[test]
    fn crafted_first_format_files_with_valid_crc_never_panic(
        tensors in prop::collection::vec(
            ("[a-c]{1,2}", prop::sample::select(vec!["f32", "u64", "f16"]), prop::collection::vec(dim(), 0..4), dim()),
            0..4,
        ),
        kind in prop::sample::select(vec!["fuzz", "other", ""]),
        data_len in 0usize..64,
    ) {
        let entries: Vec<String> = tensors
            .iter()
            .map(|(n, dt, shape, off)| format!(r#""{n}":{{"dtype":"{dt}","shape":{shape:?},"offset":{off}}}"#))
            .collect();
        let header = format!(
            r#"{{"kind":"{kind}","version":1,"meta":{{}},"tensors":{{{}}}}}"#,
            entries.join(",")
        );
        if let Ok(c) = load(&legacy_file(&header, data_len)) {
            // Whatever loaded is in bounds: every tensor can be read.
            for (name, ..) in &tensors {
                let _ = c.get_f32(name);
                let _ = c.get_u64(name);
            }
        }
    }

    #[test]
    fn logical_fields_through_the_writer_round_trip(
        key in "[a-z_]{1,8}",
        value in prop_oneof![
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_filter("finite", |x| x.is_finite()).prop_map(serde_json::Value::from),
            ".{0,16}".prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
        ],
        shape in prop::collection::vec(prop_oneof![Just(0usize), Just(usize::MAX), 1usize..4], 1..4),
        ids in prop::collection::vec(any::<u64>(), 0..8),
    ) {
        let mut c = Checkpoint::new("fuzz", 1);
        c.set_meta(&key, &value).unwrap();
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if let Some(n) = n.filter(|&n| n < 4096) {
            c.put_f32("t", &shape, &vec![1.5; n]);
        }
        c.put_u64("ids", &ids);
        let back = load(&c.to_bytes().unwrap()).unwrap();
        let got = back.meta::<serde_json::Value>(&key).unwrap();
        match (got.as_f64(), value.as_f64()) {
            // serde_json's default float parser can be off by one ulp on long mantissas.
            (Some(a), Some(b)) if value.is_f64() => prop_assert!((a - b).abs() <= 1e-15 * b.abs()),
            _ => prop_assert_eq!(got, value),
        }
        prop_assert_eq!(back.get_u64("ids").unwrap(), ids);
        prop_assert_eq!(back.get_f32("t").ok(), c.get_f32("t").ok());
    }
}
