"""A lean keep-alive HTTP/1.1 client over asyncio streams, for the gateway's upstream calls.

The gateway sends one kind of request (``POST`` of a small JSON body to a fixed path) to a few
origins, hundreds at a time. httpx over httpcore spent ~60 % of the gateway's CPU there at 200
concurrent requests (per-request pool scans that poll every socket, anyio wrappers, URL and header
models); this client does only what that traffic needs: a LIFO pool of idle connections per origin
(reused while fresh), a bound on open connections, ``Content-Length``, chunked and close-delimited
bodies, TLS for ``https`` origins, and a size cap on what an upstream can make it read.

Failures raise :class:`HttpError` (``ConnectError`` when no connection could be made); the caller
bounds time with :class:`Deadline` (or ``asyncio.timeout``): a cancelled exchange closes its
connection instead of returning it to the pool.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import weakref
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

#: Longest response body read into memory (an upstream cannot make the gateway hold more).
MAX_BODY_BYTES = 64 * 1024 * 1024
#: Longest response head (status line and headers).
MAX_HEAD_BYTES = 64 * 1024
_READ = 64 * 1024


#: Deadlines fire at the end of the :data:`DEADLINE_RESOLUTION_S`-wide slot they fall in.
DEADLINE_RESOLUTION_S = 0.05


class _Slots:
    """One event loop's pending deadlines, grouped in slots of :data:`DEADLINE_RESOLUTION_S`:
    one timer per slot instead of one per request (creating and cancelling a uvloop timer per
    request cost ~5 µs, a few per cent of the gateway's CPU)."""

    __slots__ = ("loop", "pending")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: dict[int, set[Deadline]] = {}

    def add(self, d: Deadline, when: float) -> int:
        key = -int(-when // DEADLINE_RESOLUTION_S)  # ceil: never fires early
        group = self.pending.get(key)
        if group is None:
            group = self.pending[key] = set()
            self.loop.call_at(key * DEADLINE_RESOLUTION_S, self._fire, key)
        group.add(d)
        return key

    def _fire(self, key: int) -> None:
        for d in self.pending.pop(key, ()):
            d._expire()


_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Slots] = weakref.WeakKeyDictionary()


class Deadline:
    """``with Deadline(seconds):`` — ``asyncio.timeout`` for the request path, same semantics.

    Cancels the current task once ``seconds`` have passed (at most
    :data:`DEADLINE_RESOLUTION_S` later) and turns that cancellation into ``TimeoutError`` at the
    end of the block; a cancellation from elsewhere (the client left, the server stops) stays a
    ``CancelledError``. ``asyncio.timeout`` asks for the running loop three times and creates and
    cancels a timer per use: profiled under 200 requests in flight it was ~5 % of the gateway's
    CPU. This asks for the task once and shares one timer per slot (see :class:`_Slots`).
    """

    __slots__ = ("_cancelling", "_delay", "_key", "_slots", "_task", "expired")

    def __init__(self, seconds: float) -> None:
        self._delay = seconds
        self._task: asyncio.Task[object] | None = None
        self._slots: _Slots | None = None
        self._key = 0
        self._cancelling = 0
        self.expired = False

    def __enter__(self) -> Deadline:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadline is used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        loop = task.get_loop()
        slots = _SLOTS.get(loop)
        if slots is None:
            slots = _SLOTS[loop] = _Slots(loop)
        self._slots = slots
        self._key = slots.add(self, loop.time() + self._delay)
        return self

    def _expire(self) -> None:
        if self._task is not None and not self.expired:
            self.expired = True
            self._task.cancel()

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        assert self._slots is not None and self._task is not None
        group = self._slots.pending.get(self._key)
        if group is not None:
            group.discard(self)
        task, self._task = self._task, None  # a late slot firing does nothing now
        if self.expired:
            # As asyncio.timeout: ours was the only new cancel request, so it is a timeout.
            if task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc


class HttpError(Exception):
    """The exchange with the upstream failed (connection lost, malformed response, too large)."""


class ConnectError(HttpError):
    """No connection to the upstream could be made."""


class _Conn:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.idle_since = 0.0

    def close(self) -> None:
        try:
            self.writer.close()
        except RuntimeError:  # the loop is already closed
            pass


class Response:
    """Status, headers (lower-case names) and the body, read once with :meth:`read` or
    :meth:`aiter`; either returns the connection to the pool when the body ended cleanly."""

    def __init__(self, pool: Pool, conn: _Conn, status: int, headers: dict[bytes, bytes]) -> None:
        self.pool, self.status, self.headers = pool, status, headers
        self._conn: _Conn | None = conn

    @property
    def status_code(self) -> int:
        """The HTTP status (``httpx``'s name for it)."""
        return self.status

    async def aiter(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive (chunked framing removed)."""
        conn = self._conn
        if conn is None:
            return
        reader, h = conn.reader, self.headers
        reusable = h.get(b"connection", b"").lower() != b"close"
        done = False
        try:
            if self.status in (204, 304):
                pass
            elif b"chunked" in h.get(b"transfer-encoding", b"").lower():
                while True:
                    line = await reader.readuntil(b"\r\n")
                    try:
                        size = int(line.split(b";", 1)[0].strip(), 16)
                    except ValueError:
                        raise HttpError("malformed chunk size") from None
                    if size < 0 or size > MAX_BODY_BYTES:
                        raise HttpError("chunk too large")
                    if size == 0:
                        while await reader.readuntil(b"\r\n") != b"\r\n":
                            pass
                        break
                    data = await reader.readexactly(size + 2)
                    yield data[:-2]
            elif b"content-length" in h:
                try:
                    left = int(h[b"content-length"])
                except ValueError:
                    raise HttpError("malformed Content-Length") from None
                if left < 0 or left > MAX_BODY_BYTES:
                    raise HttpError("response body too large")
                while left > 0:
                    data = await reader.read(min(left, _READ))
                    if not data:
                        raise HttpError("connection closed before the body ended")
                    left -= len(data)
                    yield data
            else:
                reusable = False
                while data := await reader.read(_READ):
                    yield data
            done = True
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise HttpError(f"reading the response failed ({type(exc).__name__})") from None
        finally:
            self._conn = None
            self.pool._release(conn, reusable and done)

    async def read(self) -> bytes:
        """The whole body (at most :data:`MAX_BODY_BYTES`)."""
        conn, h = self._conn, self.headers
        if (
            conn is not None
            and self.status not in (204, 304)
            and b"transfer-encoding" not in h
            and h.get(b"content-length", b"x").isdigit()
        ):
            # The usual answer (a JSON body with its length) in one read, without the
            # async-generator machinery of aiter().
            n, done = int(h[b"content-length"]), False
            try:
                if n > MAX_BODY_BYTES:
                    raise HttpError("response body too large")
                data = await conn.reader.readexactly(n)
                done = True
            except (OSError, asyncio.IncompleteReadError) as exc:
                raise HttpError(f"reading the response failed ({type(exc).__name__})") from None
            finally:
                self._conn = None
                self.pool._release(conn, done and h.get(b"connection", b"").lower() != b"close")
            return data
        parts, size = [], 0
        async for chunk in self.aiter():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise HttpError("response body too large")
            parts.append(chunk)
        return b"".join(parts)

    async def aclose(self) -> None:
        """Drop the connection if the body was not read to its end."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self.pool._release(conn, False)


class Pool:
    """Keep-alive connections to one origin (``scheme://host:port``)."""

    def __init__(self, origin: str, max_connections: int = 1024, keepalive_s: float = 4.0) -> None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) origin: {origin!r}")
        self.host = parts.hostname
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self._host_header = parts.netloc.encode()
        self._ssl = ssl.create_default_context() if self.tls else None
        # Below common servers' idle timeouts (uvicorn's is 5 s): a connection the upstream may
        # already have closed is dropped here instead of failing a request.
        self.keepalive_s = keepalive_s
        self._idle: list[_Conn] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._open: set[_Conn] = set()

    async def _connect(self) -> _Conn:
        try:
            reader, writer = await asyncio.open_connection(
                self.host,
                self.port,
                ssl=self._ssl,
                server_hostname=self.host if self.tls else None,
                limit=MAX_HEAD_BYTES,
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"cannot connect ({type(exc).__name__})") from None
        conn = _Conn(reader, writer)
        self._open.add(conn)
        return conn

    def _take_idle(self) -> _Conn | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            # Bytes that arrived on an idle connection were not asked for (a second answer, junk):
            # the connection is out of step and would hand them to the next request, maybe
            # another tenant's. StreamReader has no public count of buffered bytes.
            stray = getattr(conn.reader, "_buffer", None)
            if now - conn.idle_since < self.keepalive_s and not conn.reader.at_eof() and not stray:
                return conn
            self._drop(conn)
        return None

    def _drop(self, conn: _Conn) -> None:
        self._open.discard(conn)
        conn.close()

    def _release(self, conn: _Conn, reusable: bool) -> None:
        if reusable:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            self._drop(conn)
        self._slots.release()

    async def post(self, path: bytes, headers: bytes, body: bytes) -> Response:
        """Send ``POST path`` with extra header lines (``b"name: value\\r\\n"`` each) and wait
        for the response head. The caller must read or :meth:`Response.aclose` the response."""
        head = (
            b"POST " + path + b" HTTP/1.1\r\nhost: " + self._host_header + b"\r\n" + headers
            + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
        )  # fmt: skip
        await self._slots.acquire()
        try:
            # A reused connection the upstream closed meanwhile fails before any response byte:
            # then (only then) the request is sent once more on a new connection.
            for attempt in range(2):
                conn = self._take_idle()
                reused = conn is not None
                if conn is None:
                    conn = await self._connect()
                try:
                    conn.writer.write(head + body)
                    if conn.writer.transport.get_write_buffer_size() > _READ:
                        await conn.writer.drain()
                    status, hdrs = await _read_head(conn.reader)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    self._drop(conn)
                    if reused and attempt == 0:
                        continue
                    raise HttpError(
                        f"the upstream closed the connection ({type(exc).__name__})"
                    ) from None
                except BaseException:
                    self._drop(conn)
                    raise
                return Response(self, conn, status, hdrs)
            raise HttpError("unreachable")  # pragma: no cover
        except BaseException:
            self._slots.release()
            raise

    async def aclose(self) -> None:
        """Close every connection."""
        conns = list(self._open)
        for conn in conns:
            conn.close()
        self._open.clear()
        self._idle.clear()
        if conns:  # let the transports finish closing their sockets
            await asyncio.wait([asyncio.ensure_future(_closed(c)) for c in conns], timeout=1.0)


async def _closed(conn: _Conn) -> None:
    try:
        await conn.writer.wait_closed()
    except (OSError, RuntimeError):
        pass


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes]]:
    for _ in range(8):  # 1xx heads (e.g. 100 Continue) precede the real one
        status, headers = await _read_one_head(reader)
        if status >= 200:
            return status, headers
    raise HttpError("too many informational responses")


async def _read_one_head(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes]]:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise HttpError("response head too large") from None
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise HttpError("malformed status line")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise HttpError("malformed header line")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers
