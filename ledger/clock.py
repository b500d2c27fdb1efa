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
