"""runapi-ledger: every LLM call through RunAPI estimated, held against a budget, forwarded and
settled at its exact cost.

The public API; see README.md for a tour.
"""

from __future__ import annotations

from .budget import BudgetState
from .clock import Clock, ManualClock, SystemClock
from .core import Estimate, Ledger
from .errors import (
    BudgetExceeded,
    InvalidInput,
    InvoiceFrozen,
    LedgerError,
    LedgerUnavailable,
    UnknownModel,
)
from .pricing import Price
from .store.ops import Hold

__version__ = "0.1.0"

__all__ = [
    "BudgetExceeded",
    "BudgetState",
    "Clock",
    "Estimate",
    "Hold",
    "InvalidInput",
    "InvoiceFrozen",
    "Ledger",
    "LedgerError",
    "LedgerUnavailable",
    "ManualClock",
    "Price",
    "SystemClock",
    "UnknownModel",
    "__version__",
]
