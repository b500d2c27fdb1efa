"""Monthly invoices as documents: lines per model and unit price, tax, credit notes.

* **Lines.** The database groups a project-month's charged events (``ok`` and ``cancelled``
  calls with tokens or a cost; failed and refused calls are never charges) by model and unit
  price, summing integer tokens and integer costs exactly (``ledger.store.invoices``). A
  mid-month price change therefore gives two lines for the model, each showing its price and
  the dates of its first and last call. Each line breaks down into ``components`` (uncached
  input, cached input at its own price, output): quantity × unit price = the exact amount
  printed, and their sum is the line's exact amount. Lines with estimated charges (usage
  missing, streams cut) count them in ``estimated_calls``.
* **Money.** A line's ``exact_amount`` is the exact sum of its calls' costs; its ``amount`` is
  that rounded half-even to the cent (``ledger.money.round_half_even_to_cent``). The
  ``subtotal`` is the sum of the rounded line amounts; ``tax`` is the customer's rate times the
  subtotal, rounded half-even to the cent once; ``total`` = subtotal + tax. All of it in a
  local decimal context, whatever the caller's.
* **Issuing freezes.** ``invoice(store, now, project, month)`` issues the invoice once: it gets the
  next number in sequence, its document is stored, and late usage it bills is marked, all in
  one transaction (two processes issuing at once get one invoice). Issuing the same project
  and month again returns the stored document unchanged. Issuing refuses (``InvalidInput``) a
  month that is not over, a future month, and a project the ledger has never seen (no usage
  and no customer record: a typo); a month with nothing to bill ($0.00) is returned as an
  unnumbered draft unless ``include_empty=True``.
* **Late usage.** Usage recorded after a month was frozen is not slipped into that invoice: it
  appears as an ``adjustment`` line (naming its original month) on the project's next invoice.
  Adjustments carry their rounding: each adjustment's amount is rounded together with the
  unbilled remainder of the project's earlier adjustments (``carried_in``), so many small late
  batches add up to what they cost instead of each rounding to $0.00 (issue 9 item 17).
* **Voiding.** ``void_invoice(store, now, "INV-000005", reason=...)`` issues a credit note (its own
  sequence, ``CN-000001``), returns the late usage the invoice billed to the pending pool, and
  lets the month be issued again.
* **Drafts.** ``draft=True`` computes what issuing would bill now, without a number and without
  freezing anything; it works for any month. A draft of a month already issued is the issued
  invoice.
* **By end user or tag.** Each line keeps its ``parts``: its calls per (end user, tags), exact,
  frozen with the document. ``by="user"``, ``"tag"`` (a call's set of tags) or ``"tag:KEY"``
  (the value of one tag) splits every line into one line per group (``group``; None for
  calls without one), each with its own calls and exact amount. The line's billed cents are
  shared out among its groups in proportion to their exact amounts (largest remainder), so
  each model's split lines add up to its line, and subtotal, tax and total never change.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from .clock import month_bounds, parse_month
from .errors import InvalidInput
from .money import (
    CURRENCY,
    from_units,
    in_money_context,
    money_context,
    money_str,
    price_from_units,
    round_half_even_to_cent,
    to_units,
)
from .names import check_name
from .parties import DEFAULT_PAYMENT_TERMS_DAYS, Customer, Issuer, check_text
from .store import invoices as sql
from .store import parties as party_sql
from .store.ops import Store
from .store.schema import from_micros, to_micros

__all__ = ["BY", "Component", "CreditNote", "Invoice", "InvoiceLine", "Part", "build_invoice",
           "credit_notes", "invoice", "invoice_number", "invoices_for_month", "is_issued",
           "issued_invoices", "line_from_row", "projects_to_invoice",
           "void_invoice"]

USAGE = "usage"
ADJUSTMENT = "adjustment"
ZERO = Decimal("0.00")
THOUSAND = Decimal(1000)
#: How an invoice's lines can be split: per end user, per set of tags, per value of a tag.
BY = ("user", "tag", "tag:KEY")


@dataclass(frozen=True)
class Part:
    """A line's calls of one end user with one set of tags (``"k=v,k2=v2"``), exact."""

    user: str | None
    tags: str | None
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    exact_amount: Decimal
    estimated_calls: int = 0
    first_call_at: datetime | None = None
    last_call_at: datetime | None = None

    def group(self, by: str) -> str | None:
        """This part's group when lines are split ``by`` (None: no user, no such tag)."""
        if by == "user":
            return self.user
        if by == "tag":
            return self.tags
        key = by.removeprefix("tag:")
        for tag in (self.tags or "").split(","):
            if tag.partition("=")[0] == key:
                return tag
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"user": self.user, "tags": self.tags, "calls": self.calls,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cached_tokens": self.cached_tokens, "exact_amount": money_str(self.exact_amount),
                "estimated_calls": self.estimated_calls,
                "first_call_at": _iso(self.first_call_at), "last_call_at": _iso(self.last_call_at)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Part:
        return cls(user=data.get("user"), tags=data.get("tags"), calls=int(data["calls"]),
                   prompt_tokens=int(data["prompt_tokens"]),
                   completion_tokens=int(data["completion_tokens"]),
                   cached_tokens=int(data["cached_tokens"]),
                   exact_amount=Decimal(data["exact_amount"]),
                   estimated_calls=int(data.get("estimated_calls", 0)),
                   first_call_at=_parse_iso(data.get("first_call_at")),
                   last_call_at=_parse_iso(data.get("last_call_at")))


def check_by(by: object) -> str | None:
    """``None``, ``"user"``, ``"tag"`` or ``"tag:KEY"``; anything else is ``InvalidInput``."""
    if by is None:
        return None
    if isinstance(by, str):
        key = by.removeprefix("tag:")
        if by in ("user", "tag") or (key != by and key and key.strip() == key
                                     and not set(key) & set(",=")):
            return by
    raise InvalidInput(f"invoice lines split by user, tag or tag:KEY, got {by!r}")


@dataclass(frozen=True)
class Component:
    """A sub-line: ``quantity`` tokens × ``unit_price`` per 1K = ``amount`` (exact)."""

    label: str
    quantity: int
    unit_price: Decimal | None
    amount: Decimal


@dataclass(frozen=True)
class InvoiceLine:
    """One line: a model at one unit price (per 1K tokens), with its tokens and amounts.

    ``kind`` is ``"usage"`` for the invoice's own month, ``"adjustment"`` for late usage of an
    earlier, already frozen month (``adjusts_month``). ``carried_in`` (adjustments only) is the
    unbilled rounding remainder of earlier adjustments, rounded together with this line.
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
    estimated_calls: int = 0
    carried_in: Decimal = ZERO
    #: The line's calls per (end user, tags); empty when none of them is attributed.
    parts: tuple[Part, ...] = ()
    #: The end user or tag of a split line (``Invoice.by``); None for calls without one.
    group: str | None = None

    @property
    def description(self) -> str:
        """What the line is for, in words (model, and the month an adjustment corrects)."""
        if self.kind == ADJUSTMENT:
            return f"{self.model} (adjustment for {self.adjusts_month})"
        return self.model

    @property
    def dates(self) -> str:
        """The days of the line's first and last call, e.g. ``1–14 Nov 2026``."""
        if self.first_call_at is None or self.last_call_at is None:
            return ""
        return date_range(self.first_call_at.date(), self.last_call_at.date())

    @property
    def components(self) -> tuple[Component, ...]:
        """Uncached input, cached input and output, each quantity × unit price = exact amount;
        they add up to ``exact_amount`` (any difference shows as "other charges")."""
        with money_context():
            cached_price = (self.input_per_1k if self.cached_input_per_1k is None
                            else self.cached_input_per_1k)
            uncached = self.prompt_tokens - self.cached_tokens
            parts = [Component("input tokens", uncached, self.input_per_1k,
                               uncached * self.input_per_1k / THOUSAND)]
            if self.cached_tokens:
                parts.append(Component("cached input tokens", self.cached_tokens, cached_price,
                                       self.cached_tokens * cached_price / THOUSAND))
            parts.append(Component("output tokens", self.completion_tokens, self.output_per_1k,
                                   self.completion_tokens * self.output_per_1k / THOUSAND))
            rest = self.exact_amount - sum((p.amount for p in parts), Decimal(0))
            if rest:
                parts.append(Component("other charges", 0, None, rest))
            if self.carried_in:
                parts.append(Component("rounding carried from earlier adjustments", 0, None,
                                       self.carried_in))
        return tuple(parts)

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
            "estimated_calls": self.estimated_calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "exact_amount": money_str(self.exact_amount),
            "carried_in": money_str(self.carried_in),
            "amount": money_str(self.amount),
            "first_call_at": _iso(self.first_call_at),
            "last_call_at": _iso(self.last_call_at),
            "components": [{"label": c.label, "quantity": c.quantity,
                            "unit_price": None if c.unit_price is None
                            else money_str(c.unit_price),
                            "amount": money_str(c.amount)} for c in self.components],
            **({"parts": [p.to_dict() for p in self.parts]} if self.parts else {}),
            **({} if self.group is None else {"group": self.group}),
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
            estimated_calls=int(data.get("estimated_calls", 0)),
            carried_in=Decimal(data.get("carried_in", "0.00")),
            parts=tuple(Part.from_dict(p) for p in data.get("parts", ())),
            group=data.get("group"),
        )

    def split(self, by: str) -> list[InvoiceLine]:
        """This line as one line per group ``by`` (groups by name, None last); the line's
        billed cents shared out in proportion to the groups' exact amounts (largest
        remainder), so the split lines add up to ``amount``."""
        parts = self.parts or (Part(None, None, self.calls, self.prompt_tokens,
                                    self.completion_tokens, self.cached_tokens,
                                    self.exact_amount, self.estimated_calls,
                                    self.first_call_at, self.last_call_at),)
        groups: dict[str | None, list[Part]] = {}
        for part in parts:
            groups.setdefault(part.group(by), []).append(part)
        names = sorted(groups, key=lambda g: (g is None, g or ""))
        exact = [sum((p.exact_amount for p in groups[g]), Decimal(0)) for g in names]
        shares = _share_out(self.amount, exact)
        return [replace(
            self, calls=sum(p.calls for p in groups[g]),
            prompt_tokens=sum(p.prompt_tokens for p in groups[g]),
            completion_tokens=sum(p.completion_tokens for p in groups[g]),
            cached_tokens=sum(p.cached_tokens for p in groups[g]),
            exact_amount=e, amount=share, carried_in=ZERO,
            estimated_calls=sum(p.estimated_calls for p in groups[g]),
            first_call_at=min((p.first_call_at for p in groups[g] if p.first_call_at),
                              default=None),
            last_call_at=max((p.last_call_at for p in groups[g] if p.last_call_at),
                             default=None),
            parts=(), group=g) for g, e, share in zip(names, exact, shares, strict=True)]


def _share_out(amount: Decimal, weights: list[Decimal]) -> list[Decimal]:
    """``amount`` (whole cents) in cents, shared in proportion to ``weights`` (at least
    zero) by the largest remainder method: the shares add up to ``amount`` exactly; ties go
    to the earlier share. All to the first share when the weights add up to zero."""
    with money_context():
        cents = int(amount.scaleb(2))
        total = sum(weights, Decimal(0))
        if total <= 0:
            return [amount, *([ZERO] * (len(weights) - 1))]
        ideal = [Decimal(cents) * w / total for w in weights]
        floors = [int(x.to_integral_value(rounding=ROUND_FLOOR)) for x in ideal]
        order = sorted(range(len(ideal)), key=lambda i: (-(ideal[i] - floors[i]), i))
        for i in order[:cents - sum(floors)]:
            floors[i] += 1
        return [Decimal(c).scaleb(-2) for c in floors]


@dataclass(frozen=True)
class Invoice:
    """A project's invoice for a month. ``number`` is None for a draft (never frozen).

    ``state``: ``draft``, ``issued`` or ``void`` (voided by ``credit_note``).
    """

    number: int | None
    project: str
    month: str
    currency: str
    issued_at: datetime
    lines: tuple[InvoiceLine, ...]
    total: Decimal
    draft: bool = False
    subtotal: Decimal | None = None
    tax: Decimal = ZERO
    tax_rate: Decimal | None = None
    tax_name: str = "Tax"
    due_at: datetime | None = None
    issuer: Issuer | None = None
    customer: Customer | None = None
    state: str = ""
    credit_note: str | None = None
    #: How the lines are split (``split``): None, "user", "tag" or "tag:KEY".
    by: str | None = None

    def __post_init__(self) -> None:
        if self.subtotal is None:
            object.__setattr__(self, "subtotal", self.total)
        if not self.state:
            object.__setattr__(self, "state", "draft" if self.draft else "issued")

    def split(self, by: str | None) -> Invoice:
        """The same invoice with its lines split per end user or tag (``check_by``): one
        line per group, model and price period; subtotal, tax and total unchanged."""
        by = check_by(by)
        if by is None or self.by is not None:
            return self
        lines = [(i, line) for i, line in enumerate(self.lines) for line in line.split(by)]
        lines.sort(key=lambda il: (il[1].group is None, il[1].group or "", il[0]))
        return replace(self, lines=tuple(line for _, line in lines), by=by)

    @property
    def label(self) -> str:
        """``INV-000042`` for an issued invoice, ``DRAFT`` for a draft."""
        return "DRAFT" if self.number is None else invoice_label(self.number)

    @property
    def period_start(self) -> date:
        return month_bounds(self.month)[0].date()

    @property
    def period_end(self) -> date:
        """The last day of the billing period (inclusive)."""
        return month_bounds(self.month)[1].date() - timedelta(days=1)

    @property
    def period(self) -> str:
        """``1–30 Nov 2026``."""
        return date_range(self.period_start, self.period_end)

    @property
    def amount_due(self) -> Decimal:
        return ZERO if self.state == "void" else self.total

    @property
    def bill_to(self) -> str:
        """The customer's name, or the project name when no customer is recorded."""
        return self.customer.name if self.customer is not None else self.project

    @property
    def usage_lines(self) -> tuple[InvoiceLine, ...]:
        return tuple(line for line in self.lines if line.kind == USAGE)

    @property
    def adjustment_lines(self) -> tuple[InvoiceLine, ...]:
        return tuple(line for line in self.lines if line.kind == ADJUSTMENT)

    @property
    def estimated_calls(self) -> int:
        return sum(line.estimated_calls for line in self.lines)

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
        assert self.subtotal is not None
        billed = _billed(self)
        if self.by is not None:  # every split line names its group, None included
            billed["lines"] = [{**d, "group": ln.group}
                               for d, ln in zip(billed["lines"], self.lines, strict=True)]
        return {
            "number": self.number,
            "label": self.label,
            "state": self.state,
            "project": self.project,
            "month": self.month,
            "currency": self.currency,
            "issued_at": _iso(self.issued_at),
            "due_at": _iso(self.due_at),
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "draft": self.draft,
            **billed,
            "amount_due": money_str(self.amount_due),
            "credit_note": self.credit_note,
            **({} if self.by is None else {"by": self.by}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Invoice:
        issued = _parse_iso(data["issued_at"])
        assert issued is not None
        number = data.get("number")
        rate = data.get("tax_rate")
        return cls(
            number=None if number is None else int(number),
            project=str(data["project"]),
            month=str(data["month"]),
            currency=str(data.get("currency", CURRENCY)),
            issued_at=issued,
            lines=tuple(InvoiceLine.from_dict(line) for line in data["lines"]),
            total=Decimal(data["total"]),
            draft=bool(data.get("draft", False)),
            subtotal=Decimal(data.get("subtotal", data["total"])),
            tax=Decimal(data.get("tax", "0.00")),
            tax_rate=None if rate is None else Decimal(str(rate)),
            tax_name=str(data.get("tax_name") or "Tax"),
            due_at=_parse_iso(data.get("due_at")),
            issuer=None if not data.get("issuer") else Issuer.from_dict(data["issuer"]),
            customer=None if not data.get("customer") else Customer.from_dict(data["customer"]),
            state=str(data.get("state") or ""),
            credit_note=data.get("credit_note"),
            by=data.get("by"),
        )

    @classmethod
    def from_json(cls, document: str) -> Invoice:
        return cls.from_dict(json.loads(document))


@dataclass(frozen=True)
class CreditNote:
    """A credit note: cancels an issued invoice in full. Amounts are negative (credited)."""

    number: str
    sequence: int
    invoice_number: str
    project: str
    month: str
    currency: str
    issued_at: datetime
    reason: str
    lines: tuple[InvoiceLine, ...]
    subtotal: Decimal
    tax: Decimal
    total: Decimal
    tax_rate: Decimal | None = None
    tax_name: str = "Tax"
    issuer: Issuer | None = None
    customer: Customer | None = None
    invoice_issued_at: datetime | None = None

    @property
    def label(self) -> str:
        return self.number

    @property
    def period(self) -> str:
        start, end = month_bounds(self.month)
        return date_range(start.date(), end.date() - timedelta(days=1))

    @property
    def bill_to(self) -> str:
        return self.customer.name if self.customer is not None else self.project

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "sequence": self.sequence,
            "kind": "credit_note",
            "invoice_number": self.invoice_number,
            "invoice_issued_at": _iso(self.invoice_issued_at),
            "project": self.project,
            "month": self.month,
            "currency": self.currency,
            "issued_at": _iso(self.issued_at),
            "reason": self.reason,
            **_billed(self),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CreditNote:
        issued = _parse_iso(data["issued_at"])
        assert issued is not None
        rate = data.get("tax_rate")
        return cls(
            number=str(data["number"]), sequence=int(data["sequence"]),
            invoice_number=str(data["invoice_number"]), project=str(data["project"]),
            month=str(data["month"]), currency=str(data.get("currency", CURRENCY)),
            issued_at=issued, reason=str(data["reason"]),
            lines=tuple(InvoiceLine.from_dict(line) for line in data["lines"]),
            subtotal=Decimal(data["subtotal"]), tax=Decimal(data["tax"]),
            total=Decimal(data["total"]),
            tax_rate=None if rate is None else Decimal(str(rate)),
            tax_name=str(data.get("tax_name") or "Tax"),
            issuer=None if not data.get("issuer") else Issuer.from_dict(data["issuer"]),
            customer=None if not data.get("customer") else Customer.from_dict(data["customer"]),
            invoice_issued_at=_parse_iso(data.get("invoice_issued_at")),
        )


def invoice_label(number: int) -> str:
    return f"INV-{number:06d}"


def credit_label(number: int) -> str:
    return f"CN-{number:06d}"


_LABEL = re.compile(r"(?:INV-)?0*(\d{1,12})", re.IGNORECASE)


def invoice_number(value: object) -> int:
    """``"INV-000005"``, ``"5"`` or ``5`` -> 5; anything else is ``InvalidInput``."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _LABEL.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None or int(match.group(1)) == 0:
        raise InvalidInput(f"an invoice number looks like INV-000005, got {value!r}")
    return int(match.group(1))


def date_range(first: date, last: date) -> str:
    """``1–30 Nov 2026``, ``28 Nov – 3 Dec 2026``, ``5 Nov 2026``."""
    if first == last:
        return f"{first.day} {first:%b %Y}"
    if (first.year, first.month) == (last.year, last.month):
        return f"{first.day}–{last.day} {last:%b %Y}"
    if first.year == last.year:
        return f"{first.day} {first:%b} – {last.day} {last:%b %Y}"
    return f"{first.day} {first:%b %Y} – {last.day} {last:%b %Y}"


def _billed(doc: Invoice | CreditNote) -> dict[str, Any]:
    """The parties, lines and money of an invoice or a credit note, JSON-ready, in that order."""
    assert doc.subtotal is not None
    return {
        "issuer": None if doc.issuer is None else doc.issuer.to_dict(),
        "customer": None if doc.customer is None else doc.customer.to_dict(),
        "lines": [line.to_dict() for line in doc.lines],
        "subtotal": money_str(doc.subtotal),
        "tax_name": doc.tax_name,
        "tax_rate": None if doc.tax_rate is None else format(doc.tax_rate, "f"),
        "tax": money_str(doc.tax),
        "total": money_str(doc.total),
    }


def line_from_row(row: sql.LineRow, month: str, carried_in: Decimal = ZERO) -> InvoiceLine:
    """An invoice line from an aggregated row; rows of an earlier month are adjustments."""
    exact = from_units(row.cost_units)
    adjustment = row.month != month
    with money_context():
        amount = round_half_even_to_cent(exact + carried_in)
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
        amount=amount,
        kind=ADJUSTMENT if adjustment else USAGE,
        adjusts_month=row.month if adjustment else None,
        first_call_at=from_micros(row.first_at),
        last_call_at=from_micros(row.last_at),
        estimated_calls=row.estimated_calls,
        carried_in=carried_in,
        parts=_parts(row),
    )


def _parts(row: sql.LineRow) -> tuple[Part, ...]:
    """The row's parts per end user and tags; none when no call of it is attributed."""
    if all(p.user is None and p.tags is None for p in row.parts):
        return ()
    return tuple(Part(p.user, p.tags, p.calls, p.prompt_tokens, p.completion_tokens,
                      p.cached_tokens, from_units(p.cost_units), p.estimated_calls,
                      from_micros(p.first_at), from_micros(p.last_at)) for p in row.parts)


def adjustment_remainder(history: Sequence[Mapping[str, Any]]) -> Decimal:
    """What the project's earlier (issued, not voided) adjustment lines cost exactly but did
    not bill after rounding: Σ exact − Σ billed. Carried into the next adjustment."""
    with money_context():
        remainder = Decimal(0)
        for data in history:
            for line in data.get("lines", ()):
                if line.get("kind") == ADJUSTMENT:
                    remainder += Decimal(line["exact_amount"]) - Decimal(line["amount"])
        return remainder


def build_invoice(number: int | None, project: str, month: str, issued_at: datetime,
                  rows: list[sql.LineRow], *, issuer: Issuer | None = None,
                  customer: Customer | None = None,
                  history: Sequence[Mapping[str, Any]] | None = None) -> Invoice:
    """Lines from aggregated rows (usage first, by model and first use; then adjustments by
    month), the subtotal as the sum of the rounded lines, the tax once on the subtotal."""
    ordered = sorted(rows, key=lambda r: (r.month != month, r.month, r.model, r.first_at))
    carry = adjustment_remainder(history or [])
    lines = []
    for row in ordered:
        if row.month != month:  # the first adjustment line takes the carried remainder
            lines.append(line_from_row(row, month, carry))
            carry = ZERO
        else:
            lines.append(line_from_row(row, month))
    with money_context():
        subtotal = round_half_even_to_cent(sum((ln.amount for ln in lines), ZERO))
        rate = None if customer is None else customer.tax_rate
        tax = ZERO if rate is None else round_half_even_to_cent(subtotal * rate)
        total = subtotal + tax
    terms = DEFAULT_PAYMENT_TERMS_DAYS if issuer is None else issuer.payment_terms_days
    return Invoice(number, project, month, CURRENCY, issued_at, tuple(lines), total,
                   draft=number is None, subtotal=subtotal, tax=tax, tax_rate=rate,
                   tax_name="Tax" if customer is None else customer.tax_name,
                   due_at=issued_at + timedelta(days=terms), issuer=issuer, customer=customer)


@in_money_context
def invoice(store: Store, now: datetime, project: str, month: str, *, draft: bool = False,
            include_empty: bool = False, by: str | None = None) -> Invoice:
    """The invoice of ``project`` for ``month`` (``YYYY-MM``) as of ``now``; see the module
    docstring. ``by`` splits its lines per end user or tag (``Invoice.split``).

    Issuing (the default) freezes it and numbers it; ``draft=True`` never writes anything.
    Computed in the ledger's own decimal context (``money_context``), whatever the caller's.
    """
    check_name(project, "project")
    month = parse_month(month)
    by = check_by(by)
    return _invoice(store, now, project, month, draft, include_empty).split(by)


def _invoice(store: Store, now: datetime, project: str, month: str, draft: bool,
             include_empty: bool) -> Invoice:
    stored = sql.issued(store, project, month)
    if stored is not None:
        return Invoice.from_dict(stored)
    issuer = party_sql.get_issuer(store)
    customer = party_sql.get_customer(store, project)
    if draft:
        rows, history = sql.draft_rows(store, project, month)
        return build_invoice(None, project, month, now, rows, issuer=issuer, customer=customer,
                             history=history)
    start, end = month_bounds(month)
    if now < start:
        raise InvalidInput(f"{month} is in the future: it cannot be invoiced before it is over "
                           f"(on {end:%Y-%m-%d}); draft=True / --draft previews it")
    if now < end:
        raise InvalidInput(f"{month} is not over until {end:%Y-%m-%d 00:00} UTC: it cannot be "
                           "issued yet; draft=True / --draft previews it")
    if customer is None and not sql.known_project(store, project):
        raise InvalidInput(f"project {project!r} has no usage and no customer record: check "
                           "the name, or record the customer first (set_customer / "
                           "`ledger customer set`)")
    empty: list[Invoice] = []

    def render(number: int, rows: list[sql.LineRow], history: list[dict[str, Any]]
               ) -> tuple[dict[str, Any], int] | None:
        inv = build_invoice(number, project, month, now, rows, issuer=issuer,
                            customer=customer, history=history)
        if inv.total == 0 and not include_empty:
            empty.append(replace(inv, number=None, draft=True, state="draft"))
            return None
        return inv.to_dict(), to_units(inv.total)

    issued = sql.issue(store, project, month, to_micros(now), render)
    if issued is None:
        return empty[0]
    return Invoice.from_dict(issued)


@in_money_context
def void_invoice(store: Store, now: datetime, number: int | str, *,
                 reason: str) -> CreditNote:
    """Void an issued invoice as of ``now``: a credit note for its full amount (``CN-000001``,
    its own sequence), its late usage back to the pending pool, and its month open to be
    issued again."""
    seq = invoice_number(number)
    why = check_text(reason, "reason", required=True)

    def render(credit: int, data: dict[str, Any]) -> tuple[dict[str, Any], int, str]:
        inv = Invoice.from_dict(data)
        assert inv.subtotal is not None
        note = CreditNote(
            number=credit_label(credit), sequence=credit, invoice_number=inv.label,
            project=inv.project, month=inv.month, currency=inv.currency, issued_at=now,
            reason=why, lines=inv.lines, subtotal=-inv.subtotal, tax=-inv.tax,
            total=-inv.total, tax_rate=inv.tax_rate, tax_name=inv.tax_name, issuer=inv.issuer,
            customer=inv.customer, invoice_issued_at=inv.issued_at)
        return note.to_dict(), to_units(note.total), why

    return CreditNote.from_dict(sql.void(store, seq, to_micros(now), render))


def credit_notes(store: Store) -> list[CreditNote]:
    """Every credit note, by number."""
    return [CreditNote.from_dict(d) for d in sql.credit_note_list(store)]


def invoices_for_month(store: Store, now: datetime, month: str, *, draft: bool = False,
                       include_empty: bool = False, by: str | None = None) -> list[Invoice]:
    """The invoice of every project with something to bill for ``month`` (usage in it, an
    invoice already issued for it, or late usage of an earlier frozen month), by project;
    issuing those not yet issued unless ``draft``; lines split ``by`` if asked."""
    month = parse_month(month)
    by = check_by(by)
    return [invoice(store, now, p, month, draft=draft, include_empty=include_empty, by=by)
            for p in projects_to_invoice(store, month)]


def is_issued(store: Store, project: str, month: str) -> bool:
    """Whether ``project``'s invoice for ``month`` has been issued (and so is frozen)."""
    return sql.issued(store, project, parse_month(month)) is not None


def projects_to_invoice(store: Store, month: str) -> list[str]:
    """Projects with something to bill for ``month``, by name: chargeable usage in it, an
    invoice already issued for it, or late usage of an earlier frozen month."""
    return sql.projects_to_invoice(store, parse_month(month))


def issued_invoices(store: Store, month: str | None = None, *,
                    include_void: bool = False) -> list[Invoice]:
    """Every issued invoice (of ``month``, if given; voided ones too if asked), by number."""
    found = sql.issued_invoices(store, None if month is None else parse_month(month),
                                include_void=include_void)
    return [replace(Invoice.from_dict(s.data), state=s.state,
                    credit_note=None if s.credit_note is None else credit_label(s.credit_note))
            for s in found]


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def _parse_iso(value: object) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))
