//! `sona-metrics` for Python: pure functions over small inputs (lists or arrays converted by the
//! typed layer in `sona.metrics`), each returning plain values or a dict.

use pyo3::prelude::*;
use pyo3::types::PyDict;
use sona_metrics::{continual, improvement, ope, phi as phi_mod, routing};

use crate::errors::{guard, BindResult};

/// ACC, BWT and forgetting of an accuracy matrix given as rows (NaN = not measured).
#[pyfunction]
fn continual_metrics(py: Python<'_>, rows: Vec<Vec<f64>>) -> PyResult<Bound<'_, PyDict>> {
    guard(py, || -> BindResult<_> {
        let m = continual::AccuracyMatrix::from_rows(&rows)?;
        let d = PyDict::new(py);
        d.set_item("acc", m.acc()?)?;
        d.set_item("bwt", m.bwt()?)?;
        d.set_item("forgetting", m.forgetting()?)?;
        d.set_item("forgetting_per_task", m.forgetting_per_task()?)?;
        Ok(d)
    })
}

/// Routing summary of `chosen` tiers against the full `n × T` reward table (row-major).
#[pyfunction]
fn routing_summary(
    py: Python<'_>,
    rewards: Vec<f64>,
    costs: Vec<f64>,
    chosen: Vec<usize>,
    cost_weight: f64,
) -> PyResult<Bound<'_, PyDict>> {
    guard(py, || -> BindResult<_> {
        let s = routing::summarize(&rewards, &costs, &chosen, cost_weight)?;
        let d = PyDict::new(py);
        d.set_item("n", s.n)?;
        d.set_item("mean_reward", s.mean_reward)?;
        d.set_item("mean_cost", s.mean_cost)?;
        d.set_item("mean_utility", s.mean_utility)?;
        d.set_item("best_fixed_tier", s.best_fixed_tier)?;
        d.set_item("best_fixed_utility", s.best_fixed_utility)?;
        d.set_item("oracle_reward", s.oracle_reward)?;
        d.set_item("oracle_cost", s.oracle_cost)?;
        d.set_item("oracle_utility", s.oracle_utility)?;
        d.set_item("regret_vs_best_fixed", s.regret_vs_best_fixed)?;
        d.set_item("regret_vs_oracle", s.regret_vs_oracle)?;
        d.set_item("tier_shares", s.tier_shares)?;
        Ok(d)
    })
}

/// Indices of the cost–quality front of `(cost, quality)` points, by cost.
#[pyfunction]
fn pareto_front(points: Vec<(f64, f64)>) -> Vec<usize> {
    routing::pareto_front(&points)
}

/// Smallest top-tier call share reaching `target` quality on the `(share, quality)` points.
#[pyfunction]
fn top_share_for_quality(points: Vec<(f64, f64)>, target: f64) -> Option<f64> {
    routing::top_share_for_quality(&points, target)
}

/// Means of consecutive windows.
#[pyfunction]
fn window_means(py: Python<'_>, values: Vec<f64>, window: usize) -> PyResult<Vec<f64>> {
    guard(py, || Ok(improvement::window_means(&values, window)?))
}

/// Relative regret reduction between consecutive windows.
#[pyfunction]
fn improvement_rates(window_regrets: Vec<f64>) -> Vec<f64> {
    improvement::improvement_rates(&window_regrets)
}

/// An off-policy estimate: `method` is "ips", "snips" or "dr" (which needs `q_hat`).
#[pyfunction]
#[pyo3(signature = (method, k, actions, propensities, rewards, target, q_hat=None, clip=None, z=1.959963984540054))]
fn off_policy_estimate<'py>(
    py: Python<'py>,
    method: &str,
    k: usize,
    actions: Vec<usize>,
    propensities: Vec<f64>,
    rewards: Vec<f64>,
    target: Vec<f64>,
    q_hat: Option<Vec<f64>>,
    clip: Option<f64>,
    z: f64,
) -> PyResult<Bound<'py, PyDict>> {
    guard(py, || -> BindResult<_> {
        let log = ope::LoggedBandit {
            k,
            actions: &actions,
            propensities: &propensities,
            rewards: &rewards,
        };
        let e = match (method, &q_hat) {
            ("ips", _) => ope::ips(&log, &target, clip, z)?,
            ("snips", _) => ope::snips(&log, &target, clip, z)?,
            ("dr", Some(q)) => ope::doubly_robust(&log, &target, q, clip, z)?,
            ("dr", None) => {
                return Err(sona_core::SonaError::invalid(
                    "the doubly robust estimate needs a reward model (q_hat)",
                )
                .into())
            }
            (m, _) => {
                return Err(sona_core::SonaError::invalid(format!(
                    "unknown estimator {m:?}: use \"ips\", \"snips\" or \"dr\""
                ))
                .into())
            }
        };
        let d = PyDict::new(py);
        d.set_item("value", e.value)?;
        d.set_item("std_err", e.std_err)?;
        d.set_item("low", e.low)?;
        d.set_item("high", e.high)?;
        d.set_item("n", e.n)?;
        d.set_item("ess", e.ess)?;
        Ok(d)
    })
}

/// The integration proxy Φ of a graph (algebraic connectivity of its normalized Laplacian).
#[pyfunction]
fn phi(py: Python<'_>, nodes: Vec<u64>, edges: Vec<(u64, u64, f32)>) -> PyResult<f64> {
    guard(py, || Ok(py.detach(|| phi_mod::phi(&nodes, &edges))?))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(continual_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(routing_summary, m)?)?;
    m.add_function(wrap_pyfunction!(pareto_front, m)?)?;
    m.add_function(wrap_pyfunction!(top_share_for_quality, m)?)?;
    m.add_function(wrap_pyfunction!(window_means, m)?)?;
    m.add_function(wrap_pyfunction!(improvement_rates, m)?)?;
    m.add_function(wrap_pyfunction!(off_policy_estimate, m)?)?;
    m.add_function(wrap_pyfunction!(phi, m)?)?;
    Ok(())
}
