"""Off-policy evaluation checked against reality (design §8): ``sona eval ope``.

Does logged traffic alone tell what another router would have earned? Per seed, on the routing
benchmark's digits and tiers (:mod:`sona.evals.routing`, test part, no drift):

1. **Log**: a :class:`~sona.engine.SONAEngine` routes a stream of ``--queries`` queries with
   ε-greedy exploration (``--epsilon``) and learns online (loops A and B). Every decision logs the
   chosen tier, its propensity, the reward, and the router's predicted reward of every tier.
   Halfway, the engine is saved: that checkpoint is the **frozen router**.
2. **Estimate** the value (mean reward) of target policies from the log alone — each fixed tier
   from the whole log, and the frozen router's greedy choice from the decisions logged *after* it
   was saved — with IPS, self-normalized IPS and doubly robust estimators (the reward model of DR
   is the logging router's own prediction at decision time), each with a 95 % normal interval
   (:mod:`sona.metrics`). The frozen router learned from the first half of the log, so its
   choices there depend on the logged actions and rewards (it tends to repeat what it saw
   rewarded): estimated on the whole log, the importance weights of its choices averaged
   1.05 ± 0.01 instead of 1 and DR read 0.021 ± 0.003 too high (30 seeds). A policy is evaluated on
   traffic it was not fit on.
3. **Measure** each target's value on-policy: run it on a fresh stream of ``--truth-queries``
   queries from the same distribution (another seed) and average the rewards.

Reported: per target and estimator, the estimate and interval per seed, the on-policy value, and
in how many seeds the interval covered it (target: ≥ 9 of 10 for the fixed tiers and the frozen
router). The estimator's interval has its nominal 95 % coverage only approximately (normal
approximation, an adaptive logging policy), so coverage is reported, not assumed.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sona._fsio import write_json
from sona.evals.routing import (
    SONA_TUNED,
    TIER_COSTS,
    TIER_NAMES,
    SonaPolicy,
    make_split,
    make_stream,
)

F64 = npt.NDArray[np.float64]
ESTIMATORS = ("ips", "snips", "dr")


@dataclass
class OpeConfig:
    """Everything a run depends on (stored in the JSON output)."""

    seeds: int = 10
    queries: int = 3000
    truth_queries: int = 6000
    epsilon: float = 0.2
    learn_every: int = 250
    level: float = 0.95


@dataclass
class Log:
    """What the logging policy recorded: one row per decision."""

    queries: npt.NDArray[np.int64]
    tiers: npt.NDArray[np.int64]
    propensities: F64
    rewards: F64
    predicted: F64  # (n, T): the logging router's predicted reward of every tier
    frozen_at: int  # decisions logged before the frozen router was saved

    def since(self, start: int) -> Log:
        """The decisions from index ``start`` on (``frozen_at`` counted from there, at least 0)."""
        return Log(
            self.queries[start:],
            self.tiers[start:],
            self.propensities[start:],
            self.rewards[start:],
            self.predicted[start:],
            max(self.frozen_at - start, 0),
        )


def _engine(dim: int, seed: int, epsilon: float) -> Any:
    """The routing benchmark's SONA engine (tuned settings), exploring with ``epsilon``."""
    return SonaPolicy(dim, {**SONA_TUNED, "epsilon": epsilon}, seed, learn_every=0).engine


def log_traffic(
    x: npt.NDArray[np.float32],
    correct: npt.NDArray[np.bool_],
    stream: npt.NDArray[np.int64],
    cfg: OpeConfig,
    seed: int,
    frozen_dir: str,
) -> Log:
    """Route ``stream`` with an exploring, learning engine; save it halfway to ``frozen_dir``."""
    n, t = len(stream), len(TIER_COSTS)
    tiers = np.empty(n, dtype=np.int64)
    props = np.empty(n)
    predicted = np.empty((n, t))
    engine = _engine(x.shape[1], seed, cfg.epsilon)
    frozen_at = n // 2
    try:
        for i, q in enumerate(stream):
            if i == frozen_at:
                engine.save(frozen_dir)
            d = engine.process(x[q])
            tiers[i] = d.tier
            props[i] = d.propensity
            predicted[i] = np.asarray(d.predicted, dtype=np.float64)
            engine.feedback(d.trajectory_id, float(correct[q, d.tier]))
            if cfg.learn_every and (i + 1) % cfg.learn_every == 0:
                engine.background_learn()
    finally:
        engine.close()
    rewards = correct[stream, tiers].astype(np.float64)
    return Log(stream, tiers, props, rewards, predicted, frozen_at)


def frozen_choices(x: npt.NDArray[np.float32], queries: npt.NDArray[np.int64], path: str) -> Any:
    """The frozen router's greedy tier for each query (no exploration, no learning)."""
    from sona.engine import SONAEngine

    engine = SONAEngine.load(path)
    try:
        out = np.empty(len(queries), dtype=np.int64)
        for i, q in enumerate(queries):
            d = engine.process(x[q])
            out[i] = int(np.argmax(np.asarray(d.utilities)))
        return out
    finally:
        engine.close()


def estimate(log: Log, target_tiers: npt.NDArray[np.int64], level: float) -> dict[str, Any]:
    """IPS, SNIPS and DR estimates of the deterministic policy choosing ``target_tiers``."""
    from sona.metrics import off_policy_value

    n, t = len(log.tiers), len(TIER_COSTS)
    target = np.zeros((n, t))
    target[np.arange(n), target_tiers] = 1.0
    out = {}
    for method in ESTIMATORS:
        e = off_policy_value(
            log.tiers,
            log.propensities,
            log.rewards,
            target,
            method=method,  # type: ignore[arg-type]
            reward_model=log.predicted,
            level=level,
        )
        out[method] = {"value": e.value, "low": e.low, "high": e.high, "ess": e.ess, "n": e.n}
    return out


def run_seed(cfg: OpeConfig, seed: int) -> dict[str, Any]:
    """One seed: log, estimate every target from the log, measure every target on-policy."""
    split = make_split(seed)
    x, y, correct = split.x["test"], split.y["test"], split.correct["test"]
    stream = make_stream(y, cfg.queries, seed, drift=False)
    fresh = make_stream(y, cfg.truth_queries, seed + 10_000, drift=False)
    targets: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        log = log_traffic(x, correct, stream, cfg, seed, tmp)
        after = log.since(log.frozen_at)
        frozen_logged = frozen_choices(x, after.queries, tmp)
        frozen_fresh = frozen_choices(x, fresh, tmp)
    for k, name in enumerate(TIER_NAMES):
        chosen = np.full(len(stream), k, dtype=np.int64)
        targets[f"always {name}"] = {
            "estimates": estimate(log, chosen, cfg.level),
            "on_policy": float(correct[fresh, k].mean()),
        }
    targets["frozen router"] = {
        "estimates": estimate(after, frozen_logged, cfg.level),
        "on_policy": float(correct[fresh, frozen_fresh].mean()),
    }
    for t in targets.values():
        for e in t["estimates"].values():
            e["covers"] = bool(e["low"] <= t["on_policy"] <= e["high"])
    return {
        "seed": seed,
        "logging_reward": float(log.rewards.mean()),
        "min_propensity": float(log.propensities.min()),
        "targets": targets,
    }


def run(cfg: OpeConfig, progress: bool = True) -> dict[str, Any]:
    """Every seed, and the coverage counts."""
    from tqdm.auto import tqdm

    seeds = [
        run_seed(cfg, s) for s in tqdm(range(cfg.seeds), desc="ope seeds", disable=not progress)
    ]
    names = list(seeds[0]["targets"])
    coverage = {
        name: {
            m: sum(s["targets"][name]["estimates"][m]["covers"] for s in seeds) for m in ESTIMATORS
        }
        for name in names
    }
    return {"config": asdict(cfg), "seeds": seeds, "coverage": coverage}


def format_table(out: dict[str, Any]) -> str:
    """Mean estimate vs mean on-policy value, and intervals covering the truth, per target."""
    seeds = out["seeds"]
    n = len(seeds)
    lines = [
        f"Off-policy estimates vs on-policy values ({n} seeds; interval covers truth in k/{n})",
        f"{'target':24} {'on-policy':>10} " + " ".join(f"{m:>16}" for m in ESTIMATORS),
    ]
    for name, cov in out["coverage"].items():
        truth = np.mean([s["targets"][name]["on_policy"] for s in seeds])
        cells = []
        for m in ESTIMATORS:
            est = np.mean([s["targets"][name]["estimates"][m]["value"] for s in seeds])
            cells.append(f"{est:8.4f} ({cov[m]:2d}/{n})")
        lines.append(f"{name:24} {truth:10.4f} " + " ".join(f"{c:>16}" for c in cells))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI options of ``sona eval ope``."""
    d = OpeConfig()
    parser.add_argument("--seeds", type=int, default=d.seeds, help="seeds")
    parser.add_argument("--queries", type=int, default=d.queries, help="logged decisions per seed")
    parser.add_argument(
        "--truth-queries", type=int, default=d.truth_queries, help="on-policy run length"
    )
    parser.add_argument("--epsilon", type=float, default=d.epsilon, help="logging exploration")
    parser.add_argument("--json", metavar="OUT.json", help="write the results as JSON")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def main(args: argparse.Namespace) -> int:
    """``sona eval ope``."""
    from sona.errors import ConfigError

    if args.seeds < 1 or args.queries < 100 or args.truth_queries < 100:
        raise ConfigError("need --seeds ≥ 1, --queries ≥ 100 and --truth-queries ≥ 100")
    if not 0.0 < args.epsilon <= 1.0:
        raise ConfigError("--epsilon must be in (0, 1]: off-policy estimates need exploration")
    cfg = OpeConfig(
        seeds=args.seeds,
        queries=args.queries,
        truth_queries=args.truth_queries,
        epsilon=args.epsilon,
    )
    out = run(cfg, progress=not args.no_progress)
    print(format_table(out))
    if args.json:
        write_json(args.json, out)
        print(f"wrote {args.json}")
    return 0


def _register() -> None:
    from sona import cli

    cli.EVALS["ope"] = (
        "off-policy estimates (IPS, SNIPS, DR) of routers from logged traffic vs their "
        "on-policy values (design §8)",
        add_arguments,
        main,
    )


_register()
