"""``ledger budget``: monthly budgets per project, and the budget report."""

from __future__ import annotations

from pathlib import Path

import click

from ..money import money_str
from ..render import csv as render_csv
from ..render import json as render_json
from ..render import table as render_table
from .options import (
    CliState,
    echo,
    format_option,
    month_option,
    output_option,
    pass_state,
    stdout_text,
    text_output,
)


@click.group()
def budget() -> None:
    """Set, list and report monthly budgets (per project, per UTC calendar month).

    \b
    Example:
      ledger budget set acme 50.00
      ledger budget report --month 2026-11 --format html --output budgets.html
    """


@budget.command("set")
@click.argument("project")
@click.argument("limit")
@click.option("--soft", is_flag=True,
              help="Only flag the month in reports; never refuse a call.")
@pass_state
def set_budget(state: CliState, project: str, limit: str, soft: bool) -> None:
    """Set PROJECT's monthly budget to LIMIT US dollars.

    A hard budget (the default) refuses any call whose worst-case cost could exceed what is
    left; a soft one (--soft) lets calls through and flags the month in reports.

    \b
    Example:
      ledger budget set acme 50.00
      ledger budget set research 200 --soft
    """
    book = state.open()
    book.set_budget(project, limit, hard=not soft)
    s = book.budget(project)
    assert s.limit is not None
    kind = "soft: calls go through, reports flag it" if soft else \
        "hard: calls that could exceed it are refused"
    echo(f"budget of {project}: ${money_str(s.limit)} per month ({kind})")


@budget.command("list")
@format_option("table", "json", "csv")
@pass_state
def list_budgets(state: CliState, fmt: str) -> None:
    """List every project with a budget, with this month's spend.

    \b
    Example:
      ledger budget list --format json
    """
    from ..clock import month_of
    from ..reports import budgets

    book = state.open()
    month = month_of(book.now())
    states = budgets(book.store, book.now(), month)
    out = stdout_text()
    if fmt == "json":
        render_json.write({"month": month, "budgets": [
            {"project": s.project, "limit": money_str(s.limit) if s.limit is not None else None,
             "budget": "hard" if s.hard else "soft", "spent": money_str(s.spent),
             "reserved": money_str(s.held),
             "remaining": None if s.remaining is None else money_str(s.remaining),
             "status": s.status} for s in states]}, out)
    elif fmt == "csv":
        render_csv.budgets(out, states)
    else:
        render_table.console(out).print(render_table.budgets(states))


@budget.command("report")
@month_option()
@format_option("table", "json", "csv", "html")
@output_option()
@pass_state
def report(state: CliState, month: str | None, fmt: str, output: Path | None) -> None:
    """Per project for a month: limit, spent, reserved, remaining, percent used, burn rate per
    day, forecast for the month end and status (ok, warning from 80%, over).

    Burn rate = spent / days elapsed in the month (counted as at least one day); forecast =
    spent + burn rate x days left, a straight-line projection of the month-to-date spend. A
    finished month's forecast is its spend. --format html writes a self-contained page with
    a chart of daily spend against the budget line for each project.

    \b
    Example:
      ledger budget report
      ledger budget report --month 2026-11 --format json
      ledger budget report --format html --output budgets.html
    """
    rep = state.open().budget_report(month)
    with text_output(output) as out:
        if fmt == "json":
            render_json.write(rep.to_dict(), out)
        elif fmt == "csv":
            render_csv.budget_report(out, rep)
        elif fmt == "html":
            from ..render import html

            out.write(html.budget_report(rep))
        else:
            render_table.console(out, terminal=None if output is None else False).print(
                render_table.budget_report(rep))
