#!/usr/bin/env python3
"""Every reliability suite at full size, with the figures for docs/RELIABILITY.md.

    scripts/reliability.py                                  # SQLite, and PostgreSQL if
                                                            # $LEDGER_TEST_POSTGRES_URL is set
    scripts/reliability.py --pg postgresql+psycopg://postgres@127.0.0.1:5432/test --pg-outage
    scripts/reliability.py --only crash,races --json figures.json
    scripts/reliability.py --quick                          # every suite at smoke size

Suites (``--only``): crash, outage, races, hostile, security, soak. ``--pg-outage`` really
stops and starts the local PostgreSQL cluster (root and ``pg_ctlcluster``; it is always
started again). Each PostgreSQL run uses a fresh schema, dropped afterwards.

Prints one Markdown table (calls made, admitted, refused, failed, overspend, usage lost,
charged twice, holds unresolved past their TTL) plus each suite's own figures, and exits 1 if
any invariant failed anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

# The harness is test equipment in tests/harness (it does not ship): import it from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledger import Ledger, ManualClock
from tests.harness import (
    CRASH_DRIVERS,
    Figures,
    PostgresCluster,
    crash_suite,
    figures_table,
    hostile_suite,
    outage_suite,
    pg_schema,
    race_suite,
    security_suite,
    shorten_busy_timeout,
    soak,
    sqlite_locked,
)

SUITES = ("crash", "outage", "races", "hostile", "security", "soak")


class Run:
    def __init__(self, pg: str | None, work: Path) -> None:
        self.pg, self.work = pg, work
        self.results: list[Figures] = []

    def backends(self) -> list[str]:
        return ["sqlite", "postgresql"] if self.pg else ["sqlite"]

    @contextmanager
    def url(self, backend: str, name: str) -> Iterator[str]:
        if backend == "sqlite":
            folder = self.work / f"{name}-{len(self.results)}"
            folder.mkdir(parents=True, exist_ok=True)
            yield f"sqlite:///{folder}/ledger.db"
        else:
            assert self.pg is not None
            with pg_schema(self.pg) as url:
                yield url

    def add(self, figures: Figures) -> None:
        self.results.append(figures)
        extra = {k: v for k, v in figures.extra.items() if k != "by_kind"}
        status = "ok" if not figures.problems else f"{len(figures.problems)} PROBLEMS"
        print(f"  {figures.suite} [{figures.backend}]: {figures.calls:,} calls, "
              f"{figures.seconds:.1f} s, {status}  {json.dumps(extra, default=str)}", flush=True)
        for problem in figures.problems[:20]:
            print("    PROBLEM:", problem, flush=True)


def crash(run: Run, args: argparse.Namespace) -> None:
    for backend in run.backends():
        with run.url(backend, "crash") as url:
            drivers = CRASH_DRIVERS[:1] if args.quick else CRASH_DRIVERS
            figures, _ = crash_suite(url, run.work / f"crash-{backend}", drivers=drivers)
        run.add(figures)


def outage(run: Run, args: argparse.Namespace) -> None:
    sizes = {"before": args.outage_calls, "refusals": args.outage_calls // 2,
             "after": args.outage_calls, "gated": 8, "threads": 8}
    clock = ManualClock(datetime(2026, 11, 10, 12, tzinfo=UTC))
    with run.url("sqlite", "outage") as url:
        path = url.removeprefix("sqlite:///")
        with Ledger(url, clock=clock, spool_path=path + ".spool") as book:
            shorten_busy_timeout(book, 500)
            run.add(outage_suite(book, clock, lambda: sqlite_locked(path),
                                 suite="outage: SQLite locked past busy timeout", **sizes))
    clock = ManualClock(datetime(2026, 11, 10, 12, tzinfo=UTC))
    with run.url("sqlite", "slow") as url:
        path = url.removeprefix("sqlite:///")
        with Ledger(url, clock=clock, spool_path=path + ".spool") as book:
            run.add(outage_suite(book, clock, lambda: sqlite_locked(path, at_least=2.0),
                                 suite="outage: SQLite locked 2 s (only slow)",
                                 **{**sizes, "refusals": 0}))
    if run.pg and args.pg_outage:
        reason = PostgresCluster.unavailable_reason()
        if reason:
            raise SystemExit(f"--pg-outage: cannot stop PostgreSQL here: {reason}")
        cluster = PostgresCluster.for_url(run.pg)
        clock = ManualClock(datetime(2026, 11, 10, 12, tzinfo=UTC))
        with run.url("postgresql", "outage") as url:
            try:
                with Ledger(url, clock=clock, spool_path=run.work / "pg-outage.spool") as book:
                    run.add(outage_suite(book, clock, cluster.down,
                                         suite="outage: PostgreSQL stopped", **sizes))
            finally:
                cluster.ensure_up()


def races(run: Run, args: argparse.Namespace) -> None:
    for backend in run.backends():
        for with_max, send_cap in ((True, True), (False, True), (False, False)):
            # About half of what the 800 calls would cost fits: long contended, then full.
            # (--quick: the suite's own small limit, contended by far fewer calls.)
            limit = None if args.quick else Decimal("6.00") if with_max else Decimal("30.00")
            with run.url(backend, "race") as url:
                run.add(race_suite(url, with_max_tokens=with_max, send_default_cap=send_cap,
                                   calls=args.race_calls, limit=limit, spool_dir=run.work))
        # Issue 9 items 1-3: null caps with send_default_cap=False; calls billed through
        # X-Ledger-Project (bad headers refused), Chat Completions and Responses mixed.
        for options in ({"with_max_tokens": False, "send_default_cap": False, "null_caps": True},
                        {"with_max_tokens": True, "via_header": True,
                         "shapes": ("openai", "responses")}):
            limit = None if args.quick else Decimal(
                "6.00" if options["with_max_tokens"] else "30.00")
            with run.url(backend, "race") as url:
                run.add(race_suite(url, calls=args.race_calls, limit=limit, spool_dir=run.work,
                                   **options))


def hostile(run: Run, args: argparse.Namespace) -> None:
    for backend in run.backends():
        n = args.hostile if backend == "sqlite" else args.hostile // 10
        with run.url(backend, "hostile") as url, Ledger(
                url, clock=ManualClock(datetime(2026, 11, 10, tzinfo=UTC)),
                spool_path=run.work / f"hostile-{backend}.spool") as book:
            run.add(hostile_suite(book, n=n, loopback=args.hostile // 100, seed=args.seed))


def security(run: Run, args: argparse.Namespace) -> None:
    for backend in run.backends():
        with run.url(backend, "security") as url:
            path = url.removeprefix("sqlite:///") if backend == "sqlite" else None
            run.add(security_suite(url, run.work / f"security-{backend}", sqlite_path=path))


def soak_suite(run: Run, args: argparse.Namespace) -> None:
    for backend in run.backends():
        with run.url(backend, "soak") as url:
            run.add(soak(url, args.soak_minutes * 60, seed=args.seed,
                         spool_path=run.work / f"soak-{backend}.spool"))


RUNNERS: dict[str, Callable[[Run, argparse.Namespace], None]] = {
    "crash": crash, "outage": outage, "races": races, "hostile": hostile,
    "security": security, "soak": soak_suite,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg", default=os.environ.get("LEDGER_TEST_POSTGRES_URL"),
                        help="PostgreSQL URL (default: $LEDGER_TEST_POSTGRES_URL; none: SQLite only)")
    parser.add_argument("--pg-outage", action="store_true",
                        help="stop and start the local PostgreSQL cluster (root)")
    parser.add_argument("--only", default=",".join(SUITES), help="comma-separated suites")
    parser.add_argument("--hostile", type=int, default=100_000, help="hostile inputs (SQLite)")
    parser.add_argument("--race-calls", type=int, default=25, help="calls per racing thread")
    parser.add_argument("--outage-calls", type=int, default=300)
    parser.add_argument("--soak-minutes", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=20261110)
    parser.add_argument("--json", type=Path, help="write every suite's figures here")
    parser.add_argument("--quick", action="store_true",
                        help="smoke size (overrides the sizes above): checks the harness runs, "
                             "not the published figures")
    args = parser.parse_args(argv)
    if args.quick:
        args.hostile, args.race_calls, args.outage_calls, args.soak_minutes = 500, 2, 20, 0.1
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SUITES)
    if unknown:
        parser.error(f"unknown suites {sorted(unknown)}; choose from {', '.join(SUITES)}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ledger-reliability-") as tmp:
        run = Run(args.pg, Path(tmp))
        for name in only:
            print(f"== {name}", flush=True)
            RUNNERS[name](run, args)
    print()
    print(figures_table(run.results))
    print(f"\n{sum(f.calls for f in run.results):,} calls in "
          f"{time.perf_counter() - started:.0f} s; "
          f"{sum(len(f.problems) for f in run.results)} problems")
    if args.json:
        args.json.write_text(json.dumps([f.to_dict() for f in run.results], indent=1,
                                        default=str))
    return 1 if any(f.problems for f in run.results) else 0


if __name__ == "__main__":
    sys.exit(main())
