use super::backward::{backward, MicroGrads, Scratch};
use super::*;

struct Case {
    l: Layout,
    theta: Vec<f64>,
    a: Vec<f64>,
    bt: Vec<f64>,
    r: Vec<f64>,
    seq: Vec<f64>,
    targets: Vec<f64>,
    weights: Vec<f64>,
}

const RANK: usize = 2;
const SCALE: f64 = 0.7;

fn case(seed: u64) -> Case {
    let l = Layout::new(5, 6, 4, 2, 2, 3).unwrap();
    let mut rng = SeededRng::new(seed);
    let mut theta: Vec<f64> = l.init(seed).iter().map(|&x| x as f64).collect();
    for t in theta.iter_mut() {
        *t += 0.3 * rng.normal() as f64;
    }
    let mut f =
        |n: usize, s: f64| -> Vec<f64> { (0..n).map(|_| s * rng.normal() as f64).collect() };
    let a = f(RANK * l.hidden, 0.5);
    let bt = f(RANK * l.tiers, 0.5);
    let r = f(readout_len(l.dim, l.tiers), 0.3);
    let seq = f(4 * l.input, 0.8);
    let targets = (0..l.tiers).map(|k| [0.0, 1.0, 0.3][k % 3]).collect();
    let weights = (0..l.tiers).map(|k| 0.5 + k as f64).collect();
    Case {
        l,
        theta,
        a,
        bt,
        r,
        seq,
        targets,
        weights,
    }
}

fn loss(c: &Case, theta: &[f64], a: &[f64], bt: &[f64], r: &[f64], seq: &[f64]) -> f64 {
    let mut cache = Cache::default();
    let m = HeadMicro {
        a,
        bt,
        rank: RANK,
        scale: SCALE,
        readout: r,
    };
    forward(&c.l, theta, Some(m), seq, &mut cache);
    (0..c.l.tiers)
        .map(|k| c.weights[k] * bce_from_logit(cache.logits[k], c.targets[k]))
        .sum()
}

fn close(what: &str, i: usize, analytic: f64, numeric: f64) {
    let err = (analytic - numeric).abs();
    let scale = analytic.abs().max(numeric.abs());
    assert!(
        err <= 1e-3 * scale || err < 1e-8,
        "{what}[{i}]: analytic {analytic} vs finite difference {numeric}"
    );
}

#[test]
fn backward_matches_central_differences_in_f64() {
    for seed in [1, 2, 3] {
        let c = case(seed);
        let m = HeadMicro {
            a: &c.a,
            bt: &c.bt,
            rank: RANK,
            scale: SCALE,
            readout: &c.r,
        };
        let mut cache = Cache::default();
        forward(&c.l, &c.theta, Some(m), &c.seq, &mut cache);
        let dlogits: Vec<f64> = (0..c.l.tiers)
            .map(|k| c.weights[k] * (cache.out[k] - c.targets[k]))
            .collect();
        let mut grad = vec![0.0; c.theta.len()];
        let mut dx0 = vec![0.0; c.l.dim];
        let (mut ga, mut gbt) = (vec![0.0; c.a.len()], vec![0.0; c.bt.len()]);
        let mut gr = vec![0.0; c.r.len()];
        backward(
            &c.l,
            &c.theta,
            Some(m),
            &c.seq,
            &cache,
            &dlogits,
            &mut grad,
            Some(&mut dx0),
            Some(MicroGrads {
                ga: &mut ga,
                gbt: &mut gbt,
                gr: &mut gr,
            }),
            &mut Scratch::default(),
        );
        // Skipping the parameter gradients (loop A) gives the same input gradient.
        let mut dx_only = vec![0.0; c.l.dim];
        backward(
            &c.l,
            &c.theta,
            Some(m),
            &c.seq,
            &cache,
            &dlogits,
            &mut [],
            Some(&mut dx_only),
            None,
            &mut Scratch::default(),
        );
        assert_eq!(dx_only, dx0);
        let eps = 1e-6;
        let fd = |f: &dyn Fn(f64) -> f64| (f(eps) - f(-eps)) / (2.0 * eps);
        for i in 0..c.theta.len() {
            let num = fd(&|e| {
                let mut t = c.theta.clone();
                t[i] += e;
                loss(&c, &t, &c.a, &c.bt, &c.r, &c.seq)
            });
            close("theta", i, grad[i], num);
        }
        for i in 0..c.a.len() {
            let num = fd(&|e| {
                let mut a = c.a.clone();
                a[i] += e;
                loss(&c, &c.theta, &a, &c.bt, &c.r, &c.seq)
            });
            close("A", i, ga[i], num);
        }
        for i in 0..c.bt.len() {
            let num = fd(&|e| {
                let mut b = c.bt.clone();
                b[i] += e;
                loss(&c, &c.theta, &c.a, &b, &c.r, &c.seq)
            });
            close("Bt", i, gbt[i], num);
        }
        for i in 0..c.r.len() {
            let num = fd(&|e| {
                let mut r = c.r.clone();
                r[i] += e;
                loss(&c, &c.theta, &c.a, &c.bt, &r, &c.seq)
            });
            close("R", i, gr[i], num);
        }
        assert!(gr.iter().all(|g| g.abs() > 1e-9), "R has a zero gradient");
        for i in 0..c.l.dim {
            let num = fd(&|e| {
                let mut s = c.seq.clone();
                s[i] += e;
                loss(&c, &c.theta, &c.a, &c.bt, &c.r, &s)
            });
            close("x0", i, dx0[i], num);
        }
        // Nothing is vacuous: gradients reach every block.
        let o = c.l.offsets();
        for (name, r) in [
            ("W1", o.w1..o.w2),
            ("W2", o.w2..o.u1),
            ("U1", o.u1..o.u2),
            ("U2", o.u2..o.bz),
            ("zeta", o.zeta..o.zeta + 1),
            ("nu", o.nu..o.nu + 1),
        ] {
            assert!(
                grad[r].iter().any(|g| g.abs() > 1e-6),
                "{name} has no gradient"
            );
        }
    }
}

/// The f32 path (vector `σ`/`tanh` kernels where AVX2 is present) against f64 libm: every gate,
/// candidate and state of every step, and the outputs, agree to 1e-5 — so the backward pass, which
/// reads those cached activations, computes the gradient of the function the forward evaluated.
#[test]
fn f32_forward_agrees_with_f64() {
    for seed in [7, 8, 9] {
        f32_forward_agrees_with_f64_on(seed);
    }
}

fn f32_forward_agrees_with_f64_on(seed: u64) {
    let c = case(seed);
    let to32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let (t32, a32, b32, s32) = (to32(&c.theta), to32(&c.a), to32(&c.bt), to32(&c.seq));
    let r32 = to32(&c.r);
    let mut c32 = Cache::default();
    let m32 = HeadMicro {
        a: &a32,
        bt: &b32,
        rank: RANK,
        scale: SCALE as f32,
        readout: &r32,
    };
    forward(&c.l, &t32, Some(m32), &s32, &mut c32);
    let mut c64 = Cache::default();
    let m64 = HeadMicro {
        a: &c.a,
        bt: &c.bt,
        rank: RANK,
        scale: SCALE,
        readout: &c.r,
    };
    forward(&c.l, &c.theta, Some(m64), &c.seq, &mut c64);
    for k in 0..c.l.tiers {
        assert!((c32.out[k] as f64 - c64.out[k]).abs() < 1e-5);
    }
    for (name, a, b) in [
        ("z", &c32.z, &c64.z),
        ("c", &c32.c, &c64.c),
        ("h", &c32.h, &c64.h),
    ] {
        assert_eq!(a.len(), b.len());
        for (i, (&x, &y)) in a.iter().zip(b.iter()).enumerate() {
            assert!((x as f64 - y).abs() < 1e-5, "{name}[{i}]: {x} vs {y}");
        }
    }
}

#[test]
fn layout_rejects_bad_sizes() {
    assert!(Layout::new(0, 3, 4, 2, 2, 2).is_err());
    assert!(Layout::new(8, 3, 4, 5, 2, 2).is_err());
    assert!(Layout::new(8, 3, 4, 2, 5, 2).is_err());
    let l = Layout::new(8, 3, 4, 2, 2, 2).unwrap();
    assert_eq!(l.n_params(), l.init(0).len());
}

#[test]
fn feature_blocks() {
    use sona_core::types::ArmStats;
    let mut arm = ArmStats::default();
    arm.push(1.0);
    arm.push(0.0);
    let mut out = vec![9.0f32; 3 * 2 + 3];
    features::pattern(&[arm, ArmStats::default()], 0.8, &mut out);
    assert_eq!(out[0], 0.0);
    assert!(out[1] > 0.0 && out[2] > 0.5);
    assert_eq!(&out[3..6], &[0.0, 0.0, 0.0]);
    assert_eq!(&out[6..], &[0.8, 1.0, 0.0]);
    features::missing(&mut out);
    assert_eq!(out.iter().sum::<f32>(), 1.0);
    assert_eq!(out[8], 1.0);
}

#[test]
fn readout_step_is_a_gradient_step_on_the_chosen_row() {
    let (d, t) = (3, 2);
    let r = vec![0.5f32; readout_len(d, t)];
    let x = [0.6f32, 0.0, 0.8];
    let next = readout_step(&r, &x, 1, 0.5, 0.4).unwrap();
    // Row 0 untouched; row 1 moved by −lr·dlogit·z/‖z‖², z = [√3 x, 1], ‖z‖² = 4.
    assert_eq!(&next[..4], &r[..4]);
    let s = 3f32.sqrt();
    for j in 0..3 {
        assert!((next[4 + j] - (0.5 - 0.05 * s * x[j])).abs() < 1e-6);
    }
    assert!((next[7] - 0.45).abs() < 1e-6);
    // So the row's logit on x moved by −lr·dlogit = −0.2.
    let logit = |r: &[f32]| s * (0..3).map(|j| r[4 + j] * x[j]).sum::<f32>() + r[7];
    assert!((logit(&next) - logit(&r) + 0.2).abs() < 1e-5);
    // A zero or non-finite step changes nothing.
    assert!(readout_step(&r, &x, 1, 0.0, 0.1).is_none());
    assert!(readout_step(&r, &x, 1, 0.5, 0.0).is_none());
    assert!(readout_step(&r, &x, 1, f32::NAN, 0.1).is_none());
    assert!(readout_step(&r, &x, 1, 1e38, 1e3).is_none());
    assert!(readout_step(&r, &x, 5, 0.5, 0.1).is_none());
}

/// `forward_projected` from the first row and the other rows' `W₂ x_t` (as a full forward left
/// them) is the same computation, bit for bit, and the backward needs only the first row then.
#[test]
fn forward_projected_is_forward_bit_for_bit() {
    let c = case(11);
    let th: Vec<f32> = c.theta.iter().map(|&x| x as f32).collect();
    let (a, bt, r): (Vec<f32>, Vec<f32>, Vec<f32>) = (
        c.a.iter().map(|&x| x as f32).collect(),
        c.bt.iter().map(|&x| x as f32).collect(),
        c.r.iter().map(|&x| x as f32).collect(),
    );
    let seq: Vec<f32> = c.seq.iter().map(|&x| x as f32).collect();
    let m = HeadMicro {
        a: &a,
        bt: &bt,
        rank: RANK,
        scale: SCALE as f32,
        readout: &r,
    };
    let (l, rw) = (c.l, c.l.rank_w);
    let mut full = Cache::default();
    forward(&l, &th, Some(m), &seq, &mut full);
    let rows = full.p[rw..].to_vec();
    let mut fast = Cache::default();
    forward_projected(&l, &th, Some(m), &seq[..l.input], &rows, &mut fast);
    assert_eq!(fast.steps, full.steps);
    assert_eq!(fast.out, full.out);
    assert_eq!(fast.logits, full.logits);
    assert_eq!(fast.h, full.h);
    let dl = vec![0.3f32, -0.2, 0.1];
    let (mut dx_full, mut dx_fast) = (vec![0.0f32; l.dim], vec![0.0f32; l.dim]);
    let mut s = Scratch::default();
    let no_grad: &mut [f32] = &mut [];
    backward(
        &l,
        &th,
        Some(m),
        &seq,
        &full,
        &dl,
        no_grad,
        Some(&mut dx_full),
        None,
        &mut s,
    );
    backward(
        &l,
        &th,
        Some(m),
        &seq[..l.input],
        &fast,
        &dl,
        &mut [],
        Some(&mut dx_fast),
        None,
        &mut s,
    );
    assert_eq!(dx_full, dx_fast);
    // Different rows would give a different answer: the projections are really read.
    let mut other = rows.clone();
    other[0] += 1.0;
    forward_projected(&l, &th, Some(m), &seq[..l.input], &other, &mut fast);
    assert_ne!(fast.logits, full.logits);
}
