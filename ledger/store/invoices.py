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

Invariant: an event of a month that is not frozen never has an ``invoice_id``, except late
usage billed on a later invoice of a month whose own invoice was voided since; a month's own
lines therefore skip events that carry an ``invoice_id`` (they were billed already). Events are
append-only, so ids only grow: anything recorded after the freeze has ``id > W``.

Voiding, in one write transaction under the same lock: the invoice's state becomes ``void``
(it stops freezing its month, which can be issued again), the late usage it billed returns to
the pending pool (``invoice_id`` back to NULL), and a credit note takes the next number of its
own sequence. Numbers of both sequences are ``max + 1`` under that lock: gap-free and unique.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, or_, select, text, update
from sqlalchemy.engine import Connection

from ..errors import InvalidInput
from .ops import CHARGED, Store, _translate
from .schema import EVENT_DAY, credit_notes, customers, events, invoices

ISSUED = "issued"
VOID = "void"

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
    estimated_calls: int = 0
    #: A part's end user and tags (``"k=v,k2=v2"``); None on a line and when not attributed.
    user: str | None = None
    tags: str | None = None
    #: The line's events per (end user, tags): they add up to the line exactly.
    parts: tuple[LineRow, ...] = ()


def _plus(a: LineRow, b: LineRow) -> LineRow:
    """Two groups of events as one: exact integer sums, the first and the last call."""
    return replace(a, calls=a.calls + b.calls, prompt_tokens=a.prompt_tokens + b.prompt_tokens,
                   completion_tokens=a.completion_tokens + b.completion_tokens,
                   cached_tokens=a.cached_tokens + b.cached_tokens,
                   cost_units=a.cost_units + b.cost_units,
                   first_at=min(a.first_at, b.first_at), last_at=max(a.last_at, b.last_at),
                   estimated_calls=a.estimated_calls + b.estimated_calls)


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
    """The events matching ``where`` as lines: one per model and price period, each with its
    parts per end user and tags.

    The database sums the events per model, unit price, UTC day, end user and tags (a few
    rows per model and day and user, whatever the number of events); consecutive days at
    the same price are then joined into one period, so a price that changes and later comes
    back (A, B, A) gives three lines, while a price set again unchanged gives one.
    """
    # In the order of ``ix_events_invoice_lines``, which covers the query: SQLite reads the
    # groups from the index in order (no sort of the month's events, no table lookup).
    group = (events.c.month, events.c.model, events.c.input_price, events.c.output_price,
             events.c.cached_price, EVENT_DAY.label("day"), events.c.user, events.c.tags)
    # cached tokens as billed: never more than the call's prompt tokens (``cost_units``)
    cached = case((events.c.cached_tokens > events.c.prompt_tokens, events.c.prompt_tokens),
                  else_=events.c.cached_tokens)
    rows = conn.execute(
        select(*group, func.count(), func.sum(events.c.prompt_tokens),
               func.sum(events.c.completion_tokens), func.sum(cached),
               func.sum(events.c.cost), func.min(events.c.at), func.max(events.c.at),
               func.sum(case((events.c.estimated, 1), else_=0)))
        .where(*where, _chargeable())
        .group_by(*group)
    ).all()
    fine = [(int(r[5]), LineRow(
        r[0], r[1], int(r[2]), int(r[3]), None if r[4] is None else int(r[4]), int(r[8]),
        int(r[9]), int(r[10]), int(r[11]), int(r[12]), int(r[13]), int(r[14]), int(r[15] or 0),
        user=r[6] or None, tags=(r[7] or "").strip(",") or None)) for r in rows]
    return _periods(fine)


def _price(row: LineRow) -> tuple[str, str, int, int, int | None]:
    return (row.month, row.model, row.input_price, row.output_price, row.cached_price)


def _periods(fine: list[tuple[int, LineRow]]) -> list[LineRow]:
    """Rows per day (and end user and tags) joined into price periods: per month and model,
    in time order, each run of days at one price is one line; its parts are its rows summed
    per (end user, tags)."""
    days: dict[tuple[tuple[str, str, int, int, int | None], int], LineRow] = {}
    for day, row in fine:
        key = (_price(row), day)
        whole = replace(row, user=None, tags=None)
        days[key] = _plus(days[key], whole) if key in days else whole
    lines: list[LineRow] = []
    period: dict[tuple[tuple[str, str, int, int, int | None], int], int] = {}
    current: dict[tuple[str, str], int] = {}  # (month, model) -> index of its running period
    for key, row in sorted(days.items(), key=lambda kv: (kv[1].month, kv[1].model,
                                                          kv[1].first_at, kv[1].last_at)):
        run = current.get((row.month, row.model))
        if run is not None and _price(lines[run]) == _price(row):
            lines[run] = _plus(lines[run], row)
        else:
            run = current[(row.month, row.model)] = len(lines)
            lines.append(row)
        period[key] = run
    parts: list[dict[tuple[str | None, str | None], LineRow]] = [{} for _ in lines]
    for day, row in fine:
        mine = parts[period[(_price(row), day)]]
        who = (row.user, row.tags)
        mine[who] = _plus(mine[who], row) if who in mine else row
    return [replace(line, parts=tuple(sorted(
        found.values(), key=lambda p: (p.user is None, p.user or "", p.tags is None,
                                       p.tags or ""))))
            for line, found in zip(lines, parts, strict=True)]


def _rows(conn: Connection, project: str, month: str, upto: int | None,
          frozen: list[Frozen]) -> list[LineRow]:
    own = [events.c.project == project, events.c.month == month, events.c.invoice_id.is_(None)]
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
        .where(invoices.c.project == project, invoices.c.month == month,
               invoices.c.state == ISSUED)
    ).scalar_one_or_none()
    return None if not found else _unpack(str(found))[0]


def _frozen(conn: Connection, *where: ColumnElement[bool]) -> list[Frozen]:
    rows = conn.execute(
        select(invoices.c.project, invoices.c.month, invoices.c.document)
        .where(*where, invoices.c.state == ISSUED)
        .order_by(invoices.c.month, invoices.c.project)
    ).all()
    return [Frozen(p, m, _unpack(str(d))[1]) for p, m, d in rows]


def _frozen_before(conn: Connection, project: str, month: str) -> list[Frozen]:
    return _frozen(conn, invoices.c.project == project, invoices.c.month < month)


@_translate
def issued(store: Store, project: str, month: str) -> dict[str, Any] | None:
    """The issued invoice of ``project`` for ``month`` (as rendered when issued), if any."""
    with store.read() as conn:
        return _issued(conn, project, month)


def _history(conn: Connection, project: str) -> list[dict[str, Any]]:
    """The project's issued (not voided) invoices as data, by number."""
    return [_unpack(str(d))[0] for d in conn.execute(
        select(invoices.c.document)
        .where(invoices.c.project == project, invoices.c.state == ISSUED)
        .order_by(invoices.c.number)).scalars()]


Render = Callable[[int, list[LineRow], list[dict[str, Any]]], tuple[dict[str, Any], int] | None]


@_translate
def draft_rows(store: Store, project: str, month: str
               ) -> tuple[list[LineRow], list[dict[str, Any]]]:
    """What issuing would bill now: the month's events plus late usage of frozen months,
    and the project's issued invoices (for the adjustments' carried remainder).

    Nothing is written.
    """
    with store.read() as conn:
        rows = _rows(conn, project, month, None, _frozen_before(conn, project, month))
        return rows, _history(conn, project)


@_translate
def known_project(store: Store, project: str) -> bool:
    """Whether ``project`` has any recorded event, invoice or customer record."""
    with store.read() as conn:
        for table in (events, invoices, customers):
            if conn.execute(select(table.c.project).where(table.c.project == project)
                            .limit(1)).first() is not None:
                return True
    return False


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE"))


@_translate
def issue(
    store: Store, project: str, month: str, issued_at: int, render: Render,
) -> dict[str, Any] | None:
    """Issue (freeze) the invoice of ``project`` for ``month`` once; return it as data.

    ``render(number, rows, history)`` turns the aggregated rows into ``(invoice data,
    total_units)``, or None to issue nothing (then None is returned); it runs inside the
    transaction, so a failure there issues nothing.
    """
    with store.write() as conn:
        _lock(conn)
        existing = _issued(conn, project, month)
        if existing is not None:
            return existing
        watermark = int(conn.execute(select(func.coalesce(func.max(events.c.id), 0)))
                        .scalar_one())
        frozen = _frozen_before(conn, project, month)
        rows = _rows(conn, project, month, watermark, frozen)
        number = int(conn.execute(
            select(func.coalesce(func.max(invoices.c.number), 0) + 1)).scalar_one())
        rendered = render(number, rows, _history(conn, project))
        if rendered is None:
            return None
        data, total_units = rendered
        document = json.dumps({"v": DOC_VERSION, "last_event_id": watermark, "invoice": data},
                              ensure_ascii=False)
        key = conn.execute(
            invoices.insert().values(number=number, project=project, month=month,
                                     issued_at=issued_at, total_units=total_units,
                                     document=document, state=ISSUED)
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
            select(invoices.c.project).where(invoices.c.month == month,
                                             invoices.c.state == ISSUED)).scalars())
        for f in _frozen(conn, invoices.c.month < month):
            if f.project not in found and conn.execute(
                select(events.c.id).where(*_late(f), _chargeable()).limit(1)
            ).first() is not None:
                found.add(f.project)
    return sorted(found)


@dataclass(frozen=True)
class Stored:
    """An invoice as stored: its document, state, and the credit note that voided it."""

    data: dict[str, Any]
    state: str
    voided_at: int | None
    credit_note: int | None


@_translate
def issued_invoices(store: Store, month: str | None = None, *,
                    include_void: bool = False) -> list[Stored]:
    """Every issued invoice (of ``month``, if given; voided ones too if asked), by number."""
    with store.read() as conn:
        stmt = (select(invoices.c.document, invoices.c.state, invoices.c.voided_at,
                       credit_notes.c.number)
                .outerjoin(credit_notes, credit_notes.c.invoice_number == invoices.c.number)
                .order_by(invoices.c.number))
        if month is not None:
            stmt = stmt.where(invoices.c.month == month)
        if not include_void:
            stmt = stmt.where(invoices.c.state == ISSUED)
        return [Stored(_unpack(str(d))[0], str(st), None if v is None else int(v),
                       None if cn is None else int(cn))
                for d, st, v, cn in conn.execute(stmt).all()]


@_translate
def void(store: Store, number: int, voided_at: int,
         render: Callable[[int, dict[str, Any]], tuple[dict[str, Any], int, str]]
         ) -> dict[str, Any]:
    """Void invoice ``number`` and issue its credit note; return the credit note as data.

    ``render(credit_number, invoice_data)`` makes ``(credit note data, total_units, reason)``.
    """
    with store.write() as conn:
        _lock(conn)
        row = conn.execute(select(invoices.c.id, invoices.c.document, invoices.c.state,
                                  invoices.c.project, invoices.c.month)
                           .where(invoices.c.number == number)).first()
        if row is None:
            raise InvalidInput(f"no invoice INV-{number:06d}")
        if row[2] != ISSUED:
            cn = conn.execute(select(credit_notes.c.number)
                              .where(credit_notes.c.invoice_number == number)).scalar()
            raise InvalidInput(f"INV-{number:06d} is already void (credit note "
                               f"CN-{int(cn or 0):06d})")
        credit = int(conn.execute(
            select(func.coalesce(func.max(credit_notes.c.number), 0) + 1)).scalar_one())
        data, total_units, reason = render(credit, _unpack(str(row[1]))[0])
        conn.execute(update(invoices).where(invoices.c.id == row[0])
                     .values(state=VOID, voided_at=voided_at))
        conn.execute(update(events).where(events.c.invoice_id == row[0])
                     .values(invoice_id=None))
        conn.execute(credit_notes.insert().values(
            number=credit, invoice_number=number, project=row[3], month=row[4],
            issued_at=voided_at, total_units=total_units, reason=reason,
            document=json.dumps({"v": DOC_VERSION, "credit_note": data}, ensure_ascii=False)))
        return data


@_translate
def credit_note_list(store: Store) -> list[dict[str, Any]]:
    """Every credit note as data, by number."""
    with store.read() as conn:
        return [json.loads(str(d))["credit_note"] for d in conn.execute(
            select(credit_notes.c.document).order_by(credit_notes.c.number)).scalars()]
