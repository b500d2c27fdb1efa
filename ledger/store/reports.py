"""The SQL behind reports: daily spend, streamed usage rows and estimator calibration.

Everything is aggregated by the database (``GROUP BY`` on the indexed ``month``/``project``
columns); usage rows are streamed in batches (``yield_per``: a server-side cursor on
PostgreSQL, SQLite's lazy cursor), so memory stays flat however many rows there are.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, case, false, func, select

from .ops import Store, _translate, translate_db_error
from .schema import events

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

    def where(self) -> list[ColumnElement[bool]]:
        cond: list[ColumnElement[bool]] = []
        if self.project is not None:
            cond.append(events.c.project == self.project)
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


USAGE_COLUMNS = (
    events.c.id, events.c.at, events.c.project, events.c.month, events.c.model,
    events.c.status, events.c.estimated, events.c.prompt_tokens, events.c.completion_tokens,
    events.c.cached_tokens, events.c.est_prompt_tokens, events.c.input_price,
    events.c.output_price, events.c.cached_price, events.c.cost, events.c.http_status,
    events.c.error, events.c.call_id,
)


def iter_usage(store: Store, flt: UsageFilter, batch: int = 2000) -> Iterator[tuple[Any, ...]]:
    """The filtered events in recording order, as raw tuples (``USAGE_COLUMNS``), streamed.

    A generator: the read transaction stays open while it is consumed; close it (or exhaust
    it) to release the connection.
    """
    stmt = (
        select(*USAGE_COLUMNS)
        .where(*flt.where())
        .order_by(events.c.id)
    )
    try:
        with store.read() as conn:
            result = conn.execution_options(yield_per=batch).execute(stmt)
            try:
                for partition in result.partitions():
                    for row in partition:
                        yield tuple(row)
            finally:
                result.close()
    except Exception as exc:
        mine = translate_db_error(exc, store.engine)
        if mine is None:
            raise
        raise mine from exc


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
