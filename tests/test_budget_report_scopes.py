"""The budget report lists every budget (scope, period, window, figures, forecast, status),
groups spend by user, tag or model, charts each hot budget, and never shows a forecast over
its limit as a green "ok"."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger import Ledger, ManualClock
from ledger.cli import main
from ledger.cli.options import CliState
from ledger.records import Attribution, Outcome
from ledger.render import html as render_html
from ledger.render import shown_status
from ledger.render import table as render_table
from ledger.reports import budget_report, window_forecast

NOON = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)  # a Tuesday; the week began Nov 9


def spend(book: Ledger, project: str, dollars: str, *, user: str | None = None,
          tags: str | None = None, model: str = "kimi-k2.5", at: datetime | None = None) -> None:
    """Record ``dollars`` of ``model``'s prompt tokens at ``at`` (default: now)."""
    tokens = int(Decimal(dollars) * 1000 / book.price(model).input_per_1k)
    when = at or book.now()
    book.store.record(project, model, Outcome("ok", tokens, 0), when, book.now(), None,
                      attribution=Attribution.of(user, tags))


@pytest.fixture
def scoped(any_book: Ledger, clock: ManualClock) -> Ledger:
    """On SQLite and PostgreSQL, acme: $50/month, $1.50/day, $0.10/day each user, $5/week on feature=search, $100 in
    total; by noon on Nov 10: alice $0.09 (search), bob $0.02, and $1.00 untagged."""
    book = any_book
    book.set_price("m2", Decimal("0.010"), effective_from=NOON - timedelta(days=30))
    book.set_budget("acme", Decimal("50"))
    book.set_budget("acme", Decimal("1.50"), period="day")
    book.set_budget("acme", Decimal("0.10"), period="day", user="*")
    book.set_budget("acme", Decimal("5"), period="week", tag="feature=search", hard=False)
    book.set_budget("acme", Decimal("100"), period="total")
    spend(book, "acme", "0.09", user="alice", tags="feature=search,env=prod")
    spend(book, "acme", "0.02", user="bob", tags="env=prod")
    spend(book, "acme", "1.00", model="m2")
    return book


def lines_of(book: Ledger, month: str = "2026-11") -> dict[str, dict[str, object]]:
    data = budget_report(book.store, book.now(), month).to_dict()
    return {b["label"]: b for b in data["budgets"]}


class TestEveryBudget:
    def test_each_budget_window_with_its_figures(self, scoped: Ledger) -> None:
        """Every budget in its window at the report's instant, with limit, spent, reserved,
        remaining, percent used, forecast and status; the contract's keys stay."""
        data = budget_report(scoped.store, scoped.now(), "2026-11").to_dict()
        assert data["month"] == "2026-11"
        [acme] = data["projects"]
        assert {"project", "limit", "spent", "reserved", "remaining", "percent_used",
                "forecast"} <= set(acme)
        lines = {b["label"]: b for b in data["budgets"]}
        assert list(lines) == [
            "acme day 2026-11-10", "acme month 2026-11", "acme total total",
            "acme user=* (alice) day 2026-11-10", "acme user=* (bob) day 2026-11-10",
            "acme tag=feature=search week 2026-11-09"]
        day = lines["acme day 2026-11-10"]
        assert (day["limit"], day["spent"], day["reserved"], day["remaining"],
                day["percent_used"], day["status"]) == (
            "1.50", "1.11", "0.00", "0.39", "74.00", "ok")
        assert day["window_start"] == "2026-11-10T00:00:00+00:00"
        assert day["window_end"] == "2026-11-11T00:00:00+00:00"
        alice = lines["acme user=* (alice) day 2026-11-10"]
        assert (alice["user"], alice["end_user"], alice["status"]) == ("*", "alice", "warning")
        week = lines["acme tag=feature=search week 2026-11-09"]
        assert (week["budget"], week["spent"], week["tag"]) == ("soft", "0.09",
                                                                "feature=search")
        total = lines["acme total total"]
        assert (total["window"], total["forecast"], total["window_end"]) == (
            "total", "1.11", None)

    def test_forecast_runs_to_the_window_end(self, scoped: Ledger) -> None:
        """Half the day gone: the day's forecast is twice its spend, and it is over $1.50,
        so the day is "at risk" (ok, forecast over) and hot."""
        day = lines_of(scoped)["acme day 2026-11-10"]
        assert day["forecast"] == "2.22" and day["burn_rate_per_day"] == "2.22"
        assert day["forecast_over_limit"] is True and day["hot"] is True
        assert shown_status(str(day["status"]), True) == ("at risk", "warning")

    def test_window_forecast_rules(self) -> None:
        """At least an hour (day windows) or a day elapsed; over, not begun or total: spent."""
        start, end = NOON.replace(hour=0), NOON.replace(hour=0) + timedelta(days=1)
        assert window_forecast(Decimal("1"), "day", start, end, start + timedelta(minutes=6)
                               ) == (Decimal(24), Decimal("1") + Decimal(24) * Decimal("23.9") / 24)
        assert window_forecast(Decimal("1"), "day", start, end, end)[1] == Decimal("1")
        assert window_forecast(Decimal("1"), "total", None, None, NOON) == (0, Decimal("1"))
        mon = datetime(2026, 11, 9, tzinfo=UTC)
        burn, forecast = window_forecast(Decimal("2"), "week", mon, mon + timedelta(days=7),
                                         mon + timedelta(hours=1))
        assert burn == Decimal(2) and forecast.quantize(Decimal("0.0001")) == Decimal("15.9167")

    def test_a_past_month_shows_its_last_windows_and_keeps_its_limits(
            self, scoped: Ledger, clock: ManualClock) -> None:
        """In December, November's report shows the windows of Nov 30 (its last day and
        ISO week) with November's limits, though the day limit was raised since."""
        clock.set(datetime(2026, 12, 2, tzinfo=UTC))
        scoped.set_budget("acme", Decimal("9"), period="day")
        lines = lines_of(scoped)
        assert lines["acme day 2026-11-30"]["limit"] == "1.50"
        assert lines["acme day 2026-11-30"]["spent"] == "0.00"
        assert lines["acme month 2026-11"]["spent"] == "1.11"
        assert "acme tag=feature=search week 2026-11-30" in lines

    def test_a_star_budget_with_no_users_yet_is_listed(self, book: Ledger) -> None:
        """A "*" budget nobody used in this window: one empty line."""
        book.set_budget("acme", Decimal("0.10"), period="day", user="*")
        [line] = budget_report(book.store, book.now(), "2026-11").budgets
        assert (line.scope, line.spent, line.status, line.hot) == (
            "user=*", Decimal(0), "ok", False)


class TestBy:
    def test_by_user_tag_and_model(self, scoped: Ledger) -> None:
        """Spend grouped per project by end user, by tag (a call with two tags under both,
        untagged calls as null) and by model."""
        def groups(by: str) -> list[tuple[object, ...]]:
            data = budget_report(scoped.store, scoped.now(), "2026-11", by=by).to_dict()
            assert data["by"] == by
            return [(g["project"], g[by], g["calls"], g["spent"]) for g in data["groups"]]

        assert groups("user") == [("acme", "alice", 1, "0.09"), ("acme", "bob", 1, "0.02"),
                                  ("acme", None, 1, "1.00")]
        assert groups("tag") == [("acme", "env=prod", 2, "0.11"),
                                 ("acme", "feature=search", 1, "0.09"),
                                 ("acme", None, 1, "1.00")]
        assert groups("model") == [("acme", "kimi-k2.5", 2, "0.11"), ("acme", "m2", 1, "1.00")]

    def test_cli_by_in_every_format(self, scoped: Ledger, clock: ManualClock) -> None:
        """`ledger budget report --by user`: a table after the report, JSON groups, CSV rows."""
        def run(*args: str) -> str:
            result = CliRunner().invoke(main, ["budget", "report", *args],
                                        obj=CliState(db=scoped.url, clock=clock))
            assert result.exit_code == 0, (result.stderr, result.exception)
            return result.stdout

        table = run("--by", "user")
        assert "Spend in 2026-11 by user" in table and "(no user)" in table
        assert "user=* (alice)" in table  # the budgets table
        data = json.loads(run("--by", "tag", "--format", "json"))
        assert {g["tag"] for g in data["groups"]} == {"env=prod", "feature=search", None}
        page = run("--by", "user", "--format", "html")
        assert "<h2>Spend by user</h2>" in page and ">alice</td>" in page
        assert ">(no user)</td>" in page
        rows = list(csv.DictReader(io.StringIO(run("--by", "model", "--format", "csv"))))
        assert [(r["model"], r["spent"]) for r in rows] == [("kimi-k2.5", "0.11"),
                                                            ("m2", "1.00")]
        result = CliRunner().invoke(main, ["budget", "report", "--by", "colour"],
                                    obj=CliState(db=scoped.url, clock=clock))
        assert result.exit_code == 2 and "--by" in result.stderr


class TestShown:
    def test_a_forecast_over_the_limit_is_never_a_green_ok(self, scoped: Ledger) -> None:
        """Budget lines: "at risk" in the warning colour in the terminal and HTML, never green;
        the forecast line of its chart is drawn in the warning colour too."""
        import io as _io

        from rich.console import Console

        rep = budget_report(scoped.store, scoped.now(), "2026-11")
        day = next(b for b in rep.budgets if b.label == "acme day 2026-11-10")
        assert day.status == "ok" and day.forecast_over
        out = _io.StringIO()
        Console(file=out, force_terminal=True, color_system="standard", width=250).print(
            render_table.budget_lines([day]))
        assert "\x1b[33mat risk\x1b[0m" in out.getvalue() and "\x1b[32m" not in out.getvalue()
        page = render_html.budget_report(rep)
        assert 'class="state warning" data-label="Status">at risk<' in page
        chart = render_html.budget_chart(day)
        assert 'stroke="#b06000" stroke-width="1.5" stroke-dasharray="2 4"' in chart

    def test_one_chart_per_hot_budget(self, scoped: Ledger) -> None:
        """Hot (80% used, or forecast over): the day (forecast over), alice (90%), the total?
        no (1%); bob (20%, forecast 40%)? no. Project charts are drawn as before."""
        rep = budget_report(scoped.store, scoped.now(), "2026-11")
        hot = [b.label for b in rep.budgets if b.hot]
        assert hot == ["acme day 2026-11-10", "acme user=* (alice) day 2026-11-10"]
        page = render_html.budget_report(rep)
        assert page.count('<div class="chart budget">') == 2
        assert page.count('<div class="chart">') == len(rep.rows) == 1
        assert "hourly spend (bars)" in page and "src=" not in page
        assert re.search(r'<h3>acme user=\* \(alice\) day 2026-11-10</h3>', page)

    def test_names_are_escaped_in_the_budget_section(self, book: Ledger) -> None:
        """A tag with markup in it is text in the page, never markup."""
        book.set_budget("acme", Decimal("0.01"), period="week", tag="x=<b>&")
        spend(book, "acme", "0.01", tags="x=<b>&")
        page = render_html.budget_report(budget_report(book.store, book.now(), "2026-11"))
        assert "<b>&" not in page and "x=&lt;b&gt;&amp;" in page


@pytest.mark.parametrize("width", (794, 680, 390))
def test_the_budget_section_fits_the_page_in_chromium(scoped: Ledger, tmp_path: Path,
                                                      width: int,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Headless Chromium: with every budget listed and the hot ones charted, nothing is wider
    than the page (A4, printable, a phone); "at risk" is amber and "warning" amber, never
    green; "ok" is green."""
    import test_html_in_browser as browser

    monkeypatch.setattr(browser, "PROBE", browser.PROBE.replace(
        "const facts = {", "const facts = {states: [...document.querySelectorAll('td.state')]"
        ".map(t => [t.textContent, getComputedStyle(t).color]),"))
    long_tag = f"job={'x' * 150}"
    scoped.set_budget("acme", Decimal("0.05"), period="week", tag=long_tag)
    spend(scoped, "acme", "0.06", tags=long_tag)  # over its $0.05
    rep = budget_report(scoped.store, scoped.now(), "2026-11")
    facts = browser.seen(render_html.budget_report(rep), width, tmp_path)
    browser.assert_fits(facts)
    hot = [b for b in rep.budgets if b.hot and b.label != "acme month 2026-11"]
    assert len(hot) == 3 and facts["charts"] == len(rep.rows) + len(hot)
    text = facts["text"].replace("\u200b", "")
    assert "Every budget" in text and "2026-11-09" in text
    shown = [tuple(s) for s in facts["states"]]
    assert ("at risk", browser.AMBER) in shown and ("warning", browser.AMBER) in shown
    assert ("over", browser.RED) in shown and ("ok", browser.GREEN) in shown
    for b, (_label, colour) in zip(rep.budgets, shown, strict=True):
        if b.forecast_over:
            assert colour != browser.GREEN, b.label


def test_charts_of_week_month_and_total_windows(book: Ledger, clock: ManualClock) -> None:
    """A hot budget's chart spans its window: a week by weekday, a user's month by day, a
    total budget its last 31 days; every bar's title names its day; the y axis is round."""
    book.set_budget("acme", Decimal("0.10"), period="week", tag="feature=x")
    book.set_budget("acme", Decimal("0.10"), period="month", user="alice")
    book.set_budget("acme", Decimal("0.10"), period="total")
    spend(book, "acme", "0.09", user="alice", tags="feature=x",
          at=datetime(2026, 11, 9, 8, tzinfo=UTC))
    rep = budget_report(book.store, book.now(), "2026-11")
    charts = {b.budget.period: render_html.budget_chart(b) for b in rep.budgets if b.hot}
    assert set(charts) == {"week", "month", "total"}
    week = charts["week"]
    assert all(f">{d}</text>" in week for d in ("Mon", "Tue", "Sun"))
    assert "<title>2026-11-09: $0.09</title>" in week
    assert ">22</text>" in charts["month"] and ">30</text>" in charts["month"]
    assert "<title>2026-11-09: $0.09</title>" in charts["total"]
    assert ">10-11</text>" in charts["total"] or ">11-10</text>" in charts["total"]
    for svg in charts.values():
        assert svg.startswith("<svg") and svg.endswith("</svg>")
        assert re.search(r'class="tick">\$0(\.0+)?<', svg)


def test_only_the_hottest_windows_are_charted(book: Ledger) -> None:
    """30 end users over 80% of a "*" budget: all 30 listed, the 24 hottest charted (one
    query each), the rest said so; the hottest come first."""
    from ledger.reports import MAX_SERIES

    book.set_budget("acme", Decimal("1"), period="day", user="*")
    for i in range(30):
        spend(book, "acme", str(Decimal("0.80") + Decimal(i) / 100), user=f"u{i:02d}")
    rep = budget_report(book.store, book.now(), "2026-11")
    assert len(rep.budgets) == 30 and all(b.hot for b in rep.budgets)
    charted = [b.user for b in rep.budgets if b.series]
    assert len(charted) == MAX_SERIES == 24 and charted == [f"u{i:02d}" for i in range(6, 30)]
    page = render_html.budget_report(rep)
    assert page.count('<div class="chart budget">') == 24
    assert "6 more hot budgets are listed above but not charted" in page
