"""Steps 2 and 4 of a metered call, the only I/O of metering: :class:`Call` **holds** the
worst case (with ``fit="shrink"``, as much of the completion cap as fits, the body to send then
lowered to it: :func:`~ledger.metering.request.shrink`), and **settles** once: it **posts** the
hold at the actual cost, or **voids** it at
zero (a hold nobody settles **expires** after its TTL; the store does that, see
``Store.expire``). It also **renews** the hold of a long stream so it never expires under it.

Plain sync methods: async drivers run them in a worker thread.
"""

from __future__ import annotations

import logging
import threading

from ..errors import (
    BudgetExceeded,
    InvalidInput,
    LedgerError,
    LedgerUnavailable,
    NoBudget,
    UnknownModel,
)
from ..faults import fault_point
from ..records import Hold, Outcome
from .meter import Meter
from .reply import failed
from .request import PreparedCall, redact, shrink

__all__ = ["Call", "renew_interval"]

log = logging.getLogger("ledger.metering")


def renew_interval(meter: Meter) -> float:
    """Renew a streaming call's hold after a third of its TTL (at most every minute)."""
    return min(meter.hold_ttl.total_seconds() / 3, 60.0)


class Call:
    """One metered call from hold to post | void (see the module docs)."""

    __slots__ = ("_lock", "_settled", "held", "meter", "prepared")

    def __init__(self, meter: Meter, prepared: PreparedCall) -> None:
        self.meter = meter
        #: What is sent: after a hold that shrank the cap, the lowered call.
        self.prepared = prepared
        #: The hold, once :meth:`hold` got one (``None`` before, or when failing open).
        self.held: Hold | None = None
        self._settled = False
        self._lock = threading.Lock()

    def _minimum(self) -> int | None:
        """The smallest completion cap to hold under ``fit="shrink"`` (``None``: refuse)."""
        p, meter = self.prepared, self.meter
        if meter.fit != "shrink" or p.max_completion_tokens == 0:
            return None
        return min(meter.min_completion_tokens * p.choices, p.max_completion_tokens)

    @property
    def call_id(self) -> str:
        return self.prepared.call_id

    def hold(self) -> Hold | None:
        """Hold the call's worst case. Returns the hold, or ``None`` when the database is down
        and the ledger fails open (the call goes through unmetered; :meth:`settle` spools it).

        Raises ``BudgetExceeded`` / ``UnknownModel`` / ``NoBudget`` (``require_budget``) after
        recording the refusal, and ``LedgerUnavailable`` when the database is down and the
        ledger fails closed.

        Under ``fit="shrink"``, a hold that could afford only a lower completion cap lowers
        :attr:`prepared` to it (the body to send, ``max_completion_tokens``, ``shrunk_to``).
        """
        p, meter = self.prepared, self.meter
        fault_point("call:before-hold")
        try:
            if meter.require_budget and not meter.store.has_budget(p.project, p.started):
                raise NoBudget(p.project)
            hold = meter.store.hold(p.call_id, p.project, p.model, p.prompt_tokens,
                                    p.max_completion_tokens, p.started, meter.hold_ttl,
                                    attribution=p.attribution,
                                    min_completion_tokens=self._minimum())
        except (BudgetExceeded, UnknownModel, NoBudget) as exc:
            try:
                meter.store.record_refused(p.call_id, p.project, p.model, p.started,
                                           meter.now(), str(exc), p.prompt_tokens,
                                           attribution=p.attribution)
            except LedgerError:  # the refusal stands even if it cannot be written down
                log.warning("could not record refused call %s", p.call_id, exc_info=True)
            raise
        except LedgerUnavailable:
            if meter.fail_open:
                log.warning("ledger database unavailable; call %s goes through unmetered "
                            "(fail_open)", p.call_id, exc_info=True)
                return None
            raise
        fault_point("call:after-hold")
        self.held = hold
        held_cap = hold.max_completion_tokens
        if held_cap is not None and held_cap < p.max_completion_tokens:
            try:
                self.prepared = shrink(p, held_cap)
            except InvalidInput:  # never send more than was held: release it, refuse
                if self.claim():
                    self.settle(failed("the completion cap could not be lowered to fit"))
                raise
        return hold

    def claim(self) -> bool:
        """True for the one caller that gets to settle (whichever of end, error, close and
        garbage collection comes first)."""
        with self._lock:
            if self._settled:
                return False
            self._settled = True
            return True

    def settle(self, outcome: Outcome) -> int | None:
        """Post the hold at the outcome's cost (a charged outcome) or void it; returns the cost
        in units, or ``None`` if it went to the spool. The caller has :meth:`claim`\\ ed it.

        Never raises: the caller already has (or is getting) its response. A database failure
        appends the outcome to the spool, replayed exactly once later; a call with no hold
        (fail open) is priced at replay from its model and start time.
        """
        p, meter = self.prepared, self.meter
        fault_point("call:after-response")
        outcome = redact(outcome, p.secrets)
        try:
            cost = meter.store.settle(p.call_id, outcome, meter.now(),
                                      fallback=(p.project, p.model, p.started, p.attribution))
        except Exception as exc:  # whatever the database did, keep the usage
            if not isinstance(exc, LedgerUnavailable):
                log.error("settling call %s failed; spooling it", p.call_id, exc_info=True)
            try:
                meter.spool.append(p.call_id, p.project, p.model, p.started, outcome,
                                   attribution=p.attribution)
            except Exception:  # the last resort: say so loudly, never break the caller
                log.critical("call %s could not be settled nor spooled: %r", p.call_id,
                             outcome, exc_info=True)
            return None
        meter.after_settle()  # the database answers again: count what waited in the spool
        return cost

    def renew(self) -> None:
        """Push the hold's expiry out by a TTL (a long stream is still running)."""
        meter = self.meter
        try:
            meter.store.renew(self.prepared.call_id, meter.now() + meter.hold_ttl)
        except LedgerError:  # the stream goes on; at worst the hold expires (a late settle
            # still records the usage)
            log.warning("could not renew hold %s", self.prepared.call_id, exc_info=True)
