"""Every error the ledger raises on purpose, in one place.

Hierarchy::

    LedgerError                      base of everything below
    ├── BudgetExceeded               a reservation does not fit a hard budget
    ├── UnknownModel                 a model has no price (never a silent $0)
    ├── InvalidInput (ValueError)    bad input: negative tokens, naive datetime, bad month...
    └── LedgerUnavailable            the database cannot be reached (hard budgets fail closed)

A float given where money is expected raises the builtin ``TypeError`` (see ``ledger.money``).
"""

from __future__ import annotations

from decimal import Decimal


class LedgerError(Exception):
    """Base class of every error the ledger raises on purpose."""


class BudgetExceeded(LedgerError):
    """A call's worst-case cost does not fit what is left of a hard budget."""

    def __init__(
        self,
        project: str,
        month: str,
        *,
        limit: Decimal,
        spent: Decimal,
        held: Decimal,
        requested: Decimal,
    ) -> None:
        self.project = project
        self.month = month
        self.limit = limit
        self.spent = spent
        self.held = held
        self.requested = requested
        remaining = limit - spent - held
        super().__init__(
            f"budget exceeded for project {project!r} in {month}: limit ${limit}, "
            f"spent ${spent}, held ${held}, remaining ${remaining}; this call's worst case "
            f"is ${requested}"
        )


class UnknownModel(LedgerError):
    """A model has no price in force; the ledger never prices an unknown model at $0."""

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(
            f"no price for model {model!r}: set one with "
            f"`ledger price set {model} PER_1K` or Ledger.set_price({model!r}, Decimal('...'))"
        )


class InvalidInput(LedgerError, ValueError):
    """An argument is out of range or malformed; the message names the field."""


class LedgerUnavailable(LedgerError):
    """The ledger's database cannot be reached or written.

    ``reason`` is the database driver's own words (default: the message); ``opening`` is true
    when it failed while a ledger was being opened. Raised by ``ledger.store.unavailable``.
    """

    def __init__(self, message: str, *, reason: str | None = None, opening: bool = False) -> None:
        super().__init__(message)
        self.reason = message if reason is None else reason
        self.opening = opening
