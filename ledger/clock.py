"""An injectable clock: domain code asks a ``Clock`` for the time, never ``datetime.now()``."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol

from .errors import InvalidInput

_MONTH = re.compile(r"\d{4}-\d{2}")


class Clock(Protocol):
    """Anything that can tell the current UTC time as an aware datetime."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real wall clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to (for tests and simulations)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = require_aware(start, "start") if start else datetime(2026, 11, 1, tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta | float = 0, **kwargs: float) -> datetime:
        """Move forward by ``delta`` (a timedelta or seconds) and/or timedelta keywords."""
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        step += timedelta(**kwargs)
        if step < timedelta(0):
            raise InvalidInput("a clock only moves forward")
        with self._lock:
            self._now += step
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = require_aware(when, "when").astimezone(UTC)


def require_aware(value: datetime, field: str) -> datetime:
    """Return ``value`` in UTC; a naive datetime is refused (it has no time zone to trust)."""
    if not isinstance(value, datetime):
        raise TypeError(f"{field} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{field} must be timezone-aware (got naive {value.isoformat()})")
    return value.astimezone(UTC)


def month_of(when: datetime) -> str:
    """The UTC calendar month of an instant, as ``YYYY-MM``."""
    return require_aware(when, "when").strftime("%Y-%m")


def parse_month(month: str) -> str:
    """Validate ``YYYY-MM`` and return it normalised; anything else is ``InvalidInput``."""
    if not isinstance(month, str):
        raise InvalidInput(f"month must be a string YYYY-MM, got {type(month).__name__}")
    text = month.strip()
    try:
        if not _MONTH.fullmatch(text):
            raise ValueError(text)
        parsed = datetime.strptime(text, "%Y-%m")
    except ValueError:
        raise InvalidInput(f"month must look like YYYY-MM (e.g. 2026-11), got {month!r}") from None
    return parsed.strftime("%Y-%m")


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """The first instant of ``month`` and of the month after, both UTC."""
    start = datetime.strptime(parse_month(month), "%Y-%m").replace(tzinfo=UTC)
    nxt = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, nxt


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def window_of(period: str, at: datetime) -> str:
    """The UTC calendar window of ``period`` that holds ``at``, named by its start:
    ``day`` ``"2026-12-03"``, ``week`` its ISO Monday ``"2026-11-30"``, ``month``
    ``"2026-12"``, and ``"total"`` for ``total`` (one window, forever)."""
    when = require_aware(at, "at")
    if period == "day":
        return when.strftime("%Y-%m-%d")
    if period == "week":
        return (when - timedelta(days=when.weekday())).strftime("%Y-%m-%d")
    if period == "month":
        return when.strftime("%Y-%m")
    if period == "total":
        return "total"
    raise InvalidInput(f"period must be one of day, week, month, total; got {period!r}")


def window_bounds(period: str, window: str) -> tuple[datetime | None, datetime | None]:
    """The first instant of ``window`` and of the next one (UTC; start inclusive, end
    exclusive); ``total`` has neither bound."""
    if period == "total":
        if window != "total":
            raise InvalidInput(f"the window of a total budget is 'total', got {window!r}")
        return None, None
    if period == "month":
        return month_bounds(window)
    if period not in ("day", "week"):
        raise InvalidInput(f"period must be one of day, week, month, total; got {period!r}")
    try:
        if not isinstance(window, str) or not _DAY.fullmatch(window):
            raise ValueError(window)
        start = datetime.strptime(window, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidInput(f"a {period} window looks like YYYY-MM-DD, got {window!r}") from None
    if period == "week":
        if start.weekday() != 0:
            raise InvalidInput(f"a week window starts on a Monday, {window} is not one")
        return start, start + timedelta(days=7)
    return start, start + timedelta(days=1)


def period_windows(at: datetime) -> dict[str, str]:
    """Every period's window at ``at``: ``{"day": ..., "week": ..., "month": ..., "total": ...}``."""
    when = require_aware(at, "at")
    return {"day": when.strftime("%Y-%m-%d"),
            "week": (when - timedelta(days=when.weekday())).strftime("%Y-%m-%d"),
            "month": when.strftime("%Y-%m"), "total": "total"}


def window_end(period: str, at: datetime) -> datetime | None:
    """The first instant after the ``period`` window holding ``at`` (UTC; None for
    ``total``): the same as ``window_bounds(period, window_of(period, at))[1]``, computed
    without formatting and parsing (the hot path asks it for every budget of a call)."""
    when = at.astimezone(UTC) if at.tzinfo is not UTC else at
    day = when.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day + timedelta(days=1)
    if period == "week":
        return day + timedelta(days=7 - day.weekday())
    if period == "month":
        first = day.replace(day=1)
        return first.replace(year=first.year + 1, month=1) if first.month == 12 \
            else first.replace(month=first.month + 1)
    if period == "total":
        return None
    raise InvalidInput(f"period must be one of day, week, month, total; got {period!r}")
