"""Issue 11 "reports that read right" in the terminal: at 80 columns money and model names are
never cut with "…" (they wrap, or the table stacks), one precision per money column, a totals
row, an empty result says so; ``ledger usage`` is ordered by call time."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from rich.console import Console, RenderableType

from ledger import Ledger, ManualClock
from ledger.render import table as render_table
from ledger.reports import budgets, usage_rows

NOV = datetime(2026, 11, 1, tzinfo=UTC)
LONG = "a-very-long-model-name-from-a-fine-tuning-job-with-no-spaces-at-all"
PROJECT = "free-a-very-long-project-name-that-goes-on"


def shown(renderable: RenderableType, width: int = 80) -> str:
    out = io.StringIO()
    Console(file=out, width=width, force_terminal=False, color_system=None).print(renderable)
    text = out.getvalue()
    assert all(len(line) <= width for line in text.splitlines())
    return text


def joined(text: str) -> str:
    """The text with line breaks and runs of spaces removed."""
    return re.sub(r"\s+", "", text)


def reads_whole(name: str, text: str) -> bool:
    """``name`` is printed whole: in pieces, in order, on consecutive lines (folded)."""
    lines = text.splitlines()
    for start in range(len(lines)):
        pos = 0
        for line in lines[start:]:
            k = next((k for k in range(len(name) - pos, 0, -1) if name[pos:pos + k] in line), 0)
            if k == 0 or (k < 4 and pos + k < len(name)):  # a real fold keeps pieces long
                break
            pos += k
            if pos == len(name):
                return True
    return False


def column_amounts(values: list[Decimal]) -> list[str]:
    """The amounts as one money column prints them: the most precise one's decimals."""
    places = max(2, *(-v.normalize().as_tuple().exponent for v in values))  # type: ignore[operator]
    return ["$" + format(v.quantize(Decimal(1).scaleb(-places)), "f") for v in values]


@pytest.fixture
def busy(book: Ledger, clock: ManualClock) -> Ledger:
    """acme: a soft $10 budget, a long model name, costs of different precisions; a project
    with a long name; Nov 10."""
    book.set_budget("acme", Decimal("10"), hard=False)
    book.set_price(LONG, Decimal("0.0123456"), effective_from=NOV)
    book.record("acme", "kimi-k2.5", 200_000, 0, at=NOV + timedelta(days=1))
    book.record("acme", LONG, 1_234, 567, at=NOV + timedelta(days=2))
    book.record(PROJECT, "kimi-k2.5", 1_234, 0, at=NOV + timedelta(days=3))
    clock.set(datetime(2026, 11, 10, 12, tzinfo=UTC))
    return book


@pytest.mark.parametrize("width", [80, 60, 40])
def test_the_budget_report_never_cuts_money_or_names(busy: Ledger, width: int) -> None:
    """Issue 11: at 80, 60 and 40 columns: no "…", every amount whole, every project name
    readable, the totals shown."""
    report = busy.budget_report("2026-11")
    text = shown(render_table.budget_report(report), width)
    assert "…" not in text
    for row in report.rows:
        assert reads_whole(row.project, text), row.project
    spent = column_amounts([*(r.spent for r in report.rows), report.spent])
    assert spent[0] == "$4.0222344256" and spent[1] == "$0.0246800000"
    for amount in [*spent, "$10.00"]:
        assert amount in text, amount
    assert "Total" in text


def test_one_precision_per_money_column(busy: Ledger) -> None:
    """Issue 11: the Spent column shows $4.0222344256 and $0.0246800000: exact, and equally
    precise (trailing zeros, never rounding)."""
    text = shown(render_table.budget_report(busy.budget_report("2026-11")), 200)
    assert "$4.0222344256" in text and "$0.0246800000" in text and "$4.0469144256" in text
    assert "$0.02468 " not in text


@pytest.mark.parametrize("width", [80, 50])
def test_usage_never_cuts_model_names_or_costs(busy: Ledger, width: int) -> None:
    """Issue 11: `ledger usage` at 80 (and 50) columns: the long model name wraps whole, no
    "…", costs in one precision, a totals row with the calls, tokens and cost."""
    rows = list(usage_rows(busy.store))
    text = shown(render_table.usage(rows), width)
    assert "…" not in text
    flat = joined(text)
    assert reads_whole(LONG, text) and reads_whole(PROJECT, text)
    costs = sorted(set(re.findall(r"\$\d+\.\d+", text)))
    assert len({len(c.split(".")[1]) for c in costs}) == 1, costs
    total = sum((r.cost for r in rows), Decimal(0))
    places = len(costs[0].split(".")[1])
    assert "$" + format(total.quantize(Decimal(1).scaleb(-places)), "f") in text
    assert "Total" in text and "3calls" in flat


def test_empty_results_say_so(book: Ledger) -> None:
    """Issue 11: no usage, no budgets: each table says so in words."""
    assert "No calls recorded match these filters." in shown(render_table.usage([]))
    assert "No budgets and no usage in 2026-11." in shown(
        render_table.budget_report(book.budget_report("2026-11")))
    assert "No invoices issued yet." in shown(render_table.invoice_list([]))


def test_usage_is_ordered_by_call_time(book: Ledger) -> None:
    """Issue 11: a call recorded late with at= takes its place in time (at, then id), in
    usage_rows (what `ledger usage` streams) and Ledger.usage."""
    book.record("acme", "kimi-k2.5", 1, 0, at=NOV + timedelta(days=5))
    book.record("acme", "kimi-k2.5", 2, 0, at=NOV + timedelta(days=2))
    book.record("acme", "kimi-k2.5", 3, 0, at=NOV + timedelta(days=5))
    book.record("acme", "kimi-k2.5", 4, 0, at=NOV + timedelta(days=1))
    rows = list(usage_rows(book.store))
    assert [r.prompt_tokens for r in rows] == [4, 2, 1, 3]
    assert [r.prompt_tokens for r in book.usage(project="acme")] == [4, 2, 1, 3]
    ids = [r.id for r in rows]
    assert ids[2] < ids[3]  # the same instant: by id


def test_prices_budgets_and_invoices_fit_80_columns(busy: Ledger) -> None:
    """Issue 11: the price list, the budgets and the invoice list at 80 columns: no "…", the
    long model name whole, prices in one precision per column, empty lists say so."""
    text = shown(render_table.prices(busy.prices()))
    assert "…" not in text and reads_whole(LONG, text)
    assert "$0.0123456" in text and "$0.0200000" in text  # kimi-k2.5's $0.02, as precise
    text = shown(render_table.budgets(budgets(busy.store, busy.now())))
    assert "…" not in text and "Total" in text and "$4.0222344256" in text
    assert "No prices set." in shown(render_table.prices([]))
    assert "No budgets set." in shown(render_table.budgets([]))
