//! Portable fast bodies: 16 independent accumulators in fixed-size chunks. The fixed-size inner loops
//! let LLVM keep the accumulators in vector registers on any target (SSE2 on x86-64, NEON on aarch64)
//! without FMA, so results differ from the scalar reference only by summation order.

const W: usize = 16;

#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; W];
    let mut ca = a.chunks_exact(W);
    let mut cb = b.chunks_exact(W);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..W {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    reduce(&acc) + tail
}

#[inline]
pub fn dot3(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut ab = [0.0f32; 8];
    let mut aa = [0.0f32; 8];
    let mut bb = [0.0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            ab[i] += x[i] * y[i];
            aa[i] += x[i] * x[i];
            bb[i] += y[i] * y[i];
        }
    }
    let (mut t_ab, mut t_aa, mut t_bb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        t_ab += x * y;
        t_aa += x * x;
        t_bb += y * y;
    }
    (reduce(&ab) + t_ab, reduce(&aa) + t_aa, reduce(&bb) + t_bb)
}

#[inline]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    let mut cy = y.chunks_exact_mut(W);
    let mut cx = x.chunks_exact(W);
    for (yc, xc) in (&mut cy).zip(&mut cx) {
        for i in 0..W {
            yc[i] += alpha * xc[i];
        }
    }
    for (yi, xi) in cy.into_remainder().iter_mut().zip(cx.remainder()) {
        *yi += alpha * xi;
    }
}

#[inline]
pub fn scale(alpha: f32, x: &mut [f32]) {
    for xi in x {
        *xi *= alpha;
    }
}

/// Pairwise reduction of an accumulator array (keeps rounding error balanced).
#[inline]
fn reduce(acc: &[f32]) -> f32 {
    let mut v = [0.0f32; W];
    v[..acc.len()].copy_from_slice(acc);
    let mut n = acc.len();
    while n > 1 {
        let h = n / 2;
        for i in 0..h {
            v[i] += v[i + h];
        }
        if n % 2 == 1 {
            v[0] += v[n - 1];
        }
        n = h;
    }
    v[0]
}

#[inline]
pub fn copy(src: &[f32], dst: &mut [f32]) {
    dst.copy_from_slice(src);
}

/// Exponent bits of an `f32`: all ones exactly for ±Inf and NaN.
const EXP: u32 = 0x7f80_0000;

/// OR of "exponent all ones" flags per 16-value chunk, leaving a chunk early only between chunks.
/// `inline(always)` so the AVX2 wrapper in `x86` compiles this same body with wider vectors.
#[inline(always)]
pub fn all_finite(x: &[f32]) -> bool {
    let mut chunks = x.chunks_exact(W);
    for c in &mut chunks {
        let mut bad = 0u32;
        for v in c {
            bad |= ((v.to_bits() & EXP) == EXP) as u32;
        }
        if bad != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|v| v.is_finite())
}

/// libm per element (the vector bodies are in `x86`).
#[inline]
pub fn sigmoid(x: &mut [f32]) {
    for v in x {
        *v = 1.0 / (1.0 + (-*v).exp());
    }
}

#[inline]
pub fn tanh(x: &mut [f32]) {
    for v in x {
        *v = v.tanh();
    }
}

/// `y += Mᵀ x` for narrow rows, rounding as one [`axpy`] per row.
#[inline]
pub fn matvec_t_narrow(m: &[f32], cols: usize, x: &[f32], y: &mut [f32]) {
    for (&xi, row) in x.iter().zip(m.chunks_exact(cols)) {
        if xi != 0.0 {
            for (yj, rj) in y.iter_mut().zip(row) {
                *yj += xi * rj;
            }
        }
    }
}
