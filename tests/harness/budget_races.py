"""Races on budgets of several scopes (issue 10): processes × threads of holds and settles with
an attribution (an end user, tags), straight on the store, every process on the same instant
(a ``ManualClock`` that does not move, so every call falls in the same day, week and month).

:func:`scoped_race` runs them and returns what each caller saw (:class:`RaceResult`); the
tests compare that with the ledger. Two kinds of call:

* ``users``: one of ``users`` end users (40% of the calls by three busy ones), no tags; each call's worst case is random and it
  settles at most at its hold (or every call costs exactly its hold, ``fixed``, so windows
  fill to their limit exactly and the 100% alerts are crossed);
* ``mixed``: a few users and a random subset of ``TAG_POOL``, in a random order, so that
  concurrent calls share several budgets (the PostgreSQL deadlock test); some calls are
  recorded by hand instead of held.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ledger.clock import ManualClock
from ledger.core import Ledger
from ledger.errors import BudgetExceeded
from ledger.records import Alert, Attribution, Outcome

#: The instant every racing process lives at (Thursday 2026-12-03, noon UTC).
AT = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
TTL = timedelta(minutes=10)
MODEL = "kimi-k2.5"
TAG_POOL = ("a=1", "b=2", "c=3", "d=4")
#: The fixed call: 200 + 300 tokens at $0.020 per 1K, $0.01.
FIXED_PROMPT, FIXED_COMPLETION = 200, 300


@dataclass
class RaceResult:
    """What the racing callers saw."""

    #: (call id, user, tags text, cost in units) of every admitted call (voided ones cost 0).
    admitted: list[tuple[str, str | None, str | None, int]] = field(default_factory=list)
    #: The label of the budget each refusal named ("" when it named none).
    refused: list[str] = field(default_factory=list)
    #: Every other exception, with its causes.
    errors: list[str] = field(default_factory=list)
    #: Ids of the alerts ``on_alert`` reported, in every process.
    alerts_seen: list[int] = field(default_factory=list)
    seconds: float = 0.0


def describe(exc: BaseException) -> str:
    """An exception and the chain of causes behind it, on one line."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 5:
        parts.append(f"{type(seen).__name__}: {seen}")
        seen = seen.__cause__ or seen.__context__
    return " <- ".join(parts)


def _attribution(rnd: random.Random, kind: str, users: int) -> tuple[str | None, str | None]:
    if kind == "users":  # 40% of the calls by three busy users: their days fill up first
        n = rnd.randrange(3) if rnd.random() < 0.4 else rnd.randrange(users)
        return f"user{n:02d}", None
    user = None if rnd.random() < 0.2 else f"user{rnd.randrange(users):02d}"
    tags = rnd.sample(TAG_POOL, rnd.randint(0, len(TAG_POOL)))  # a random subset and order
    return user, ",".join(tags) or None


def _one_call(book: Ledger, rnd: random.Random, kind: str, users: int, fixed: bool,
              call_id: str, project: str, result: RaceResult, lock: threading.Lock) -> None:
    store, now = book.store, book.now()
    user, tags = _attribution(rnd, kind, users)
    attribution = Attribution.of(user, tags)
    if kind == "mixed" and rnd.random() < 0.15:  # recorded by hand: never refused
        cost = store.record(project, MODEL, Outcome("ok", rnd.randint(1, 300), 10), now, now,
                            call_id, attribution=attribution)
        with lock:
            result.admitted.append((call_id, user, attribution.tags_text, cost))
        return
    if fixed:
        prompt, cap = FIXED_PROMPT, FIXED_COMPLETION
    else:
        prompt, cap = rnd.randint(50, 600), rnd.randint(50, 1200)
    try:
        store.hold(call_id, project, MODEL, prompt, cap, now, TTL, attribution=attribution)
    except BudgetExceeded as exc:
        with lock:
            result.refused.append("" if exc.budget is None else exc.budget.budget.label)
        return
    if not fixed and rnd.random() < 0.15:
        cost = store.settle(call_id, Outcome("failed", error="simulated failure"), now)
    else:
        completion = cap if fixed else rnd.randint(0, cap)
        cost = store.settle(call_id, Outcome("ok", prompt, completion), now)
    with lock:
        result.admitted.append((call_id, user, attribution.tags_text, cost))


def _race_process(url: str, project: str, kind: str, users: int, fixed: bool, seed: int,
                  threads: int, calls: int, spool: str, out: Any) -> None:
    """One racing process: ``threads`` threads of ``calls`` calls each."""
    try:
        book = Ledger(url, replay_spool=False, clock=ManualClock(AT), hold_ttl=TTL,
                      spool_path=spool)
        result = RaceResult()
        lock = threading.Lock()

        def seen(alert: Alert) -> None:
            with lock:
                result.alerts_seen.append(alert.id)

        book.on_alert(seen)
        go = threading.Barrier(threads)

        def run(tid: int) -> None:
            rnd = random.Random(seed * 1000 + tid)
            go.wait()
            for i in range(calls):
                try:
                    _one_call(book, rnd, kind, users, fixed, f"{project}-{seed}-{tid}-{i}",
                              project, result, lock)
                except Exception as exc:  # what the race is looking for
                    with lock:
                        result.errors.append(describe(exc))

        pool = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        book.close()
        out.put(("ok", result))
    except BaseException:  # report it to the parent rather than hang it
        out.put(("error", traceback.format_exc()))


def scoped_race(url: str, project: str, spool_dir: Path, *, kind: str = "users",
                users: int = 20, fixed: bool = False, processes: int = 4, threads: int = 8,
                calls: int = 8) -> RaceResult:
    """``processes`` × ``threads`` × ``calls`` calls of ``project`` (its budgets set by the
    caller beforehand), in processes started with ``spawn``."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_race_process, args=(
        url, project, kind, users, fixed, p, threads, calls,
        str(spool_dir / f"race-{p}.spool"), out)) for p in range(processes)]
    start = time.perf_counter()
    for p in procs:
        p.start()
    merged = RaceResult()
    try:
        for _ in procs:
            status, payload = out.get(timeout=300)
            if status != "ok":
                merged.errors.append(f"a racing process failed: {payload}")
                continue
            merged.admitted.extend(payload.admitted)
            merged.refused.extend(payload.refused)
            merged.errors.extend(payload.errors)
            merged.alerts_seen.extend(payload.alerts_seen)
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    merged.seconds = time.perf_counter() - start
    return merged
