"""The records a call carries from step to step: its ``Estimate`` (before), its ``Hold``
(reserved) and its ``Outcome`` (how it ended, what ``post`` or ``void`` writes down).

Plain frozen dataclasses, shared by the pure steps and the store; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from .errors import InvalidInput
from .pricing import Price

__all__ = ["CHARGED", "STATUSES", "Estimate", "Hold", "Outcome"]

STATUSES = ("ok", "failed", "refused", "cancelled", "expired")
#: Statuses that carry a charge (a cancelled call is charged for what it streamed): an
#: outcome with one of them posts its hold; any other voids it.
CHARGED = ("ok", "cancelled")


@dataclass(frozen=True)
class Estimate:
    """A pre-flight estimate: tokens in, the completion cap, and the worst-case cost."""

    model: str
    prompt_tokens: int
    max_completion_tokens: int
    cost: Decimal
    capped_by_default: bool
    price: Price


@dataclass(frozen=True)
class Hold:
    """A pending reservation: the call's id, where it counts, and the price it will post at."""

    call_id: str
    project: str
    month: str
    model: str
    amount_units: int
    price: Price
    est_prompt_tokens: int
    created_at: datetime
    expires_at: datetime
    state: str = "pending"


@dataclass(frozen=True)
class Outcome:
    """How a call ended: a charged status posts the hold at this usage, any other voids it."""

    status: str = "ok"                # ok | failed | cancelled | refused | expired
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    estimated: bool = False
    http_status: int | None = None
    error: str | None = None
    #: Reasoning tokens the server reported (part of completion_tokens), or None.
    reasoning_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise InvalidInput(f"status must be one of {STATUSES}, got {self.status!r}")
        for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens"):
            value = getattr(self, name)
            if value is None and name == "reasoning_tokens":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
            if value < 0:
                raise InvalidInput(f"{name} must not be negative, got {value}")

    @property
    def charged(self) -> bool:
        """Whether this outcome posts the hold (at its usage) rather than voiding it."""
        return self.status in CHARGED
