"""How the gateway runs under uvicorn: one write per response, no proxy-header pass, a quiet GC.

uvicorn's httptools protocol writes a response's status line and headers, then its body, as two
``write`` calls: two ``send`` syscalls, and on loopback each one also runs the receiving side's TCP
path. Profiled at 200 concurrent requests, ``write`` was ~38 % of the gateway's CPU, three per
routed request (upstream request, response head, response body). :class:`CoalescingTransport`
holds a write until the next one (then sends both in one ``write``) or the end of the current
event-loop step; an ASGI app that sends ``http.response.start`` and the body in one step (the chat
route does) then costs one syscall. Nothing is held past that step, so a streamed response's
chunks are not delayed.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any, cast

__all__ = ["CoalescingTransport", "http_protocol", "tune_gc", "uvicorn_options"]

#: First GC generation's threshold (CPython's default is 700 allocations): a request allocates a
#: few hundred containers, so the default collects every few requests.
GC_GEN0_THRESHOLD = 20_000


class CoalescingTransport:
    """A transport wrapper that sends two writes made in one loop step as one ``write``.

    Every other attribute is the wrapped transport's. ``close`` (and ``write_eof``,
    ``abort``) first sends (or, for ``abort``, drops) what is held, so nothing is reordered or
    written after the close.
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send what is held together with ``data``; with nothing held, hold ``data`` until the
        next write or the end of this loop step, whichever comes first."""
        if not data:
            return
        held = self._held
        if held is None:
            self._held = [bytes(data)]
            self._loop.call_soon(self.flush)
        else:
            # The second write (a response's body after its head) goes out at once: holding
            # until the end of the step would delay every answer sent in this step behind all
            # the others (a wave of upstream answers is handled in one step).
            self._held = None
            held.append(bytes(data))
            if not self._transport.is_closing():
                self._transport.write(b"".join(held))

    def writelines(self, lines: Any) -> None:
        """Hold each of ``lines``."""
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Send what is held now."""
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def get_write_buffer_size(self) -> int:
        """Bytes not yet sent: held here plus the transport's buffer (flow control reads it)."""
        held = sum(map(len, self._held)) if self._held else 0
        return held + self._transport.get_write_buffer_size()

    def close(self) -> None:
        """Send what is held, then close."""
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        """Send what is held, then half-close."""
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        """Drop what is held and close at once."""
        self._held = None
        self._transport.abort()

    # uvicorn calls these on every request: spared the ``__getattr__`` detour.
    def is_closing(self) -> bool:
        """Whether the transport is closing."""
        return self._transport.is_closing()

    def pause_reading(self) -> None:
        """Stop reading from the socket."""
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        """Read from the socket again."""
        self._transport.resume_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def http_protocol() -> Any:
    """uvicorn's ``http`` option: its httptools protocol over a :class:`CoalescingTransport`
    when httptools is installed (the ``serve`` extra has it), else ``"auto"``."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - httptools is in the serve extra
        return "auto"

    class CoalescingHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol writing each loop step's output in one syscall."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            loop = asyncio.get_running_loop()
            wrapped = CoalescingTransport(cast(asyncio.Transport, transport), loop)
            # Duck-typed: every transport method uvicorn uses is there or forwarded.
            super().connection_made(wrapped)  # type: ignore[arg-type]

    return CoalescingHttpToolsProtocol


def uvicorn_options() -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config``/``uvicorn.run`` shared by ``sona serve`` and the
    test helper: the coalescing protocol, no access log, and no ``X-Forwarded-*`` rewriting (the
    gateway never reads the client address; uvicorn's middleware for it ran on every request)."""
    return {"http": http_protocol(), "access_log": False, "proxy_headers": False}


def tune_gc() -> None:
    """After start-up: move what exists to the permanent generation (``gc.freeze``) so later
    collections do not traverse the engine, the config and the imported modules, and collect the
    youngest generation less often. A full collection then scans only per-request garbage."""
    gc.collect()
    gc.freeze()
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, g1, g2)
