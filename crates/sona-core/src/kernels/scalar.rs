//! Reference bodies: one accumulator, natural order. Tests compare every fast path against these.

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut s = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        s += (*x as f64) * (*y as f64);
    }
    s as f32
}

pub fn dot3(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
    (dot(a, b), dot(a, a), dot(b, b))
}

pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

pub fn scale(alpha: f32, x: &mut [f32]) {
    for xi in x {
        *xi *= alpha;
    }
}

pub fn matvec(m: &[f32], rows: usize, cols: usize, x: &[f32], y: &mut [f32]) {
    for i in 0..rows {
        y[i] = dot(&m[i * cols..(i + 1) * cols], x);
    }
}

pub fn matvec_t(m: &[f32], rows: usize, cols: usize, x: &[f32], y: &mut [f32]) {
    for j in 0..cols {
        let mut s = 0.0f64;
        for i in 0..rows {
            s += m[i * cols + j] as f64 * x[i] as f64;
        }
        y[j] = s as f32;
    }
}

pub fn rank_update(
    m: &mut [f32],
    rows: usize,
    cols: usize,
    alpha: f32,
    u: &[f32],
    v: &[f32],
    r: usize,
) {
    for i in 0..rows {
        for j in 0..cols {
            let mut s = 0.0f64;
            for k in 0..r {
                s += u[k * rows + i] as f64 * v[k * cols + j] as f64;
            }
            m[i * cols + j] += alpha * s as f32;
        }
    }
}

pub fn copy(src: &[f32], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = *s;
    }
}

pub fn sigmoid(x: &mut [f32]) {
    for v in x {
        *v = (1.0 / (1.0 + (-(*v as f64)).exp())) as f32;
    }
}

pub fn tanh(x: &mut [f32]) {
    for v in x {
        *v = (*v as f64).tanh() as f32;
    }
}
