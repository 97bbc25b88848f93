"""Cost-aware routing on real models (design §11.3): ``sona eval routing``.

Data: scikit-learn's bundled ``load_digits`` (1,797 8×8 images, no download), split per seed,
stratified, into three parts:

- **train** (50 %): fits the four tiers, classifiers of rising capacity and cost — nearest centroid
  (cost 1), logistic regression (3), 3-nearest-neighbours (10), RBF-SVM (30), each on pixels scaled
  to [0, 1] — and the standardization of the query vectors;
- **validation** (25 %): streams on which the hyper-parameters of every learned policy (SONA's and
  the bandit's) were chosen (``--tune`` reruns that search);
- **test** (25 %): the streams reported here; tuning never saw them.

A stream is ``--queries`` draws (with replacement, so the split cycles) of held-out images; the
query vector is the standardized image (64-d). **Drift** halfway: the class mix flips — the first
half draws 90 % of its queries from digits 0–4, the second half 90 % from digits 5–9 — so what the
router learned about "which tier is enough" covers the wrong region of input space after the
switch. The tiers answer the same images either way.

Reward = 1 when the chosen tier's prediction is right, else 0; utility = reward − cost_weight ×
cost; regret = the oracle's utility (the cheapest correct tier) minus the policy's, per query.

Policies: SONA (:class:`~sona.engine.SONAEngine`, loops A and B: ``feedback`` after every query,
``background_learn()`` every ``--learn-every`` queries, deterministic), a uniformly random tier,
each fixed tier, the oracle, and a plain contextual bandit — one online logistic regression per
tier predicting P(correct) from the query, ε-greedy on the same utility and cost_weight (no
memory, no recurrent router).

Reported per policy, mean ± std over seeds: accuracy, mean cost, mean regret vs the oracle, share of
top-tier calls; the per-window reward/regret curve (drift marked) and the cost–quality curve
(SONA and the bandit at several cost weights, beside the fixed tiers).
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from sona._fsio import write_json
from sona._plot import pyplot, save_figure

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B8 = npt.NDArray[np.bool_]

TIER_NAMES = ("nearest-centroid", "logistic", "3-nn", "rbf-svm")
TIER_COSTS = (1.0, 3.0, 10.0, 30.0)
#: Fraction of the stream drawn from the "favoured" digit group in each phase.
FAVOURED_SHARE = 0.9

#: SONA settings chosen on validation streams (``--tune``; see docs/benchmarks.md). Everything not
#: listed is the engine's default.
SONA_TUNED: dict[str, Any] = {
    "cost_weight": 0.0005,
    "epsilon": 0.02,
    "micro_lr": 0.05,
    "readout_lr": 3.0,
    "replay_half_life": 500,
}
#: The bandit's settings chosen the same way at SONA's cost weight (learning rate, ε).
BANDIT_TUNED: dict[str, float] = {"lr": 0.03, "epsilon": 0.05}
#: ``background_learn()`` every this many queries.
LEARN_EVERY = 250

#: Cost weights of the cost–quality curve.
SWEEP = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02)


@dataclass
class RoutingConfig:
    """Everything a run depends on (stored in the JSON output)."""

    seeds: int = 5
    queries: int = 4000
    window: int = 250
    drift: bool = True
    learn_every: int = LEARN_EVERY
    sona: dict[str, Any] = field(default_factory=lambda: dict(SONA_TUNED))
    bandit: dict[str, float] = field(default_factory=lambda: dict(BANDIT_TUNED))
    sweep: tuple[float, ...] = SWEEP
    #: Seeds of the cost–quality sweep (it multiplies the run time by len(sweep)).
    sweep_seeds: int = 2
    #: "test" for reported results; "validation" while tuning.
    part: str = "test"


# --- data and tiers --------------------------------------------------------------------------


@dataclass
class Split:
    """One seed's data: standardized query vectors and each tier's correctness, per part."""

    x: dict[str, F32]
    y: dict[str, I64]
    #: correct[part][i, k]: tier k answers image i of that part correctly.
    correct: dict[str, B8]
    tier_accuracy: dict[str, list[float]]


def make_split(seed: int) -> Split:
    """Split the digits 50/25/25 (stratified), fit the tiers on train, score them on the rest."""
    import warnings

    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import KNeighborsClassifier, NearestCentroid
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    data, target = load_digits(return_X_y=True)
    x_tr, x_rest, y_tr, y_rest = train_test_split(
        data, target, train_size=0.5, stratify=target, random_state=seed
    )
    x_va, x_te, y_va, y_te = train_test_split(
        x_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=seed
    )
    # The routers see the standardized image; each tier has its own input (pixels scaled to [0, 1],
    # on which these classifiers were chosen on validation data).
    scaler = StandardScaler().fit(x_tr)
    tiers = [
        NearestCentroid(),
        LogisticRegression(C=0.2, max_iter=3000),
        KNeighborsClassifier(n_neighbors=3),
        SVC(C=10.0, gamma="scale"),
    ]
    raw = {"validation": x_va / 16.0, "test": x_te / 16.0}
    xs = {"validation": scaler.transform(x_va), "test": scaler.transform(x_te)}
    ys = {"validation": y_va, "test": y_te}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NearestCentroid warns about constant border pixels
        for tier in tiers:
            tier.fit(x_tr / 16.0, y_tr)
        correct = {
            part: np.stack([t.predict(raw[part]) == ys[part] for t in tiers], axis=1) for part in xs
        }
    return Split(
        x={p: np.ascontiguousarray(v, dtype=np.float32) for p, v in xs.items()},
        y={p: np.asarray(v, dtype=np.int64) for p, v in ys.items()},
        correct=correct,
        tier_accuracy={p: c.mean(axis=0).round(4).tolist() for p, c in correct.items()},
    )


def make_stream(y: I64, n: int, seed: int, drift: bool) -> I64:
    """Indices into a part: phase 1 favours digits 0–4, phase 2 (if ``drift``) digits 5–9."""
    rng = np.random.default_rng([seed, 7])
    low = np.flatnonzero(y < 5)
    high = np.flatnonzero(y >= 5)
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        second = drift and i >= n // 2
        favoured, other = (high, low) if second else (low, high)
        pool = favoured if rng.random() < FAVOURED_SHARE else other
        out[i] = pool[rng.integers(len(pool))]
    return out


# --- policies --------------------------------------------------------------------------------


class Policy(Protocol):
    """An online router: choose a tier for a query, then learn from the reward."""

    name: str

    def choose(self, x: F32, correct: B8) -> int:
        """The tier for query ``x`` (``correct`` is visible to the oracle only)."""
        ...

    def update(self, reward: float) -> None:
        """The reward of the last choice."""
        ...

    def close(self) -> None:
        """Release resources."""
        ...


class _NoLearning:
    """A policy that ignores rewards and holds no resources."""

    def update(self, reward: float) -> None:
        pass

    def close(self) -> None:
        pass


class FixedPolicy(_NoLearning):
    """Always the same tier."""

    def __init__(self, tier: int) -> None:
        self.tier = tier
        self.name = f"always {TIER_NAMES[tier]}"

    def choose(self, x: F32, correct: B8) -> int:
        return self.tier


class RandomPolicy(_NoLearning):
    """A uniformly random tier."""

    name = "random"

    def __init__(self, seed: int, n_tiers: int) -> None:
        self.rng = np.random.default_rng([seed, 11])
        self.n = n_tiers

    def choose(self, x: F32, correct: B8) -> int:
        return int(self.rng.integers(self.n))


class OraclePolicy(_NoLearning):
    """The tier of best utility given the answers (the cheapest correct one)."""

    name = "oracle"

    def __init__(self, costs: Sequence[float], cost_weight: float) -> None:
        self.penalty = cost_weight * np.asarray(costs)

    def choose(self, x: F32, correct: B8) -> int:
        return int(np.argmax(correct - self.penalty))


class LogisticBandit(_NoLearning):
    """Per-tier online logistic regression of P(correct | x), ε-greedy on p̂ − cost_weight·cost.

    The plain contextual-bandit baseline: the same features, costs, cost weight and exploration
    rate as SONA, but no memory and no shared recurrent router.
    """

    name = "logistic ε-greedy bandit"

    def __init__(
        self,
        dim: int,
        costs: Sequence[float],
        cost_weight: float,
        *,
        lr: float,
        epsilon: float,
        seed: int,
    ) -> None:
        n = len(costs)
        self.w = np.zeros((n, dim + 1))
        self.penalty = cost_weight * np.asarray(costs)
        self.lr = lr
        self.epsilon = epsilon
        self.rng = np.random.default_rng([seed, 13])
        self._last: tuple[int, F64] | None = None

    def choose(self, x: F32, correct: B8) -> int:
        z = np.append(x.astype(np.float64), 1.0)
        if self.rng.random() < self.epsilon:
            tier = int(self.rng.integers(len(self.w)))
        else:
            p = 1.0 / (1.0 + np.exp(-(self.w @ z)))
            tier = int(np.argmax(p - self.penalty))
        self._last = (tier, z)
        return tier

    def update(self, reward: float) -> None:
        assert self._last is not None
        tier, z = self._last
        p = 1.0 / (1.0 + np.exp(-(self.w[tier] @ z)))
        self.w[tier] += self.lr * (reward - p) * z / (1.0 + float(z @ z) / len(z))


class SonaPolicy:
    """:class:`~sona.engine.SONAEngine` routing the stream: ``process`` → ``feedback``, and a
    loop-B cycle (``background_learn``) every ``learn_every`` queries."""

    name = "SONA"

    def __init__(self, dim: int, settings: dict[str, Any], seed: int, learn_every: int) -> None:
        from sona.engine import LearningMode, SONAConfig, SONAEngine

        base = {
            "dim": dim,
            "n_tiers": len(TIER_COSTS),
            "tier_names": list(TIER_NAMES),
            "tier_costs": list(TIER_COSTS),
            "learning_mode": LearningMode.INSTANT_AND_BACKGROUND,
            # The eval drives loop B itself (every `learn_every` queries) so runs are reproducible.
            "loop_b_every": 0,
            "loop_b_interval_s": 0.0,
            "seed": seed,
        }
        self.engine = SONAEngine(SONAConfig(**{**base, **settings}))
        self.learn_every = learn_every
        self.count = 0
        self._last: int | None = None
        self.learning: list[dict[str, Any]] = []

    def choose(self, x: F32, correct: B8) -> int:
        decision = self.engine.process(x)
        self._last = int(decision.trajectory_id)
        return int(decision.tier)

    def update(self, reward: float) -> None:
        assert self._last is not None
        self.engine.feedback(self._last, reward)
        self.count += 1
        if self.learn_every and self.count % self.learn_every == 0:
            result = self.engine.background_learn()
            self.learning.append(_learning_summary(result))

    def close(self) -> None:
        self.engine.close()


def _learning_summary(result: Any) -> dict[str, Any]:
    keys = ("elapsed_ms", "replayed", "loss_before", "loss_after", "patterns_added")
    out: dict[str, Any] = {}
    for k in keys:
        v = getattr(result, k, None)
        if isinstance(v, (int, float, bool)):
            out[k] = v
    return out


# --- running ---------------------------------------------------------------------------------


@dataclass
class StreamResult:
    """One policy on one stream."""

    tiers: I64
    rewards: F64
    costs: F64
    regrets: F64

    def summary(self, top: int) -> dict[str, float]:
        return {
            "accuracy": float(self.rewards.mean()),
            "mean_cost": float(self.costs.mean()),
            "regret": float(self.regrets.mean()),
            "top_share": float((self.tiers == top).mean()),
        }

    def windows(self, size: int) -> dict[str, list[float]]:
        n = len(self.rewards) // size
        shape = (n, size)
        return {
            "reward": self.rewards[: n * size].reshape(shape).mean(axis=1).round(4).tolist(),
            "regret": self.regrets[: n * size].reshape(shape).mean(axis=1).round(4).tolist(),
            "cost": self.costs[: n * size].reshape(shape).mean(axis=1).round(3).tolist(),
        }


def run_stream(
    policy: Policy, x: F32, correct: B8, stream: I64, cost_weight: float
) -> StreamResult:
    """Feed ``stream`` to ``policy`` one query at a time (choose, then the reward)."""
    costs = np.asarray(TIER_COSTS)
    n = len(stream)
    tiers = np.empty(n, dtype=np.int64)
    for t, i in enumerate(stream):
        tier = policy.choose(x[i], correct[i])
        tiers[t] = tier
        policy.update(float(correct[i, tier]))
    rewards = correct[stream, tiers].astype(np.float64)
    paid = costs[tiers]
    best = (correct[stream] - cost_weight * costs).max(axis=1)
    regrets = best - (rewards - cost_weight * paid)
    return StreamResult(tiers, rewards, paid, regrets)


def _policies(
    split: Split, cfg: RoutingConfig, seed: int
) -> list[tuple[str, Callable[[], Policy]]]:
    dim = split.x[cfg.part].shape[1]
    cw = float(cfg.sona.get("cost_weight", SONA_TUNED["cost_weight"]))
    out: list[tuple[str, Callable[[], Policy]]] = [
        ("SONA", lambda: SonaPolicy(dim, cfg.sona, seed, cfg.learn_every)),
        (
            "bandit",
            lambda: LogisticBandit(dim, TIER_COSTS, cw, seed=seed, **cfg.bandit),
        ),
        ("random", lambda: RandomPolicy(seed, len(TIER_COSTS))),
        ("oracle", lambda: OraclePolicy(TIER_COSTS, cw)),
    ]
    for k in range(len(TIER_COSTS)):
        out.append((f"fixed:{TIER_NAMES[k]}", functools.partial(FixedPolicy, k)))
    return out


def run(cfg: RoutingConfig, progress: bool = True) -> dict[str, Any]:
    """Every policy on every seed's stream, plus the cost–quality sweep; JSON-ready results."""
    from threadpoolctl import threadpool_limits
    from tqdm import tqdm

    t0 = time.perf_counter()
    limiter = threadpool_limits(1)
    cw = float(cfg.sona.get("cost_weight", SONA_TUNED["cost_weight"]))
    top = len(TIER_COSTS) - 1
    per_policy: dict[str, list[StreamResult]] = {}
    tier_acc: list[list[float]] = []
    learning: list[list[dict[str, Any]]] = []
    sweep_jobs = [(s, c) for s in range(min(cfg.sweep_seeds, cfg.seeds)) for c in cfg.sweep]
    total = cfg.seeds * (4 + len(TIER_COSTS)) + 2 * len(sweep_jobs)
    bar = tqdm(total=total, desc="routing", unit="run", disable=not progress)
    splits: dict[int, Split] = {}
    for seed in range(cfg.seeds):
        split = splits.setdefault(seed, make_split(seed))
        x, correct = split.x[cfg.part], split.correct[cfg.part]
        stream = make_stream(split.y[cfg.part], cfg.queries, seed, cfg.drift)
        tier_acc.append(split.tier_accuracy[cfg.part])
        for name, make in _policies(split, cfg, seed):
            policy = make()
            try:
                per_policy.setdefault(name, []).append(run_stream(policy, x, correct, stream, cw))
                if isinstance(policy, SonaPolicy):
                    learning.append(policy.learning)
            finally:
                policy.close()
            bar.update()
    sweep: dict[str, list[dict[str, float]]] = {"SONA": [], "bandit": []}
    for seed, c in sweep_jobs:
        split = splits[seed]
        x, correct = split.x[cfg.part], split.correct[cfg.part]
        stream = make_stream(split.y[cfg.part], cfg.queries, seed, cfg.drift)
        dim = x.shape[1]
        for name, policy in (
            ("SONA", SonaPolicy(dim, {**cfg.sona, "cost_weight": c}, seed, cfg.learn_every)),
            ("bandit", LogisticBandit(dim, TIER_COSTS, c, seed=seed, **cfg.bandit)),
        ):
            try:
                r = run_stream(policy, x, correct, stream, c)
            finally:
                policy.close()
            sweep[name].append({"seed": seed, "cost_weight": c, **r.summary(top)})
            bar.update()
    bar.close()
    limiter.restore_original_limits()

    results: dict[str, Any] = {}
    for name, runs in per_policy.items():
        sums = [r.summary(top) for r in runs]
        curves = [r.windows(cfg.window) for r in runs]
        results[name] = {
            "summary": {
                k: {
                    "mean": float(np.mean([s[k] for s in sums])),
                    "std": float(np.std([s[k] for s in sums])),
                }
                for k in sums[0]
            },
            "per_seed": sums,
            "windows": {
                k: np.mean([c[k] for c in curves], axis=0).round(4).tolist() for k in curves[0]
            },
        }
    out: dict[str, Any] = {
        "config": asdict(cfg),
        "tier_names": list(TIER_NAMES),
        "tier_costs": list(TIER_COSTS),
        "tier_accuracy": {
            "mean": np.mean(tier_acc, axis=0).round(4).tolist(),
            "per_seed": tier_acc,
        },
        "results": results,
        "sweep": _sweep_means(sweep),
        "drift": _drift_report(results["SONA"]["windows"]["regret"], cfg),
        "learning_cycles": learning,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    out["equal_accuracy"] = _equal_accuracy(out)
    return out


def _sweep_means(sweep: dict[str, list[dict[str, float]]]) -> dict[str, list[dict[str, float]]]:
    out: dict[str, list[dict[str, float]]] = {}
    for name, rows in sweep.items():
        by_cw: dict[float, list[dict[str, float]]] = {}
        for row in rows:
            by_cw.setdefault(row["cost_weight"], []).append(row)
        out[name] = [
            {
                "cost_weight": c,
                **{
                    k: float(np.mean([r[k] for r in group]))
                    for k in ("accuracy", "mean_cost", "regret", "top_share")
                },
            }
            for c, group in sorted(by_cw.items())
        ]
    return out


def _drift_report(regret: list[float], cfg: RoutingConfig) -> dict[str, Any]:
    """Regret per window around the drift: the last pre-drift window, the worst after, the last."""
    n = len(regret)
    if not cfg.drift or n < 4:
        return {}
    half = n // 2
    pre = regret[half - 1]
    post_peak = max(regret[half:])
    final = regret[-1]
    return {
        "pre_drift_window_regret": pre,
        "post_drift_peak_regret": post_peak,
        "final_window_regret": final,
        "recovered": bool(final < pre),
    }


def _equal_accuracy(out: dict[str, Any]) -> dict[str, Any]:
    """The bandit's mean cost at SONA's accuracy, interpolated along the bandit's sweep curve."""
    sona = out["results"]["SONA"]["summary"]
    points = sorted((p["accuracy"], p["mean_cost"]) for p in out["sweep"].get("bandit", []))
    if len(points) < 2:
        return {}
    accs = np.array([a for a, _ in points])
    costs = np.array([c for _, c in points])
    target = sona["accuracy"]["mean"]
    reachable = bool(accs.max() >= target)
    bandit_cost = float(np.interp(target, accs, costs)) if reachable else None
    return {
        "sona_accuracy": target,
        "sona_cost": sona["mean_cost"]["mean"],
        "bandit_cost_at_that_accuracy": bandit_cost,
        "bandit_reaches_that_accuracy": reachable,
        "bandit_best_accuracy": float(accs.max()),
    }


# --- tuning on validation streams -------------------------------------------------------------

#: The grid ``--tune`` searches (SONA), by validation accuracy subject to mean cost ≤ the budget.
SONA_GRID: dict[str, tuple[Any, ...]] = {
    "cost_weight": (0.0005, 0.001),
    "epsilon": (0.02, 0.05),
    # The router's per-tier read-out of the query (docs/benchmarks.md, "Cost-aware routing").
    "readout_lr": (3.0, 5.0, 8.0),
    "replay_half_life": (0, 500),
}
BANDIT_GRID: dict[str, tuple[float, ...]] = {"lr": (0.03, 0.1, 0.3), "epsilon": (0.02, 0.05)}
COST_BUDGET = 10.0


def _grid(grid: dict[str, tuple[Any, ...]]) -> list[dict[str, Any]]:
    import itertools

    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def _score(summary: dict[str, float]) -> float:
    """Validation criterion: accuracy, minus a steep penalty for mean cost over the budget."""
    return summary["accuracy"] - max(0.0, summary["mean_cost"] - COST_BUDGET)


def tune(cfg: RoutingConfig, progress: bool = True) -> dict[str, Any]:
    """Grid search of SONA's and the bandit's settings on the validation part only."""
    from tqdm import tqdm

    top = len(TIER_COSTS) - 1
    sona_grid = _grid(SONA_GRID)
    bandit_grid = _grid(BANDIT_GRID)
    scored: dict[str, list[tuple[float, dict[str, Any], dict[str, float]]]] = {
        "SONA": [],
        "bandit": [],
    }
    splits = [make_split(s) for s in range(cfg.seeds)]
    jobs = len(splits) * (len(sona_grid) + len(bandit_grid) * len(SONA_GRID["cost_weight"]))
    bar = tqdm(total=jobs, desc="tuning on validation", unit="run", disable=not progress)

    def evaluate(make: Callable[[int], Policy], cost_weight: float) -> dict[str, float]:
        sums = []
        for seed, split in enumerate(splits):
            x, correct = split.x["validation"], split.correct["validation"]
            stream = make_stream(split.y["validation"], cfg.queries, seed, cfg.drift)
            policy = make(seed)
            try:
                sums.append(run_stream(policy, x, correct, stream, cost_weight).summary(top))
            finally:
                policy.close()
            bar.update()
        return {k: float(np.mean([s[k] for s in sums])) for k in sums[0]}

    dim = splits[0].x["validation"].shape[1]
    for params in sona_grid:
        settings = {**cfg.sona, **params}
        summary = evaluate(
            lambda s: SonaPolicy(dim, settings, s, cfg.learn_every),  # noqa: B023 - called now
            float(settings["cost_weight"]),
        )
        scored["SONA"].append((_score(summary), settings, summary))
    for cw in SONA_GRID["cost_weight"]:
        for params in bandit_grid:
            summary = evaluate(
                lambda s: LogisticBandit(dim, TIER_COSTS, cw, seed=s, **params),  # noqa: B023
                cw,
            )
            scored["bandit"].append((_score(summary), {"cost_weight": cw, **params}, summary))
    bar.close()
    out: dict[str, Any] = {}
    for rows in scored.values():
        rows.sort(key=lambda r: -r[0])
    # The bandit gets SONA's cost weight (the comparison is at the same trade-off); only its own
    # settings (learning rate, ε) are chosen here.
    sona_cw = scored["SONA"][0][1]["cost_weight"]
    bandit_rows = [r for r in scored["bandit"] if r[1]["cost_weight"] == sona_cw]
    for name, rows, best in (
        ("SONA", scored["SONA"], scored["SONA"][0]),
        ("bandit", scored["bandit"], bandit_rows[0]),
    ):
        out[name] = {
            "best": best[1],
            "best_validation": best[2],
            "all": [{"params": p, **s} for _, p, s in rows],
        }
    return out


# --- output ----------------------------------------------------------------------------------


def format_table(out: dict[str, Any]) -> str:
    """The per-policy table (mean ± std over seeds) and the drift / equal-accuracy lines."""
    cfg = out["config"]
    lines = [
        f"\nCost-aware routing on digits ({cfg['part']} split, {cfg['seeds']} seeds, "
        f"{cfg['queries']} queries, drift={'class-mix flip at half' if cfg['drift'] else 'none'}, "
        f"cost_weight={cfg['sona'].get('cost_weight')})",
        "tier accuracy on this split: "
        + ", ".join(
            f"{n} {a:.3f} (cost {c:g})"
            for n, a, c in zip(
                out["tier_names"], out["tier_accuracy"]["mean"], out["tier_costs"], strict=True
            )
        ),
        "",
        f"  {'policy':<24} "
        + " ".join(f"{h:>15}" for h in ("accuracy", "mean cost", "regret", "top-tier share")),
    ]
    for name, res in out["results"].items():
        s = res["summary"]
        cells = " ".join(
            f"{s[k]['mean']:8.3f}±{s[k]['std']:5.3f}"
            for k in ("accuracy", "mean_cost", "regret", "top_share")
        )
        lines.append(f"  {name:<24} {cells}")
    d = out.get("drift") or {}
    if d:
        lines.append(
            f"\nSONA regret per window: last before drift {d['pre_drift_window_regret']:.4f}, "
            f"worst after {d['post_drift_peak_regret']:.4f}, last {d['final_window_regret']:.4f} "
            f"({'recovered' if d['recovered'] else 'not recovered'})"
        )
    e = out.get("equal_accuracy") or {}
    if e:
        if e["bandit_reaches_that_accuracy"]:
            lines.append(
                f"at SONA's accuracy {e['sona_accuracy']:.3f}: SONA costs {e['sona_cost']:.2f}, "
                f"the bandit {e['bandit_cost_at_that_accuracy']:.2f} (its cost-weight sweep)"
            )
        else:
            lines.append(
                f"the bandit never reaches SONA's accuracy {e['sona_accuracy']:.3f} "
                f"(best {e['bandit_best_accuracy']:.3f} over its cost-weight sweep)"
            )
    lines.append(f"({out['seconds']} s)")
    return "\n".join(lines)


def plot(out: dict[str, Any], prefix: str) -> list[str]:
    """``<prefix>-learning.png`` (reward and regret per window, drift marked) and
    ``<prefix>-cost-quality.png``; returns the paths written."""
    plt = pyplot()

    cfg = out["config"]
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for name in ("SONA", "bandit", "random", "oracle", f"fixed:{TIER_NAMES[-1]}"):
        w = out["results"][name]["windows"]
        xs = (np.arange(len(w["reward"])) + 1) * cfg["window"]
        axes[0].plot(xs, w["reward"], label=name, marker=".")
        axes[1].plot(xs, w["regret"], label=name, marker=".")
    for ax, title in zip(axes, ("accuracy per window", "regret vs oracle per window"), strict=True):
        if cfg["drift"]:
            ax.axvline(cfg["queries"] / 2, color="grey", ls=":", label="drift")
        ax.set_title(title)
        ax.set_xlabel("queries")
        ax.legend(fontsize=8)
    paths.append(save_figure(fig, f"{prefix}-learning.png"))

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for k, name in enumerate(TIER_NAMES):
        s = out["results"][f"fixed:{name}"]["summary"]
        ax.scatter(s["mean_cost"]["mean"], s["accuracy"]["mean"], marker="s", color=f"C{k + 3}")
        ax.annotate(name, (s["mean_cost"]["mean"], s["accuracy"]["mean"]), fontsize=8)
    for name, marker in (("random", "x"), ("oracle", "*")):
        s = out["results"][name]["summary"]
        ax.scatter(s["mean_cost"]["mean"], s["accuracy"]["mean"], marker=marker, s=80, label=name)
    for k, name in enumerate(("SONA", "bandit")):
        pts = out["sweep"].get(name, [])
        if pts:
            ax.plot(
                [p["mean_cost"] for p in pts],
                [p["accuracy"] for p in pts],
                marker="o",
                color=f"C{k}",
                label=f"{name} (cost-weight sweep)",
            )
    ax.set_xlabel("mean cost per query")
    ax.set_ylabel("accuracy")
    ax.set_xscale("log")
    ax.set_title("cost–quality")
    ax.legend(fontsize=8)
    paths.append(save_figure(fig, f"{prefix}-cost-quality.png"))
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI options of ``sona eval routing``."""
    parser.add_argument("--seeds", type=int, default=5, help="seeds (mean ± std over them)")
    parser.add_argument("--queries", type=int, default=RoutingConfig.queries, help="stream length")
    parser.add_argument("--window", type=int, default=RoutingConfig.window, help="window size")
    parser.add_argument("--no-drift", action="store_true", help="no class-mix flip halfway")
    parser.add_argument(
        "--learn-every", type=int, default=LEARN_EVERY, help="queries per loop-B cycle"
    )
    parser.add_argument(
        "--sweep-seeds", type=int, default=RoutingConfig.sweep_seeds, help="seeds of the sweep"
    )
    parser.add_argument(
        "--sweep",
        default=",".join(f"{c:g}" for c in SWEEP),
        help="comma-separated cost weights of the cost–quality sweep ('' to skip it)",
    )
    parser.add_argument(
        "--tune", action="store_true", help="grid-search the settings on the validation part"
    )
    parser.add_argument("--json", metavar="OUT.json", help="write the results as JSON")
    parser.add_argument(
        "--plot", metavar="PREFIX", help="write PREFIX-learning.png and PREFIX-cost-quality.png"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _floats(text: str) -> tuple[float, ...]:
    from sona.errors import ConfigError

    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise ConfigError(f"--sweep: expected comma-separated numbers, got {text!r}") from exc
    if any(not (0.0 <= v <= 1000.0) for v in values):
        raise ConfigError(f"--sweep: cost weights must be in [0, 1000], got {text!r}")
    return values


def config_from_args(args: argparse.Namespace) -> RoutingConfig:
    """The run configuration the CLI options describe."""
    return RoutingConfig(
        seeds=args.seeds,
        queries=args.queries,
        window=args.window,
        drift=not args.no_drift,
        learn_every=args.learn_every,
        sweep=_floats(args.sweep),
        sweep_seeds=args.sweep_seeds,
    )


def main(args: argparse.Namespace) -> int:
    """``sona eval routing``."""
    from sona.errors import ConfigError

    if args.seeds < 1 or args.queries < 2 * args.window or args.window < 1:
        raise ConfigError("need --seeds ≥ 1, --window ≥ 1 and --queries ≥ 2 × --window")
    cfg = config_from_args(args)
    if args.tune:
        tuned = tune(cfg, progress=not args.no_progress)
        for name, res in tuned.items():
            print(f"{name}: best on validation {res['best']} → {res['best_validation']}")
        cfg.sona = {**cfg.sona, **tuned["SONA"]["best"]}
        cfg.bandit = {k: v for k, v in tuned["bandit"]["best"].items() if k != "cost_weight"}
    out = run(cfg, progress=not args.no_progress)
    if args.tune:
        out["tuning"] = tuned
    print(format_table(out))
    if args.json:
        write_json(args.json, out)
        print(f"wrote {args.json}")
    if args.plot:
        for path in plot(out, args.plot):
            print(f"wrote {path}")
    return 0


def _register() -> None:
    from sona import cli

    cli.EVALS["routing"] = (
        "cost-aware routing of digits over 4 real classifiers, with drift (design §11.3)",
        add_arguments,
        main,
    )


_register()
