"""Tables for people (rich): aligned columns, right-aligned numbers, totals in the footer.

Every name goes in as ``rich.text.Text``, so a project called ``[bold]x[/]`` is printed as
those characters, never interpreted as markup.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import IO, TYPE_CHECKING

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..money import price_from_units
from . import dollars
from .safe import SafeConsole

if TYPE_CHECKING:
    from ..budget import BudgetState
    from ..invoice import Invoice
    from ..pricing import Price
    from ..records import Estimate
    from ..reports import BudgetReport, Calibration, UsageRow
    from ..store.info import LedgerInfo

STATUS_STYLE = {"ok": "green", "warning": "yellow", "over": "bold red"}


def console(out: IO[str], *, terminal: bool | None = None) -> Console:
    """A console on ``out``: colours on a terminal, plain and wide enough when redirected."""
    tty = out.isatty() if terminal is None else terminal
    return SafeConsole(file=out, highlight=False, emoji=False, markup=False,
                   width=None if tty else 200, force_terminal=None if tty else False,
                   no_color=not tty)


def t(value: object) -> Text:
    """Literal text (never markup)."""
    return Text("" if value is None else str(value))


def money(value: Decimal | None, *, dash: str = "-") -> Text:
    return Text(dash if value is None else dollars(value), justify="right")


def num(value: int | Decimal | None) -> Text:
    if value is None:
        return Text("-", justify="right")
    return Text(f"{value:,}" if isinstance(value, int) else str(value), justify="right")


def ledger_info(info: LedgerInfo) -> RenderableType:
    """``ledger db info``: one row per fact."""
    table = Table(box=box.SIMPLE_HEAD, show_header=False, pad_edge=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    where = info.url if info.path is None else f"{info.url}  ({info.path})"
    table.add_row(t("database"), t(where if info.exists else f"{where}  does not exist yet"))
    revision = ("none (not migrated)" if info.revision is None else info.revision)
    state = "at head" if info.at_head else f"head is {info.head}: run `ledger db upgrade`"
    table.add_row(t("schema revision"), t(f"{revision}  ({state})"))
    table.add_row(t("spool"), t(f"{info.spool_path}  ({info.spooled:,} entries waiting)"))
    for label, value in (("events", info.events), ("holds pending", info.holds_pending),
                         ("budgets", info.budgets), ("invoices", info.invoices)):
        table.add_row(t(label), t(f"{value:,}"))
    return table


def invoice(inv: Invoice) -> RenderableType:
    head = Text()
    head.append(f"{inv.label}  ", style="bold")
    head.append(f"project {inv.project}  month {inv.month}  {inv.currency}  ")
    head.append(("draft, not issued " if inv.draft else "issued ")
                + inv.issued_at.strftime("%Y-%m-%d %H:%M UTC"), style="dim")
    table = Table(box=box.SIMPLE_HEAD, show_footer=True, pad_edge=False)
    table.add_column("Model", footer=Text("Total", style="bold"))
    table.add_column("Input /1K", justify="right")
    table.add_column("Output /1K", justify="right")
    table.add_column("Calls", justify="right", footer=num(sum(x.calls for x in inv.lines)))
    table.add_column("Tokens in", justify="right", footer=num(inv.prompt_tokens))
    table.add_column("Tokens out", justify="right", footer=num(inv.completion_tokens))
    table.add_column("Amount", justify="right",
                     footer=Text(dollars(inv.total), style="bold", justify="right"))
    for line in inv.lines:
        table.add_row(t(line.description), money(line.input_per_1k), money(line.output_per_1k),
                      num(line.calls), num(line.prompt_tokens), num(line.completion_tokens),
                      money(line.amount))
    if not inv.lines:
        table.add_row(Text("no usage", style="dim"), "", "", "", "", "", money(Decimal("0.00")))
    return Group(head, table)


def budget_report(report: BudgetReport) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD, show_footer=True, pad_edge=False,
                  title=Text(f"Budgets for {report.month} (as of "
                             f"{report.generated_at.strftime('%Y-%m-%d %H:%M UTC')})"))
    table.add_column("Project", footer=Text("Total", style="bold"))
    table.add_column("Limit", justify="right")
    table.add_column("Spent", justify="right", footer=money(report.spent))
    table.add_column("Reserved", justify="right", footer=money(report.reserved))
    table.add_column("Remaining", justify="right")
    table.add_column("Used", justify="right")
    table.add_column("Burn/day", justify="right")
    table.add_column("Forecast", justify="right", footer=money(report.forecast))
    table.add_column("Status")
    for r in report.rows:
        limit = money(r.limit, dash="none")
        if r.limit is not None and not r.hard:
            limit.append(" soft", style="dim")
        forecast = money(r.forecast)
        if r.forecast_over:
            forecast.stylize("yellow")
        table.add_row(t(r.project), limit, money(r.spent), money(r.reserved),
                      money(r.remaining), Text("-" if r.percent_used is None
                                               else f"{r.percent_used}%", justify="right"),
                      money(r.burn_rate_per_day), forecast,
                      Text(r.status, style=STATUS_STYLE.get(r.status, "")))
    note = Text("Forecast: spent + burn rate x days left; burn rate: spent / days elapsed "
                "(at least 1). Used: (spent + reserved) / limit.", style="dim")
    return Group(table, note)


def prices(items: Iterable[Price]) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name, justify in (("Model", "left"), ("From", "left"), ("Input /1K", "right"),
                          ("Output /1K", "right"), ("Cached input /1K", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for p in items:
        table.add_row(t(p.model), t(p.effective_from.strftime("%Y-%m-%d %H:%M:%S UTC")),
                      money(price_from_units(p.input_units)),
                      money(price_from_units(p.output_units)),
                      money(None if p.cached_units is None else price_from_units(p.cached_units)))
    return table


def budgets(states: Iterable[BudgetState]) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("Project")
    table.add_column("Budget")
    table.add_column("Limit", justify="right")
    table.add_column("Month")
    table.add_column("Spent", justify="right")
    table.add_column("Reserved", justify="right")
    table.add_column("Remaining", justify="right")
    table.add_column("Status")
    for s in states:
        table.add_row(t(s.project), t("hard" if s.hard else "soft"), money(s.limit), t(s.month),
                      money(s.spent), money(s.held), money(s.remaining),
                      Text(s.status, style=STATUS_STYLE.get(s.status, "")))
    return table


def usage(rows: Iterable[UsageRow]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name, justify in (("At (UTC)", "left"), ("Project", "left"), ("Model", "left"),
                          ("Status", "left"), ("In", "right"), ("Out", "right"),
                          ("Cost", "right"), ("Error", "left")):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for r in rows:
        status = r.status + (" (estimated)" if r.estimated else "")
        table.add_row(t(r.at.strftime("%Y-%m-%d %H:%M:%S")), t(r.project), t(r.model),
                      t(status), num(r.prompt_tokens), num(r.completion_tokens), money(r.cost),
                      t((r.error or "")[:60]))
    return table


def calibration(rows: Iterable[Calibration]) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False,
                  title=Text("Estimated vs reported prompt tokens"))
    for name, justify in (("Model", "left"), ("Calls", "right"), ("Estimated", "right"),
                          ("Actual", "right"), ("Actual/estimated", "right"),
                          ("Mean abs error", "right"), ("Over-estimated", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for c in rows:
        table.add_row(t(c.model), num(c.calls), num(c.estimated_prompt_tokens),
                      num(c.actual_prompt_tokens), num(c.ratio), num(c.mean_abs_error),
                      Text(f"{(c.overestimated_share * 100).normalize():f}%", justify="right"))
    return table


def estimate(est: Estimate, state: BudgetState | None, fits: bool | None) -> RenderableType:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column("", style="bold")
    table.add_column("")
    for label, value in _estimate_items(est, state, fits):
        table.add_row(label, value)
    return table


def _estimate_items(est: Estimate, state: BudgetState | None,
                    fits: bool | None) -> Iterator[tuple[str, Text]]:
    yield "Model", t(est.model)
    yield "Prompt tokens", num(est.prompt_tokens)
    cap = num(est.max_completion_tokens)
    if est.capped_by_default:
        cap.append(" (default cap: the request sets none)", style="dim")
    yield "Completion cap", cap
    yield "Worst-case cost", money(est.cost)
    if state is not None:
        yield "Project", t(state.project)
        yield "Budget", (t("none (never refused)") if state.limit is None else
                         money(state.limit) + Text(" hard" if state.hard else " soft"))
        yield "Spent", money(state.spent)
        yield "Reserved", money(state.held)
        yield "Remaining", money(state.remaining)
        yield "Fits", Text("yes" if fits else "no", style="green" if fits else "bold red")
