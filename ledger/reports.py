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

"Now" is the ``now`` the caller passes (``Ledger`` passes its injectable clock's time); every
function takes the store it reads, never the whole ``Ledger``. Burn rate and forecast are estimates,
shown rounded half-even to the cent; spent, reserved and remaining are exact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, ClassVar

from .budget import BudgetState
from .clock import month_bounds, month_of, parse_month
from .errors import InvalidInput, LedgerUnavailable
from .money import (
    from_units,
    in_money_context,
    money_context,
    money_str,
    price_from_units,
    round_half_even_to_cent,
)
from .records import check_user, parse_tag
from .store import reports as report_queries
from .store.ops import Store
from .store.reports import USAGE_STATUSES, CalibrationRow, UsageFilter
from .store.schema import from_micros, to_micros

__all__ = [
    "USAGE_STATUSES",
    "BudgetReport",
    "BudgetRow",
    "Calibration",
    "DailySpend",
    "UsageRow",
    "budget_report",
    "budgets",
    "calibration",
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
class BudgetReport:
    """Every project's budget for one month, as of ``generated_at``."""

    month: str
    generated_at: datetime
    days_in_month: int
    days_elapsed: Decimal
    rows: tuple[BudgetRow, ...]

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
        }


@in_money_context
def budget_report(store: Store, now: datetime, month: str) -> BudgetReport:
    """The budget report for ``month`` (``YYYY-MM``) as of ``now``.

    Expired holds are released first, so calls of dead processes do not count as reserved.
    """
    month = parse_month(month)
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
                        tuple(rows))


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

    for r in report_queries.iter_usage(store, flt, batch):
        cached_price = r["cached_price"]
        yield UsageRow(
            id=int(r["id"]), at=from_micros(int(r["at"])), project=str(r["project"]),
            month=str(r["month"]), model=str(r["model"]), status=str(r["status"]),
            estimated=bool(r["estimated"]), prompt_tokens=int(r["prompt_tokens"]),
            completion_tokens=int(r["completion_tokens"]),
            cached_tokens=int(r["cached_tokens"]),
            est_prompt_tokens=_int_or_none(r["est_prompt_tokens"]),
            input_per_1k=price(int(r["input_price"])),
            output_per_1k=price(int(r["output_price"])),
            cached_input_per_1k=None if cached_price is None else price(int(cached_price)),
            cost=from_units(int(r["cost"])), http_status=_int_or_none(r["http_status"]),
            error=None if r["error"] is None else str(r["error"]),
            call_id=None if r["call_id"] is None else str(r["call_id"]),
            reasoning_tokens=_int_or_none(r["reasoning_tokens"]),
            user=None if r["user"] is None else str(r["user"]),
            tags=None if not r["tags"] else str(r["tags"]).strip(","),
        )


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
