"""Invoices: lines per model and unit price, exact to the cent, frozen once issued."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import InvalidInput, Ledger, ManualClock
from ledger.invoice import (
    Invoice,
    build_invoice,
    credit_notes,
    invoices_for_month,
    issued_invoices,
)
from ledger.money import from_units, round_half_even_to_cent
from ledger.pricing import cost_units
from ledger.store.invoices import LineRow

NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)


def at(day: int, month: datetime = NOV, hour: int = 12) -> datetime:
    return month + timedelta(days=day - 1, hours=hour)


LATER = datetime(2027, 6, 1, tzinfo=UTC)  # every month these tests issue is over


@pytest.fixture
def priced(any_book: Ledger, clock: ManualClock) -> Ledger:
    """Model "m": $0.010 per 1K until Nov 15, then $0.050 in / $0.030 out; the clock in June
    2027, so that the months the tests issue are over."""
    any_book.set_price("m", Decimal("0.010"), effective_from=NOV)
    any_book.set_price("m", input_per_1k=Decimal("0.050"), output_per_1k=Decimal("0.030"),
                       effective_from=at(15, hour=0))
    clock.set(LATER)
    return any_book


class TestLines:
    def test_mid_month_price_change_gives_two_lines_each_with_its_price(
            self, priced: Ledger) -> None:
        """One line per (model, unit price); amounts rounded half-even; total = sum of lines."""
        priced.record("acme", "m", 1234, 567, at=at(2))     # 0.01801
        priced.record("acme", "m", 1000, 1, at=at(14))      # 0.01001
        priced.record("acme", "m", 1000, 2000, at=at(16))   # 0.05 + 0.06 = 0.11
        priced.record("acme", "m", 5, 5, at=at(20))         # 0.00025 + 0.00015 = 0.0004
        priced.record("acme", "kimi-k2.5", 100, 150, at=at(3))  # 250 * 0.00002 = 0.005
        inv = priced.invoice("acme", "2026-11")
        lines = [(ln.model, ln.input_per_1k, ln.output_per_1k, ln.calls, ln.prompt_tokens,
                  ln.completion_tokens, ln.exact_amount, ln.amount) for ln in inv.lines]
        assert lines == [
            ("kimi-k2.5", Decimal("0.020"), Decimal("0.020"), 1, 100, 150, Decimal("0.005"),
             Decimal("0.00")),
            ("m", Decimal("0.010"), Decimal("0.010"), 2, 2234, 568, Decimal("0.02802"),
             Decimal("0.03")),
            ("m", Decimal("0.050"), Decimal("0.030"), 2, 1005, 2005, Decimal("0.1104"),
             Decimal("0.11")),
        ]
        assert inv.total == Decimal("0.14") == sum(ln.amount for ln in inv.lines)
        assert str(inv.total) == "0.14"
        assert inv.currency == "USD" and inv.number == 1 and not inv.draft

    def test_a_price_that_comes_back_starts_a_line_of_its_own(self, any_book: Ledger,
                                                              clock: ManualClock) -> None:
        """Issue 11: $0.010 to Nov 10, $0.030 to Nov 20, $0.010 again: three price periods,
        three lines with their own dates, each rounded half-even once (0.005 -> 0.00 twice,
        not 0.010 -> 0.01 blended into one line); the total is the sum of the lines."""
        any_book.set_price("m", Decimal("0.010"), effective_from=NOV)
        any_book.set_price("m", Decimal("0.030"), effective_from=at(10, hour=0))
        any_book.set_price("m", Decimal("0.010"), effective_from=at(20, hour=0))
        any_book.record("acme", "m", 200, 0, at=at(2))     # 0.002
        any_book.record("acme", "m", 300, 0, at=at(5))     # 0.003: 0.005 -> 0.00
        any_book.record("acme", "m", 500, 0, at=at(12))    # 0.015 -> 0.02
        any_book.record("acme", "m", 500, 0, at=at(25))    # 0.005 -> 0.00
        clock.set(LATER)
        inv = any_book.invoice("acme", "2026-11")
        assert [(ln.input_per_1k, ln.calls, ln.exact_amount, ln.amount, ln.dates)
                for ln in inv.lines] == [
            (Decimal("0.010"), 2, Decimal("0.005"), Decimal("0.00"), "2–5 Nov 2026"),
            (Decimal("0.030"), 1, Decimal("0.015"), Decimal("0.02"), "12 Nov 2026"),
            (Decimal("0.010"), 1, Decimal("0.005"), Decimal("0.00"), "25 Nov 2026"),
        ]
        assert inv.total == Decimal("0.02") == sum(ln.amount for ln in inv.lines)

    def test_total_is_the_sum_of_rounded_lines_not_the_rounded_sum(self, priced: Ledger) -> None:
        """0.005 -> 0.00 and 0.025 -> 0.02 (half-even): total 0.02, though the exact sum is 0.03."""
        priced.record("acme", "m", 500, 0, at=at(2))        # 500 * $0.010/1K = 0.005
        priced.record("acme", "m", 500, 0, at=at(20))       # 500 * $0.050/1K = 0.025
        inv = priced.invoice("acme", "2026-11")
        assert [ln.amount for ln in inv.lines] == [Decimal("0.00"), Decimal("0.02")]
        assert inv.exact_total == Decimal("0.03")
        assert inv.total == Decimal("0.02")

    def test_failed_and_refused_calls_are_never_charged(self, any_book: Ledger,
                                                        clock: ManualClock) -> None:
        """Failed and refused calls never appear; a cancelled call that used tokens does."""
        any_book.void(any_book.hold("acme", "kimi-k2.5", 1000, 1000).call_id, error="HTTP 500")
        any_book.store.record_refused("r1", "acme", "kimi-k2.5", any_book.now(),
                                      any_book.now(), "budget_exceeded", 10)
        cancelled = any_book.hold("acme", "kimi-k2.5", 1000, 1000)
        any_book.settle(cancelled.call_id, 1000, 250, status="cancelled")
        clock.set(DEC)
        inv = any_book.invoice("acme", "2026-11")
        assert [(ln.calls, ln.prompt_tokens, ln.completion_tokens, ln.amount)
                for ln in inv.lines] == [(1, 1000, 250, Decimal("0.02"))]
        assert inv.total == Decimal("0.02")

    def test_a_project_with_no_usage_gets_a_valid_zero_invoice(self, any_book: Ledger,
                                                               clock: ManualClock) -> None:
        """Issue 11: a known customer with no usage gets a zero invoice when asked for one."""
        clock.set(DEC)
        any_book.set_customer("nobody", name="Nobody Ltd")
        inv = any_book.invoice("nobody", "2026-11", include_empty=True)
        assert (inv.lines, inv.total, inv.number, inv.draft) == ((), Decimal("0.00"), 1, False)
        assert inv.to_dict()["total"] == "0.00"

    def test_bad_input_is_refused(self, book: Ledger) -> None:
        with pytest.raises(ValueError, match="YYYY-MM"):
            book.invoice("acme", "2026-13")
        with pytest.raises(ValueError, match="project"):
            book.invoice("", "2026-11")

    def test_json_keys_and_exact_money_strings(self, priced: Ledger) -> None:
        priced.record("acme", "m", 1234, 567, at=at(2))
        data = priced.invoice("acme", "2026-11").to_dict()
        assert {"project", "month", "currency", "lines", "total"} <= set(data)
        line = data["lines"][0]
        assert {"model", "prompt_tokens", "completion_tokens", "amount"} <= set(line)
        assert line["exact_amount"] == "0.01801" and line["amount"] == "0.02"
        assert isinstance(line["prompt_tokens"], int)
        assert Decimal(data["total"]) == sum(Decimal(x["amount"]) for x in data["lines"])
        assert Invoice.from_dict(data).to_dict() == data


class TestFreezing:
    def test_issuing_again_returns_the_same_document(self, priced: Ledger,
                                                     clock: ManualClock) -> None:
        priced.record("acme", "m", 1000, 1000, at=at(3))
        first = priced.invoice("acme", "2026-11")
        clock.advance(days=1)
        again = priced.invoice("acme", "2026-11")
        assert again == first and again.to_dict() == first.to_dict()
        assert priced.invoice("acme", "2026-11", draft=True) == first

    def test_late_usage_is_an_adjustment_on_the_next_invoice(self, priced: Ledger,
                                                             clock: ManualClock) -> None:
        """Usage recorded after November was issued is not slipped into it: December bills it."""
        priced.record("acme", "m", 1000, 1000, at=at(3))                   # 0.02
        nov = priced.invoice("acme", "2026-11")
        assert nov.total == Decimal("0.02")
        clock.set(datetime(2027, 1, 2, tzinfo=UTC))
        priced.record("acme", "m", 1000, 0, at=at(20), request_id="late-1")  # late: 0.05
        priced.record("acme", "kimi-k2.5", 500, 0, at=at(5, DEC))            # December: 0.01
        assert priced.invoice("acme", "2026-11") == nov                      # still frozen
        draft = priced.invoice("acme", "2026-12", draft=True)
        dec = priced.invoice("acme", "2026-12")
        assert draft.lines == dec.lines and draft.number is None and dec.number == 2
        assert [(ln.kind, ln.model, ln.adjusts_month, ln.amount) for ln in dec.lines] == [
            ("usage", "kimi-k2.5", None, Decimal("0.01")),
            ("adjustment", "m", "2026-11", Decimal("0.05")),
        ]
        assert dec.lines[1].input_per_1k == Decimal("0.050")  # priced when the call started
        assert dec.total == Decimal("0.06")
        # billed exactly once: January has nothing left from November
        clock.set(LATER)
        jan = priced.invoice("acme", "2027-01", include_empty=True)
        assert jan.lines == () and jan.total == 0
        # the same request id again is recorded once, so nothing new appears either
        priced.record("acme", "m", 1000, 0, at=at(20), request_id="late-1")
        assert priced.invoice("acme", "2027-02", draft=True).lines == ()

    def test_late_usage_after_two_frozen_months_goes_to_the_next_one(
            self, priced: Ledger) -> None:
        priced.set_customer("acme", name="Acme")
        priced.invoice("acme", "2026-11", include_empty=True)
        priced.invoice("acme", "2026-12", include_empty=True)
        priced.record("acme", "m", 1000, 0, at=at(20))             # late for November
        priced.record("acme", "kimi-k2.5", 1000, 0, at=at(3, DEC))  # late for December
        oct_ = priced.invoice("acme", "2026-10", include_empty=True)  # earlier: not here
        assert oct_.lines == ()
        jan = priced.invoice("acme", "2027-01")
        assert [(ln.adjusts_month, ln.model, ln.amount) for ln in jan.lines] == [
            ("2026-11", "m", Decimal("0.05")), ("2026-12", "kimi-k2.5", Decimal("0.02"))]

    def test_a_draft_never_freezes_and_takes_no_number(self, priced: Ledger) -> None:
        priced.record("acme", "m", 1000, 0, at=at(3))
        draft = priced.invoice("acme", "2026-11", draft=True)
        assert draft.draft and draft.number is None and draft.label == "DRAFT"
        priced.record("acme", "m", 1000, 0, at=at(4))
        issued = priced.invoice("acme", "2026-11")
        assert issued.number == 1 and issued.lines[0].calls == 2 and not issued.lines[1:]
        assert issued_invoices(priced.store) == [issued]

    def test_numbers_are_in_sequence_across_projects(self, priced: Ledger) -> None:
        for project in ("b", "a", "c"):
            priced.record(project, "m", 1000, 0, at=at(3))
        numbers = [priced.invoice(p, "2026-11").number for p in ("b", "a", "c", "a")]
        assert numbers == [1, 2, 3, 2]

    def test_two_ledgers_issuing_at_once_get_one_invoice(self, any_url: str,
                                                         clock: ManualClock) -> None:
        """Concurrent issuers (separate engines, as separate processes would be) agree."""
        clock.set(DEC)
        books = [Ledger(any_url, clock=clock) for _ in range(4)]
        try:
            books[0].record("acme", "kimi-k2.5", 1000, 1000, at=at(3))
            barrier = threading.Barrier(len(books))
            results: list[Invoice] = []

            def issue(b: Ledger) -> None:
                barrier.wait()
                results.append(b.invoice("acme", "2026-11"))

            threads = [threading.Thread(target=issue, args=(b,)) for b in books]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            assert len(results) == 4 and all(r == results[0] for r in results)
            assert [i.number for i in issued_invoices(books[0].store)] == [1]
        finally:
            for b in books:
                b.close()


class TestSeveralProjects:
    def test_every_project_with_something_to_bill(self, priced: Ledger,
                                                  clock: ManualClock) -> None:
        priced.record("acme", "m", 1000, 1000, at=at(3))
        priced.record("beta", "kimi-k2.5", 2000, 0, at=at(4))
        priced.void(priced.hold("only-failed", "kimi-k2.5", 10, 10).call_id)
        invs = invoices_for_month(priced.store, priced.now(), "2026-11")
        assert [(i.project, i.total) for i in invs] == [("acme", Decimal("0.02")),
                                                        ("beta", Decimal("0.04"))]
        assert priced.invoices("2026-11") == invs  # Ledger.invoices: the same, frozen
        # late usage for November makes acme appear in December even without December usage
        priced.record("acme", "m", 1000, 0, at=at(25))
        dec = invoices_for_month(priced.store, priced.now(), "2026-12", draft=True)
        assert [(i.project, i.total, i.draft) for i in dec] == [("acme", Decimal("0.05"), True)]


# -- properties ------------------------------------------------------------------------------
event = st.tuples(st.integers(0, 200_000), st.integers(0, 200_000), st.integers(0, 50_000),
                  st.sampled_from([(200_000, 200_000), (100_000, 300_000), (1, 7), (0, 0),
                                   (123_457, 98_765)]))


def _row(month: str, model: str, price: tuple[int, int], evs: list[tuple[int, int, int]]
         ) -> LineRow:
    cost = sum(cost_units(price[0], price[1], None, p, c, k) for p, c, k in evs)
    return LineRow(month, model, price[0], price[1], None, len(evs), sum(e[0] for e in evs),
                   sum(e[1] for e in evs), sum(e[2] for e in evs), cost, 0, 0)


@given(st.lists(event, min_size=1, max_size=40), st.data())
@settings(max_examples=200, deadline=None)
def test_any_split_into_lines_sums_to_the_same_exact_total(
        events: list[tuple[int, int, int, tuple[int, int]]], data: st.DataObject) -> None:
    """However a month's events are grouped into lines, the exact amounts add up to the same
    total; rounding moves each line by at most half a cent; the total is the sum of the
    rounded lines."""
    groups = data.draw(st.lists(st.integers(0, 5), min_size=len(events), max_size=len(events)))
    exact = sum(from_units(cost_units(pr[0], pr[1], None, p, c, k)) for p, c, k, pr in events)
    split: dict[tuple[int, tuple[int, int]], list[tuple[int, int, int]]] = {}
    for (p, c, k, price), g in zip(events, groups, strict=True):
        split.setdefault((g, price), []).append((p, c, k))
    rows = [_row("2026-11", f"model-{g}", price, evs) for (g, price), evs in split.items()]
    inv = build_invoice(None, "acme", "2026-11", NOV, rows)
    assert inv.exact_total == exact
    assert inv.total == sum((ln.amount for ln in inv.lines), Decimal(0))
    for ln in inv.lines:
        assert ln.amount == round_half_even_to_cent(ln.exact_amount)
        assert abs(ln.amount - ln.exact_amount) <= Decimal("0.005")
        assert ln.amount.as_tuple().exponent == -2
    assert abs(inv.total - exact) <= Decimal("0.005") * len(inv.lines)
    # and the grouping the ledger uses (by model and price) gives the same exact total
    by_price = [_row("2026-11", "m", price, [(p, c, k) for p, c, k, pr in events if pr == price])
                for price in {e[3] for e in events}]
    assert build_invoice(None, "acme", "2026-11", NOV, by_price).exact_total == exact


@given(st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 5000), st.integers(1, 29),
                          st.sampled_from(["m", "kimi-k2.5"])), max_size=12))
@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_invoice_total_matches_recorded_costs(tmp_path_factory: pytest.TempPathFactory,
                                              calls: list[tuple[int, int, int, str]]) -> None:
    """End to end through the database: the exact line amounts add up to exactly what
    ``record`` charged, across a mid-month price change."""
    path = tmp_path_factory.mktemp("inv") / "ledger.db"
    clk = ManualClock(at(30))
    with Ledger(f"sqlite:///{path}", clock=clk) as b:
        b.set_price("m", Decimal("0.0123"), effective_from=NOV)
        b.set_price("m", input_per_1k=Decimal("0.0456"), output_per_1k=Decimal("0.0789"),
                    effective_from=at(15, hour=0))
        charged = sum((b.record("p", model, p, c, at=at(day)) for p, c, day, model in calls),
                      Decimal(0))
        clk.set(DEC)
        b.set_customer("p", name="P")
        inv = b.invoice("p", "2026-11", include_empty=True)
        assert inv.exact_total == charged
        assert inv.total == sum((ln.amount for ln in inv.lines), Decimal(0))
        assert sum(ln.calls for ln in inv.lines) == sum(1 for p, c, _, _ in calls if p or c)


# -- issue 11: the document, the lifecycle, credit notes ---------------------------------------
JAN = datetime(2027, 1, 1, tzinfo=UTC)


@pytest.fixture
def seller(priced: Ledger) -> Ledger:
    """A ledger with an issuer and a customer (20% VAT) for acme."""
    priced.set_issuer(name="Seller Ltd", address="1 Main St\nLondon", tax_id="GB123",
                      payment_terms_days=14, payment_details="IBAN GB00 0000")
    priced.set_customer("acme", name="Café Zürich — 東京", address="Bahnhofstr. 1",
                        email="billing@acme.test", tax_id="CHE-1", tax_rate=Decimal("0.20"),
                        tax_name="VAT")
    return priced


class TestDocument:
    def test_issuer_customer_dates_period_and_tax(self, seller: Ledger) -> None:
        """Issue 11: seller and bill-to blocks, due date from the terms, period dates, tax once."""
        seller.record("acme", "m", 1234, 567, at=at(2))      # 0.01801 -> 0.02
        seller.record("acme", "m", 1000, 2000, at=at(16))    # 0.11
        inv = seller.invoice("acme", "2026-11")
        assert inv.number == 1 and inv.label == "INV-000001" and inv.state == "issued"
        assert inv.issued_at == LATER and inv.due_at == LATER + timedelta(days=14)
        assert (inv.period_start.isoformat(), inv.period_end.isoformat()) == (
            "2026-11-01", "2026-11-30")
        assert inv.period == "1–30 Nov 2026"
        assert inv.subtotal == Decimal("0.13") and inv.tax_rate == Decimal("0.20")
        assert inv.tax == Decimal("0.03")                     # 0.026 half-even -> 0.03, once
        assert inv.total == inv.amount_due == Decimal("0.16") and inv.tax_name == "VAT"
        assert inv.issuer is not None and inv.issuer.name == "Seller Ltd"
        assert inv.customer is not None and inv.bill_to == "Café Zürich — 東京"
        assert [ln.dates for ln in inv.lines] == ["2 Nov 2026", "16 Nov 2026"]
        data = inv.to_dict()
        assert (data["subtotal"], data["tax"], data["total"]) == ("0.13", "0.03", "0.16")
        assert Invoice.from_dict(data) == inv
        # the issued document keeps the parties it had, whatever is recorded later
        seller.set_customer("acme", name="Renamed", tax_rate=Decimal("0.5"))
        assert seller.invoice("acme", "2026-11") == inv

    def test_no_tax_line_without_a_rate_and_the_project_as_bill_to(self, priced: Ledger) -> None:
        """Issue 11: no customer record: bill to the project name, no tax, due in 30 days."""
        priced.record("acme", "m", 1000, 0, at=at(2))
        inv = priced.invoice("acme", "2026-11")
        assert (inv.bill_to, inv.tax, inv.tax_rate, inv.subtotal, inv.total) == (
            "acme", Decimal("0.00"), None, Decimal("0.01"), Decimal("0.01"))
        assert inv.due_at == LATER + timedelta(days=30)

    def test_tax_is_half_even_on_the_subtotal_in_any_caller_context(self, seller: Ledger) -> None:
        """Issue 11 / issue 9 item 16: tax = round_half_even(subtotal × rate) in a local context."""
        import decimal

        seller.set_customer("acme", name="Acme", tax_rate=Decimal("0.125"))
        for _ in range(100):
            seller.record("acme", "kimi-k2.5", 50_000, 0, at=at(3))   # 100 × $1.00
        with decimal.localcontext() as ctx:
            ctx.prec = 3
            inv = seller.invoice("acme", "2026-11")
        assert inv.subtotal == Decimal("100.00") and inv.tax == Decimal("12.50")
        assert inv.total == Decimal("112.50")

    def test_cached_tokens_are_their_own_sub_line_at_their_price(self, any_book: Ledger,
                                                                 clock: ManualClock) -> None:
        """Issue 11: every component is quantity × unit price = amount; they add up to the line."""
        any_book.set_price("c", input_per_1k=Decimal("0.30"), output_per_1k=Decimal("0.60"),
                           cached_input_per_1k=Decimal("0.03"), effective_from=NOV)
        any_book.record("acme", "c", 1000, 100, cached_tokens=800, at=at(2))
        clock.set(DEC)
        line = any_book.invoice("acme", "2026-11").lines[0]
        parts = [(c.label, c.quantity, c.unit_price, c.amount) for c in line.components]
        assert parts == [("input tokens", 200, Decimal("0.300"), Decimal("0.06")),
                         ("cached input tokens", 800, Decimal("0.030"), Decimal("0.024")),
                         ("output tokens", 100, Decimal("0.600"), Decimal("0.06"))]
        for _, qty, price, amount in parts:
            assert qty * price / 1000 == amount
        assert sum(p[3] for p in parts) == line.exact_amount == Decimal("0.144")

    def test_estimated_charges_are_counted_on_their_line(self, any_book: Ledger,
                                                         clock: ManualClock) -> None:
        """Issue 11: lines with estimated charges (missing usage, cut streams) are marked."""
        hold = any_book.hold("acme", "kimi-k2.5", 1000, 100)
        any_book.settle(hold.call_id, 1000, 100, estimated=True)
        any_book.record("acme", "kimi-k2.5", 1000, 100)
        clock.set(DEC)
        inv = any_book.invoice("acme", "2026-11")
        assert [(ln.calls, ln.estimated_calls) for ln in inv.lines] == [(2, 1)]
        assert inv.estimated_calls == 1


class TestLifecycle:
    def test_a_month_not_over_and_a_future_month_are_refused(self, book: Ledger) -> None:
        """Issue 11: issuing November on Nov 10, or January, is refused; nothing is numbered."""
        book.record("acme", "kimi-k2.5", 1000, 0)
        with pytest.raises(InvalidInput, match="not over"):
            book.invoice("acme", "2026-11")
        with pytest.raises(InvalidInput, match="future"):
            book.invoice("acme", "2027-01")
        assert issued_invoices(book.store) == []
        assert book.invoice("acme", "2026-11", draft=True).total == Decimal("0.02")
        assert book.invoice("acme", "2027-01", draft=True).number is None

    def test_an_unknown_project_is_refused(self, book: Ledger, clock: ManualClock) -> None:
        """Issue 11: a typo'd project (no usage, no customer record) gets no INV number."""
        book.record("acme", "kimi-k2.5", 1000, 0)
        clock.set(DEC)
        with pytest.raises(InvalidInput, match="no usage and no customer"):
            book.invoice("acmee", "2026-11")
        assert book.invoice("acme", "2026-11").number == 1  # gap-free: the next one is 1

    def test_a_zero_month_is_not_numbered_unless_asked(self, book: Ledger,
                                                       clock: ManualClock) -> None:
        """Issue 11: a $0.00 month comes back unnumbered unless include_empty."""
        book.record("acme", "kimi-k2.5", 100, 0, at=at(3))       # $0.002 -> $0.00
        clock.set(DEC)
        empty = book.invoice("acme", "2026-11")
        assert (empty.number, empty.total, empty.draft) == (None, Decimal("0.00"), True)
        assert issued_invoices(book.store) == []
        inv = book.invoice("acme", "2026-11", include_empty=True)
        assert inv.number == 1 and inv.total == Decimal("0.00")

    def test_a_future_month_does_not_take_pending_adjustments(self, priced: Ledger,
                                                               clock: ManualClock) -> None:
        """Issue 11: a future month is refused, so November's late usage stays pending."""
        clock.set(DEC)
        priced.record("acme", "m", 1000, 0, at=at(3))
        priced.invoice("acme", "2026-11")
        priced.record("acme", "m", 1000, 0, at=at(20))           # late: 0.05
        with pytest.raises(InvalidInput):
            priced.invoice("acme", "2027-03")
        clock.set(JAN)
        dec = priced.invoice("acme", "2026-12")
        assert [(ln.kind, ln.amount) for ln in dec.lines] == [("adjustment", Decimal("0.05"))]

    def test_numbers_are_gap_free_under_concurrent_issuing(self, any_url: str,
                                                           clock: ManualClock) -> None:
        """Issue 11: eight projects issued at once by four ledgers get numbers 1..8, once each."""
        clock.set(DEC)
        books = [Ledger(any_url, clock=clock) for _ in range(4)]
        try:
            projects = [f"p{i}" for i in range(8)]
            for p in projects:
                books[0].record(p, "kimi-k2.5", 1000, 0, at=at(3))
            barrier = threading.Barrier(len(books))
            errors: list[BaseException] = []

            def issue(b: Ledger) -> None:
                barrier.wait()
                try:
                    for p in projects:
                        b.invoice(p, "2026-11")
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)

            threads = [threading.Thread(target=issue, args=(b,)) for b in books]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            assert errors == []
            invs = issued_invoices(books[0].store)
            assert sorted(i.number or 0 for i in invs) == list(range(1, 9))
            assert sorted(i.project for i in invs) == projects
        finally:
            for b in books:
                b.close()


class TestCreditNotes:
    def test_void_issues_a_credit_note_and_the_month_can_be_issued_again(
            self, seller: Ledger) -> None:
        """Issue 11: void -> CN-000001 referencing the invoice; re-issue takes the next number."""
        seller.record("acme", "m", 1000, 0, at=at(3))                # 0.01 + 20% = 0.01
        seller.record("acme", "m", 10_000, 0, at=at(4))              # 0.10
        first = seller.invoice("acme", "2026-11")
        note = seller.void_invoice(first.label, reason="wrong customer address")
        assert (note.number, note.invoice_number, note.reason) == (
            "CN-000001", "INV-000001", "wrong customer address")
        assert (note.subtotal, note.tax, note.total) == (-first.subtotal, -first.tax,
                                                        -first.total)
        assert note.lines == first.lines and note.customer == first.customer
        listed = issued_invoices(seller.store, include_void=True)
        assert [(i.label, i.state, i.credit_note) for i in listed] == [
            ("INV-000001", "void", "CN-000001")]
        assert issued_invoices(seller.store) == []
        again = seller.invoice("acme", "2026-11")
        assert again.number == 2 and again.total == first.total
        assert seller.invoice("acme", "2026-11") == again
        assert [c.number for c in credit_notes(seller.store)] == ["CN-000001"]

    def test_a_credit_note_and_its_renderings_ignore_the_callers_context(
            self, seller: Ledger) -> None:
        """Issue 11 / issue 9 item 16: voiding and rendering (HTML, terminal, CSV) under prec=3,
        ROUND_FLOOR and an Inexact trap give what the default context gives."""
        import decimal
        import io

        from ledger.render import csv as render_csv
        from ledger.render import html as render_html
        from ledger.render import table as render_table

        seller.set_customer("acme", name="Acme", tax_rate=Decimal("0.125"))
        seller.record("acme", "kimi-k2.5", 8_888_888, 1_234_567, at=at(3))
        first = seller.invoice("acme", "2026-11")

        def rendered(doc: Any) -> tuple[str, str, str]:
            out, text = io.StringIO(), io.StringIO()
            render_csv.credit_note(out, doc)
            render_table.console(text, terminal=False).print(render_table.credit_note(doc))
            return render_html.credit_note(doc), text.getvalue(), out.getvalue()

        with decimal.localcontext() as ctx:
            ctx.prec, ctx.rounding = 3, decimal.ROUND_FLOOR
            ctx.traps[decimal.Inexact] = True
            note = seller.void_invoice(first.label, reason="typo")
            hostile = rendered(note)
        assert note.total == -first.total and note.tax == -first.tax
        assert "-$" + format(first.total, ",f") in hostile[0]
        assert rendered(note) == hostile

    def test_voided_adjustments_return_to_the_pending_pool(self, priced: Ledger,
                                                           clock: ManualClock) -> None:
        """Issue 11: late usage billed on a voided invoice is billed again, exactly once."""
        clock.set(DEC)
        priced.record("acme", "m", 1000, 0, at=at(3))
        priced.invoice("acme", "2026-11")
        priced.record("acme", "m", 1000, 0, at=at(20))                # late: 0.05
        priced.record("acme", "kimi-k2.5", 1000, 0, at=at(3, DEC))    # 0.02
        clock.set(JAN)
        dec = priced.invoice("acme", "2026-12")
        assert dec.total == Decimal("0.07")
        priced.void_invoice(dec.number or 0, reason="re-issue")
        redo = priced.invoice("acme", "2026-12")
        assert [(ln.kind, ln.amount) for ln in redo.lines] == [
            ("usage", Decimal("0.02")), ("adjustment", Decimal("0.05"))]
        clock.set(LATER)
        assert priced.invoice("acme", "2027-01", draft=True).lines == ()

    def test_voiding_a_month_whose_late_usage_was_billed_later_does_not_bill_it_twice(
            self, priced: Ledger, clock: ManualClock) -> None:
        """Issue 11: re-issuing November skips its late usage already billed on December."""
        clock.set(DEC)
        priced.record("acme", "m", 1000, 0, at=at(3))                 # 0.01
        nov = priced.invoice("acme", "2026-11")
        priced.record("acme", "m", 1000, 0, at=at(20))                # late: 0.05
        clock.set(JAN)
        assert priced.invoice("acme", "2026-12").total == Decimal("0.05")
        priced.void_invoice(nov.label, reason="typo")
        assert priced.invoice("acme", "2026-11").total == Decimal("0.01")

    @pytest.mark.parametrize("number, reason, match", [
        ("INV-000009", "x", "no invoice INV-000009"),
        ("INV-0000x1", "x", "looks like INV-000005"),
        (0, "x", "looks like INV-000005"),
        ("INV-000001", "  ", "reason must not be empty"),
    ])
    def test_bad_voids_are_refused(self, seller: Ledger, number: object, reason: str,
                                   match: str) -> None:
        """Issue 11: unknown or malformed numbers and an empty reason are InvalidInput."""
        seller.record("acme", "m", 1000, 0, at=at(3))
        seller.invoice("acme", "2026-11")
        with pytest.raises(InvalidInput, match=match):
            seller.void_invoice(number, reason=reason)  # type: ignore[arg-type]
        assert credit_notes(seller.store) == []

    def test_an_invoice_is_voided_once(self, seller: Ledger) -> None:
        """Issue 11: a second void of the same invoice is refused, naming its credit note."""
        seller.record("acme", "m", 1000, 0, at=at(3))
        seller.invoice("acme", "2026-11")
        seller.void_invoice("INV-000001", reason="first")
        with pytest.raises(InvalidInput, match=r"already void.*CN-000001"):
            seller.void_invoice("INV-000001", reason="second")


class TestParties:
    @pytest.mark.parametrize("rate, error", [
        (0.2, TypeError), (Decimal("1.5"), InvalidInput), (Decimal("-0.1"), InvalidInput),
        (Decimal("0.1234567"), InvalidInput), ("NaN", InvalidInput), ("abc", InvalidInput),
    ])
    def test_bad_tax_rates_are_refused(self, book: Ledger, rate: object,
                                       error: type[Exception]) -> None:
        """Issue 11: a float rate raises TypeError; out of range or too precise: InvalidInput."""
        with pytest.raises(error):
            book.set_customer("acme", name="Acme", tax_rate=rate)  # type: ignore[arg-type]
        assert book.customer("acme") is None

    def test_bad_fields_are_refused(self, book: Ledger) -> None:
        """Issue 11: an empty name, a bad email, NUL characters, negative terms."""
        with pytest.raises(InvalidInput, match="name"):
            book.set_issuer(name=" ")
        with pytest.raises(InvalidInput, match="email"):
            book.set_customer("acme", name="Acme", email="not an email")
        with pytest.raises(InvalidInput, match="NUL"):
            book.set_customer("acme", name="A\x00B")
        with pytest.raises(InvalidInput, match="payment_terms_days"):
            book.set_issuer(name="S", payment_terms_days=-1)
        with pytest.raises(TypeError):
            book.set_issuer(name="S", payment_terms_days="30")  # type: ignore[arg-type]

    def test_records_round_trip_and_replace(self, book: Ledger) -> None:
        """Issue 11: set_issuer / set_customer store what they were given, literally."""
        book.set_issuer(name="Seller", address="A\nB", payment_details="IBAN 1")
        book.set_customer("acme", name="Café 東京", tax_rate="0.0825", tax_name="Sales tax")
        book.set_customer("acme", name="Café 東京 GmbH", tax_rate=Decimal("0.19"))
        issuer, customer = book.issuer(), book.customer("acme")
        assert issuer is not None and (issuer.address, issuer.payment_terms_days) == ("A\nB", 30)
        assert customer is not None and (customer.name, customer.tax_rate) == (
            "Café 東京 GmbH", Decimal("0.19"))


class TestAdjustmentCarry:
    def test_six_small_late_batches_are_billed_what_they_cost(self, book: Ledger,
                                                             clock: ManualClock) -> None:
        """Issue 9 item 17: $0.0294 of late usage over six invoices bills $0.03, not $0.00."""
        clock.set(DEC)
        book.record("acme", "kimi-k2.5", 50_000, 0, at=at(3))         # November: $1.00
        book.invoice("acme", "2026-11")
        months = ["2026-12", "2027-01", "2027-02", "2027-03", "2027-04", "2027-05"]
        billed = []
        for i, month in enumerate(months):
            book.record("acme", "kimi-k2.5", 245, 0, at=at(20))       # late: $0.0049
            book.record("acme", "kimi-k2.5", 50_000, 0,
                        at=datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
                        + timedelta(days=2))                           # $1.00 in the month
            clock.set(datetime(2027, 1, 1, tzinfo=UTC) + timedelta(days=31 * (i + 1)))
            inv = book.invoice("acme", month)
            assert inv.number is not None
            billed.extend(ln.amount for ln in inv.adjustment_lines)
        assert len(billed) == 6
        assert sum(billed) == Decimal("0.03")                        # round(0.0294)
        assert billed == [Decimal("0.00"), Decimal("0.01"), Decimal("0.00"), Decimal("0.01"),
                          Decimal("0.00"), Decimal("0.01")]
        last = issued_invoices(book.store)[-1].adjustment_lines[0]
        assert last.carried_in == Decimal("0.0045")
        assert any(c.label.startswith("rounding carried") and c.amount == Decimal("0.0045")
                   for c in last.components)

    def test_a_voided_adjustment_takes_its_remainder_with_it(self, book: Ledger,
                                                             clock: ManualClock) -> None:
        """Issue 9 item 17: the carry counts only invoices that stand (not voided ones)."""
        clock.set(DEC)
        book.record("acme", "kimi-k2.5", 50_000, 0, at=at(3))
        book.invoice("acme", "2026-11")
        book.record("acme", "kimi-k2.5", 245, 0, at=at(20))           # late: $0.0049
        book.record("acme", "kimi-k2.5", 50_000, 0, at=at(3, DEC))
        clock.set(JAN)
        dec = book.invoice("acme", "2026-12")
        assert [ln.amount for ln in dec.adjustment_lines] == [Decimal("0.00")]
        book.void_invoice(dec.label, reason="redo")
        redo = book.invoice("acme", "2026-12")
        assert [(ln.exact_amount, ln.carried_in, ln.amount) for ln in redo.adjustment_lines] == [
            (Decimal("0.0049"), Decimal("0.00"), Decimal("0.00"))]
