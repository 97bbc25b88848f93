"""Latency of sona.lora calls from Python (p50/p99, perf_counter_ns loops).

Same calls as ``cargo bench -p sona-lora``: forward, batch forward (32 rows), gradient step,
explored forward, reward update, merge — at d ∈ {256, 768, 4096}, r ∈ {1, 2, 8, 16}. Targets
(design §10): micro forward d=768 r=2 ≤ 3 µs, micro reward update d=768 r=2 ≤ 5 µs.

    python benches/lora_latency.py [--repeat 2000] [--dims 256,768,4096] [--ranks 1,2,8,16]
                                   [--json out]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any

import numpy as np

from sona.evals._timing import latency_us
from sona.lora import BaseLoRA, MicroLoRA


def timeit_reward(m: MicroLoRA, x: np.ndarray, repeat: int) -> tuple[float, float]:
    """``reward(token, r)`` alone: each token comes from an untimed explored forward."""
    samples = np.empty(repeat)
    clock = time.perf_counter_ns
    for i in range(repeat):
        _y, token = m.forward(x, explore=True)
        t0 = clock()
        m.reward(token, 0.6)
        samples[i] = clock() - t0
    return float(np.percentile(samples, 50) / 1e3), float(np.percentile(samples, 99) / 1e3)


def bench(d: int, r: int, repeat: int) -> dict[str, tuple[float, float]]:
    """Every call at one size."""
    rng = np.random.default_rng(0)
    m = MicroLoRA(d, rank=r, seed=1, capacity=4096)
    m.set_weights(m.lora_A, (rng.standard_normal((d, r)) * 0.05).astype(np.float32))
    x = (rng.standard_normal(d) / np.sqrt(d)).astype(np.float32)
    e = (rng.standard_normal(d) * 1e-3).astype(np.float32)
    X = (rng.standard_normal((32, d)) / np.sqrt(d)).astype(np.float32)
    out = {
        "forward": latency_us(lambda: m.forward(x), repeat),
        "forward_batch_32": latency_us(lambda: m.forward_batch(X), max(50, repeat // 10)),
        "gradient_step": latency_us(lambda: m.update(x, e), repeat),
        "forward_explore": latency_us(lambda: m.forward(x, explore=True), repeat),
        "reward_update": timeit_reward(m, x, repeat),
    }
    base = BaseLoRA(d, rank=r, seed=2)
    base.set_weights(base.lora_A, (rng.standard_normal((d, r)) * 0.05).astype(np.float32))
    micro = MicroLoRA(d, rank=2, seed=3)

    def merge() -> None:
        micro.set_weights(micro.lora_A, np.full((d, 2), 0.01, np.float32))
        base.merge_from(micro)

    out["merge_r+2 (incl. set_weights)"] = latency_us(merge, max(20, repeat // 50))
    return out


def main() -> int:
    """Print the p50/p99 table (µs) and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--dims", default="256,768,4096")
    parser.add_argument("--ranks", default="1,2,8,16")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": platform.processor() or platform.machine(), "rows": []}
    print(f"{'call':>30} {'d':>5} {'r':>3} {'p50 µs':>9} {'p99 µs':>9}")
    for d in (int(v) for v in args.dims.split(",")):
        for r in (int(v) for v in args.ranks.split(",")):
            for name, (p50, p99) in bench(d, r, args.repeat).items():
                print(f"{name:>30} {d:>5} {r:>3} {p50:>9.2f} {p99:>9.2f}")
                results["rows"].append({"call": name, "d": d, "r": r, "p50_us": p50, "p99_us": p99})
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
