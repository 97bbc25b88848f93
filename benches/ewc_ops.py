"""Latency of the EWC++ calls from Python (same as ``sona bench ewc``).

Usage: ``python benches/ewc_ops.py [--repeat N] [--json out.json]``
"""

from __future__ import annotations

import argparse
import sys

from sona.evals import ewc_bench

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    ewc_bench.add_arguments(parser)
    sys.exit(ewc_bench.main(parser.parse_args()))
