//! The hot path allocates nothing: forward, explored forward, reward and gradient step are run under
//! a counting global allocator after a warm-up (the first update allocates the recycled spare
//! snapshot; steady state reuses it).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use sona_lora::{Lora, LoraConfig, TwoTierLoRA};

struct Counting;

thread_local! {
    // Per thread, so tests running in parallel do not count each other's allocations.
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn bump() {
    ALLOCS.with(|c| c.set(c.get() + 1));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

#[test]
fn micro_hot_path_does_not_allocate() {
    let d = 768;
    let lora = Lora::new(LoraConfig::micro(d)).unwrap();
    let x: Vec<f32> = (0..d).map(|i| ((i as f32) * 0.01).sin() / 20.0).collect();
    let e: Vec<f32> = (0..d).map(|i| ((i as f32) * 0.03).cos() * 1e-3).collect();
    let mut y = vec![0.0; d];
    // Warm-up: first step, first exploration.
    lora.update(&x, &e).unwrap();
    let t = lora.forward_explore(&x, &mut y).unwrap();
    lora.reward(t, 0.5).unwrap();

    let n = allocations_during(|| {
        for i in 0..200 {
            lora.forward(&x, &mut y).unwrap();
            let t = lora.forward_explore(&x, &mut y).unwrap();
            lora.reward(t, (i % 10) as f32 / 10.0).unwrap();
            lora.update(&x, &e).unwrap();
        }
    });
    assert_eq!(n, 0, "{n} allocations on the hot path");
}

#[test]
fn two_tier_forward_and_reward_do_not_allocate_between_merges() {
    let d = 256;
    let tt = TwoTierLoRA::new(LoraConfig::base(d), LoraConfig::micro(d), 0).unwrap();
    let x: Vec<f32> = (0..d).map(|i| ((i as f32) * 0.1).cos() / 16.0).collect();
    let mut y = vec![0.0; d];
    let t = tt.forward_explore(&x, &mut y).unwrap();
    tt.reward(t, 0.5).unwrap();
    let n = allocations_during(|| {
        for _ in 0..100 {
            tt.forward(&x, &mut y).unwrap();
            let t = tt.forward_explore(&x, &mut y).unwrap();
            tt.reward(t, 0.7).unwrap();
        }
    });
    assert_eq!(n, 0, "{n} allocations on the two-tier hot path");
}
