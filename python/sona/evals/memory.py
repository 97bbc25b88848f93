"""Memory curation: does the ReasoningBank stay bounded when traffic repeats?

``sona eval memory-curation`` replays the same clustered traffic several times and reports the
pattern count after each extraction for three configurations of the bank:

- ``sona``: the defaults (bisecting refinement of incoherent clusters + spread-aware merge);
- ``plain-merge``: design §5's plain τ_merge rule (merge when cos ≥ τ_merge, k = √(n/2), no
  refinement);
- ``exact-only``: τ_merge = 1 without slack: only clusters identical to a pattern merge.

A bounded memory keeps the count flat after the first extraction. ``sona bench reasoning-bank`` runs
the extraction-time / latency / memory benchmark of ``benches/reasoning_bank.py``.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from sona._fsio import write_json
from sona.reasoning import ReasoningBank

CONFIGS: dict[str, dict[str, Any]] = {
    "sona": {},
    "plain-merge": {"min_cohesion": None, "merge_slack": None, "max_clusters": 128},
    "exact-only": {"merge_threshold": 1.0, "merge_slack": None},
}


def clustered(n: int, groups: int, d: int, seed: int, spread: float = 0.48) -> np.ndarray:
    """``n`` unit vectors around ``groups`` random unit centres (cosine ≈ 1/√(1+spread²))."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((groups, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, groups, n)]
    x = x + rng.standard_normal((n, d)).astype(np.float32) * (spread / np.sqrt(d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x, dtype=np.float32)


def curation(
    n: int = 2000, groups: int = 50, d: int = 256, replays: int = 3, seed: int = 0
) -> dict[str, list[int]]:
    """Pattern count after the first extraction and after each replay, per configuration."""
    x = clustered(n, groups, d, seed)
    out: dict[str, list[int]] = {}
    for name, kwargs in CONFIGS.items():
        bank = ReasoningBank(d, seed=seed, **kwargs)
        counts = []
        for _ in range(replays + 1):
            for i, v in enumerate(x):
                bank.add_trajectory(v, 0.5, i % 4, ts_ms=0)
            bank.extract_patterns()
            counts.append(len(bank))
        out[name] = counts
    return out


def _add_curation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=10_000, help="trajectories per replay")
    p.add_argument("--groups", type=int, default=100, help="query groups in the traffic")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--replays", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the result to this file")


def _run_curation(args: argparse.Namespace) -> int:
    res = curation(args.n, args.groups, args.dim, args.replays, args.seed)
    print(
        f"pattern count after each extraction of the same {args.n} trajectories "
        f"({args.groups} groups, d={args.dim})"
    )
    header = " ".join(f"{'replay ' + str(i) if i else 'first':>9}" for i in range(args.replays + 1))
    print(f"{'config':<12} {header}")
    for name, counts in res.items():
        print(f"{name:<12} " + " ".join(f"{c:>9}" for c in counts))
    if args.json:
        settings = {k: v for k, v in vars(args).items() if not callable(v)}
        write_json(args.json, {"args": settings, "counts": res})
    return 0


def _add_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--big", action="store_true", help="include 100k trajectories")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", help="write the results to this file")


def _run_bench(args: argparse.Namespace) -> int:
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[3] / "benches" / "reasoning_bank.py"
    if not script.exists():
        print(f"benchmark script not found at {script} (run from a source checkout)")
        return 2
    argv = [str(script), "--repeats", str(args.repeats)]
    if args.big:
        argv.append("--big")
    if args.json:
        argv += ["--json", args.json]
    saved, sys.argv = sys.argv, argv
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        sys.argv = saved
    return 0


def _register() -> None:
    from sona import cli

    cli.EVALS["memory-curation"] = (
        "pattern count when the same traffic is replayed (bounded memory)",
        _add_curation_args,
        _run_curation,
    )
    cli.BENCHES["reasoning-bank"] = (
        "ReasoningBank extraction time, latency and memory per trajectory/pattern",
        _add_bench_args,
        _run_bench,
    )


_register()
