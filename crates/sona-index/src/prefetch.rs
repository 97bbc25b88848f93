//! A cache hint shared by the indexes: start loading the rows a search is about to score.

/// Asks the CPU to start loading every 64-byte cache line of `v` (a vector, a code or a sign code
/// we are about to score). Only a hint: it never faults and changes no result.
#[inline(always)]
pub fn prefetch_lines<T>(v: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = v.as_ptr() as *const i8;
        let bytes = std::mem::size_of_val(v);
        let mut off = 0;
        while off < bytes {
            // SAFETY: `off < bytes` keeps the address inside `v`; a prefetch never faults, and SSE
            // is part of the x86-64 baseline.
            #[allow(unused_unsafe)]
            unsafe {
                _mm_prefetch(p.add(off), _MM_HINT_T0)
            };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}
