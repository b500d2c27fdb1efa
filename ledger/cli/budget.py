"""``ledger budget``: budgets on any scope (project, end user, tag) and period, and the report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..money import money_str
from ..records import PERIODS
from ..render import csv as render_csv
from ..render import json as render_json
from ..render import table as render_table
from .options import (
    CliState,
    echo,
    format_option,
    month_option,
    output_option,
    parse_instant,
    pass_state,
    stdout_text,
    text_output,
)

F = TypeVar("F", bound=Callable[..., Any])
PER = {"day": "per UTC day", "week": "per ISO week", "month": "per month",
       "total": "in total, prepaid credit that never resets"}


def scope_options(fn: F) -> F:
    """``--period``, ``--user`` and ``--tag``: which budget of a project."""
    fn = click.option("--tag", metavar="K=V",
                      help="A budget on the calls carrying this tag (e.g. feature=search).")(fn)
    fn = click.option("--user", metavar="U",
                      help="A budget on one end user's calls, or '*': each end user gets "
                           "their own (a user's own budget replaces '*' for them).")(fn)
    fn = click.option("--period", type=click.Choice(PERIODS), default="month",
                      show_default=True,
                      help="UTC calendar window: day, week (ISO, from Monday), month, or "
                           "total (never resets).")(fn)
    return fn


def _alerts(_ctx: click.Context, _param: click.Parameter,
            value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    text = value.strip().lower()
    if text in ("", "none"):
        return ()
    try:
        found = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise click.BadParameter(
            f"must be whole percents separated by commas (e.g. 50,80,100) or 'none', "
            f"got {value!r}") from None
    if any(t < 1 or t > 1000 for t in found):
        raise click.BadParameter(f"each threshold must be 1 to 1000 percent, got {value!r}")
    return tuple(sorted(set(found)))


@click.group()
def budget() -> None:
    """Set, remove, list and report budgets: on a project, one of its end users (or each
    of them) or a tag; per UTC day, ISO week, month, or in total (prepaid credit).

    \b
    Example:
      ledger budget set acme 50.00
      ledger budget set acme 0.10 --period day --user '*'
      ledger budget report --month 2026-11 --format html --output budgets.html
    """


@budget.command("set")
@click.argument("project")
@click.argument("limit")
@scope_options
@click.option("--soft", is_flag=True,
              help="Only flag the window in reports (and alert); never refuse a call.")
@click.option("--alerts", "thresholds", metavar="50,80,100", callback=_alerts,
              help="Alert thresholds in percent of the limit (default 80,100; 'none': no "
                   "alerts).")
@click.option("--from", "effective_from", metavar="DATE",
              help="In force from this date or ISO 8601 instant, UTC (default: now); a past "
                   "window keeps the limit it had.")
@pass_state
def set_budget(state: CliState, project: str, limit: str, period: str, user: str | None,
               tag: str | None, soft: bool, thresholds: tuple[int, ...] | None,
               effective_from: str | None) -> None:
    """Set a budget of LIMIT US dollars on PROJECT (by default its month).

    A hard budget (the default) refuses any call whose worst-case cost could exceed what is
    left; a soft one (--soft) lets calls through and flags the window in reports. A call
    is admitted only if it fits every hard budget that matches it. Setting a budget again
    changes its limit from --from on; a total budget raised is topped up.

    \b
    Example:
      ledger budget set acme 50.00
      ledger budget set research 200 --soft
      ledger budget set acme 2 --period day
      ledger budget set acme 0.10 --period day --user '*' --alerts 50,80,100
      ledger budget set acme 5 --period week --tag feature=search
      ledger budget set acme 100 --period total --from 2026-12-01
    """
    book = state.open()
    when = None if effective_from is None else parse_instant(effective_from)
    kwargs: dict[str, Any] = {} if thresholds is None else {"alerts": thresholds}
    book.set_budget(project, limit, hard=not soft, period=period, user=user, tag=tag,
                    effective_from=when, **kwargs)
    found = _find(book.budgets(project), period, user, tag) if when is None else None
    kind = "soft: calls go through, reports flag it" if soft else \
        "hard: calls that could exceed it are refused"
    shown = limit if found is None else money_str(found.limit)
    label = f"{project}{_scope_text(user, tag)}"
    since = "" if when is None else f", from {when.strftime('%Y-%m-%d %H:%M UTC')}"
    alerts = "" if found is None else (
        "; alerts at " + ", ".join(f"{t}%" for t in found.alerts) if found.alerts
        else "; no alerts")
    echo(f"budget of {label}: ${shown.lstrip('$')} {PER[period]} ({kind}{since}){alerts}")


def _scope_text(user: str | None, tag: str | None) -> str:
    return (f" user={user}" if user is not None else "") + (
        f" tag={tag}" if tag is not None else "")


def _find(budgets: list[Any], period: str, user: str | None, tag: str | None) -> Any:
    for b in budgets:
        if b.period == period and b.user == user and b.tag == tag:
            return b
    return None


@budget.command("remove")
@click.argument("project")
@scope_options
@pass_state
def remove_budget(state: CliState, project: str, period: str, user: str | None,
                  tag: str | None) -> None:
    """Remove one of PROJECT's budgets from now on (past windows keep their report).

    Exit code 1 if there is no such budget.

    \b
    Example:
      ledger budget remove acme
      ledger budget remove acme --period day --user '*'
      ledger budget remove acme --period week --tag feature=search
    """
    book = state.open()
    label = f"{project}{_scope_text(user, tag)} {period}"
    if not book.remove_budget(project, period=period, user=user, tag=tag):
        echo(f"Error: no budget {label} to remove (see `ledger budget list {project}`)",
             err=True)
        raise click.exceptions.Exit(1)
    echo(f"budget {label} removed")


@budget.command("list")
@click.argument("project", required=False)
@format_option("table", "json", "csv")
@pass_state
def list_budgets(state: CliState, project: str | None, fmt: str) -> None:
    """List every budget in force (of PROJECT), each in its current window: scope,
    period, limit, alerts, spent, reserved, remaining and status.

    \b
    Example:
      ledger budget list
      ledger budget list acme --format json
    """
    from ..clock import month_of
    from ..reports import budget_lines

    book = state.open()
    now = book.now()
    lines = budget_lines(book.store, now, project)
    out = stdout_text()
    if fmt == "json":
        render_json.write({"month": month_of(now), "at": now.isoformat(),
                           "budgets": [line.to_dict(series=False) for line in lines]}, out)
    elif fmt == "csv":
        render_csv.budget_lines(out, lines)
    else:
        render_table.console(out).print(render_table.budget_lines(lines))


@budget.command("report")
@month_option()
@click.option("--by", type=click.Choice(("user", "tag", "model")),
              help="Also the month's spend per project grouped by end user, tag (a call "
                   "with two tags counts under both) or model.")
@format_option("table", "json", "csv", "html")
@output_option()
@pass_state
def report(state: CliState, month: str | None, by: str | None, fmt: str,
           output: Path | None) -> None:
    """Per project for a month: limit, spent, reserved, remaining, percent used, burn rate per
    day, forecast for the month end and status (ok, warning from 80%, over; "at risk" when
    under the limit but forecast over it). Then every budget (project, end user, tag; day,
    week, month, total) in its window at the report's instant, with the same figures.

    Burn rate = spent / days elapsed in the month (counted as at least one day); forecast =
    spent + burn rate x days left, a straight-line projection of the month-to-date spend. A
    finished month's forecast is its spend. --format html writes a self-contained page with
    a chart of daily spend against the budget line for each project and for each hot budget
    (80% used, or forecast over its limit). --format csv lists the projects, or with --by
    the groups.

    \b
    Example:
      ledger budget report
      ledger budget report --month 2026-11 --format json
      ledger budget report --by user
      ledger budget report --format html --output budgets.html
    """
    rep = state.open().budget_report(month, by=by)
    with text_output(output) as out:
        if fmt == "json":
            render_json.write(rep.to_dict(), out)
        elif fmt == "csv":
            if by is None:
                render_csv.budget_report(out, rep)
            else:
                render_csv.spend_groups(out, rep)
        elif fmt == "html":
            from ..render import html

            out.write(html.budget_report(rep))
        else:
            console = render_table.console(out, terminal=None if output is None else False)
            console.print(render_table.budget_report(rep))
            if any(not b.is_project_month for b in rep.budgets):  # else the rows above say it
                console.print(render_table.budget_lines(rep.budgets))
            if by is not None:
                console.print(render_table.spend_groups(rep))
