"""sona.metrics: hand-computed values, unbiased off-policy estimates, the Φ proxy, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

import sona
from sona import metrics

N = math.nan


def test_continual_metrics_hand_computed() -> None:
    r = [[0.9, N, N], [0.6, 0.8, N], [0.5, 0.7, 0.95]]
    m = metrics.continual_metrics(r)
    assert m.acc == pytest.approx((0.5 + 0.7 + 0.95) / 3)
    assert m.bwt == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)
    assert m.forgetting_per_task == pytest.approx([0.4, 0.1])
    # Positive backward transfer is reported as negative forgetting, not clamped.
    p = metrics.continual_metrics([[0.5, 0.1], [0.7, 0.9]])
    assert p.bwt == pytest.approx(0.2) and p.forgetting == pytest.approx(-0.2)


@pytest.mark.parametrize(
    "bad",
    [[[N, N], [0.7, 0.9]], [[0.5, 0.1], [0.7]], [[0.5, N], [0.7, N]], [], [[math.inf]]],
)
def test_continual_metrics_bad_input(bad: list[list[float]]) -> None:
    with pytest.raises(sona.SonaError):
        metrics.continual_metrics(bad)


def test_routing_summary_hand_computed() -> None:
    rewards = np.array([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    s = metrics.routing_summary(rewards, [1.0, 10.0], [1, 1, 0], cost_weight=0.01)
    assert s.mean_reward == pytest.approx(2 / 3) and s.mean_cost == pytest.approx(7.0)
    assert s.oracle_cost == pytest.approx(4.0) and s.best_fixed_tier == 1
    assert s.regret_vs_oracle == pytest.approx(s.oracle_utility - s.mean_utility)
    assert s.tier_shares == pytest.approx([1 / 3, 2 / 3])
    with pytest.raises(sona.DimensionError):
        metrics.routing_summary(rewards, [1.0, 10.0], [1, 1])
    with pytest.raises(sona.SonaError):
        metrics.routing_summary(rewards, [1.0, 10.0], [1, 1, 2])
    with pytest.raises(sona.SonaError):
        metrics.routing_summary(rewards, [1.0, 10.0], [1, 1, 0], cost_weight="0.1")


def test_front_and_top_share() -> None:
    pts = [(0.0, 0.90), (0.2, 0.95), (0.1, 0.89), (0.5, 0.99), (1.0, 0.99)]
    assert metrics.pareto_front(pts) == [0, 1, 3]
    assert metrics.top_share_for_quality(pts, 0.97) == pytest.approx(0.35)
    assert metrics.top_share_for_quality(pts, 0.999) is None


def test_windows_and_rates() -> None:
    assert metrics.window_means([4, 4, 2, 2, 1, 1, 9], 2) == [4.0, 2.0, 1.0, 9.0]
    assert metrics.improvement_rates([4.0, 2.0, 1.0, 2.0]) == [0.5, 0.5, -1.0]
    for bad in (0, 1.5, "2"):
        with pytest.raises(sona.ConfigError):
            metrics.window_means([1.0], bad)  # type: ignore[arg-type]


def _logged_bandit(n: int, seed: int) -> tuple[np.ndarray, ...]:
    """Two contexts, three actions, Bernoulli rewards; logging prefers action 0 (0.6/0.2/0.2)."""
    means = np.array([[0.2, 0.8, 0.5], [0.9, 0.1, 0.4]])
    rng = np.random.default_rng(seed)
    ctx = rng.integers(0, 2, n)
    actions = rng.choice(3, size=n, p=[0.6, 0.2, 0.2])
    props = np.where(actions == 0, 0.6, 0.2)
    rewards = (rng.random(n) < means[ctx, actions]).astype(float)
    return ctx, actions, props, rewards, means


def test_off_policy_estimates_are_unbiased_with_covering_intervals() -> None:
    truth = 0.85  # the best action per context: (0.8 + 0.9) / 2
    values: dict[str, list[float]] = {"ips": [], "snips": [], "dr": []}
    covered = 0
    for seed in range(100):
        ctx, actions, props, rewards, _ = _logged_bandit(500, seed)
        target = np.zeros((len(ctx), 3))
        target[np.arange(len(ctx)), np.where(ctx == 0, 1, 0)] = 1.0
        wrong_model = np.full((len(ctx), 3), 0.5)
        for method in values:
            e = metrics.off_policy_value(
                actions, props, rewards, target, method=method, reward_model=wrong_model
            )
            values[method].append(e.value)
            if method == "dr":
                covered += e.low <= truth <= e.high
    for method, v in values.items():
        assert abs(np.mean(v) - truth) < 0.015, method
    assert covered >= 88


def test_off_policy_bad_input() -> None:
    _, actions, props, rewards, _ = _logged_bandit(20, 0)
    target = np.full((20, 3), 1 / 3)
    with pytest.raises(sona.SonaError):
        metrics.off_policy_value(actions, props, rewards, target, method="dr")  # no model
    with pytest.raises(sona.SonaError):
        metrics.off_policy_value(actions, props * 0, rewards, target, method="ips")
    with pytest.raises(sona.SonaError):
        metrics.off_policy_value(actions, props, rewards, target[:, :2], method="ips")
    with pytest.raises(sona.SonaError):
        metrics.off_policy_value(actions, props, rewards, target, method="nope")  # type: ignore[arg-type]
    with pytest.raises(sona.SonaError):
        metrics.off_policy_value(actions, props, rewards, target, method="ips", level=1.0)


def test_phi_matches_closed_forms_and_a_dense_solver() -> None:
    # Cycle of n: λ₂ = 1 − cos(2π/n).
    n = 20
    cyc = [(i, (i + 1) % n, 1.0) for i in range(n)]
    assert metrics.phi(list(range(n)), cyc) == pytest.approx(1 - math.cos(2 * math.pi / n))
    # A random connected weighted graph against numpy's dense solver.
    rng = np.random.default_rng(0)
    m = 30
    w = np.triu(rng.random((m, m)) * (rng.random((m, m)) < 0.2), 1)
    w[np.arange(m - 1), np.arange(1, m)] = 0.5  # a path keeps it connected
    edges = [(int(i), int(j), float(w[i, j])) for i, j in zip(*np.nonzero(w), strict=True)]
    full = w + w.T
    d = full.sum(1)
    lap = np.eye(m) - full / np.sqrt(np.outer(d, d))
    want = np.linalg.eigvalsh(lap)[1]
    assert metrics.phi(list(range(m)), edges) == pytest.approx(want, abs=1e-5)


def test_phi_zero_when_disconnected_and_rises_when_linked() -> None:
    tri = [(0, 1, 1.0), (1, 2, 1.0), (0, 2, 1.0), (3, 4, 1.0), (4, 5, 1.0), (3, 5, 1.0)]
    nodes = list(range(6))
    assert metrics.phi(nodes, tri) == 0.0
    weak = metrics.phi(nodes, [*tri, (2, 3, 0.1)])
    strong = metrics.phi(nodes, [*tri, (2, 3, 1.0)])
    assert 0.0 < weak < strong
    with pytest.raises(sona.SonaError):
        metrics.phi([0, 1], [(0, 7, 1.0)])
    with pytest.raises(sona.SonaError):
        metrics.phi([0, 1], [(0, 1, -1.0)])
