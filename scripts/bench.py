#!/usr/bin/env python
"""Benchmarks for runapi-ledger. Every figure in docs/BENCHMARKS.md comes from here.

    python scripts/bench.py [NAME ...] [--quick] [--only NAME ...] [--postgres URL]

Sections (each prints one block; ratios are measured side by side in the same run):
  holds      hold + settle cycles per second, SQLite and PostgreSQL
  scale      a budget check (hold + settle) with 1M events in the ledger vs with 1K
  metering   a metered call vs a bare httpx call to the same loopback server (interleaved)
  invoice    an invoice for a month of one project with 1M events; usage CSV memory
  export     issue 14: usage --format csv/jsonl of 1M rows (time, peak RSS), the invoice of a
             1M-event month (draft, issue), and a cProfile of the CSV export (top 8)
  budget-check  the budget check (hold + void; a month budget and a "*" daily budget per end
             user) at 1M events and 100K end users vs at 1K events; a call matching 4 budgets
             vs 1 (also: python scripts/bench.py budget-check)
  proxy      `ledger serve`: latency added over a direct call to the same loopback upstream
             (p50, p99), and throughput with 64 concurrent streaming clients
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from ledger import Ledger, ManualClock

PG_DEFAULT = os.environ.get("LEDGER_TEST_POSTGRES_URL",
                            "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SECTIONS: dict[str, Callable[[argparse.Namespace], None]] = {}


def section(fn: Callable[[argparse.Namespace], None]) -> Callable[[argparse.Namespace], None]:
    SECTIONS[fn.__name__.removeprefix("bench_")] = fn
    return fn


@contextlib.contextmanager
def fresh_pg(url: str) -> Iterator[str | None]:
    """A fresh schema on PostgreSQL (dropped afterwards), or None when it does not answer."""
    # The schema helper is test equipment in tests/harness (it does not ship).
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.harness.databases import pg_schema

    try:
        schema = pg_schema(url)
        fresh = schema.__enter__()
    except Exception as exc:
        print(f"  (PostgreSQL at {url} unavailable: {exc.__class__.__name__})")
        yield None
        return
    try:
        yield fresh
    finally:
        schema.__exit__(None, None, None)


def cycles_per_second(book: Ledger, n: int, project: str = "bench") -> float:
    start = time.perf_counter()
    for _ in range(n):
        h = book.hold(project, "kimi-k2.5", 500, 500)
        book.settle(h.call_id, 500, 250)
    return n / (time.perf_counter() - start)


def threaded_cycles_per_second(book: Ledger, threads: int, n: int, same_project: bool) -> float:
    """hold + settle cycles per second with ``threads`` threads sharing one Ledger."""
    from concurrent.futures import ThreadPoolExecutor

    def work(t: int) -> None:
        project = "bench" if same_project else f"bench-{t}"
        for _ in range(n // threads):
            h = book.hold(project, "kimi-k2.5", 500, 500)
            book.settle(h.call_id, 500, 250)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    return (n // threads * threads) / (time.perf_counter() - start)


def _holds_on(label: str, book: Ledger, n: int) -> None:
    book.set_budget("bench", Decimal("1000000"))
    cycles_per_second(book, 200)
    print(f"  {label:<28} 1 thread: {cycles_per_second(book, n):>7,.0f} hold+settle/s")
    for same in (True, False):
        rate = threaded_cycles_per_second(book, 8, n, same)
        where = "one hot project" if same else "8 projects"
        print(f"  {label:<28} 8 threads, {where}: {rate:>7,.0f} hold+settle/s")


@section
def bench_holds(args: argparse.Namespace) -> None:
    """hold + settle cycles per second (each a transaction; one Ledger per process)."""
    n = 1000 if args.quick else 4000
    with tempfile.TemporaryDirectory() as d:
        for sync in ("NORMAL", "FULL"):
            os.environ["LEDGER_SQLITE_SYNCHRONOUS"] = sync
            with Ledger(f"sqlite:///{d}/h-{sync}.db") as book:
                default = " (default)" if sync == "NORMAL" else ""
                _holds_on(f"SQLite synchronous={sync}{default}:", book, n)
        os.environ.pop("LEDGER_SQLITE_SYNCHRONOUS")
    with fresh_pg(args.postgres) as url:
        if url:
            with Ledger(url) as book:
                _holds_on("PostgreSQL (loopback):", book, n)


def bulk_events(book: Ledger, project: str, count: int, month: str = "2026-11") -> None:
    """Insert ``count`` settled events for ``project`` and keep the running totals in step."""
    from ledger.store.schema import events, to_micros

    at = to_micros(datetime(2026, 11, 5, tzinfo=timezone.utc))
    batch = 50_000
    total = 0
    with book.engine.begin() as conn:
        for first in range(0, count, batch):
            rows = [
                {"call_id": f"{project}-{i}", "project": project, "month": month, "at": at + i,
                 "model": "kimi-k2.5" if i % 3 else "kimi-k2.6", "status": "ok",
                 "estimated": False, "prompt_tokens": 100 + i % 50, "completion_tokens": 50,
                 "cached_tokens": 0, "est_prompt_tokens": 100, "input_price": 200_000,
                 "output_price": 200_000, "cached_price": None,
                 "cost": (150 + i % 50) * 200_000, "http_status": 200, "error": None,
                 "invoice_id": None, "recorded_at": at + i}
                for i in range(first, min(first + batch, count))
            ]
            conn.execute(events.insert(), rows)
            total += sum(r["cost"] for r in rows)
        from ledger.store.schema import totals
        conn.execute(totals.delete().where(totals.c.project == project,
                                           totals.c.scope == "", totals.c.period == "month",
                                           totals.c.window == month))
        conn.execute(totals.insert().values(project=project, scope="", period="month",
                                            window=month, settled=total, held=0))


@section
def bench_scale(args: argparse.Namespace) -> None:
    """A budget check (hold + settle) with 1M events in the ledger vs with 1K."""
    big = 100_000 if args.quick else 1_000_000
    clock = ManualClock(datetime(2026, 11, 20, tzinfo=timezone.utc))
    with tempfile.TemporaryDirectory() as d:
        with Ledger(f"sqlite:///{d}/s.db", clock=clock) as book:
            book.set_budget("small", Decimal("1000000"))
            book.set_budget("big", Decimal("1000000"))
            bulk_events(book, "small", 1_000)
            t0 = time.perf_counter()
            bulk_events(book, "big", big)
            print(f"  (loaded {big:,} events in {time.perf_counter() - t0:.1f} s)")
            rates: dict[str, list[float]] = {"small": [], "big": []}
            for i in range(10):  # interleaved rounds, alternating which goes first
                for project in (("small", "big") if i % 2 else ("big", "small")):
                    rates[project].append(cycles_per_second(book, 300, project))
            small, large = statistics.median(rates["small"]), statistics.median(rates["big"])
            print(f"  1K events: {small:,.0f} checks/s; {big:,} events: {large:,.0f} checks/s; "
                  f"ratio {large / small:.2f}")


@contextlib.contextmanager
def simulator_process(**behavior: Any) -> Iterator[str]:
    """The loopback RunAPI simulator in its own process (so it does not share our GIL)."""
    code = (
        "import sys\n"
        "from ledger.testing import Behavior, RunAPISimulator\n"
        f"sim = RunAPISimulator(); sim.default = Behavior(**{behavior!r}); sim.start()\n"
        "print(sim.base_url, flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


BODY = {"model": "kimi-k2.5", "max_tokens": 50,
        "messages": [{"role": "user", "content": "Say hello to the ledger, briefly."}]}


@section
def bench_metering(args: argparse.Namespace) -> None:
    """A metered call vs a bare httpx call to the same loopback server (interleaved pairs)."""
    import httpx

    n = 300 if args.quick else 2000
    with tempfile.TemporaryDirectory() as d, simulator_process() as base_url:
        with Ledger(f"sqlite:///{d}/m.db") as book:
            book.set_budget("bench", Decimal("1000000"))
            bare = httpx.Client(base_url=base_url)
            metered = book.httpx_client("bench", base_url=base_url)
            url = "/v1/chat/completions"
            for client in (bare, metered):  # warm up connections, statements, tokenizer
                for _ in range(50):
                    client.post(url, json=BODY).raise_for_status()
            plain: list[float] = []
            added: list[float] = []
            for _ in range(n):
                t0 = time.perf_counter()
                bare.post(url, json=BODY).raise_for_status()
                t1 = time.perf_counter()
                metered.post(url, json=BODY).raise_for_status()
                t2 = time.perf_counter()
                plain.append(t1 - t0)
                added.append((t2 - t1) - (t1 - t0))
            print(f"  non-stream: bare median {statistics.median(plain) * 1e6:,.0f} µs; "
                  f"metered adds {statistics.median(added) * 1e6:,.0f} µs per call "
                  f"(median of {n} interleaved pairs; SQLite ledger)")

            stream_body = {**BODY, "stream": True, "max_tokens": 200}
            first: dict[str, list[float]] = {"bare": [], "metered": []}
            for _ in range(n // 4):
                for name, client in (("bare", bare), ("metered", metered)):
                    t0 = time.perf_counter()
                    with client.stream("POST", url, json=stream_body) as response:
                        for _chunk in response.iter_raw():
                            first[name].append(time.perf_counter() - t0)
                            break
            delta = statistics.median(first["metered"]) - statistics.median(first["bare"])
            print(f"  stream: first chunk after {statistics.median(first['bare']) * 1e6:,.0f} µs "
                  f"bare; metering adds {delta * 1e6:,.0f} µs before the first chunk")
            bare.close()
            metered.close()
    stream_memory(args)


def stream_memory(args: argparse.Namespace) -> None:
    """Peak memory (VmHWM, kB) while a large stream passes through the metered transport."""
    size = 20_000_000 if args.quick else 100_000_000
    code = (
        "import sys, tempfile\n"
        "from ledger import Ledger\n"
        "base, size = sys.argv[1], int(sys.argv[2])\n"
        "d = tempfile.mkdtemp()\n"
        "book = Ledger(f'sqlite:///{d}/mem.db')\n"
        "client = book.httpx_client('mem', base_url=base, timeout=120)\n"
        "body = {'model': 'kimi-k2.5', 'stream': True, 'messages': [{'role': 'user', 'content': 'go'}]}\n"
        "got = 0\n"
        "with client.stream('POST', '/v1/chat/completions', json=body) as r:\n"
        "    for chunk in r.iter_raw():\n"
        "        got += len(chunk)\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "print(got, hwm)\n"
    )
    peaks = {}
    for n in (1_000_000, size):
        with simulator_process(stream_bytes=n) as base_url:
            out = subprocess.run([sys.executable, "-c", code, base_url, str(n)], check=True,
                                 capture_output=True, text=True).stdout.split()
        peaks[n] = (int(out[0]), int(out[1]) / 1024)
    small, big = peaks[1_000_000], peaks[size]
    print(f"  memory: peak RSS {small[1]:,.0f} MB streaming {small[0] / 1e6:,.0f} MB, "
          f"{big[1]:,.0f} MB streaming {big[0] / 1e6:,.0f} MB through the metered transport")


@section
def bench_invoice(args: argparse.Namespace) -> None:
    """An invoice for one project's month with 1M events; `ledger usage --format csv` memory."""
    big = 100_000 if args.quick else 1_000_000
    clock = ManualClock(datetime(2026, 12, 2, tzinfo=timezone.utc))
    with tempfile.TemporaryDirectory() as d:
        url = f"sqlite:///{d}/i.db"
        with Ledger(url, clock=clock) as book:
            bulk_events(book, "big", big)
            bulk_events(book, "small", 1_000)
            t0 = time.perf_counter()
            draft = book.invoice("big", "2026-11", draft=True)
            t1 = time.perf_counter()
            issued = book.invoice("big", "2026-11")
            t2 = time.perf_counter()
            assert draft.total == issued.total
            print(f"  invoice of {big:,} events: draft {t1 - t0:.2f} s, issue (freeze) "
                  f"{t2 - t1:.2f} s; total ${issued.total}")
        for project in ("small", "big"):
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c",
                 "import sys\n"
                 "from ledger.cli import main\n"
                 "try:\n    main()\nexcept SystemExit:\n    pass\n"
                 "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
                 "print(hwm.split()[1], file=sys.stderr)\n",
                 "--db", url, "usage", "--project", project, "--format", "csv"],
                check=True, capture_output=True, text=True)
            rows = proc.stdout.count("\n") - 1
            peak = int(proc.stderr.strip().splitlines()[-1]) / 1024
            print(f"  ledger usage --format csv: {rows:,} rows in {time.perf_counter() - t0:.1f} s, "
                  f"peak RSS {peak:,.0f} MB")


CLI_WITH_PEAK = (
    "import sys\n"
    "from ledger.cli import main\n"
    "try:\n    main()\nexcept SystemExit:\n    pass\n"
    "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
    "print(hwm.split()[1], file=sys.stderr)\n"
)

CLI_PROFILED = (
    "import cProfile, io, pstats, sys\n"
    "from ledger.cli import main\n"
    "prof = cProfile.Profile()\n"
    "prof.enable()\n"
    "try:\n    main()\nexcept SystemExit:\n    pass\n"
    "prof.disable()\n"
    "sys.stdout.flush()\n"
    "stats = pstats.Stats(prof)\n"
    # (cc, nc, tt, ct, callers); click's dispatch frames (whole-run wrappers) left out
    "top = sorted((kv for kv in stats.stats.items() if '/click/' not in kv[0][0]\n"
    "              and not kv[0][0].endswith('cli/__init__.py')),\n"
    "             key=lambda kv: -kv[1][3])[:8]\n"
    "for (file, line, name), (cc, nc, tt, ct, _) in top:\n"
    "    where = file.rsplit('/site-packages/', 1)[-1].rsplit('/ledger/', 1)[-1]\n"
    "    print(f'{ct:8.2f} s cum {tt:7.2f} s own {nc:>10,} calls  {where}:{line}({name})',\n"
    "          file=sys.stderr)\n"
)


def _cli_export(url: str, project: str, fmt: str, *extra: str) -> tuple[int, float, float]:
    """``ledger usage --project P --format FMT`` in its own process, stdout to /dev/null:
    (rows, seconds, peak RSS in MB)."""
    out = Path(tempfile.gettempdir()) / f"bench-export-{os.getpid()}.{fmt}"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CLI_WITH_PEAK, "--db", url, "usage",
                           "--project", project, "--format", fmt, *extra],
                          check=True, stdout=out.open("w"), stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    with out.open("rb") as fh:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    out.unlink()
    peak = int(proc.stderr.strip().splitlines()[-1]) / 1024
    return lines - (1 if fmt == "csv" else 0), seconds, peak


@section
def bench_export(args: argparse.Namespace) -> None:
    """Issue 14's exports: `ledger usage --format csv|jsonl` of 1M rows (time, peak RSS) and
    the invoice of a 1M-event month (draft, issue); a cProfile of the CSV export's top 8."""
    big = 100_000 if args.quick else 1_000_000
    clock = ManualClock(datetime(2026, 12, 2, tzinfo=timezone.utc))
    with tempfile.TemporaryDirectory() as d:
        url = f"sqlite:///{d}/e.db"
        with Ledger(url, clock=clock) as book:
            bulk_events(book, "big", big)
            bulk_events(book, "small", 1_000)
            drafts = []
            for _ in range(3):
                t0 = time.perf_counter()
                draft = book.invoice("big", "2026-11", draft=True)
                drafts.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            issued = book.invoice("big", "2026-11")
            t1 = time.perf_counter()
            assert draft.total == issued.total
            print(f"  invoice of {big:,} events: draft {statistics.median(drafts):.2f} s "
                  f"(median of 3: {', '.join(f'{x:.2f}' for x in drafts)}), issue (freeze) "
                  f"{t1 - t0:.2f} s; total ${issued.total}")
        for fmt in ("csv", "jsonl"):
            for project in ("small", "big"):
                rows, seconds, peak = _cli_export(url, project, fmt)
                print(f"  ledger usage --format {fmt}: {rows:,} rows in {seconds:.1f} s, "
                      f"peak RSS {peak:,.0f} MB")
        limit = big // 5
        print(f"  cProfile of `ledger usage --format csv --limit {limit}` (top 8 by cumulative, "
              "click's dispatch frames left out):")
        proc = subprocess.run([sys.executable, "-c", CLI_PROFILED, "--db", url, "usage",
                               "--project", "big", "--format", "csv", "--limit", str(limit)],
                              check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
        for line in proc.stderr.rstrip().splitlines()[-8:]:
            print(f"    {line}")


BUDGET_CHECK_DAYS = ("2026-11-18", "2026-11-19", "2026-11-20")


def bulk_scoped_events(book: Ledger, project: str, count: int, users: int) -> None:
    """``count`` settled events of ``users`` distinct end users over three days of November,
    and the running totals they imply (the project's month, each user's day), written in bulk
    (executemany on SQLite, COPY on PostgreSQL), not through the API."""
    from sqlalchemy import text

    from ledger.store.schema import events, to_micros, totals

    starts = [to_micros(datetime.fromisoformat(d).replace(tzinfo=timezone.utc))
              for d in BUDGET_CHECK_DAYS]
    columns = [c.name for c in events.columns if c.name != "id"]
    per_user_day: dict[tuple[str, str], int] = {}
    month_total = 0

    def rows() -> Iterator[dict[str, Any]]:
        nonlocal month_total
        for i in range(count):
            user = f"u{i % users:06d}"
            day = (i // users) % len(BUDGET_CHECK_DAYS)
            at = starts[day] + i
            cost = (150 + i % 50) * 200_000
            month_total += cost
            key = (user, BUDGET_CHECK_DAYS[day])
            per_user_day[key] = per_user_day.get(key, 0) + cost
            yield {"call_id": f"{project}-{i}", "project": project, "month": "2026-11",
                   "at": at, "model": "kimi-k2.5", "status": "ok", "estimated": False,
                   "prompt_tokens": 100 + i % 50, "completion_tokens": 50, "cached_tokens": 0,
                   "est_prompt_tokens": 100, "input_price": 200_000, "output_price": 200_000,
                   "cached_price": None, "cost": cost, "http_status": 200, "error": None,
                   "invoice_id": None, "recorded_at": at, "reasoning_tokens": None,
                   "user": user, "tags": None}

    with book.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            raw = conn.connection.driver_connection
            names = ", ".join(f'"{c}"' for c in columns)
            with raw.cursor() as cur, cur.copy(f"COPY events ({names}) FROM STDIN") as copy:
                for row in rows():
                    copy.write_row([row[c] for c in columns])
        else:  # the driver's own executemany of plain tuples: several times faster
            raw = conn.connection.driver_connection
            names = ", ".join(f'"{c}"' for c in columns)
            marks = ", ".join("?" for _ in columns)
            raw.executemany(f"INSERT INTO events ({names}) VALUES ({marks})",
                            ([row[c] for c in columns] for row in rows()))
        # Rows set_budget may have started (empty: nothing was recorded yet) are replaced.
        conn.execute(totals.delete().where(totals.c.project == project))
        conn.execute(totals.insert(), [
            {"project": project, "scope": "", "period": "month", "window": "2026-11",
             "settled": month_total, "held": 0},
            *({"project": project, "scope": f"user:{u}", "period": "day", "window": d,
               "settled": units, "held": 0} for (u, d), units in per_user_day.items())])
    if book.engine.dialect.name == "postgresql":  # what autovacuum would do after a load
        with book.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE events"))
            conn.execute(text("ANALYZE totals"))


def check_cycles(book: Ledger, n: int, project: str, users: list[str],
                 tags: dict[str, str] | None = None) -> float:
    """Budget checks per second: a hold (every matching budget reserved) then its void."""
    from ledger.records import Attribution, Outcome

    store, now, ttl = book.store, book.now(), book.hold_ttl
    failed = Outcome("failed", error="bench")
    who = [Attribution.of(u, tags) for u in users]
    start = time.perf_counter()
    for i in range(n):
        call_id = f"chk-{project}-{time.perf_counter_ns()}-{i}"
        store.hold(call_id, project, "kimi-k2.5", 500, 500, now, ttl,
                   attribution=who[i % len(who)])
        store.settle(call_id, failed, now)
    return n / (time.perf_counter() - start)


def interleaved(book: Ledger, runs: dict[str, tuple[str, list[str], dict[str, str] | None]],
                rounds: int = 10, n: int = 200) -> dict[str, float]:
    """Median rate of each run, measured in alternating rounds (so drift hits both)."""
    rates: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for project, users, tags in runs.values():  # warm up statements and caches
        check_cycles(book, 50, project, users, tags)
    for i in range(rounds):
        for name in (names if i % 2 else names[::-1]):
            project, users, tags = runs[name]
            rates[name].append(check_cycles(book, n, project, users, tags))
    return {name: statistics.median(r) for name, r in rates.items()}


def _budget_check_on(label: str, url: str, big: int, big_users: int) -> None:
    clock = ManualClock(datetime(2026, 11, 20, 15, tzinfo=timezone.utc))
    with Ledger(url, clock=clock, replay_spool=False) as book:
        for project in ("small", "big"):
            book.set_budget(project, Decimal("1000000"))
            book.set_budget(project, Decimal("1000"), period="day", user="*")
        bulk_scoped_events(book, "small", 1_000, 100)
        t0 = time.perf_counter()
        bulk_scoped_events(book, "big", big, big_users)
        print(f"  {label}: loaded {big:,} events of {big_users:,} end users in "
              f"{time.perf_counter() - t0:.1f} s")
        # Users with rows in today's window (the last day loaded) and users new today.
        rates = interleaved(book, {
            "small": ("small", [f"u{i:06d}" for i in range(0, 100, 7)], None),
            "big": ("big", [f"u{i:06d}" for i in range(0, big_users, big_users // 15)], None),
        })
        print(f"  {label}: 1K events: {rates['small']:,.0f} checks/s; {big:,} events and "
              f"{big_users:,} users: {rates['big']:,.0f} checks/s; "
              f"ratio {rates['big'] / rates['small']:.2f}")
        book.set_budget("one", Decimal("1000000"))
        book.set_budget("four", Decimal("1000000"))
        book.set_budget("four", Decimal("100000"), period="day")
        book.set_budget("four", Decimal("1000"), period="day", user="*")
        book.set_budget("four", Decimal("10000"), period="week", tag="feature=search")
        users = [f"v{i}" for i in range(20)]
        tags = {"feature": "search"}
        rates = interleaved(book, {"one": ("one", users, tags), "four": ("four", users, tags)})
        print(f"  {label}: a call matching 1 budget: {rates['one']:,.0f} checks/s; 4 budgets: "
              f"{rates['four']:,.0f} checks/s; ratio {rates['four'] / rates['one']:.2f}")


@section
def bench_budget_check(args: argparse.Namespace) -> None:
    """The budget check (hold + void) at 1M events and 100K end users vs 1K; 4 budgets vs 1."""
    big, users = (100_000, 10_000) if args.quick else (1_000_000, 100_000)
    with tempfile.TemporaryDirectory() as d:
        _budget_check_on("SQLite", f"sqlite:///{d}/b.db", big, users)
    with fresh_pg(args.postgres) as url:
        if url:
            _budget_check_on("PostgreSQL", url, big, users)
def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@section
def bench_proxy(args: argparse.Namespace) -> None:
    """`ledger serve` (one worker, SQLite) vs a direct call to the same loopback upstream."""
    import asyncio

    import httpx

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from ledger.proxy.keys import create_key
    from tests.harness.proxy import running_proxy

    n = 300 if args.quick else 2000
    seconds = 3.0 if args.quick else 10.0
    url = "/v1/chat/completions"
    with tempfile.TemporaryDirectory() as d, simulator_process() as base_url:
        with Ledger(f"sqlite:///{d}/p.db") as book:
            book.set_budget("bench", Decimal("1000000"))
            key = create_key(book.store, book.now(), "bench").key
        with running_proxy(f"sqlite:///{d}/p.db", base_url, Path(d),
                           args=["--no-access-log"]) as proxy:
            direct = httpx.Client(base_url=base_url, headers={"authorization": "Bearer sk-x"})
            proxied = httpx.Client(base_url=proxy.url, headers={"authorization": f"Bearer {key}"})
            for client in (direct, proxied):  # warm up connections, statements, tokenizer
                for _ in range(50):
                    client.post(url, json=BODY).raise_for_status()
            bare: list[float] = []
            through: list[float] = []
            cpu_before = _cpu_seconds(proxy.proc.pid)
            for _ in range(n):  # interleaved pairs: both see the same machine at once
                t0 = time.perf_counter()
                direct.post(url, json=BODY).raise_for_status()
                t1 = time.perf_counter()
                proxied.post(url, json=BODY).raise_for_status()
                t2 = time.perf_counter()
                bare.append(t1 - t0)
                through.append(t2 - t1)
            cpu = (_cpu_seconds(proxy.proc.pid) - cpu_before) / n
            added = [b - a for a, b in zip(bare, through, strict=True)]
            print(f"  non-stream, {n} interleaved pairs: direct p50 {_pct(bare, .5) * 1e3:.2f} ms"
                  f" p99 {_pct(bare, .99) * 1e3:.2f} ms; through the proxy p50 "
                  f"{_pct(through, .5) * 1e3:.2f} ms p99 {_pct(through, .99) * 1e3:.2f} ms")
            print(f"  added by the proxy: p50 {_pct(added, .5) * 1e3:.2f} ms, "
                  f"p99 {_pct(added, .99) * 1e3:.2f} ms; the proxy process's CPU per call "
                  f"{cpu * 1e3:.2f} ms (less sensitive to a busy machine than wall time)")
            direct.close()
            proxied.close()
            # The share of the library's own metering (hold + settle + estimate) in that: the
            # same calls metered in-process by the transport the proxy uses, no proxy hop.
            with Ledger(f"sqlite:///{d}/p.db") as book:
                bare_client = httpx.Client(base_url=base_url)
                metered = book.httpx_client("bench", base_url=base_url)
                for client in (bare_client, metered):
                    for _ in range(50):
                        client.post(url, json=BODY).raise_for_status()
                library: list[float] = []
                for _ in range(n // 2):
                    t0 = time.perf_counter()
                    bare_client.post(url, json=BODY).raise_for_status()
                    t1 = time.perf_counter()
                    metered.post(url, json=BODY).raise_for_status()
                    library.append((time.perf_counter() - t1) - (t1 - t0))
                bare_client.close()
                metered.close()
            print(f"  of which the library's metering (the same call through MeteredTransport "
                  f"in-process, no proxy): p50 {_pct(library, .5) * 1e3:.2f} ms")

            async def streams(base: str, auth: str, clients: int = 64) -> float:
                body = {**BODY, "stream": True}
                done = 0
                limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
                async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60,
                                             headers={"authorization": auth}) as client:
                    stop = time.perf_counter() + seconds

                    async def one() -> None:
                        nonlocal done
                        while time.perf_counter() < stop:
                            async with client.stream("POST", url, json=body) as reply:
                                async for _chunk in reply.aiter_raw():
                                    pass
                            done += 1

                    start = time.perf_counter()
                    await asyncio.gather(*(one() for _ in range(clients)))
                    return done / (time.perf_counter() - start)

            rate_direct = asyncio.run(streams(base_url, "Bearer sk-x"))
            rate_proxy = asyncio.run(streams(proxy.url, f"Bearer {key}"))
            print(f"  64 concurrent streaming clients, {seconds:.0f} s each: direct "
                  f"{rate_direct:,.0f} streams/s; through one proxy process {rate_proxy:,.0f} "
                  f"streams/s (every one held, settled and written to SQLite)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--only", nargs="*", choices=sorted(SECTIONS), help="sections to run")
    parser.add_argument("--postgres", default=PG_DEFAULT, help="PostgreSQL URL")
    parser.add_argument("sections", nargs="*", metavar="NAME",
                        help="sections to run, as with --only (budget-check = budget_check)")
    args = parser.parse_args()
    named = [n.replace("-", "_") for n in args.sections]
    unknown = sorted(set(named) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}: choose from "
                     f"{', '.join(sorted(SECTIONS))}")
    args.only = (args.only or []) + named or None
    print(f"# runapi-ledger benchmarks ({time.strftime('%Y-%m-%d')}, Python "
          f"{sys.version.split()[0]}, {os.cpu_count()} cores)")
    for name in args.only or SECTIONS:
        print(f"\n## {name}: {SECTIONS[name].__doc__}")
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
