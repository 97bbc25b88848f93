"""How the gateway runs under uvicorn (``sona.serve.server``), and the overhead benchmark's own
harness (``benches/gateway.py``: the bare-protocol stub upstream and load generator)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from serve_kit import ACME_KEY, make_config, running_gateway, running_stub
from sona.serve.http1 import Pool
from sona.serve.server import GC_GEN0_THRESHOLD, CoalescingTransport, http_protocol

ROOT = Path(__file__).resolve().parents[1]


class FakeTransport:
    """Records each ``write`` as one syscall would see it."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.eof = False
        self.reading = True
        self.extra = {"peername": ("127.0.0.1", 1)}

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def write_eof(self) -> None:
        self.eof = True

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)


def test_head_and_body_written_in_one_step_go_out_as_one_write() -> None:
    async def main() -> FakeTransport:
        fake = FakeTransport()
        t = CoalescingTransport(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        assert fake.writes == []  # held
        assert t.get_write_buffer_size() == 38
        t.write(b"{}")
        assert fake.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
        await asyncio.sleep(0)  # the end-of-step flush finds nothing held
        return fake

    fake = asyncio.run(main())
    assert len(fake.writes) == 1


def test_a_lone_write_is_sent_at_the_end_of_the_step_and_order_is_kept() -> None:
    async def main() -> list[bytes]:
        fake = FakeTransport()
        t = CoalescingTransport(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"a")
        await asyncio.sleep(0)
        assert fake.writes == [b"a"]
        t.write(b"")  # nothing to send: nothing held, nothing scheduled
        t.writelines([b"b", b"c", b"d"])  # b+c together, d held
        t.write(bytearray(b"e"))  # d+e together
        await asyncio.sleep(0)
        return fake.writes

    assert asyncio.run(main()) == [b"a", b"bc", b"de"]


def test_close_sends_what_is_held_first_and_abort_drops_it() -> None:
    async def main() -> tuple[FakeTransport, FakeTransport, FakeTransport]:
        loop = asyncio.get_running_loop()
        a, b, c = FakeTransport(), FakeTransport(), FakeTransport()
        ta = CoalescingTransport(a, loop)  # type: ignore[arg-type]
        ta.write(b"head")
        ta.close()
        tb = CoalescingTransport(b, loop)  # type: ignore[arg-type]
        tb.write(b"head")
        tb.abort()
        tc = CoalescingTransport(c, loop)  # type: ignore[arg-type]
        tc.write(b"head")
        tc.write_eof()
        await asyncio.sleep(0)  # the scheduled flush must not write after the close
        return a, b, c

    a, b, c = asyncio.run(main())
    assert a.writes == [b"head"] and a.closed
    assert b.writes == [] and b.aborted
    assert c.writes == [b"head"] and c.eof


def test_other_attributes_are_the_transports() -> None:
    async def main() -> None:
        fake = FakeTransport()
        t = CoalescingTransport(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
        assert t.get_extra_info("peername") == ("127.0.0.1", 1)
        t.pause_reading()
        assert not fake.reading
        t.resume_reading()
        assert fake.reading
        assert not t.is_closing()
        with pytest.raises(AttributeError):
            t.no_such_method()  # type: ignore[attr-defined]
        with pytest.raises(TypeError):  # as asyncio's transports: bytes only
            t.write("text")  # type: ignore[arg-type]
        assert t.get_write_buffer_size() == 0 and fake.writes == []

    asyncio.run(main())


def test_the_gateway_runs_on_the_coalescing_protocol_and_answers() -> None:
    proto = http_protocol()
    assert not isinstance(proto, str), "httptools is in the serve extra"
    with running_stub() as (stub_url, _), running_gateway(make_config(stub_url)) as (url, _):
        with httpx.Client(timeout=10) as http:
            for i in range(3):  # keep-alive: several answers on one connection
                r = http.post(
                    f"{url}/v1/chat/completions",
                    json={"model": "sona", "messages": [{"role": "user", "content": f"hi {i}"}]},
                    headers={"authorization": f"Bearer {ACME_KEY}"},
                )
                assert r.status_code == 200
                assert r.json()["choices"][0]["message"]["content"] == f"echo: hi {i}"
            bad = http.post(
                f"{url}/v1/chat/completions",
                content=b"{not json",
                headers={"authorization": f"Bearer {ACME_KEY}"},
            )
            assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
            assert http.get(f"{url}/healthz").json()["status"] == "ok"


def test_tune_gc_freezes_start_up_objects_and_raises_the_gen0_threshold() -> None:
    # In a child process: the test process's own GC settings stay as they are.
    code = (
        "import gc; from sona.serve.server import tune_gc; tune_gc(); "
        "print(gc.get_threshold()[0], gc.get_freeze_count() > 0)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out == [str(GC_GEN0_THRESHOLD), "True"]


# -- the benchmark's harness ----------------------------------------------------------------


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_gateway", ROOT / "benches" / "gateway.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_stub_answers_json_sse_and_refuses_bad_requests() -> None:
    bench = _bench()

    async def main() -> tuple[Any, ...]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: bench.StubUpstreamProtocol(0.01), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = Pool(f"http://127.0.0.1:{port}")
        hdr = b"content-type: application/json\r\n"
        req = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        try:
            r1 = await pool.post(b"/v1/chat/completions", hdr, json.dumps(req).encode())
            body1 = await r1.read()
            r2 = await pool.post(
                b"/v1/chat/completions", hdr, json.dumps({**req, "stream": True}).encode()
            )
            body2 = await r2.read()
            r3 = await pool.post(b"/v1/chat/completions", hdr, b"{not json")
            body3 = await r3.read()
            return r1.status, body1, r2.status, body2, r3.status, body3
        finally:
            await pool.aclose()
            server.close()

    s1, b1, s2, b2, s3, b3 = asyncio.run(main())
    assert s1 == 200 and json.loads(b1)["choices"][0]["message"]["role"] == "assistant"
    assert s2 == 200
    events = [e[6:] for e in b2.decode().split("\n\n") if e.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert "".join(json.loads(e)["choices"][0]["delta"]["content"] for e in events[:-1])
    assert s3 == 400 and "error" in json.loads(b3)


@pytest.mark.parametrize("stagger_s", [0.0, 0.05])
def test_bench_load_generator_times_and_checks_each_answer(stagger_s: float) -> None:
    bench = _bench()
    with running_stub() as (stub_url, _):
        port = int(stub_url.rsplit(":", 1)[1])
        good = bench.run_load(port, "/v1/chat/completions", "echo-x", 5, 3, stagger_s=stagger_s)
        assert good["n"] == 15 and good["errors"] == 0
        assert good["p50_ms"] > 0 and good["rps"] > 0
        # The stub answers HTTP 500 for the model "fail": every answer is counted as an error,
        # and none of them as a latency (a server failing fast must not look fast).
        bad = bench.run_load(port, "/v1/chat/completions", "fail", 3, 2)
        assert bad["errors"] == 6 and bad["ok"] == 0 and bad["n"] == 0
        assert bad["rps"] == 0 and bad["timed_out"] == 0


@contextmanager
def raw_server(answer_first: bool, hang: bool) -> Iterator[int]:
    """A socket server on 127.0.0.1: answers each connection's first request with a completion
    when ``answer_first``, then (with ``hang``) reads and never answers, else closes."""
    bench = _bench()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve(conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            if answer_first:
                conn.sendall(bench._JSON_RESPONSE)
                conn.recv(65536)
            if hang:
                stop.wait(30)
        except OSError:
            pass
        finally:
            conn.close()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield int(srv.getsockname()[1])
    finally:
        stop.set()
        srv.close()


@pytest.mark.parametrize("hang", [False, True])
def test_bench_load_generator_counts_lost_and_unanswered_requests(hang: bool) -> None:
    """A server that drops its connections or stops answering fails requests, never the run:
    each request it still owed is an error (``timed_out`` when the deadline passed)."""
    bench = _bench()
    # Each connection's first request is answered (the warm-up's and the run's), the next two
    # of the run's 4 connections never are.
    with raw_server(answer_first=True, hang=hang) as port:
        t0 = time.monotonic()
        r = bench.run_load(port, "/v1/chat/completions", "m", 4, 3, timeout_s=1.0)
        assert time.monotonic() - t0 < 20
    assert r["ok"] == 4 and r["errors"] == 8
    assert r["timed_out"] == (8 if hang else 0)
    # Timed-out requests enter the quantiles at their time so far (≥ the deadline here): one
    # in flight per connection.
    assert r["n"] == 4 + (4 if hang else 0)
    if hang:
        assert r["p99_ms"] >= 900
