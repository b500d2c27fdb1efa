"""The SQL behind reports: daily spend, streamed usage rows and estimator calibration.

Everything is aggregated by the database (``GROUP BY`` on the indexed ``month``/``project``
columns); usage rows are streamed in batches (``yield_per``: a server-side cursor on
PostgreSQL, SQLite's lazy cursor), so memory stays flat however many rows there are.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import ColumnElement, case, false, func, select
from sqlalchemy.engine import RowMapping

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


def iter_usage(store: Store, flt: UsageFilter, batch: int = 2000) -> Iterator[RowMapping]:
    """The filtered events by call time (``at``, then ``id`` for calls at the same instant:
    a call recorded late with ``at=`` takes its place in time), each a row mapping by
    column name, streamed.

    A generator: the read transaction stays open while it is consumed; close it (or exhaust
    it) to release the connection.
    """
    stmt = (
        select(events)
        .where(*flt.where())
        .order_by(events.c.at, events.c.id)
    )
    try:
        with store.read() as conn:
            result = conn.execution_options(yield_per=batch).execute(stmt)
            try:
                for partition in result.partitions():
                    for row in partition:
                        yield row._mapping
            finally:
                result.close()
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
