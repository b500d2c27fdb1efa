"""CSV for machines and spreadsheets.

Text cells (project and model names, errors) are written as data, never as formulas: a cell
gets a leading ``'`` (OWASP's advice against CSV injection) when a spreadsheet could read a
formula anywhere in it, not only at its first character. A spreadsheet that splits the cell
again on ``,`` ``;`` tab ``|`` CR or LF (a "text to columns", an import with another
delimiter) sees every piece as a cell of its own, so a piece that starts, after spaces and
quotes, with ``=``, ``+``, ``-``, ``@`` (or their full-width forms) is a formula; so is a
cell that starts with a tab, CR or LF. A cell that is exactly a decimal number (``-0.50``)
is a number, not a formula, and is left as it is; numbers the ledger writes itself (money
as exact decimals, token counts) are never altered. No total rows: one record per line.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import IO, TYPE_CHECKING

from ..money import money_str, price_from_units

if TYPE_CHECKING:
    from ..budget import BudgetState
    from ..invoice import CreditNote, Invoice
    from ..pricing import Price
    from ..reports import BudgetReport, Calibration, UsageRow

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")

#: Where a spreadsheet may split a cell again (issue 9 item 19).
SEPARATORS = ",;\t|\r\n"

#: A formula anywhere: at the start of the cell or of any piece after a separator, once the
#: spaces (any Unicode space) and quotes in front of it are skipped.
_FORMULA_ANYWHERE = re.compile(
    "(?:^|[" + re.escape(SEPARATORS) + "])[\\s\"']*[=+\\-@\uff1d\uff0b\uff0d\uff20]")

#: A plain decimal number (``-0.50``, ``+3``, ``12.``): a value, never a formula.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)

Cell = str | int | bool | Decimal | datetime | date | None


def is_formula(value: str) -> bool:
    """Could a spreadsheet read ``value``, or a piece of it after a separator, as a formula?"""
    if _DECIMAL.fullmatch(value):
        return False
    return value.startswith(FORMULA_STARTS) or _FORMULA_ANYWHERE.search(value) is not None


def safe_text(value: str) -> str:
    """``value`` made safe to open in a spreadsheet (a leading ``'`` if it could be a formula)."""
    return "'" + value if is_formula(value) else value


def cell(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return money_str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return safe_text(str(value))


def write_rows(out: IO[str], header: Sequence[str], rows: Iterable[Sequence[Cell]]) -> int:
    """Write a header and rows (streamed); returns how many rows."""
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180; also quotes a bare CR in a cell
    writer.writerow(header)
    count = 0
    for row in rows:
        writer.writerow([cell(v) for v in row])
        count += 1
    return count


INVOICE_HEADER = ("invoice", "number", "project", "month", "currency", "issued_at", "kind",
                  "model", "adjusts_month", "input_per_1k", "output_per_1k",
                  "cached_input_per_1k", "calls", "prompt_tokens", "completion_tokens",
                  "cached_tokens", "exact_amount", "amount", "invoice_total")


def invoices(out: IO[str], invs: Iterable[Invoice]) -> int:
    """One row per invoice line (an invoice without lines gets one row with its total)."""

    def rows() -> Iterable[Sequence[Cell]]:
        for inv in invs:
            head: list[Cell] = [inv.label, inv.number, inv.project, inv.month, inv.currency,
                                inv.issued_at]
            if not inv.lines:
                yield [*head, "", "", "", "", "", "", 0, 0, 0, 0, Decimal("0.00"),
                       Decimal("0.00"), inv.total]
            for line in inv.lines:
                yield [*head, line.kind, line.model, line.adjusts_month, line.input_per_1k,
                       line.output_per_1k, line.cached_input_per_1k, line.calls,
                       line.prompt_tokens, line.completion_tokens, line.cached_tokens,
                       line.exact_amount, line.amount, inv.total]

    return write_rows(out, INVOICE_HEADER, rows())


CREDIT_NOTE_HEADER = ("credit_note", "invoice", "project", "month", "currency", "issued_at",
                      "reason", "kind", "model", "adjusts_month", "calls", "prompt_tokens",
                      "completion_tokens", "cached_tokens", "amount", "subtotal", "tax",
                      "total")


def credit_note(out: IO[str], note: CreditNote) -> int:
    """One row per credited line (amounts negative: credited); totals on every row."""
    head: list[Cell] = [note.number, note.invoice_number, note.project, note.month,
                        note.currency, note.issued_at, note.reason]
    tail: list[Cell] = [note.subtotal, note.tax, note.total]
    rows: list[list[Cell]] = [
        [*head, line.kind, line.model, line.adjusts_month, line.calls, line.prompt_tokens,
         line.completion_tokens, line.cached_tokens, line.amount.copy_negate(), *tail]
        for line in note.lines] or [[*head, "", "", "", 0, 0, 0, 0, Decimal("0.00"), *tail]]
    return write_rows(out, CREDIT_NOTE_HEADER, rows)


REPORT_HEADER = ("month", "project", "budget", "limit", "spent", "reserved", "remaining",
                 "percent_used", "burn_rate_per_day", "forecast", "forecast_over_limit",
                 "status")


def budget_report(out: IO[str], report: BudgetReport) -> int:
    return write_rows(out, REPORT_HEADER, (
        [report.month, r.project, r.budget_kind, r.limit, r.spent, r.reserved, r.remaining,
         r.percent_used, r.burn_rate_per_day, r.forecast, r.forecast_over, r.status]
        for r in report.rows))


def usage(out: IO[str], rows: Iterable[UsageRow]) -> int:
    """The hot path of ``ledger usage --format csv`` (millions of rows): cells are converted
    by type directly (the csv module writes ints as digits and None as an empty cell)."""
    from ..reports import UsageRow

    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180; also quotes a bare CR in a cell
    writer.writerow(UsageRow.FIELDS)
    count = 0
    for r in rows:
        writer.writerow((
            r.id, r.at.isoformat(), safe_text(r.project), r.month, safe_text(r.model), r.status,
            "true" if r.estimated else "false", r.prompt_tokens, r.completion_tokens,
            r.cached_tokens, r.est_prompt_tokens, money_str(r.input_per_1k),
            money_str(r.output_per_1k),
            None if r.cached_input_per_1k is None else money_str(r.cached_input_per_1k),
            money_str(r.cost), r.http_status, None if r.error is None else safe_text(r.error),
            None if r.call_id is None else safe_text(r.call_id), r.reasoning_tokens,
            None if r.user is None else safe_text(r.user),
            None if r.tags is None else safe_text(r.tags)))
        count += 1
    return count


def calibration(out: IO[str], rows: Iterable[Calibration]) -> int:
    return write_rows(out, ("model", "calls", "estimated_prompt_tokens", "actual_prompt_tokens",
                            "ratio", "mean_abs_error", "overestimated_share"), (
        [c.model, c.calls, c.estimated_prompt_tokens, c.actual_prompt_tokens, c.ratio,
         c.mean_abs_error, c.overestimated_share] for c in rows))


def prices(out: IO[str], items: Iterable[Price]) -> int:
    return write_rows(out, ("model", "effective_from", "input_per_1k", "output_per_1k",
                            "cached_input_per_1k"), (
        [p.model, p.effective_from, price_from_units(p.input_units),
         price_from_units(p.output_units),
         None if p.cached_units is None else price_from_units(p.cached_units)]
        for p in items))


def budgets(out: IO[str], states: Iterable[BudgetState]) -> int:
    return write_rows(out, ("project", "budget", "limit", "month", "spent", "reserved",
                            "remaining", "status"), (
        [s.project, "hard" if s.hard else "soft", s.limit, s.month, s.spent, s.held,
         s.remaining, s.status] for s in states))
