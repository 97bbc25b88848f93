//! The integration proxy Φ (design §8): the algebraic connectivity λ₂ of the memory graph's
//! normalized Laplacian `L = I − D^{-1/2} W D^{-1/2}` (isolated nodes get `L_ii = 0`).
//!
//! λ₂ is 0 exactly when the graph is disconnected and rises as its parts are linked more strongly
//! (at most `n / (n − 1)`, reached by the complete graph). It is a diagnostic of how integrated the
//! pattern memory is — not a measure of consciousness — and nothing is gated on it.
//!
//! Connectivity is decided first (union-find), so a disconnected graph gives exactly 0 with no
//! eigen-solve. Up to [`DENSE_MAX`] nodes λ₂ comes from `nalgebra`'s dense symmetric eigen-solver; above
//! that, from power iteration on `2I − L` deflated against the known null vector `D^{1/2} 1`
//! (sparse, O(edges) per iteration; its Rayleigh quotient is accurate to the square of the
//! iteration's error, enough for a diagnostic).

use std::collections::HashMap;

use nalgebra::DMatrix;
use sona_core::{Result, SonaError};

/// Largest graph solved densely.
pub const DENSE_MAX: usize = 1024;

/// Power iterations for graphs above [`DENSE_MAX`].
const POWER_ITERS: usize = 3000;

/// Φ of a graph over `nodes` (ids) with undirected weighted `edges` between them (weights ≥ 0;
/// repeated edges add up; self-loops are ignored).
pub fn phi(nodes: &[u64], edges: &[(u64, u64, f32)]) -> Result<f64> {
    let index: HashMap<u64, usize> = nodes.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    if index.len() != nodes.len() {
        return Err(SonaError::invalid("node ids must be unique"));
    }
    let mut mapped = Vec::with_capacity(edges.len());
    for &(a, b, w) in edges {
        let (Some(&i), Some(&j)) = (index.get(&a), index.get(&b)) else {
            return Err(SonaError::invalid(format!(
                "edge ({a}, {b}) names a node not in the graph"
            )));
        };
        mapped.push((i, j, f64::from(w)));
    }
    algebraic_connectivity(nodes.len(), &mapped)
}

/// λ₂ of the normalized Laplacian of the graph on `0..n` with `edges` `(i, j, w)`.
pub fn algebraic_connectivity(n: usize, edges: &[(usize, usize, f64)]) -> Result<f64> {
    let mut adj: Vec<Vec<(usize, f64)>> = vec![Vec::new(); n];
    for &(i, j, w) in edges {
        if i >= n || j >= n {
            return Err(SonaError::invalid(format!(
                "edge ({i}, {j}) outside {n} nodes"
            )));
        }
        if !(w.is_finite() && w >= 0.0) {
            return Err(SonaError::invalid(format!(
                "edge weight must be finite and ≥ 0, got {w}"
            )));
        }
        if i != j && w > 0.0 {
            adj[i].push((j, w));
            adj[j].push((i, w));
        }
    }
    if n < 2 || !connected(&adj) {
        return Ok(0.0);
    }
    let deg: Vec<f64> = adj.iter().map(|a| a.iter().map(|e| e.1).sum()).collect();
    let lambda = if n <= DENSE_MAX {
        dense_lambda2(&adj, &deg)?
    } else {
        power_lambda2(&adj, &deg)
    };
    Ok(lambda.clamp(0.0, 2.0))
}

fn connected(adj: &[Vec<(usize, f64)>]) -> bool {
    let mut seen = vec![false; adj.len()];
    let mut stack = vec![0];
    seen[0] = true;
    let mut count = 1;
    while let Some(i) = stack.pop() {
        for &(j, _) in &adj[i] {
            if !seen[j] {
                seen[j] = true;
                count += 1;
                stack.push(j);
            }
        }
    }
    count == adj.len()
}

fn dense_lambda2(adj: &[Vec<(usize, f64)>], deg: &[f64]) -> Result<f64> {
    let n = adj.len();
    let mut l = DMatrix::<f64>::identity(n, n);
    for (i, row) in adj.iter().enumerate() {
        for &(j, w) in row {
            l[(i, j)] -= w / (deg[i] * deg[j]).sqrt();
        }
    }
    let mut ev: Vec<f64> = l.symmetric_eigenvalues().iter().copied().collect();
    if ev.iter().any(|v| !v.is_finite()) {
        return Err(SonaError::Numerical(
            "eigen-solver returned non-finite values".into(),
        ));
    }
    ev.sort_by(f64::total_cmp);
    Ok(ev[1])
}

/// `y = (2I − L) x = x + D^{-1/2} W D^{-1/2} x`.
fn apply_shifted(adj: &[Vec<(usize, f64)>], inv_sqrt: &[f64], x: &[f64], y: &mut [f64]) {
    for (i, row) in adj.iter().enumerate() {
        let s: f64 = row.iter().map(|&(j, w)| w * inv_sqrt[j] * x[j]).sum();
        y[i] = x[i] + inv_sqrt[i] * s;
    }
}

fn power_lambda2(adj: &[Vec<(usize, f64)>], deg: &[f64]) -> f64 {
    let n = adj.len();
    let inv_sqrt: Vec<f64> = deg.iter().map(|d| 1.0 / d.sqrt()).collect();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let mut v1: Vec<f64> = deg.iter().map(|d| d.sqrt()).collect();
    let n1 = norm(&v1);
    v1.iter_mut().for_each(|x| *x /= n1);
    let deflate = |x: &mut [f64]| {
        let c: f64 = x.iter().zip(&v1).map(|(a, b)| a * b).sum();
        x.iter_mut().zip(&v1).for_each(|(a, b)| *a -= c * b);
    };
    // A fixed, non-symmetric start so the iteration is reproducible.
    let mut x: Vec<f64> = (0..n)
        .map(|i| ((i * 7919) % 1013) as f64 / 1013.0 - 0.5)
        .collect();
    let mut y = vec![0.0; n];
    let mut mu = 0.0;
    for _ in 0..POWER_ITERS {
        deflate(&mut x);
        let nx = norm(&x);
        if nx == 0.0 {
            break;
        }
        x.iter_mut().for_each(|a| *a /= nx);
        apply_shifted(adj, &inv_sqrt, &x, &mut y);
        let next: f64 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
        std::mem::swap(&mut x, &mut y);
        if (next - mu).abs() < 1e-12 {
            mu = next;
            break;
        }
        mu = next;
    }
    2.0 - mu
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cycle(n: usize) -> Vec<(usize, usize, f64)> {
        (0..n).map(|i| (i, (i + 1) % n, 1.0)).collect()
    }

    #[test]
    fn closed_forms() {
        // Complete graph: λ₂ = n / (n − 1).
        let n = 6;
        let k: Vec<_> = (0..n)
            .flat_map(|i| (i + 1..n).map(move |j| (i, j, 1.0)))
            .collect();
        let l = algebraic_connectivity(n, &k).unwrap();
        assert!((l - 6.0 / 5.0).abs() < 1e-10, "{l}");
        // Cycle: λ₂ = 1 − cos(2π / n).
        for n in [5, 12, 40] {
            let want = 1.0 - (2.0 * std::f64::consts::PI / n as f64).cos();
            let got = algebraic_connectivity(n, &cycle(n)).unwrap();
            assert!((got - want).abs() < 1e-10, "n={n}: {got} vs {want}");
        }
    }

    #[test]
    fn zero_when_disconnected_and_rising_when_linked() {
        // Two triangles: disconnected → 0; one weak link → > 0; a stronger link → larger.
        let mut e = vec![
            (0, 1, 1.0),
            (1, 2, 1.0),
            (0, 2, 1.0),
            (3, 4, 1.0),
            (4, 5, 1.0),
            (3, 5, 1.0),
        ];
        assert_eq!(algebraic_connectivity(6, &e).unwrap(), 0.0);
        e.push((2, 3, 0.1));
        let weak = algebraic_connectivity(6, &e).unwrap();
        e.pop();
        e.push((2, 3, 1.0));
        let strong = algebraic_connectivity(6, &e).unwrap();
        assert!(weak > 0.0 && strong > weak, "{weak} {strong}");
        // An isolated node disconnects the graph.
        assert_eq!(algebraic_connectivity(7, &e).unwrap(), 0.0);
        assert_eq!(algebraic_connectivity(1, &[]).unwrap(), 0.0);
        assert_eq!(algebraic_connectivity(0, &[]).unwrap(), 0.0);
    }

    #[test]
    fn power_iteration_matches_the_dense_solver() {
        // A connected random-ish graph: a cycle plus chords with varied weights.
        let n = 300;
        let mut e = cycle(n);
        for i in 0..n {
            e.push((i, (i * 37 + 11) % n, 0.2 + (i % 7) as f64 / 10.0));
        }
        let mut adj: Vec<Vec<(usize, f64)>> = vec![Vec::new(); n];
        for &(i, j, w) in &e {
            if i != j {
                adj[i].push((j, w));
                adj[j].push((i, w));
            }
        }
        let deg: Vec<f64> = adj.iter().map(|a| a.iter().map(|x| x.1).sum()).collect();
        let dense = dense_lambda2(&adj, &deg).unwrap();
        let power = power_lambda2(&adj, &deg);
        assert!(
            (dense - power).abs() < 1e-3 * dense.max(1e-3),
            "{dense} vs {power}"
        );
    }

    #[test]
    fn ids_and_bad_edges() {
        let v = phi(&[10, 20, 30], &[(10, 20, 1.0), (20, 30, 1.0)]).unwrap();
        // Path of 3: normalized Laplacian eigenvalues 0, 1, 2.
        assert!((v - 1.0).abs() < 1e-10);
        assert!(phi(&[10, 20], &[(10, 99, 1.0)]).is_err());
        assert!(phi(&[10, 10], &[]).is_err());
        assert!(phi(&[10, 20], &[(10, 20, f32::NAN)]).is_err());
        assert!(phi(&[10, 20], &[(10, 20, -1.0)]).is_err());
        assert!(algebraic_connectivity(2, &[(0, 2, 1.0)]).is_err());
    }
}
