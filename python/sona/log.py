"""The engine's interaction log: reading it and ``sona export-log``.

The engine writes every acknowledged trajectory and feedback to an SQLite database (WAL mode) when
its config has a ``log_path`` (see ``docs/reliability.md``). This module reads it with Python's
own ``sqlite3`` (opened read-only; nothing is executed from the file and nothing is unpickled) and
exports it as JSON lines, or as Parquet when ``pyarrow`` is installed (the ``parquet`` extra).

Each exported row: ``seq``, ``kind`` (``"trajectory"`` or ``"feedback"``), ``id``, ``ts_ms``, then
for trajectories ``tier``, ``propensity``, ``query`` (list of floats) and ``recalled`` (pattern
ids, ``None`` for an empty recall slot), and for feedbacks ``reward`` and ``source``.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sona.errors import CheckpointError, InvalidInputError

#: The log format this reader understands (``meta.format`` in the database).
FORMAT = 1
_MISSING = 2**64 - 1
_KINDS = {1: "trajectory", 2: "feedback"}


def _connect(path: str | Path) -> sqlite3.Connection:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no interaction log there")
    try:
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.DatabaseError as exc:
        raise CheckpointError(f"{p}: not a SONA interaction log ({exc})") from exc
    if meta.get("format") != FORMAT or not isinstance(meta.get("dim"), int):
        raise CheckpointError(f"{p}: log format {meta.get('format')!r} is not {FORMAT}")
    return conn


def _floats(blob: object, what: str) -> list[float]:
    if not isinstance(blob, bytes) or len(blob) % 4:
        raise CheckpointError(f"interaction log: malformed {what}")
    return list(struct.unpack(f"<{len(blob) // 4}f", blob))


def _ids(blob: object) -> list[int | None]:
    if not isinstance(blob, bytes) or len(blob) % 8:
        raise CheckpointError("interaction log: malformed recalled ids")
    return [None if v == _MISSING else v for v in struct.unpack(f"<{len(blob) // 8}Q", blob)]


def read_log(path: str | Path, after: int = 0) -> Iterator[dict[str, Any]]:
    """Yields every record with ``seq > after`` in sequence order, as a dict (see the module doc).

    Raises ``CheckpointError`` for a missing file, a file that is not a SONA log, or a malformed
    row.
    """
    conn = _connect(path)
    try:
        cur = conn.execute(
            "SELECT seq, kind, id, ts_ms, tier, propensity, reward, source, query, recalled "
            "FROM records WHERE seq > ? ORDER BY seq",
            (int(after),),
        )
        for seq, kind, id_, ts, tier, prop, reward, source, query, recalled in cur:
            if kind not in _KINDS:
                raise CheckpointError(f"interaction log: unknown record kind {kind!r}")
            row: dict[str, Any] = {"seq": seq, "kind": _KINDS[kind], "id": id_, "ts_ms": ts}
            if kind == 1:
                row.update(
                    tier=tier,
                    propensity=prop,
                    query=_floats(query, "query"),
                    recalled=_ids(recalled),
                )
            else:
                row.update(reward=reward, source=source)
            yield row
    except sqlite3.DatabaseError as exc:
        raise CheckpointError(f"interaction log: {exc}") from exc
    finally:
        conn.close()


def export_log(path: str | Path, out: str | Path, fmt: str = "auto") -> int:
    """Writes the log at ``path`` to ``out`` as JSON lines (``fmt="jsonl"``) or Parquet
    (``fmt="parquet"``, needs ``pyarrow``); ``"auto"`` picks by the suffix of ``out``.

    Returns the number of records written. Raises ``InvalidInputError`` for an unknown format or
    a missing ``pyarrow``, ``CheckpointError`` for a bad log.
    """
    out = Path(out)
    if fmt == "auto":
        fmt = "parquet" if out.suffix == ".parquet" else "jsonl"
    if fmt not in ("jsonl", "parquet"):
        raise InvalidInputError(f"format must be 'jsonl' or 'parquet', got {fmt!r}")
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise InvalidInputError(
                "Parquet export needs pyarrow (pip install sona[parquet])"
            ) from exc
        rows = list(read_log(path))
        pq.write_table(pa.Table.from_pylist(rows), out)
        return len(rows)
    n = 0
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in read_log(path):
            f.write(json.dumps(row, separators=(",", ":")) + "\n")
            n += 1
    tmp.replace(out)
    return n


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sona export-log``."""
    parser.add_argument("log", help="the engine's log_path (SQLite database)")
    parser.add_argument("out", help="output file (.jsonl or .parquet)")
    parser.add_argument("--format", choices=["auto", "jsonl", "parquet"], default="auto")


def run(args: argparse.Namespace) -> int:
    """``sona export-log LOG OUT``: prints the number of records written."""
    n = export_log(args.log, args.out, args.format)
    print(f"wrote {n} records to {args.out}", file=sys.stdout)
    return 0
