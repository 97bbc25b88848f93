//! Behaviour of the hashing embedder as a user sees it.

use proptest::prelude::*;
use sona_core::SonaError;
use sona_embed::{HashingEmbedder, MAX_DIM, MIN_DIM};

fn cos(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f32]) -> f32 {
    cos(a, a).sqrt()
}

#[test]
fn same_text_same_vector_and_seed_matters() {
    let e = HashingEmbedder::new(256, 7).unwrap();
    let a = e.embed("How do I reset my password?").unwrap();
    let b = HashingEmbedder::new(256, 7)
        .unwrap()
        .embed("How do I reset my password?")
        .unwrap();
    assert_eq!(a, b);
    let c = HashingEmbedder::new(256, 8)
        .unwrap()
        .embed("How do I reset my password?")
        .unwrap();
    assert!(
        cos(&a, &c).abs() < 0.5,
        "another seed gives another hashing: {}",
        cos(&a, &c)
    );
}

#[test]
fn pinned_output_is_platform_independent() {
    // A change here changes every embedding users have stored: only on purpose, with a note.
    let v = HashingEmbedder::new(16, 0)
        .unwrap()
        .embed("route the query, route it")
        .unwrap();
    let bits: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
    let sum: u64 = bits
        .iter()
        .enumerate()
        .map(|(i, b)| (i as u64 + 1) * u64::from(*b))
        .sum();
    assert_eq!(sum, PINNED, "{v:?}");
}

const PINNED: u64 = 257_289_357_227;

#[test]
fn output_is_unit_norm_and_case_insensitive() {
    let e = HashingEmbedder::new(384, 0).unwrap();
    let a = e.embed("The Quick Brown Fox").unwrap();
    assert!((norm(&a) - 1.0).abs() < 1e-5);
    assert_eq!(a, e.embed("the quick brown fox").unwrap());
}

#[test]
fn similar_texts_are_closer_than_unrelated_ones() {
    let e = HashingEmbedder::new(512, 0).unwrap();
    let q = e.embed("how do I reset my password").unwrap();
    let near = e.embed("how can I reset my passwords?").unwrap();
    let typo = e.embed("how do i resett my pasword").unwrap();
    let far = e.embed("best pizza restaurants in naples").unwrap();
    let (cn, ct, cf) = (cos(&q, &near), cos(&q, &typo), cos(&q, &far));
    assert!(cn > 0.5 && ct > 0.4, "near {cn}, typo {ct}");
    assert!(cf < 0.15, "unrelated {cf}");
    assert!(cn > cf + 0.4 && ct > cf + 0.3);
}

#[test]
fn empty_and_symbol_only_text_is_the_zero_vector() {
    let e = HashingEmbedder::new(64, 0).unwrap();
    assert!(e.embed("").unwrap().iter().all(|v| *v == 0.0));
    assert!(e.embed(" ?!, -- ").unwrap().iter().all(|v| *v == 0.0));
}

#[test]
fn unicode_text_embeds() {
    let e = HashingEmbedder::new(128, 0).unwrap();
    let a = e.embed("東京の天気はどうですか").unwrap();
    let b = e.embed("Ünïcödé façade — naïve café 🚀").unwrap();
    assert!((norm(&a) - 1.0).abs() < 1e-5 && (norm(&b) - 1.0).abs() < 1e-5);
    assert!(cos(&a, &e.embed("東京の天気").unwrap()) > 0.3);
}

#[test]
fn text_over_the_cap_is_rejected_and_the_cap_is_configurable() {
    let e = HashingEmbedder::with_max_text_bytes(32, 0, 10).unwrap();
    assert!(e.embed("0123456789").is_ok());
    let err = e.embed("0123456789x").unwrap_err();
    assert!(
        matches!(err, SonaError::InvalidInput(ref m) if m.contains("11 bytes")),
        "{err}"
    );
    let err = e.embed_batch(&["ok", "much too long text"], 2).unwrap_err();
    assert!(err.to_string().contains("texts[1]"), "{err}");
    assert!(HashingEmbedder::with_max_text_bytes(32, 0, 0).is_err());
}

#[test]
fn huge_text_under_the_default_cap_embeds() {
    let e = HashingEmbedder::new(256, 0).unwrap();
    let text = "lorem ipsum dolor sit amet ".repeat(30_000); // ~810 KB
    let v = e.embed(&text).unwrap();
    assert!((norm(&v) - 1.0).abs() < 1e-4);
    assert!(e
        .embed(&"x".repeat(HashingEmbedder::DEFAULT_MAX_TEXT_BYTES + 1))
        .is_err());
}

#[test]
fn dim_bounds() {
    assert!(matches!(
        HashingEmbedder::new(MIN_DIM - 1, 0),
        Err(SonaError::Config(_))
    ));
    assert!(matches!(
        HashingEmbedder::new(MAX_DIM + 1, 0),
        Err(SonaError::Config(_))
    ));
    assert_eq!(
        HashingEmbedder::new(MIN_DIM, 0)
            .unwrap()
            .embed("a b")
            .unwrap()
            .len(),
        MIN_DIM
    );
    assert_eq!(
        HashingEmbedder::new(MAX_DIM, 0)
            .unwrap()
            .embed("a b")
            .unwrap()
            .len(),
        MAX_DIM
    );
    let e = HashingEmbedder::new(8, 0).unwrap();
    let mut short = vec![0.0; 7];
    assert!(matches!(
        e.embed_into("a", &mut short, &mut Vec::new()),
        Err(SonaError::Dimension { .. })
    ));
}

#[test]
fn batch_equals_one_by_one_for_any_thread_count() {
    let e = HashingEmbedder::new(96, 3).unwrap();
    let texts: Vec<String> = (0..37)
        .map(|i| format!("query number {i} about topic {}", i % 5))
        .collect();
    let single: Vec<f32> = texts.iter().flat_map(|t| e.embed(t).unwrap()).collect();
    for threads in [1, 2, 3, 64] {
        assert_eq!(
            e.embed_batch(&texts, threads).unwrap(),
            single,
            "threads {threads}"
        );
    }
    assert!(e.embed_batch::<&str>(&[], 2).unwrap().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn any_text_gives_a_finite_unit_or_zero_vector(text in ".{0,200}", dim in 2usize..300, seed: u64) {
        let e = HashingEmbedder::new(dim, seed).unwrap();
        let v = e.embed(&text).unwrap();
        prop_assert_eq!(v.len(), dim);
        prop_assert!(v.iter().all(|x| x.is_finite()));
        let n = norm(&v);
        prop_assert!(n == 0.0 || (n - 1.0).abs() < 1e-4);
    }
}
