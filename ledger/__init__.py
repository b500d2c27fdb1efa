"""runapi-ledger: every LLM call through RunAPI estimated, held against a budget, forwarded and
settled at its exact cost.

The public API; see README.md for a tour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .budget import BudgetState
from .clock import Clock, ManualClock, SystemClock
from .core import Estimate, Ledger
from .errors import (
    BudgetExceeded,
    InvalidInput,
    LedgerError,
    LedgerUnavailable,
    NoBudget,
    ProjectNotAllowed,
    UnknownModel,
    UnmeteredEndpoint,
)
from .invoice import CreditNote, Invoice, InvoiceLine
from .metering.refusal import RefusalInfo, RefusedBudget, refusal
from .parties import Customer, Issuer
from .pricing import Price
from .records import Hold

if TYPE_CHECKING:
    from .transport import MeteredTransport

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The transport imports httpx and httpx2: load it on first use, so `import ledger`
    # (and the CLI) stay quick.
    if name == "MeteredTransport":
        from .transport import MeteredTransport

        return MeteredTransport
    raise AttributeError(f"module 'ledger' has no attribute {name!r}")


__all__ = [
    "BudgetExceeded",
    "BudgetState",
    "Clock",
    "CreditNote",
    "Customer",
    "Estimate",
    "Hold",
    "InvalidInput",
    "Invoice",
    "InvoiceLine",
    "Issuer",
    "Ledger",
    "LedgerError",
    "LedgerUnavailable",
    "ManualClock",
    "MeteredTransport",
    "NoBudget",
    "Price",
    "ProjectNotAllowed",
    "RefusalInfo",
    "RefusedBudget",
    "SystemClock",
    "UnknownModel",
    "UnmeteredEndpoint",
    "__version__",
    "refusal",
]
