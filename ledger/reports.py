"""Reports: the monthly budget report, streamed usage rows and the estimator's calibration.

Budget report, per project with a budget or with activity in the month:

* ``limit`` (None: no budget), ``hard``; ``spent`` (settled cost), ``reserved`` (held by calls
  in flight; expired holds are released first), ``remaining = limit - spent - reserved``;
* ``percent_used = (spent + reserved) / limit × 100``, to two decimals;
* ``status``: ``over`` when spent + reserved is above the limit, ``warning`` from 80%,
  else ``ok`` (a project without a budget is always ``ok``);
* ``burn_rate_per_day = spent / elapsed days`` where the elapsed days run from the first
  instant of the month (UTC) to now, counted as at least one day (so the first hours of a
  month do not extrapolate wildly); a finished month's elapsed days are all its days;
* ``forecast = spent + burn_rate_per_day × days left in the month``: a straight-line
  projection of the month-to-date settled spend to the month's end (reserved amounts are
  worst cases of calls in flight, so they are left out). A finished month's forecast is its
  spend; a month not yet begun forecasts its spend so far (normally 0).
* ``daily``: settled spend per UTC day, for the HTML report's chart.

Every budget (any scope and period, ``budgets``), one line per budget window in force at the
report's instant (``now``, or the month's last instant for a finished month; a ``"*"``
budget has one line per end user with activity in the window, or one empty line):

* ``spent``/``reserved``/``remaining``/``percent_used``/``status`` as above, of that window;
* ``burn_rate_per_day = spent / elapsed`` (elapsed counted as at least an hour for a day
  window, a day otherwise) and ``forecast = spent + burn × time left`` in the window; a
  window that is over (and every ``total`` budget: prepaid credit has no end) forecasts its
  spend;
* ``hot``: 80% used or more, or forecast over the limit; the hot lines (the 24 hottest by
  forecast against limit) carry their spend per hour (day windows) or per day (``series``),
  for the HTML report's charts.

``spend_by(..., by="user"|"tag"|"model")`` groups the month's settled spend per project by
end user, by tag (a call with two tags counts in both) or by model.

"Now" is the ``now`` the caller passes (``Ledger`` passes its injectable clock's time); every
function takes the store it reads, never the whole ``Ledger``. Burn rate and forecast are estimates,
shown rounded half-even to the cent; spent, reserved and remaining are exact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, fields, replace
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, ClassVar

from .budget import BudgetState
from .clock import month_bounds, month_of, parse_month, window_bounds, window_of
from .errors import InvalidInput, LedgerUnavailable
from .money import (
    from_units,
    in_money_context,
    money_context,
    money_str,
    price_from_units,
    round_half_even_to_cent,
    units_str,
)
from .records import Budget, BudgetWindow, check_user, parse_tag
from .store import reports as report_queries
from .store.ops import Store
from .store.reports import USAGE_STATUSES, CalibrationRow, UsageFilter
from .store.schema import EPOCH, from_micros, to_micros

__all__ = [
    "BY",
    "USAGE_STATUSES",
    "BudgetLine",
    "BudgetReport",
    "BudgetRow",
    "Calibration",
    "DailySpend",
    "ExactStrings",
    "UsageRecord",
    "UsageRow",
    "budget_lines",
    "budget_report",
    "budgets",
    "calibration",
    "spend_by",
    "usage_dicts",
    "usage_records",
    "usage_rows",
]

DAY = timedelta(days=1)
HUNDRED = Decimal(100)


@dataclass(frozen=True)
class DailySpend:
    """Settled spend of one UTC day (exact)."""

    day: date
    amount: Decimal


@dataclass(frozen=True)
class BudgetRow:
    """One project's month in the budget report (see the module docstring for each figure)."""

    project: str
    limit: Decimal | None
    hard: bool
    spent: Decimal
    reserved: Decimal
    remaining: Decimal | None
    percent_used: Decimal | None
    burn_rate_per_day: Decimal
    forecast: Decimal
    status: str
    daily: tuple[DailySpend, ...] = ()

    @property
    def budget_kind(self) -> str:
        """``hard``, ``soft`` or ``none``."""
        return "none" if self.limit is None else ("hard" if self.hard else "soft")

    @property
    def forecast_over(self) -> bool:
        """Whether the month-end forecast is above the limit."""
        return self.limit is not None and self.forecast > self.limit

    def to_dict(self, *, daily: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "project": self.project,
            "limit": _money(self.limit),
            "budget": self.budget_kind,
            "spent": money_str(self.spent),
            "reserved": money_str(self.reserved),
            "remaining": _money(self.remaining),
            "percent_used": _money(self.percent_used),
            "burn_rate_per_day": money_str(self.burn_rate_per_day),
            "forecast": money_str(self.forecast),
            "forecast_over_limit": self.forecast_over,
            "status": self.status,
        }
        if daily:
            out["daily"] = [{"date": d.day.isoformat(), "amount": money_str(d.amount)}
                            for d in self.daily]
        return out


@dataclass(frozen=True)
class SpendBucket:
    """Settled spend in one hour or day of a budget's window (exact)."""

    start: datetime
    amount: Decimal


@dataclass(frozen=True)
class BudgetLine:
    """One budget's window: what it allows, what is spent and held in it, where it is going.

    ``user`` is the end user whose window it is (a ``"*"`` budget's line per user; None for
    a ``"*"`` budget nobody has used yet in this window, and for project and tag budgets).
    """

    budget: Budget
    user: str | None
    window: str
    start: datetime | None
    end: datetime | None
    spent: Decimal
    reserved: Decimal
    percent_used: Decimal
    burn_rate_per_day: Decimal
    forecast: Decimal
    status: str
    #: "hour" (a day window) or "day": the width of each ``series`` bucket.
    bucket: str = "day"
    series: tuple[SpendBucket, ...] = ()

    @property
    def limit(self) -> Decimal:
        return self.budget.limit

    @property
    def hard(self) -> bool:
        return self.budget.hard

    @property
    def remaining(self) -> Decimal:
        with money_context():
            return self.budget.limit - self.spent - self.reserved

    @property
    def scope(self) -> str:
        """``project``, ``user=alice``, ``user=* (alice)`` or ``tag=feature=search``."""
        b = self.budget
        if b.tag is not None:
            return f"tag={b.tag}"
        if b.user == "*":
            return "user=*" + (f" ({self.user})" if self.user else "")
        if b.user is not None:
            return f"user={b.user}"
        return "project"

    @property
    def label(self) -> str:
        """``acme user=* (alice) day 2026-12-03``: the budget, whose window, which window."""
        return f"{self.budget.project} {self.scope} {self.budget.period} {self.window}" \
            .replace(" project ", " ")

    @property
    def forecast_over(self) -> bool:
        return self.forecast > self.budget.limit

    @property
    def is_project_month(self) -> bool:
        """The project's own monthly budget (the report's project rows chart it)."""
        b = self.budget
        return b.user is None and b.tag is None and b.period == "month"

    @property
    def hot(self) -> bool:
        """80% used or more, or forecast over the limit: worth a chart."""
        return self.percent_used >= HOT_PERCENT or self.forecast_over

    def to_dict(self, *, series: bool = True) -> dict[str, Any]:
        b = self.budget
        out: dict[str, Any] = {
            "project": b.project, "user": b.user, "end_user": self.user, "tag": b.tag,
            "period": b.period, "window": self.window,
            "window_start": None if self.start is None else self.start.isoformat(),
            "window_end": None if self.end is None else self.end.isoformat(),
            "label": self.label, "limit": money_str(b.limit),
            "budget": "hard" if b.hard else "soft", "alerts": list(b.alerts),
            "effective_from": b.effective_from.isoformat(),
            "spent": money_str(self.spent), "reserved": money_str(self.reserved),
            "remaining": money_str(self.remaining),
            "percent_used": money_str(self.percent_used),
            "burn_rate_per_day": money_str(self.burn_rate_per_day),
            "forecast": money_str(self.forecast), "forecast_over_limit": self.forecast_over,
            "status": self.status, "hot": self.hot,
        }
        if series and self.series:
            out["series"] = {"bucket": self.bucket, "spend": [
                {"start": x.start.isoformat(), "amount": money_str(x.amount)}
                for x in self.series]}
        return out


BY = ("user", "tag", "model")


@dataclass(frozen=True)
class SpendGroup:
    """A month's settled calls of one project grouped by end user, tag or model (``key``;
    None: calls without a user or tag)."""

    project: str
    key: str | None
    calls: int
    prompt_tokens: int
    completion_tokens: int
    spent: Decimal

    def to_dict(self, by: str) -> dict[str, Any]:
        return {"project": self.project, by: self.key, "calls": self.calls,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "spent": money_str(self.spent)}


@dataclass(frozen=True)
class BudgetReport:
    """Every project's budget for one month, as of ``generated_at``."""

    month: str
    generated_at: datetime
    days_in_month: int
    days_elapsed: Decimal
    rows: tuple[BudgetRow, ...]
    #: Every budget's window at the report's instant (see the module docstring).
    budgets: tuple[BudgetLine, ...] = ()
    #: ``by`` ("user", "tag", "model") and the month's spend grouped so; None: not asked.
    by: str | None = None
    groups: tuple[SpendGroup, ...] = ()

    @property
    def spent(self) -> Decimal:
        with money_context():
            return sum((r.spent for r in self.rows), Decimal("0.00"))

    @property
    def reserved(self) -> Decimal:
        with money_context():
            return sum((r.reserved for r in self.rows), Decimal("0.00"))

    @property
    def forecast(self) -> Decimal:
        with money_context():
            return sum((r.forecast for r in self.rows), Decimal("0.00"))

    def to_dict(self, *, daily: bool = True) -> dict[str, Any]:
        return {
            "month": self.month,
            "generated_at": self.generated_at.isoformat(),
            "days_in_month": self.days_in_month,
            "days_elapsed": money_str(self.days_elapsed),
            "projects": [r.to_dict(daily=daily) for r in self.rows],
            "total_spent": money_str(self.spent),
            "total_reserved": money_str(self.reserved),
            "total_forecast": money_str(self.forecast),
            "budgets": [b.to_dict(series=daily) for b in self.budgets],
            **({} if self.by is None else {
                "by": self.by, "groups": [g.to_dict(self.by) for g in self.groups]}),
        }


@in_money_context
def budget_report(store: Store, now: datetime, month: str, *,
                  by: str | None = None) -> BudgetReport:
    """The budget report for ``month`` (``YYYY-MM``) as of ``now``: every project's month,
    every budget's window, and with ``by`` the month's spend grouped by user, tag or model.

    Expired holds are released first, so calls of dead processes do not count as reserved.
    """
    month = parse_month(month)
    if by is not None and by not in BY:
        raise InvalidInput(f"by must be one of {', '.join(BY)}, got {by!r}")
    with contextlib.suppress(LedgerUnavailable):  # a read-only ledger still reports
        store.expire(now)
    start, end = month_bounds(month)
    days_in_month = (end - start).days
    if now >= end:
        elapsed = Decimal(days_in_month)
    elif now <= start:
        elapsed = Decimal(0)
    else:
        elapsed = _days(now - start)
    left = Decimal(days_in_month) - elapsed
    daily = report_queries.daily_costs(store, month, to_micros(start))
    today = min(int(elapsed), days_in_month - 1) if now >= start else -1
    rows = []
    for state in store.states(month, now):
        spent = state.spent
        burn = spent / max(elapsed, Decimal(1)) if elapsed > 0 else Decimal(0)
        forecast = spent + burn * left if 0 < elapsed < days_in_month else spent
        used = state.settled_units + state.held_units
        percent = (None if not state.limit_units
                   else round_half_even_to_cent(Decimal(used) * HUNDRED / state.limit_units))
        days = daily.get(state.project, {})
        last = max([today, *days])
        series = tuple(DailySpend((start + DAY * i).date(), from_units(days.get(i, 0)))
                       for i in range(last + 1))
        rows.append(BudgetRow(
            project=state.project, limit=state.limit, hard=state.hard, spent=spent,
            reserved=state.held, remaining=state.remaining, percent_used=percent,
            burn_rate_per_day=round_half_even_to_cent(burn),
            forecast=round_half_even_to_cent(forecast), status=state.status, daily=series,
        ))
    return BudgetReport(month, now, days_in_month, elapsed.quantize(Decimal("0.0001")),
                        tuple(rows), tuple(_lines(store, report_instant(month, now))),
                        by, tuple(spend_by(store, month, by)) if by is not None else ())


def report_instant(month: str, now: datetime) -> datetime:
    """The instant whose budget windows a report of ``month`` shows: ``now`` in the month,
    the month's last instant once it is over, its first before it begins."""
    start, end = month_bounds(month)
    if now >= end:
        return end - timedelta(microseconds=1)
    return max(now, start)


@in_money_context
def budget_lines(store: Store, now: datetime, project: str | None = None) -> list[BudgetLine]:
    """Every budget in force now (of ``project``) in its current window (``ledger budget
    list``)."""
    with contextlib.suppress(LedgerUnavailable):
        store.expire(now)
    return _lines(store, now, project)


def _lines(store: Store, at: datetime, project: str | None = None) -> list[BudgetLine]:
    found = store.windows(at, project)
    seen = {(w.budget.project, w.budget.user, w.budget.tag, w.budget.period) for w in found}
    for b in store.budgets(project, at):  # a "*" budget nobody has used in this window yet
        if (b.project, b.user, b.tag, b.period) not in seen:
            found.append(BudgetWindow(b, None, window_of(b.period, at), 0, 0))
    found.sort(key=lambda w: (w.budget.project, 2 if w.budget.tag is not None else
                              1 if w.budget.user is not None else 0,
                              w.budget.tag or w.budget.user or "",
                              PERIOD_ORDER.get(w.budget.period, 9), w.user or ""))
    out = []
    for w in found:
        start, end = window_bounds(w.budget.period, w.window)
        burn, forecast = window_forecast(w.spent, w.budget.period, start, end, at)
        out.append(BudgetLine(w.budget, w.user, w.window, start, end, w.spent, w.held,
                              w.percent_used, round_half_even_to_cent(burn),
                              round_half_even_to_cent(forecast), w.status,
                              "hour" if w.budget.period == "day" else "day"))
    # the hottest (by forecast against the limit) get their spend series: one query each
    hot = sorted((i for i, line in enumerate(out) if line.hot and not line.is_project_month),
                 key=lambda i: (-(out[i].forecast / out[i].limit), -out[i].spent, i)
                 )[:MAX_SERIES]
    for i in sorted(hot):
        out[i] = _with_series(store, out[i], at)
    return out


PERIOD_ORDER = {"day": 0, "week": 1, "month": 2, "total": 3}
#: At most this many hot budget windows get a spend series (and a chart): with a "*" budget
#: on 100K end users, the hottest ones, never a query per user.
MAX_SERIES = 24
HOT_PERCENT = Decimal(80)
HOUR = timedelta(hours=1)


def window_forecast(spent: Decimal, period: str, start: datetime | None,
                    end: datetime | None, at: datetime) -> tuple[Decimal, Decimal]:
    """(burn rate per day, forecast at the window's end) of ``spent`` so far at ``at``: a
    straight line from the window's start, elapsed time counted as at least an hour (day
    windows) or a day; a window over, not begun, or without an end forecasts ``spent``."""
    with money_context():
        if start is None or end is None:
            return Decimal(0), spent
        if at >= end or at < start:
            return Decimal(0), spent
        least = HOUR if period == "day" else DAY
        elapsed = max(at - start, least)
        per_day = spent * _micros(DAY) / _micros(elapsed)
        return per_day, spent + per_day * _micros(end - at) / _micros(DAY)


def _micros(delta: timedelta) -> Decimal:
    return Decimal((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)


def _with_series(store: Store, line: BudgetLine, at: datetime) -> BudgetLine:
    """``line`` with its spend per hour or day, from its window's start (a total budget:
    the last 31 days) to ``at``."""
    step = HOUR if line.bucket == "hour" else DAY
    if line.start is not None:
        start = line.start
    else:
        day = at.replace(hour=0, minute=0, second=0, microsecond=0)
        start = day - DAY * 30
    b = line.budget
    user = line.user if b.user == "*" else b.user
    found = report_queries.scope_costs(store, b.project, user, b.tag, to_micros(start),
                                       to_micros(at) + 1, _step_micros(step))
    count = int((at - start) / step) + 1
    series = tuple(SpendBucket(start + step * i, from_units(found.get(i, 0)))
                   for i in range(count))
    return replace(line, series=series)


def _step_micros(step: timedelta) -> int:
    return (step.days * 86_400 + step.seconds) * 1_000_000


def spend_by(store: Store, month: str, by: str, project: str | None = None
             ) -> list[SpendGroup]:
    """The month's settled spend per project and end user, tag or model (``by``), by
    project and then key (None last); a call with several tags counts under each."""
    if by not in BY:
        raise InvalidInput(f"by must be one of {', '.join(BY)}, got {by!r}")
    rows = report_queries.grouped_costs(store, parse_month(month), by, project)
    merged: dict[tuple[str, str | None], list[int]] = {}
    for r in rows:
        keys: list[str | None]
        if by == "tag":
            keys = [k for k in (r.key or "").strip(",").split(",") if k] or [None]
        else:
            keys = [r.key]
        for key in keys:
            acc = merged.setdefault((r.project, key), [0, 0, 0, 0])
            acc[0] += r.calls
            acc[1] += r.prompt_tokens
            acc[2] += r.completion_tokens
            acc[3] += r.cost_units
    return [SpendGroup(p, k, v[0], v[1], v[2], from_units(v[3]))
            for (p, k), v in sorted(merged.items(),
                                    key=lambda kv: (kv[0][0], kv[0][1] is None,
                                                    kv[0][1] or ""))]


def budgets(store: Store, now: datetime, month: str | None = None) -> list[BudgetState]:
    """Every project with a budget, with its state in ``month`` (default: ``now``'s)."""
    month = month_of(now) if month is None else parse_month(month)
    return [s for s in store.states(month, now) if s.limit is not None]


def _days(delta: timedelta) -> Decimal:
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    with money_context():
        return Decimal(micros) / Decimal(report_queries.DAY_MICROS)


def _money(value: Decimal | None) -> str | None:
    return None if value is None else money_str(value)


# -- usage -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UsageRow:
    """One recorded call, as ``ledger usage`` lists it."""

    id: int
    at: datetime
    project: str
    month: str
    model: str
    status: str
    estimated: bool
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    est_prompt_tokens: int | None
    input_per_1k: Decimal
    output_per_1k: Decimal
    cached_input_per_1k: Decimal | None
    cost: Decimal
    http_status: int | None
    error: str | None
    call_id: str | None
    #: Reasoning tokens the server reported (part of completion_tokens), or None.
    reasoning_tokens: int | None = None
    #: The end user the call was for, or None.
    user: str | None = None
    #: Its tags, ``"k=v,k2=v2"`` sorted by key, or None.
    tags: str | None = None

    #: The field names, in order (the CSV header): set from the dataclass below.
    FIELDS: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, by field name: money and prices as exact decimal strings, instants in
        ISO 8601."""
        return {name: _json_value(getattr(self, name)) for name in self.FIELDS}


UsageRow.FIELDS = tuple(f.name for f in fields(UsageRow))


def _json_value(value: object) -> object:
    if isinstance(value, Decimal):
        return money_str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _usage_filter(project: str | None, month: str | None, model: str | None,
                  status: str | None, user: str | None = None,
                  tag: str | None = None) -> UsageFilter:
    if status is not None and status not in USAGE_STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(USAGE_STATUSES)}, got {status!r}")
    if user is not None:
        check_user(user)
    if tag is not None:
        key, value = parse_tag(tag, "tag")
        tag = f"{key}={value}"
    return UsageFilter(project, None if month is None else parse_month(month), model, status,
                       user, tag)


def usage_rows(store: Store, *, project: str | None = None, month: str | None = None,
               model: str | None = None, status: str | None = None,
               user: str | None = None, tag: str | None = None,
               batch: int = 2000) -> Generator[UsageRow, None, None]:
    """Stream the recorded calls matching the filters, oldest first by call time (``at``,
    then id), in flat memory.

    ``status`` is one of ``ok``, ``failed``, ``refused``, ``cancelled`` or ``estimated``
    (calls whose usage the server did not report); ``user`` an end user's calls, ``tag``
    (``"k=v"``) the calls carrying it. Arguments are checked before the first row is produced;
    close the generator (or exhaust it) to release its database connection.
    """
    flt = _usage_filter(project, month, model, status, user, tag)
    return _usage_rows(store, flt, batch)


def _usage_rows(store: Store, flt: UsageFilter, batch: int) -> Generator[UsageRow, None, None]:
    prices: dict[int, Decimal] = {}  # a handful of distinct prices: convert each once

    def price(units: int) -> Decimal:
        found = prices.get(units)
        if found is None:
            found = prices[units] = price_from_units(units)
        return found

    for rows in report_queries.usage_batches(store, flt, batch):
        for (id_, at, project, month, model, status, estimated, prompt, completion, cached,
             est, input_price, output_price, cached_price, cost, http_status, error, call_id,
             reasoning, user, tags) in rows:
            yield UsageRow(
                id=int(id_), at=from_micros(int(at)), project=str(project), month=str(month),
                model=str(model), status=str(status), estimated=bool(estimated),
                prompt_tokens=int(prompt), completion_tokens=int(completion),
                cached_tokens=int(cached), est_prompt_tokens=_int_or_none(est),
                input_per_1k=price(int(input_price)), output_per_1k=price(int(output_price)),
                cached_input_per_1k=None if cached_price is None else price(int(cached_price)),
                cost=from_units(int(cost)), http_status=_int_or_none(http_status),
                error=None if error is None else str(error),
                call_id=None if call_id is None else str(call_id),
                reasoning_tokens=_int_or_none(reasoning),
                user=None if user is None else str(user),
                tags=None if not tags else str(tags).strip(","),
            )


#: One event as the store streams it for exports: the values of
#: :data:`ledger.store.reports.USAGE_COLUMNS`, in that order, as the database holds them
#: (``at`` in microseconds, prices in PRICE_UNIT, ``cost`` in UNIT, ``tags`` ``",k=v,"``).
UsageRecord = tuple[Any, ...]


def usage_records(store: Store, *, project: str | None = None, month: str | None = None,
                  model: str | None = None, status: str | None = None,
                  user: str | None = None, tag: str | None = None,
                  batch: int = 5000) -> Generator[UsageRecord, None, None]:
    """The rows of :func:`usage_rows` as raw :data:`UsageRecord` tuples, for exports of
    millions of rows: no object, Decimal or datetime per row (render them with
    :class:`ExactStrings`, :func:`usage_dicts` or ``render.csv.usage_records``).

    Streamed ``batch`` rows at a time from the DBAPI cursor (server-side on PostgreSQL), in
    flat memory; the filters are checked before the first row. Close the generator (or
    exhaust it) to release its database connection.
    """
    flt = _usage_filter(project, month, model, status, user, tag)
    return _usage_records(store, flt, batch)


def _usage_records(store: Store, flt: UsageFilter, batch: int
                   ) -> Generator[UsageRecord, None, None]:
    for rows in report_queries.usage_batches(store, flt, batch):
        yield from rows


class ExactStrings:
    """The exact text of stored integers, as :class:`UsageRow` renders them, without making
    the Decimal or datetime: ``instant(m) == from_micros(m).isoformat()``,
    ``price(u) == money_str(price_from_units(u))``, ``amount(u) == money_str(from_units(u))``.

    Instants are cached per second and prices per value (a handful of distinct prices); both
    caches are bounded, so memory stays flat over any number of rows.
    """

    LIMIT = 65_536

    def __init__(self) -> None:
        self._seconds: dict[int, str] = {}
        self._days: dict[int, str] = {}
        self._prices: dict[int, str] = {}

    amount = staticmethod(units_str)

    def instant(self, micros: int) -> str:
        second, micro = divmod(micros, 1_000_000)
        head = self._seconds.get(second)
        if head is None:
            if len(self._seconds) >= self.LIMIT:
                self._seconds.clear()
            head = self._seconds[second] = self.second(second)
        return f"{head}.{micro:06d}+00:00" if micro else f"{head}+00:00"

    def second(self, second: int) -> str:
        """``YYYY-MM-DDTHH:MM:SS`` of a second since the epoch (UTC)."""
        day, rest = divmod(second, 86_400)
        date_part = self._days.get(day)
        if date_part is None:
            if len(self._days) >= self.LIMIT:
                self._days.clear()
            date_part = self._days[day] = (EPOCH + timedelta(days=day)).date().isoformat()
        hours, rest = divmod(rest, 3600)
        minutes, seconds = divmod(rest, 60)
        return f"{date_part}T{hours:02d}:{minutes:02d}:{seconds:02d}"

    def price(self, units: int) -> str:
        found = self._prices.get(units)
        if found is None:
            if len(self._prices) >= self.LIMIT:
                self._prices.clear()
            found = self._prices[units] = money_str(price_from_units(units))
        return found


def usage_dicts(records: Iterable[UsageRecord]) -> Iterator[dict[str, Any]]:
    """Each record as :meth:`UsageRow.to_dict` makes it (JSON-ready: money and prices exact
    decimal strings, instants ISO 8601), lazily."""
    strings = ExactStrings()
    instant, price, amount = strings.instant, strings.price, strings.amount
    names = UsageRow.FIELDS
    for (id_, at, project, month, model, status, estimated, prompt, completion, cached, est,
         input_price, output_price, cached_price, cost, http_status, error, call_id,
         reasoning, user, tags) in records:
        yield dict(zip(names, (
            id_, instant(at), project, month, model, status, bool(estimated), prompt,
            completion, cached, est, price(input_price), price(output_price),
            None if cached_price is None else price(cached_price), amount(cost), http_status,
            error, call_id, reasoning, user, tags.strip(",") if tags else None), strict=True))


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def count_usage(store: Store, *, project: str | None = None, month: str | None = None,
                model: str | None = None, status: str | None = None,
                user: str | None = None, tag: str | None = None) -> int:
    """How many recorded calls match the filters (one indexed ``COUNT``)."""
    return report_queries.count_usage(
        store, _usage_filter(project, month, model, status, user, tag))


# -- calibration -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Calibration:
    """How well pre-flight estimates matched the prompt tokens the server reported, per model.

    ``ratio = actual / estimated`` over all calls (below 1: the estimator errs high, as it
    should); ``mean_abs_error`` in tokens per call; ``overestimated_share``: the fraction of
    calls whose estimate was at least the actual count.
    """

    model: str
    calls: int
    estimated_prompt_tokens: int
    actual_prompt_tokens: int
    ratio: Decimal | None
    mean_abs_error: Decimal
    overestimated_share: Decimal

    @classmethod
    @in_money_context
    def from_row(cls, row: CalibrationRow) -> Calibration:
        ratio = (None if not row.estimated_prompt_tokens else
                 (Decimal(row.actual_prompt_tokens) / row.estimated_prompt_tokens)
                 .quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN))
        mae = (Decimal(row.absolute_error_tokens) / row.calls).quantize(
            Decimal("0.1"), rounding=ROUND_HALF_EVEN)
        share = (Decimal(row.overestimated_calls) / row.calls).quantize(
            Decimal("0.0001"), rounding=ROUND_HALF_EVEN)
        return cls(row.model, row.calls, row.estimated_prompt_tokens, row.actual_prompt_tokens,
                   ratio, mae, share)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "calls": self.calls,
            "estimated_prompt_tokens": self.estimated_prompt_tokens,
            "actual_prompt_tokens": self.actual_prompt_tokens,
            "ratio": None if self.ratio is None else str(self.ratio),
            "mean_abs_error": str(self.mean_abs_error),
            "overestimated_share": str(self.overestimated_share),
        }


def calibration(store: Store, *, project: str | None = None, month: str | None = None,
                model: str | None = None) -> list[Calibration]:
    """Estimated vs actual prompt tokens per model, over settled (``ok``) calls that were
    estimated before they were sent and whose usage the server reported."""
    flt = _usage_filter(project, month, model, None)
    return [Calibration.from_row(r) for r in report_queries.calibration(store, flt)]
