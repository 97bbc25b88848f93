"""Gateway benchmarks (issue 14): overhead under load, LiteLLM side by side, routing end to end.

``python benches/gateway.py overhead [--rounds R] [--stagger] [--litellm-bin PATH]``
    A stub upstream that answers after a fixed 200 ms, the gateway (``sona serve``) in front of it,
    and a load generator keeping ``--concurrency`` requests in flight, each its own process on
    127.0.0.1. The same load runs direct to the upstream, through the gateway, and (when
    ``--litellm-bin`` names a ``litellm`` executable) through LiteLLM's proxy; overhead is each
    path's latency quantile minus the direct one, per round (direct and gateways alternate, R
    rounds, medians reported). The gateway's own view (request time minus upstream time,
    ``sona_gateway_overhead_seconds``) and each server's CPU time per request are reported beside.
    The harness is kept cheap so it leaves the cores to the gateway: the stub is a bare asyncio
    protocol (canned JSON or SSE, one write per answer), the generator one uvloop protocol per
    connection (checks every status and that every body parses as a completion).
    ``--stagger`` spreads the clients' first requests over one upstream delay (steady arrivals);
    by default they all start at once and move in synchronized waves. LiteLLM, when given, runs in
    every round like the others (one worker, its bundled price map, its log kept); a request
    answered with an error, lost with its connection, or unanswered after ``--timeout`` counts in
    ``errors`` (``timed_out``) and never as a latency. ``--decompose`` adds the gateway's
    passthrough path and a canned-answer ASGI app on uvicorn: CPU per request by layer. Each
    server's CPU (user/system) and read/write syscalls per request come from ``/proc``.

``python benches/gateway.py upstream --port P [--delay S]``
    Only the stub upstream (what ``overhead`` starts).

``python benches/gateway.py e2e [--seed S] [--engine-readout-lr 5 0]``
    Two local tiers of different cost and quality (stub models ``math-weak`` at 0.1 and
    ``math-strong`` at 1.0 per 1k tokens) answer a stream of labelled arithmetic questions; each
    answer is checked and the result sent as feedback. Reports accuracy, the strong tier's share
    and the share an oracle would send there (the products) per window, beside the two fixed
    tiers; with ``--engine-readout-lr`` also the same stream on the engine alone per read-out rate.
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
from typing import Any, cast

import numpy as np

from sona.serve.jsonio import loads

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


#: The stub upstream's canned answers (what an OpenAI-compatible server sends, nothing computed).
_COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "echo-small",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "echo: What is 2 plus 2?"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
    },
    separators=(",", ":"),
).encode()


def _sse_body() -> bytes:
    events = []
    for i, word in enumerate(("echo:", " What", " is", " 2", " plus", " 2?")):
        delta = {"content": word, **({"role": "assistant"} if i == 0 else {})}
        chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0,
                 "model": "echo-small",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}  # fmt: skip
        events.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    # One chunk of chunked transfer-encoding, then the terminating zero-length chunk.
    data = b"".join(events)
    return b"%x\r\n" % len(data) + data + b"\r\n0\r\n\r\n"


_JSON_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(_COMPLETION)).encode() + b"\r\n\r\n" + _COMPLETION
)  # fmt: skip
_SSE_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    + _sse_body()
)
_BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 46\r\n\r\n"
    b'{"error":{"message":"bad request","type":"x"}}'
)
#: Longest request head or body either side of the harness accepts (a benchmark, not a server).
_MAX_MESSAGE = 1 << 20


def _content_length(head: bytes) -> int:
    """``Content-Length`` of a lower-cased message head (0 when absent)."""
    i = head.find(b"\r\ncontent-length:")
    if i < 0:
        return 0
    j = head.find(b"\r\n", i + 2)
    value = head[i + 17 : j if j >= 0 else len(head)].strip()
    if not value.isdigit() or int(value) > _MAX_MESSAGE:
        raise ValueError("bad content-length")
    return int(value)


class StubUpstreamProtocol(asyncio.Protocol):
    """The fixed-delay upstream as a bare asyncio protocol: HTTP/1.1 keep-alive, each request
    answered ``delay`` seconds after it arrived with a canned completion (JSON, or SSE when the
    body asks for ``"stream": true``), a 400 when the body is not a JSON chat request.

    A request costs it a head parse, a JSON parse and one write: the harness should not take the
    CPU the gateway needs (the uvicorn stub cost about as much CPU per request as the gateway).
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        loop = asyncio.get_running_loop()
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buf[:end]).lower()
            try:
                n = _content_length(head)
            except ValueError:
                self._reply(_BAD_REQUEST)
                return
            if len(self.buf) < end + 4 + n:
                if len(self.buf) > _MAX_MESSAGE + end + 4:
                    self._reply(_BAD_REQUEST)
                return
            body = bytes(self.buf[end + 4 : end + 4 + n])
            del self.buf[: end + 4 + n]
            answer = _BAD_REQUEST
            try:
                req = loads(body)
                if head.startswith(b"post ") and isinstance(req, dict) and req.get("messages"):
                    answer = _SSE_RESPONSE if req.get("stream") is True else _JSON_RESPONSE
            except ValueError:
                pass
            # Same delay for every request: answers leave in arrival order (HTTP/1.1 needs that).
            loop.call_later(self.delay, self._reply, answer)
        if len(self.buf) > _MAX_MESSAGE:
            self._reply(_BAD_REQUEST)

    def _reply(self, answer: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(answer)
            if answer is _BAD_REQUEST and self.buf:
                self.transport.close()


async def canned_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A raw ASGI app answering every request at once with the canned completion: run under
    uvicorn with the gateway's options, its CPU per request is what the HTTP server side (uvicorn,
    uvloop, the kernel's loopback TCP) costs the gateway before any of its own work."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(_COMPLETION)),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": _COMPLETION})


def serve_canned(port: int) -> None:
    """:func:`canned_asgi` on uvicorn, configured as ``sona serve`` runs (one worker)."""
    import uvicorn

    from sona.serve.server import tune_gc, uvicorn_options

    tune_gc()
    uvicorn.run(canned_asgi, host="127.0.0.1", port=port, log_level="warning", **uvicorn_options())


async def serve_stub(host: str, port: int, delay: float) -> None:
    """Run :class:`StubUpstreamProtocol` until cancelled."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: StubUpstreamProtocol(delay), host, port, backlog=1024)
    async with server:
        await server.serve_forever()


class LoadClient(asyncio.Protocol):
    """One keep-alive connection sending ``request`` ``n`` times, one after the other.

    Records the latency (request written → whole response read) of each answer that is a
    completion (status 200, body parses as one); anything else is counted in ``errors`` and its
    time left out of the quantiles, so a server that fails fast does not look fast. A connection
    the server closes counts every request it still owed as an error; :meth:`expire` (at the
    run's deadline) counts them as timed out, with their time so far as a (censored) latency.
    """

    def __init__(
        self, request: bytes, n: int, lat: list[float], errors: list[str], start_s: float = 0.0
    ) -> None:
        self.request, self.left, self.lat, self.errors = request, n, lat, errors
        self.start_s = start_s
        self.buf = bytearray()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.t0 = 0.0
        self.timed_out = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if self.start_s > 0:
            asyncio.get_running_loop().call_later(self.start_s, self._send)
        else:
            self._send()

    def _send(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.t0 = time.perf_counter()
        self.transport.write(self.request)

    def _finish(self) -> None:
        self.left = 0
        if self.transport is not None:
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.left > 0:
            self.errors.extend([f"connection lost ({exc})"] * self.left)
            self._finish()

    def expire(self) -> None:
        """The run's deadline passed: the request in flight and those not sent time out."""
        if self.left > 0:
            self.timed_out = self.left
            # The one in flight waited this long at least (sent ones only: t0 is set).
            if self.t0 > 0:
                self.lat.append(time.perf_counter() - self.t0)
            self.errors.extend(["timed out"] * self.left)
            self._finish()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.left > 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            try:
                n = _content_length(head)
            except ValueError:
                self.errors.extend([f"bad response head: {head[:200]!r}"] * self.left)
                self._finish()  # cannot frame the rest: give up on this connection
                return
            if len(self.buf) < end + 4 + n:
                return
            elapsed = time.perf_counter() - self.t0
            body = bytes(self.buf[end + 4 : end + 4 + n])
            del self.buf[: end + 4 + n]
            status = head[9:12]
            if status != b"200":
                self.errors.append(f"HTTP {status.decode()}: {body[:200]!r}")
            else:
                try:
                    parsed = loads(body)
                    if isinstance(parsed, dict) and isinstance(parsed.get("choices"), list):
                        self.lat.append(elapsed)
                    else:
                        self.errors.append(f"not a completion: {body[:200]!r}")
                except ValueError:
                    self.errors.append(f"body is not JSON: {body[:200]!r}")
            self.left -= 1
            if self.left > 0:
                self._send()
            else:
                self._finish()


async def _load(
    port: int,
    request: bytes,
    concurrency: int,
    per_conn: int,
    stagger_s: float = 0.0,
    timeout_s: float | None = None,
) -> tuple[list[float], list[str], float, int]:
    """(latencies of good answers, errors, wall seconds, requests timed out)."""
    loop = asyncio.get_running_loop()

    async def phase(n: int, lat: list[float], errors: list[str], spread: float = 0.0) -> int:
        clients = [
            LoadClient(request, n, lat, errors, spread * i / concurrency)
            for i in range(concurrency)
        ]
        for c in clients:
            try:
                await loop.create_connection(lambda c=c: c, "127.0.0.1", port)
            except OSError as exc:
                errors.extend([f"cannot connect ({exc})"] * n)
                c.left = 0
                c.done.set_result(None)
        # A slow or broken server fails requests, never hangs the run: at the deadline what is
        # still owed counts as timed out.
        budget = timeout_s if timeout_s is not None else 60 + n * 10
        _, pending = await asyncio.wait([c.done for c in clients], timeout=budget)
        if pending:
            for c in clients:
                c.expire()
        return sum(c.timed_out for c in clients)

    await phase(1, [], [])  # warm-up: the gateway opens its upstream connections
    lat: list[float] = []
    errors: list[str] = []
    t0 = time.perf_counter()
    timed_out = await phase(per_conn, lat, errors, stagger_s)
    return lat, errors, time.perf_counter() - t0, timed_out


def _loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def _run(coro: Any) -> Any:
    """Run on uvloop when installed (the generator is then C except for the per-response parse)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def http_request(port: int, path: str, body: dict[str, Any], key: str) -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


def cpu_seconds(pid: int) -> float:
    """CPU time all threads of a process and of its live child processes have run (Linux
    ``/proc/<pid>/task/*/schedstat``, in nanoseconds, unlike the 10 ms ticks of
    ``/proc/<pid>/stat``; NaN elsewhere). Children count because a server may serve from a
    worker process it started (LiteLLM's CLI can)."""
    total = 0
    try:
        for p in _descendants(pid):
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
    except (OSError, ValueError):
        return float("nan")
    return total / 1e9


def _descendants(pid: int) -> list[int]:
    """``pid`` and its live child processes, recursively."""
    out = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for c in f.read().split():
                    out += _descendants(int(c))
    except (OSError, ValueError):
        pass
    return out


def process_counters(pid: int) -> dict[str, float]:
    """User and system CPU seconds (``/proc/<pid>/stat``, clock ticks) and read/write syscalls
    (``/proc/<pid>/io``) of a process and its children: where a server's CPU goes (the kernel's
    share is mostly loopback TCP) and how many syscalls a request costs, both independent of
    other processes' load. Empty where ``/proc`` has none of it."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {"user_s": 0.0, "sys_s": 0.0, "syscalls": 0.0}
    try:
        for p in _descendants(pid):
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out["user_s"] += int(fields[11]) / tick
            out["sys_s"] += int(fields[12]) / tick
            with open(f"/proc/{p}/io") as f:
                io = dict(line.split(": ") for line in f.read().splitlines())
            out["syscalls"] += int(io["syscr"]) + int(io["syscw"])
    except (OSError, ValueError, KeyError, IndexError):
        return {}
    return out


def litellm_version(litellm_bin: str) -> str:
    """The LiteLLM version installed beside ``litellm_bin`` (its virtualenv's python)."""
    python = Path(litellm_bin).with_name("python")
    try:
        out = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def run_load(
    port: int,
    path: str,
    model: str,
    concurrency: int,
    per_conn: int,
    key: str = KEY,
    server_pid: int | None = None,
    stagger_s: float = 0.0,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """``concurrency`` keep-alive clients sending ``per_conn`` requests each, one at a time.

    ``errors`` counts every request not answered with a completion (error status, bad body,
    connection lost, or still unanswered after ``timeout_s``: ``timed_out``); the quantiles are
    over the good answers plus the timed-out requests at their time so far (so with timeouts
    they are lower bounds), and ``rps`` counts good answers only.

    With ``stagger_s`` the clients' first requests are spread evenly over that many seconds
    (each client then keeps its phase), so requests arrive at a steady rate; without it all
    clients start at once and move in waves (every answer of a wave arrives within a few ms).
    """
    body = {"model": model, "messages": [{"role": "user", "content": "What is 2 plus 2?"}]}
    cpu0 = cpu_seconds(server_pid) if server_pid else float("nan")
    counters0 = process_counters(server_pid) if server_pid else {}
    request = http_request(port, path, body, key)
    lat, errors, wall, timed_out = _run(
        _load(port, request, concurrency, per_conn, stagger_s, timeout_s)
    )
    # CPU the server spent per request (warm-up included): does not depend on other processes'
    # load the way latencies do, so it compares versions on a shared machine.
    cpu_ms = (
        (cpu_seconds(server_pid) - cpu0) * 1000 / (concurrency * (per_conn + 1))
        if server_pid
        else None
    )
    per_request: dict[str, float] = {}
    if server_pid and counters0:
        counters1 = process_counters(server_pid)
        sent = concurrency * (per_conn + 1)
        if counters1:
            per_request = {
                "server_user_ms_per_request": (counters1["user_s"] - counters0["user_s"])
                * 1000
                / sent,
                "server_sys_ms_per_request": (counters1["sys_s"] - counters0["sys_s"])
                * 1000
                / sent,
                "server_syscalls_per_request": (counters1["syscalls"] - counters0["syscalls"])
                / sent,
            }
    if errors:
        kinds: dict[str, int] = {}
        for e in errors:
            kinds[e[:80]] = kinds.get(e[:80], 0) + 1
        print(f"{len(errors)} failed requests on port {port}: {kinds}", file=sys.stderr)
    a = np.asarray(lat if lat else [float("nan")]) * 1000
    return {
        "n": len(lat),  # good answers, plus the timed-out requests' censored times
        "ok": concurrency * per_conn - len(errors),
        "errors": len(errors),
        "timed_out": timed_out,
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
        "rps": (concurrency * per_conn - len(errors)) / wall,
        **({"server_cpu_ms_per_request": cpu_ms} if cpu_ms is not None else {}),
        **per_request,
    }


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-field medians of several runs of one path."""
    return {k: float(np.median([r[k] for r in rows])) for k in rows[0]}


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
        "arrivals": "staggered" if args.stagger else "waves",
        "generator": f"python, {_loop_name()} protocols (one per connection)",
    }
    try:
        up_port = free_port()
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, "upstream", "--port", str(up_port),
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
        ll_pid = None
        if args.litellm_bin:
            # LiteLLM's proxy on the same upstream, started before the rounds so it runs in each
            # of them, alternating with the others (not once at the end, under other load).
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
            results["litellm_version"] = litellm_version(args.litellm_bin)
            results["litellm_workers"] = 1
            with open(tmp / "litellm.log", "wb") as ll_log:  # the child keeps its own handle
                procs.append(
                    subprocess.Popen(
                        [args.litellm_bin, "--config", str(ll_cfg), "--port", str(ll_port),
                         "--host", "127.0.0.1", "--num_workers", "1"],
                        # Its bundled model-price map, not a download at start-up.
                        env={**env, "LITELLM_LOG": "ERROR", "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
                        stdout=ll_log,
                        stderr=subprocess.STDOUT,
                    )
                )  # fmt: skip
            results["litellm_log"] = str(tmp / "litellm.log")
            wait_port(ll_port, procs[-1], timeout=300)
            ll_pid = procs[-1].pid
        # Paths alternate within each round, so load from other processes falls on all of them.
        paths = [("direct", up_port, "echo-small", procs[0].pid, KEY)]
        paths.append(("gateway", gw_port, "sona", procs[1].pid, KEY))
        if base_port is not None:
            paths.append(("baseline_gateway", base_port, "sona", procs[2].pid, KEY))
        if ll_pid is not None:
            paths.append(("litellm", ll_port, "sona", ll_pid, f"sk-{KEY}"))
        if args.decompose:
            paths.append(("gateway_passthrough", gw_port, "echo-small", procs[1].pid, KEY))
            canned_port = free_port()
            procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, "canned", "--port", str(canned_port)], env=env
                )
            )
            wait_port(canned_port, procs[-1])
            paths.append(("uvicorn_canned", canned_port, "sona", procs[-1].pid, KEY))
        rounds: list[dict[str, Any]] = []
        for i in range(args.rounds):
            row: dict[str, Any] = {"load_avg": os.getloadavg()[0]}
            # Direct first, then the others in turn (odd rounds reverse them): no version
            # always runs right after the direct path.
            order = [paths[0], *(paths[1:] if i % 2 == 0 else paths[:0:-1])]
            for name, port, model, pid, key in order:
                row[name] = run_load(
                    port, "/v1/chat/completions", model, args.concurrency, args.per_conn, key,
                    server_pid=pid, stagger_s=args.delay if args.stagger else 0.0,
                    timeout_s=args.timeout,
                )  # fmt: skip
            row["load_avg_end"] = os.getloadavg()[0]
            rounds.append(row)
            print(f"round {i + 1}/{args.rounds} done", file=sys.stderr)
        results["rounds"] = rounds
        for name, *_ in paths:
            results[name] = _median_row([r[name] for r in rounds])
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{gw_port}/metrics") as r:
            metrics = r.read().decode()
        results["gateway_internal"] = histogram_quantiles(
            metrics, "sona_gateway_overhead_seconds", (0.5, 0.99)
        )
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
    for row in [*results["rounds"], results]:
        d = row["direct"]
        for name in ("gateway", "baseline_gateway", "litellm", "gateway_passthrough"):
            if name in row:
                r = row[name]
                r["overhead_p50_ms"] = r["p50_ms"] - d["p50_ms"]
                r["overhead_p99_ms"] = r["p99_ms"] - d["p99_ms"]
    for name in ("gateway", "baseline_gateway", "litellm", "gateway_passthrough"):
        if name in results:
            # The median over rounds of each round's overhead (paired, same minute).
            for q in ("p50", "p99"):
                results[name][f"median_round_overhead_{q}_ms"] = float(
                    np.median([r[name][f"overhead_{q}_ms"] for r in results["rounds"]])
                )
    if "litellm" in results:
        # Overheads can be ~0 (or slightly negative: noise) for SONA: the ratio's denominator is
        # floored at 0.1 ms and the ratio is then a lower bound (``litellm_ratio_floored``).
        g, ll = results["gateway"], results["litellm"]
        floored = False
        for q in ("p50", "p99"):
            den = g[f"median_round_overhead_{q}_ms"]
            floored |= den < 0.1
            results[f"litellm_over_sona_{q}"] = ll[f"median_round_overhead_{q}_ms"] / max(den, 0.1)
        results["litellm_ratio_floored"] = floored
        results["litellm_over_sona_rps"] = g["rps"] / max(ll["rps"], 1e-9)
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
            hits, strong, needs = [], [], []
            for i, (q, a) in enumerate(qs):
                text, info = ask("sona", q)
                ok = correct(text, a)
                hits.append(ok)
                strong.append(info["tier"] == "strong")
                needs.append("times" in q)  # the weak tier gets products wrong
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
                            # What an oracle would send to the strong tier (the products).
                            "needs_strong": float(np.mean(needs[-args.window :])),
                        }
                    )
            out["windows"] = rows
    if args.engine_readout_lr:
        # The same stream on the engine alone (no HTTP), once per read-out learning rate: the
        # per-tier read-out (readout_lr > 0, the default since 30 Nov) is what changed the
        # first windows, so this shows its effect in one run.
        out["engine_only"] = {
            str(lr): engine_only(qs, args.seed, args.window, readout_lr=lr)
            for lr in args.engine_readout_lr
        }
    return out


def engine_only(
    qs: list[tuple[str, int]], seed: int, window: int, **overrides: Any
) -> list[dict[str, float]]:
    """What ``e2e`` does, on ``SONAEngine`` directly with the gateway's settings (d = 256 hashing
    embedder, tiers weak/strong at costs 0.1/1, cost_weight 0.3) and ``overrides``: accuracy and
    strong share per window, the stub's answers simulated (weak wrong on products)."""
    from sona.engine import SONAConfig, SONAEngine
    from sona.serve.app import query_text
    from sona.serve.routing import make_embedder

    emb = make_embedder("hashing", 256, seed)
    cfg = SONAConfig(
        dim=256, n_tiers=2, tier_names=["weak", "strong"], tier_costs=[0.1, 1.0],
        cost_weight=0.3, seed=seed, **overrides,
    )  # fmt: skip
    engine = SONAEngine(cfg)
    hits, strong = [], []
    try:
        for q, _ in qs:
            d = engine.process(emb.embed(query_text([{"role": "user", "content": q}], 0, 8192)))
            on_strong = int(d.tier) == 1
            ok = on_strong or "plus" in q
            hits.append(ok)
            strong.append(on_strong)
            engine.feedback(d.trajectory_id, 1.0 if ok else 0.0, source="explicit")
    finally:
        engine.close()
    return [
        {
            "window": i // window + 1,
            "accuracy": float(np.mean(hits[i : i + window])),
            "strong_share": float(np.mean(strong[i : i + window])),
        }
        for i in range(0, len(qs), window)
    ]


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
    p.add_argument("--rounds", type=int, default=1, help="alternating direct/gateway rounds")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds a path's run may take before what is unanswered counts as timed out "
        "(default 60 + 10 per request per connection)",
    )
    p.add_argument(
        "--stagger",
        action="store_true",
        help="spread the clients' first requests over one upstream delay (steady arrivals "
        "instead of synchronized waves of --concurrency requests)",
    )
    p.add_argument(
        "--decompose",
        action="store_true",
        help="also measure the gateway's passthrough path (model echo-small: no embedding or "
        "routing) and a canned-answer ASGI app on uvicorn (no upstream), for CPU per request "
        "by layer",
    )
    p = sub.add_parser("canned", help="the canned-answer ASGI app on uvicorn (`--decompose`)")
    p.add_argument("--port", type=int, required=True)
    p = sub.add_parser("upstream", help="only the stub upstream (what `overhead` starts)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--delay", type=float, default=0.2)
    p = sub.add_parser("e2e")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--window", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--engine-readout-lr",
        type=float,
        nargs="*",
        default=[],
        help="also run the stream on the engine alone with each of these readout_lr values",
    )
    args = parser.parse_args()
    if args.cmd == "upstream":
        _run(serve_stub("127.0.0.1", args.port, args.delay))
        return 0
    if args.cmd == "canned":
        serve_canned(args.port)
        return 0
    result = cmd_overhead(args) if args.cmd == "overhead" else cmd_e2e(args)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
