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
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import IO, TYPE_CHECKING, Any

from ..money import money_str, price_from_units, units_str

if TYPE_CHECKING:
    from ..budget import BudgetState
    from ..invoice import CreditNote, Invoice, InvoiceLine
    from ..pricing import Price
    from ..reports import BudgetLine, BudgetReport, Calibration, UsageRecord, UsageRow
    from ..webhook import AlertLike

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


#: Text that provably cannot be a formula: its first character is no space, quote, formula
#: start or separator, and no separator follows (so no piece starts anywhere else). Such text
#: is what :func:`safe_text` returns unchanged; anything else goes through ``safe_text``.
_PLAIN = re.compile("[^\\s\"'=+\\-@\uff1d\uff0b\uff0d\uff20" + re.escape(SEPARATORS) + "]"
                    "[^" + re.escape(SEPARATORS) + "]*")


def fast_safe_text(value: str) -> str:
    """:func:`safe_text`, with one precompiled match for the common case of plain text."""
    return value if _PLAIN.fullmatch(value) else safe_text(value)


#: Plain text (as :data:`_PLAIN`) that the csv module would not quote either (no ``"``): a
#: cell written exactly as it is.
_PLAIN_CELL = re.compile("[^\\s\"'=+\\-@\uff1d\uff0b\uff0d\uff20" + re.escape(SEPARATORS)
                         + "][^\"" + re.escape(SEPARATORS) + "]*")


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
                  "group", "model", "adjusts_month", "input_per_1k", "output_per_1k",
                  "cached_input_per_1k", "calls", "prompt_tokens", "completion_tokens",
                  "cached_tokens", "exact_amount", "amount", "invoice_total")


def invoices(out: IO[str], invs: Iterable[Invoice]) -> int:
    """One row per invoice line (an invoice without lines gets one row with its total)."""

    def rows() -> Iterable[Sequence[Cell]]:
        for inv in invs:
            head: list[Cell] = [inv.label, inv.number, inv.project, inv.month, inv.currency,
                                inv.issued_at]
            if not inv.lines:
                yield [*head, "", "", "", "", "", "", "", 0, 0, 0, 0, Decimal("0.00"),
                       Decimal("0.00"), inv.total]
            for line in inv.lines:
                yield [*head, line.kind, _group(inv, line), line.model, line.adjusts_month,
                       line.input_per_1k,
                       line.output_per_1k, line.cached_input_per_1k, line.calls,
                       line.prompt_tokens, line.completion_tokens, line.cached_tokens,
                       line.exact_amount, line.amount, inv.total]

    return write_rows(out, INVOICE_HEADER, rows())


def _group(inv: Invoice, line: InvoiceLine) -> str:
    """A split line's end user or tag (``--by``), as the document names it; else empty."""
    from .document import group_label

    return "" if inv.by is None else group_label(inv.by, line.group)


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


#: What makes the csv module quote a cell (``QUOTE_MINIMAL``, delimiter ``,``, quote ``"``,
#: line terminator CR LF): any of these characters in it.
_NEEDS_QUOTES = re.compile('[,"\r\n]')


def csv_field(text: str) -> str:
    """``text`` as the csv module writes it in a cell of a row of several cells."""
    if _NEEDS_QUOTES.search(text) is None:
        return text
    return '"' + text.replace('"', '""') + '"'


def _bounded(make: Callable[[Any], str]) -> tuple[Callable[[Any], str | None],
                                                  Callable[[Any], str]]:
    """A cache of ``make`` holding at most ``ExactStrings.LIMIT`` values (full, it starts
    again): its lookup (None on a miss) and its miss handler (computes, keeps, returns)."""
    from ..reports import ExactStrings

    cache: dict[Any, str] = {}
    limit = ExactStrings.LIMIT

    def miss(key: Any) -> str:
        if len(cache) >= limit:
            cache.clear()
        found = cache[key] = make(key)
        return found

    return cache.get, miss


def usage_records(out: IO[str], records: Iterable[UsageRecord], flush_every: int = 2000) -> int:
    """:func:`usage` of raw store records (``reports.usage_records``), byte for byte, without
    an object, Decimal or datetime per row.

    Numbers come from the stored integers (:class:`~ledger.reports.ExactStrings`); text is
    neutralised as :func:`safe_text` does and quoted as the csv module does
    (:func:`csv_field`): names, months, statuses, end users and tags through a bounded cache,
    as they repeat; call ids and errors by one precompiled match each. Lines are written
    ``flush_every`` at a time.
    """
    from ..reports import ExactStrings, UsageRow

    strings = ExactStrings()
    # Each cache: its lookup (a hit is one dict get) and what computes and keeps a miss.
    safe_get, named = _bounded(lambda value: csv_field(safe_text(value)))  # names, end users
    raw_get, raw = _bounded(csv_field)                                     # months, statuses
    tags_get, tagged = _bounded(lambda stored: csv_field(safe_text(stored.strip(","))))
    amount_get, amount = _bounded(units_str)                               # exact costs
    price_get, price = _bounded(strings.price)                             # per 1K tokens
    second_get, second = _bounded(strings.second)                          # YYYY-MM-DDTHH:MM:SS
    plain_cell = _PLAIN_CELL.fullmatch

    def text(value: str) -> str:
        """A call id or an error (rarely repeated): as is when it is plain, else checked."""
        return value if plain_cell(value) else csv_field(safe_text(value))

    out.write(",".join(csv_field(name) for name in UsageRow.FIELDS) + "\r\n")
    lines: list[str] = []
    add = lines.append
    count = 0
    row: Any
    for row in records:
        (id_, at, project, month, model, status, estimated, prompt, completion, cached, est,
         input_price, output_price, cached_price, cost, http_status, error, call_id,
         reasoning, user, tags) = row
        # A cache hit is one dict lookup; "" (an empty cell) is a miss, recomputed: still "".
        at_second, micro = divmod(at, 1_000_000)
        add(f"{id_},{second_get(at_second) or second(at_second)}"
            f"{f'.{micro:06d}' if micro else ''}+00:00,{safe_get(project) or named(project)},"
            f"{raw_get(month) or raw(month)},{safe_get(model) or named(model)},"
            f"{raw_get(status) or raw(status)},{'true' if estimated else 'false'},"
            f"{prompt},{completion},{cached},{'' if est is None else est},"
            f"{price_get(input_price) or price(input_price)},"
            f"{price_get(output_price) or price(output_price)},"
            f"{'' if cached_price is None else (price_get(cached_price) or price(cached_price))},"
            f"{amount_get(cost) or amount(cost)},{'' if http_status is None else http_status},"
            f"{'' if error is None else text(error)},{'' if call_id is None else text(call_id)},"
            f"{'' if reasoning is None else reasoning},"
            f"{'' if user is None else (safe_get(user) or named(user))},"
            f"{(tags_get(tags) or tagged(tags)) if tags else ''}\r\n")
        if len(lines) >= flush_every:
            out.write("".join(lines))
            count += len(lines)
            lines.clear()
    out.write("".join(lines))
    return count + len(lines)


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


ALERT_HEADER = ("id", "project", "user", "tag", "period", "window", "threshold", "spent",
                "limit", "at")


def alerts(out: IO[str], items: Iterable[AlertLike]) -> int:
    return write_rows(out, ALERT_HEADER, (
        [a.id, a.project, a.user, a.tag, a.period, a.window, a.threshold, a.spent, a.limit,
         a.at] for a in items))


BUDGET_LINE_HEADER = ("project", "user", "end_user", "tag", "period", "window", "budget",
                      "limit", "alerts", "spent", "reserved", "remaining", "percent_used",
                      "burn_rate_per_day", "forecast", "forecast_over_limit", "status")


def budget_lines(out: IO[str], lines: Iterable[BudgetLine]) -> int:
    """One row per budget window (``alerts``: thresholds in percent, ``80;100``)."""
    return write_rows(out, BUDGET_LINE_HEADER, (
        [b.budget.project, b.budget.user, b.user, b.budget.tag, b.budget.period, b.window,
         "hard" if b.hard else "soft", b.limit, ";".join(str(x) for x in b.budget.alerts),
         b.spent, b.reserved, b.remaining, b.percent_used, b.burn_rate_per_day, b.forecast,
         b.forecast_over, b.status] for b in lines))


def spend_groups(out: IO[str], report: BudgetReport) -> int:
    """``ledger budget report --by X --format csv``: one row per project and X."""
    by = report.by or "model"
    return write_rows(out, ("month", "project", by, "calls", "prompt_tokens",
                            "completion_tokens", "spent"), (
        [report.month, g.project, g.key, g.calls, g.prompt_tokens, g.completion_tokens,
         g.spent] for g in report.groups))
