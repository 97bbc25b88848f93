"""JSON for the gateway's hot path: ``orjson`` when installed, the standard library otherwise.

Both directions fall back to the standard library where ``orjson`` refuses something the gateway
has always accepted (``NaN`` literals, integers beyond 64 bits), so behaviour does not depend on
which one is installed; only the speed does.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - the fallback is exercised where orjson is absent
    _orjson = None  # type: ignore[assignment]


def _std_loads(raw: bytes | str) -> Any:
    return json.loads(raw)


def _std_dumps(obj: Any, sort_keys: bool = False) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=sort_keys).encode()


if _orjson is not None:
    _SORT = _orjson.OPT_SORT_KEYS

    def loads(raw: bytes | str) -> Any:
        """Parse JSON; raises ``ValueError`` (or ``UnicodeDecodeError``) on invalid input."""
        try:
            return _orjson.loads(raw)
        except _orjson.JSONDecodeError:
            return json.loads(raw)  # NaN/Infinity and big integers; re-raises on real errors

    def dumps(obj: Any, sort_keys: bool = False) -> bytes:
        """Compact UTF-8 JSON bytes."""
        try:
            return _orjson.dumps(obj, option=_SORT if sort_keys else 0)
        except TypeError:  # integers beyond 64 bits, non-string keys
            return _std_dumps(obj, sort_keys)

else:  # pragma: no cover
    loads = _std_loads
    dumps = _std_dumps


def with_field(raw: bytes, parsed: dict[str, Any], name: str, value: Any) -> bytes:
    """The JSON object ``raw`` (whose parse is ``parsed``) with one more top-level field.

    The field is spliced in before the closing brace, so the rest of the body is passed on
    byte for byte instead of re-encoded (an upstream completion can be kilobytes). Falls back to
    encoding ``parsed`` when the bytes are not a plain UTF-8 object that splicing keeps valid:
    empty, with the field already present, a byte-order mark, or another encoding.
    """
    body = raw.strip(b" \t\r\n")
    if parsed and name not in parsed and body[:1] == b"{" and body[-1:] == b"}":
        return body[:-1] + b',"' + name.encode() + b'":' + dumps(value) + b"}"
    out = dict(parsed)
    out[name] = value
    return dumps(out)
