"""The gateway's trajectory ledger: who owns each answer, and whether it has been rewarded.

The gateway hands out its own trajectory ids (one counter over all routers, so ids never collide
between profiles or per-tenant engines) and maps each to its router's trajectory. A record stays
open until it gets one reward — explicit, implicit (a retry), judge, or error — or expires.
Everything here runs on the event loop's thread.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sona.serve.jsonio import dumps

RouterKey = tuple[str, str]


@dataclass
class Trajectory:
    """One routed answer awaiting its reward."""

    gateway_id: int
    tenant: str
    router_key: RouterKey
    engine_id: int
    tier: str
    created: float
    conversation: bytes | None
    closed: str | None = None  # the source of the reward once one was learned


def conversation_key(tenant: str, profile: str, messages: list[Any]) -> bytes:
    """Identifies a conversation state: the same messages resent are a retry."""
    h = hashlib.blake2b(digest_size=16)
    h.update(tenant.encode() + b"\0" + profile.encode() + b"\0")
    h.update(dumps(messages, sort_keys=True))
    return h.digest()


class Ledger:
    """Open trajectories by gateway id (insertion-ordered, so expiry pops the oldest)."""

    def __init__(self, ttl_s: float, max_open: int) -> None:
        self.ttl_s = ttl_s
        self.max_open = max_open
        self._open: OrderedDict[int, Trajectory] = OrderedDict()
        self._by_conversation: dict[bytes, int] = {}
        self._next = 1

    def __len__(self) -> int:
        return len(self._open)

    def open(
        self,
        tenant: str,
        router_key: RouterKey,
        engine_id: int,
        tier: str,
        conversation: bytes | None,
        now: float | None = None,
    ) -> Trajectory:
        """Record a routed request; returns its record (with the gateway id)."""
        now = time.monotonic() if now is None else now
        self.expire(now)
        t = Trajectory(self._next, tenant, router_key, engine_id, tier, now, conversation)
        self._next += 1
        self._open[t.gateway_id] = t
        if conversation is not None:
            self._by_conversation[conversation] = t.gateway_id
        return t

    def get(self, gateway_id: int, tenant: str) -> Trajectory | None:
        """The record if it exists *and* belongs to ``tenant`` (another tenant's looks unknown)."""
        t = self._open.get(gateway_id)
        if t is None or t.tenant != tenant:
            return None
        return t

    def previous(self, conversation: bytes, window_s: float, now: float) -> Trajectory | None:
        """The unrewarded answer to the same conversation within ``window_s``, if any."""
        gid = self._by_conversation.get(conversation)
        t = self._open.get(gid) if gid is not None else None
        if t is None or t.closed is not None or now - t.created > window_s:
            return None
        return t

    def close(self, t: Trajectory, source: str) -> None:
        """Mark rewarded; the record stays until expiry so a second reward is a conflict."""
        t.closed = source
        if t.conversation is not None and self._by_conversation.get(t.conversation) == t.gateway_id:
            del self._by_conversation[t.conversation]

    def expire(self, now: float) -> None:
        """Drop records past their TTL, and the oldest beyond ``max_open``."""
        while self._open:
            gid, t = next(iter(self._open.items()))
            if now - t.created <= self.ttl_s and len(self._open) < self.max_open:
                break
            del self._open[gid]
            if t.conversation is not None and self._by_conversation.get(t.conversation) == gid:
                del self._by_conversation[t.conversation]
