"""Gateway API keys (``Authorization: Bearer <key>``) mapped to tenants.

Keys are held only as SHA-256 digests, so a memory dump or a ``repr`` shows no key, and the lookup
is a dict probe on the digest (its time does not depend on how much of a guess matches).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sona.serve.config import TenantConfig

#: The tenant of every request when no tenant is configured (auth off, for local use).
OPEN_TENANT = "default"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class Tenants:
    """Resolves a request's ``Authorization`` header to a tenant name."""

    def __init__(self, tenants: Sequence[TenantConfig]) -> None:
        self._by_digest = {_digest(k): t.name for t in tenants for k in t.api_keys}
        self.own_adapter = {t.name for t in tenants if t.adapter == "own"}
        self.micro_adapter = {t.name for t in tenants if t.adapter == "micro"}
        self.names = tuple(t.name for t in tenants)

    @property
    def auth_required(self) -> bool:
        """False when no tenant is configured: every request is the open tenant's."""
        return bool(self._by_digest)

    def resolve(self, authorization: str | None) -> str | None:
        """The tenant a header authenticates, or None (missing, malformed or unknown key)."""
        if not self.auth_required:
            return OPEN_TENANT
        if not authorization:
            return None
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip() or len(key) > 4096:
            return None
        return self._by_digest.get(_digest(key.strip()))
