"""Every error the ledger raises on purpose, in one place.

Hierarchy::

    LedgerError                      base of everything below
    ├── BudgetExceeded               a reservation does not fit a hard budget
    ├── UnknownModel                 a model has no price (never a silent $0)
    ├── NoBudget                     Ledger(require_budget=True) and the project has no budget
    ├── ProjectNotAllowed            X-Ledger-Project names a project the client may not bill
    ├── UnmeteredEndpoint            a POST to an endpoint the ledger cannot meter (not sent)
    ├── InvalidInput (ValueError)    bad input: negative tokens, naive datetime, bad month...
    └── LedgerUnavailable            the database cannot be reached (hard budgets fail closed)

Each refusal has its own code (``ledger.refusal(exc).code``): ``budget_exceeded``,
``unknown_model``, ``no_budget``, ``project_not_allowed``, ``unmetered_endpoint``,
``ledger_unavailable``.

A float given where money is expected raises the builtin ``TypeError`` (see ``ledger.money``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any


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
        budget: Any = None,
    ) -> None:
        self.project = project
        self.month = month
        self.limit = limit
        self.spent = spent
        self.held = held
        self.requested = requested
        #: The ``ledger.records.BudgetWindow`` that did not fit (the budget, its window and its
        #: totals); None when not known. (Typed loosely: ``errors`` imports nothing of the
        #: ledger's.)
        self.budget: Any = budget
        remaining = limit - spent - held
        which = f"budget exceeded for project {project!r} " + (
            f"in {month}" if budget is None else f"({budget.label})")
        super().__init__(
            f"{which}: limit ${limit}, spent ${spent}, held ${held}, remaining ${remaining}; "
            f"this call's worst case is ${requested}"
        )


class UnknownModel(LedgerError):
    """A model has no price in force; the ledger never prices an unknown model at $0."""

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(
            f"no price for model {model!r}: set one with "
            f"`ledger price set {model} PER_1K` or Ledger.set_price({model!r}, Decimal('...'))"
        )


class NoBudget(LedgerError):
    """The ledger requires a budget (``Ledger(require_budget=True)``) and the project has none."""

    def __init__(self, project: str) -> None:
        self.project = project
        super().__init__(
            f"project {project!r} has no budget and this ledger requires one "
            f"(Ledger(require_budget=True)): set one with `ledger budget set {project} LIMIT`")


class ProjectNotAllowed(LedgerError):
    """A request's ``X-Ledger-Project`` header names a project its client may not bill."""

    def __init__(self, project: str, client_project: str) -> None:
        self.project = project
        self.client_project = client_project
        super().__init__(
            f"this client bills project {client_project!r} and may not bill {project!r} "
            "(X-Ledger-Project): make the client with projects=[...] or projects='*' to allow it")


class UnmeteredEndpoint(LedgerError):
    """A POST to an endpoint the ledger cannot meter: refused before it is sent."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"POST {path} is not an endpoint the ledger meters, so it was not sent; if it costs "
            "nothing, list it in the client's free_paths=[...]")


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
