"""The SQL behind reports: daily spend, streamed usage rows and estimator calibration.

Everything is aggregated by the database (``GROUP BY`` on the indexed ``month``/``project``
columns); usage rows are streamed in batches straight from the DBAPI cursor (a named,
server-side cursor on PostgreSQL, SQLite's lazy cursor; ``fetchmany``, no SQLAlchemy row per
event), so memory stays flat however many rows there are.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, case, false, func, select

from .ops import Store
from .schema import events
from .unavailable import is_unavailable, unavailable
from .unavailable import translated as _translate

DAY_MICROS = 86_400_000_000
USAGE_STATUSES = ("ok", "failed", "refused", "cancelled", "expired", "estimated")


@dataclass(frozen=True)
class UsageFilter:
    """Which events to list: any combination; ``status="estimated"`` means usage the server did
    not report (estimated by the ledger), whatever the call's status."""

    project: str | None = None
    month: str | None = None
    model: str | None = None
    status: str | None = None
    #: An end user's calls only.
    user: str | None = None
    #: Calls carrying this tag (``"k=v"``) only.
    tag: str | None = None

    def where(self) -> list[ColumnElement[bool]]:
        cond: list[ColumnElement[bool]] = []
        if self.project is not None:
            cond.append(events.c.project == self.project)
        if self.user is not None:
            cond.append(events.c.user == self.user)
        if self.tag is not None:
            needle = self.tag.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            cond.append(events.c.tags.like(f"%,{needle},%", escape="\\"))
        if self.month is not None:
            cond.append(events.c.month == self.month)
        if self.model is not None:
            cond.append(events.c.model == self.model)
        if self.status == "estimated":
            cond.append(events.c.estimated.is_(True))
        elif self.status is not None:
            cond.append(events.c.status == self.status)
        return cond


@_translate
def daily_costs(store: Store, month: str, month_start: int) -> dict[str, dict[int, int]]:
    """``{project: {day index (0 = the 1st): cost units}}`` of the month's events."""
    day = ((events.c.at - month_start) // DAY_MICROS).label("day")
    out: dict[str, dict[int, int]] = {}
    with store.read() as conn:
        rows = conn.execute(
            select(events.c.project, day, func.sum(events.c.cost))
            .where(events.c.month == month, events.c.cost > 0)
            .group_by(events.c.project, day)
        ).all()
    for project, index, units in rows:
        out.setdefault(project, {})[int(index)] = int(units)
    return out


#: The columns of a usage record, in order: ``ledger usage``'s fields as stored (``at`` in
#: microseconds, prices in PRICE_UNIT, ``cost`` in UNIT, ``tags`` as ``",k=v,"``).
USAGE_COLUMNS = ("id", "at", "project", "month", "model", "status", "estimated",
                 "prompt_tokens", "completion_tokens", "cached_tokens", "est_prompt_tokens",
                 "input_price", "output_price", "cached_price", "cost", "http_status", "error",
                 "call_id", "reasoning_tokens", "user", "tags")


def usage_batches(store: Store, flt: UsageFilter, batch: int = 5000
                  ) -> Iterator[list[tuple[Any, ...]]]:
    """The filtered events by call time (``at``, then ``id`` for calls at the same instant:
    a call recorded late with ``at=`` takes its place in time), as plain DBAPI tuples in
    :data:`USAGE_COLUMNS` order, ``batch`` at a time (``fetchmany``).

    The statement is compiled once and run on the raw DBAPI connection: a named (server-side)
    cursor on PostgreSQL, so the server sends ``batch`` rows per round trip and the client
    never holds more; SQLite's cursor steps the statement lazily. A generator: the read
    transaction stays open while it is consumed; close it (or exhaust it) to release the
    connection.
    """
    stmt = (
        select(*(events.c[name] for name in USAGE_COLUMNS))
        .where(*flt.where())
        .order_by(events.c.at, events.c.id)
    )
    try:
        with store.read() as conn:
            compiled = stmt.compile(dialect=conn.dialect,
                                    compile_kwargs={"render_postcompile": True})
            params: Any = compiled.params
            if compiled.positional:
                params = [params[name] for name in compiled.positiontup or ()]
            raw: Any = conn.connection.driver_connection
            if conn.dialect.name == "postgresql":
                cursor = raw.cursor(name=f"ledger_usage_{uuid.uuid4().hex}")
            else:
                cursor = raw.cursor()
            try:
                cursor.execute(str(compiled), params)
                while rows := cursor.fetchmany(batch):
                    yield rows
            finally:
                cursor.close()
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        raise unavailable(exc) from exc


@_translate
def count_usage(store: Store, flt: UsageFilter) -> int:
    with store.read() as conn:
        return int(conn.execute(
            select(func.count()).select_from(events).where(*flt.where())).scalar_one())


@dataclass(frozen=True)
class CalibrationRow:
    """Estimated vs reported prompt tokens of one model's settled calls."""

    model: str
    calls: int
    estimated_prompt_tokens: int
    actual_prompt_tokens: int
    absolute_error_tokens: int
    overestimated_calls: int


@_translate
def calibration(store: Store, flt: UsageFilter) -> list[CalibrationRow]:
    """Per model, over ``ok`` calls with a pre-flight estimate and server-reported usage."""
    est, actual = events.c.est_prompt_tokens, events.c.prompt_tokens
    with store.read() as conn:
        rows = conn.execute(
            select(events.c.model, func.count(), func.sum(est), func.sum(actual),
                   func.sum(func.abs(actual - est)),
                   func.sum(case((est >= actual, 1), else_=0)))
            .where(*UsageFilter(flt.project, flt.month, flt.model).where(),
                   events.c.status == "ok", events.c.estimated == false(),
                   est.is_not(None))
            .group_by(events.c.model)
            .order_by(events.c.model)
        ).all()
    return [CalibrationRow(r[0], int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]))
            for r in rows]


def _scope(project: str, user: str | None, tag: str | None) -> list[ColumnElement[bool]]:
    """The events a budget's scope counts: its project's, one end user's, one tag's."""
    cond: list[ColumnElement[bool]] = [events.c.project == project]
    if user is not None:
        cond.append(events.c.user == user)
    if tag is not None:  # canonical ",k=v,k2=v2,": one tag matches exactly
        cond.append(events.c.tags.contains(f",{tag},", autoescape=True))
    return cond


@_translate
def scope_costs(store: Store, project: str, user: str | None, tag: str | None, start: int,
                end: int, step: int) -> dict[int, int]:
    """``{bucket index: cost units}`` of a scope's events with ``start <= at < end``, in
    buckets of ``step`` microseconds from ``start``."""
    bucket = ((events.c.at - start) // step).label("bucket")
    with store.read() as conn:
        rows = conn.execute(
            select(bucket, func.sum(events.c.cost))
            .where(*_scope(project, user, tag), events.c.at >= start, events.c.at < end,
                   events.c.cost > 0)
            .group_by(bucket)
        ).all()
    return {int(index): int(units) for index, units in rows}


@dataclass(frozen=True)
class GroupedCost:
    """A month's charged events of one project with one value of ``user``, ``tags`` (the
    stored ",k=v,..." text) or ``model``."""

    project: str
    key: str | None
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_units: int


@_translate
def grouped_costs(store: Store, month: str, by: str, project: str | None = None
                  ) -> list[GroupedCost]:
    """Charged (``ok``/``cancelled``) events of ``month`` per project and ``by`` column."""
    column = {"user": events.c.user, "tag": events.c.tags, "model": events.c.model}[by]
    cond: list[ColumnElement[bool]] = [events.c.month == month,
                                       events.c.status.in_(("ok", "cancelled"))]
    if project is not None:
        cond.append(events.c.project == project)
    with store.read() as conn:
        rows = conn.execute(
            select(events.c.project, column, func.count(), func.sum(events.c.prompt_tokens),
                   func.sum(events.c.completion_tokens), func.sum(events.c.cost))
            .where(*cond)
            .group_by(events.c.project, column)
        ).all()
    return [GroupedCost(str(r[0]), None if r[1] is None else str(r[1]), int(r[2]), int(r[3]),
                        int(r[4]), int(r[5])) for r in rows]
