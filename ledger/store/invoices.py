"""The SQL behind invoices: aggregate a project-month's events into lines, and freeze an issue.

Lines are computed by the database (``GROUP BY`` over integer tokens and integer costs, so the
sums are exact on every backend), never by a Python loop over events.

Freezing, by watermark. Issuing an invoice is one write transaction that

1. shuts out every concurrent writer of ``events`` (SQLite: the ``BEGIN IMMEDIATE`` write
   lock; PostgreSQL: ``LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE``, which waits for the
   transactions already writing events to finish and holds new ones until this one commits,
   and also serialises issuers), so every event that will ever get an id below the current
   maximum is committed and visible;
2. returns the stored document if the project-month is already issued;
3. takes the watermark ``W = max(events.id)``; the invoice covers exactly the month's events
   with ``id <= W`` — nothing is written to those events, so issuing a month of a million
   events reads them once (one aggregate) and writes one row;
4. bills *late* usage: events of the project's earlier, already frozen months with an id above
   that month's watermark and no ``invoice_id`` yet. They are aggregated as adjustment lines
   and marked with this invoice's id (``events.invoice_id`` means "billed as an adjustment on
   that invoice"), so each is billed exactly once;
5. stores the document (the rendered invoice plus its watermark) under the next number.

Invariant: an event of a month that is not frozen never has an ``invoice_id``. Events are
append-only, so ids only grow: anything recorded after the freeze has ``id > W``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, text, update
from sqlalchemy.engine import Connection

from .ops import CHARGED, Store, _translate
from .schema import events, invoices

DOC_VERSION = 1


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


@dataclass(frozen=True)
class Frozen:
    """An issued project-month and its watermark (the largest event id it covers)."""

    project: str
    month: str
    last_event_id: int


def _chargeable() -> ColumnElement[bool]:
    return and_(
        events.c.status.in_(CHARGED),
        or_(events.c.cost > 0, events.c.prompt_tokens > 0, events.c.completion_tokens > 0),
    )


def _late(f: Frozen) -> list[ColumnElement[bool]]:
    """Events of a frozen month recorded after its freeze and not billed since."""
    return [events.c.project == f.project, events.c.month == f.month,
            events.c.id > f.last_event_id, events.c.invoice_id.is_(None)]


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


def _rows(conn: Connection, project: str, month: str, upto: int | None,
          frozen: list[Frozen]) -> list[LineRow]:
    own = [events.c.project == project, events.c.month == month]
    if upto is not None:
        own.append(events.c.id <= upto)
    rows = _aggregate(conn, *own)
    for f in frozen:
        rows.extend(_aggregate(conn, *_late(f)))
    return rows


def _unpack(document: str) -> tuple[dict[str, Any], int]:
    data = json.loads(document)
    return data["invoice"], int(data["last_event_id"])


def _issued(conn: Connection, project: str, month: str) -> dict[str, Any] | None:
    found = conn.execute(
        select(invoices.c.document)
        .where(invoices.c.project == project, invoices.c.month == month)
    ).scalar_one_or_none()
    return None if not found else _unpack(str(found))[0]


def _frozen(conn: Connection, *where: ColumnElement[bool]) -> list[Frozen]:
    rows = conn.execute(
        select(invoices.c.project, invoices.c.month, invoices.c.document)
        .where(*where).order_by(invoices.c.month, invoices.c.project)
    ).all()
    return [Frozen(p, m, _unpack(str(d))[1]) for p, m, d in rows]


def _frozen_before(conn: Connection, project: str, month: str) -> list[Frozen]:
    return _frozen(conn, invoices.c.project == project, invoices.c.month < month)


@_translate
def issued(store: Store, project: str, month: str) -> dict[str, Any] | None:
    """The issued invoice of ``project`` for ``month`` (as rendered when issued), if any."""
    with store.read() as conn:
        return _issued(conn, project, month)


@_translate
def draft_rows(store: Store, project: str, month: str) -> list[LineRow]:
    """What issuing would bill now: the month's events plus late usage of frozen months.

    Nothing is written.
    """
    with store.read() as conn:
        return _rows(conn, project, month, None, _frozen_before(conn, project, month))


@_translate
def issue(
    store: Store, project: str, month: str, issued_at: int,
    render: Callable[[int, list[LineRow]], tuple[dict[str, Any], int]],
) -> dict[str, Any]:
    """Issue (freeze) the invoice of ``project`` for ``month`` once; return it as data.

    ``render(number, rows)`` turns the aggregated rows into ``(invoice data, total_units)``;
    it runs inside the transaction, so a failure there issues nothing.
    """
    with store.write() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE"))
        existing = _issued(conn, project, month)
        if existing is not None:
            return existing
        watermark = int(conn.execute(select(func.coalesce(func.max(events.c.id), 0)))
                        .scalar_one())
        frozen = _frozen_before(conn, project, month)
        rows = _rows(conn, project, month, watermark, frozen)
        number = int(conn.execute(
            select(func.coalesce(func.max(invoices.c.number), 0) + 1)).scalar_one())
        data, total_units = render(number, rows)
        document = json.dumps({"v": DOC_VERSION, "last_event_id": watermark, "invoice": data},
                              ensure_ascii=False)
        key = conn.execute(
            invoices.insert().values(number=number, project=project, month=month,
                                     issued_at=issued_at, total_units=total_units,
                                     document=document)
        ).inserted_primary_key
        assert key is not None
        for f in frozen:
            conn.execute(update(events).where(*_late(f)).values(invoice_id=int(key[0])))
        return data


@_translate
def projects_to_invoice(store: Store, month: str) -> list[str]:
    """Projects with something to bill for ``month``: chargeable usage in it, an issued
    invoice for it, or late usage of an earlier frozen month waiting for their next invoice."""
    with store.read() as conn:
        found = set(conn.execute(
            select(events.c.project).where(events.c.month == month, _chargeable()).distinct()
        ).scalars())
        found.update(conn.execute(
            select(invoices.c.project).where(invoices.c.month == month)).scalars())
        for f in _frozen(conn, invoices.c.month < month):
            if f.project not in found and conn.execute(
                select(events.c.id).where(*_late(f), _chargeable()).limit(1)
            ).first() is not None:
                found.add(f.project)
    return sorted(found)


@_translate
def issued_invoices(store: Store, month: str | None = None) -> list[dict[str, Any]]:
    """Every issued invoice (of ``month``, if given) as data, by number."""
    with store.read() as conn:
        stmt = select(invoices.c.document).order_by(invoices.c.number)
        if month is not None:
            stmt = stmt.where(invoices.c.month == month)
        return [_unpack(str(d))[0] for d in conn.execute(stmt).scalars()]
