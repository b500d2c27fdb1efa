"""Processes × threads hammering one hard budget: never over, never "database is locked"."""

from __future__ import annotations

import multiprocessing
import random
import threading
from decimal import Decimal

import pytest

from ledger import BudgetExceeded, Ledger
from ledger.money import to_units

LIMIT = Decimal("2.00")


def _worker(url: str, seed: int, threads: int, calls: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    book = Ledger(url, replay_spool=False)
    admitted: list[int] = []
    refused = 0
    errors: list[str] = []
    lock = threading.Lock()

    def run(tid: int) -> None:
        nonlocal refused
        rnd = random.Random(seed * 100 + tid)
        for _ in range(calls):
            prompt, cap = rnd.randint(100, 2000), rnd.randint(100, 4000)
            try:
                hold = book.hold("race", "kimi-k2.5", prompt, cap)
            except BudgetExceeded:
                with lock:
                    refused += 1
                continue
            except Exception as exc:  # pragma: no cover - what this test is looking for
                with lock:
                    errors.append(repr(exc))
                continue
            try:
                if rnd.random() < 0.2:
                    book.void(hold.call_id, error="simulated failure")
                    cost = 0
                else:
                    cost = to_units(book.settle(hold.call_id, prompt, rnd.randint(0, cap)))
                with lock:
                    admitted.append(cost)
            except Exception as exc:  # pragma: no cover
                with lock:
                    errors.append(repr(exc))

    pool = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    book.close()
    out.put((admitted, refused, errors))


def hammer(url: str, processes: int = 4, threads: int = 8, calls: int = 25) -> tuple[list[int], int, list[str]]:
    with Ledger(url) as book:
        book.set_budget("race", LIMIT)
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_worker, args=(url, p, threads, calls, out))
             for p in range(processes)]
    for p in procs:
        p.start()
    results = [out.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    admitted = [c for r in results for c in r[0]]
    return admitted, sum(r[1] for r in results), [e for r in results for e in r[2]]


def _check(url: str) -> None:
    admitted, refused, errors = hammer(url)
    assert errors == []
    assert refused > 0, "the budget was never contended: the test proves nothing"
    with Ledger(url) as book:
        state = book.budget("race")
        assert state.spent == sum(Decimal(c) for c in admitted) / 10**10
        assert state.settled_units <= to_units(LIMIT)
        assert state.held_units == 0
        assert book.store.check_totals() == []


@pytest.mark.timeout(600)
def test_sqlite_file_shared_by_processes_and_threads(sqlite_url: str) -> None:
    """4 processes × 8 threads on one SQLite file: exact spend, never over, no lock errors."""
    _check(sqlite_url)


@pytest.mark.timeout(600)
def test_postgres_shared_by_processes_and_threads(pg_url: str) -> None:
    """4 processes × 8 threads on one PostgreSQL ledger: exact spend, never over, no errors."""
    _check(pg_url)


@pytest.mark.timeout(600)
def test_many_processes_open_a_fresh_database_at_once(any_url: str) -> None:
    """App workers starting together migrate the schema once, and all of them work."""
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]

    def opener(i: int) -> None:
        try:
            with Ledger(any_url, replay_spool=False) as b:
                b.record("p", "kimi-k2.5", 1000, 0, request_id=f"open-{i}")
            out.put("ok")
        except Exception as exc:  # pragma: no cover
            out.put(repr(exc))

    procs = [ctx.Process(target=opener, args=(i,)) for i in range(6)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    assert results == ["ok"] * 6
    with Ledger(any_url) as b:
        assert b.spend("p") == Decimal("0.12")
