"""Alerts when a limit is lowered below what a window has already spent (found by helper A2
while testing issue 10; see DESIGN-10.md, "Found by A2")."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from ledger import Ledger, ManualClock


def test_a_window_pushed_past_a_threshold_by_a_lowered_limit_alerts_on_its_next_usage(
        sqlite_url: str) -> None:
    """$0.50 spent of $1.00, the limit lowered to $0.40, then more usage: the window is over
    (128%) and its 80% and 100% alerts must exist; the crossing rule of DESIGN-10
    (``before < t% <= after``) never raises them, since ``before`` is already past both."""
    clock = ManualClock(datetime(2026, 12, 3, 10, tzinfo=UTC))
    with Ledger(sqlite_url, clock=clock) as book:
        book.set_budget("p", Decimal("1.00"), hard=False, period="day")
        book.record("p", "kimi-k2.5", 25_000, 0)  # $0.50: 50%, no threshold crossed
        assert book.alerts("p") == []
        clock.advance(60)
        book.set_budget("p", Decimal("0.40"), hard=False, period="day")
        clock.advance(60)
        book.record("p", "kimi-k2.5", 500, 0)  # $0.51 of $0.40
        (window,) = book.budget_windows("p")
        assert window.status == "over"
        assert sorted(a.threshold for a in book.alerts("p")) == [80, 100]
