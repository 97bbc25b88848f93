"""``sona demo``: the product's main job on built-in data, no network.

It runs the cost-aware routing benchmark (design §11.3, ``sona eval routing``) in a short version:
four real classifiers of rising capacity and cost answer held-out digit images; :class:`SONAEngine`
routes each query, gets a reward when the chosen tier was right, learns online (loops A and B) and
adapts when the class mix of the traffic flips halfway. It prints the table against a random tier,
each fixed tier, the oracle and a plain contextual bandit, and writes JSON and PNGs (learning curve
with the drift marked, cost–quality curve) under ``--out``.

The component evaluations stay available under ``sona eval`` (adapt, continual, search,
memory-curation); ``--components`` runs short versions of them after the routing benchmark.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Step:
    """One demo step: a title, the evaluation it runs and how to build its arguments."""

    title: str
    job: str
    argv: Callable[[Path, bool], list[str]]


#: The demo itself: the routing benchmark, short.
STEPS: tuple[Step, ...] = (
    Step(
        "Cost-aware routing with SONAEngine on real classifiers, with drift (design §11.3)",
        "routing",
        lambda out, quick: [
            "--seeds", "1" if quick else "2",
            "--queries", "2000" if quick else "3000",
            "--sweep", "0.001,0.005,0.02" if quick else "0.0005,0.002,0.005,0.02",
            "--sweep-seeds", "1",
            "--json", str(out / "routing.json"),
            "--plot", str(out / "routing"),
        ],
    ),
)  # fmt: skip

#: Short versions of the component evaluations (``sona demo --components``).
COMPONENT_STEPS: tuple[Step, ...] = (
    Step(
        "Adaptation from scalar feedback (design §11.1)",
        "adapt",
        lambda out, quick: [
            "--seeds", "1",
            "--feedbacks", "1000" if quick else "2000",
            "--json", str(out / "adapt.json"),
            "--plot", str(out / "adapt.png"),
            "--quiet",
        ],
    ),
    Step(
        "Continual learning on scikit-learn digits (design §11.2)",
        "continual",
        lambda out, quick: [
            "--benchmark", "permuted",
            "--seeds", "1",
            "--json", str(out / "continual.json"),
            "--plot", str(out / "continual.png"),
        ],
    ),
    Step(
        "Memory search: approximate vs exact (design §11.4)",
        "search",
        lambda out, quick: [
            "--sizes", "10000",
            "--dims", "256",
            "--queries", "100",
            "--churn-ops", "100",
            "--json", str(out / "search.json"),
        ],
    ),
    Step(
        "ReasoningBank: replayed traffic does not grow memory (design §5)",
        "memory-curation",
        lambda out, quick: [
            "--n", "4000",
            "--groups", "40",
            "--replays", "2",
            "--json", str(out / "memory.json"),
        ],
    ),
)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI options of ``sona demo``."""
    parser.add_argument("--out", default="sona-demo", help="directory for JSON results and plots")
    parser.add_argument("--quick", action="store_true", help="smaller settings (about 20 s)")
    parser.add_argument(
        "--components",
        action="store_true",
        help="also run short versions of the component evaluations (a few minutes)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the routing benchmark (and the component steps if asked); non-zero if any failed."""
    from sona import cli

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = STEPS + (COMPONENT_STEPS if args.components else ())
    failures = 0
    for number, step in enumerate(steps, 1):
        print(f"\n[{number}/{len(steps)}] {step.title}")
        if step.job not in cli.EVALS:
            print(f"    skipped: `sona eval {step.job}` is not part of this build")
            continue
        argv = ["eval", step.job, *step.argv(out, args.quick)]
        print("    $ sona " + " ".join(argv))
        started = time.perf_counter()
        code = cli.main(argv)
        print(f"    ({time.perf_counter() - started:.1f} s, exit {code})")
        failures += code != 0
    if not args.components:
        print(
            "\nComponent evaluations: sona eval adapt | continual | search | memory-curation "
            "(or sona demo --components)"
        )
    print(f"\nResults and plots are in {out.resolve()}")
    return 1 if failures else 0
