//! Regression tests for issue 9 on the EWC++ components: huge sizes are `Config` errors (never an
//! abort), finite inputs never produce a non-finite stored value (`Numerical` instead, state
//! unchanged), and loaders validate every field.

use sona_core::{Checkpoint, SonaError};
use sona_ewc::{
    BoundaryConfig, EwcConfig, EwcPlusPlus, GradientProjection, OnlineFisher, TaskBoundaryDetector,
};

const HUGE: usize = 1 << 40;

fn is_config<T>(r: Result<T, SonaError>) -> bool {
    matches!(r, Err(SonaError::Config(_)))
}

#[test]
fn huge_sizes_are_config_errors() {
    for n in [HUGE, 1 << 63, usize::MAX] {
        assert!(is_config(OnlineFisher::new(n, 0.9, 0.0)));
        assert!(is_config(EwcPlusPlus::new(n, EwcConfig::default())));
        assert!(is_config(GradientProjection::new(n, 1)));
        assert!(is_config(TaskBoundaryDetector::new(
            n,
            0,
            BoundaryConfig::default()
        )));
        assert!(is_config(TaskBoundaryDetector::new(
            4,
            n,
            BoundaryConfig::default()
        )));
        for cfg in [
            BoundaryConfig {
                window: n,
                ..Default::default()
            },
            BoundaryConfig {
                reference: n,
                ..Default::default()
            },
            BoundaryConfig {
                consecutive: n,
                ..Default::default()
            },
        ] {
            assert!(is_config(TaskBoundaryDetector::new(4, 0, cfg)));
        }
    }
    // Each size is fine alone but the product is not.
    assert!(is_config(GradientProjection::new(1 << 30, 1 << 20)));
    assert!(is_config(TaskBoundaryDetector::new(
        1 << 16,
        0,
        BoundaryConfig {
            window: 1 << 20,
            reference: 1 << 20,
            ..Default::default()
        }
    )));
    // PCA mode bounds the reference window (its Gram matrix is n_b × n_b).
    assert!(is_config(TaskBoundaryDetector::new(
        64,
        0,
        BoundaryConfig {
            reference: 100_000,
            components: 4,
            ..Default::default()
        }
    )));
}

#[test]
fn fisher_refuses_gradients_whose_square_overflows_and_stays_finite() {
    let mut f = OnlineFisher::new(3, 0.999, 0.0).unwrap();
    f.update(&[1.0, 2.0, 3.0]).unwrap();
    let before = f.clone();
    assert!(matches!(
        f.update(&[1e20, 0.0, 0.0]),
        Err(SonaError::Numerical(_))
    ));
    assert!(matches!(
        f.update_batch(&[0.0, 0.0, 0.0, 0.0, -1e20, 0.0], 2),
        Err(SonaError::Numerical(_))
    ));
    assert_eq!(f, before);
    // The largest accepted gradient keeps everything finite, including the bias correction
    // (×1000 after one sample at γ = 0.999, which overflowed in f32).
    let mut g = OnlineFisher::new(2, 0.999, 0.0).unwrap();
    g.update(&[sona_ewc::fisher::MAX_GRAD, -sona_ewc::fisher::MAX_GRAD])
        .unwrap();
    for _ in 0..3 {
        g.update_batch(&[sona_ewc::fisher::MAX_GRAD; 4], 2).unwrap();
    }
    let e = g.estimate().unwrap();
    assert!(e.iter().all(|x| x.is_finite() && *x > 9e37), "{e:?}");
    assert!(g.raw().iter().all(|x| x.is_finite()));

    let mut ewc = EwcPlusPlus::new(2, EwcConfig::default()).unwrap();
    assert!(matches!(
        ewc.update_fisher(&[1e20, 1.0]),
        Err(SonaError::Numerical(_))
    ));
    ewc.update_fisher(&[1e19, 1.0]).unwrap();
    ewc.complete_task(&[0.0, 0.0], None, 1.0).unwrap();
    assert!(ewc.fisher().iter().all(|x| x.is_finite()));
}

#[test]
fn consolidation_never_stores_non_finite_values() {
    let mut ewc = EwcPlusPlus::new(2, EwcConfig::default()).unwrap();
    ewc.complete_task(&[-3e38, 0.0], Some(&[1.0, 1.0]), 1.0)
        .unwrap();
    let before = ewc.clone();
    // θ* − θ̄* = 6e38 overflows.
    assert!(matches!(
        ewc.complete_task(&[3e38, 0.0], Some(&[1.0, 1.0]), 1.0),
        Err(SonaError::Numerical(_))
    ));
    // F̄ overflows.
    assert!(matches!(
        ewc.complete_task(&[0.0, 0.0], Some(&[3e38, 1.0]), 3.0),
        Err(SonaError::Numerical(_))
    ));
    assert_eq!(ewc, before);
    // The in-place gradient reports an overflow instead of returning Inf.
    let mut g = vec![0.0, 0.0];
    assert!(matches!(
        ewc.apply(&[3e38, 0.0], &mut g),
        Err(SonaError::Numerical(_))
    ));
    let mut out = vec![0.0; 2];
    assert!(matches!(
        ewc.apply_into(&[3e38, 0.0], &[0.0, 0.0], &mut out),
        Err(SonaError::Numerical(_))
    ));
    assert!(matches!(
        ewc.penalty(&[3e38, 0.0]),
        Err(SonaError::Numerical(_))
    ));
    assert_eq!(ewc, before);
}

#[test]
fn projection_handles_huge_and_tiny_matrices() {
    let p = 64;
    for scale in [1e38f32, 1e-40, 1.0] {
        let mut m = vec![0.0f32; 2 * p];
        m[0] = scale;
        m[1] = scale;
        m[p + 2] = -scale;
        let mut gpm = GradientProjection::new(p, 8).unwrap();
        assert_eq!(gpm.add(&m, 2, 0.999).unwrap(), 2, "scale {scale}");
        assert!(gpm.basis().iter().all(|x| x.is_finite()));
        let b = gpm.basis();
        let n0: f32 = b[..p].iter().map(|x| x * x).sum();
        assert!((n0 - 1.0).abs() < 1e-5);
        let mut g = vec![1.0f32; p];
        gpm.project(&mut g).unwrap();
        assert!(g[0].abs() < 1e-5 && g[2].abs() < 1e-5 && (g[5] - 1.0).abs() < 1e-6);
    }
    // A gradient whose coefficients overflow is refused, not returned as Inf.
    let mut gpm = GradientProjection::new(4, 1).unwrap();
    gpm.add(&[1.0, 1.0, 1.0, 1.0], 1, 1.0).unwrap();
    let mut g = vec![3e38f32; 4];
    assert!(matches!(gpm.project(&mut g), Err(SonaError::Numerical(_))));
}

#[test]
fn detector_refuses_inputs_its_statistics_cannot_hold() {
    for components in [0, 4] {
        let cfg = BoundaryConfig {
            window: 10,
            reference: 20,
            components,
            ..Default::default()
        };
        let mut det = TaskBoundaryDetector::new(8, 0, cfg).unwrap();
        assert!(matches!(
            det.observe(&[1e20; 8], None),
            Err(SonaError::Numerical(_))
        ));
        let mut xs = vec![0.5f32; 8 * 40];
        xs[8 * 39] = -2e15;
        assert!(matches!(
            det.observe_batch(&xs, 40),
            Err(SonaError::Numerical(_))
        ));
        assert_eq!(det.observed(), 0);
        // The largest accepted magnitude keeps every statistic finite, in both modes.
        let mut rng = sona_core::SeededRng::new(1);
        let mut xs = vec![0.0f32; 8 * 100];
        rng.fill_normal(&mut xs, 1.0);
        xs.iter_mut().for_each(|x| *x = x.signum() * 1e15);
        det.observe_batch(&xs, 100).unwrap();
        let (stat, thr) = det.last_check();
        assert!(stat.is_finite() && thr.is_finite(), "{stat} {thr}");
    }
}

fn ewc_sample() -> EwcPlusPlus {
    let mut ewc = EwcPlusPlus::new(
        4,
        EwcConfig {
            lambda: 2.0,
            decay: 0.9,
            ..Default::default()
        },
    )
    .unwrap();
    ewc.complete_task(&[1.0, 2.0, 3.0, 4.0], Some(&[0.5; 4]), 1.0)
        .unwrap();
    ewc.update_fisher(&[1.0, 0.0, 2.0, 1.0]).unwrap();
    ewc
}

/// One change to a checkpoint.
type Edit = dyn Fn(&mut Checkpoint);

fn refused(ck: &Checkpoint) -> bool {
    matches!(
        EwcPlusPlus::from_checkpoint(ck),
        Err(SonaError::Checkpoint(_))
    )
}

#[test]
fn ewc_loader_validates_every_field() {
    let ewc = ewc_sample();
    let good = ewc.to_checkpoint().unwrap();
    assert_eq!(EwcPlusPlus::from_checkpoint(&good).unwrap(), ewc);
    let edit = |f: &dyn Fn(&mut Checkpoint)| {
        let mut ck = good.clone();
        f(&mut ck);
        // Through the real writer and parser, so the checksum is valid.
        let bytes = ck.to_bytes().unwrap();
        Checkpoint::from_bytes(&bytes, "ewc", 1).unwrap()
    };
    let cases: Vec<Box<Edit>> = vec![
        Box::new(|c| c.set_meta("param_count", &(1u64 << 40)).unwrap()),
        Box::new(|c| c.set_meta("param_count", &0u64).unwrap()),
        Box::new(|c| c.set_meta("param_count", &-1i64).unwrap()),
        Box::new(|c| c.set_meta("param_count", &"4").unwrap()),
        Box::new(|c| c.set_meta("gamma", &1.0f32).unwrap()),
        Box::new(|c| c.set_meta("gamma", &-0.5f32).unwrap()),
        Box::new(|c| c.set_meta("decay", &0.0f32).unwrap()),
        Box::new(|c| c.set_meta("decay", &2.0f32).unwrap()),
        Box::new(|c| c.set_meta("lambda", &-1.0f32).unwrap()),
        Box::new(|c| c.set_meta("lambda_max", &0.5f32).unwrap()),
        Box::new(|c| c.set_meta("floor", &-1.0f32).unwrap()),
        Box::new(|c| c.set_meta("lambda", &1e39f64).unwrap()),
        Box::new(|c| c.put_f32("fisher", &[4], &[1.0, f32::INFINITY, 0.0, 0.0])),
        Box::new(|c| c.put_f32("theta_star", &[4], &[1.0, f32::NAN, 0.0, 0.0])),
        Box::new(|c| c.put_f32("online_raw", &[4], &[-1.0, 0.0, 0.0, 0.0])),
        Box::new(|c| c.put_f32("online_raw", &[4], &[3e38, 0.0, 0.0, 0.0])),
        Box::new(|c| c.put_f32("fisher", &[2, 2], &[1.0; 4])),
        Box::new(|c| c.put_f32("theta_star", &[5], &[1.0; 5])),
        Box::new(|c| c.put_u64("counts", &[1])),
        Box::new(|c| c.put_u64("counts", &[1, 2, 3])),
        // Values with no task / no sample behind them.
        Box::new(|c| c.put_u64("counts", &[0, 1])),
        Box::new(|c| c.put_u64("counts", &[1, 0])),
        // Raw EMA 1e38 after one sample at γ = 0.999 corrects to 1e41: not representable.
        Box::new(|c| {
            c.put_f32("online_raw", &[4], &[1e38, 0.0, 0.0, 0.0]);
            c.put_u64("counts", &[1, 1]);
        }),
    ];
    for (i, case) in cases.iter().enumerate() {
        assert!(refused(&edit(&**case)), "case {i} loaded");
    }
    // Counters at their limits load and keep working (no overflow panic).
    let ck = edit(&|c| c.put_u64("counts", &[u64::MAX, u64::MAX]));
    let mut e = EwcPlusPlus::from_checkpoint(&ck).unwrap();
    e.update_fisher(&[1.0; 4]).unwrap();
    e.complete_task(&[0.0; 4], None, 1.0).unwrap();
    assert_eq!(e.task_count(), u64::MAX);
}
