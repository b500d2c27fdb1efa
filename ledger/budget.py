"""The pure budget rules: what a project-month has, and whether a reservation fits.

A hard budget holds the invariant ``settled + held <= limit`` at every instant: a reservation
(hold) is admitted only when ``settled + held + amount <= limit``. A soft budget admits every
call and only flags the month in reports. A project with no budget is metered, never refused.
A call that already ran is always settled at its actual cost, even above its hold: the overage
is recorded, never dropped — so ``settled`` alone may exceed the limit by actual-cost overruns.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from .money import from_units, money_context

WARNING_RATIO = Decimal("0.8")


@dataclass(frozen=True)
class BudgetState:
    """A project's month: its limit (None: no budget), what is settled and what is held."""

    project: str
    month: str
    limit_units: int | None
    hard: bool
    settled_units: int
    held_units: int

    @property
    def limit(self) -> Decimal | None:
        return None if self.limit_units is None else from_units(self.limit_units)

    @property
    def spent(self) -> Decimal:
        return from_units(self.settled_units)

    @property
    def held(self) -> Decimal:
        return from_units(self.held_units)

    @property
    def remaining(self) -> Decimal | None:
        if self.limit_units is None:
            return None
        return from_units(self.limit_units - self.settled_units - self.held_units)

    def fits(self, amount_units: int) -> bool:
        """Would a reservation of ``amount_units`` be admitted?"""
        return fits(self.limit_units, self.hard, self.settled_units, self.held_units, amount_units)

    @property
    def status(self) -> str:
        """``ok``, ``warning`` (80% or more used) or ``over`` (spent + held above the limit)."""
        if self.limit_units is None:
            return "ok"
        used = self.settled_units + self.held_units
        if used > self.limit_units:
            return "over"
        with money_context():
            if self.limit_units and Decimal(used) >= WARNING_RATIO * self.limit_units:
                return "warning"
        return "ok"


def fits(limit_units: int | None, hard: bool, settled: int, held: int, amount: int) -> bool:
    """The admission rule: only a hard limit refuses, and only what would cross it."""
    if limit_units is None or not hard:
        return True
    return settled + held + amount <= limit_units
