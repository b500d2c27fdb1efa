"""Self-contained HTML: a printable invoice, and the budget report with one chart per project.

No network: CSS is inline, charts are inline SVG. Every value from the ledger (project and
model names may contain ``<``, ``&``, quotes, SQL or formula characters) is escaped with
``html.escape``. Chart geometry is computed with ``Decimal`` (no floats anywhere).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from html import escape

from ..invoice import Invoice
from ..money import in_money_context, money_str
from ..reports import BudgetReport, BudgetRow
from . import dollars

CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1a1a1a;
       margin: 2rem auto; max-width: 60rem; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
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


# -- invoices ----------------------------------------------------------------------------------
def invoice(inv: Invoice) -> str:
    """One invoice as a self-contained, printable HTML page."""
    return _page(f"{inv.label} {inv.project} {inv.month}", _invoice_body(inv))


def invoices(invs: Iterable[Invoice], month: str) -> str:
    """Several invoices on one page (each starts a new printed page)."""
    body = "".join(f"<section style=\"break-after: page\">{_invoice_body(i)}</section>\n"
                   for i in invs)
    return _page(f"Invoices {month}", body)


def _invoice_body(inv: Invoice) -> str:
    status = ("<span class=\"draft\">DRAFT &ndash; not issued</span>" if inv.draft
              else f"Issued {e(inv.issued_at.strftime('%Y-%m-%d %H:%M UTC'))}")
    rows = []
    for line in inv.lines:
        rows.append(
            "<tr>"
            f"<td>{e(line.description)}</td>"
            f"<td class=\"n\">{_money(line.input_per_1k)}</td>"
            f"<td class=\"n\">{_money(line.output_per_1k)}</td>"
            f"<td class=\"n\">{line.calls:,}</td>"
            f"<td class=\"n\">{line.prompt_tokens:,}</td>"
            f"<td class=\"n\">{line.completion_tokens:,}</td>"
            f"<td class=\"n\" title=\"exact: {e(money_str(line.exact_amount))}\">"
            f"{_money(line.amount)}</td>"
            "</tr>\n")
    if not inv.lines:
        rows.append("<tr><td colspan=\"7\">No usage this month.</td></tr>\n")
    return (
        f"<h1>Invoice {e(inv.label)}</h1>\n"
        f"<p class=\"meta\">Project <strong>{e(inv.project)}</strong> &middot; "
        f"month {e(inv.month)} &middot; currency {e(inv.currency)} &middot; {status}</p>\n"
        "<table>\n<thead><tr><th>Description</th><th class=\"n\">Input per 1K</th>"
        "<th class=\"n\">Output per 1K</th><th class=\"n\">Calls</th>"
        "<th class=\"n\">Tokens in</th><th class=\"n\">Tokens out</th>"
        "<th class=\"n\">Amount</th></tr></thead>\n<tbody>\n" + "".join(rows) +
        "</tbody>\n<tfoot><tr><td colspan=\"6\">Total</td>"
        f"<td class=\"n\">{_money(inv.total)} {e(inv.currency)}</td></tr></tfoot>\n</table>\n"
        "<p class=\"note\">One line per model and unit price. Each amount is the exact cost "
        "of its calls rounded half-even to the cent; the total is the sum of the lines. "
        "Adjustments bill usage recorded after an earlier month was invoiced.</p>\n")


# -- budget report -----------------------------------------------------------------------------
def budget_report(report: BudgetReport) -> str:
    """The budget report: a summary table and, per project, daily spend against its budget."""
    rows = []
    for r in report.rows:
        budget = "none" if r.limit is None else ("hard" if r.hard else "soft")
        rows.append(
            f"<tr><td>{e(r.project)}</td><td class=\"n\">{_money(r.limit)} {e(budget)}</td>"
            f"<td class=\"n\">{_money(r.spent)}</td><td class=\"n\">{_money(r.reserved)}</td>"
            f"<td class=\"n\">{_money(r.remaining)}</td>"
            f"<td class=\"n\">{'&ndash;' if r.percent_used is None else e(r.percent_used)}"
            f"{'' if r.percent_used is None else '%'}</td>"
            f"<td class=\"n\">{_money(r.burn_rate_per_day)}</td>"
            f"<td class=\"n\">{_money(r.forecast)}</td>"
            f"<td class=\"{e(r.status)}\">{e(r.status)}</td></tr>\n")
    if not report.rows:
        rows.append("<tr><td colspan=\"9\">No budgets and no usage this month.</td></tr>\n")
    charts = "".join(
        f"<h2>{e(r.project)}</h2>\n<div class=\"chart\">{chart(r, report.days_in_month)}</div>\n"
        for r in report.rows)
    body = (
        f"<h1>Budget report {e(report.month)}</h1>\n"
        f"<p class=\"meta\">As of {e(report.generated_at.strftime('%Y-%m-%d %H:%M UTC'))} "
        f"&middot; day {e(report.days_elapsed.normalize())} of {report.days_in_month}</p>\n"
        "<table>\n<thead><tr><th>Project</th><th class=\"n\">Limit</th><th class=\"n\">Spent"
        "</th><th class=\"n\">Reserved</th><th class=\"n\">Remaining</th><th class=\"n\">Used"
        "</th><th class=\"n\">Burn / day</th><th class=\"n\">Forecast</th><th>Status</th>"
        "</tr></thead>\n<tbody>\n" + "".join(rows) +
        f"</tbody>\n<tfoot><tr><td>Total</td><td></td><td class=\"n\">{_money(report.spent)}"
        f"</td><td class=\"n\">{_money(report.reserved)}</td><td colspan=\"3\"></td>"
        f"<td class=\"n\">{_money(report.forecast)}</td><td></td></tr></tfoot>\n</table>\n"
        "<p class=\"note\">Used = (spent + reserved) / limit; warning from 80%. Burn rate = "
        "spent / days elapsed in the month (at least one). Forecast = spent + burn rate "
        "&times; days left: a straight-line projection of the month-to-date spend.</p>\n"
        + charts)
    return _page(f"Budget report {report.month}", body)


W, H = Decimal(720), Decimal(240)
LEFT, RIGHT, TOP, BOTTOM = Decimal(70), Decimal(20), Decimal(15), Decimal(30)


def _n(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.1'))}"


@in_money_context
def chart(row: BudgetRow, days: int) -> str:
    """Inline SVG: daily spend (bars), cumulative spend (line), the budget (dashed line) and
    the forecast to the month end (dotted)."""
    cumulative: list[Decimal] = []
    running = Decimal(0)
    for d in row.daily:
        running += d.amount
        cumulative.append(running)
    top = max([row.limit or Decimal(0), running, row.forecast,
               *(d.amount for d in row.daily), Decimal("0.01")]) * Decimal("1.1")
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    step = pw / days

    def x(day: Decimal) -> Decimal:
        return LEFT + step * day

    def y(value: Decimal) -> Decimal:
        return TOP + ph - ph * value / top

    parts = [f"<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" role=\"img\" "
             f"aria-label=\"Spend of {e(row.project)} against its budget\">"
             f"<title>Spend of {e(row.project)} against its budget</title>",
             f"<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"#fafafa\" "
             "stroke=\"#ccc\"/>"]
    for i in range(5):  # y grid and labels
        value = top * i / 4
        parts.append(f"<line x1=\"{LEFT}\" x2=\"{LEFT + pw}\" y1=\"{_n(y(value))}\" "
                     f"y2=\"{_n(y(value))}\" stroke=\"#e5e5e5\"/>"
                     f"<text x=\"{LEFT - 6}\" y=\"{_n(y(value) + 4)}\" font-size=\"11\" "
                     f"text-anchor=\"end\" fill=\"#666\">${e(value.quantize(Decimal('0.01')))}"
                     "</text>")
    for day in (1, 8, 15, 22, days):  # x labels
        parts.append(f"<text x=\"{_n(x(Decimal(day) - Decimal('0.5')))}\" y=\"{H - 10}\" "
                     f"font-size=\"11\" text-anchor=\"middle\" fill=\"#666\">{day}</text>")
    for i, d in enumerate(row.daily):  # daily spend
        if d.amount > 0:
            top_y = y(d.amount)
            parts.append(
                f"<rect x=\"{_n(x(Decimal(i)) + step / 8)}\" y=\"{_n(top_y)}\" "
                f"width=\"{_n(step * 3 / 4)}\" height=\"{_n(TOP + ph - top_y)}\" "
                f"fill=\"#9ec5fe\"><title>{e(d.day.isoformat())}: ${e(money_str(d.amount))}"
                "</title></rect>")
    if cumulative:
        points = " ".join(f"{_n(x(Decimal(i + 1)))},{_n(y(v))}" for i, v in enumerate(cumulative))
        parts.append(f"<polyline points=\"{_n(x(Decimal(0)))},{_n(y(Decimal(0)))} {points}\" "
                     "fill=\"none\" stroke=\"#0b57d0\" stroke-width=\"2\"/>")
        if len(cumulative) < days:
            parts.append(
                f"<line x1=\"{_n(x(Decimal(len(cumulative))))}\" y1=\"{_n(y(running))}\" "
                f"x2=\"{_n(x(Decimal(days)))}\" y2=\"{_n(y(row.forecast))}\" stroke=\"#0b57d0\" "
                "stroke-width=\"1.5\" stroke-dasharray=\"2 4\"><title>forecast: $"
                f"{e(money_str(row.forecast))}</title></line>")
    if row.limit is not None:
        parts.append(
            f"<line x1=\"{LEFT}\" x2=\"{LEFT + pw}\" y1=\"{_n(y(row.limit))}\" "
            f"y2=\"{_n(y(row.limit))}\" stroke=\"#b00020\" stroke-width=\"1.5\" "
            f"stroke-dasharray=\"6 4\"><title>budget: ${e(money_str(row.limit))}</title></line>"
            f"<text x=\"{LEFT + pw - 4}\" y=\"{_n(y(row.limit) - 5)}\" font-size=\"11\" "
            f"text-anchor=\"end\" fill=\"#b00020\">budget ${e(money_str(row.limit))}</text>")
    parts.append(f"<text x=\"{LEFT + 6}\" y=\"{TOP + 14}\" font-size=\"11\" fill=\"#0b57d0\">"
                 "cumulative spend (line), daily spend (bars), forecast (dotted)</text></svg>")
    return "".join(parts)
