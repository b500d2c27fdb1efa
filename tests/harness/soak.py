"""Suite 6, soak: a mixed workload of metered calls for a while (sync and async clients,
server failures, refusals, price changes, the month boundary crossed), then every call checked."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from ledger.clock import ManualClock, month_of
from ledger.core import Ledger
from ledger.money import from_units
from ledger.testing.simulator import Behavior, RunAPISimulator

from .calls import call_async, call_sync, request_body
from .common import FAKE_API_KEY, PATHS, PRICE, Figures, Shape, backend_of
from .oracle import Seen, audit, check_event, event_rows, json_usage
from .security import EVIL_NAMES

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
    sync_clients: list[Any] = [book.httpx_client("soak-free", timeout=60, projects="*"),
                               book.httpx2_client("soak-free", timeout=60, projects="*")]
    async_clients: list[Any] = []

    async def make_async() -> None:
        async_clients.extend([book.async_httpx_client("soak-free", timeout=60, projects="*"),
                              book.async_httpx2_client("soak-free", timeout=60,
                                                      projects="*")])

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
    from ledger.errors import BudgetExceeded

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
                figures.problem(f"unexpected refusal {seen.refused} for {call.project!r}: "
                                f"{seen.refusal_body}")
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
