"""Budget reports (spent, reserved, burn rate, forecast, status), usage rows, calibration."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from types import GeneratorType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import Ledger, ManualClock
from ledger.reports import budget_report, budgets, calibration, count_usage, usage_rows
from ledger.store.schema import events, to_micros

NOV = datetime(2026, 11, 1, tzinfo=UTC)


def at(day: int, hour: int = 0, month: datetime = NOV) -> datetime:
    return month + timedelta(days=day - 1, hours=hour)


def dollars_of_kimi(amount: str) -> int:
    """Tokens of kimi-k2.5 ($0.020 per 1K) that cost exactly ``amount``."""
    return int(Decimal(amount) / Decimal("0.00002"))


@pytest.fixture
def spent(any_book: Ledger) -> Ledger:
    """acme: hard $10, $4.00 on Nov 2 and $1.00 on Nov 5; the clock says Nov 10 12:00."""
    any_book.set_budget("acme", Decimal("10"))
    any_book.record("acme", "kimi-k2.5", dollars_of_kimi("4.00"), 0, at=at(2, 9))
    any_book.record("acme", "kimi-k2.5", dollars_of_kimi("1.00"), 0, at=at(5, 23))
    return any_book


class TestBudgetReport:
    def test_figures_and_forecast(self, spent: Ledger) -> None:
        rep = spent.budget_report("2026-11")
        assert (rep.month, rep.days_in_month, rep.days_elapsed) == ("2026-11", 30,
                                                                    Decimal("9.5"))
        [row] = rep.rows
        assert (row.project, row.limit, row.hard, row.spent, row.reserved, row.remaining) == (
            "acme", Decimal("10.00"), True, Decimal("5.00"), Decimal("0.00"), Decimal("5.00"))
        assert row.percent_used == Decimal("50.00")
        # burn = 5.00 / 9.5 days = 0.5263...; forecast = 5.00 + 0.5263... x 20.5 = 15.789...
        assert row.burn_rate_per_day == Decimal("0.53")
        assert row.forecast == Decimal("15.79")
        assert row.forecast_over and row.status == "ok"
        assert budget_report(spent.store, spent.now(), "2026-11") == rep

    def test_daily_series_runs_to_today(self, spent: Ledger) -> None:
        [row] = spent.budget_report("2026-11").rows
        assert [d.day for d in row.daily] == [date(2026, 11, d) for d in range(1, 11)]
        assert {d.day.day: d.amount for d in row.daily if d.amount} == {
            2: Decimal("4.00"), 5: Decimal("1.00")}

    def test_reserved_counts_live_holds_and_not_expired_ones(self, spent: Ledger,
                                                             clock: ManualClock) -> None:
        spent.hold("acme", "kimi-k2.5", dollars_of_kimi("3.00"), 0)
        [row] = spent.budget_report().rows
        assert (row.reserved, row.remaining, row.percent_used, row.status) == (
            Decimal("3.00"), Decimal("2.00"), Decimal("80.00"), "warning")
        clock.advance(minutes=16)  # past the hold's TTL: its process died
        [row] = spent.budget_report().rows
        assert (row.reserved, row.status) == (Decimal("0.00"), "ok")

    def test_statuses_soft_budgets_and_projects_without_budget(self, spent: Ledger) -> None:
        spent.set_budget("soft", Decimal("1"), hard=False)
        spent.record("soft", "kimi-k2.5", dollars_of_kimi("2.50"), 0, at=at(3))
        spent.record("free", "kimi-k2.5", 1000, 0, at=at(3))
        spent.set_budget("idle", Decimal("5"))
        rows = {r.project: r for r in spent.budget_report("2026-11").rows}
        assert list(rows) == ["acme", "free", "idle", "soft"]
        assert (rows["soft"].status, rows["soft"].budget_kind, rows["soft"].percent_used) == (
            "over", "soft", Decimal("250.00"))
        assert (rows["free"].limit, rows["free"].percent_used, rows["free"].status) == (
            None, None, "ok")
        assert rows["idle"].spent == 0 and rows["idle"].forecast == 0
        assert budgets(spent.store, spent.now(), "2026-11")[0].project == "acme"
        assert [s.project for s in budgets(spent.store, spent.now())] == ["acme", "idle", "soft"]

    def test_a_finished_month_forecasts_its_spend(self, spent: Ledger) -> None:
        spent.record("acme", "kimi-k2.5", dollars_of_kimi("3.10"), 0,
                     at=datetime(2026, 10, 10, tzinfo=UTC))
        [row] = spent.budget_report("2026-10").rows
        assert (row.spent, row.forecast, row.burn_rate_per_day) == (
            Decimal("3.10"), Decimal("3.10"), Decimal("0.10"))
        assert len(row.daily) == 31

    def test_a_month_not_begun(self, spent: Ledger) -> None:
        rep = spent.budget_report("2026-12")
        assert rep.days_elapsed == 0
        [row] = rep.rows
        assert (row.spent, row.burn_rate_per_day, row.forecast, row.daily) == (
            Decimal("0.00"), Decimal("0.00"), Decimal("0.00"), ())

    def test_json_keys(self, spent: Ledger) -> None:
        data = spent.budget_report("2026-11").to_dict()
        assert {"month", "projects"} <= set(data)
        project = data["projects"][0]
        assert {"project", "limit", "spent", "reserved", "remaining", "percent_used",
                "forecast", "burn_rate_per_day", "status"} <= set(project)
        assert project["spent"] == "5.00" and project["forecast"] == "15.79"
        assert all(isinstance(v, str) for k, v in project.items()
                   if k in ("limit", "spent", "reserved", "remaining", "forecast"))

    def test_bad_month(self, book: Ledger) -> None:
        with pytest.raises(ValueError, match="YYYY-MM"):
            book.budget_report("11/2026")


class TestUsageRows:
    @pytest.fixture
    def mixed(self, any_book: Ledger) -> Ledger:
        b = any_book
        b.record("acme", "kimi-k2.5", 100, 50, at=at(2))
        b.record("acme", "kimi-k2.6", 200, 50, at=at(3))
        b.record("beta", "kimi-k2.5", 300, 50, at=datetime(2026, 10, 3, tzinfo=UTC))
        b.void(b.hold("acme", "kimi-k2.5", 10, 10).call_id, error="HTTP 503", http_status=503)
        h = b.hold("acme", "kimi-k2.5", 10, 10)
        b.settle(h.call_id, 10, 10, estimated=True)
        b.store.record_refused("r1", "acme", "kimi-k2.5", b.now(), b.now(), "over budget", 10)
        return b

    def test_filters(self, mixed: Ledger) -> None:
        def ids(project: str | None = None, month: str | None = None, model: str | None = None,
                status: str | None = None) -> list[tuple[str, str, str]]:
            return [(r.project, r.model, r.status) for r in usage_rows(
                mixed.store, project=project, month=month, model=model, status=status)]

        assert len(ids()) == 6 == count_usage(mixed.store)
        assert ids(project="beta") == [("beta", "kimi-k2.5", "ok")]
        assert ids(month="2026-10") == [("beta", "kimi-k2.5", "ok")]
        assert ids(model="kimi-k2.6") == [("acme", "kimi-k2.6", "ok")]
        assert ids(status="failed") == [("acme", "kimi-k2.5", "failed")]
        assert ids(status="refused") == [("acme", "kimi-k2.5", "refused")]
        assert ids(status="estimated") == [("acme", "kimi-k2.5", "ok")]
        assert count_usage(mixed.store, project="acme", month="2026-11") == 5
        assert [r.project for r in mixed.usage(month="2026-10")] == ["beta"]  # Ledger.usage

    def test_rows_are_exact_and_json_ready(self, mixed: Ledger) -> None:
        first = next(usage_rows(mixed.store, project="acme"))
        assert first.cost == Decimal("0.003") and first.at == at(2)
        data = first.to_dict()
        assert data["cost"] == "0.003" and data["input_per_1k"] == "0.020"
        failed = next(usage_rows(mixed.store, status="failed"))
        assert (failed.cost, failed.http_status, failed.error) == (Decimal(0), 503, "HTTP 503")

    def test_bad_filters_raise_before_any_row(self, book: Ledger) -> None:
        with pytest.raises(ValueError, match="status"):
            usage_rows(book.store, status="weird")
        with pytest.raises(ValueError, match="YYYY-MM"):
            usage_rows(book.store, month="2026-1x")

    def test_streams_with_flat_memory(self, book: Ledger) -> None:
        """A generator over batches: memory does not grow with the number of rows."""
        n = 10_000
        start = to_micros(at(1))
        with book.store.write() as conn:
            conn.execute(events.insert(), [
                {"call_id": None, "project": "big", "month": "2026-11", "at": start + i,
                 "model": "kimi-k2.5", "status": "ok", "estimated": False,
                 "prompt_tokens": 10, "completion_tokens": 10, "cached_tokens": 0,
                 "est_prompt_tokens": None, "input_price": 200_000, "output_price": 200_000,
                 "cached_price": None, "cost": 4_000_000, "http_status": None,
                 "error": None, "invoice_id": None, "recorded_at": start} for i in range(n)])
        stream = usage_rows(book.store, project="big", batch=500)
        assert isinstance(stream, GeneratorType)
        tracemalloc.start()
        try:
            count = 0
            for _row in stream:
                count += 1
                if count == 1000:
                    early = tracemalloc.get_traced_memory()[0]
            current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert count == n
        assert peak < 3_000_000, peak        # all rows at once would take ~10 MB
        assert current - early < 1_000_000

    def test_closing_the_stream_releases_the_connection(self, book: Ledger) -> None:
        book.record("acme", "kimi-k2.5", 1, 1)
        book.record("acme", "kimi-k2.5", 2, 1)
        stream = usage_rows(book.store)
        next(stream)
        stream.close()
        book.record("acme", "kimi-k2.5", 3, 1)  # a writer is not blocked
        assert count_usage(book.store) == 3


class TestCalibration:
    def test_estimated_vs_actual_per_model(self, any_book: Ledger) -> None:
        for est, actual in ((100, 120), (200, 180)):
            h = any_book.hold("acme", "kimi-k2.5", est, 10)
            any_book.settle(h.call_id, actual, 5)
        h = any_book.hold("acme", "kimi-k2.6", 50, 10)
        any_book.settle(h.call_id, 40, 5)
        h = any_book.hold("acme", "kimi-k2.6", 50, 10)
        any_book.settle(h.call_id, 999, 5, estimated=True)  # no reported usage: not counted
        any_book.record("acme", "kimi-k2.6", 10, 10)         # no estimate: not counted
        rows = {c.model: c for c in calibration(any_book.store)}
        k5, k6 = rows["kimi-k2.5"], rows["kimi-k2.6"]
        assert (k5.calls, k5.estimated_prompt_tokens, k5.actual_prompt_tokens, k5.ratio,
                k5.mean_abs_error, k5.overestimated_share) == (
            2, 300, 300, Decimal("1.0000"), Decimal("20.0"), Decimal("0.5000"))
        assert (k6.calls, k6.ratio, k6.overestimated_share) == (1, Decimal("0.8000"),
                                                                Decimal("1.0000"))
        assert k5.to_dict()["ratio"] == "1.0000"
        assert calibration(any_book.store, month="2026-10") == []


def test_the_html_header_names_the_day_plainly() -> None:
    """Issue 11: "day 30 of 30", never "day 3E+1"; a part-elapsed day is the day begun."""
    from ledger.render.html import day_of_month

    assert day_of_month(Decimal("3E+1")) == "30"
    assert day_of_month(Decimal("1.2241")) == "2"
    assert day_of_month(Decimal("0")) == "1"


class TestChartAxis:
    """Issue 11: the HTML budget report's y axis: nice round ticks, never $780.01 or $0.03."""

    @pytest.mark.parametrize(("high", "labels"), [
        ("1438.11", ["$0", "$500", "$1,000", "$1,500"]),
        ("780.01", ["$0", "$200", "$400", "$600", "$800"]),
        ("0.04", ["$0.00", "$0.01", "$0.02", "$0.03", "$0.04", "$0.05"]),
        ("0", ["$0.00", "$0.01"]),
        ("150000000", ["$0", "$50,000,000", "$100,000,000", "$150,000,000",
                       "$200,000,000"]),
    ])
    def test_known_axes(self, high: str, labels: list[str]) -> None:
        """Issue 11: ticks for a few maxima, labelled with one precision per axis."""
        from ledger.render.axis import nice_ticks, tick_label

        ticks = nice_ticks(Decimal(high))
        assert [tick_label(t, ticks[1]) for t in ticks] == labels

    @given(st.decimals(min_value=0, max_value=10**12, places=10, allow_nan=False,
                       allow_infinity=False))
    @settings(max_examples=300, deadline=None)
    def test_any_maximum_gets_round_evenly_spaced_ticks_above_it(self, high: Decimal) -> None:
        """Issue 11: from 0, evenly spaced by 1, 2 or 5 × 10^k, the top above the maximum,
        at most 6 intervals; the same under a caller's prec = 3."""
        import decimal

        from ledger.render.axis import nice_ticks

        ticks = nice_ticks(high)
        step = ticks[1]
        assert ticks[0] == 0 and ticks[-1] > high and 2 <= len(ticks) <= 7
        assert all(b - a == step for a, b in pairwise(ticks))
        mantissa = step.scaleb(-step.adjusted())
        assert mantissa in (1, 2, 5) and step >= Decimal("0.01")
        assert ticks[-2] <= high or len(ticks) == 2
        with decimal.localcontext() as ctx:
            ctx.prec = 3
            assert nice_ticks(high) == ticks


def test_a_forecast_over_its_limit_is_never_a_green_ok(spent: Ledger) -> None:
    """Issue 11: acme is "ok" (50% used) but forecast over its $10: shown "at risk"
    in the warning colour, in the terminal and in HTML; the data keeps status "ok"."""
    import io

    from rich.console import Console

    from ledger.render import html as render_html
    from ledger.render import shown_status
    from ledger.render import table as render_table

    rep = spent.budget_report("2026-11")
    [row] = rep.rows
    assert row.status == "ok" and row.forecast_over
    assert shown_status(row.status, row.forecast_over) == ("at risk", "warning")
    assert shown_status("ok", False) == ("ok", "ok")
    assert shown_status("over", True) == ("over", "over")
    page = render_html.budget_report(rep)
    assert 'class="status warning" data-label="Status">at risk<' in page
    assert 'class="status ok"' not in page
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="standard", width=200)
    console.print(render_table.budget_report(rep))
    text = out.getvalue()
    assert "\x1b[33mat risk\x1b[0m" in text     # yellow
    assert "\x1b[32m" not in text                         # never green
