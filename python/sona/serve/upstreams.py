"""Tiers as upstreams: OpenAI-compatible chat-completions endpoints (:mod:`sona.serve.http1`).

An :class:`Upstream` turns the client's request into the tier's (its model name, its settings),
sends it, and turns every failure — connection refused, timeout, an HTTP error, a body that is not
JSON — into an :class:`UpstreamError` that carries an OpenAI-style status, type and message. The
tier's API key is sent only in the ``Authorization`` header and scrubbed from every message, so an
upstream that echoes it cannot leak it to the client or the log.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sona.serve.config import TierConfig
from sona.serve.http1 import Deadline, HttpError, Pool, Response
from sona.serve.jsonio import dumps, loads

#: Upstream statuses that describe the request itself: passed to the client, no fallback.
_CLIENT_STATUSES = frozenset({400, 413, 422})


class UpstreamError(Exception):
    """An upstream failed; ``status``/``kind``/``code`` make the client's OpenAI-style error."""

    def __init__(self, status: int, kind: str, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.code, self.message = status, kind, code, message

    @property
    def retryable(self) -> bool:
        """Whether another tier could succeed (not the request's own fault)."""
        return self.status not in _CLIENT_STATUSES


@dataclass
class Usage:
    """Token counts of one answer (estimated when the upstream reports none)."""

    prompt_tokens: int
    completion_tokens: int


def estimate_prompt_tokens(messages: list[Any]) -> int:
    """About four characters a token: used only when the upstream reports no usage."""
    chars = 0
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(str(p.get("text", ""))) for p in content if isinstance(p, dict))
    return max(1, chars // 4)


class Upstream:
    """One tier's endpoint."""

    def __init__(self, tier: TierConfig, pool: Pool) -> None:
        self.tier = tier
        # One keep-alive pool per origin, shared by the tiers on it (see sona.serve.http1 for why
        # not httpx: its pool cost more CPU than the rest of the gateway at 200 requests in flight).
        self.pool = pool
        self._path = (urlsplit(tier.base_url).path.rstrip("/") + "/chat/completions").encode()
        headers = b"content-type: application/json\r\n"
        if tier.api_key:
            headers += b"authorization: Bearer " + tier.api_key.encode() + b"\r\n"
        self._headers = headers

    async def _post(self, request: dict[str, Any], stream: bool) -> Response:
        return await self.pool.post(self._path, self._headers, self.body(request, stream))

    def __repr__(self) -> str:
        return f"Upstream({self.tier.name!r}, {self.tier.base_url!r}, model={self.tier.model!r})"

    def redact(self, text: str) -> str:
        """``text`` with the tier's API key (if any) replaced."""
        key = self.tier.api_key
        return text.replace(key, "***") if key else text

    def cost(self, usage: Usage) -> float:
        """What an answer cost at this tier's prices."""
        return (
            usage.prompt_tokens * self.tier.cost_per_1k_input
            + usage.completion_tokens * self.tier.cost_per_1k_output
        ) / 1000.0

    def body(self, request: dict[str, Any], stream: bool) -> bytes:
        """The request as this tier receives it (its model, its settings on top)."""
        out = dict(request)
        out.pop("sona", None)
        out.update(self.tier.params)
        out["model"] = self.tier.model
        out["stream"] = stream
        return dumps(out)

    def _error_from(self, status: int, raw: bytes) -> UpstreamError:
        detail = ""
        try:
            data = json.loads(raw)
            err = data.get("error") if isinstance(data, dict) else None
            if isinstance(err, dict):
                detail = str(err.get("message", ""))
            elif err is not None:
                detail = str(err)
            elif isinstance(data, dict) and "detail" in data:
                detail = str(data["detail"])
        except (ValueError, UnicodeDecodeError):
            detail = raw[:200].decode("utf-8", "replace")
        detail = self.redact(detail)[:500]
        message = f"upstream tier {self.tier.name!r} returned HTTP {status}"
        if detail:
            message += f": {detail}"
        if status in _CLIENT_STATUSES:
            return UpstreamError(status, "invalid_request_error", "upstream_rejected", message)
        return UpstreamError(502, "upstream_error", "upstream_error", message)

    def _transport_error(self, exc: BaseException) -> UpstreamError:
        if isinstance(exc, TimeoutError):
            return UpstreamError(
                504,
                "upstream_error",
                "upstream_timeout",
                f"upstream tier {self.tier.name!r} timed out after {self.tier.timeout_s:g} s",
            )
        return UpstreamError(
            502,
            "upstream_error",
            "upstream_unreachable",
            f"upstream tier {self.tier.name!r} is unreachable ({type(exc).__name__})",
        )

    async def complete(self, request: dict[str, Any]) -> tuple[dict[str, Any], Usage, float]:
        """A non-streaming completion: (response JSON, usage, seconds spent upstream)."""
        data, _, usage, elapsed = await self.complete_raw(request)
        return data, usage, elapsed

    async def complete_raw(
        self, request: dict[str, Any]
    ) -> tuple[dict[str, Any], bytes, Usage, float]:
        """:meth:`complete` with the response body's bytes as well (parsed into the first)."""
        t0 = time.perf_counter()
        try:
            # timeout_s bounds the whole exchange, not only each read.
            with Deadline(self.tier.timeout_s):
                resp = await self._post(request, False)
                raw = await resp.read()
        except (HttpError, TimeoutError) as exc:
            raise self._transport_error(exc) from None
        elapsed = time.perf_counter() - t0
        if resp.status_code >= 400:
            raise self._error_from(resp.status_code, raw)
        try:
            data = loads(raw)
            if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
                raise ValueError("no choices")
        except (ValueError, UnicodeDecodeError):
            raise UpstreamError(
                502,
                "upstream_error",
                "upstream_bad_response",
                f"upstream tier {self.tier.name!r} answered with a body that is not a completion",
            ) from None
        return data, raw, self._usage(data.get("usage"), request), elapsed

    def _usage(self, raw: Any, request: dict[str, Any]) -> Usage:
        if isinstance(raw, dict):
            p, c = raw.get("prompt_tokens"), raw.get("completion_tokens")
            if isinstance(p, int) and isinstance(c, int) and p >= 0 and c >= 0:
                return Usage(p, c)
        return Usage(estimate_prompt_tokens(request.get("messages", [])), 0)

    async def open_stream(self, request: dict[str, Any]) -> Response:
        """Start a streaming completion; raises :class:`UpstreamError` before any byte is sent."""
        try:
            with Deadline(self.tier.timeout_s):  # until the response head
                resp = await self._post(request, True)
        except (HttpError, TimeoutError) as exc:
            raise self._transport_error(exc) from None
        if resp.status_code >= 400:
            try:
                with Deadline(self.tier.timeout_s):
                    raw = await resp.read()
            except (HttpError, TimeoutError):
                raw = b""
            finally:
                await resp.aclose()
            raise self._error_from(resp.status_code, raw)
        return resp

    async def relay(self, resp: Response, stats: StreamStats) -> AsyncIterator[bytes]:
        """Pass the upstream's SSE bytes through, counting chunks and catching its usage."""
        try:
            async for chunk in resp.aiter():
                stats.events += chunk.count(b"data: ")
                if b'"usage"' in chunk:
                    stats.scan_usage(chunk)
                yield chunk
        except HttpError as exc:
            err = self._transport_error(exc)
            stats.error = err
            payload = {"error": {"message": err.message, "type": err.kind, "code": err.code}}
            yield b"data: " + json.dumps(payload).encode() + b"\n\n"
        finally:
            await resp.aclose()


@dataclass
class StreamStats:
    """What a relayed stream showed: event count, usage if reported, a mid-stream error."""

    events: int = 0
    usage: Usage | None = None
    error: UpstreamError | None = None

    def scan_usage(self, chunk: bytes) -> None:
        """Pick the usage object out of any ``data:`` line that has one."""
        for line in chunk.split(b"\n"):
            if line.startswith(b"data: ") and b'"usage"' in line:
                try:
                    raw = json.loads(line[6:]).get("usage")
                except (ValueError, AttributeError):
                    continue
                if isinstance(raw, dict):
                    p, c = raw.get("prompt_tokens"), raw.get("completion_tokens")
                    if isinstance(p, int) and isinstance(c, int):
                        self.usage = Usage(p, c)
