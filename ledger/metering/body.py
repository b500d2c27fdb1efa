"""Step 3 as the reply's body streams: :class:`BodySteps`, the I/O-free decisions both
transport twins (sync and async) drive, in the manner of httpx's ``BoundSyncStream`` /
``BoundAsyncStream``.

For each event of the body (a chunk, its end, an error, the caller closing it) the step
object says what to hand the caller and what to do: nothing, **renew** the hold (a long
stream), or **settle** with an :class:`~ledger.records.Outcome` (exactly once: only the
first of end, error, close and garbage collection gets one). The twins only do it, directly
or in a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from ..records import Outcome
from .call import Call
from .reply import ResponseMeter, exception_text

__all__ = ["RENEW", "BodySteps", "Todo"]


class _Renew:
    def __repr__(self) -> str:
        return "RENEW"


#: What a chunk may ask for besides settling: renew the call's hold.
RENEW: Final = _Renew()
Todo = Outcome | _Renew | None


class BodySteps:
    """The decisions of one metered body (see the module docs)."""

    __slots__ = ("_clock", "_interval", "_renew_at", "call", "meter")

    def __init__(self, meter: ResponseMeter, call: Call, renew_every: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.meter = meter
        self.call = call
        self._clock = clock
        self._interval = renew_every
        self._renew_at = clock() + renew_every

    def chunk(self, chunk: bytes) -> tuple[bytes, Todo]:
        """A chunk arrived: the bytes to pass on now, and what to do."""
        meter = self.meter
        out = meter.feed(chunk)
        if meter.terminal and self.call.claim():
            return out, meter.outcome("eof")
        now = self._clock()  # a clock read per chunk; renewals are rare
        if now >= self._renew_at:
            self._renew_at = now + self._interval
            return out, RENEW
        return out, None

    def end(self) -> tuple[bytes, Outcome | None]:
        """The body ended: any held bytes, and the outcome to settle with (if still due)."""
        tail = self.meter.finish()
        return tail, self.meter.outcome("eof") if self.call.claim() else None

    def error(self, exc: BaseException) -> Outcome | None:
        """Reading the body raised ``exc``."""
        if not self.call.claim():
            return None
        return self.meter.outcome("error", exception_text(exc))

    def closed(self) -> Outcome | None:
        """The caller closed the body (or dropped it) before its end."""
        return self.meter.outcome("closed") if self.call.claim() else None
