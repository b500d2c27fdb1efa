"""Budget alerts in the store (issue 10), on SQLite and PostgreSQL: written in the transaction
that crossed the threshold, exactly once per (budget, window, threshold), soft budgets too;
listeners called after the commit, their exceptions logged."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from ledger import Ledger, ManualClock
from ledger.records import Alert, Attribution
from ledger.store.ops import Outcome

M = "m"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.fixture
def book(any_book: Ledger) -> Ledger:
    any_book.set_price(M, Decimal("1"), effective_from=EPOCH)  # $0.001 a token
    return any_book


def spend(book: Ledger, project: str, tokens: int, *, user: str | None = None,
          tags: dict[str, str] | None = None) -> None:
    now = book.now()
    book.store.record(project, M, Outcome("ok", tokens, 0), now, now, None,
                      Attribution.of(user, tags))


def summary(alerts: list[Alert]) -> list[tuple[str | None, str | None, str, str, int, Decimal]]:
    return [(a.user, a.tag, a.period, a.window, a.threshold, a.spent) for a in alerts]


class TestThresholds:
    def test_each_threshold_alerts_once_when_crossed(self, book: Ledger) -> None:
        """80% and 100% of a $1 month: one alert each, at the usage that crossed it."""
        book.set_budget("acme", Decimal("1"))
        for tokens in (500, 350, 100, 100, 100):      # 50%, 85%, 95%, 105%, 115%
            spend(book, "acme", tokens)
        alerts = book.alerts()
        assert summary(alerts) == [(None, None, "month", "2026-11", 80, Decimal("0.85")),
                                   (None, None, "month", "2026-11", 100, Decimal("1.05"))]
        assert [a.limit for a in alerts] == [Decimal("1"), Decimal("1")]
        assert alerts[0].project == "acme" and alerts[0].at == book.now()
        assert book.alerts(since_id=alerts[0].id) == alerts[1:]
        assert book.alerts("other") == []

    def test_one_call_crossing_two_thresholds_raises_both(self, book: Ledger) -> None:
        """A single call from 10% to 120% writes the 50, 80 and 100 alerts together."""
        book.set_budget("acme", Decimal("1"), alerts=(50, 80, 100))
        spend(book, "acme", 100)
        spend(book, "acme", 1100)
        assert [a.threshold for a in book.alerts()] == [50, 80, 100]

    def test_soft_budgets_alert_too(self, book: Ledger) -> None:
        """A soft budget never refuses, and it alerts: that is its point."""
        book.set_budget("acme", Decimal("1"), hard=False, period="day")
        spend(book, "acme", 2000)
        assert [(a.period, a.threshold) for a in book.alerts()] == [("day", 80), ("day", 100)]

    def test_a_new_window_alerts_again(self, book: Ledger, clock: ManualClock) -> None:
        """The next day is another window: its thresholds alert once more."""
        book.set_budget("acme", Decimal("1"), period="day", alerts=(100,))
        spend(book, "acme", 1000)
        spend(book, "acme", 1000)
        clock.advance(days=1)
        spend(book, "acme", 1000)
        assert [a.window for a in book.alerts()] == ["2026-11-10", "2026-11-11"]

    def test_user_and_tag_budgets_say_whose_window_crossed(self, book: Ledger) -> None:
        """A "*" budget's alert names the end user; a tag budget's names the tag."""
        book.set_budget("acme", Decimal("0.1"), period="day", user="*", alerts=(100,))
        book.set_budget("acme", Decimal("1"), period="week", tag="f=x", alerts=(100,))
        spend(book, "acme", 100, user="bob")
        spend(book, "acme", 50, user="carol")
        spend(book, "acme", 1000, tags={"f": "x"})
        assert summary(book.alerts()) == [
            ("bob", None, "day", "2026-11-10", 100, Decimal("0.1")),
            (None, "f=x", "week", "2026-11-09", 100, Decimal("1")),
        ]

    def test_settled_usage_alerts_not_holds(self, book: Ledger) -> None:
        """A hold alone alerts nothing; its settle does, in the same transaction."""
        book.set_budget("acme", Decimal("1"), alerts=(80,))
        h = book.hold("acme", M, 900, 0)
        assert book.alerts() == []
        book.settle(h.call_id, 900, 0)
        assert [a.threshold for a in book.alerts()] == [80]
        book.settle(h.call_id, 900, 0)                               # idempotent: no more
        assert len(book.alerts()) == 1

    def test_concurrent_crossings_alert_exactly_once(self, book: Ledger) -> None:
        """8 threads pushing one budget past 80% and 100% together: one alert per threshold."""
        book.set_budget("acme", Decimal("1"), hard=False)
        seen: list[int] = []
        book.on_alert(lambda a: seen.append(a.threshold))
        barrier = threading.Barrier(8)

        def worker() -> None:
            barrier.wait()
            for _ in range(10):
                spend(book, "acme", 20)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert book.spend("acme") == Decimal("1.6")
        assert [a.threshold for a in book.alerts()] == [80, 100]
        assert sorted(seen) == [80, 100]


class TestListeners:
    def test_listeners_run_after_the_commit(self, book: Ledger) -> None:
        """on_alert's callback sees its alert committed (readable from another connection)."""
        book.set_budget("acme", Decimal("1"), alerts=(50,))
        visible: list[bool] = []
        book.on_alert(lambda a: visible.append(a.id in {x.id for x in book.alerts()}))
        spend(book, "acme", 600)
        assert visible == [True]

    def test_a_failing_listener_is_logged_and_breaks_nothing(
            self, book: Ledger, caplog: pytest.LogCaptureFixture) -> None:
        """An exception in a callback is logged; the call is recorded, other callbacks run."""
        book.set_budget("acme", Decimal("1"), alerts=(50,))

        def broken(alert: Alert) -> None:
            raise RuntimeError("receiver down")

        got: list[Alert] = []
        book.on_alert(broken)
        book.on_alert(got.append)
        with caplog.at_level(logging.ERROR, logger="ledger"):
            spend(book, "acme", 600)
        assert book.spend("acme") == Decimal("0.6")
        assert [a.threshold for a in got] == [50]
        assert "receiver down" in caplog.text

    def test_store_listeners_get_the_batch(self, book: Ledger, clock: ManualClock) -> None:
        """store.alert_listeners get every alert one commit wrote, in one list."""
        book.set_budget("acme", Decimal("1"), alerts=(10, 20))
        batches: list[list[int]] = []
        book.store.alert_listeners.append(lambda alerts: batches.append(
            [a.threshold for a in alerts]))
        spend(book, "acme", 500)
        clock.advance(timedelta(minutes=1))
        spend(book, "acme", 10)
        assert batches == [[10, 20]]
