"""Memory-search benchmark (design §11.4) from Python: recall@10, p50/p99 latency and single-thread
queries/s of ``VectorIndex(kind="ivf")`` and ``VectorIndex(kind="hnsw")`` against exact search,
with insert and delete while searching. The same job as ``sona eval search``
(:func:`sona.evals.search.run`), with a header line.

    python benches/index_search.py                       # n ∈ {10k, 100k}, d ∈ {256, 768}
    python benches/index_search.py --sizes 10000 --dims 768 --json out.json

The 100k × 768 build takes minutes on a 2-core machine; timings are noisy when the machine is
shared, so compare the approx and exact columns of one run rather than runs with each other.
"""

from __future__ import annotations

import argparse
import platform

from sona import _sona
from sona.evals.search import add_arguments, run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args()
    print(
        f"SIMD: {_sona.simd_level()}  machine: {platform.machine()}  "
        f"ef_search={args.ef_search} nprobe≤{args.nprobe}"
    )
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
