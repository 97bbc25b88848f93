//! A two-tier forward running during merges must see base and micro of one generation: every output
//! equals `x + ΔW_b x + ΔW_µ x` for a state the writer actually published, never a new base with the
//! old micro (the micro correction counted twice) or an old base with the restarted micro (lost).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sona_core::SeededRng;
use sona_lora::{LoraConfig, LoraWeights, TwoTierLoRA};

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|t| t.to_bits()).collect()
}

/// The output the stack must give for `x` when its tiers hold `base` and `micro` (same kernels as
/// the forward, so equal bit for bit).
fn expected(x: &[f32], base: &LoraWeights, micro: &LoraWeights) -> Vec<u32> {
    let mut y = x.to_vec();
    base.add_delta(x, &mut y);
    micro.add_delta(x, &mut y);
    bits(&y)
}

#[test]
fn forwards_during_merges_see_one_generation() {
    let d = 512;
    let mut bc = LoraConfig::base(d);
    bc.rank = 4;
    let mut mc = LoraConfig::micro(d);
    mc.optim.lr = 0.05;
    mc.optim.max_norm = f32::INFINITY;
    let tt = Arc::new(TwoTierLoRA::new(bc, mc, 0).unwrap());
    let mut rng = SeededRng::new(11);
    let mut x = vec![0.0; d];
    rng.fill_normal(&mut x, 1.0 / (d as f32).sqrt());
    let mut e = vec![0.0; d];
    rng.fill_normal(&mut e, 1.0);

    let states = Arc::new(Mutex::new(HashSet::new()));
    let record = |tt: &TwoTierLoRA| {
        let (b, m) = (tt.base.snapshot(), tt.micro.snapshot());
        states.lock().unwrap().insert(expected(&x, &b, &m));
    };
    record(&tt);
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (tt, stop, x) = (Arc::clone(&tt), Arc::clone(&stop), x.clone());
            std::thread::spawn(move || {
                let mut seen = HashSet::new();
                let mut y = vec![0.0; x.len()];
                while !stop.load(Ordering::Relaxed) {
                    tt.forward(&x, &mut y).unwrap();
                    seen.insert(bits(&y));
                }
                seen
            })
        })
        .collect();
    for i in 0..400 {
        tt.update(&x, &e).unwrap();
        record(&tt);
        if i % 2 == 1 {
            tt.merge().unwrap();
            record(&tt);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let states = states.lock().unwrap();
    let mut reads = 0;
    for h in readers {
        for y in h.join().unwrap() {
            reads += 1;
            assert!(
                states.contains(&y),
                "a forward returned an output of no published state (torn read)"
            );
        }
    }
    assert!(reads > 10, "readers ran ({reads} distinct outputs)");
}
