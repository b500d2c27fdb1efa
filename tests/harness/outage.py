"""Suite 2, database outages: a steady load of metered calls while the database is down
(or only slow), settles spooled and replayed, nothing lost, nothing charged twice."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

from ledger.clock import ManualClock
from ledger.core import Ledger
from ledger.testing.simulator import RunAPISimulator
from ledger.transport import MeteredTransport

from .calls import call_sync, request_body
from .common import FAKE_API_KEY, PATHS, Figures, backend_of
from .oracle import Seen, audit, check_event, event_rows


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
