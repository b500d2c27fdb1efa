"""Races on budgets of several scopes (issue 10): 4 processes × 8 threads of calls by 20 end
users, each held to a ``"*"`` daily budget inside a small monthly project budget, on SQLite and
PostgreSQL; the same race filling the windows exactly to cross 80% and 100% (one alert per
threshold and window, ever); and, on PostgreSQL, calls sharing several budgets in random
orders of attribution never deadlock.

The calls go straight to the store (``store.hold`` / ``store.settle`` with an
``Attribution``), every process at the same fixed instant (see ``tests/harness/budget_races``).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import NullPool

from ledger import Ledger, ManualClock
from ledger.money import to_units
from ledger.store.engine import normalise_url
from ledger.store.schema import events
from tests.harness.budget_races import AT, RaceResult, scoped_race

USERS = 20


def project_name() -> str:
    return f"race-{uuid.uuid4().hex[:8]}"


def assert_no_errors(result: RaceResult) -> None:
    locked = [e for e in result.errors if "database is locked" in e]
    deadlocks = [e for e in result.errors if "deadlock" in e.lower()]
    assert (locked[:3], deadlocks[:3]) == ([], [])
    assert result.errors == []


def per_user(result: RaceResult) -> dict[str | None, int]:
    spent: Counter[str | None] = Counter()
    for _call, user, _tags, cost in result.admitted:
        spent[user] += cost
    return dict(spent)


def assert_within_every_limit(book: Ledger, project: str) -> None:
    """Every window of every budget of ``project``: settled + held <= limit, nothing held."""
    windows = book.store.windows(AT, project=project)
    assert windows, "no budget window at all"
    for w in windows:
        if w.budget.hard:
            assert w.settled_units + w.held_units <= to_units(w.limit), f"over: {w}"
        assert w.held_units == 0, f"a hold left pending: {w}"


class TestUserBudgetsInsideAProjectBudget:
    """20 end users, $0.08 a day each ("*"), inside $1.00 a month for the project."""

    @pytest.mark.timeout(300)
    def test_no_budget_over_its_limit_and_spend_is_exact(self, any_url: str,
                                                         tmp_path: Path) -> None:
        """Never over at either level, no lock or deadlock error, spend = admitted calls."""
        project = project_name()
        with Ledger(any_url, clock=ManualClock(AT), replay_spool=False) as book:
            book.set_budget(project, Decimal("1.00"))
            book.set_budget(project, Decimal("0.08"), period="day", user="*")
        result = scoped_race(any_url, project, tmp_path, users=USERS)
        assert_no_errors(result)
        assert len(result.admitted) + len(result.refused) == 4 * 8 * 8
        named = Counter(result.refused)
        # Both levels were contended, or the race proves nothing about nesting.
        assert named[f"{project} month"] > 0, named
        assert named[f"{project} user=* day"] > 0, named
        assert set(named) <= {f"{project} month", f"{project} user=* day"}, named
        with Ledger(any_url, clock=ManualClock(AT), replay_spool=False) as book:
            assert_within_every_limit(book, project)
            spent = per_user(result)
            for n in range(USERS):
                user = f"user{n:02d}"
                assert book.store.spend_units(project, AT, period="day", user=user) == (
                    spent.get(user, 0)), user
            assert book.store.spend_units(project, AT, period="month") == sum(spent.values())
            assert book.store.check_totals() == []
            with book.engine.connect() as conn:
                rows = {r.call_id: r for r in conn.execute(
                    select(events.c.call_id, events.c.user, events.c.cost)
                    .where(events.c.project == project)).all()}
            for call_id, user, _tags, cost in result.admitted:
                assert (rows[call_id].user, rows[call_id].cost) == (user, cost), call_id

    @pytest.mark.timeout(300)
    def test_alerts_crossing_80_and_100_percent_are_raised_once(self, any_url: str,
                                                                tmp_path: Path) -> None:
        """Calls of exactly $0.01 fill windows to their limit: one alert per threshold and
        window, whatever the processes; soft budgets alert too; on_alert saw each once."""
        project = project_name()
        with Ledger(any_url, clock=ManualClock(AT), replay_spool=False) as book:
            book.set_budget(project, Decimal("0.50"))
            book.set_budget(project, Decimal("0.05"), period="day", user="*")
            book.set_budget(project, Decimal("0.30"), hard=False, period="day",
                            alerts=(50, 100))
        result = scoped_race(any_url, project, tmp_path, users=USERS, fixed=True)
        assert_no_errors(result)
        spent = per_user(result)
        total = sum(spent.values())
        assert total == to_units(Decimal("0.50")), "the project's month did not fill exactly"
        expected: set[tuple[str | None, str, int]] = set()
        for t in (80, 100):
            expected.add((None, "month", t))
            for user, units in spent.items():
                if units * 100 >= t * to_units(Decimal("0.05")):
                    expected.add((user, "day", t))
        expected |= {(None, "day", 50), (None, "day", 100)}  # the soft one, $0.50 > $0.30
        assert any(u == to_units(Decimal("0.05")) for u in spent.values()), "no user filled"
        with Ledger(any_url, clock=ManualClock(AT), replay_spool=False) as book:
            alerts = book.store.alerts(project)
            assert_within_every_limit(book, project)
        got = [(a.user, a.period, a.threshold) for a in alerts]
        assert len(got) == len(set(got)), "an alert raised twice"
        assert set(got) == expected
        for a in alerts:
            assert a.window == ("2026-12" if a.period == "month" else "2026-12-03")
            assert a.spent * 100 >= a.threshold * a.limit
        assert sorted(result.alerts_seen) == sorted(a.id for a in alerts), (
            "on_alert, summed over the processes, did not see each alert exactly once")


# -- PostgreSQL: several budgets shared in random orders never deadlock ------------------------
PG_URL = os.environ.get("LEDGER_TEST_POSTGRES_URL")


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A database of this test's own on the PostgreSQL server (so that its deadlock counter
    counts only this test), dropped afterwards."""
    if not PG_URL:
        pytest.skip("PostgreSQL tests need LEDGER_TEST_POSTGRES_URL (no PostgreSQL configured)")
    name = f"ledger_a2_deadlock_{uuid.uuid4().hex[:10]}"
    admin = create_engine(normalise_url(PG_URL), isolation_level="AUTOCOMMIT",
                          poolclass=NullPool)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # a configured but dead server must fail loudly
        admin.dispose()
        pytest.fail(f"PostgreSQL at LEDGER_TEST_POSTGRES_URL does not answer: {exc}")
    try:
        yield make_url(normalise_url(PG_URL)).set(database=name).render_as_string(
            hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def deadlocks_counted(url: str, at_least: int = 0, wait: float = 10.0) -> int:
    """The server's count of deadlocks in this database, once backends have reported them
    (statistics are flushed when a backend goes idle or exits: poll briefly)."""
    engine = create_engine(url, poolclass=NullPool)
    deadline = time.monotonic() + wait
    try:
        while True:
            with engine.connect() as conn:
                conn.execute(text("SELECT pg_stat_clear_snapshot()"))
                count = int(conn.execute(text(
                    "SELECT deadlocks FROM pg_stat_database "
                    "WHERE datname = current_database()")).scalar_one())
            if count >= at_least or time.monotonic() > deadline:
                return count
            time.sleep(0.2)  # waiting on the server's statistics flush: no event to wait on
    finally:
        engine.dispose()


def provoke_one_deadlock(url: str) -> None:
    """Two transactions locking two rows in opposite orders: exactly one deadlock."""
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE a2_probe (id int PRIMARY KEY, v int)"))
        conn.execute(text("INSERT INTO a2_probe VALUES (1, 0), (2, 0)"))
    first, second = engine.connect(), engine.connect()
    failures: list[str] = []
    try:
        tx1, tx2 = first.begin(), second.begin()
        first.execute(text("UPDATE a2_probe SET v = 1 WHERE id = 1"))
        second.execute(text("UPDATE a2_probe SET v = 1 WHERE id = 2"))

        def cross(conn: Connection, row: int) -> None:
            try:
                conn.execute(text(f"UPDATE a2_probe SET v = 2 WHERE id = {row}"))
            except Exception as exc:
                failures.append(str(exc))

        t = threading.Thread(target=cross, args=(first, 2))
        t.start()
        time.sleep(0.3)  # let the first block on row 2 before the second closes the cycle
        cross(second, 1)
        t.join(timeout=30)
        for tx in (tx1, tx2):
            if tx.is_active:
                tx.rollback()
    finally:
        first.close()
        second.close()
        engine.dispose()
    assert len(failures) == 1 and "deadlock" in failures[0], failures


@pytest.mark.timeout(300)
def test_calls_sharing_several_budgets_never_deadlock_on_postgres(pg_database: str,
                                                                  tmp_path: Path) -> None:
    """Project day + month, "*" and a named user, four tags (week, day, month, total):
    4 × 8 threads in random orders of attribution, zero deadlocks (the server's own count)."""
    project = project_name()
    with Ledger(pg_database, clock=ManualClock(AT), replay_spool=False) as book:
        book.set_budget(project, Decimal("1000"))
        book.set_budget(project, Decimal("500"), period="day")
        book.set_budget(project, Decimal("100"), period="day", user="*")
        book.set_budget(project, Decimal("150"), period="day", user="user01")
        for tag, period in (("a=1", "week"), ("b=2", "day"), ("c=3", "month"),
                            ("d=4", "total")):
            book.set_budget(project, Decimal("300"), period=period, tag=tag)
    result = scoped_race(pg_database, project, tmp_path, kind="mixed", users=5, calls=12)
    assert_no_errors(result)
    assert deadlocks_counted(pg_database) == 0, "PostgreSQL detected a deadlock"
    with Ledger(pg_database, clock=ManualClock(AT), replay_spool=False) as book:
        assert_within_every_limit(book, project)
        costs = result.admitted
        assert book.store.spend_units(project, AT, period="month") == sum(c[3] for c in costs)
        for tag, period in (("a=1", "week"), ("b=2", "day"), ("c=3", "month"),
                            ("d=4", "total")):
            want = sum(c[3] for c in costs if tag in (c[2] or "").split(","))
            assert book.store.spend_units(project, AT, period=period, tag=tag) == want, tag
        for n in range(5):
            user = f"user{n:02d}"
            want = sum(c[3] for c in costs if c[1] == user)
            assert book.store.spend_units(project, AT, period="day", user=user) == want, user
        assert book.store.check_totals() == []
    provoke_one_deadlock(pg_database)  # the counter read above can see a deadlock at all
    assert deadlocks_counted(pg_database, at_least=1) == 1


class TestARunningTotalCreatedUnderAHold:
    @pytest.mark.parametrize("budget", [Decimal("10"), None], ids=["hard", "none"])
    def test_a_row_committed_between_two_statements_is_reserved_on(
            self, pg_url: str, budget: Decimal | None) -> None:
        """PostgreSQL: another process commits a window's first running total between this
        hold's UPDATE (no row yet) and its read (the row): the hold reserves on that row, it is
        not refused (found by the soak as a false 64-bit overflow and a soft budget refusing)."""
        clock = ManualClock(AT)
        mine, other = Ledger(pg_url, clock=clock), Ledger(pg_url, clock=clock)
        try:
            project = project_name()
            if budget is not None:
                mine.set_budget(project, budget)
                clock.advance(timedelta(days=40))  # a window whose running total is new
            hot = mine.store.hot
            real = hot.read_counter
            interleaved: list[str] = []

            class CommitFirst:
                """The first read of a running total lets the other ledger's hold in first."""

                def run(self, tx: object, **values: object) -> object:
                    if not interleaved:
                        interleaved.append(other.hold(project, "kimi-k2.5", 100, 100).call_id)
                    return real.run(tx, **values)

            hot.read_counter = CommitFirst()  # type: ignore[assignment]
            held = mine.hold(project, "kimi-k2.5", 100, 100)
            hot.read_counter = real
            assert interleaved, "the interleaving did not happen"
            state = mine.store.state(project, held.month)
            assert state.held_units == 2 * held.amount_units
        finally:
            mine.close()
            other.close()


class TestABudgetSetDuringASettle:
    def test_a_settle_in_flight_is_counted_in_the_new_budget(self, pg_url: str) -> None:
        """PostgreSQL: a settle has read its budgets (none for the tag yet) and not committed
        when a tag budget is set: the budget's running total still counts that call once
        (set_budget waits for settles in flight) and the books agree with the events."""
        clock = ManualClock(AT)
        settler, setter = Ledger(pg_url, clock=clock), Ledger(pg_url, clock=clock)
        try:
            project = project_name()
            held = settler.hold(project, "kimi-k2.5", 1000, 0, tags={"feature": "search"})
            store = settler.store
            real = store._matches
            read, go = threading.Event(), threading.Event()

            def paused(*args: object, **kwargs: object) -> object:
                found = real(*args, **kwargs)  # type: ignore[arg-type]
                read.set()
                assert go.wait(30)
                return found

            store._matches = paused  # type: ignore[method-assign]
            settled = threading.Thread(target=settler.settle, args=(held.call_id, 1000, 0))
            settled.start()
            assert read.wait(30)
            budget = threading.Thread(target=setter.set_budget,
                                      args=(project, Decimal("5")),
                                      kwargs={"period": "day", "tag": "feature=search"})
            budget.start()
            time.sleep(0.5)  # let set_budget run into the settle, if it waits at all
            go.set()
            settled.join(30)
            budget.join(30)
            store._matches = real  # type: ignore[method-assign]
            [window] = [w for w in setter.budget_windows(project) if w.budget.tag]
            assert window.spent == Decimal("0.02")  # 1,000 tokens at $0.020 per 1K
            assert setter.store.check_totals() == []
        finally:
            settler.close()
            setter.close()
