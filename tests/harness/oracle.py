"""The independent oracle: what a caller saw of one call (read with the harness's own
parsers, :class:`StreamOracle` and :func:`json_usage`, never the ledger's), and the checks of the
ledger's records against it (:func:`check_event`, :func:`audit`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select, text

from ledger.clock import ManualClock
from ledger.core import Ledger
from ledger.money import MAX_TOKENS, from_units
from ledger.store.schema import events, holds

from .common import PRICE, Figures, Shape, cost

# -- what a caller saw ----------------------------------------------------------------------------


@dataclass
class Seen:
    """One call as its caller saw it (read with the harness's own parsers, not the ledger's)."""

    status: int = 0
    call_id: str | None = None
    #: ``x-ledger-refused`` of a response the ledger answered itself (402/503/400).
    refused: str | None = None
    #: (prompt, completion) the server reported, as the caller read it.
    usage: tuple[int, int] | None = None
    #: The body ended normally: JSON parsed, or the stream's end event arrived.
    complete: bool = False
    error_event: bool = False
    garbled: bool = False
    cancelled: bool = False
    exception: str | None = None
    latency: float = 0.0
    tag: str = ""
    #: The start of the body of a response the ledger answered itself (why it refused).
    refusal_body: str = ""

    @property
    def sent(self) -> bool:
        """The ledger let it through (it reached the server, or at least the network)."""
        return self.refused is None

    def kind(self) -> str:
        """How the ledger must have recorded this call (see :func:`check_event`)."""
        if self.refused is not None:
            return "refused"
        if self.exception is not None or self.status >= 400 or self.error_event:
            return "failed"
        if self.cancelled:
            return "cancelled"
        if self.garbled:
            return "any"
        if not self.complete:
            return "failed"
        return "ok-exact" if self.usage is not None else "ok-estimated"


class StreamOracle:
    """The caller's own SSE reader (independent of ``ledger.sse``): end event, error event and
    usage of an OpenAI- or Anthropic-shape stream, per the SSE spec (CR, LF or CRLF lines; an
    event is dispatched at a blank line)."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self._buf = b""
        self._event = ""
        self._data: list[bytes] = []
        self.done = False
        self.error = False
        self.garbled = False
        self.prompt: int | None = None
        self.completion: int | None = None

    @property
    def usage(self) -> tuple[int, int] | None:
        if self.prompt is None or self.completion is None:
            return None
        return self.prompt, self.completion

    def feed(self, data: bytes) -> None:
        self._buf += data
        while True:
            cut = -1
            for i, byte in enumerate(self._buf):
                if byte in (10, 13):
                    cut = i
                    break
            if cut < 0:
                return
            line, rest = self._buf[:cut], self._buf[cut + 1:]
            if self._buf[cut] == 13:
                if not rest:  # a CR at the end: wait for a possible LF
                    return
                if rest[0] == 10:
                    rest = rest[1:]
            self._buf = rest
            self._line(line)

    def _line(self, line: bytes) -> None:
        if not line:
            if self._data:
                self._dispatch(self._event, b"\n".join(self._data))
            self._event, self._data = "", []
            return
        name, _, value = line.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"data":
            self._data.append(value)

    def _dispatch(self, event: str, data: bytes) -> None:
        if self.done or self.error:
            return
        if self.shape in ("openai", "completions") and data == b"[DONE]":
            self.done = True
            return
        try:
            obj = json.loads(data)
        except ValueError:
            self.garbled = True
            return
        if not isinstance(obj, dict):
            self.garbled = True
            return
        if self.shape in ("openai", "completions"):
            if obj.get("error") is not None:
                self.error = True
            usage = obj.get("usage")
            if isinstance(usage, dict):
                self.prompt = _count(usage.get("prompt_tokens"))
                self.completion = _count(usage.get("completion_tokens"))
            return
        kind = obj.get("type") or event
        if self.shape == "responses":
            if kind in ("error", "response.failed") or event in ("error", "response.failed"):
                self.error = True
            elif kind in ("response.completed", "response.incomplete"):
                response = obj.get("response")
                usage = response.get("usage") if isinstance(response, dict) else None
                if isinstance(usage, dict):
                    self.prompt = _count(usage.get("input_tokens"))
                    self.completion = _count(usage.get("output_tokens"))
                self.done = True
            return
        if kind == "error" or event == "error":
            self.error = True
        elif kind == "message_start":
            message = obj.get("message")
            usage = message.get("usage") if isinstance(message, dict) else None
            if isinstance(usage, dict):
                self.prompt = _anthropic_prompt(usage)
                self.completion = _count(usage.get("output_tokens"))
        elif kind == "message_delta":
            usage = obj.get("usage")
            if isinstance(usage, dict) and _count(usage.get("output_tokens")) is not None:
                self.completion = _count(usage.get("output_tokens"))
        elif kind == "message_stop":
            self.done = True


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS:
        return None
    return value


def _anthropic_prompt(usage: Mapping[str, Any]) -> int | None:
    base = _count(usage.get("input_tokens"))
    if base is None:
        return None
    extra = [_count(usage.get(k)) or 0 for k in ("cache_read_input_tokens",
                                                 "cache_creation_input_tokens")]
    return base + sum(extra)


def json_usage(shape: Shape, data: bytes) -> tuple[tuple[int, int] | None, bool]:
    """(usage, parsed) of a non-stream reply body, read by the caller."""
    try:
        obj = json.loads(data)
    except ValueError:
        return None, False
    if not isinstance(obj, dict):
        return None, False
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        return None, True
    if shape in ("openai", "completions"):
        p, c = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    elif shape == "embeddings":
        p, c = _count(usage.get("prompt_tokens")), 0
    elif shape == "responses":
        p, c = _count(usage.get("input_tokens")), _count(usage.get("output_tokens"))
    else:
        p, c = _anthropic_prompt(usage), _count(usage.get("output_tokens"))
    return (None if p is None or c is None else (p, c)), True


# -- reading the ledger back ----------------------------------------------------------------------


def event_rows(book: Ledger, where: Any = None) -> list[dict[str, Any]]:
    """Rows of ``events`` (all, or those matching a SQLAlchemy condition), oldest first."""
    stmt = select(events).order_by(events.c.id)
    if where is not None:
        stmt = stmt.where(where)
    with book.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt).all()]


def hold_rows(book: Ledger, where: Any = None) -> list[dict[str, Any]]:
    stmt = select(holds)
    if where is not None:
        stmt = stmt.where(where)
    with book.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt).all()]


def check_event(seen: Seen, row: Mapping[str, Any] | None, per_1k: Decimal = PRICE) -> str | None:
    """What is wrong with the ledger's record of a call its caller saw as ``seen`` (or None)."""
    kind = seen.kind()
    if kind == "refused":
        return None
    if row is None:
        return f"{kind} call {seen.call_id} ({seen.tag}) has no event"
    amount = from_units(row["cost"])
    status = row["status"]
    where = f"call {seen.call_id} ({seen.tag}, caller saw {kind})"
    if amount < 0 or row["prompt_tokens"] < 0 or row["completion_tokens"] < 0:
        return f"{where}: negative amount stored"
    if kind == "failed":
        if status != "failed" or amount != 0:
            return f"{where}: recorded {status} at {amount}, want failed at 0"
    elif kind == "cancelled":
        if status != "cancelled" or amount <= 0:
            return f"{where}: recorded {status} at {amount}, want cancelled at > 0"
    elif kind == "ok-exact":
        assert seen.usage is not None
        want = cost(*seen.usage, per_1k=per_1k)
        if status != "ok" or row["estimated"] or amount != want:
            return (f"{where}: recorded {status} (estimated={row['estimated']}) at {amount}, "
                    f"want ok at {want}")
    elif kind == "ok-estimated":
        if status != "ok" or not row["estimated"] or amount <= 0:
            return f"{where}: recorded {status} (estimated={row['estimated']}) at {amount}"
    elif status in ("ok", "cancelled") and amount <= 0:
        return f"{where}: a success recorded at $0"
    elif status == "failed" and amount != 0:
        return f"{where}: a failure charged {amount}"
    return None


def audit(book: Ledger, figures: Figures, clock: ManualClock | None = None) -> None:
    """The books balance; no negative amounts; no success at $0; and, once the clock is
    past every TTL, expiry leaves no hold pending (``figures.unresolved_holds``)."""
    for problem in book.store.check_totals():
        figures.charged_twice += 1
        figures.problem(f"totals: {problem}")
    with book.engine.connect() as conn:
        zero = conn.execute(select(events.c.call_id).where(
            events.c.status.in_(("ok", "cancelled")), events.c.cost <= 0)).all()
        dup = conn.execute(text(
            "SELECT call_id, COUNT(*) FROM events WHERE call_id IS NOT NULL "
            "GROUP BY call_id HAVING COUNT(*) > 1")).all()
    for (call_id,) in zero:
        figures.problem(f"success recorded at $0: {call_id}")
    for call_id, n in dup:
        figures.charged_twice += 1
        figures.problem(f"call {call_id} recorded {n} times")
    if clock is not None:
        clock.advance(book.hold_ttl + timedelta(seconds=1))
        figures.extra["holds_expired"] = figures.extra.get("holds_expired", 0) + (
            book.expire_holds())
        now = book.now()
        left = [h for h in book.store.pending_holds() if h.expires_at <= now]
        figures.unresolved_holds += len(left)
        for h in left[:5]:
            figures.problem(f"hold {h.call_id} still pending past its TTL")
        for problem in book.store.check_totals():
            figures.problem(f"totals after expiry: {problem}")
