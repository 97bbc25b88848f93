"""``sona report DIR``: what a saved engine learned, as a table and plots.

Reads a directory written by :meth:`sona.engine.SONAEngine.save` and reports its
:meth:`~sona.engine.SONAEngine.improvement_metrics` — per window of feedback: mean reward, mean
cost, mean utility, estimated regret against the best fixed tier, tier shares; the relative regret
reduction between windows (``weekly_gain`` is the latest), Φ of the memory graph, p50/p99 latency
per operation (``process``, ``feedback``, ``background_learn``, ``deep_learn``) — and its counters.
PNGs: the learning curve (reward per window), regret per window, and cost against reward per window
(the engine's cost–quality path). With ``--continual FILE.json`` (written by
``sona eval continual --json``) it also draws each method's accuracy matrix ``R`` as a heat map.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from sona._plot import pyplot, save_figure


def load_metrics(directory: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``improvement_metrics()`` and ``stats()`` of the engine saved in ``directory``."""
    from sona.engine import SONAEngine

    engine = SONAEngine.load(directory)
    try:
        return engine.improvement_metrics(), engine.stats()
    finally:
        engine.close()


def format_report(metrics: dict[str, Any], stats: dict[str, Any]) -> str:
    """A plain-text table of the windows and a summary."""
    windows = metrics.get("windows", [])
    head = ("window", "n", "reward", "cost", "utility", "regret")
    lines = [" ".join(f"{h:>{w}}" for h, w in zip(head, (6, 7, 8, 8, 8, 8), strict=True))]
    lines[0] += "  tier shares"
    for w in windows:
        shares = " ".join(f"{s:.2f}" for s in w.get("tier_shares", []))
        lines.append(
            f"{w['index']:>6} {w['n']:>7} {w['mean_reward']:8.4f} {w['mean_cost']:8.3f} "
            f"{w['mean_utility']:8.4f} {w['regret']:8.4f}  {shares}"
        )
    overall = metrics.get("overall", {})
    lines.append("")
    if overall:
        o = {k: overall.get(k, 0) for k in ("n", "mean_reward", "mean_cost", "regret")}
        lines.append(
            f"overall: {o['n']} feedbacks, reward {o['mean_reward']:.4f}, "
            f"cost {o['mean_cost']:.3f}, estimated regret {o['regret']:.4f}"
        )
    gain, phi = metrics.get("weekly_gain"), metrics.get("phi")
    lines.append(
        "weekly_gain (regret reduction, latest window vs the one before): "
        + ("n/a" if gain is None else f"{gain:+.3f}")
    )
    lines.append(
        "phi (memory-graph integration proxy): " + ("n/a" if phi is None else f"{phi:.4f}")
    )
    latency = metrics.get("latency") or {}
    if latency:
        lines.append("latency (µs, successful calls):     count       p50       p99")
        for op, h in latency.items():
            p50, p99 = h.get("p50_us"), h.get("p99_us")
            cell = "n/a" if p50 is None else f"{p50:9.1f} {p99:9.1f}"
            lines.append(f"  {op:<32} {h.get('count', 0):>9} {cell:>19}")
    keys = ("processed", "feedbacks", "patterns", "loop_b_runs", "generation", "memory_bytes")
    lines.append("counters: " + ", ".join(f"{k} {stats[k]}" for k in keys if k in stats))
    return "\n".join(lines)


def plot(
    metrics: dict[str, Any], prefix: str, continual: dict[str, Any] | None = None
) -> list[str]:
    """Write the PNGs; returns their paths."""
    plt = pyplot()

    windows = metrics.get("windows", [])
    paths = []
    if windows:
        idx = np.arange(1, len(windows) + 1)
        for key, label, name in (
            ("mean_reward", "mean reward", "learning"),
            ("regret", "estimated regret vs best fixed tier", "regret"),
        ):
            fig, ax = plt.subplots(figsize=(6, 3.5))
            ax.plot(idx, [w[key] for w in windows], marker="o")
            ax.set_xlabel(f"window ({metrics.get('window', '?')} feedbacks each)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            paths.append(save_figure(fig, f"{prefix}-{name}.png"))
        fig, ax = plt.subplots(figsize=(5, 4))
        sc = ax.scatter(
            [w["mean_cost"] for w in windows], [w["mean_reward"] for w in windows], c=idx
        )
        fig.colorbar(sc, ax=ax, label="window")
        ax.set_xlabel("mean cost per query")
        ax.set_ylabel("mean reward")
        ax.set_title("cost–quality path of the engine")
        paths.append(save_figure(fig, f"{prefix}-cost-quality.png"))
    if continual is not None:
        for bench, methods in continual.get("results", {}).items():
            names = [m for m, r in methods.items() if "R_mean" in r]
            if not names:
                continue
            fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3), squeeze=False)
            for ax, m in zip(axes[0], names, strict=True):
                r = np.asarray(methods[m]["R_mean"], dtype=float)
                ax.imshow(r, vmin=0, vmax=100, cmap="viridis")
                ax.set_title(m, fontsize=9)
                ax.set_xlabel("task evaluated")
                ax.set_ylabel("after training task")
            paths.append(save_figure(fig, f"{prefix}-R-{bench}.png"))
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI options of ``sona report``."""
    parser.add_argument("directory", help="a directory written by SONAEngine.save")
    parser.add_argument(
        "--out", default="sona-report", metavar="PREFIX", help="prefix of the PNGs written"
    )
    parser.add_argument(
        "--continual", metavar="FILE.json", help="results of `sona eval continual --json`"
    )
    parser.add_argument("--json", metavar="OUT.json", help="write the metrics as JSON")
    parser.add_argument("--no-plots", action="store_true", help="only print the table")


def main(args: argparse.Namespace) -> int:
    """``sona report``."""
    metrics, stats = load_metrics(args.directory)
    print(format_report(metrics, stats))
    if args.json:
        Path(args.json).write_text(json.dumps({"metrics": metrics, "stats": stats}, indent=1))
        print(f"wrote {args.json}")
    if not args.no_plots:
        continual = json.loads(Path(args.continual).read_text()) if args.continual else None
        for path in plot(metrics, args.out, continual):
            print(f"wrote {path}")
    return 0
