//! Routing metrics (design §8) on a stream where every tier's reward is known, as in a benchmark.
//!
//! Utility of tier `k` on query `q`: `u(q, k) = reward(q, k) − cost_weight · cost_k`.
//! Regret against the best fixed tier: `max_k mean_q u(q, k) − mean_q u(q, chosen_q)`;
//! against the oracle: `mean_q (max_k u(q, k) − u(q, chosen_q))` (the oracle picks, per query, the
//! tier of highest utility, the cheaper one on ties — with a small cost weight, the cheapest tier
//! that is right).

use serde::Serialize;
use sona_core::{Result, SonaError};

/// What a routing policy earned, and what the best fixed tier and the oracle would have.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoutingSummary {
    pub n: usize,
    pub mean_reward: f64,
    pub mean_cost: f64,
    pub mean_utility: f64,
    pub best_fixed_tier: usize,
    pub best_fixed_utility: f64,
    pub oracle_reward: f64,
    pub oracle_cost: f64,
    pub oracle_utility: f64,
    pub regret_vs_best_fixed: f64,
    pub regret_vs_oracle: f64,
    /// Share of queries sent to each tier.
    pub tier_shares: Vec<f64>,
}

fn check_table(rewards: &[f64], costs: &[f64], n: usize) -> Result<usize> {
    let t = costs.len();
    sona_core::validate::check_size("number of tiers", t, 1, 1024)?;
    if costs.iter().any(|c| !c.is_finite() || *c < 0.0) {
        return Err(SonaError::invalid("tier costs must be finite and ≥ 0"));
    }
    if Some(rewards.len()) != n.checked_mul(t) {
        return Err(SonaError::Dimension {
            what: "reward table".into(),
            expected: format!("{n}×{t} values"),
            got: format!("{} values", rewards.len()),
        });
    }
    if let Some(i) = rewards.iter().position(|r| !r.is_finite()) {
        return Err(SonaError::NonFinite {
            what: "reward table".into(),
            index: i,
        });
    }
    Ok(t)
}

/// Summarizes the tiers `chosen` (one per query) against the full reward table `rewards`
/// (`n × T`, row-major) with per-tier `costs`.
pub fn summarize(
    rewards: &[f64],
    costs: &[f64],
    chosen: &[usize],
    cost_weight: f64,
) -> Result<RoutingSummary> {
    let n = chosen.len();
    if n == 0 {
        return Err(SonaError::invalid("no decisions to summarize"));
    }
    let t = check_table(rewards, costs, n)?;
    if !cost_weight.is_finite() || cost_weight < 0.0 {
        return Err(SonaError::invalid(format!(
            "cost_weight must be finite and ≥ 0, got {cost_weight}"
        )));
    }
    if let Some(&k) = chosen.iter().find(|&&k| k >= t) {
        return Err(SonaError::invalid(format!("chosen tier {k} ≥ {t} tiers")));
    }
    let u = |q: usize, k: usize| rewards[q * t + k] - cost_weight * costs[k];
    let nf = n as f64;
    let mut shares = vec![0.0; t];
    let (mut reward, mut cost, mut util) = (0.0, 0.0, 0.0);
    let (mut o_reward, mut o_cost, mut o_util) = (0.0, 0.0, 0.0);
    let mut fixed = vec![0.0; t];
    for (q, &k) in chosen.iter().enumerate() {
        shares[k] += 1.0 / nf;
        reward += rewards[q * t + k];
        cost += costs[k];
        util += u(q, k);
        let mut best = 0;
        for j in 0..t {
            fixed[j] += u(q, j);
            let better = u(q, j) > u(q, best) || (u(q, j) == u(q, best) && costs[j] < costs[best]);
            if better {
                best = j;
            }
        }
        o_reward += rewards[q * t + best];
        o_cost += costs[best];
        o_util += u(q, best);
    }
    let (best_fixed_tier, best_fixed_sum) =
        fixed
            .iter()
            .copied()
            .enumerate()
            .fold(
                (0, f64::NEG_INFINITY),
                |a, (k, v)| if v > a.1 { (k, v) } else { a },
            );
    Ok(RoutingSummary {
        n,
        mean_reward: reward / nf,
        mean_cost: cost / nf,
        mean_utility: util / nf,
        best_fixed_tier,
        best_fixed_utility: best_fixed_sum / nf,
        oracle_reward: o_reward / nf,
        oracle_cost: o_cost / nf,
        oracle_utility: o_util / nf,
        regret_vs_best_fixed: (best_fixed_sum - util) / nf,
        regret_vs_oracle: (o_util - util) / nf,
        tier_shares: shares,
    })
}

/// Indices of the points `(cost, quality)` on the cost–quality front (no other point is at least
/// as cheap and strictly better, or cheaper and as good), sorted by cost.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..points.len())
        .filter(|&i| points[i].0.is_finite() && points[i].1.is_finite())
        .collect();
    idx.sort_by(|&a, &b| {
        points[a]
            .0
            .total_cmp(&points[b].0)
            .then(points[b].1.total_cmp(&points[a].1))
    });
    let mut front = Vec::new();
    let mut best = f64::NEG_INFINITY;
    for i in idx {
        if points[i].1 > best {
            best = points[i].1;
            front.push(i);
        }
    }
    front
}

/// The smallest share of calls to the top tier at which a policy reaches `target` quality, read off
/// the policy's measured points `(top_share, quality)` with linear interpolation between adjacent
/// front points; `None` when no point reaches it. (For "95 % of the top tier's quality", pass
/// `target = 0.95 · quality of the top tier alone`.)
pub fn top_share_for_quality(points: &[(f64, f64)], target: f64) -> Option<f64> {
    let front = pareto_front(points);
    let mut prev: Option<(f64, f64)> = None;
    for i in front {
        let (s, q) = points[i];
        if q >= target {
            return Some(match prev {
                Some((s0, q0)) if q > q0 => s0 + (s - s0) * (target - q0) / (q - q0),
                _ => s,
            });
        }
        prev = Some((s, q));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_summary() {
        // Two tiers (cost 1 and 10), three queries: the cheap tier is right on q0 only.
        let rewards = [1.0, 1.0, 0.0, 1.0, 0.0, 0.0];
        let costs = [1.0, 10.0];
        let s = summarize(&rewards, &costs, &[1, 1, 0], 0.01).unwrap();
        assert!((s.mean_reward - 2.0 / 3.0).abs() < 1e-12);
        assert!((s.mean_cost - 7.0).abs() < 1e-12);
        // Oracle: q0 → tier 0 (u .99), q1 → tier 1 (u .9), q2 → tier 0 (u −.01).
        assert!((s.oracle_utility - (0.99 + 0.9 - 0.01) / 3.0).abs() < 1e-12);
        assert!((s.oracle_cost - 4.0).abs() < 1e-12);
        assert!((s.oracle_reward - 2.0 / 3.0).abs() < 1e-12);
        // Fixed tiers: tier 0 (.99 − .01 − .01)/3, tier 1 (.9 + .9 − .1)/3 → tier 1 best.
        assert_eq!(s.best_fixed_tier, 1);
        let mine = (0.9 + 0.9 - 0.01) / 3.0;
        assert!((s.mean_utility - mine).abs() < 1e-12);
        assert!((s.regret_vs_best_fixed - ((1.7 / 3.0) - mine)).abs() < 1e-12);
        assert!((s.regret_vs_oracle - (s.oracle_utility - mine)).abs() < 1e-12);
        assert_eq!(s.tier_shares, vec![1.0 / 3.0, 2.0 / 3.0]);
    }

    #[test]
    fn bad_tables_are_refused() {
        assert!(summarize(&[1.0, 0.0], &[1.0, 2.0], &[], 0.1).is_err());
        assert!(summarize(&[1.0], &[1.0, 2.0], &[0], 0.1).is_err());
        assert!(summarize(&[1.0, f64::NAN], &[1.0, 2.0], &[0], 0.1).is_err());
        assert!(summarize(&[1.0, 0.0], &[1.0, 2.0], &[2], 0.1).is_err());
        assert!(summarize(&[1.0, 0.0], &[1.0, -2.0], &[0], 0.1).is_err());
        assert!(summarize(&[1.0, 0.0], &[1.0, 2.0], &[0], f64::NAN).is_err());
    }

    #[test]
    fn front_and_top_share() {
        let pts = [
            (0.0, 0.90),
            (0.2, 0.95),
            (0.1, 0.89),
            (0.5, 0.99),
            (1.0, 0.99),
        ];
        assert_eq!(pareto_front(&pts), vec![0, 1, 3]);
        // 0.97 lies between (0.2, .95) and (0.5, .99): halfway.
        let s = top_share_for_quality(&pts, 0.97).unwrap();
        assert!((s - 0.35).abs() < 1e-9);
        assert_eq!(top_share_for_quality(&pts, 0.5), Some(0.0));
        assert_eq!(top_share_for_quality(&pts, 0.999), None);
    }
}
