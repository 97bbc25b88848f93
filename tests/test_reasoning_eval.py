"""The memory-curation evaluation, small and fast: replayed traffic keeps the bank's size flat."""

from __future__ import annotations

from sona import cli
from sona.evals import memory


def test_replays_keep_pattern_count_flat_unlike_plain_merge() -> None:
    res = memory.curation(n=3000, groups=60, d=64, replays=2, seed=1)
    sona, plain = res["sona"], res["plain-merge"]
    assert 54 <= sona[0] <= 66, res
    assert sona[-1] == sona[0], res  # no growth over 2 replays
    assert plain[-1] - plain[0] > 5, res  # the bare rule keeps adding patterns


def test_cli_registers_the_jobs() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["eval", "memory-curation", "--n", "10"])
    assert args.n == 10
    assert "reasoning-bank" in cli.BENCHES
