"""The life of one metered call, written once for every driver.

Every metered call takes the same path, whoever drives it (the sync and async transports of
``httpx`` and ``httpx2`` in :mod:`ledger.transport`, or :class:`MeteredCall` for any other
client), in TigerBeetle's words: **hold → post | void | expire**. Read the modules in the
order the data flows:

1. ``meter``: what metering takes from the ledger (store, clock, estimator, spool, settings).
2. ``request``: **prepare** (pure): parse, estimate, choose the project, ask for stream usage;
   ``attribution`` (pure): who the call is for (end user, tags: the client's, the
   ``X-Ledger-User`` / ``X-Ledger-Tags`` headers, the body's user).
3. ``call``: :class:`Call`, the one object that owns a call: **hold** the worst case
   (refused → ``BudgetExceeded`` / ``UnknownModel``, answered by ``refusal``), **renew** it
   while a stream runs, then **settle** exactly once: **post** at the actual cost or **void**
   at zero; a database failure spools the outcome. A hold never settled **expires** (its
   TTL), written down by the store.
4. ``refusal`` (pure): the HTTP answer to a call refused at hold.
5. ``reply`` (pure): :class:`ResponseMeter` watches the reply's bytes and decides the
   :class:`~ledger.records.Outcome` (how the call ended) that settle posts or voids.
6. ``body`` (pure): :class:`BodySteps`, the per-chunk decisions (pass on, renew, settle)
   the sync and async stream twins of the transport both drive.
7. ``by_hand``: :class:`MeteredCall`, the ``with book.metered_call(...)`` block for any
   other client (``call.settle(reply)`` fixes the outcome; leaving the block posts or voids).

"Settle" is the one word for *post or void, as the outcome says* (a charged outcome posts).
"""

from __future__ import annotations

from .body import RENEW, BodySteps
from .by_hand import MeteredCall
from .call import Call
from .meter import HasMeter, Meter
from .refusal import Refusal, refusal_for
from .reply import ResponseMeter, exception_text, failed, strip_null_usage
from .request import (
    CALL_ID_HEADER,
    PROJECT_HEADER,
    PreparedCall,
    guess_shape,
    prepare,
    redact,
    secrets_of,
)

__all__ = [
    "CALL_ID_HEADER",
    "PROJECT_HEADER",
    "RENEW",
    "BodySteps",
    "Call",
    "HasMeter",
    "Meter",
    "MeteredCall",
    "PreparedCall",
    "Refusal",
    "ResponseMeter",
    "exception_text",
    "failed",
    "guess_shape",
    "prepare",
    "redact",
    "refusal_for",
    "secrets_of",
    "strip_null_usage",
]
