"""JSON for machines: money and prices as exact decimal strings, instants in ISO 8601.

Lists of rows are streamed: :func:`stream_array` writes a JSON array one element at a time
(valid JSON for ``json.load`` and ``jq``, flat memory), :func:`stream_lines` JSON Lines.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import IO, Any

from ..money import money_str


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return money_str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _check(value: object) -> None:
    """Floats never reach the output: money must stay exact."""
    if isinstance(value, float):
        raise TypeError("a float reached the JSON output; money must be a Decimal")


def dumps(data: Any, *, indent: int | None = 2) -> str:
    """One JSON document (Decimals as exact strings)."""
    _walk(data)
    return json.dumps(data, ensure_ascii=False, indent=indent, default=_default)


def _walk(value: Any) -> None:
    if isinstance(value, Mapping):
        for v in value.values():
            _walk(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _walk(v)
    else:
        _check(value)


def write(data: Any, out: IO[str]) -> None:
    out.write(dumps(data))
    out.write("\n")


_ROW = json.JSONEncoder(ensure_ascii=False, default=_default)


def stream_array(rows: Iterable[Mapping[str, Any]], out: IO[str]) -> int:
    """Write ``rows`` as one JSON array, element by element; returns how many.

    Rows come from ``to_dict()`` methods, which hold money as strings (never floats).
    """
    count = 0
    out.write("[")
    encode = _ROW.encode
    for row in rows:
        out.write(",\n" if count else "\n")
        out.write(encode(row))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


def stream_lines(rows: Iterable[Mapping[str, Any]], out: IO[str]) -> int:
    """Write ``rows`` as JSON Lines (one object per line); returns how many."""
    count = 0
    encode = _ROW.encode
    for row in rows:
        out.write(encode(row))
        out.write("\n")
        count += 1
    return count
