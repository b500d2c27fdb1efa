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

from ..money import in_money_context, price_from_units
from . import dollars, shown_status
from .fit import Col, Fitted, money_column
from .safe import SafeConsole

if TYPE_CHECKING:
    from ..budget import BudgetState
    from ..invoice import CreditNote, Invoice
    from ..pricing import Price
    from ..records import Estimate
    from ..reports import BudgetReport, Calibration, UsageRow
    from ..store.info import LedgerInfo
    from .document import Document

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
    """The invoice as a document: parties, dates, lines with sub-lines, totals, notes.
    Four columns that fold (never cut with "…") at 80 columns."""
    from .document import of_invoice

    return _document(of_invoice(inv))


def credit_note(note: CreditNote) -> RenderableType:
    from .document import of_credit_note

    return _document(of_credit_note(note))


def _document(doc: Document) -> RenderableType:
    head = Text()
    head.append(doc.title, style="bold red" if doc.draft else "bold")
    parties = Table(box=None, show_header=True, pad_edge=False, expand=False)
    parties.add_column("From", overflow="fold", ratio=1)
    parties.add_column("Bill to", overflow="fold", ratio=1)
    parties.add_row(t("\n".join(doc.seller)), t("\n".join(doc.bill_to)))
    meta = Table(box=None, show_header=False, pad_edge=False)
    meta.add_column("", style="bold", no_wrap=True)
    meta.add_column("", overflow="fold")
    for label, value in doc.meta:
        meta.add_row(label, t(value))
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_footer=False)
    table.add_column("Description", overflow="fold", ratio=3)
    table.add_column("Quantity", justify="right", overflow="fold")
    table.add_column("Unit price", justify="right", overflow="fold")
    table.add_column("Amount", justify="right", overflow="fold")
    for row in doc.rows:
        if row.sub:
            table.add_row(Text("  " + row.description, style="dim"), t(row.quantity),
                          t(row.unit_price), Text(row.amount, style="dim", justify="right"))
        else:
            desc = t(row.description)
            if row.dates:
                desc.append(f"  {row.dates}", style="dim")
            table.add_row(desc, t(row.quantity), t(row.unit_price),
                          Text(row.amount, justify="right"))
    if not doc.rows:
        table.add_row(Text(doc.empty, style="dim"), "", "", "")
    table.add_section()
    for i, (label, value) in enumerate(doc.totals):
        last = i == len(doc.totals) - 1
        table.add_row(Text(label, style="bold" if last else ""), "", "",
                      Text(value, style="bold" if last else "", justify="right"))
    notes = Text("\n".join(doc.notes), style="dim")
    return Group(head, parties, Text(""), meta, table, notes, Text(""))


def invoice_list(invs: Iterable[Invoice]) -> RenderableType:
    """Number, project, month, dates, total and state of every invoice; fits any width."""
    from .document import grouped

    body = []
    for inv in invs:
        state = inv.state if inv.credit_note is None else f"{inv.state} ({inv.credit_note})"
        body.append([t(inv.label), t(inv.project), t(inv.month),
                     t(inv.issued_at.strftime("%Y-%m-%d")),
                     t("" if inv.due_at is None else inv.due_at.strftime("%Y-%m-%d")),
                     Text(grouped(inv.total), justify="right"),
                     Text(state, style="dim" if inv.state == "void" else "")])
    cols = [Col("Number", keep=True), Col("Project"), Col("Month", keep=True),
            Col("Issued", keep=True), Col("Due", keep=True),
            Col("Total", right=True, keep=True), Col("State")]
    return Fitted(cols, body, empty="No invoices issued yet.")


def budget_report(report: BudgetReport) -> RenderableType:
    """Every project's month: fits any width (stacked when narrow), one precision per money
    column, a totals row; an empty month says so."""
    rows = list(report.rows)
    spent = money_column([*(r.spent for r in rows), report.spent])
    reserved = money_column([*(r.reserved for r in rows), report.reserved])
    remaining = money_column([r.remaining for r in rows])
    limits = money_column([r.limit for r in rows], dash="none")
    burn = money_column([r.burn_rate_per_day for r in rows])
    forecast = money_column([*(r.forecast for r in rows), report.forecast])
    body: list[list[Text]] = []
    for i, r in enumerate(rows):
        limit = limits[i]
        if r.limit is not None:
            limit.append(" hard" if r.hard else " soft", style="dim")
        status, tone = shown_status(r.status, r.forecast_over)
        if r.forecast_over:
            forecast[i].stylize("yellow")
        body.append([t(r.project), limit, spent[i], reserved[i], remaining[i],
                     Text("-" if r.percent_used is None else f"{r.percent_used}%",
                          justify="right"),
                     burn[i], forecast[i], Text(status, style=STATUS_STYLE.get(tone, ""))])
    cols = [Col("Project"), Col("Limit", right=True, keep=True),
            Col("Spent", right=True, keep=True), Col("Reserved", right=True, keep=True),
            Col("Remaining", right=True, keep=True), Col("Used", right=True, keep=True),
            Col("Burn/day", right=True, keep=True), Col("Forecast", right=True, keep=True),
            Col("Status", min=6)]
    footer = [Text("Total", style="bold"), Text(""), spent[-1], reserved[-1], Text(""),
              Text(""), Text(""), forecast[-1], Text("")]
    note = Text("Forecast: spent + burn rate x days left; burn rate: spent / days elapsed "
                "(at least 1). Used: (spent + reserved) / limit. At risk: forecast over the limit.",
                style="dim")
    return Fitted(cols, body, footer=footer,
                  title=(f"Budgets for {report.month} (as of "
                         f"{report.generated_at.strftime('%Y-%m-%d %H:%M UTC')})"),
                  empty=f"No budgets and no usage in {report.month}.", note=note)


def prices(items: Iterable[Price]) -> RenderableType:
    """Every price period; fits any width, one precision per price column."""
    shown = list(items)
    ins = money_column([price_from_units(p.input_units) for p in shown])
    outs = money_column([price_from_units(p.output_units) for p in shown])
    cached = money_column([None if p.cached_units is None else price_from_units(p.cached_units)
                           for p in shown])
    body = [[t(p.model), t(p.effective_from.strftime("%Y-%m-%d %H:%M:%S UTC")), ins[i],
             outs[i], cached[i]] for i, p in enumerate(shown)]
    cols = [Col("Model"), Col("From", min=10), Col("Input /1K", right=True, keep=True),
            Col("Output /1K", right=True, keep=True),
            Col("Cached input /1K", right=True, keep=True)]
    return Fitted(cols, body, empty="No prices set.")


@in_money_context
def budgets(states: Iterable[BudgetState]) -> RenderableType:
    """Every budget this month; fits any width, one precision per money column, totals."""
    shown = list(states)
    limits = money_column([s.limit for s in shown])
    spent = money_column([*(s.spent for s in shown), sum((s.spent for s in shown), Decimal(0))])
    held = money_column([*(s.held for s in shown), sum((s.held for s in shown), Decimal(0))])
    remaining = money_column([s.remaining for s in shown])
    body = [[t(s.project), t("hard" if s.hard else "soft"), limits[i], t(s.month), spent[i],
             held[i], remaining[i], Text(s.status, style=STATUS_STYLE.get(s.status, ""))]
            for i, s in enumerate(shown)]
    cols = [Col("Project"), Col("Budget", keep=True), Col("Limit", right=True, keep=True),
            Col("Month", keep=True), Col("Spent", right=True, keep=True),
            Col("Reserved", right=True, keep=True), Col("Remaining", right=True, keep=True),
            Col("Status", min=7)]
    footer = [Text("Total", style="bold"), Text(""), Text(""), Text(""), spent[-1], held[-1],
              Text(""), Text("")]
    return Fitted(cols, body, footer=footer, empty="No budgets set.")


@in_money_context
def usage(rows: Iterable[UsageRow]) -> RenderableType:
    """Recorded calls, in the order given (``ledger usage``: by call time): fits any width,
    names fold, one precision for the cost column, a totals row; no calls says so."""
    shown = list(rows)
    costs = money_column([*(r.cost for r in shown), sum((r.cost for r in shown), Decimal(0))])
    # The end user and tags columns appear when some call carries them (a ledger without
    # attribution lists its calls as before).
    users = any(r.user is not None for r in shown)
    tags = any(r.tags is not None for r in shown)
    who = [Col("User")] * users + [Col("Tags")] * tags
    body = [[t(r.at.strftime("%Y-%m-%d %H:%M:%S")), t(r.project),
             *([t(r.user or "")] * users), *([t(r.tags or "")] * tags), t(r.model),
             t(r.status + (" (estimated)" if r.estimated else "")), num(r.prompt_tokens),
             num(r.completion_tokens), costs[i], t((r.error or "")[:60])]
            for i, r in enumerate(shown)]
    cols = [Col("At (UTC)", min=10), Col("Project"), *who, Col("Model"), Col("Status", min=6),
            Col("In", right=True, keep=True), Col("Out", right=True, keep=True),
            Col("Cost", right=True, keep=True), Col("Error")]
    calls = f"{len(shown):,} call" + ("" if len(shown) == 1 else "s")
    footer = [Text("Total", style="bold"), t(calls), *(Text("") for _ in who), Text(""),
              Text(""), num(sum(r.prompt_tokens for r in shown)),
              num(sum(r.completion_tokens for r in shown)), costs[-1], Text("")]
    return Fitted(cols, body, footer=footer, empty="No calls recorded match these filters.")


@in_money_context
def calibration(rows: Iterable[Calibration]) -> RenderableType:
    """Estimated vs reported prompt tokens per model; fits any width."""
    body = [[t(c.model), num(c.calls), num(c.estimated_prompt_tokens),
             num(c.actual_prompt_tokens), num(c.ratio), num(c.mean_abs_error),
             Text(f"{(c.overestimated_share * 100).normalize():f}%", justify="right")]
            for c in rows]
    cols = [Col("Model"), *(Col(name, right=True, keep=True) for name in (
        "Calls", "Estimated", "Actual", "Actual/estimated", "Mean abs error",
        "Over-estimated"))]
    return Fitted(cols, body, title="Estimated vs reported prompt tokens",
                  empty="No calls with both an estimate and reported usage.")


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
