"""What an invoice or a credit note says, as a neutral layout that every renderer draws
(terminal table, HTML, PDF): title and number, seller and bill-to blocks, dates, the lines
with their sub-lines (quantity × unit price = amount), the totals and the footnotes.

Amounts are printed with thousands separators (``grouped``); line amounts are the rounded
cents billed, sub-line amounts the exact products they add up from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from ..invoice import ADJUSTMENT, CreditNote, Invoice, InvoiceLine
from ..money import in_money_context, money_str
from ..parties import Customer, Issuer

ESTIMATED_NOTE = ("* Estimated: these calls' usage was not reported by the server (a stream "
                  "cut short, a reply without usage), so they are charged by the ledger's "
                  "estimate of their tokens.")
ROUNDING_NOTE = ("Each line amount is the exact cost of its calls rounded half-even to the "
                 "cent; the subtotal is the sum of the lines; tax is computed once on the "
                 "subtotal. Sub-lines show the exact cost of each kind of token.")
SPLIT_NOTE = ("Lines are split {by}: each split line shows the exact cost of its own calls; "
              "the cents of each model's line are shared out among its groups in proportion "
              "to their exact costs (largest remainder), so the split lines add up to the "
              "model's line and the total is that of the invoice.")
ADJUSTMENT_NOTE = ("Adjustments bill usage of an earlier month recorded after that month was "
                   "invoiced; their rounding remainder carries to the next adjustment.")


@in_money_context
def grouped(value: Decimal, *, cents: bool = True) -> str:
    """``$1,234.50``, ``-$0.0049``: thousands separators, sign before the dollar sign; with
    ``cents`` at least two decimals."""
    amount = abs(value)
    if cents:  # exact, without trailing zeros beyond the cent
        amount = amount.normalize()
        if amount.as_tuple().exponent > -2:  # type: ignore[operator]
            amount = amount.quantize(Decimal("0.01"))
    text = format(amount, ",f")
    return ("-$" if value < 0 else "$") + text


def count(n: int) -> str:
    return f"{n:,}"


@dataclass(frozen=True)
class Row:
    """A table row: a line (``sub=False``) or one of its sub-lines."""

    description: str
    quantity: str
    unit_price: str
    amount: str
    sub: bool = False
    dates: str = ""


@dataclass(frozen=True)
class Document:
    kind: str                     # "invoice" | "credit note"
    title: str                    # "Invoice INV-000001", "DRAFT invoice", "Credit note CN-..."
    number: str
    customer: str                 # bill-to name (the project when none is recorded)
    seller: tuple[str, ...]
    bill_to: tuple[str, ...]
    meta: tuple[tuple[str, str], ...]
    rows: tuple[Row, ...]
    totals: tuple[tuple[str, str], ...]
    notes: tuple[str, ...] = field(default=())
    draft: bool = False
    empty: str = ""


def _seller(issuer: Issuer | None) -> tuple[str, ...]:
    if issuer is None:
        return ("(no issuer recorded: ledger issuer set)",)
    out = [issuer.name, *issuer.address.splitlines()]
    if issuer.tax_id:
        out.append(f"Tax ID: {issuer.tax_id}")
    return tuple(x for x in out if x.strip())


def _bill_to(customer: Customer | None, project: str) -> tuple[str, ...]:
    if customer is None:
        return (project, f"Project: {project}")
    out = [customer.name, *customer.address.splitlines()]
    if customer.email:
        out.append(customer.email)
    if customer.tax_id:
        out.append(f"Tax ID: {customer.tax_id}")
    out.append(f"Project: {project}")
    return tuple(x for x in out if x.strip())


def _price(value: Decimal | None) -> str:
    return "" if value is None else grouped(value, cents=False) + " / 1K"


def group_label(by: str, group: str | None) -> str:
    """How a split line's group reads: ``User alice``, ``Tag env=prod``, ``No user``,
    ``No tags``, ``No env tag``."""
    if by == "user":
        return "No user" if group is None else f"User {group}"
    if group is None:
        return "No tags" if by == "tag" else f"No {by.removeprefix('tag:')} tag"
    return f"Tag {group}" if by != "tag" or "," not in group else f"Tags {group}"


def line_rows(lines: tuple[InvoiceLine, ...], sign: int = 1, by: str | None = None
              ) -> list[Row]:
    rows: list[Row] = []
    for line in lines:
        name = line.model
        if line.kind == ADJUSTMENT:
            name = f"Adjustment for {line.adjusts_month}: {line.model}"
        if by is not None:
            name = f"{group_label(by, line.group)} · {name}"
        if line.estimated_calls:
            name += f" (* {line.estimated_calls:,} of {line.calls:,} calls estimated)"
        calls = f"{line.calls:,} call" + ("" if line.calls == 1 else "s")
        rows.append(Row(name, calls, "", grouped(sign * line.amount),
                        dates=line.dates))
        for part in line.components:
            rows.append(Row(part.label, count(part.quantity) if part.quantity else "",
                            _price(part.unit_price), grouped(sign * part.amount),
                            sub=True))
    return rows


@in_money_context
def _tax_label(name: str, rate: Decimal | None) -> str:
    percent = "" if rate is None else f" {(rate * 100).normalize():f}%"
    return f"{name}{percent}"


def _split_note(by: str) -> str:
    how = {"user": "per end user", "tag": "per set of tags"}.get(
        by, f"per value of the tag {by.removeprefix('tag:')}")
    return SPLIT_NOTE.format(by=how)


def _notes(lines: tuple[InvoiceLine, ...], by: str | None = None) -> tuple[str, ...]:
    notes = [ROUNDING_NOTE] if by is None else [ROUNDING_NOTE, _split_note(by)]
    if any(ln.kind == ADJUSTMENT for ln in lines):
        notes.append(ADJUSTMENT_NOTE)
    if any(ln.estimated_calls for ln in lines):
        notes.append(ESTIMATED_NOTE)
    return tuple(notes)


def _date(value: object) -> str:
    from datetime import datetime

    return value.strftime("%d %b %Y") if isinstance(value, datetime) else "–"


@in_money_context
def of_invoice(inv: Invoice) -> Document:
    assert inv.subtotal is not None
    totals = [("Subtotal", grouped(inv.subtotal))]
    if inv.tax_rate is not None:
        totals.append((_tax_label(inv.tax_name, inv.tax_rate), grouped(inv.tax)))
    totals.append((f"Total ({inv.currency})", grouped(inv.total)))
    totals.append(("Amount due", grouped(inv.amount_due)))
    meta = [("Invoice number", inv.label), ("Issue date", _date(inv.issued_at)),
            ("Due date", "–" if inv.draft else _date(inv.due_at)),
            ("Billing period", inv.period), ("Currency", inv.currency)]
    if inv.draft:
        meta.append(("Status", "DRAFT – not issued, not payable"))
    elif inv.state == "void":
        meta.append(("Status", f"VOID – cancelled by {inv.credit_note}"))
    if inv.issuer is not None and inv.issuer.payment_details:
        meta.append(("Payment", inv.issuer.payment_details.replace("\n", "; ")))
    title = "DRAFT invoice" if inv.draft else f"Invoice {inv.label}"
    return Document("invoice", title, inv.label, inv.bill_to, _seller(inv.issuer),
                    _bill_to(inv.customer, inv.project), tuple(meta),
                    tuple(line_rows(inv.lines, by=inv.by)), tuple(totals),
                    _notes(inv.lines, inv.by),
                    draft=inv.draft, empty="No usage in this period.")


@in_money_context
def of_credit_note(note: CreditNote) -> Document:
    totals = [("Subtotal credited", grouped(note.subtotal))]
    if note.tax_rate is not None:
        totals.append((_tax_label(note.tax_name, note.tax_rate) + " credited",
                       grouped(note.tax)))
    totals.append((f"Total credited ({note.currency})", grouped(note.total)))
    meta = (("Credit note number", note.number), ("Credits invoice", note.invoice_number),
            ("Invoice date", _date(note.invoice_issued_at)),
            ("Issue date", _date(note.issued_at)), ("Billing period", note.period),
            ("Currency", note.currency), ("Reason", note.reason))
    return Document("credit note", f"Credit note {note.number}", note.number, note.bill_to,
                    _seller(note.issuer), _bill_to(note.customer, note.project), meta,
                    tuple(line_rows(note.lines, sign=-1)), tuple(totals),
                    (f"This credit note cancels invoice {note.invoice_number} in full.",
                     *_notes(note.lines)), empty="No lines.")


def exact(value: Decimal) -> str:
    return money_str(value)
