"""Latency of the kernels called from Python (p50/p99 over many calls).

    python benches/kernels_latency.py [--calls 20000] [--json out.json]

The numbers include the Python → Rust call and argument extraction; compare with `cargo bench -p
sona-core` for the kernel alone.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import numpy as np

from sona import _sona
from sona.evals._timing import latency_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--json", help="write results to this file")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows: list[dict[str, object]] = []
    print(f"simd: {_sona.simd_level()}")
    print(f"{'kernel':<12}{'d':>6}{'p50 µs':>10}{'p99 µs':>10}")
    for d in (256, 768, 4096):
        a = rng.standard_normal(d).astype(np.float32)
        b = rng.standard_normal(d).astype(np.float32)
        m = rng.standard_normal((8, d)).astype(np.float32)
        cases: dict[str, Callable[[], object]] = {
            "dot": lambda a=a, b=b: _sona.dot(a, b),
            "cosine": lambda a=a, b=b: _sona.cosine(a, b),
            "normalize": lambda a=a: _sona.normalize(a),
            "matvec_8xd": lambda m=m, a=a: _sona.matvec(m, a),
        }
        for name, fn in cases.items():
            p50, p99 = latency_us(fn, args.calls, warmup=1000)
            rows.append({"kernel": name, "d": d, "p50_us": p50, "p99_us": p99})
            print(f"{name:<12}{d:>6}{p50:>10.2f}{p99:>10.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
