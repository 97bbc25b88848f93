"""Tier backends: the callable adapter and the OpenAI-compatible client against a real local
HTTP server (stdlib ``http.server`` on 127.0.0.1, started by the test)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import sona
from sona.backends import Backend, CallableBackend, OpenAIChatBackend, as_backend

openai = pytest.importorskip("openai")


class _Server:
    """An OpenAI-compatible chat-completions endpoint whose behaviour the test sets."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.fail_first = 0
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                server.headers.append({k.lower(): v for k, v in self.headers.items()})
                if server.fail_first > 0:
                    server.fail_first -= 1
                    return self._send(503, {"error": {"message": "warming up"}})
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": "no such route"}})
                if server.mode == "slow":
                    time.sleep(1.5)
                if server.mode == "error":
                    return self._send(500, {"error": {"message": "model crashed"}})
                if server.mode == "empty":
                    return self._send(200, _reply(None))
                last = body["messages"][-1]["content"]
                self._send(200, _reply(f"echo: {last}"))

            def _send(self, code: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _reply(content: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "tiny",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
            }
        ],
    }


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.close()


def test_chat_backend_round_trip(server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "secret-123")
    b = OpenAIChatBackend(
        server.url, "tiny", api_key_env="MY_KEY", system_prompt="be brief", max_tokens=5
    )
    assert isinstance(b, Backend)
    assert b("what is 2+2?") == "echo: what is 2+2?"
    req = server.requests[-1]
    assert req["model"] == "tiny" and req["max_tokens"] == 5
    assert req["messages"][0] == {"role": "system", "content": "be brief"}
    assert server.headers[-1]["authorization"] == "Bearer secret-123"
    assert b.complete([{"role": "user", "content": "hi"}]) == "echo: hi"
    b.close()


def test_chat_backend_retries_server_errors(server: _Server) -> None:
    server.fail_first = 1
    b = OpenAIChatBackend(server.url, "tiny", max_retries=2, timeout=5)
    assert b("again") == "echo: again"
    assert len(server.requests) == 2  # one 503, one success


def test_chat_backend_surfaces_errors_and_timeouts(server: _Server) -> None:
    server.mode = "error"
    b = OpenAIChatBackend(server.url, "tiny", max_retries=0, timeout=5)
    with pytest.raises(openai.InternalServerError):
        b("boom")
    server.mode = "slow"
    b = OpenAIChatBackend(server.url, "tiny", max_retries=0, timeout=0.3)
    started = time.perf_counter()
    with pytest.raises(openai.APITimeoutError):
        b("slow")
    assert time.perf_counter() - started < 1.4
    server.mode = "empty"
    with pytest.raises(ValueError, match="no text"):
        OpenAIChatBackend(server.url, "tiny", max_retries=0)("x")


def test_chat_backend_unreachable_server() -> None:
    b = OpenAIChatBackend("http://127.0.0.1:9/v1", "tiny", max_retries=0, timeout=2)
    with pytest.raises(openai.APIConnectionError):
        b("anyone?")


def test_chat_backend_config_is_validated() -> None:
    for kwargs in (
        {"timeout": 0},
        {"timeout": float("nan")},
        {"max_retries": -1},
        {"max_tokens": 0},
    ):
        with pytest.raises(sona.ConfigError):
            OpenAIChatBackend("http://127.0.0.1:1/v1", "m", **kwargs)
    with pytest.raises(sona.ConfigError, match="http"):
        OpenAIChatBackend("127.0.0.1:8080", "m")


def test_missing_openai_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(sona.MissingDependencyError, match=r"sona\[llm\]"):
        OpenAIChatBackend("http://127.0.0.1:1/v1", "m")


def test_callable_backend_and_timeout() -> None:
    b = CallableBackend(str.upper)
    assert b("abc") == "ABC" and "upper" in repr(b)
    slow = CallableBackend(lambda p: (time.sleep(1.0), p)[1], name="slow", timeout=0.1)
    with pytest.raises(TimeoutError, match="slow"):
        slow("x")
    fast = CallableBackend(lambda p: p * 2, timeout=1.0)
    assert fast("ab") == "abab"
    with pytest.raises(sona.ConfigError):
        CallableBackend(str.upper, timeout=0)
    with pytest.raises(sona.InvalidInputError):
        CallableBackend("not callable")  # type: ignore[arg-type]


def test_as_backend_accepts_callables_only() -> None:
    assert as_backend(str.lower)("A") == "a"
    with pytest.raises(sona.InvalidInputError, match="tier 2"):
        as_backend(42, "tier 2")


def test_callable_backend_two_threads() -> None:
    b = CallableBackend(lambda p: p[::-1], timeout=2.0)
    results: list[str] = []

    def work(tag: str) -> None:
        for i in range(50):
            results.append(b(f"{tag}{i}"))

    threads = [threading.Thread(target=work, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted(f"{t}{i}"[::-1] for t in "ab" for i in range(50))
