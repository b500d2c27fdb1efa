"""The ledger's database going away in the middle of a steady load (issue 5, "database outage").

PostgreSQL is really stopped and started (``pg_ctlcluster``, as root): that test runs only when
``LEDGER_TEST_PG_OUTAGE=1`` (CI sets it in ``.ci/run``) and then fails, rather than skips, if
the machine cannot do it. The SQLite file is locked by another connection, longer than the
ledger's busy timeout (an outage) or shorter (only slow); those always run.

Every run checks: callers of calls the server answered all got their whole response; each
such call is in the ledger exactly once at its exact cost after the spool is replayed; calls
the ledger refused (hard budget, failing closed) never reached the server; the books balance
and no hold is left pending past its TTL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ledger import Ledger, ManualClock
from tests.harness.common import Figures
from tests.harness.databases import (
    PostgresCluster,
    pg_schema,
    shorten_busy_timeout,
    sqlite_locked,
)
from tests.harness.outage import outage_suite

PG_OUTAGE = os.environ.get("LEDGER_TEST_PG_OUTAGE") == "1"
PG_URL = os.environ.get("LEDGER_TEST_POSTGRES_URL", "")


@pytest.fixture
def outage_clock() -> ManualClock:
    return ManualClock(datetime(2026, 11, 10, 12, tzinfo=UTC))


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    """The local PostgreSQL cluster, always left running; fails if it cannot be controlled."""
    reason = PostgresCluster.unavailable_reason()
    if reason is None and not PG_URL:
        reason = "LEDGER_TEST_POSTGRES_URL is unset"
    if reason is not None:
        pytest.fail(f"LEDGER_TEST_PG_OUTAGE=1 but PostgreSQL cannot be stopped here: {reason}")
    found = PostgresCluster.for_url(PG_URL)
    try:
        yield found
    finally:
        found.ensure_up()


@pytest.fixture
def outage_pg_url(cluster: PostgresCluster) -> Iterator[str]:
    """A fresh schema, on connections of its own (the outage kills every pooled one)."""
    with pg_schema(PG_URL) as url:
        yield url
        cluster.ensure_up()  # before the schema is dropped


def assert_survived(figures: Figures) -> None:
    assert figures.problems == []
    assert (figures.usage_lost, figures.charged_twice, figures.unresolved_holds) == (0, 0, 0)
    assert figures.overspend == 0
    assert figures.failed == 0


@pytest.mark.skipif(not PG_OUTAGE, reason="stopping PostgreSQL needs LEDGER_TEST_PG_OUTAGE=1 "
                    "(root and pg_ctlcluster; CI sets it)")
@pytest.mark.timeout(300)
def test_postgres_stopped_and_started_under_load(outage_pg_url: str, cluster: PostgresCluster,
                                                 outage_clock: ManualClock,
                                                 tmp_path: Path) -> None:
    """PostgreSQL stopped mid-load: refused calls never sent, answered calls billed once."""
    with Ledger(outage_pg_url, clock=outage_clock, spool_path=tmp_path / "pg.spool") as book:
        figures = outage_suite(book, outage_clock, cluster.down, suite="postgresql stopped",
                               before=30, refusals=10, after=30)
    assert cluster.ready()
    assert_survived(figures)
    assert figures.extra["refused_down"] >= 10
    assert figures.extra["spooled"] >= 2 and figures.extra["replays"] >= 1


class TestSQLiteLocked:
    @pytest.mark.timeout(300)
    def test_lock_longer_than_the_busy_timeout_fails_closed_and_spools(
            self, sqlite_url: str, outage_clock: ManualClock, tmp_path: Path) -> None:
        """A file locked past the busy timeout: holds fail closed, settles spool, replay once."""
        with Ledger(sqlite_url, clock=outage_clock, spool_path=tmp_path / "l.spool") as book:
            shorten_busy_timeout(book, 200)
            path = sqlite_url.removeprefix("sqlite:///")
            figures = outage_suite(book, outage_clock, lambda: sqlite_locked(path),
                                   suite="sqlite locked", before=30, refusals=10, after=30)
        assert_survived(figures)
        assert figures.refused >= 10
        assert figures.extra["spooled"] >= 2 and figures.extra["replays"] >= 1

    @pytest.mark.timeout(300)
    def test_lock_shorter_than_the_busy_timeout_only_delays(
            self, sqlite_url: str, outage_clock: ManualClock, tmp_path: Path) -> None:
        """A file locked for 1 s (busy timeout 30 s): calls wait, none refused, none spooled."""
        with Ledger(sqlite_url, clock=outage_clock, spool_path=tmp_path / "l.spool") as book:
            path = sqlite_url.removeprefix("sqlite:///")
            figures = outage_suite(book, outage_clock,
                                   lambda: sqlite_locked(path, at_least=1.0),
                                   suite="sqlite slow", before=30, refusals=0, after=30)
        assert_survived(figures)
        assert figures.refused == 0 and figures.extra["spooled"] == 0
        assert figures.extra["slowest_call_s"] >= 0.9  # they really waited for the lock
