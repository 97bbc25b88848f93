"""A local OpenAI-compatible stub upstream, and a helper that runs an ASGI app on a real port.

Used by the tests and ``benches/gateway.py``; also handy to try ``sona serve`` without a model.
The stub answers ``POST /v1/chat/completions`` (JSON or SSE) after a fixed delay. What it answers
depends on the requested model name:

* ``echo*``: ``"echo: <last user message>"``;
* ``math-weak`` / ``math-strong``: solves ``What is A plus|minus|times B?`` — strong always, weak
  only when the result is below 100 (a cheap model that fails the harder questions);
* ``judge*``: ``"7"`` (a grader that gives every answer 7/10);
* ``fail``: HTTP 500 whose message echoes the Authorization header (a careless upstream);
* ``slow``: answers after 30 s (for timeouts);
* ``garbage``: a 200 whose body is not JSON.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_MATH = re.compile(r"what is (-?\d+) (plus|minus|times|[-+*]) (-?\d+)", re.IGNORECASE)
_OPS = {"plus": "+", "minus": "-", "times": "*"}


def solve(question: str, strong: bool) -> str:
    """The stub models' answer to an arithmetic question."""
    m = _MATH.search(question)
    if m is None:
        return "I don't know."
    a, b = int(m.group(1)), int(m.group(3))
    op = _OPS.get(m.group(2).lower(), m.group(2))
    value = a + b if op == "+" else a - b if op == "-" else a * b
    if not strong and abs(value) >= 100:
        value += 1  # the weak model is off by one on the hard half
    return f"The answer is {value}."


class StubUpstream:
    """A raw ASGI app (no framework: its own overhead must not blur the gateway's)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.requests: list[dict[str, Any]] = []
        self.auth_headers: list[str] = []
        self.keep_requests = True

    def answer(self, model: str, messages: list[dict[str, Any]]) -> str:
        last = next(
            (str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), ""
        )
        if model.startswith("math-"):
            return solve(last, model == "math-strong")
        if model.startswith("judge"):
            return "7"
        return f"echo: {last}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization", b"").decode()
        if scope["path"] == "/v1/models":
            await self._json(send, 200, {"object": "list", "data": []})
            return
        try:
            req = json.loads(body)
            model = str(req["model"])
            messages = list(req["messages"])
        except (ValueError, KeyError, TypeError):
            await self._json(send, 400, {"error": {"message": "bad request", "type": "x"}})
            return
        if self.keep_requests:
            self.requests.append(req)
            self.auth_headers.append(auth)
        if model == "fail":
            msg_text = f"internal failure; you sent authorization {auth!r}"
            await self._json(send, 500, {"error": {"message": msg_text, "type": "server_error"}})
            return
        await asyncio.sleep(30.0 if model == "slow" else self.delay_s)
        if model == "garbage":
            await self._raw(send, 200, b"<html>not json</html>", b"text/html")
            return
        text = self.answer(model, messages)
        n_prompt = max(1, len(json.dumps(messages)) // 4)
        n_out = len(text.split())
        created = int(time.time())
        if req.get("stream"):
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            for i, word in enumerate(text.split(" ")):
                delta = {"content": (" " if i else "") + word}
                if i == 0:
                    delta["role"] = "assistant"
                chunk = {
                    "id": "chatcmpl-stub",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                }
                await self._event(send, chunk)
            end = {
                "id": "chatcmpl-stub",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }
            await self._event(send, end)
            if (req.get("stream_options") or {}).get("include_usage"):
                usage = {
                    "id": "chatcmpl-stub",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": n_prompt,
                        "completion_tokens": n_out,
                        "total_tokens": n_prompt + n_out,
                    },
                }
                await self._event(send, usage)
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
            return
        await self._json(
            send,
            200,
            {
                "id": "chatcmpl-stub",
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": n_prompt,
                    "completion_tokens": n_out,
                    "total_tokens": n_prompt + n_out,
                },
            },
        )

    @staticmethod
    async def _event(send: Send, data: dict[str, Any]) -> None:
        payload = b"data: " + json.dumps(data).encode() + b"\n\n"
        await send({"type": "http.response.body", "body": payload, "more_body": True})

    @staticmethod
    async def _raw(send: Send, status: int, body: bytes, ctype: bytes) -> None:
        headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _json(self, send: Send, status: int, data: Any) -> None:
        await self._raw(send, status, json.dumps(data).encode(), b"application/json")


def free_socket(host: str = "127.0.0.1") -> socket.socket:
    """A listening-ready socket bound to a free port (no race between choosing and binding)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


@contextmanager
def run_app(app: Any, timeout_s: float = 20.0, **uvicorn_kwargs: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1 in a thread; yields its base URL."""
    import uvicorn

    from sona.serve.server import uvicorn_options

    sock = free_socket()
    port = sock.getsockname()[1]
    uvicorn_kwargs.setdefault("timeout_graceful_shutdown", 1)
    options = {**uvicorn_options(), "log_level": "warning", **uvicorn_kwargs}
    config = uvicorn.Config(app, **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
        sock.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m sona.serve.testing --port P --delay 0.2``: run the stub upstream."""
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description="a local OpenAI-compatible stub upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args(argv)
    stub = StubUpstream(args.delay)
    stub.keep_requests = False
    uvicorn.run(stub, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
