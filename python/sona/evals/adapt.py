"""Adaptation from scalar feedback (design §11.1): ``sona eval adapt``.

``d = 256``; 4 query clusters with unit centres, queries at cosine ≈ 0.9 to their centre; each
cluster has a hidden unit target direction orthogonal to its centre. The adapter's output for a
query should point at its cluster's target, but the learner only ever sees
``reward = (1 + cos(output, target)) / 2`` of the (explored) output it produced. Score = mean
``cos(output, target)`` on held-out queries, without exploration. Phase A trains the first half of
the clusters ({0, 1} of 4) for ``feedbacks`` rewards, phase B the rest ({2, 3}).

``--dims`` and ``--clusters`` run the grid of sizes (issue 10 item 6: d ∈ {128 … 1024}, 4-8
clusters) and print one row per (d, clusters, method) with the own-phase scores and the feedback
budget each phase had. The grid's budget is ``--feedbacks auto`` by default:
:func:`sona.lora.feedback_budget` of d and the clusters a phase trains (``6·d`` rewards per
cluster), because a scalar reward carries one measurement of a d-dimensional direction and no
step, noise or baseline setting makes a fixed budget enough at every d. Step, noise and bound are
the library's d-scaled defaults (:func:`sona.lora.scaled_defaults`) unless overridden.

Methods (all with the same REINFORCE step, step size and exploration):

* ``micro`` — a :class:`~sona.lora.MicroLoRA` alone (rank 2, Frobenius bound, slow decay);
* ``two_tier`` — :class:`~sona.lora.TwoTierLoRA`: the rank-2 micro tier merged into a rank-8 base
  every ``merge_every`` rewards;
* ``plain`` — a plain rank-2 LoRA trained the same way (same clipped step), without the micro tier's
  Frobenius bound and decay.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from sona._fsio import write_json
from sona._plot import pyplot, save_figure
from sona.errors import NumericalError
from sona.lora import MicroLoRA, TwoTierLoRA, feedback_budget

METHODS = ("micro", "two_tier", "plain")


@dataclass
class AdaptSettings:
    """Everything that defines one run of the benchmark."""

    d: int = 256
    clusters: int = 4
    query_cos: float = 0.9
    #: Rewards per phase; None: :func:`sona.lora.feedback_budget` of ``d`` and the clusters of the
    #: larger phase (see :meth:`phase_budget`).
    feedbacks: int | None = 2000
    holdout: int = 50
    eval_every: int = 250
    rank: int = 2
    base_rank: int = 8
    alpha: float = 20.0
    #: None: the library defaults for this d (sona.lora.default_lr / default_sigma).
    lr: float | None = None
    momentum: float = 0.9
    sigma: float | None = None
    baseline_rate: float = 0.05
    merge_every: int = 1000
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])

    def phase_budget(self) -> int:
        """Rewards each phase gets: ``feedbacks``, or the library's budget for ``d`` and the
        clusters the larger phase trains."""
        if self.feedbacks is not None:
            return self.feedbacks
        return feedback_budget(self.d, max(len(p) for p in phases(self.clusters)))


class Task:
    """Cluster centres, hidden targets and query sampling for one seed."""

    def __init__(self, seed: int, s: AdaptSettings) -> None:
        self.rng = np.random.default_rng(seed)
        self.s = s
        c = self.rng.standard_normal((s.clusters, s.d))
        c /= np.linalg.norm(c, axis=1, keepdims=True)
        t = self.rng.standard_normal((s.clusters, s.d))
        t -= np.sum(t * c, axis=1, keepdims=True) * c
        t /= np.linalg.norm(t, axis=1, keepdims=True)
        self.centres = c.astype(np.float32)
        self.targets = t.astype(np.float32)
        self.holdout = [self.queries(k, s.holdout) for k in range(s.clusters)]

    def queries(self, k: int, n: int) -> np.ndarray:
        """``n`` unit queries at cosine ``query_cos`` to centre ``k``."""
        c = self.centres[k].astype(np.float64)
        noise = self.rng.standard_normal((n, self.s.d))
        noise -= np.outer(noise @ c, c)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        q = self.s.query_cos * c + np.sqrt(1.0 - self.s.query_cos**2) * noise
        return np.ascontiguousarray(q, dtype=np.float32)


def _cos_rows(Y: np.ndarray, t: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(Y, axis=1) * np.linalg.norm(t)
    out: np.ndarray = (Y @ t) / np.maximum(norms, 1e-12)
    return out


def _score(model: Any, task: Task, ks: tuple[int, ...]) -> float:
    vals = [_cos_rows(model.forward_batch(task.holdout[k]), task.targets[k]) for k in ks]
    return float(np.mean(np.concatenate(vals)))


def make_model(method: str, s: AdaptSettings, seed: int) -> Any:
    """The adapter a method trains (identity ``W``: the output starts equal to the query)."""
    common: dict[str, Any] = dict(
        alpha=s.alpha,
        lr=s.lr,
        momentum=s.momentum,
        sigma=s.sigma,
        baseline_rate=s.baseline_rate,
        seed=seed,
    )
    if method == "micro":
        return MicroLoRA(s.d, rank=s.rank, **common)
    if method == "plain":
        return MicroLoRA(s.d, rank=s.rank, max_norm=float("inf"), decay=0.0, **common)
    if method == "two_tier":
        return TwoTierLoRA(
            s.d,
            base_rank=s.base_rank,
            micro_rank=s.rank,
            micro_alpha=s.alpha,
            merge_every=s.merge_every,
            lr=s.lr,
            momentum=s.momentum,
            sigma=s.sigma,
            baseline_rate=s.baseline_rate,
            seed=seed,
        )
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def phases(clusters: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Clusters trained in phase A (the first half) and in phase B (the rest)."""
    if clusters < 2:
        raise ValueError(f"clusters must be >= 2, got {clusters}")
    half = clusters // 2
    return tuple(range(half)), tuple(range(half, clusters))


def run_one(method: str, seed: int, s: AdaptSettings) -> dict[str, Any]:
    """Both phases for one method and seed; returns the three scores and the learning curve."""
    task = Task(seed, s)
    model = make_model(method, s, seed)
    phase_a, phase_b = phases(s.clusters)
    curve: list[tuple[int, float, float]] = []
    out: dict[str, Any] = {"untrained_A": _score(model, task, phase_a)}
    step = 0
    rejected = 0
    budget = s.phase_budget()
    for phase, ks in (("A", phase_a), ("B", phase_b)):
        picks = task.rng.integers(0, len(ks), size=budget)
        for i in range(budget):
            k = ks[int(picks[i])]
            x = task.queries(k, 1)[0]
            y, token = model.forward(x, explore=True)
            t = task.targets[k]
            cos = float(y @ t) / max(float(np.linalg.norm(y)), 1e-12)
            try:
                model.reward(token, min(max((1.0 + cos) / 2.0, 0.0), 1.0))
            except NumericalError:
                rejected += 1  # refused and counted by the adapter; the run goes on
            step += 1
            if step % s.eval_every == 0:
                curve.append((step, _score(model, task, phase_a), _score(model, task, phase_b)))
        if phase == "A":
            out["A_after_A"] = _score(model, task, phase_a)
        else:
            out["A_after_B"] = _score(model, task, phase_a)
            out["B_after_B"] = _score(model, task, phase_b)
    out["curve"] = curve
    out["rejected"] = rejected
    out["feedbacks"] = budget
    return out


def run(
    s: AdaptSettings,
    methods: tuple[str, ...] = METHODS,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every method × seed; returns per-run results and mean/std summaries."""
    results: dict[str, Any] = {"settings": asdict(s), "methods": {}}
    for method in methods:
        runs = []
        for seed in s.seeds:
            t0 = time.perf_counter()
            r = run_one(method, seed, s)
            r["seconds"] = time.perf_counter() - t0
            runs.append(r)
            if progress:
                progress(
                    f"{method:>8} seed {seed}: A after A {r['A_after_A']:+.3f}, "
                    f"A after B {r['A_after_B']:+.3f}, B after B {r['B_after_B']:+.3f} "
                    f"({r['seconds']:.1f}s)"
                )
        summary = {}
        for key in ("untrained_A", "A_after_A", "A_after_B", "B_after_B"):
            vals = np.array([r[key] for r in runs])
            summary[key] = {"mean": float(vals.mean()), "std": float(vals.std())}
        results["methods"][method] = {"runs": runs, "summary": summary}
    return results


def grid(
    s: AdaptSettings,
    dims: list[int],
    clusters: list[int],
    methods: tuple[str, ...] = METHODS,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """:func:`run` for every (d, clusters); one summary row per (d, clusters, method)."""
    rows = []
    for d in dims:
        for k in clusters:
            sk = AdaptSettings(**{**asdict(s), "d": d, "clusters": k})
            res = run(sk, methods)
            for method, data in res["methods"].items():
                row = {"d": d, "clusters": k, "method": method, "feedbacks": sk.phase_budget()}
                row.update({key: v["mean"] for key, v in data["summary"].items()})
                row["own_min"] = min(min(r["A_after_A"], r["B_after_B"]) for r in data["runs"])
                rows.append(row)
                if progress:
                    progress(grid_table([row], header=False))
    return rows


def grid_table(rows: list[dict[str, Any]], header: bool = True) -> str:
    """Grid rows as a markdown table: mean own-phase scores and the worst seed's."""
    lines = []
    if header:
        lines.append(
            "| d | clusters | feedbacks per phase | method | A after A | B after B | A after B "
            "| worst own |"
        )
        lines.append("|---|---|---|---|---|---|---|---|")
    for r in rows:
        lines.append(
            f"| {r['d']} | {r['clusters']} | {r['feedbacks']} | {r['method']} | "
            f"{r['A_after_A']:+.3f} | {r['B_after_B']:+.3f} | {r['A_after_B']:+.3f} | "
            f"{r['own_min']:+.3f} |"
        )
    return "\n".join(lines)


def table(results: dict[str, Any]) -> str:
    """The summary as a fixed-width text table (mean ± std over seeds)."""
    lines = [
        f"{'method':>10} | {'untrained':>15} | {'A after A':>15} | {'A after B':>15} | "
        f"{'B after B':>15}"
    ]
    lines.append("-" * len(lines[0]))
    for method, data in results["methods"].items():
        cells = [
            f"{data['summary'][k]['mean']:+.3f} ± {data['summary'][k]['std']:.3f}"
            for k in ("untrained_A", "A_after_A", "A_after_B", "B_after_B")
        ]
        lines.append(f"{method:>10} | " + " | ".join(f"{c:>15}" for c in cells))
    return "\n".join(lines)


def plot(results: dict[str, Any], path: str) -> None:
    """Learning curves (held-out score of both phases' clusters vs feedbacks, mean over seeds)."""
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    feedbacks = results["methods"][next(iter(results["methods"]))]["runs"][0]["feedbacks"]
    for method, data in results["methods"].items():
        curves = np.array([r["curve"] for r in data["runs"]])  # seeds × points × 3
        steps = curves[0, :, 0]
        for ax, col, name in ((axes[0], 1, "clusters {0,1}"), (axes[1], 2, "clusters {2,3}")):
            ax.plot(steps, curves[:, :, col].mean(axis=0), label=method)
            ax.set_title(f"held-out cos(output, target): {name}")
    for ax in axes:
        ax.axvline(feedbacks, color="grey", ls=":", lw=1)
        ax.axhline(0.7, color="grey", ls="--", lw=0.8)
        ax.set_xlabel("feedbacks (phase A | phase B)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("score")
    axes[0].legend()
    save_figure(fig, path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI options of ``sona eval adapt``."""
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0..n-1)")
    parser.add_argument(
        "--feedbacks",
        default=None,
        help="rewards per phase, or 'auto' (sona.lora.feedback_budget of d and the clusters per "
        "phase); default 2000 for a single run, auto for the --dims/--clusters grid",
    )
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods")
    parser.add_argument("--json", metavar="PATH", help="write the full results as JSON")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of the learning curves")
    parser.add_argument("--quiet", action="store_true", help="print only the table")
    parser.add_argument("--dims", help="comma-separated d values: run the size grid")
    parser.add_argument("--clusters", help="comma-separated cluster counts for the grid")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are first..first+n-1")


def _feedbacks_arg(value: str | int | None, default: int | None) -> int | None:
    """``--feedbacks``: a positive int, ``auto`` (None: the library budget), or unset
    (``default``)."""
    from sona.errors import ConfigError

    if value is None:
        return default
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"--feedbacks must be a positive integer or 'auto', got {value!r}"
        ) from None
    if n < 1:
        raise ConfigError(f"--feedbacks must be >= 1, got {n}")
    return n


def main(args: argparse.Namespace) -> int:
    """Entry point of ``sona eval adapt``."""
    from sona.errors import ConfigError

    is_grid = bool(args.dims or args.clusters)
    feedbacks = _feedbacks_arg(args.feedbacks, None if is_grid else 2000)
    if args.seeds < 1:
        raise ConfigError("--seeds must be >= 1")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    s = AdaptSettings(feedbacks=feedbacks, seeds=seeds)
    if is_grid:
        s.eval_every = 10**12  # the grid reports end-of-phase scores only
    else:
        s.eval_every = max(1, min(s.eval_every, s.phase_budget() // 4 or 1))
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if is_grid:
        dims = [int(v) for v in (args.dims or str(s.d)).split(",")]
        ks = [int(v) for v in (args.clusters or str(s.clusters)).split(",")]
        if min(dims) < 1 or min(ks) < 2:
            raise ConfigError("--dims must be >= 1 and --clusters >= 2")
        rows = grid(s, dims, ks, methods, progress=None if args.quiet else print)
        print(grid_table(rows))
        if args.json:
            write_json(args.json, {"settings": asdict(s), "grid": rows})
        return 0
    results = run(s, methods, progress=None if args.quiet else print)
    print(table(results))
    if args.json:
        write_json(args.json, results)
    if args.plot:
        plot(results, args.plot)
    return 0


def _register() -> None:
    from sona import cli

    cli.EVALS["adapt"] = (
        "adaptation from scalar feedback (design §11.1): micro, base+micro, plain rank-2",
        add_arguments,
        main,
    )


_register()
