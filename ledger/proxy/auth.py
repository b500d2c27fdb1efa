"""Who is calling: the client's ``lk_`` key, read from the request and checked against the
ledger on every request (so a revoked key is refused from the next request on, in every
worker and on every host: no cache to go stale). The check is one primary-key read; "last
used" is written at most once a minute per key (:data:`TOUCH_EVERY`), so the hot path stays
a read.

Answers the proxy gives itself (a missing or bad key, a body too large, a project the key may
not bill) are in the caller's API shape, chosen by path: Anthropic for ``/v1/messages...``,
OpenAI otherwise.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from ..shapes import Shape
from ..store.keys import KeyRow, touch_key
from ..store.ops import Store
from .keys import verify_key

__all__ = ["TOUCH_EVERY", "KeyChecker", "api_error", "error_shape", "presented_key"]

TOUCH_EVERY = timedelta(minutes=1)
#: Where clients put their key: the OpenAI SDKs (``Authorization: Bearer``), the Anthropic
#: SDKs (``x-api-key``), Azure-style clients (``api-key``).
KEY_HEADERS = ("authorization", "x-api-key", "api-key")


def error_shape(path: str) -> Shape:
    return "anthropic" if path.rstrip("/").startswith("/v1/messages") else "openai"


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key the request carries, or None when there is none or two different ones."""
    found: set[str] = set()
    for name in KEY_HEADERS:
        value = headers.get(name)
        if value is None:
            continue
        value = value.strip()
        if name == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() != "bearer":
                return None
            value = token.strip()
        if value:
            found.add(value)
    return found.pop() if len(found) == 1 else None


class KeyChecker:
    """Checks keys against the store (sync: the app runs it in a worker thread)."""

    def __init__(self, store: Store, now: Callable[[], datetime]) -> None:
        self.store = store
        self.now = now

    def check(self, presented: str | None) -> KeyRow | None:
        """The key's row (None: missing, malformed, wrong or revoked), "last used" noted."""
        row = self.verify(presented)
        if row is not None and self.touch_due(row):
            self.touch(row)
        return row

    def verify(self, presented: str | None) -> KeyRow | None:
        """The key's row, or None: one primary-key read, nothing written."""
        return verify_key(self.store, presented)

    def touch_due(self, row: KeyRow) -> bool:
        """Whether "last used" is older than :data:`TOUCH_EVERY` (so worth a write)."""
        return row.last_used_at is None or self.now() - row.last_used_at >= TOUCH_EVERY

    def touch(self, row: KeyRow) -> None:
        """Note the key as used now (a write). "Last used" is a convenience: the call goes on
        if it cannot be written."""
        with contextlib.suppress(Exception):
            touch_key(self.store, row.id, self.now())


def api_error(shape: Shape, status: int, kind: str, code: str, message: str) -> bytes:
    """An error body the SDKs of ``shape`` read as their own."""
    payload: dict[str, Any]
    if shape == "anthropic":
        payload = {"type": "error", "error": {"type": kind, "message": message, "code": code}}
    else:
        payload = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return json.dumps(payload, separators=(",", ":")).encode()


UNAUTHORIZED = {
    "openai": ("invalid_request_error", "invalid_api_key"),
    "anthropic": ("authentication_error", "invalid_api_key"),
}
