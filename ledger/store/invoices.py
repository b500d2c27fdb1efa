"""The SQL behind invoices: aggregate a project-month's events into lines, and freeze an issue.

Lines are computed by the database (``GROUP BY`` over integer tokens and integer costs, so the
sums are exact on every backend), never by a Python loop over events.

Freezing. Issuing an invoice is one write transaction that

1. serialises issuers (SQLite: the ``BEGIN IMMEDIATE`` write lock; PostgreSQL: a transaction
   advisory lock), so that numbers are gap-free and in sequence and two processes issuing the
   same project-month at once get one invoice;
2. returns the stored document if the project-month is already issued;
3. inserts the invoice row (the next number), then *marks* every not-yet-invoiced event of the
   month — and every late event of an earlier frozen month of the project — with its id;
4. aggregates exactly the marked events into lines (so an event committed concurrently is
   either marked and counted, or neither), and stores the rendered document.

An event whose month is already frozen but which carries no ``invoice_id`` arrived late: it is
billed as an adjustment line on the project's next invoice (for a later month).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, func, or_, select, text, update
from sqlalchemy.engine import Connection

from .ops import Store, _translate
from .schema import events, invoices

#: Statuses that may carry a charge; failed and refused calls never appear on an invoice.
CHARGED = ("ok", "cancelled")
_ISSUE_LOCK_KEY = 7_265_811_020_265  # pg_advisory_xact_lock key for invoice numbering


@dataclass(frozen=True)
class LineRow:
    """One aggregated group of events: a model at one unit price, in one month."""

    month: str
    model: str
    input_price: int
    output_price: int
    cached_price: int | None
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_units: int
    first_at: int
    last_at: int


def _chargeable() -> ColumnElement[bool]:
    return and_(
        events.c.status.in_(CHARGED),
        or_(events.c.cost > 0, events.c.prompt_tokens > 0, events.c.completion_tokens > 0),
    )


def _frozen_months(project: str, before: str) -> ColumnElement[bool]:
    """Events of months of ``project`` that are already frozen and earlier than ``before``."""
    frozen = select(invoices.c.month).where(invoices.c.project == project,
                                            invoices.c.month < before)
    return events.c.month.in_(frozen.scalar_subquery())


def _aggregate(conn: Connection, *where: ColumnElement[bool]) -> list[LineRow]:
    group = (events.c.month, events.c.model, events.c.input_price, events.c.output_price,
             events.c.cached_price)
    rows = conn.execute(
        select(*group, func.count(), func.sum(events.c.prompt_tokens),
               func.sum(events.c.completion_tokens), func.sum(events.c.cached_tokens),
               func.sum(events.c.cost), func.min(events.c.at), func.max(events.c.at))
        .where(*where, _chargeable())
        .group_by(*group)
    ).all()
    return [LineRow(r[0], r[1], int(r[2]), int(r[3]), None if r[4] is None else int(r[4]),
                    int(r[5]), int(r[6]), int(r[7]), int(r[8]), int(r[9]), int(r[10]),
                    int(r[11])) for r in rows]


@_translate
def issued_document(store: Store, project: str, month: str) -> str | None:
    """The stored document of the issued invoice of ``project`` for ``month``, if any."""
    with store.read() as conn:
        return _issued(conn, project, month)


def _issued(conn: Connection, project: str, month: str) -> str | None:
    found = conn.execute(
        select(invoices.c.document)
        .where(invoices.c.project == project, invoices.c.month == month)
    ).scalar_one_or_none()
    return None if found is None or found == "" else str(found)


@_translate
def draft_rows(store: Store, project: str, month: str) -> list[LineRow]:
    """What issuing would bill now: the month's unbilled events plus late usage of frozen months.

    Nothing is written.
    """
    with store.read() as conn:
        return _aggregate(
            conn, events.c.project == project, events.c.invoice_id.is_(None),
            or_(events.c.month == month, _frozen_months(project, month)),
        )


@_translate
def issue(
    store: Store, project: str, month: str, issued_at: int,
    render: Callable[[int, list[LineRow]], tuple[str, int]],
) -> str:
    """Issue (freeze) the invoice of ``project`` for ``month`` once; return its document.

    ``render(number, rows)`` turns the aggregated rows into ``(document, total_units)``; it
    runs inside the transaction, so a failure there issues nothing.
    """
    with store.write() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ISSUE_LOCK_KEY})
        existing = _issued(conn, project, month)
        if existing is not None:
            return existing
        number = int(conn.execute(
            select(func.coalesce(func.max(invoices.c.number), 0) + 1)).scalar_one())
        key = conn.execute(
            invoices.insert().values(number=number, project=project, month=month,
                                     issued_at=issued_at, total_units=0, document="")
        ).inserted_primary_key
        assert key is not None
        invoice_id = int(key[0])
        conn.execute(
            update(events)
            .where(events.c.project == project, events.c.invoice_id.is_(None),
                   or_(events.c.month == month, _frozen_months(project, month)))
            .values(invoice_id=invoice_id)
            .execution_options(synchronize_session=False)
        )
        rows = _aggregate(conn, events.c.project == project, events.c.invoice_id == invoice_id)
        document, total_units = render(number, rows)
        conn.execute(
            update(invoices).where(invoices.c.id == invoice_id)
            .values(document=document, total_units=total_units)
        )
        return document


@_translate
def projects_to_invoice(store: Store, month: str) -> list[str]:
    """Projects with something to bill for ``month``: chargeable usage in it, an issued
    invoice for it, or late usage of an earlier frozen month waiting for their next invoice."""
    with store.read() as conn:
        used = select(events.c.project).where(events.c.month == month, _chargeable())
        issued = select(invoices.c.project).where(invoices.c.month == month)
        frozen = (
            select(invoices.c.project, invoices.c.month)
            .where(invoices.c.month < month).subquery()
        )
        late = (
            select(events.c.project)
            .join(frozen, and_(frozen.c.project == events.c.project,
                               frozen.c.month == events.c.month))
            .where(events.c.invoice_id.is_(None), _chargeable())
        )
        found = set(conn.execute(used.distinct()).scalars())
        found.update(conn.execute(issued).scalars())
        found.update(conn.execute(late.distinct()).scalars())
    return sorted(found)


@_translate
def invoice_documents(store: Store, month: str | None = None) -> list[str]:
    """Every issued invoice's document (of ``month``, if given), by number."""
    with store.read() as conn:
        stmt = select(invoices.c.document).order_by(invoices.c.number)
        if month is not None:
            stmt = stmt.where(invoices.c.month == month)
        return [str(d) for d in conn.execute(stmt).scalars()]
