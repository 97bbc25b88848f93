"""Gateway benchmarks (issue 14): overhead under load, LiteLLM side by side, routing end to end.

``python benches/gateway.py overhead [--litellm-bin PATH]``
    A stub upstream that answers after a fixed 200 ms, the gateway (``sona serve``) in front of it,
    and a load generator keeping ``--concurrency`` requests in flight, each its own process on
    127.0.0.1. The same load runs direct to the upstream, through the gateway, and (when
    ``--litellm-bin`` names a ``litellm`` executable) through LiteLLM's proxy; overhead is each
    path's latency quantile minus the direct one. The gateway's own view (request time minus
    upstream time, ``sona_gateway_overhead_seconds``) is reported beside it.

``python benches/gateway.py e2e``
    Two local tiers of different cost and quality (stub models ``math-weak`` at 0.1 and
    ``math-strong`` at 1.0 per 1k tokens) answer a stream of labelled arithmetic questions; each
    answer is checked and the result sent as feedback. Reports accuracy, the strong tier's share
    and cost per window, beside the two fixed tiers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

KEY = "bench-key-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"port {port} did not open")


async def _worker(port: int, request: bytes, n: int, out: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            m = re.search(rb"(?i)content-length:\s*(\d+)", head)
            if m is None:
                raise RuntimeError(f"no content-length in {head[:200]!r}")
            await reader.readexactly(int(m.group(1)))
            out.append(time.perf_counter() - t0)
            if b" 200 " not in head.split(b"\r\n", 1)[0]:
                errors.append(1)
    finally:
        writer.close()


async def _load(
    port: int, request: bytes, concurrency: int, per_conn: int
) -> tuple[list[float], int]:
    warm: list[float] = []
    errs: list[int] = []
    await asyncio.gather(*(_worker(port, request, 1, warm, errs) for _ in range(concurrency)))
    lat: list[float] = []
    errs.clear()
    await asyncio.gather(*(_worker(port, request, per_conn, lat, errs) for _ in range(concurrency)))
    return lat, len(errs)


def http_request(port: int, path: str, body: dict[str, Any], key: str) -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


def run_load(
    port: int, path: str, model: str, concurrency: int, per_conn: int, key: str = KEY
) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": "What is 2 plus 2?"}]}
    t0 = time.perf_counter()
    lat, errors = asyncio.run(
        _load(port, http_request(port, path, body, key), concurrency, per_conn)
    )
    wall = time.perf_counter() - t0
    a = np.asarray(lat) * 1000
    return {
        "n": len(lat),
        "errors": errors,
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
        "rps": len(lat) / wall,
    }


def histogram_quantiles(text: str, name: str, qs: tuple[float, ...]) -> dict[str, float]:
    """Quantiles (upper bucket bounds) of a Prometheus histogram without labels."""
    buckets = []
    for line in text.splitlines():
        m = re.match(rf'{name}_bucket{{le="([^"]+)"}} (\S+)', line)
        if m:
            buckets.append((float(m.group(1)), float(m.group(2))))
    total = buckets[-1][1] if buckets else 0
    out = {}
    for q in qs:
        bound = next((b for b, c in buckets if c >= q * total), float("inf"))
        out[f"p{int(q * 100)}_le_ms"] = bound * 1000
    return out


def cmd_overhead(args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="sona-bench-"))
    results: dict[str, Any] = {
        "concurrency": args.concurrency,
        "requests": args.concurrency * args.per_conn,
        "upstream_delay_ms": args.delay * 1000,
    }
    try:
        up_port = free_port()
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "sona.serve.testing", "--port", str(up_port),
                 "--delay", str(args.delay)],
                env=env,
            )
        )  # fmt: skip
        wait_port(up_port, procs[-1])
        gw_port = free_port()
        cfg = tmp / "sona.toml"
        cfg.write_text(
            f"""
[server]
port = {gw_port}
log_level = "warning"
[engine]
dim = 256
[tiers.small]
base_url = "http://127.0.0.1:{up_port}/v1"
model = "echo-small"
cost_per_1k_input = 0.1
[tiers.large]
base_url = "http://127.0.0.1:{up_port}/v1"
model = "echo-large"
cost_per_1k_input = 1.0
[tenants.bench]
api_keys = ["{KEY}"]
"""
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "sona.cli", "serve", "--config", str(cfg)], env=env
            )
        )
        wait_port(gw_port, procs[-1])
        base_port = None
        if args.baseline_pythonpath:
            # Another version of the gateway (e.g. an export of an older commit with its built
            # extension) on the same upstream and load, for a before/after in one run.
            base_port = free_port()
            base_cfg = tmp / "baseline.toml"
            base_cfg.write_text(cfg.read_text().replace(f"port = {gw_port}", f"port = {base_port}"))
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "sona.cli", "serve", "--config", str(base_cfg)],
                    env={**env, "PYTHONPATH": args.baseline_pythonpath},
                )
            )
            wait_port(base_port, procs[-1])
        results["direct"] = run_load(
            up_port, "/v1/chat/completions", "echo-small", args.concurrency, args.per_conn
        )
        results["gateway"] = run_load(
            gw_port, "/v1/chat/completions", "sona", args.concurrency, args.per_conn
        )
        if base_port is not None:
            results["baseline_gateway"] = run_load(
                base_port, "/v1/chat/completions", "sona", args.concurrency, args.per_conn
            )
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{gw_port}/metrics") as r:
            metrics = r.read().decode()
        results["gateway_internal"] = histogram_quantiles(
            metrics, "sona_gateway_overhead_seconds", (0.5, 0.99)
        )
        if args.litellm_bin:
            ll_port = free_port()
            ll_cfg = tmp / "litellm.yaml"
            ll_cfg.write_text(
                f"""model_list:
  - model_name: sona
    litellm_params:
      model: openai/echo-small
      api_base: http://127.0.0.1:{up_port}/v1
      api_key: none
general_settings:
  master_key: sk-{KEY}
litellm_settings:
  telemetry: false
"""
            )
            procs.append(
                subprocess.Popen(
                    [args.litellm_bin, "--config", str(ll_cfg), "--port", str(ll_port),
                     "--host", "127.0.0.1", "--num_workers", "1"],
                    env={**env, "LITELLM_LOG": "ERROR"},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
            wait_port(ll_port, procs[-1], timeout=300)
            results["litellm"] = run_load(
                ll_port,
                "/v1/chat/completions",
                "sona",
                args.concurrency,
                args.per_conn,
                f"sk-{KEY}",
            )
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
    d = results["direct"]
    for name in ("gateway", "baseline_gateway", "litellm"):
        if name in results:
            r = results[name]
            r["overhead_p50_ms"] = r["p50_ms"] - d["p50_ms"]
            r["overhead_p99_ms"] = r["p99_ms"] - d["p99_ms"]
    if "litellm" in results:
        g, ll = results["gateway"], results["litellm"]
        results["litellm_over_sona_p50"] = ll["overhead_p50_ms"] / max(g["overhead_p50_ms"], 1e-3)
        results["litellm_over_sona_p99"] = ll["overhead_p99_ms"] / max(g["overhead_p99_ms"], 1e-3)
    return results


def questions(n: int, seed: int) -> list[tuple[str, int]]:
    """Half easy additions (both tiers right), half two-digit products (only the strong tier)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if rng.random() < 0.5:
            a, b = rng.randint(1, 49), rng.randint(1, 49)
            out.append((f"What is {a} plus {b}?", a + b))
        else:
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            out.append((f"What is {a} times {b}?", a * b))
    return out


def cmd_e2e(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from sona.serve.app import create_app
    from sona.serve.config import parse_config
    from sona.serve.testing import StubUpstream, run_app

    qs = questions(args.n, args.seed)
    out: dict[str, Any] = {"n": args.n, "window": args.window}
    with run_app(StubUpstream()) as stub_url:
        base = f"{stub_url}/v1"
        tiers = {
            "weak": {"base_url": base, "model": "math-weak", "cost_per_1k_input": 0.1,
                     "cost_per_1k_output": 0.1},
            "strong": {"base_url": base, "model": "math-strong", "cost_per_1k_input": 1.0,
                       "cost_per_1k_output": 1.0},
        }  # fmt: skip
        cfg = parse_config(
            {
                "engine": {"dim": 256, "seed": args.seed, "context_messages": 0},
                "tiers": tiers,
                "profiles": {"default": {"tiers": ["weak", "strong"], "cost_weight": 0.3}},
            },
            env={},
        )
        with run_app(create_app(cfg)) as url, httpx.Client(timeout=30) as http:

            def ask(model: str, q: str) -> tuple[str, dict[str, Any]]:
                r = http.post(
                    f"{url}/v1/chat/completions",
                    json={"model": model, "messages": [{"role": "user", "content": q}]},
                )
                r.raise_for_status()
                body = r.json()
                return body["choices"][0]["message"]["content"], body["sona"]

            def correct(text: str, answer: int) -> bool:
                m = re.search(r"-?\d+", text)
                return m is not None and int(m.group()) == answer

            for fixed in ("math-weak", "math-strong"):
                acc = np.mean([correct(ask(fixed, q)[0], a) for q, a in qs[: args.window]])
                out[f"fixed_{fixed}"] = {"accuracy": float(acc)}
            rows = []
            hits, strong = [], []
            for i, (q, a) in enumerate(qs):
                text, info = ask("sona", q)
                ok = correct(text, a)
                hits.append(ok)
                strong.append(info["tier"] == "strong")
                http.post(
                    f"{url}/v1/feedback",
                    json={"trajectory_id": info["trajectory_id"], "reward": 1.0 if ok else 0.0},
                ).raise_for_status()
                if (i + 1) % args.window == 0:
                    rows.append(
                        {
                            "window": (i + 1) // args.window,
                            "accuracy": float(np.mean(hits[-args.window :])),
                            "strong_share": float(np.mean(strong[-args.window :])),
                        }
                    )
            out["windows"] = rows
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("overhead")
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--per-conn", type=int, default=20, help="requests per connection")
    p.add_argument("--delay", type=float, default=0.2)
    p.add_argument("--litellm-bin", default=None)
    p.add_argument(
        "--baseline-pythonpath",
        default=None,
        help="PYTHONPATH of another gateway version to measure in the same run",
    )
    p = sub.add_parser("e2e")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--window", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = cmd_overhead(args) if args.cmd == "overhead" else cmd_e2e(args)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
