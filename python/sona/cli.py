"""The ``sona`` command line.

``sona --version``, ``sona info`` (version, SIMD level, build), and the entry points of the built-in
jobs: ``sona demo``, ``sona eval <name>``, ``sona bench <name>``. Each evaluation module registers
itself in :data:`EVALS` / :data:`BENCHES` with a function taking the parsed arguments.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Callable, Sequence
from typing import Any

import sona
from sona import _sona, demo

#: name -> (help, add_arguments, run). Filled by the evaluation modules as they land.
Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
EVALS: dict[str, Command] = {}
BENCHES: dict[str, Command] = {}


def info() -> dict[str, Any]:
    """What this build of SONA is and what it detected on this machine."""
    build = _sona.build_info()
    return {
        "version": sona.__version__,
        "simd": _sona.simd_level(),
        "build": build["profile"],
        "crates": build["crates"],
        "components": build["components"],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }


def _cmd_info(args: argparse.Namespace) -> int:
    data = info()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        for key, value in data.items():
            shown = ", ".join(value) if isinstance(value, list) else value
            print(f"{key:>10}: {shown}")
    return 0


def _add_group(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    table: dict[str, Command],
) -> None:
    parser = sub.add_parser(name, help=help_text)
    inner = parser.add_subparsers(dest="job", metavar="JOB")
    for job, (job_help, add_args, run) in sorted(table.items()):
        job_parser = inner.add_parser(job, help=job_help)
        add_args(job_parser)
        job_parser.set_defaults(func=run)
    parser.set_defaults(func=lambda a, p=parser: _missing_job(p, table))


def _missing_job(parser: argparse.ArgumentParser, table: dict[str, Command]) -> int:
    if not table:
        print(f"{parser.prog}: no jobs are available in this build yet", file=sys.stderr)
    else:
        parser.print_help(sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (exposed for tests and docs)."""
    _load_jobs()
    parser = argparse.ArgumentParser(
        prog="sona",
        description="SONA: self-optimizing routing and adaptation for LLM applications.",
    )
    parser.add_argument("--version", action="version", version=f"sona {sona.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p_info = sub.add_parser("info", help="version, SIMD level and platform")
    p_info.add_argument("--json", action="store_true", help="print JSON")
    p_info.set_defaults(func=_cmd_info)

    p_demo = sub.add_parser("demo", help="a short tour that shows SONA learning on built-in data")
    demo.add_arguments(p_demo)
    p_demo.set_defaults(func=demo.run)

    from sona import report

    p_report = sub.add_parser("report", help="tables and plots of what a saved engine learned")
    report.add_arguments(p_report)
    p_report.set_defaults(func=report.main)

    _add_group(sub, "eval", "run a built-in evaluation (see design §11)", EVALS)
    _add_group(sub, "bench", "run a latency/throughput benchmark", BENCHES)
    return parser


def _load_jobs() -> None:
    """Import the modules that register evaluations and benchmarks."""
    from sona import evals

    evals.load_all()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sona`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args))
    except sona.SonaError as exc:
        print(f"sona: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    # Under `python -m sona.cli` this file runs as `__main__`, while the evaluations register in the
    # imported `sona.cli` module: delegate to that one so both entry points see the same jobs.
    from sona import cli as _cli

    sys.exit(_cli.main())
