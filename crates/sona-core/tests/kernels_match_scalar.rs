//! Every dispatched kernel against the scalar reference, on the lengths that exercise each code path
//! (empty, single, below/at/above one and four vector widths, typical embedding sizes, odd large).

use proptest::prelude::*;
use sona_core::kernels::{self, scalar};

const LENGTHS: &[usize] = &[0, 1, 7, 8, 15, 16, 31, 32, 33, 767, 768, 4097];

fn close(a: f32, b: f32, scale: f32) -> bool {
    (a - b).abs() <= 1e-5 * scale.max(1.0)
}

fn vec_of(len: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(-4.0f32..4.0, len)
}

fn pair() -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
    prop::sample::select(LENGTHS).prop_flat_map(|n| (vec_of(n), vec_of(n)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn dot_matches((a, b) in pair()) {
        let mag: f32 = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum();
        prop_assert!(close(kernels::dot(&a, &b), scalar::dot(&a, &b), mag));
        prop_assert!(close(kernels::portable::dot(&a, &b), scalar::dot(&a, &b), mag));
    }

    #[test]
    fn dot3_and_cosine_match((a, b) in pair()) {
        let (ab, aa, bb) = kernels::dot3(&a, &b);
        let (rab, raa, rbb) = scalar::dot3(&a, &b);
        prop_assert!(close(ab, rab, raa.max(rbb)));
        prop_assert!(close(aa, raa, raa));
        prop_assert!(close(bb, rbb, rbb));
        let c = kernels::cosine(&a, &b);
        let rc = if raa > 0.0 && rbb > 0.0 { rab / (raa * rbb).sqrt() } else { 0.0 };
        prop_assert!((c - rc).abs() < 1e-4, "{c} vs {rc}");
    }

    #[test]
    fn axpy_and_scale_match((x, y) in pair(), alpha in -3.0f32..3.0) {
        let mut fast = y.clone();
        let mut slow = y.clone();
        kernels::axpy(alpha, &x, &mut fast);
        scalar::axpy(alpha, &x, &mut slow);
        for (f, s) in fast.iter().zip(&slow) {
            prop_assert!(close(*f, *s, s.abs()));
        }
        kernels::scale(alpha, &mut fast);
        scalar::scale(alpha, &mut slow);
        for (f, s) in fast.iter().zip(&slow) {
            prop_assert!(close(*f, *s, s.abs()));
        }
    }

    #[test]
    fn all_finite_finds_any_bad_value(
        a in prop::sample::select(LENGTHS).prop_flat_map(vec_of),
        pos in any::<prop::sample::Index>(),
        bad in prop::sample::select(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY][..]),
    ) {
        prop_assert!(kernels::all_finite(&a));
        if !a.is_empty() {
            let mut b = a.clone();
            b[pos.index(a.len())] = bad;
            prop_assert!(!kernels::all_finite(&b));
        }
    }

    #[test]
    fn copy_is_exact((src, dst) in pair()) {
        let mut out = dst.clone();
        kernels::copy(&src, &mut out);
        prop_assert_eq!(out, src);
    }

    #[test]
    fn normalize_gives_unit_norm(a in prop::sample::select(LENGTHS).prop_flat_map(vec_of)) {
        let mut v = a.clone();
        let n = kernels::normalize(&mut v);
        prop_assert!(close(n, scalar::dot(&a, &a).sqrt(), n));
        if n > 1e-3 {
            prop_assert!((kernels::norm_sq(&v) - 1.0).abs() < 1e-4);
        }
    }

    #[test]
    fn matvec_and_transpose_match(
        rows in prop::sample::select(&[0usize, 1, 3, 17][..]),
        cols in prop::sample::select(LENGTHS),
        seed in any::<u64>(),
    ) {
        let mut rng = sona_core::SeededRng::new(seed);
        let mut m = vec![0.0f32; rows * cols];
        rng.fill_normal(&mut m, 1.0);
        let mut x = vec![0.0f32; cols];
        rng.fill_normal(&mut x, 1.0);
        let mut xt = vec![0.0f32; rows];
        rng.fill_normal(&mut xt, 1.0);

        let (mut y, mut ry) = (vec![1.0f32; rows], vec![0.0f32; rows]);
        kernels::matvec(&m, rows, cols, &x, &mut y);
        scalar::matvec(&m, rows, cols, &x, &mut ry);
        let scale = (cols as f32).sqrt() * 4.0;
        for (a, b) in y.iter().zip(&ry) { prop_assert!(close(*a, *b, scale)); }

        let (mut yt, mut ryt) = (vec![1.0f32; cols], vec![0.0f32; cols]);
        kernels::matvec_t(&m, rows, cols, &xt, &mut yt);
        scalar::matvec_t(&m, rows, cols, &xt, &mut ryt);
        for (a, b) in yt.iter().zip(&ryt) { prop_assert!(close(*a, *b, 4.0 * (rows as f32).sqrt())); }
    }

    #[test]
    fn rank_update_matches(
        rows in 0usize..20,
        cols in prop::sample::select(LENGTHS),
        r in 1usize..5,
        alpha in -2.0f32..2.0,
        seed in any::<u64>(),
    ) {
        let mut rng = sona_core::SeededRng::new(seed);
        let mut m = vec![0.0f32; rows * cols];
        rng.fill_normal(&mut m, 1.0);
        let mut u = vec![0.0f32; r * rows];
        rng.fill_normal(&mut u, 1.0);
        let mut v = vec![0.0f32; r * cols];
        rng.fill_normal(&mut v, 1.0);
        let mut fast = m.clone();
        kernels::rank_update(&mut fast, rows, cols, alpha, &u, &v, r);
        scalar::rank_update(&mut m, rows, cols, alpha, &u, &v, r);
        for (a, b) in fast.iter().zip(&m) { prop_assert!(close(*a, *b, 8.0)); }
    }
}

#[test]
fn batch_dot_and_top_k_find_the_nearest_row() {
    let mut rng = sona_core::SeededRng::new(11);
    let (rows, cols) = (500, 64);
    let mut m = vec![0.0f32; rows * cols];
    rng.fill_normal(&mut m, 1.0);
    for row in m.chunks_exact_mut(cols) {
        kernels::normalize(row);
    }
    let q = m[123 * cols..124 * cols].to_vec();
    let mut scores = vec![0.0; rows];
    kernels::batch_dot(&m, rows, cols, &q, &mut scores);
    let top = kernels::top_k(&scores, 5);
    assert_eq!(top[0].0, 123);
    assert!((top[0].1 - 1.0).abs() < 1e-5);
    assert!(top.windows(2).all(|w| w[0].1 >= w[1].1));
}

/// Distance in units in the last place between two finite `f32` of the same sign (or zero).
fn ulps(a: f32, b: f32) -> u32 {
    let key = |v: f32| {
        let i = v.to_bits() as i32;
        if i < 0 {
            i32::MIN - i
        } else {
            i
        }
    };
    key(a).abs_diff(key(b))
}

/// Every input the activations see in the router and the edges of each code path: a dense sweep
/// of [-20, 20], the 0.625 switch of `tanh`, the clamp of `exp` and the special values.
fn activation_inputs() -> Vec<f32> {
    let mut xs: Vec<f32> = (-200_000..=200_000).map(|i| i as f32 * 1e-4).collect();
    for &c in &[0.625f32, 87.0, 88.0, 1e-3, 1e-20, 1e-40] {
        for k in -50..=50 {
            let v = f32::from_bits((c.to_bits() as i32 + k) as u32);
            xs.extend([v, -v]);
        }
    }
    xs.extend([0.0, -0.0, 9.0, 30.0, 100.0, 1e30, f32::MAX, f32::INFINITY]);
    xs.extend([-9.0, -30.0, -100.0, -1e30, -f32::MAX, f32::NEG_INFINITY]);
    xs
}

#[test]
fn tanh_is_within_four_ulp_of_the_rounded_value() {
    let xs = activation_inputs();
    let mut got = xs.clone();
    kernels::tanh(&mut got);
    let mut port = xs.clone();
    kernels::portable::tanh(&mut port);
    for (i, &x) in xs.iter().enumerate() {
        let want = (x as f64).tanh() as f32;
        assert!(
            ulps(got[i], want) <= 4,
            "tanh({x:e}) = {} vs {want}",
            got[i]
        );
        assert!(ulps(port[i], want) <= 2, "portable tanh({x:e})");
        assert!(
            got[i].abs() <= 1.0 && got[i].signum() == x.signum(),
            "tanh({x:e}) = {:e}",
            got[i]
        );
    }
    let mut nan = [f32::NAN, 0.5, f32::NAN];
    kernels::tanh(&mut nan);
    assert!(nan[0].is_nan() && nan[2].is_nan() && nan[1] == 0.5f32.tanh());
}

#[test]
fn sigmoid_is_within_four_ulp_above_the_exp_clamp() {
    let xs = activation_inputs();
    let mut got = xs.clone();
    kernels::sigmoid(&mut got);
    for (i, &x) in xs.iter().enumerate() {
        let want = (1.0 / (1.0 + (-(x as f64)).exp())) as f32;
        if x >= -87.0 {
            assert!(
                ulps(got[i], want) <= 4,
                "sigmoid({x:e}) = {} vs {want}",
                got[i]
            );
        } else {
            // Below the clamp: σ(−87) ≈ 1.6e-38 instead of smaller (an absolute error under 2e-38).
            assert!(
                (0.0..2e-38).contains(&got[i]),
                "sigmoid({x:e}) = {}",
                got[i]
            );
        }
    }
    let mut nan = [f32::NAN; 3];
    kernels::sigmoid(&mut nan);
    assert!(nan.iter().all(|v| v.is_nan()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn activations_match_on_every_length(a in prop::sample::select(LENGTHS).prop_flat_map(vec_of)) {
        let (mut t, mut s) = (a.clone(), a.clone());
        kernels::tanh(&mut t);
        kernels::sigmoid(&mut s);
        let (mut rt, mut rs) = (a.clone(), a.clone());
        scalar::tanh(&mut rt);
        scalar::sigmoid(&mut rs);
        for i in 0..a.len() {
            prop_assert!(ulps(t[i], rt[i]) <= 4 && ulps(s[i], rs[i]) <= 4, "at {}", a[i]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Narrow rows take one call for the whole product; the bits are those of one `axpy` per row.
    #[test]
    fn narrow_matvec_t_rounds_as_one_axpy_per_row(
        (rows, cols, m, x) in (1usize..20, 1usize..16).prop_flat_map(|(r, c)| {
            (Just(r), Just(c), vec_of(r * c), vec_of(r))
        })
    ) {
        let mut y = vec![f32::NAN; cols];
        kernels::matvec_t(&m, rows, cols, &x, &mut y);
        let mut want = vec![0.0f32; cols];
        for (r, &xr) in x.iter().enumerate() {
            if xr != 0.0 {
                kernels::axpy(xr, &m[r * cols..(r + 1) * cols], &mut want);
            }
        }
        prop_assert_eq!(y, want);
    }
}
