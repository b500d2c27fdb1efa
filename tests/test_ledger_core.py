"""The core ledger on SQLite and PostgreSQL: prices, budgets, holds, settles, records, input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text

import ledger
from ledger import BudgetExceeded, Ledger, ManualClock, UnknownModel


class TestPrices:
    def test_fresh_ledger_knows_runapi_prices(self, any_book: Ledger) -> None:
        """kimi-k2.5 and kimi-k2.6 cost $0.020 per 1K tokens out of the box."""
        for model in ("kimi-k2.5", "kimi-k2.6"):
            p = any_book.price(model)
            assert (p.input_per_1k, p.output_per_1k) == (Decimal("0.020"), Decimal("0.020"))

    def test_unknown_model_is_never_free(self, any_book: Ledger) -> None:
        """A model with no price raises UnknownModel everywhere: price, record, hold."""
        with pytest.raises(UnknownModel, match="ledger price set"):
            any_book.price("gpt-99")
        with pytest.raises(UnknownModel):
            any_book.record("acme", "gpt-99", prompt_tokens=1, completion_tokens=1)
        with pytest.raises(UnknownModel):
            any_book.hold("acme", "gpt-99", 1, 1)
        assert any_book.spend("acme") == 0

    def test_price_in_the_future_is_not_yet_in_force(self, any_book: Ledger,
                                                     clock: ManualClock) -> None:
        """A price set from next week leaves today's price alone."""
        later = clock.now() + timedelta(days=7)
        any_book.set_price("m", input_per_1k=Decimal("0.010"), output_per_1k=Decimal("0.030"),
                           effective_from=later)
        with pytest.raises(UnknownModel):
            any_book.price("m")
        assert any_book.price("m", at=later).output_per_1k == Decimal("0.030")

    def test_mid_month_change_bills_old_calls_at_old_price(self, any_book: Ledger,
                                                           clock: ManualClock) -> None:
        """A call is priced at the price in force when it started."""
        start = datetime(2026, 11, 1, tzinfo=UTC)
        any_book.set_price("m", Decimal("0.010"), effective_from=start)
        any_book.set_price("m", Decimal("0.020"), effective_from=start + timedelta(days=15))
        old = any_book.record("acme", "m", 1000, 0, at=start + timedelta(days=3))
        new = any_book.record("acme", "m", 1000, 0, at=start + timedelta(days=20))
        assert (old, new) == (Decimal("0.01"), Decimal("0.02"))

    def test_float_price_raises_type_error(self, any_book: Ledger) -> None:
        """A float price is refused at the door."""
        with pytest.raises(TypeError):
            any_book.set_price("m", 0.02)  # type: ignore[arg-type]

    def test_naive_datetime_is_refused(self, any_book: Ledger) -> None:
        """effective_from without a time zone is ambiguous and refused, naming the field."""
        with pytest.raises(ValueError, match="effective_from"):
            any_book.set_price("m", Decimal("0.01"), effective_from=datetime(2026, 11, 1))


class TestBudgets:
    @pytest.mark.parametrize("bad", [Decimal("0"), Decimal("-5"), "abc"])
    def test_bad_limits_are_refused(self, any_book: Ledger, bad: object) -> None:
        """A zero, negative or non-numeric budget is a ValueError naming the limit."""
        with pytest.raises(ValueError, match="limit"):
            any_book.set_budget("acme", bad)  # type: ignore[arg-type]

    def test_hard_budget_refuses_what_could_exceed_it(self, any_book: Ledger) -> None:
        """A hold that could cross a hard limit raises BudgetExceeded with the figures."""
        any_book.set_budget("acme", Decimal("0.10"))
        any_book.hold("acme", "kimi-k2.5", 1000, 3000)                 # $0.08 held
        with pytest.raises(BudgetExceeded) as err:
            any_book.hold("acme", "kimi-k2.5", 1000, 1000)             # $0.04 more: no
        assert err.value.limit == Decimal("0.10")
        assert err.value.held == Decimal("0.08")
        assert err.value.requested == Decimal("0.04")
        assert isinstance(err.value, ledger.LedgerError)

    def test_soft_budget_admits_and_flags(self, any_book: Ledger) -> None:
        """A soft budget never refuses; the month shows as over."""
        any_book.set_budget("acme", Decimal("0.01"), hard=False)
        h = any_book.hold("acme", "kimi-k2.5", 1000, 1000)
        any_book.settle(h.call_id, 1000, 1000)
        state = any_book.budget("acme")
        assert state.spent == Decimal("0.04") and state.status == "over"

    def test_no_budget_is_metered_never_refused(self, any_book: Ledger) -> None:
        """A project without a budget comes into being on first use and is only metered."""
        h = any_book.hold("new-project", "kimi-k2.5", 10**6, 10**6)
        assert any_book.settle(h.call_id, 10, 10) == Decimal("0.0004")

    def test_budget_is_per_calendar_month(self, any_book: Ledger, clock: ManualClock) -> None:
        """Spend resets on the 1st of the month (UTC), not after 30 days."""
        clock.set(datetime(2026, 11, 30, 23, 59, tzinfo=UTC))
        any_book.set_budget("acme", Decimal("0.05"))
        h = any_book.hold("acme", "kimi-k2.5", 1000, 1000)
        any_book.settle(h.call_id, 1000, 1000)
        with pytest.raises(BudgetExceeded):
            any_book.hold("acme", "kimi-k2.5", 1000, 1000)
        clock.advance(minutes=2)
        any_book.hold("acme", "kimi-k2.5", 1000, 1000)
        assert any_book.spend("acme", month="2026-11") == Decimal("0.04")
        assert any_book.spend("acme") == 0


class TestTwoPhase:
    def test_settle_releases_the_rest_of_the_hold(self, any_book: Ledger) -> None:
        """Settling posts the actual cost and releases the unused part of the hold."""
        any_book.set_budget("acme", Decimal("1.00"))
        h = any_book.hold("acme", "kimi-k2.5", 1000, 4000)
        assert any_book.budget("acme").held == Decimal("0.10")
        assert any_book.settle(h.call_id, 1000, 500) == Decimal("0.03")
        state = any_book.budget("acme")
        assert (state.spent, state.held) == (Decimal("0.03"), 0)

    def test_settle_above_the_hold_records_the_overage(self, any_book: Ledger) -> None:
        """A call that already ran is posted at its actual cost even above its hold."""
        any_book.set_budget("acme", Decimal("0.05"))
        h = any_book.hold("acme", "kimi-k2.5", 100, 100)
        assert any_book.settle(h.call_id, 2000, 1000) == Decimal("0.06")
        assert any_book.spend("acme") == Decimal("0.06")

    def test_settle_and_void_are_idempotent(self, any_book: Ledger) -> None:
        """The first resolution wins; repeating it, or voiding after it, changes nothing."""
        h = any_book.hold("acme", "kimi-k2.5", 100, 100)
        first = any_book.settle(h.call_id, 100, 100)
        assert any_book.settle(h.call_id, 999, 999) == first
        any_book.void(h.call_id)
        assert any_book.spend("acme") == first
        assert any_book.store.check_totals() == []

    def test_void_costs_zero_and_is_recorded_failed(self, any_book: Ledger) -> None:
        """A voided call releases its hold, costs nothing and stays on record as failed."""
        h = any_book.hold("acme", "kimi-k2.5", 100, 100)
        any_book.void(h.call_id, error="HTTP 500", http_status=500)
        assert any_book.budget("acme").held == 0 and any_book.spend("acme") == 0
        with any_book.engine.connect() as conn:
            row = conn.execute(text("SELECT status, cost, http_status FROM events")).one()
        assert tuple(row) == ("failed", 0, 500)

    def test_hold_is_idempotent_by_call_id(self, any_book: Ledger) -> None:
        """Holding the same call id twice reserves once."""
        a = any_book.hold("acme", "kimi-k2.5", 100, 100, call_id="c1")
        b = any_book.hold("acme", "kimi-k2.5", 100, 100, call_id="c1")
        assert a.amount_units == b.amount_units
        assert any_book.budget("acme").held == Decimal("0.004")

    def test_dead_holds_expire_and_stop_blocking(self, any_book: Ledger,
                                                 clock: ManualClock) -> None:
        """A hold never resolved expires after its TTL and the budget is usable again."""
        any_book.set_budget("acme", Decimal("0.10"))
        any_book.hold("acme", "kimi-k2.5", 1000, 4000)                 # $0.10: all of it
        with pytest.raises(BudgetExceeded):
            any_book.hold("acme", "kimi-k2.5", 10, 10)
        clock.advance(any_book.hold_ttl + timedelta(seconds=1))
        any_book.hold("acme", "kimi-k2.5", 10, 10)                     # expiry made room
        assert any_book.store.check_totals() == []

    def test_settle_after_expiry_still_records_usage(self, any_book: Ledger,
                                                     clock: ManualClock) -> None:
        """Usage is never dropped: a late settle of an expired hold is still posted."""
        h = any_book.hold("acme", "kimi-k2.5", 100, 100)
        clock.advance(any_book.hold_ttl + timedelta(seconds=1))
        assert any_book.expire_holds() == 1
        assert any_book.settle(h.call_id, 100, 100) == Decimal("0.004")
        assert any_book.spend("acme") == Decimal("0.004")
        assert any_book.budget("acme").held == 0
        assert any_book.store.check_totals() == []


class TestRecord:
    def test_same_request_id_is_recorded_once(self, any_book: Ledger) -> None:
        """record(..., request_id=X) twice records one event."""
        a = any_book.record("acme", "kimi-k2.5", prompt_tokens=100, completion_tokens=50,
                            request_id="req-1")
        b = any_book.record("acme", "kimi-k2.5", prompt_tokens=100, completion_tokens=50,
                            request_id="req-1")
        assert a == b == Decimal("0.003")
        assert any_book.spend("acme") == Decimal("0.003")

    @pytest.mark.parametrize("field", ["prompt_tokens", "completion_tokens"])
    def test_negative_tokens_are_refused(self, any_book: Ledger, field: str) -> None:
        """Negative token counts are a ValueError naming the field, and nothing is stored."""
        kwargs = {"prompt_tokens": 1, "completion_tokens": 1, field: -1}
        with pytest.raises(ValueError, match=field):
            any_book.record("acme", "kimi-k2.5", **kwargs)
        assert any_book.spend("acme") == 0

    def test_names_are_stored_literally(self, any_book: Ledger) -> None:
        """Project names full of SQL and markup are data, not code."""
        name = "x'); DROP TABLE events; -- <b>=1+1</b>"
        any_book.record(name, "kimi-k2.5", 1000, 0)
        assert any_book.spend(name) == Decimal("0.02")

    def test_record_uses_the_month_of_the_call(self, any_book: Ledger) -> None:
        """A call recorded with ``at`` in October counts in October."""
        any_book.record("acme", "kimi-k2.5", 1000, 0,
                        at=datetime(2026, 10, 31, 23, 0, tzinfo=UTC))
        assert any_book.spend("acme", month="2026-10") == Decimal("0.02")
        assert any_book.spend("acme", month="2026-11") == 0

    def test_bad_month_is_refused(self, any_book: Ledger) -> None:
        """A malformed month is a ValueError that shows the expected form."""
        with pytest.raises(ValueError, match="YYYY-MM"):
            any_book.spend("acme", month="11/2026")


class TestOpening:
    def test_default_url_comes_from_the_environment(self, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
        """Ledger() uses $LEDGER_DATABASE_URL, else sqlite:///ledger.db in the cwd."""
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("LEDGER_DATABASE_URL", raising=False)
        with Ledger() as b:
            assert b.url == "sqlite:///ledger.db"
        assert (tmp_path / "ledger.db").exists()
        monkeypatch.setenv("LEDGER_DATABASE_URL", f"sqlite:///{tmp_path}/other.db")
        with Ledger() as b:
            b.record("p", "kimi-k2.5", 1, 1)
        assert (tmp_path / "other.db").exists()

    def test_ledger_is_shared_by_threads(self, book: Ledger) -> None:
        """Many threads recording through one Ledger lose nothing."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: book.record("acme", "kimi-k2.5", 1000, 0,
                                                request_id=f"r{i}"), range(200)))
        assert book.spend("acme") == Decimal("4.00")

    def test_unreachable_database_is_a_clear_error(self) -> None:
        """A database that does not answer raises LedgerUnavailable naming it, not a traceback."""
        with pytest.raises(ledger.LedgerUnavailable, match="5999"):
            Ledger("postgresql://postgres@127.0.0.1:5999/nowhere")

    def test_spool_is_replayed_exactly_once_on_open(self, sqlite_url: str,
                                                    clock: ManualClock) -> None:
        """Usage spooled while the database failed is applied once, however often replayed."""
        from ledger.store.ops import Outcome

        with Ledger(sqlite_url, clock=clock) as book:
            h = book.hold("acme", "kimi-k2.5", 1000, 1000)
            book.spool.append(h.call_id, "acme", "kimi-k2.5", h.created_at,
                              Outcome("ok", 1000, 500))
            book.spool.append(h.call_id, "acme", "kimi-k2.5", h.created_at,
                              Outcome("ok", 1000, 500))  # a retried write: same call id
        with Ledger(sqlite_url, clock=clock) as book:      # replayed on open
            assert book.spend("acme") == Decimal("0.03")
            assert book.budget("acme").held == 0
            assert not book.spool.exists()
            assert book.replay() == 0
            assert book.spend("acme") == Decimal("0.03")
