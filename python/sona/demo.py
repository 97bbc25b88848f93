"""``sona demo``: a short tour that shows SONA learning, on data built in or shipped with sklearn.

Each step runs one of the built-in evaluations (SPEC §11) with settings small enough for a laptop
and writes its table, JSON and plot under the output directory:

1. adaptation from scalar feedback (LoRA learns input-dependent corrections from a reward alone),
2. continual learning on real digits (EWC++ and replay against no protection),
3. memory search (approximate recall and speed against exact search, with inserts and deletes),
4. ReasoningBank (patterns extracted from trajectories; replaying traffic adds no pattern).

Steps whose component is not part of this build are skipped with a note.
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


STEPS: tuple[Step, ...] = (
    Step(
        "Adaptation from scalar feedback (SPEC §11.1)",
        "adapt",
        lambda out, quick: [
            "--seeds", "1" if quick else "3",
            "--feedbacks", "1000" if quick else "2000",
            "--json", str(out / "adapt.json"),
            "--plot", str(out / "adapt.png"),
            "--quiet",
        ],
    ),
    Step(
        "Continual learning on scikit-learn digits (SPEC §11.2)",
        "continual",
        lambda out, quick: [
            "--benchmark", "permuted",
            "--seeds", "1" if quick else "3",
            "--json", str(out / "continual.json"),
            "--plot", str(out / "continual.png"),
        ],
    ),
    Step(
        "Memory search: approximate vs exact (SPEC §11.4)",
        "search",
        lambda out, quick: [
            "--sizes", "10000",
            "--dims", "256" if quick else "256,768",
            "--queries", "100",
            "--churn-ops", "100",
            "--json", str(out / "search.json"),
        ],
    ),
    Step(
        "ReasoningBank: replayed traffic does not grow memory (SPEC §5)",
        "memory-curation",
        lambda out, quick: [
            "--n", "4000" if quick else "10000",
            "--groups", "40" if quick else "100",
            "--replays", "2" if quick else "3",
            "--json", str(out / "memory.json"),
        ],
    ),
)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI options of ``sona demo``."""
    parser.add_argument("--out", default="sona-demo", help="directory for JSON results and plots")
    parser.add_argument("--quick", action="store_true", help="smaller settings (about a minute)")


def run(args: argparse.Namespace) -> int:
    """Run every available step; return non-zero if any step failed."""
    from sona import cli

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for number, step in enumerate(STEPS, 1):
        print(f"\n[{number}/{len(STEPS)}] {step.title}")
        if step.job not in cli.EVALS:
            print(f"    skipped: `sona eval {step.job}` is not part of this build")
            continue
        argv = ["eval", step.job, *step.argv(out, args.quick)]
        print("    $ sona " + " ".join(argv))
        started = time.perf_counter()
        code = cli.main(argv)
        print(f"    ({time.perf_counter() - started:.1f} s, exit {code})")
        failures += code != 0
    print(f"\nResults and plots are in {out.resolve()}")
    return 1 if failures else 0
