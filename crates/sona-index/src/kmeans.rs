//! Seeded spherical k-means on unit vectors: k-means++ seeding, then Lloyd iterations, or mini-batch
//! updates (Sculley 2010) for large inputs.
//!
//! On the unit sphere `‖x − c‖² = 2(1 − x·c)`, so "nearest centre" is "largest inner product" (one
//! batched dot product per point) and the centre of a cluster is its normalised mean.

use sona_core::{kernels, SeededRng};

/// Tuning of one clustering run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KMeansParams {
    pub k: usize,
    /// Lloyd iterations at most.
    pub max_iter: usize,
    /// Stop when at most this fraction of points changed cluster in an iteration.
    pub tol: f64,
    /// k-means++ seeding runs on a uniform subsample of at most this many points: seeding costs
    /// `O(m·k·d)`, and a few thousand points already place seeds in every dense region.
    pub init_sample: usize,
    /// Above this many points, mini-batch updates replace full Lloyd iterations.
    pub minibatch_threshold: usize,
    pub batch_size: usize,
    pub minibatch_iters: usize,
}

impl Default for KMeansParams {
    fn default() -> Self {
        KMeansParams {
            k: 8,
            max_iter: 8,
            tol: 0.002,
            init_sample: 4096,
            minibatch_threshold: 50_000,
            batch_size: 1024,
            minibatch_iters: 100,
        }
    }
}

/// Result: `k` unit centroids (row-major), each point's cluster, and the iterations run.
#[derive(Debug, Clone, PartialEq)]
pub struct Clustering {
    pub k: usize,
    pub centroids: Vec<f32>,
    pub assign: Vec<u32>,
    pub iterations: usize,
}

/// Index of the largest inner product of `x` with the `k` rows of `c`, and that product.
#[inline]
pub(crate) fn nearest(
    c: &[f32],
    k: usize,
    d: usize,
    x: &[f32],
    scratch: &mut [f32],
) -> (usize, f32) {
    kernels::batch_dot(c, k, d, x, &mut scratch[..k]);
    let mut best = (0, f32::NEG_INFINITY);
    for (j, &s) in scratch[..k].iter().enumerate() {
        if s > best.1 {
            best = (j, s);
        }
    }
    best
}

/// `m` of the rows of `points` (row-major, `d` wide) drawn uniformly without replacement (a partial
/// Fisher–Yates shuffle), copied in draw order.
pub(crate) fn subsample(points: &[f32], d: usize, m: usize, rng: &mut SeededRng) -> Vec<f32> {
    let n = points.len() / d;
    let mut idx: Vec<usize> = (0..n).collect();
    for i in 0..m {
        let j = i + rng.below((n - i) as u64) as usize;
        idx.swap(i, j);
    }
    let mut sub = Vec::with_capacity(m * d);
    for &i in &idx[..m] {
        sub.extend_from_slice(&points[i * d..(i + 1) * d]);
    }
    sub
}

/// k-means++ seeding (Arthur & Vassilvitskii 2007) with squared chordal distance `2(1 − cos)`.
fn seed_plus_plus(points: &[f32], n: usize, d: usize, k: usize, rng: &mut SeededRng) -> Vec<f32> {
    let first = rng.below(n as u64) as usize;
    let mut centroids = points[first * d..(first + 1) * d].to_vec();
    let mut best = vec![f32::NEG_INFINITY; n];
    let mut scores = vec![0.0f32; n];
    let mut weights = vec![0.0f64; n];
    let mut last = first;
    for _ in 1..k {
        kernels::batch_dot(points, n, d, &points[last * d..(last + 1) * d], &mut scores);
        for i in 0..n {
            best[i] = best[i].max(scores[i]);
            weights[i] = (2.0 * (1.0 - best[i] as f64)).max(0.0);
        }
        // All points coincide with a seed: weighted_index falls back to uniform, which is harmless.
        last = rng.weighted_index(&weights);
        centroids.extend_from_slice(&points[last * d..(last + 1) * d]);
    }
    centroids
}

/// Normalised sums of the members of each cluster; an empty cluster keeps its old centre.
fn recompute(points: &[f32], d: usize, assign: &[u32], centroids: &mut [f32], k: usize) {
    let mut sums = vec![0.0f32; k * d];
    let mut counts = vec![0usize; k];
    for (i, &a) in assign.iter().enumerate() {
        let a = a as usize;
        kernels::axpy(
            1.0,
            &points[i * d..(i + 1) * d],
            &mut sums[a * d..(a + 1) * d],
        );
        counts[a] += 1;
    }
    for j in 0..k {
        if counts[j] > 0 {
            let s = &mut sums[j * d..(j + 1) * d];
            if kernels::normalize(s) > 0.0 {
                centroids[j * d..(j + 1) * d].copy_from_slice(s);
            }
        }
    }
}

/// Clusters `n` unit vectors (`points`, row-major `n × d`) into `min(k, n)` clusters.
pub fn spherical_kmeans(
    points: &[f32],
    n: usize,
    d: usize,
    params: &KMeansParams,
    rng: &mut SeededRng,
) -> Clustering {
    assert_eq!(points.len(), n * d, "spherical_kmeans: points size");
    let k = params.k.clamp(1, n.max(1));
    if n == 0 {
        return Clustering {
            k: 0,
            centroids: Vec::new(),
            assign: Vec::new(),
            iterations: 0,
        };
    }
    // Seed on a subsample (a uniform partial shuffle) when the input is large.
    let m = n.min(params.init_sample.max(k));
    let mut centroids = if m < n {
        seed_plus_plus(&subsample(points, d, m, rng), m, d, k, rng)
    } else {
        seed_plus_plus(points, n, d, k, rng)
    };

    let mut scratch = vec![0.0f32; k];
    let mut assign = vec![u32::MAX; n];
    let mut iterations = 0;
    if n > params.minibatch_threshold {
        // Mini-batch k-means: per-centre learning rate 1/(points seen by that centre).
        let mut seen = vec![0u64; k];
        let b = params.batch_size.min(n);
        let mut batch = vec![0usize; b];
        let mut near = vec![0usize; b];
        for _ in 0..params.minibatch_iters {
            for slot in batch.iter_mut() {
                *slot = rng.below(n as u64) as usize;
            }
            for (t, &i) in batch.iter().enumerate() {
                near[t] = nearest(&centroids, k, d, &points[i * d..(i + 1) * d], &mut scratch).0;
            }
            for (t, &i) in batch.iter().enumerate() {
                let j = near[t];
                seen[j] += 1;
                let eta = 1.0 / seen[j] as f32;
                let c = &mut centroids[j * d..(j + 1) * d];
                kernels::scale(1.0 - eta, c);
                kernels::axpy(eta, &points[i * d..(i + 1) * d], c);
            }
            for c in centroids.chunks_exact_mut(d) {
                kernels::normalize(c);
            }
            iterations += 1;
        }
        for i in 0..n {
            assign[i] =
                nearest(&centroids, k, d, &points[i * d..(i + 1) * d], &mut scratch).0 as u32;
        }
        recompute(points, d, &assign, &mut centroids, k);
    } else {
        let max_changed = (params.tol * n as f64) as usize;
        let mut sims = vec![0.0f32; n];
        for _ in 0..params.max_iter.max(1) {
            let mut changed = 0usize;
            for i in 0..n {
                let (j, s) = nearest(&centroids, k, d, &points[i * d..(i + 1) * d], &mut scratch);
                sims[i] = s;
                if assign[i] != j as u32 {
                    assign[i] = j as u32;
                    changed += 1;
                }
            }
            iterations += 1;
            // Re-seed empty clusters with the points worst served by their centre.
            let mut counts = vec![0usize; k];
            for &a in &assign {
                counts[a as usize] += 1;
            }
            let empty: Vec<usize> = (0..k).filter(|&j| counts[j] == 0).collect();
            if !empty.is_empty() {
                let worst =
                    kernels::top_k(&sims.iter().map(|s| -s).collect::<Vec<_>>(), empty.len());
                for (&j, &(i, _)) in empty.iter().zip(&worst) {
                    if counts[assign[i] as usize] > 1 {
                        counts[assign[i] as usize] -= 1;
                        assign[i] = j as u32;
                        counts[j] += 1;
                        changed += 1;
                    }
                }
            }
            recompute(points, d, &assign, &mut centroids, k);
            if changed <= max_changed {
                break;
            }
        }
    }
    Clustering {
        k,
        centroids,
        assign,
        iterations,
    }
}

/// Mean resultant length `‖Σx‖ / n` of unit rows `members` of `points` (1 for a singleton).
fn cohesion(points: &[f32], d: usize, members: &[usize], scratch: &mut [f32]) -> f32 {
    scratch.fill(0.0);
    for &i in members {
        kernels::axpy(1.0, &points[i * d..(i + 1) * d], scratch);
    }
    kernels::norm_sq(scratch).sqrt() / members.len().max(1) as f32
}

/// Bias-corrected cohesion: an unbiased estimate of the squared population mean resultant length
/// `ρ∞²` from `n` unit members, `(‖Σx‖² − n) / (n(n − 1))` (`E‖Σx‖² = n + n(n−1)ρ∞²`), returned as
/// `√max(0, ·)`. Unlike the raw `‖Σx‖/n`, it does not rise just because a cluster is small, so two
/// halves of one homogeneous group score the same as the whole.
fn corrected_cohesion(points: &[f32], d: usize, members: &[usize], scratch: &mut [f32]) -> f32 {
    let n = members.len() as f32;
    if n < 2.0 {
        return 1.0;
    }
    let r = cohesion(points, d, members, scratch) * n;
    ((r * r - n) / (n * (n - 1.0))).max(0.0).sqrt()
}

/// Clusters at least this large are also split when their two halves are both much more coherent
/// than the whole (smaller ones only when incoherent: their estimates are too noisy).
const MIN_GAIN_SPLIT: usize = 8;
/// How much more coherent (bias-corrected) both halves must be for a gain split.
const SPLIT_GAIN: f32 = 0.05;

/// Bisecting refinement (Steinbach, Karypis & Kumar 2000). A cluster is split in two with seeded
/// 2-means when its bias-corrected cohesion (see [`corrected_cohesion`]: the mean cosine of members
/// to the centroid, corrected for cluster size) is below `min_cohesion`, or when both halves are more
/// coherent than the whole by at least [`SPLIT_GAIN`] (the cluster is a union of groups, whatever its
/// cohesion). Halves are examined in turn, up to `max_k` clusters in total. Updates `cl.assign` and
/// `cl.k`; returns the number of splits.
///
/// Why: k-means with fewer clusters than the data has groups lumps groups together, and which groups
/// get lumped changes from run to run, so the same traffic would yield different patterns on every
/// extraction. Splitting unions of groups makes the result depend on the data's groups, not on `k`.
/// A trial split costs `O(n_c·d)` per iteration, so the refinement is `O(n·d·depth)`, far below one
/// Lloyd pass over all clusters.
pub fn bisect_incoherent(
    points: &[f32],
    d: usize,
    cl: &mut Clustering,
    min_cohesion: f32,
    max_k: usize,
    rng: &mut SeededRng,
) -> usize {
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); cl.k];
    for (i, &a) in cl.assign.iter().enumerate() {
        members[a as usize].push(i);
    }
    let mut scratch = vec![0.0f32; d];
    let mut queue: Vec<usize> = (0..cl.k).filter(|&c| members[c].len() >= 2).collect();
    let params = KMeansParams {
        k: 2,
        max_iter: 6,
        ..Default::default()
    };
    let mut splits = 0;
    while let Some(c) = queue.pop() {
        if members.len() >= max_k {
            break;
        }
        let m = &members[c];
        let whole = corrected_cohesion(points, d, m, &mut scratch);
        let incoherent = whole < min_cohesion;
        if !incoherent && m.len() < MIN_GAIN_SPLIT {
            continue;
        }
        let mut sub = Vec::with_capacity(m.len() * d);
        for &i in m {
            sub.extend_from_slice(&points[i * d..(i + 1) * d]);
        }
        let two = spherical_kmeans(&sub, m.len(), d, &params, rng);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (&i, &side) in m.iter().zip(&two.assign) {
            if side == 0 {
                a.push(i);
            } else {
                b.push(i);
            }
        }
        if a.is_empty() || b.is_empty() {
            // Identical points cannot be split; keep the cluster as it is.
            continue;
        }
        if !incoherent {
            let ca = corrected_cohesion(points, d, &a, &mut scratch);
            let cb = corrected_cohesion(points, d, &b, &mut scratch);
            // Halves of a homogeneous group are no more coherent than the whole (after the size
            // correction); halves of a union of groups are. Singleton halves carry no evidence.
            if a.len() < 2 || b.len() < 2 || ca.min(cb) < whole + SPLIT_GAIN {
                continue;
            }
        }
        let new = members.len();
        for &i in &b {
            cl.assign[i] = new as u32;
        }
        members[c] = a;
        members.push(b);
        for id in [c, new] {
            if members[id].len() >= 2 {
                queue.push(id);
            }
        }
        splits += 1;
    }
    cl.k = members.len();
    if splits > 0 {
        // A 2-means cut can run through a group, leaving fragments in two coherent-enough halves;
        // global Lloyd passes over all final centres re-sort such fragments to their nearest centre.
        lloyd_passes(points, d, cl, 3);
    }
    splits
}

/// `iters` Lloyd passes from the current assignment (centres = normalised member sums). Clusters that
/// become empty stay empty (their index is simply unused).
pub fn lloyd_passes(points: &[f32], d: usize, cl: &mut Clustering, iters: usize) {
    let (n, k) = (cl.assign.len(), cl.k);
    let mut centroids = vec![0.0f32; k * d];
    let mut scratch = vec![0.0f32; k];
    for _ in 0..iters {
        centroids.fill(0.0);
        for (i, &a) in cl.assign.iter().enumerate() {
            let a = a as usize;
            kernels::axpy(
                1.0,
                &points[i * d..(i + 1) * d],
                &mut centroids[a * d..(a + 1) * d],
            );
        }
        for c in centroids.chunks_exact_mut(d) {
            if kernels::normalize(c) == 0.0 {
                // Empty cluster: a NaN-free centre that no unit point prefers over a real one.
                c.fill(0.0);
            }
        }
        let mut changed = 0;
        for i in 0..n {
            let (j, _) = nearest(&centroids, k, d, &points[i * d..(i + 1) * d], &mut scratch);
            if cl.assign[i] != j as u32 {
                cl.assign[i] = j as u32;
                changed += 1;
            }
        }
        cl.iterations += 1;
        if changed == 0 {
            break;
        }
    }
    cl.centroids = centroids;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::blobs;

    fn purity(assign: &[u32], label: &[usize], k: usize, c: usize) -> f64 {
        let mut table = vec![0usize; k * c];
        for (a, l) in assign.iter().zip(label) {
            table[*a as usize * c + l] += 1;
        }
        let majority: usize = table.chunks(c).map(|r| *r.iter().max().unwrap()).sum();
        majority as f64 / assign.len() as f64
    }

    #[test]
    fn recovers_separated_clusters_lloyd_and_minibatch() {
        let (d, c) = (32, 6);
        for (n, thr) in [(600, 50_000), (3000, 1000)] {
            let (pts, label) = blobs(n, c, d, 0.5, 3);
            let params = KMeansParams {
                k: c,
                minibatch_threshold: thr,
                batch_size: 256,
                minibatch_iters: 30,
                ..Default::default()
            };
            let cl = spherical_kmeans(&pts, n, d, &params, &mut SeededRng::new(1));
            assert!(purity(&cl.assign, &label, c, c) > 0.99, "n={n}");
            for row in cl.centroids.chunks(d) {
                assert!((kernels::norm_sq(row) - 1.0).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn bisecting_splits_lumped_clusters() {
        // 20 groups but only k = 4: every k-means cluster lumps several groups (low cohesion).
        let (d, c, n) = (64, 20, 2000);
        let (pts, label) = blobs(n, c, d, 0.3, 9);
        let params = KMeansParams {
            k: 4,
            ..Default::default()
        };
        let mut rng = SeededRng::new(2);
        let mut cl = spherical_kmeans(&pts, n, d, &params, &mut rng);
        assert!(purity(&cl.assign, &label, cl.k, c) < 0.5);
        let splits = bisect_incoherent(&pts, d, &mut cl, 0.8, 1000, &mut rng);
        assert_eq!(splits, cl.k - 4);
        assert!(purity(&cl.assign, &label, cl.k, c) > 0.99, "k = {}", cl.k);
        assert!(cl.k >= c && cl.k <= 2 * c);
        let capped = &mut spherical_kmeans(&pts, n, d, &params, &mut rng);
        bisect_incoherent(&pts, d, capped, 0.8, 10, &mut rng);
        assert_eq!(capped.k, 10);
    }

    #[test]
    fn seeded_runs_are_identical_and_k_is_capped() {
        let (pts, _) = blobs(50, 3, 8, 0.3, 4);
        let p = KMeansParams {
            k: 5,
            ..Default::default()
        };
        let a = spherical_kmeans(&pts, 50, 8, &p, &mut SeededRng::new(9));
        let b = spherical_kmeans(&pts, 50, 8, &p, &mut SeededRng::new(9));
        assert_eq!(a, b);
        let tiny = spherical_kmeans(&pts[..16], 2, 8, &p, &mut SeededRng::new(9));
        assert_eq!(tiny.k, 2);
        assert!(tiny.assign.iter().all(|&a| a < 2));
    }
}
