//! Memory hints for buffers that grow on a request path.

/// Pages in `v`'s spare capacity (what a `reserve` added beyond `len`) for writing, in one system
/// call, so the appends that fill it take no page fault each: a buffer that grows into fresh
/// memory row by row (the bank's extraction ring) otherwise pays a fault every few kilobytes on
/// the request thread. The pages become resident now rather than at the append that would have
/// touched them, so the resident size runs ahead of `len` by at most the spare capacity.
///
/// Best effort: a no-op off Linux, on kernels before 5.14 (no `MADV_POPULATE_WRITE`) and for a
/// spare part smaller than a page.
pub fn prefault_spare<T>(v: &mut Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        let spare = v.spare_capacity_mut();
        let start = spare.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(spare);
        let page = page_size();
        let (a, b) = (start.next_multiple_of(page), end / page * page);
        if b > a {
            // SAFETY: `[a, b)` is whole pages inside `v`'s own allocation (its spare capacity);
            // MADV_POPULATE_WRITE only faults them in (no content changes: what is there stays,
            // fresh anonymous pages are zero), so no Rust-visible memory is touched. Failure
            // (old kernel: EINVAL) just leaves the faults to the writes.
            unsafe {
                libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_POPULATE_WRITE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

#[cfg(target_os = "linux")]
fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 {
            p as usize
        } else {
            4096
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefaulting_keeps_contents_and_lengths() {
        for (len, extra) in [(0, 0), (3, 1), (1000, 5000), (100_000, 300_000)] {
            let mut v: Vec<f32> = (0..len).map(|i| i as f32).collect();
            v.reserve_exact(extra);
            let cap = v.capacity();
            prefault_spare(&mut v);
            assert_eq!((v.len(), v.capacity()), (len, cap));
            assert!(v.iter().enumerate().all(|(i, &x)| x == i as f32));
            v.extend((0..extra).map(|i| -(i as f32)));
            assert_eq!(v.len(), len + extra);
        }
    }
}
