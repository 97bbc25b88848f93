"""The gateway's keep-alive HTTP/1.1 client against scripted raw servers: framing, reuse, and
malformed or hostile upstream answers (each a clean ``HttpError``, never a hang or a crash)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from sona.serve.http1 import _SLOTS, MAX_BODY_BYTES, ConnectError, Deadline, HttpError, Pool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    n = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head + await reader.readexactly(n)


def run(handler: Handler, client: Callable[[Pool], Awaitable[None]]) -> None:
    async def main() -> None:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = Pool(f"http://127.0.0.1:{port}", max_connections=4)
        try:
            await asyncio.wait_for(client(pool), 10)
        finally:
            await pool.aclose()
            server.close()

    asyncio.run(main())


def reply(*answers: bytes, keep: bool = True) -> tuple[Handler, list[int]]:
    """A server answering each request on a connection with the next scripted bytes."""
    conns: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(1)
        try:
            for a in answers:
                await _read_request(reader)
                writer.write(a)
                await writer.drain()
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return handler, conns


OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


def test_keep_alive_reuses_one_connection() -> None:
    handler, conns = reply(OK, OK, OK)

    async def client(pool: Pool) -> None:
        for _ in range(3):
            r = await pool.post(b"/v1/x", b"", b"{}")
            assert r.status == 200 and await r.read() == b"{}"

    run(handler, client)
    assert len(conns) == 1


def test_chunked_body_and_1xx() -> None:
    body = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nx-trailer: 1\r\n\r\n"
    )
    handler, _ = reply(body, OK)

    async def client(pool: Pool) -> None:
        r = await pool.post(b"/", b"", b"{}")
        assert [c async for c in r.aiter()] == [b"abc", b"defg"]
        r = await pool.post(b"/", b"", b"{}")  # same connection, framing intact
        assert await r.read() == b"{}"

    run(handler, client)


def test_a_closed_keep_alive_connection_is_retried_once() -> None:
    handler, conns = reply(OK, keep=False)  # closes after every answer

    async def client(pool: Pool) -> None:
        for _ in range(2):
            r = await pool.post(b"/", b"", b"{}")
            assert await r.read() == b"{}"
            await asyncio.sleep(0.05)

    run(handler, client)
    assert len(conns) == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno-colon-here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: nope\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: " + str(MAX_BODY_BYTES + 1).encode() + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffff\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n" * 9,
        b"HTTP/1.1 200 OK\r\nx: " + b"a" * 70_000 + b"\r\n\r\n",
        b"",
    ],
)
def test_malformed_answers_are_http_errors(answer: bytes) -> None:
    handler, _ = reply(answer, keep=False)

    async def client(pool: Pool) -> None:
        with pytest.raises(HttpError):
            r = await pool.post(b"/", b"", b"{}")
            await r.read()
        # The pool still works afterwards (and released its slot: max_connections is 4).
        for _ in range(5):
            with pytest.raises(HttpError):
                r = await pool.post(b"/", b"", b"{}")
                await r.read()

    run(handler, client)


def test_refused_connection_and_cancellation() -> None:
    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        with pytest.raises(ConnectError):
            await Pool(f"http://127.0.0.1:{port}").post(b"/", b"", b"{}")

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(5)

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        pool = Pool(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", max_connections=1)
        for _ in range(3):  # a timed-out exchange frees its slot (else the 2nd would hang)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await pool.post(b"/", b"", b"{}")
        await pool.aclose()
        server.close()

    asyncio.run(main())


def test_bad_origins() -> None:
    for origin in ("ftp://x", "http://", "nonsense"):
        with pytest.raises(ValueError):
            Pool(origin)


def test_deadline_times_out_like_asyncio_timeout() -> None:
    """``Deadline``: its own expiry is a ``TimeoutError`` (and the task is not left cancelled);
    a cancellation from elsewhere stays a ``CancelledError``; a block that ends in time leaves
    no timer behind; outside a task it refuses to start."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            with Deadline(0.05) as d:
                await asyncio.sleep(5)
        assert d.expired and 0.04 <= loop.time() - t0 < 2
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        await asyncio.sleep(0)  # still usable: no cancel request left pending

        with Deadline(5) as d:
            await asyncio.sleep(0.01)
        assert not d.expired
        slots = _SLOTS[loop]
        assert all(d not in group for group in slots.pending.values())  # nothing left to fire

        # Deadlines entered together share one slot (one timer), and each still fires.
        async def sleeper() -> bool:
            try:
                with Deadline(0.06):
                    await asyncio.sleep(5)
            except TimeoutError:
                return True
            return False

        before = len(slots.pending)
        tasks = [asyncio.ensure_future(sleeper()) for _ in range(100)]
        await asyncio.sleep(0)
        assert len(slots.pending) - before <= 2
        assert await asyncio.gather(*tasks) == [True] * 100

        async def cancelled(deadline_s: float, cleanup_s: float) -> None:
            """Sleep under a deadline, cancelled from outside; ``cleanup_s`` of awaiting in the
            ``finally`` lets the deadline expire too (the outer cancel must still win)."""

            async def waits() -> None:
                with Deadline(deadline_s):
                    try:
                        await asyncio.sleep(5)
                    finally:
                        await asyncio.sleep(cleanup_s)

            inner = asyncio.ensure_future(waits())
            await asyncio.sleep(0.01)
            inner.cancel()
            with pytest.raises(asyncio.CancelledError):
                await inner

        await cancelled(5, 0)
        await cancelled(0.02, 0.1)

    asyncio.run(main())
    with pytest.raises(RuntimeError):
        Deadline(1).__enter__()


def test_a_timed_out_exchange_with_deadline_frees_its_slot() -> None:
    async def main() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(5)

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        pool = Pool(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", max_connections=1)
        for _ in range(3):
            with pytest.raises(TimeoutError):
                with Deadline(0.1):
                    await pool.post(b"/", b"", b"{}")
        await pool.aclose()
        server.close()

    asyncio.run(main())


def test_large_bodies_pass_the_receive_buffer_bound() -> None:
    """A body far beyond the stream's buffer limit arrives whole (reading pauses and resumes),
    by Content-Length and chunked, and the connection is reused afterwards."""
    big = bytes(range(256)) * 8192  # 2 MiB
    chunked = b"".join(
        b"%x\r\n" % 65536 + big[i : i + 65536] + b"\r\n" for i in range(0, len(big), 65536)
    )
    handler, conns = reply(
        b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(big) + big,
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n",
        OK,
    )

    async def client(pool: Pool) -> None:
        r = await pool.post(b"/", b"", b"{}")
        assert await r.read() == big
        r = await pool.post(b"/", b"", b"{}")
        await asyncio.sleep(0.2)  # let the whole answer arrive before it is read
        assert b"".join([c async for c in r.aiter()]) == big
        r = await pool.post(b"/", b"", b"{}")
        assert await r.read() == b"{}"

    run(handler, client)
    assert len(conns) == 1


def test_an_idle_connection_that_received_stray_bytes_is_not_reused() -> None:
    """Bytes an upstream sends after its answer, unasked, put the connection out of step: the
    next request goes over a new one and reads its own answer."""
    handler, conns = reply(OK + b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstray", OK)

    async def client(pool: Pool) -> None:
        r = await pool.post(b"/", b"", b"{}")
        assert await r.read() == b"{}"
        await asyncio.sleep(0.05)
        r = await pool.post(b"/", b"", b"{}")
        assert await r.read() == b"{}"

    run(handler, client)
    assert len(conns) == 2
