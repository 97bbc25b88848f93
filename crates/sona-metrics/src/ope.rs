//! Off-policy evaluation (design §8): what another policy would have earned, from logged decisions.
//!
//! Each logged decision `i` has a context, the action `a_i` the logging policy chose with
//! propensity `p_i = μ(a_i | x_i)`, and the observed reward `r_i`. For a target policy with action
//! probabilities `π(· | x_i)`, with weights `w_i = π(a_i | x_i) / p_i`:
//! - IPS: `V̂ = mean_i w_i r_i` (unbiased when every `p_i > 0` where `π > 0`);
//! - self-normalized IPS: `V̂ = Σ w_i r_i / Σ w_i` (slightly biased, much lower variance);
//! - doubly robust, with a reward model `q̂(x, a)`:
//!   `V̂ = mean_i [ Σ_a π(a|x_i) q̂(x_i, a) + w_i (r_i − q̂(x_i, a_i)) ]`
//!   (unbiased if either the propensities or the reward model are right).
//!
//! Intervals are normal approximations `V̂ ± z·se` with `se` the standard error of the per-sample
//! terms (for SNIPS, of the linearized terms `w_i (r_i − V̂) / mean w`). `z` is passed in (1.96 for
//! 95 %). Weights may be clipped at `clip` to trade a little bias for variance (reported as is).

use serde::Serialize;
use sona_core::{Result, SonaError};

/// An estimate of a policy's value with its normal-approximation interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    pub value: f64,
    pub std_err: f64,
    pub low: f64,
    pub high: f64,
    pub n: usize,
    /// Effective sample size of the importance weights, `(Σw)² / Σw²` (n for on-policy logs).
    pub ess: f64,
}

/// Logged bandit feedback: `n` decisions over `k` actions.
#[derive(Debug, Clone)]
pub struct LoggedBandit<'a> {
    pub k: usize,
    pub actions: &'a [usize],
    pub propensities: &'a [f64],
    pub rewards: &'a [f64],
}

impl LoggedBandit<'_> {
    fn n(&self) -> usize {
        self.actions.len()
    }

    fn check(&self) -> Result<()> {
        let n = self.n();
        if n == 0 {
            return Err(SonaError::invalid(
                "an estimate needs at least one logged decision",
            ));
        }
        sona_core::validate::check_size("number of actions", self.k, 1, 1 << 16)?;
        for (what, len) in [
            ("propensities", self.propensities.len()),
            ("rewards", self.rewards.len()),
        ] {
            if len != n {
                return Err(SonaError::len_mismatch(what, n, len));
            }
        }
        if let Some(i) = self.actions.iter().position(|&a| a >= self.k) {
            return Err(SonaError::invalid(format!(
                "logged action {} at {i} is not below k = {}",
                self.actions[i], self.k
            )));
        }
        if let Some(i) = self
            .propensities
            .iter()
            .position(|&p| !(p > 0.0 && p <= 1.0))
        {
            return Err(SonaError::invalid(format!(
                "propensity at {i} must be in (0, 1], got {}",
                self.propensities[i]
            )));
        }
        if let Some(i) = self.rewards.iter().position(|r| !r.is_finite()) {
            return Err(SonaError::NonFinite {
                what: "rewards".into(),
                index: i,
            });
        }
        Ok(())
    }

    /// Checks an `n × k` row-major matrix (target probabilities or reward-model values).
    fn check_matrix(&self, what: &str, m: &[f64], probabilities: bool) -> Result<()> {
        let n = self.n();
        if Some(m.len()) != n.checked_mul(self.k) {
            return Err(SonaError::Dimension {
                what: what.into(),
                expected: format!("{n}×{} values", self.k),
                got: format!("{} values", m.len()),
            });
        }
        if let Some(i) = m.iter().position(|v| !v.is_finite()) {
            return Err(SonaError::NonFinite {
                what: what.into(),
                index: i,
            });
        }
        if probabilities {
            for (i, row) in m.chunks_exact(self.k).enumerate() {
                let s: f64 = row.iter().sum();
                if row.iter().any(|&p| p < 0.0) || (s - 1.0).abs() > 1e-6 {
                    return Err(SonaError::invalid(format!(
                        "{what} row {i} is not a probability distribution (sum {s})"
                    )));
                }
            }
        }
        Ok(())
    }

    fn weights(&self, target: &[f64], clip: Option<f64>) -> Result<Vec<f64>> {
        self.check()?;
        self.check_matrix("target policy", target, true)?;
        if let Some(c) = clip {
            if !(c.is_finite() && c > 0.0) {
                return Err(SonaError::invalid(format!("clip must be > 0, got {c}")));
            }
        }
        Ok((0..self.n())
            .map(|i| {
                let w = target[i * self.k + self.actions[i]] / self.propensities[i];
                clip.map_or(w, |c| w.min(c))
            })
            .collect())
    }
}

fn ess(w: &[f64]) -> f64 {
    let s: f64 = w.iter().sum();
    let s2: f64 = w.iter().map(|x| x * x).sum();
    if s2 > 0.0 {
        s * s / s2
    } else {
        0.0
    }
}

/// Mean and standard error of per-sample terms, as an [`Estimate`] centred on `value`.
fn from_terms(value: f64, terms: &[f64], z: f64, w: &[f64]) -> Estimate {
    let n = terms.len() as f64;
    let mean = terms.iter().sum::<f64>() / n;
    let var = if terms.len() > 1 {
        terms.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    let se = (var / n).sqrt();
    Estimate {
        value,
        std_err: se,
        low: value - z * se,
        high: value + z * se,
        n: terms.len(),
        ess: ess(w),
    }
}

fn check_z(z: f64) -> Result<()> {
    if z.is_finite() && z > 0.0 {
        Ok(())
    } else {
        Err(SonaError::invalid(format!("z must be > 0, got {z}")))
    }
}

/// Inverse propensity scoring.
pub fn ips(log: &LoggedBandit, target: &[f64], clip: Option<f64>, z: f64) -> Result<Estimate> {
    check_z(z)?;
    let w = log.weights(target, clip)?;
    let terms: Vec<f64> = w.iter().zip(log.rewards).map(|(w, r)| w * r).collect();
    let v = terms.iter().sum::<f64>() / terms.len() as f64;
    Ok(from_terms(v, &terms, z, &w))
}

/// Self-normalized inverse propensity scoring. Errors when the target never agrees with a logged
/// action (every weight 0: there is nothing to estimate from).
pub fn snips(log: &LoggedBandit, target: &[f64], clip: Option<f64>, z: f64) -> Result<Estimate> {
    check_z(z)?;
    let w = log.weights(target, clip)?;
    let sw: f64 = w.iter().sum();
    if sw <= 0.0 {
        return Err(SonaError::invalid(
            "the target policy gives probability 0 to every logged action",
        ));
    }
    let v = w.iter().zip(log.rewards).map(|(w, r)| w * r).sum::<f64>() / sw;
    let mean_w = sw / w.len() as f64;
    // Delta method: the estimate's error is the mean of w_i (r_i − V̂) / mean(w).
    let terms: Vec<f64> = w
        .iter()
        .zip(log.rewards)
        .map(|(w, r)| v + w * (r - v) / mean_w)
        .collect();
    Ok(from_terms(v, &terms, z, &w))
}

/// Doubly robust estimate with a reward model `q_hat` (`n × k`, row-major).
pub fn doubly_robust(
    log: &LoggedBandit,
    target: &[f64],
    q_hat: &[f64],
    clip: Option<f64>,
    z: f64,
) -> Result<Estimate> {
    check_z(z)?;
    let w = log.weights(target, clip)?;
    log.check_matrix("reward model", q_hat, false)?;
    let k = log.k;
    let terms: Vec<f64> = (0..log.n())
        .map(|i| {
            let row = i * k;
            let direct: f64 = (0..k).map(|a| target[row + a] * q_hat[row + a]).sum();
            direct + w[i] * (log.rewards[i] - q_hat[row + log.actions[i]])
        })
        .collect();
    let v = terms.iter().sum::<f64>() / terms.len() as f64;
    Ok(from_terms(v, &terms, z, &w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sona_core::SeededRng;

    /// A synthetic logged bandit with known action values: context c ∈ {0, 1}, 3 actions,
    /// Bernoulli rewards with mean `MEANS[c][a]`, logged uniformly at random.
    const MEANS: [[f64; 3]; 2] = [[0.2, 0.8, 0.5], [0.9, 0.1, 0.4]];

    struct Sim {
        ctx: Vec<usize>,
        actions: Vec<usize>,
        props: Vec<f64>,
        rewards: Vec<f64>,
    }

    fn simulate(n: usize, seed: u64) -> Sim {
        let mut rng = SeededRng::new(seed);
        let mut s = Sim {
            ctx: vec![],
            actions: vec![],
            props: vec![],
            rewards: vec![],
        };
        for _ in 0..n {
            let c = rng.below(2) as usize;
            // Logging policy: prefers action 0 (0.6, 0.2, 0.2).
            let u = rng.next_f64();
            let a = if u < 0.6 {
                0
            } else if u < 0.8 {
                1
            } else {
                2
            };
            s.ctx.push(c);
            s.actions.push(a);
            s.props.push(if a == 0 { 0.6 } else { 0.2 });
            s.rewards
                .push(f64::from(u8::from(rng.next_f64() < MEANS[c][a])));
        }
        s
    }

    /// The target: the best action per context (value (0.8 + 0.9) / 2 = 0.85).
    fn target(s: &Sim) -> Vec<f64> {
        s.ctx
            .iter()
            .flat_map(|&c| {
                if c == 0 {
                    [0.0, 1.0, 0.0]
                } else {
                    [1.0, 0.0, 0.0]
                }
            })
            .collect()
    }

    #[test]
    fn estimators_are_unbiased_and_intervals_cover() {
        let truth = 0.85;
        let (mut sum_ips, mut sum_dr, mut covered) = (0.0, 0.0, 0);
        let runs = 200;
        for seed in 0..runs {
            let s = simulate(400, seed);
            let log = LoggedBandit {
                k: 3,
                actions: &s.actions,
                propensities: &s.props,
                rewards: &s.rewards,
            };
            let t = target(&s);
            let e = ips(&log, &t, None, 1.96).unwrap();
            // A deliberately wrong reward model (all 0.5): DR stays unbiased through the weights.
            let q = vec![0.5; s.ctx.len() * 3];
            let d = doubly_robust(&log, &t, &q, None, 1.96).unwrap();
            let sn = snips(&log, &t, None, 1.96).unwrap();
            assert!((sn.value - truth).abs() < 0.15);
            sum_ips += e.value;
            sum_dr += d.value;
            covered += usize::from(e.low <= truth && truth <= e.high);
        }
        let (m_ips, m_dr) = (sum_ips / runs as f64, sum_dr / runs as f64);
        // Mean of 200 estimates: standard error ≈ 0.003.
        assert!((m_ips - truth).abs() < 0.012, "IPS mean {m_ips}");
        assert!((m_dr - truth).abs() < 0.012, "DR mean {m_dr}");
        assert!(covered >= 180, "95% interval covered {covered}/200");
    }

    #[test]
    fn a_perfect_reward_model_removes_the_variance_of_dr() {
        let s = simulate(2000, 7);
        let log = LoggedBandit {
            k: 3,
            actions: &s.actions,
            propensities: &s.props,
            rewards: &s.rewards,
        };
        let t = target(&s);
        let q: Vec<f64> = s.ctx.iter().flat_map(|&c| MEANS[c]).collect();
        let dr = doubly_robust(&log, &t, &q, None, 1.96).unwrap();
        let e = ips(&log, &t, None, 1.96).unwrap();
        assert!(dr.std_err < e.std_err, "{} vs {}", dr.std_err, e.std_err);
        assert!((dr.value - 0.85).abs() < 3.0 * dr.std_err + 0.01);
    }

    #[test]
    fn on_policy_logs_give_the_sample_mean() {
        let rewards = [1.0, 0.0, 1.0, 1.0];
        let log = LoggedBandit {
            k: 2,
            actions: &[0, 0, 0, 0],
            propensities: &[1.0; 4],
            rewards: &rewards,
        };
        let t = [1.0, 0.0].repeat(4);
        for e in [
            ips(&log, &t, None, 2.0).unwrap(),
            snips(&log, &t, None, 2.0).unwrap(),
        ] {
            assert!((e.value - 0.75).abs() < 1e-12);
            assert!((e.ess - 4.0).abs() < 1e-12);
        }
    }

    #[test]
    fn bad_logs_are_refused() {
        let r = [1.0, 0.0];
        let ok = |p: &[f64], a: &[usize], t: &[f64]| {
            let log = LoggedBandit {
                k: 2,
                actions: a,
                propensities: p,
                rewards: &r,
            };
            ips(&log, t, None, 1.96)
        };
        let t = [0.5, 0.5, 0.5, 0.5];
        assert!(ok(&[0.5, 0.5], &[0, 1], &t).is_ok());
        assert!(ok(&[0.0, 0.5], &[0, 1], &t).is_err());
        assert!(ok(&[0.5, 1.5], &[0, 1], &t).is_err());
        assert!(ok(&[0.5], &[0, 1], &t).is_err());
        assert!(ok(&[0.5, 0.5], &[0, 2], &t).is_err());
        assert!(ok(&[0.5, 0.5], &[0, 1], &[0.5, 0.6, 0.5, 0.5]).is_err());
        assert!(ok(&[0.5, 0.5], &[0, 1], &[0.5, 0.5]).is_err());
        let empty = LoggedBandit {
            k: 2,
            actions: &[],
            propensities: &[],
            rewards: &[],
        };
        assert!(ips(&empty, &[], None, 1.96).is_err());
        let log = LoggedBandit {
            k: 2,
            actions: &[0, 1],
            propensities: &[0.5, 0.5],
            rewards: &r,
        };
        assert!(snips(&log, &[0.0, 1.0, 1.0, 0.0], None, 1.96).is_err());
        assert!(ips(&log, &t, Some(0.0), 1.96).is_err());
        assert!(ips(&log, &t, None, f64::NAN).is_err());
        assert!(doubly_robust(&log, &t, &[0.0; 3], None, 1.96).is_err());
    }
}
