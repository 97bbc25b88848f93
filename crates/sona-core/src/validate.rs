//! Input checks shared by every public entry point.
//!
//! Validation happens before any state is touched, so a rejected call leaves state unchanged.

use crate::error::{Result, SonaError};

/// Fails with [`SonaError::Dimension`] unless `v.len() == expected`.
#[inline]
pub fn check_len(what: &str, v: &[f32], expected: usize) -> Result<()> {
    if v.len() == expected {
        Ok(())
    } else {
        Err(SonaError::len_mismatch(what, expected, v.len()))
    }
}

/// Fails with [`SonaError::NonFinite`] if any element is NaN or ±Inf.
#[inline]
pub fn check_finite(what: &str, v: &[f32]) -> Result<()> {
    if crate::kernels::all_finite(v) {
        return Ok(());
    }
    match v.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(index) => Err(SonaError::NonFinite {
            what: what.to_string(),
            index,
        }),
    }
}

/// Length and finiteness together: the usual check for a vector argument.
#[inline]
pub fn check_vec(what: &str, v: &[f32], expected: usize) -> Result<()> {
    check_len(what, v, expected)?;
    check_finite(what, v)
}

/// A row-major matrix of `rows × cols` stored in `m`.
#[inline]
pub fn check_matrix(what: &str, m: &[f32], rows: usize, cols: usize) -> Result<()> {
    if m.len() != rows * cols {
        return Err(SonaError::Dimension {
            what: what.to_string(),
            expected: format!("{rows}x{cols} ({} values)", rows * cols),
            got: format!("{} values", m.len()),
        });
    }
    check_finite(what, m)
}

/// A reward must be a finite number in `[0, 1]` (design §2).
#[inline]
pub fn check_reward(r: f32) -> Result<()> {
    if r.is_finite() && (0.0..=1.0).contains(&r) {
        Ok(())
    } else {
        Err(SonaError::invalid(format!(
            "reward must be in [0, 1], got {r}"
        )))
    }
}

/// A scalar that must be finite and within `[lo, hi]`.
#[inline]
pub fn check_range(what: &str, x: f64, lo: f64, hi: f64) -> Result<()> {
    if x.is_finite() && x >= lo && x <= hi {
        Ok(())
    } else {
        Err(SonaError::Config(format!(
            "{what} must be in [{lo}, {hi}], got {x}"
        )))
    }
}

/// Largest vector dimension any component accepts (embeddings are at most a few thousand wide;
/// this bound keeps `dim × rank × …` products far from overflow).
pub const MAX_DIM: usize = 1 << 16;

/// Largest number of elements of any single user-sized buffer (2³¹ floats = 8 GiB).
pub const MAX_ELEMENTS: usize = 1 << 31;

/// A size argument (dimension, window, capacity) must lie in `[lo, hi]`: a clear
/// [`SonaError::Config`] instead of an allocation failure or an overflow later.
#[inline]
pub fn check_size(what: &str, value: usize, lo: usize, hi: usize) -> Result<usize> {
    if (lo..=hi).contains(&value) {
        Ok(value)
    } else {
        Err(SonaError::Config(format!(
            "{what} must be in [{lo}, {hi}], got {value}"
        )))
    }
}

/// The product of `dims` as an element count, or a [`SonaError::Config`] when it overflows or
/// exceeds [`MAX_ELEMENTS`].
pub fn element_count(what: &str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| {
            SonaError::Config(format!(
                "{what}: {dims:?} is more than {MAX_ELEMENTS} elements"
            ))
        })
}

/// A vector of `n` copies of `value`, allocated fallibly: an allocation the machine cannot
/// satisfy is a [`SonaError::Config`], never an abort.
pub fn try_filled<T: Clone>(what: &str, n: usize, value: T) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| alloc_failed::<T>(what, n))?;
    v.resize(n, value);
    Ok(v)
}

/// The error of an allocation of `n` elements of `T` the machine cannot satisfy.
fn alloc_failed<T>(what: &str, n: usize) -> SonaError {
    SonaError::Config(format!(
        "{what}: cannot allocate {n} elements of {} bytes",
        std::mem::size_of::<T>()
    ))
}

/// `n` zeros, allocated fallibly (see [`try_filled`]) and zeroed by the allocator: large buffers
/// come from the OS as zero pages that are committed only when written, so a size near
/// [`MAX_ELEMENTS`] (8 GiB) is instant rather than seconds of page faults committing it all at
/// once (and an out-of-memory kill when several such buffers are made).
pub fn try_zeros(what: &str, n: usize) -> Result<Vec<f32>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let fail = || alloc_failed::<f32>(what, n);
    let layout = std::alloc::Layout::array::<f32>(n).map_err(|_| fail())?;
    // SAFETY: `layout` has a non-zero size (n > 0). A non-null result is an allocation of
    // `layout` by the global allocator, zero-filled, which is `n` valid `f32` zeros; `Vec` then
    // owns it with the same layout (capacity n, element f32), as `from_raw_parts` requires.
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout).cast::<f32>();
        if ptr.is_null() {
            return Err(fail());
        }
        Ok(Vec::from_raw_parts(ptr, n, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_bounded_and_allocation_is_fallible() {
        assert_eq!(check_size("dim", 768, 1, MAX_DIM).unwrap(), 768);
        assert!(matches!(
            check_size("dim", 1 << 40, 1, MAX_DIM),
            Err(SonaError::Config(_))
        ));
        assert!(check_size("dim", 0, 1, MAX_DIM).is_err());
        assert_eq!(element_count("w", &[3, 4]).unwrap(), 12);
        assert!(element_count("w", &[usize::MAX, 2]).is_err());
        assert!(element_count("w", &[1 << 20, 1 << 20]).is_err());
        assert_eq!(try_zeros("x", 5).unwrap(), vec![0.0; 5]);
        assert_eq!(try_zeros("x", 0).unwrap(), Vec::<f32>::new());
        // The largest allowed buffer is lazily zeroed: instant, and untouched pages cost nothing.
        let t = std::time::Instant::now();
        if let Ok(mut v) = try_zeros("x", MAX_ELEMENTS) {
            assert_eq!(
                (v[0], v[MAX_ELEMENTS - 1], v.len()),
                (0.0, 0.0, MAX_ELEMENTS)
            );
            v[7] = 1.0;
            assert_eq!(v[7], 1.0);
        }
        assert!(t.elapsed().as_secs_f64() < 1.0, "{:?}", t.elapsed());
        assert!(matches!(
            try_filled("x", usize::MAX / 2, 0u64),
            Err(SonaError::Config(_))
        ));
    }

    #[test]
    fn rejects_bad_vectors() {
        assert!(check_vec("x", &[1.0, 2.0], 2).is_ok());
        assert!(matches!(
            check_vec("x", &[1.0], 2),
            Err(SonaError::Dimension { .. })
        ));
        assert!(matches!(
            check_vec("x", &[1.0, f32::NAN], 2),
            Err(SonaError::NonFinite { index: 1, .. })
        ));
        assert!(check_matrix("m", &[0.0; 6], 2, 3).is_ok());
        assert!(check_matrix("m", &[0.0; 5], 2, 3).is_err());
    }

    #[test]
    fn rewards_must_be_in_unit_interval() {
        assert!(check_reward(0.0).is_ok());
        assert!(check_reward(1.0).is_ok());
        assert!(check_reward(1.01).is_err());
        assert!(check_reward(-0.1).is_err());
        assert!(check_reward(f32::NAN).is_err());
    }
}
