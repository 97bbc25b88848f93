//! The scalar type the router is written over: `f32` on the request path (SIMD kernels of
//! `sona-core`), `f64` in the finite-difference gradient check (so the check can demand 1e-3).

use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

/// A float the router can run in.
pub trait Real:
    Copy
    + Debug
    + Default
    + PartialOrd
    + Send
    + Sync
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    fn of(x: f64) -> Self;
    fn f64(self) -> f64;
    fn exp(self) -> Self;
    fn tanh(self) -> Self;
    fn ln_1p(self) -> Self;
    /// `Σ a_i b_i`.
    fn dot(a: &[Self], b: &[Self]) -> Self;
    /// `y += α x`.
    fn axpy(alpha: Self, x: &[Self], y: &mut [Self]);
    /// `y = M x` for a row-major `rows × cols` matrix.
    fn matvec(m: &[Self], rows: usize, cols: usize, x: &[Self], y: &mut [Self]) {
        for (r, yr) in y.iter_mut().enumerate().take(rows) {
            *yr = Self::dot(&m[r * cols..(r + 1) * cols], x);
        }
    }
    /// `y = Mᵀ x` for a row-major `rows × cols` matrix (`y` has `cols` values).
    fn matvec_t(m: &[Self], rows: usize, cols: usize, x: &[Self], y: &mut [Self]) {
        y.fill(Self::ZERO);
        for r in 0..rows {
            if x[r] != Self::ZERO {
                Self::axpy(x[r], &m[r * cols..(r + 1) * cols], y);
            }
        }
    }
    /// `M += u vᵀ` (`M` is `u.len() × v.len()`, row-major).
    fn outer_add(m: &mut [Self], u: &[Self], v: &[Self]) {
        let c = v.len();
        for (r, &ur) in u.iter().enumerate() {
            if ur != Self::ZERO {
                Self::axpy(ur, v, &mut m[r * c..(r + 1) * c]);
            }
        }
    }
    fn sigmoid(self) -> Self {
        Self::ONE / (Self::ONE + (-self).exp())
    }
    /// [`Real::sigmoid`] of every element, in place.
    fn sigmoid_all(xs: &mut [Self]) {
        for x in xs {
            *x = x.sigmoid();
        }
    }
    /// [`Real::tanh`] of every element, in place.
    fn tanh_all(xs: &mut [Self]) {
        for x in xs {
            *x = x.tanh();
        }
    }
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    #[inline]
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline]
    fn f64(self) -> f64 {
        self as f64
    }
    #[inline]
    fn exp(self) -> Self {
        f32::exp(self)
    }
    #[inline]
    fn tanh(self) -> Self {
        f32::tanh(self)
    }
    #[inline]
    fn ln_1p(self) -> Self {
        f32::ln_1p(self)
    }
    #[inline]
    fn dot(a: &[Self], b: &[Self]) -> Self {
        sona_core::kernels::dot(a, b)
    }
    #[inline]
    fn axpy(alpha: Self, x: &[Self], y: &mut [Self]) {
        sona_core::kernels::axpy(alpha, x, y)
    }
    #[inline]
    fn matvec(m: &[Self], rows: usize, cols: usize, x: &[Self], y: &mut [Self]) {
        sona_core::kernels::matvec(m, rows, cols, x, y)
    }
    #[inline]
    fn matvec_t(m: &[Self], rows: usize, cols: usize, x: &[Self], y: &mut [Self]) {
        sona_core::kernels::matvec_t(m, rows, cols, x, y)
    }
    /// Vector polynomial bodies (within 4 ulp of libm's) where AVX2 is available: the router's
    /// gates are 2 × H activations per step, a third of its forward in libm calls.
    #[inline]
    fn sigmoid_all(xs: &mut [Self]) {
        sona_core::kernels::sigmoid(xs)
    }
    #[inline]
    fn tanh_all(xs: &mut [Self]) {
        sona_core::kernels::tanh(xs)
    }
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn of(x: f64) -> Self {
        x
    }
    fn f64(self) -> f64 {
        self
    }
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn tanh(self) -> Self {
        f64::tanh(self)
    }
    fn ln_1p(self) -> Self {
        f64::ln_1p(self)
    }
    fn dot(a: &[Self], b: &[Self]) -> Self {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }
    fn axpy(alpha: Self, x: &[Self], y: &mut [Self]) {
        for (yi, xi) in y.iter_mut().zip(x) {
            *yi += alpha * xi;
        }
    }
}
