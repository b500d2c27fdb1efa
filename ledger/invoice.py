"""Monthly invoices: one line per model and unit price, rounded half-even to the cent.

* **Lines.** The database groups a project-month's charged events (``ok`` and ``cancelled``
  calls with tokens or a cost; failed and refused calls are never charges) by model and unit
  price, summing integer tokens and integer costs exactly (``ledger.store.invoices``). A
  mid-month price change therefore gives two lines for the model, each showing its price.
* **Money.** A line's ``exact_amount`` is the exact sum of its calls' costs; its ``amount`` is
  that rounded half-even to the cent (``ledger.money.round_half_even_to_cent``, the only
  rounding). The invoice ``total`` is the sum of the rounded line amounts, so the lines always
  add up to the total on paper; each line moves by at most half a cent.
* **Issuing freezes.** ``invoice(store, now, project, month)`` issues the invoice once: it gets the
  next number in sequence, its document is stored, and its events are marked as billed, all in
  one transaction (two processes issuing at once get one invoice). Issuing the same project
  and month again returns the stored document unchanged.
* **Late usage.** Usage recorded after a month was frozen is not slipped into that invoice: it
  appears as an ``adjustment`` line (naming its original month) on the project's next invoice
  for a later month.
* **Drafts.** ``draft=True`` computes what issuing would bill now, without a number and without
  freezing anything. A draft of a month already issued is the issued invoice.
* A project with no usage gets a valid zero invoice (no lines, total 0.00).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from .clock import parse_month
from .money import (
    CURRENCY,
    from_units,
    money_context,
    money_str,
    price_from_units,
    round_half_even_to_cent,
    to_units,
)
from .names import check_name
from .store import invoices as sql
from .store.ops import Store
from .store.schema import from_micros, to_micros

__all__ = ["Invoice", "InvoiceLine", "build_invoice", "invoice", "invoices_for_month",
           "is_issued", "issued_invoices", "line_from_row", "projects_to_invoice"]

USAGE = "usage"
ADJUSTMENT = "adjustment"


@dataclass(frozen=True)
class InvoiceLine:
    """One line: a model at one unit price (per 1K tokens), with its tokens and amounts.

    ``kind`` is ``"usage"`` for the invoice's own month, ``"adjustment"`` for late usage of an
    earlier, already frozen month (``adjusts_month``).
    """

    model: str
    input_per_1k: Decimal
    output_per_1k: Decimal
    cached_input_per_1k: Decimal | None
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    exact_amount: Decimal
    amount: Decimal
    kind: str = USAGE
    adjusts_month: str | None = None
    first_call_at: datetime | None = None
    last_call_at: datetime | None = None

    @property
    def description(self) -> str:
        """What the line is for, in words (model, and the month an adjustment corrects)."""
        if self.kind == ADJUSTMENT:
            return f"{self.model} (adjustment for {self.adjusts_month})"
        return self.model

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: money as exact decimal strings, token counts as integers."""
        return {
            "kind": self.kind,
            "model": self.model,
            "adjusts_month": self.adjusts_month,
            "input_per_1k": money_str(self.input_per_1k),
            "output_per_1k": money_str(self.output_per_1k),
            "cached_input_per_1k": None if self.cached_input_per_1k is None
            else money_str(self.cached_input_per_1k),
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "exact_amount": money_str(self.exact_amount),
            "amount": money_str(self.amount),
            "first_call_at": _iso(self.first_call_at),
            "last_call_at": _iso(self.last_call_at),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InvoiceLine:
        cached = data.get("cached_input_per_1k")
        return cls(
            model=str(data["model"]),
            input_per_1k=Decimal(data["input_per_1k"]),
            output_per_1k=Decimal(data["output_per_1k"]),
            cached_input_per_1k=None if cached is None else Decimal(cached),
            calls=int(data["calls"]),
            prompt_tokens=int(data["prompt_tokens"]),
            completion_tokens=int(data["completion_tokens"]),
            cached_tokens=int(data["cached_tokens"]),
            exact_amount=Decimal(data["exact_amount"]),
            amount=Decimal(data["amount"]),
            kind=str(data["kind"]),
            adjusts_month=data.get("adjusts_month"),
            first_call_at=_parse_iso(data.get("first_call_at")),
            last_call_at=_parse_iso(data.get("last_call_at")),
        )


@dataclass(frozen=True)
class Invoice:
    """A project's invoice for a month. ``number`` is None for a draft (never frozen)."""

    number: int | None
    project: str
    month: str
    currency: str
    issued_at: datetime
    lines: tuple[InvoiceLine, ...]
    total: Decimal
    draft: bool = False

    @property
    def label(self) -> str:
        """``INV-000042`` for an issued invoice, ``DRAFT`` for a draft."""
        return "DRAFT" if self.number is None else f"INV-{self.number:06d}"

    @property
    def usage_lines(self) -> tuple[InvoiceLine, ...]:
        return tuple(line for line in self.lines if line.kind == USAGE)

    @property
    def adjustment_lines(self) -> tuple[InvoiceLine, ...]:
        return tuple(line for line in self.lines if line.kind == ADJUSTMENT)

    @property
    def exact_total(self) -> Decimal:
        """The unrounded sum of the lines' exact amounts (for audits; ``total`` is billed)."""
        with money_context():
            return sum((line.exact_amount for line in self.lines), Decimal(0))

    @property
    def prompt_tokens(self) -> int:
        return sum(line.prompt_tokens for line in self.lines)

    @property
    def completion_tokens(self) -> int:
        return sum(line.completion_tokens for line in self.lines)

    def to_dict(self) -> dict[str, Any]:
        """The invoice as JSON-ready data (the CLI's ``--format json`` and the frozen copy)."""
        return {
            "number": self.number,
            "label": self.label,
            "project": self.project,
            "month": self.month,
            "currency": self.currency,
            "issued_at": _iso(self.issued_at),
            "draft": self.draft,
            "lines": [line.to_dict() for line in self.lines],
            "total": money_str(self.total),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Invoice:
        issued = _parse_iso(data["issued_at"])
        assert issued is not None
        number = data.get("number")
        return cls(
            number=None if number is None else int(number),
            project=str(data["project"]),
            month=str(data["month"]),
            currency=str(data.get("currency", CURRENCY)),
            issued_at=issued,
            lines=tuple(InvoiceLine.from_dict(line) for line in data["lines"]),
            total=Decimal(data["total"]),
            draft=bool(data.get("draft", False)),
        )

    @classmethod
    def from_json(cls, document: str) -> Invoice:
        return cls.from_dict(json.loads(document))


def line_from_row(row: sql.LineRow, month: str) -> InvoiceLine:
    """An invoice line from an aggregated row; rows of an earlier month are adjustments."""
    exact = from_units(row.cost_units)
    adjustment = row.month != month
    return InvoiceLine(
        model=row.model,
        input_per_1k=price_from_units(row.input_price),
        output_per_1k=price_from_units(row.output_price),
        cached_input_per_1k=None if row.cached_price is None
        else price_from_units(row.cached_price),
        calls=row.calls,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        cached_tokens=row.cached_tokens,
        exact_amount=exact,
        amount=round_half_even_to_cent(exact),
        kind=ADJUSTMENT if adjustment else USAGE,
        adjusts_month=row.month if adjustment else None,
        first_call_at=from_micros(row.first_at),
        last_call_at=from_micros(row.last_at),
    )


def build_invoice(number: int | None, project: str, month: str, issued_at: datetime,
                  rows: list[sql.LineRow]) -> Invoice:
    """Lines from aggregated rows (usage first, by model and first use; then adjustments by
    month), and the total as the sum of the rounded lines."""
    lines = sorted((line_from_row(r, month) for r in rows), key=_line_order)
    with money_context():
        total = sum((line.amount for line in lines), Decimal("0.00"))
    return Invoice(number, project, month, CURRENCY, issued_at, tuple(lines),
                   round_half_even_to_cent(total), draft=number is None)


def invoice(store: Store, now: datetime, project: str, month: str, *,
            draft: bool = False) -> Invoice:
    """The invoice of ``project`` for ``month`` (``YYYY-MM``); see the module docstring.

    Issuing (the default) freezes it and numbers it; ``draft=True`` never writes anything.
    """
    check_name(project, "project")
    month = parse_month(month)
    stored = sql.issued(store, project, month)
    if stored is not None:
        return Invoice.from_dict(stored)
    if draft:
        return build_invoice(None, project, month, now, sql.draft_rows(store, project, month))

    def render(number: int, rows: list[sql.LineRow]) -> tuple[dict[str, Any], int]:
        inv = build_invoice(number, project, month, now, rows)
        return inv.to_dict(), to_units(inv.total)

    return Invoice.from_dict(sql.issue(store, project, month, to_micros(now), render))


def invoices_for_month(store: Store, now: datetime, month: str, *,
                       draft: bool = False) -> list[Invoice]:
    """The invoice of every project with something to bill for ``month`` (usage in it, an
    invoice already issued for it, or late usage of an earlier frozen month), by project;
    issuing those not yet issued unless ``draft``."""
    month = parse_month(month)
    return [invoice(store, now, p, month, draft=draft)
            for p in projects_to_invoice(store, month)]


def is_issued(store: Store, project: str, month: str) -> bool:
    """Whether ``project``'s invoice for ``month`` has been issued (and so is frozen)."""
    return sql.issued(store, project, parse_month(month)) is not None


def projects_to_invoice(store: Store, month: str) -> list[str]:
    """Projects with something to bill for ``month``, by name: chargeable usage in it, an
    invoice already issued for it, or late usage of an earlier frozen month."""
    return sql.projects_to_invoice(store, parse_month(month))


def issued_invoices(store: Store, month: str | None = None) -> list[Invoice]:
    """Every issued invoice (of ``month``, if given), by number."""
    return [Invoice.from_dict(d) for d in
            sql.issued_invoices(store, None if month is None else parse_month(month))]


def _line_order(line: InvoiceLine) -> tuple[int, str, str, int]:
    first = 0 if line.first_call_at is None else to_micros(line.first_call_at)
    return (0 if line.kind == USAGE else 1, line.adjusts_month or "", line.model, first)


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def _parse_iso(value: object) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))
