"""What metering needs from a ledger, and nothing more: a ``Meter``.

The ledger (``ledger.core.Ledger``) builds one and hands it to every driver of a call
(:class:`~ledger.metering.call.Call`, :class:`~ledger.metering.by_hand.MeteredCall`,
``ledger.transport.MeteredTransport``): the store to hold and settle in, the clock, the
estimator, the spool, and the settings of a hold. Nothing below reaches back into the
``Ledger``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from ..errors import InvalidInput
from ..money import check_tokens
from ..shapes import CallRequest
from ..spool import Spool
from ..store.ops import Store

__all__ = ["FITS", "Estimator", "HasMeter", "Meter", "TokenCounts", "check_fit",
           "check_min_completion_tokens"]

#: What a call whose worst case does not fit a hard budget gets: ``refuse`` (402) or
#: ``shrink`` (sent with its completion cap lowered to what fits, if at least
#: ``min_completion_tokens`` does).
FITS = ("refuse", "shrink")


def check_fit(fit: object) -> str:
    """``fit`` as given (``"refuse"`` or ``"shrink"``); ``InvalidInput`` otherwise."""
    if not isinstance(fit, str) or fit not in FITS:
        raise InvalidInput(f"fit must be 'refuse' or 'shrink', got {fit!r}"[:200])
    return fit


def check_min_completion_tokens(value: object) -> int:
    """A positive token count (``TypeError`` for a non-int, ``InvalidInput`` out of range)."""
    tokens = check_tokens(value, "min_completion_tokens")
    if tokens < 1:
        raise InvalidInput(f"min_completion_tokens must be at least 1, got {tokens}")
    return tokens


class TokenCounts(Protocol):
    """A request's estimated tokens (``ledger.estimate.Tokens``)."""

    @property
    def prompt_tokens(self) -> int: ...
    @property
    def max_completion_tokens(self) -> int: ...
    @property
    def capped_by_default(self) -> bool: ...


class Estimator(Protocol):
    """What metering asks of ``ledger.estimate.Estimator`` (which loads tiktoken, so it is
    not imported here: the ledger builds it on first use)."""

    def estimate(self, request: CallRequest, /) -> TokenCounts: ...
    def count_text(self, model: str, text: str, /) -> int: ...


@dataclass(frozen=True, eq=False)
class Meter:
    """The collaborators and settings of metered calls (see the module docs)."""

    store: Store
    #: The ledger's clock (an aware datetime).
    now: Callable[[], datetime]
    #: The estimator, built on first use (loading a tokenizer takes a while).
    estimator_of: Callable[[], Estimator]
    spool: Spool
    hold_ttl: timedelta
    fail_open: bool
    default_max_tokens: int
    send_default_cap: bool
    #: Called after a settle reached the database (replays what waits in the spool).
    after_settle: Callable[[], None]
    #: Refuse calls for a project with no budget (``NoBudget``, code ``no_budget``).
    require_budget: bool = False
    #: ``refuse`` or ``shrink`` (see :data:`FITS`).
    fit: str = "refuse"
    #: ``shrink`` never lowers a cap below this many tokens (per completion).
    min_completion_tokens: int = 64

    @property
    def estimator(self) -> Estimator:
        return self.estimator_of()


class HasMeter(Protocol):
    """Anything that gives a :class:`Meter` (a ``Ledger``): what the transport is built from."""

    @property
    def meter(self) -> Meter: ...
