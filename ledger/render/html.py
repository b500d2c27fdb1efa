"""Self-contained HTML: a printable invoice, and the budget report with one chart per project.

No network: CSS is inline, charts are inline SVG. Every value from the ledger (project and
model names may contain ``<``, ``&``, quotes, SQL or formula characters) is escaped with
``html.escape``. Chart geometry is computed with ``Decimal`` (no floats anywhere).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from decimal import Decimal
from html import escape

from ..invoice import CreditNote, Invoice
from ..money import in_money_context, money_str
from ..reports import BudgetLine, BudgetReport, BudgetRow
from . import dollars, shown_status
from .axis import nice_ticks, tick_label
from .document import Document

CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1a1a1a;
       margin: 2rem auto; max-width: 60rem; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
h3 { font-size: 1rem; margin-top: 1.5rem; overflow-wrap: anywhere; }
.meta { color: #555; margin: 0 0 1.5rem; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: .35rem .6rem; border-bottom: 1px solid #ddd; text-align: left; }
th { background: #f4f4f4; font-weight: 600; }
td.n, th.n { text-align: right; white-space: nowrap; }
tfoot td { font-weight: 700; border-top: 2px solid #333; border-bottom: none; }
.note { color: #666; font-size: .85rem; margin-top: 1rem; }
.draft { color: #b00; font-weight: 700; letter-spacing: .1em; }
.ok { color: #137333; } .warning { color: #b06000; } .over { color: #b00020; font-weight: 700; }
.chart { margin: .5rem 0 1.5rem; } .chart svg { width: 100%; height: auto; }
table.report { font-size: .85rem; }
table.report th { white-space: normal; vertical-align: bottom; }
table.report th, table.report td { padding: .3rem .3rem; }
table.report .kind { display: block; color: #666; font-size: .8em; }
table.report td.name { overflow-wrap: anywhere; word-break: break-word; min-width: 6rem; }
@media (max-width: 44rem) {
  table.report, table.report tbody, table.report tfoot, table.report tr,
  table.report td { display: block; width: auto; }
  table.report thead { display: none; }
  table.report tr { border-bottom: 1px solid #ddd; padding: .4rem 0; }
  table.report td { border: none; padding: .1rem .2rem; text-align: right;
                    overflow-wrap: anywhere; }
  table.report td::before { content: attr(data-label); float: left; color: #555;
                            font-weight: 600; padding-right: 1rem; }
  table.report td.name { text-align: left; font-weight: 700; }
  table.report td.blank { display: none; }
  table.report .kind { display: inline; }
}
@media print { body { margin: 0; max-width: none; } .noprint { display: none; }
               h2 { break-after: avoid; } .chart { break-inside: avoid; } }
"""


def e(value: object) -> str:
    """Escape anything for HTML text and attribute values."""
    return escape("" if value is None else str(value), quote=True)


def _money(value: Decimal | None, dash: str = "&ndash;") -> str:
    return dash if value is None else e(dollars(value))


def _page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}"
            "</body>\n</html>\n")


# -- invoices and credit notes ---------------------------------------------------------------
DOC_CSS = """
.doc { overflow-wrap: anywhere; }
.parties { display: flex; flex-wrap: wrap; gap: 1.5rem 3rem; margin: 1rem 0; }
.parties > div { flex: 1 1 14rem; min-width: 0; }
.parties h3 { font-size: .8rem; text-transform: uppercase; letter-spacing: .08em; color: #666;
              margin: 0 0 .3rem; }
.parties p { margin: 0; white-space: pre-line; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
dl.meta dt { font-weight: 600; } dl.meta dd { margin: 0; min-width: 0; }
table.lines { table-layout: fixed; }
table.lines col.desc { width: 46%; } table.lines col.qty { width: 16%; }
table.lines col.price { width: 18%; } table.lines col.amount { width: 20%; }
td.desc { overflow-wrap: anywhere; word-break: break-word; }
td.n { overflow-wrap: anywhere; white-space: normal; }
tr.sub td { color: #555; font-size: .85rem; border-bottom: 1px dotted #eee; }
tr.sub td.desc { padding-left: 1.6rem; }
.dates { color: #666; font-size: .85rem; white-space: nowrap; }
tfoot tr td { font-weight: 400; border-top: none; } tfoot tr.grand td { font-weight: 700;
  border-top: 2px solid #333; }
.notes { color: #555; font-size: .8rem; }
@page { margin: 16mm 14mm; }
@media print {
  body { font-size: 10pt; }
  /* the header repeats on every page; the totals come once, after the last line (as a
     footer group they would repeat on every page), kept with it and together */
  thead { display: table-header-group; }
  tfoot { display: table-row-group; break-inside: avoid; break-before: avoid; }
  tr, tbody.item { break-inside: avoid; } .parties, dl.meta { break-inside: avoid; }
  .notes { break-inside: avoid; }
}
"""


def _doc_page(doc: Document, page: str = "doc") -> str:
    """The document as an ``<article>`` printed on pages named ``page`` (a CSS identifier),
    whose margins carry its own number and customer, and "Page i of N"."""
    header = f"{doc.number} \u00b7 {doc.customer}"
    page_css = ("@page " + page + " { @top-left { content: \"" + _css_string(header) + "\"; "
                "font-size: 8pt; color: #666; } @bottom-right { content: \"Page \" "
                "counter(page) \" of \" counter(pages); font-size: 8pt; color: #666; } }")
    return (f"<style>{DOC_CSS}{page_css}</style>\n<article class=\"doc\" "
            f"style=\"page: {page}\" data-number=\"{e(doc.number)}\">\n{_doc_body(doc)}"
            "</article>\n")


def _css_string(text: str) -> str:
    """``text`` inside a CSS double-quoted string: only letters, digits and a few safe
    characters stay; everything else is a CSS escape (so ``</style>`` cannot end the block)."""
    return "".join(ch if ch.isalnum() or ch in " -_.,:;" else f"\\{ord(ch):x} " for ch in text)


def _doc_body(doc: Document) -> str:
    meta = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in doc.meta)
    rows: list[str] = []
    for row in doc.rows:
        if not row.sub and rows:  # a line and its sub-lines: one group, never split
            rows.append("</tbody>\n<tbody class=\"item\">\n")
        if row.sub:
            rows.append(f"<tr class=\"sub\"><td class=\"desc\">{e(row.description)}</td>"
                        f"<td class=\"n\">{e(row.quantity)}</td>"
                        f"<td class=\"n\">{e(row.unit_price)}</td>"
                        f"<td class=\"n\">{e(row.amount)}</td></tr>\n")
        else:
            dates = f" <span class=\"dates\">{e(row.dates)}</span>" if row.dates else ""
            rows.append(f"<tr class=\"line\"><td class=\"desc\"><strong>{e(row.description)}"
                        f"</strong>{dates}</td><td class=\"n\">{e(row.quantity)}</td>"
                        f"<td class=\"n\"></td><td class=\"n\">{e(row.amount)}</td></tr>\n")
    if not doc.rows:
        rows.append(f"<tr><td colspan=\"4\">{e(doc.empty)}</td></tr>\n")
    totals = "".join(
        f"<tr class=\"{'grand' if i == len(doc.totals) - 1 else 'sum'}\"><td colspan=\"3\">"
        f"{e(k)}</td><td class=\"n\">{e(v)}</td></tr>\n" for i, (k, v) in enumerate(doc.totals))
    title = ("<h1><span class=\"draft\">DRAFT</span> invoice</h1>" if doc.draft
             else f"<h1>{e(doc.title)}</h1>")
    return (
        f"{title}\n<div class=\"parties\"><div class=\"seller\"><h3>From</h3><p>"
        f"{e(chr(10).join(doc.seller))}</p></div><div class=\"bill-to\"><h3>Bill to</h3><p>"
        f"{e(chr(10).join(doc.bill_to))}</p></div></div>\n"
        f"<dl class=\"meta\">{meta}</dl>\n"
        "<table class=\"lines\"><colgroup><col class=\"desc\"><col class=\"qty\">"
        "<col class=\"price\"><col class=\"amount\"></colgroup>\n"
        "<thead><tr><th>Description</th><th class=\"n\">Quantity</th>"
        "<th class=\"n\">Unit price</th><th class=\"n\">Amount</th></tr></thead>\n"
        "<tbody class=\"item\">\n" + "".join(rows) + "</tbody>\n<tfoot>\n" + totals
        + "</tfoot>\n</table>\n"
        + "".join(f"<p class=\"notes\">{e(n)}</p>\n" for n in doc.notes))


def invoice(inv: Invoice) -> str:
    """One invoice as a self-contained, printable HTML page (A4 or Letter)."""
    from .document import of_invoice

    return _page(f"{inv.label} {inv.project} {inv.month}", _doc_page(of_invoice(inv)))


def credit_note(note: CreditNote) -> str:
    """A credit note as a self-contained, printable HTML page."""
    from .document import of_credit_note

    return _page(f"{note.number} {note.project} {note.month}", _doc_page(of_credit_note(note)))


def invoices(invs: Iterable[Invoice], month: str) -> str:
    """Several invoices in one file; printed, each starts a page, and its pages carry its own
    number and customer ("Page i of N" counts the file's pages)."""
    from .document import of_invoice

    body = "".join(f"<section style=\"break-after: page\">"
                   f"{_doc_page(of_invoice(inv), f'doc{i}')}</section>\n"
                   for i, inv in enumerate(invs, start=1))
    return _page(f"Invoices {month}", body)


def day_of_month(elapsed: Decimal) -> str:
    """The day of the month as a person says it: 30 (never "3E+1"), 1.2241 -> 2 (day 2 has
    begun once 1.2241 days have elapsed)."""
    from decimal import ROUND_CEILING

    return format(max(elapsed, Decimal(1)).to_integral_value(rounding=ROUND_CEILING), "f")


# -- budget report -----------------------------------------------------------------------------
def budget_report(report: BudgetReport) -> str:
    """The budget report: a summary table and, per project, daily spend against its budget."""
    rows = []
    for r in report.rows:
        budget = "none" if r.limit is None else ("hard" if r.hard else "soft")
        used = "&ndash;" if r.percent_used is None else f"{e(r.percent_used)}%"
        status, tone = shown_status(r.status, r.forecast_over)
        cells = [_cell("Project", e(r.project), "name"),
                 _cell("Limit", f"{_money(r.limit)} <span class=\"kind\">{e(budget)}</span>"),
                 _cell("Spent", _money(r.spent)), _cell("Reserved", _money(r.reserved)),
                 _cell("Remaining", _money(r.remaining)), _cell("Used", used),
                 _cell("Burn / day", _money(r.burn_rate_per_day)),
                 _cell("Forecast", _money(r.forecast)),
                 _cell("Status", e(status), f"status {e(tone)}")]
        rows.append(f"<tr>{''.join(cells)}</tr>\n")
    if not report.rows:
        rows.append("<tr><td colspan=\"9\" class=\"empty\">No budgets and no usage this "
                    "month.</td></tr>\n")
    charts = "".join(
        f"<h2>{e(r.project)}</h2>\n<div class=\"chart\">{chart(r, report.days_in_month)}</div>\n"
        for r in report.rows)
    body = (
        f"<h1>Budget report {e(report.month)}</h1>\n"
        f"<p class=\"meta\">As of {e(report.generated_at.strftime('%Y-%m-%d %H:%M UTC'))} "
        f"&middot; day {e(day_of_month(report.days_elapsed))} of {report.days_in_month}</p>\n"
        "<table class=\"report\">\n<thead><tr><th>Project</th><th class=\"n\">Limit</th>"
        "<th class=\"n\">Spent</th><th class=\"n\">Reserved</th><th class=\"n\">Remaining"
        "</th><th class=\"n\">Used</th><th class=\"n\">Burn / day</th><th class=\"n\">"
        "Forecast</th><th>Status</th></tr></thead>\n<tbody>\n" + "".join(rows) +
        "</tbody>\n<tfoot><tr>" + _cell("", "Total", "name")
        + "<td class=\"n blank\"></td>" + _cell("Spent", _money(report.spent))
        + _cell("Reserved", _money(report.reserved))
        + "<td class=\"n blank\" colspan=\"3\"></td>" + _cell("Forecast", _money(report.forecast))
        + "<td class=\"blank\"></td></tr></tfoot>\n</table>\n"
        "<p class=\"note\">Used = (spent + reserved) / limit; warning from 80%. Burn rate = "
        "spent / days elapsed in the month (at least one). Forecast = spent + burn rate "
        "&times; days left: a straight-line projection of the month-to-date spend. At risk: "
        "under its limit now, but forecast over it.</p>\n"
        + charts + _budget_section(report.budgets) + _groups_section(report))
    return _page(f"Budget report {report.month}", body)


def _groups_section(report: BudgetReport) -> str:
    """``--by user|tag|model``: the month's spend per project and key."""
    if report.by is None:
        return ""
    none = {"user": "(no user)", "tag": "(no tag)", "model": "&ndash;"}[report.by]
    rows = "".join(
        "<tr>" + _cell("Project", e(g.project), "name")
        + _cell(report.by.capitalize(), none if g.key is None else e(g.key), "name")
        + _cell("Calls", e(f"{g.calls:,}")) + _cell("In", e(f"{g.prompt_tokens:,}"))
        + _cell("Out", e(f"{g.completion_tokens:,}")) + _cell("Spent", _money(g.spent))
        + "</tr>\n" for g in report.groups) or (
        "<tr><td colspan=\"6\" class=\"empty\">No charged calls this month.</td></tr>\n")
    note = ("<p class=\"note\">A call with several tags counts under each.</p>\n"
            if report.by == "tag" else "")
    return (f"<h2>Spend by {e(report.by)}</h2>\n<table class=\"report groups\">\n<thead><tr>"
            f"<th>Project</th><th>{e(report.by.capitalize())}</th><th class=\"n\">Calls</th>"
            "<th class=\"n\">In</th><th class=\"n\">Out</th><th class=\"n\">Spent</th></tr>"
            "</thead>\n<tbody>\n" + rows + "</tbody>\n</table>\n" + note)


def _budget_section(lines: tuple[BudgetLine, ...]) -> str:
    """Every budget in its window, then one chart per hot budget (80% used, or forecast over
    its limit) that the project charts above do not already draw (a project's month)."""
    if not lines:
        return ""
    rows = []
    for b in lines:
        status, tone = shown_status(b.status, b.forecast_over)
        kind = "hard" if b.hard else "soft"
        cells = [_cell("Budget", f"{e(b.budget.project)} <span class=\"kind\">{e(b.scope)}"
                                 "</span>", "name"),
                 _cell("Window", f"{e(b.window)} <span class=\"kind\">{e(b.budget.period)}"
                                 "</span>", "n"),
                 _cell("Limit", f"{_money(b.limit)} <span class=\"kind\">{e(kind)}</span>"),
                 _cell("Spent", _money(b.spent)), _cell("Reserved", _money(b.reserved)),
                 _cell("Remaining", _money(b.remaining)),
                 _cell("Used", f"{e(b.percent_used)}%"), _cell("Forecast", _money(b.forecast)),
                 _cell("Status", e(status), f"state {e(tone)}")]
        rows.append(f"<tr>{''.join(cells)}</tr>\n")
    hot = [b for b in lines if b.hot and not b.is_project_month]
    drawn = [b for b in hot if b.series]
    charts = "".join(
        f"<h3>{e(b.label)}</h3>\n<div class=\"chart budget\">{budget_chart(b)}</div>\n"
        for b in drawn)
    if len(drawn) < len(hot):
        charts += (f"<p class=\"note\">{len(hot) - len(drawn):,} more hot budgets are listed "
                   "above but not charted (the hottest are).</p>\n")
    return (
        "<h2>Every budget</h2>\n<table class=\"report budgets\">\n<thead><tr><th>Budget</th>"
        "<th class=\"n\">Window</th><th class=\"n\">Limit</th><th class=\"n\">Spent</th>"
        "<th class=\"n\">Reserved</th><th class=\"n\">Remaining</th><th class=\"n\">Used</th>"
        "<th class=\"n\">Forecast</th><th>Status</th></tr></thead>\n<tbody>\n"
        + "".join(rows) + "</tbody>\n</table>\n"
        "<p class=\"note\">Each budget in its window at the report's instant (a day, an ISO "
        "week from Monday, a month, or the whole life of a total budget). A chart for each hot "
        "budget: 80% used, or forecast over its limit.</p>\n" + charts)


def _cell(label: str, html: str, cls: str = "n") -> str:
    """A report cell; ``data-label`` names it in the stacked layout of narrow screens."""
    return f"<td class=\"{cls}\" data-label=\"{e(label)}\">{html}</td>"


W, H = Decimal(720), Decimal(240)
LEFT, RIGHT, TOP, BOTTOM = Decimal(70), Decimal(20), Decimal(15), Decimal(30)


def _n(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.1'))}"


@in_money_context
def chart(row: BudgetRow, days: int) -> str:
    """Inline SVG: daily spend (bars), cumulative spend (line), the budget (dashed line) and
    the forecast to the month end (dotted)."""
    return _chart(f"Spend of {row.project} against its budget",
                  [d.amount for d in row.daily], [d.day.isoformat() for d in row.daily], days,
                  row.limit, row.forecast, Decimal(0),
                  [(Decimal(day) - Decimal("0.5"), str(day)) for day in (1, 8, 15, 22, days)],
                  "daily spend (bars)")


@in_money_context
def budget_chart(line: BudgetLine) -> str:
    """Inline SVG of one budget's window: spend per hour (a day window) or per day (bars),
    cumulative spend (line), its limit (dashed) and the forecast to the window's end
    (dotted; in the warning colour when it ends over the limit)."""
    series = line.series
    amounts = [x.amount for x in series]
    base = line.spent - sum(amounts, Decimal(0))  # a total budget: spend before the chart
    hourly = line.bucket == "hour"
    if line.start is not None and line.end is not None:
        slots = int((line.end - line.start) / (HOUR if hourly else DAY))
    else:
        slots = len(series)
    slots = max(slots, len(series), 1)
    titles = [x.start.strftime("%H:00" if hourly else "%Y-%m-%d") for x in series]
    if hourly:
        marks = [(Decimal(h), f"{h:02d}h") for h in (0, 6, 12, 18, 24)]
    elif line.budget.period == "week" and line.start is not None:
        marks = [(Decimal(i) + Decimal("0.5"), (line.start + DAY * i).strftime("%a"))
                 for i in range(7)]
    elif line.start is not None:
        marks = [(Decimal(d) - Decimal("0.5"), str(d)) for d in (1, 8, 15, 22, slots)]
    else:
        marks = [(Decimal("0.5"), titles[0][5:]), (Decimal(slots) - Decimal("0.5"),
                                                   titles[-1][5:])] if titles else []
    return _chart(f"Spend of {line.label} against its budget", amounts, titles, slots,
                  line.limit, line.forecast, base, marks,
                  "hourly spend (bars)" if hourly else "daily spend (bars)")


HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def _chart(title: str, amounts: list[Decimal], bar_titles: list[str], slots: int,
           limit: Decimal | None, forecast: Decimal, base: Decimal,
           marks: list[tuple[Decimal, str]], bars: str) -> str:
    """The chart: ``amounts`` per slot from the first of ``slots`` (bars), their running
    total from ``base`` (line), the forecast to the last slot (dotted), ``limit`` (dashed),
    x labels at ``marks`` (slot positions)."""
    cumulative: list[Decimal] = []
    running = base
    for amount in amounts:
        running += amount
        cumulative.append(running)
    ticks = nice_ticks(max([limit or Decimal(0), running, forecast, *amounts]))
    top, labels = ticks[-1], [tick_label(t, ticks[1]) for t in ticks]
    left = max(LEFT, Decimal(7 * max(len(label) for label in labels) + 12))
    pw, ph = W - left - RIGHT, H - TOP - BOTTOM
    step = pw / slots
    over = limit is not None and forecast > limit
    trend = "#b06000" if over else "#0b57d0"

    def x(slot: Decimal) -> Decimal:
        return left + step * slot

    def y(value: Decimal) -> Decimal:
        return TOP + ph - ph * value / top

    parts = [f"<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" role=\"img\" "
             f"aria-label=\"{e(title)}\"><title>{e(title)}</title>",
             f"<rect x=\"{left}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"#fafafa\" "
             "stroke=\"#ccc\"/>"]
    for value, label in zip(ticks, labels, strict=True):  # y grid and labels: round ticks
        parts.append(f"<line x1=\"{left}\" x2=\"{left + pw}\" y1=\"{_n(y(value))}\" "
                     f"y2=\"{_n(y(value))}\" stroke=\"#e5e5e5\"/>"
                     f"<text x=\"{left - 6}\" y=\"{_n(y(value) + 4)}\" font-size=\"11\" "
                     f"text-anchor=\"end\" fill=\"#666\" class=\"tick\">{e(label)}"
                     "</text>")
    for where, label in marks:  # x labels
        parts.append(f"<text x=\"{_n(x(where))}\" y=\"{H - 10}\" "
                     f"font-size=\"11\" text-anchor=\"middle\" fill=\"#666\">{e(label)}</text>")
    for i, amount in enumerate(amounts):  # spend per slot
        if amount > 0:
            top_y = y(amount)
            parts.append(
                f"<rect x=\"{_n(x(Decimal(i)) + step / 8)}\" y=\"{_n(top_y)}\" "
                f"width=\"{_n(step * 3 / 4)}\" height=\"{_n(TOP + ph - top_y)}\" "
                f"fill=\"#9ec5fe\"><title>{e(bar_titles[i])}: ${e(money_str(amount))}"
                "</title></rect>")
    if cumulative:
        points = " ".join(f"{_n(x(Decimal(i + 1)))},{_n(y(v))}" for i, v in enumerate(cumulative))
        parts.append(f"<polyline points=\"{_n(x(Decimal(0)))},{_n(y(base))} {points}\" "
                     "fill=\"none\" stroke=\"#0b57d0\" stroke-width=\"2\"/>")
        if len(cumulative) < slots:
            parts.append(
                f"<line x1=\"{_n(x(Decimal(len(cumulative))))}\" y1=\"{_n(y(running))}\" "
                f"x2=\"{_n(x(Decimal(slots)))}\" y2=\"{_n(y(forecast))}\" stroke=\"{trend}\" "
                "stroke-width=\"1.5\" stroke-dasharray=\"2 4\" class=\"forecast\">"
                f"<title>forecast: ${e(money_str(forecast))}</title></line>")
    if limit is not None:
        parts.append(
            f"<line x1=\"{left}\" x2=\"{left + pw}\" y1=\"{_n(y(limit))}\" "
            f"y2=\"{_n(y(limit))}\" stroke=\"#b00020\" stroke-width=\"1.5\" "
            f"stroke-dasharray=\"6 4\"><title>budget: ${e(money_str(limit))}</title></line>"
            f"<text x=\"{left + pw - 4}\" y=\"{_n(y(limit) - 5)}\" font-size=\"11\" "
            f"text-anchor=\"end\" fill=\"#b00020\">budget ${e(money_str(limit))}</text>")
    parts.append(f"<text x=\"{left + 6}\" y=\"{TOP + 14}\" font-size=\"11\" fill=\"#0b57d0\">"
                 f"cumulative spend (line), {bars}, forecast (dotted)</text></svg>")
    return "".join(parts)
