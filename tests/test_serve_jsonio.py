"""The gateway's JSON helpers: orjson (when installed) and the stdlib fallback agree."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from sona.serve import jsonio

SAMPLES: list[Any] = [
    {"model": "sona", "messages": [{"role": "user", "content": "héllo 中文 \U0001f600"}]},
    {"a": [1, 2.5, -3, True, False, None], "b": {"c": ""}},
    [],
    "text",
    2**63 - 1,
    -(2**63),
]


@pytest.mark.parametrize("value", SAMPLES)
def test_round_trip_matches_the_standard_library(value: Any) -> None:
    for dumps in (jsonio.dumps, jsonio._std_dumps):
        raw = dumps(value)
        assert isinstance(raw, bytes)
        assert json.loads(raw) == value
        assert jsonio.loads(raw) == value
        assert jsonio._std_loads(raw) == value
        assert b", " not in raw and b": " not in raw  # compact, as sent upstream before


def test_sorted_keys_are_sorted() -> None:
    for dumps in (jsonio.dumps, jsonio._std_dumps):
        assert dumps({"b": 1, "a": {"d": 2, "c": 3}}, sort_keys=True) == (
            b'{"a":{"c":3,"d":2},"b":1}'
        )


def test_what_the_standard_library_accepts_is_still_accepted() -> None:
    # orjson refuses these; the fallback keeps the gateway's behaviour independent of it.
    data = jsonio.loads(b'{"t": NaN, "n": 123456789012345678901234567890}')
    assert math.isnan(data["t"]) and data["n"] == 123456789012345678901234567890
    assert json.loads(jsonio.dumps({"n": 10**30})) == {"n": 10**30}


@pytest.mark.parametrize("raw", [b"", b"{", b'{"a":}', b"\xff\xfe\x00", b"[1,]", b"nul"])
def test_invalid_json_raises_value_error(raw: bytes) -> None:
    for loads in (jsonio.loads, jsonio._std_loads):
        with pytest.raises(ValueError):
            loads(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id":"x","choices":[{"message":{"content":"h\\u00e9 \xe4\xb8\xad"}}]}',
        b'  {"id": "x", "choices": []}\r\n',
        b'{"id":"x","n":NaN,"big":123456789012345678901234567890}',
    ],
)
def test_with_field_splices_without_re_encoding(raw: bytes) -> None:
    parsed = jsonio.loads(raw)
    out = jsonio.with_field(raw, parsed, "sona", {"trajectory_id": 7, "tier": "small"})
    # The upstream's bytes pass through unchanged (not re-encoded), the field is appended.
    assert out.startswith(raw.strip()[:-1])
    again = json.loads(out)
    assert again["sona"] == {"trajectory_id": 7, "tier": "small"}
    assert {k: v for k, v in again.items() if k != "sona"}.keys() == parsed.keys()
    assert again["id"] == "x"
    assert "sona" not in parsed  # the caller's dict is not changed


@pytest.mark.parametrize(
    "raw",
    [
        b"{}",  # empty: a comma would be invalid
        b'{"id":"x","sona":{"old":1}}',  # the field exists: replaced, not duplicated
        b'{"id":"x","son\\u0061":1}',  # ... even when spelled with an escape
        b'\xef\xbb\xbf{"id":"x"}',  # a byte-order mark
        '{"id":"x"}'.encode("utf-16-le"),  # another encoding (the stdlib parses it)
        '{"id":"x"}'.encode("utf-32"),
    ],
)
def test_with_field_falls_back_to_encoding_when_splicing_is_unsafe(raw: bytes) -> None:
    parsed = json.loads(raw)
    out = jsonio.with_field(raw, parsed, "sona", {"t": 1})
    again = json.loads(out)
    assert again["sona"] == {"t": 1}
    assert out.count(b'"sona"') == 1
    assert {k: v for k, v in again.items() if k != "sona"} == {
        k: v for k, v in parsed.items() if k != "sona"
    }
