"""Invoices: lines per model and unit price, exact to the cent, frozen once issued."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import Ledger, ManualClock
from ledger.invoice import Invoice, build_invoice, invoices_for_month, issued_invoices
from ledger.money import from_units, round_half_even_to_cent
from ledger.pricing import cost_units
from ledger.store.invoices import LineRow

NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)


def at(day: int, month: datetime = NOV, hour: int = 12) -> datetime:
    return month + timedelta(days=day - 1, hours=hour)


@pytest.fixture
def priced(any_book: Ledger) -> Ledger:
    """Model "m": $0.010 per 1K until Nov 15, then $0.050 in / $0.030 out."""
    any_book.set_price("m", Decimal("0.010"), effective_from=NOV)
    any_book.set_price("m", input_per_1k=Decimal("0.050"), output_per_1k=Decimal("0.030"),
                       effective_from=at(15, hour=0))
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

    def test_total_is_the_sum_of_rounded_lines_not_the_rounded_sum(self, priced: Ledger) -> None:
        """0.005 -> 0.00 and 0.025 -> 0.02 (half-even): total 0.02, though the exact sum is 0.03."""
        priced.record("acme", "m", 500, 0, at=at(2))        # 500 * $0.010/1K = 0.005
        priced.record("acme", "m", 500, 0, at=at(20))       # 500 * $0.050/1K = 0.025
        inv = priced.invoice("acme", "2026-11")
        assert [ln.amount for ln in inv.lines] == [Decimal("0.00"), Decimal("0.02")]
        assert inv.exact_total == Decimal("0.03")
        assert inv.total == Decimal("0.02")

    def test_failed_and_refused_calls_are_never_charged(self, any_book: Ledger) -> None:
        """Failed and refused calls never appear; a cancelled call that used tokens does."""
        any_book.void(any_book.hold("acme", "kimi-k2.5", 1000, 1000).call_id, error="HTTP 500")
        any_book.store.record_refused("r1", "acme", "kimi-k2.5", any_book.now(),
                                      any_book.now(), "budget_exceeded", 10)
        cancelled = any_book.hold("acme", "kimi-k2.5", 1000, 1000)
        any_book.settle(cancelled.call_id, 1000, 250, status="cancelled")
        inv = any_book.invoice("acme", "2026-11")
        assert [(ln.calls, ln.prompt_tokens, ln.completion_tokens, ln.amount)
                for ln in inv.lines] == [(1, 1000, 250, Decimal("0.02"))]
        assert inv.total == Decimal("0.02")

    def test_a_project_with_no_usage_gets_a_valid_zero_invoice(self, any_book: Ledger) -> None:
        inv = any_book.invoice("nobody", "2026-11")
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
        clock.set(at(2, DEC))
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
        jan = priced.invoice("acme", "2027-01")
        assert jan.lines == () and jan.total == 0
        # the same request id again is recorded once, so nothing new appears either
        priced.record("acme", "m", 1000, 0, at=at(20), request_id="late-1")
        assert priced.invoice("acme", "2027-02", draft=True).lines == ()

    def test_late_usage_after_two_frozen_months_goes_to_the_next_one(
            self, priced: Ledger) -> None:
        priced.invoice("acme", "2026-11")
        priced.invoice("acme", "2026-12")
        priced.record("acme", "m", 1000, 0, at=at(20))             # late for November
        priced.record("acme", "kimi-k2.5", 1000, 0, at=at(3, DEC))  # late for December
        oct_ = priced.invoice("acme", "2026-10")                    # an earlier month: not here
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
    with Ledger(f"sqlite:///{path}", clock=ManualClock(at(30))) as b:
        b.set_price("m", Decimal("0.0123"), effective_from=NOV)
        b.set_price("m", input_per_1k=Decimal("0.0456"), output_per_1k=Decimal("0.0789"),
                    effective_from=at(15, hour=0))
        charged = sum((b.record("p", model, p, c, at=at(day)) for p, c, day, model in calls),
                      Decimal(0))
        inv = b.invoice("p", "2026-11")
        assert inv.exact_total == charged
        assert inv.total == sum((ln.amount for ln in inv.lines), Decimal(0))
        assert sum(ln.calls for ln in inv.lines) == sum(1 for p, c, _, _ in calls if p or c)
