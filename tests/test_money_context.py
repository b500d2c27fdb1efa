"""Money is exact whatever the caller's decimal context, inputs that cannot be stored exactly
are refused, 64-bit totals end in one clear error, and bad arguments name their field
(issue 9 items 16 and 18)."""

from __future__ import annotations

import decimal
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from helpers import cost
from sqlalchemy import text

from ledger import Ledger, LedgerError, ManualClock
from ledger.errors import InvalidInput
from ledger.money import from_units, price_to_units, to_units
from ledger.render import dollars
from ledger.render import html as render_html


@contextmanager
def hostile_context(prec: int = 6, **kwargs: Any) -> Iterator[decimal.Context]:
    """The caller's own decimal context: few digits, another rounding."""
    with decimal.localcontext() as ctx:
        ctx.prec = prec
        for name, value in kwargs.items():
            setattr(ctx, name, value)
        yield ctx


# -- item 16: the caller's context changes nothing ---------------------------------------------
class TestCallersContext:
    def test_spend_is_exact_with_prec_6(self, book: Ledger) -> None:
        """Issue 9 item 16: with getcontext().prec = 6, spend() is 177.77776, not 177.778."""
        book.record("acme", "kimi-k2.5", 8_888_888, 0)
        with hostile_context(6):
            assert str(book.spend("acme")) == "177.77776"
            assert book.record("acme", "kimi-k2.5", 8_888_888, 0) == Decimal("177.77776")
            assert str(book.spend("acme")) == "355.55552"

    def test_a_budget_is_stored_exactly_with_prec_6(self, book: Ledger) -> None:
        """Issue 9 item 16: set_budget("1234567.89") under prec = 6 stores 1234567.89."""
        with hostile_context(6):
            book.set_budget("acme", "1234567.89")
        assert book.budget("acme").limit == Decimal("1234567.89")

    def test_a_price_is_stored_exactly_with_prec_6(self, book: Ledger) -> None:
        """Issue 9 item 16: a price is not rounded to the caller's precision either."""
        with hostile_context(6):
            price = book.set_price("m", "999.1234567")
        assert book.price("m").input_per_1k == Decimal("999.1234567") == price.input_per_1k

    def test_reports_invoices_and_renderings_ignore_the_context(
            self, book: Ledger, clock: ManualClock) -> None:
        """Issue 9 item 16: the budget report, the invoice and their renderings are the same
        under prec = 4, ROUND_FLOOR and an Inexact trap as under the default context."""
        book.set_budget("acme", "1234567.89")
        book.record("acme", "kimi-k2.5", 8_888_888, 1_234_567)
        book.record("beta", "kimi-k2.5", 3, 0)

        def everything() -> tuple[Any, ...]:
            report = book.budget_report()
            inv = book.invoice("acme", "2026-11", draft=True)
            return (report.to_dict(), inv.to_dict(), str(inv.exact_total),
                    render_html.budget_report(report), render_html.invoice(inv),
                    dollars(Decimal("-1234567.8912")), str(from_units(12_345_678_912_345)))

        expected = everything()
        assert expected[1]["total"] == "202.47"
        with hostile_context(4, rounding=decimal.ROUND_FLOOR) as ctx:
            ctx.traps[decimal.Inexact] = True
            assert everything() == expected
        assert expected[5] == "-$1234567.8912"

    def test_more_digits_than_can_be_stored_is_refused(self) -> None:
        """Issue 9 item 16: an amount with more digits than the ledger stores exactly is
        refused with InvalidInput, never rounded (default context and a hostile one)."""
        long = "0.1" + "0" * 60 + "1"
        for ctx in (decimal.DefaultContext, decimal.Context(prec=6)):
            with decimal.localcontext(ctx):
                with pytest.raises(InvalidInput, match="limit"):
                    to_units(long, "limit")
                with pytest.raises(InvalidInput, match="price"):
                    price_to_units("0.02" + "0" * 40 + "1", "price")
                with pytest.raises(InvalidInput):
                    to_units(Decimal("1E+30"))
                assert to_units("1234567.8912345678") == 12_345_678_912_345_678

    def test_set_budget_refuses_an_unstorable_limit(self, book: Ledger) -> None:
        """Issue 9 item 16: set_budget with 60 significant digits raises InvalidInput."""
        with pytest.raises(InvalidInput, match="limit"):
            book.set_budget("acme", "0.1" + "0" * 60 + "1")
        assert book.budget("acme").limit is None


# -- item 16: totals near the 64-bit limit -----------------------------------------------------
class TestSixtyFourBits:
    def test_a_total_past_2_63_units_is_one_clear_error(
            self, any_book: Ledger, clock: ManualClock) -> None:
        """Issue 9 item 16: usage that would push a running total over 2**63 units raises
        InvalidInput (a LedgerError), stores nothing, and leaves integer totals behind."""
        book = any_book
        book.set_price("big", per_1k="1000", effective_from=datetime(2026, 1, 1, tzinfo=UTC))
        per_call = book.record("p", "big", 100_000_000, 100_000_000)
        assert per_call == Decimal("200000000")
        for _ in range(3):
            book.record("p", "big", 100_000_000, 100_000_000)
        with pytest.raises(LedgerError, match="64-bit") as caught:
            book.record("p", "big", 100_000_000, 100_000_000)
        assert isinstance(caught.value, InvalidInput)
        assert book.spend("p") == 4 * per_call
        with pytest.raises(InvalidInput):  # no budget: only the ceiling refuses
            book.hold("p", "big", 100_000_000, 100_000_000)
        h = book.hold("p", "big", 1, 1)  # a small call that settles far past its hold
        with pytest.raises(InvalidInput, match="64-bit"):
            book.settle(h.call_id, 100_000_000, 100_000_000)
        assert book.store.get_hold(h.call_id).state == "pending"  # type: ignore[union-attr]
        assert book.settle(h.call_id, 1, 1) == Decimal("2")
        assert book.spend("p") == 4 * per_call + 2
        assert book.store.check_totals() == []
        with book.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                kinds = conn.execute(text("SELECT DISTINCT typeof(settled) FROM totals")).all()
                assert kinds == [("integer",)]
        assert book.invoice("p", "2026-11", draft=True).total == book.spend("p")


# -- item 18: bad arguments name their field ---------------------------------------------------
class TestFieldsAreChecked:
    def test_hard_must_be_a_bool(self, book: Ledger) -> None:
        """Issue 9 item 18: set_budget(hard="no") is refused naming `hard`, not stored hard."""
        for bad in ("no", "false", 0, 1, None):
            with pytest.raises(TypeError, match="hard"):
                book.set_budget("acme", "5", hard=bad)  # type: ignore[arg-type]
        assert book.budget("acme").limit is None
        book.set_budget("acme", "5", hard=False)
        assert book.budget("acme").hard is False

    def test_default_max_tokens_must_be_a_positive_int(self, sqlite_url: str) -> None:
        """Issue 9 item 18: Ledger(default_max_tokens=0), negative or non-int is refused,
        naming the field."""
        for bad in (0, -1):
            with pytest.raises(InvalidInput, match="default_max_tokens"):
                Ledger(sqlite_url, default_max_tokens=bad)
        for wrong in ("10", 1.5, True):
            with pytest.raises(TypeError, match="default_max_tokens"):
                Ledger(sqlite_url, default_max_tokens=wrong)  # type: ignore[arg-type]
        with Ledger(sqlite_url, default_max_tokens=1) as book:
            assert book.default_max_tokens == 1

    def test_cached_tokens_cannot_exceed_prompt_tokens(self, book: Ledger) -> None:
        """Issue 9 item 18: record() and settle() with cached_tokens > prompt_tokens are
        refused naming `cached_tokens`; equal is fine."""
        with pytest.raises(InvalidInput, match="cached_tokens"):
            book.record("acme", "kimi-k2.5", 10, 5, cached_tokens=11)
        h = book.hold("acme", "kimi-k2.5", 10, 100)
        with pytest.raises(InvalidInput, match="cached_tokens"):
            book.settle(h.call_id, 10, 5, cached_tokens=11)
        assert book.spend("acme") == 0
        assert book.settle(h.call_id, 10, 5, cached_tokens=10) == cost(15)
        assert book.record("acme", "kimi-k2.5", 10, 5, cached_tokens=10) == cost(15)
