//! `normalize` and `cosine` on finite inputs whose squared norms overflow or underflow `f32`
//! (issue 9, item 7): unit length and finite similarities, never NaN or a silently unscaled vector.

use sona_core::kernels;

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

#[test]
fn normalize_is_unit_length_for_huge_and_denormal_vectors() {
    let cases: Vec<Vec<f32>> = vec![
        vec![1e38; 8],
        vec![3e38, -3e38, 1.0],
        vec![1e20; 768],
        vec![1e-40; 5],
        vec![1e-45, 0.0, -1e-45],
        vec![1e-30, 2e-30, 0.0, 3e-30],
        vec![f32::MAX, f32::MIN_POSITIVE],
    ];
    for v in cases {
        let mut u = v.clone();
        let n = kernels::normalize(&mut u);
        assert!(n > 0.0, "{v:?}: norm {n}");
        assert!((norm(&u) - 1.0).abs() < 1e-5, "{v:?} -> {u:?}");
        // Direction kept: u_i / v_i has one sign and magnitude ratio 1/‖v‖.
        // The returned norm is exact to f32 rounding wherever it is a normal f32.
        let want = norm(&v);
        if want >= f32::MIN_POSITIVE as f64 && n.is_finite() {
            assert!((n as f64 / want - 1.0).abs() < 1e-4, "{n} vs {want}");
        }
    }
    // The true norm of 8 × 3e38 is beyond f32: reported as +Inf, the vector still unit.
    let mut u = vec![3e38f32; 8];
    assert_eq!(kernels::normalize(&mut u), f32::INFINITY);
    assert!((norm(&u) - 1.0).abs() < 1e-6);
    let mut z = vec![0.0f32; 4];
    assert_eq!(kernels::normalize(&mut z), 0.0);
    assert_eq!(z, vec![0.0; 4]);
}

#[test]
fn normal_range_normalize_is_unchanged() {
    let mut v: Vec<f32> = (0..33).map(|i| i as f32 - 16.0).collect();
    let n = kernels::normalize(&mut v);
    assert!((n as f64 - norm(&(0..33).map(|i| i as f32 - 16.0).collect::<Vec<_>>())).abs() < 1e-3);
    assert!((norm(&v) - 1.0).abs() < 1e-6);
}

#[test]
fn cosine_is_finite_and_right_for_extreme_magnitudes() {
    let a = vec![1e38f32; 16];
    assert!((kernels::cosine(&a, &a) - 1.0).abs() < 1e-6);
    let neg: Vec<f32> = a.iter().map(|x| -x).collect();
    assert!((kernels::cosine(&a, &neg) + 1.0).abs() < 1e-6);
    // √(aa·bb) overflowed here although each norm is fine.
    let b = vec![1e10f32; 4];
    assert!((kernels::cosine(&b, &b) - 1.0).abs() < 1e-6);
    let tiny = vec![1e-40f32, 0.0, 1e-40];
    let other = vec![1e-40f32, 1e-40, 0.0];
    assert!((kernels::cosine(&tiny, &other) - 0.5).abs() < 1e-5);
    let mixed_a = [1e30f32, 0.0];
    let mixed_b = [1e-30f32, 1e-30];
    let c = kernels::cosine(&mixed_a, &mixed_b);
    assert!((c - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-5, "{c}");
    assert_eq!(kernels::cosine(&[0.0; 3], &[1e38; 3]), 0.0);
}
