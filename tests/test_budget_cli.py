"""``ledger budget set|remove|list`` on any scope and period, and ``ledger alerts list``."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from click.testing import CliRunner, Result

from ledger import Ledger, ManualClock
from ledger.cli import main
from ledger.cli.options import CliState
from ledger.records import Attribution, Outcome

Run = Callable[..., Result]
NOW = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)  # the clock fixture's time: a Tuesday


@pytest.fixture
def run(sqlite_url: str, clock: ManualClock) -> Run:
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(main, list(args), obj=CliState(db=sqlite_url, clock=clock))

    return invoke


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result.stdout


def fails(result: Result, code: int, match: str) -> str:
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert match.lower() in lines[0].lower(), lines[0]
    return lines[0]


def spend(book: Ledger, project: str, dollars: str, *, user: str | None = None,
          tags: str | None = None, model: str = "kimi-k2.5") -> None:
    """Record ``dollars`` of kimi-k2.5 prompt tokens ($0.020 per 1K) for the scope given."""
    tokens = int(Decimal(dollars) * 50_000)
    book.store.record(project, model, Outcome("ok", tokens, 0), book.now(), book.now(), None,
                      attribution=Attribution.of(user, tags))


def listed(run: Run, *args: str) -> list[dict[str, object]]:
    data = json.loads(ok(run("budget", "list", *args, "--format", "json")))
    budgets: list[dict[str, object]] = data["budgets"]
    return budgets


class TestSet:
    def test_every_scope_and_period(self, run: Run, book: Ledger) -> None:
        """Project month (the default), day, each user's day, one user's, a tag's week and
        prepaid total: each a budget of its own, said back in words."""
        assert "budget of acme: $50.00 per month (hard" in ok(run("budget", "set", "acme", "50"))
        assert "per UTC day" in ok(run("budget", "set", "acme", "2", "--period", "day"))
        out = ok(run("budget", "set", "acme", "0.10", "--period", "day", "--user", "*",
                     "--alerts", "50,80,100"))
        assert "acme user=*: $0.10 per UTC day" in out and "alerts at 50%, 80%, 100%" in out
        ok(run("budget", "set", "acme", "1", "--period", "day", "--user", "alice"))
        out = ok(run("budget", "set", "acme", "5", "--period", "week", "--tag",
                     "feature=search", "--soft"))
        assert "per ISO week (soft" in out
        out = ok(run("budget", "set", "acme", "100", "--period", "total", "--alerts", "none"))
        assert "in total, prepaid credit" in out and "no alerts" in out
        scopes = {(b.period, b.user, b.tag, b.limit, b.hard, b.alerts)
                  for b in book.budgets("acme")}
        assert scopes == {
            ("month", None, None, Decimal("50"), True, (80, 100)),
            ("day", None, None, Decimal("2"), True, (80, 100)),
            ("day", "*", None, Decimal("0.10"), True, (50, 80, 100)),
            ("day", "alice", None, Decimal("1"), True, (80, 100)),
            ("week", None, "feature=search", Decimal("5"), False, (80, 100)),
            ("total", None, None, Decimal("100"), True, ()),
        }

    def test_from_dates_a_limit(self, run: Run, book: Ledger) -> None:
        """--from sets the version in force from that instant: not before it."""
        ok(run("budget", "set", "acme", "10"))
        out = ok(run("budget", "set", "acme", "20", "--from", "2026-12-01"))
        assert "from 2026-12-01 00:00 UTC" in out
        assert [b.limit for b in book.budgets("acme")] == [Decimal("10")]

    @pytest.mark.parametrize("args, match", [
        (["--alerts", "80,lots"], "whole percents"),
        (["--alerts", "0"], "1 to 1000"),
        (["--period", "year"], "--period"),
        (["--tag", "no-equals"], "key=value"),
        (["--from", "tomorrow"], "--from must be a date"),
        (["--user", "x" * 201], "user must be at most 200"),
    ])
    def test_bad_options_are_one_line_errors(self, run: Run, args: list[str],
                                             match: str) -> None:
        """A malformed option: exit 2, one line naming what is wrong, nothing set."""
        fails(run("budget", "set", "acme", "5", *args), 2, match)


class TestRemove:
    def test_remove_one_scope_only(self, run: Run, book: Ledger) -> None:
        """Removing the "*" day budget leaves the project's month budget in force."""
        ok(run("budget", "set", "acme", "50"))
        ok(run("budget", "set", "acme", "0.10", "--period", "day", "--user", "*"))
        assert "budget acme user=* day removed" in ok(
            run("budget", "remove", "acme", "--period", "day", "--user", "*"))
        assert [(b.period, b.user) for b in book.budgets("acme")] == [("month", None)]

    def test_removing_what_does_not_exist_says_no(self, run: Run) -> None:
        """No such budget: exit 1, one line saying so."""
        fails(run("budget", "remove", "acme", "--period", "week"), 1,
              "no budget acme week to remove")


class TestList:
    def test_each_budget_in_its_window(self, run: Run, book: Ledger) -> None:
        """One line per budget window, "*" per end user with activity; spend in each."""
        ok(run("budget", "set", "acme", "50"))
        ok(run("budget", "set", "acme", "0.10", "--period", "day", "--user", "*"))
        ok(run("budget", "set", "acme", "5", "--period", "week", "--tag", "feature=search"))
        ok(run("budget", "set", "beta", "3", "--period", "total"))
        spend(book, "acme", "0.09", user="alice", tags="feature=search")
        spend(book, "acme", "0.02", user="bob")
        lines = listed(run)
        shown = [(b["project"], b["user"], b["end_user"], b["tag"], b["period"], b["window"],
                  b["spent"], b["status"]) for b in lines]
        assert shown == [
            ("acme", None, None, None, "month", "2026-11", "0.11", "ok"),
            ("acme", "*", "alice", None, "day", "2026-11-10", "0.09", "warning"),
            ("acme", "*", "bob", None, "day", "2026-11-10", "0.02", "ok"),
            ("acme", None, None, "feature=search", "week", "2026-11-09", "0.09", "ok"),
            ("beta", None, None, None, "total", "total", "0.00", "ok"),
        ]
        assert {"limit", "budget", "reserved", "remaining", "percent_used", "forecast",
                "alerts"} <= set(lines[0])
        assert lines[1]["alerts"] == [80, 100] and lines[1]["remaining"] == "0.01"
        assert [b["project"] for b in listed(run, "beta")] == ["beta"]

    def test_table_and_csv(self, run: Run, book: Ledger) -> None:
        """The table names scope, period and window; the CSV has one row per window."""
        ok(run("budget", "set", "acme", "0.10", "--period", "day", "--user", "*"))
        spend(book, "acme", "0.01", user="alice")
        table = ok(run("budget", "list"))
        assert "user=* (alice)" in table and "2026-11-10" in table and "day" in table
        rows = list(csv.DictReader(io.StringIO(ok(run("budget", "list", "--format", "csv")))))
        assert [(r["user"], r["end_user"], r["period"], r["spent"], r["remaining"])
                for r in rows] == [("*", "alice", "day", "0.01", "0.09")]

    def test_a_star_budget_nobody_used_is_listed_once(self, run: Run) -> None:
        """A "*" budget with no end user in its window yet is still listed (empty)."""
        ok(run("budget", "set", "acme", "0.10", "--period", "day", "--user", "*"))
        [line] = listed(run)
        assert (line["user"], line["end_user"], line["spent"]) == ("*", None, "0.00")

    def test_nothing_set(self, run: Run) -> None:
        """No budgets: the table says so."""
        assert "No budgets set." in ok(run("budget", "list"))


class TestAlertsList:
    @pytest.fixture
    def crossed(self, book: Ledger) -> Ledger:
        """acme $1/month crosses 50% then 100%; bob's day crosses 80% of $0.10."""
        book.set_budget("acme", Decimal("1"), alerts=(50, 100))
        book.set_budget("beta", Decimal("0.10"), period="day", user="*")
        spend(book, "acme", "0.60")
        spend(book, "acme", "0.50")
        spend(book, "beta", "0.09", user="bob")
        return book

    def test_json_oldest_first_with_exact_money(self, run: Run, crossed: Ledger) -> None:
        """Every alert, oldest first; --project and --since-id filter; money exact."""
        data = json.loads(ok(run("alerts", "list", "--format", "json")))["alerts"]
        assert [(a["project"], a["user"], a["period"], a["threshold"]) for a in data] == [
            ("acme", None, "month", 50), ("acme", None, "month", 100),
            ("beta", "bob", "day", 80)]
        assert data[1]["spent"] == "1.10" and data[1]["limit"] == "1.00"
        assert data[2]["window"] == "2026-11-10" and data[2]["at"].startswith("2026-11-10")
        ids = [a["id"] for a in data]
        assert ids == sorted(ids)
        only = json.loads(ok(run("alerts", "list", "--project", "beta", "--format", "json")))
        assert [a["id"] for a in only["alerts"]] == [ids[2]]
        after = json.loads(ok(run("alerts", "list", "--since-id", str(ids[0]), "--format",
                                  "json")))
        assert [a["id"] for a in after["alerts"]] == ids[1:]

    def test_table_and_csv(self, run: Run, crossed: Ledger) -> None:
        """The table shows thresholds in percent; CSV one row per alert."""
        table = ok(run("alerts", "list"))
        assert "100%" in table and "bob" in table
        rows = list(csv.DictReader(io.StringIO(ok(run("alerts", "list", "--format", "csv")))))
        assert [r["threshold"] for r in rows] == ["50", "100", "80"]
        assert rows[2]["user"] == "bob" and rows[0]["user"] == ""

    def test_none_yet(self, run: Run) -> None:
        """No alerts: the table says so."""
        assert "No alerts raised." in ok(run("alerts", "list"))
