"""A call refused at **hold** (pure): the HTTP answer the transports give instead of sending it.

402 ``budget_exceeded`` when the hold does not fit (code ``budget_exceeded``) or the model has
no price (code ``unknown_model``: its cost cannot be bounded, so no budget can admit it); 400
when the body cannot be metered (not JSON, no model); 503 ``ledger_unavailable`` when the
database cannot be reached before the call and the ledger fails closed. The 402 and 400 carry
``x-should-retry: false``. Each is an error body in the caller's API shape (:class:`Refusal`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import BudgetExceeded, LedgerError, LedgerUnavailable, UnknownModel
from ..money import money_str
from ..shapes import Shape

__all__ = ["REFUSED", "Refusal", "refusal_for"]


@dataclass(frozen=True)
class Refusal:
    """A call the ledger answers itself, without sending it: an HTTP error in the API's shape."""

    status: int
    type: str
    code: str
    message: str
    details: Mapping[str, str] = field(default_factory=dict)
    retry: bool = False

    def body(self, shape: Shape) -> bytes:
        """The JSON error body: OpenAI ``{"error": {message, type, code, ...}}``, Anthropic
        ``{"type": "error", "error": {type, message, ...}}``; details are extra fields."""
        if shape == "anthropic":
            payload: dict[str, Any] = {
                "type": "error",
                "error": {"type": self.type, "message": self.message, "code": self.code,
                          **self.details},
            }
        else:
            payload = {"error": {"message": self.message, "type": self.type, "param": None,
                                 "code": self.code, **self.details}}
        return json.dumps(payload, separators=(",", ":")).encode()

    def headers(self) -> list[tuple[str, str]]:
        out = [("content-type", "application/json"), ("x-ledger-refused", self.code)]
        out.append(("x-should-retry", "true" if self.retry else "false"))
        if self.retry:
            out.append(("retry-after", "1"))
        return out


REFUSED = "runapi-ledger refused this call before sending it"


def refusal_for(exc: LedgerError) -> Refusal:
    """The HTTP answer to a call refused before sending it (see the module docs)."""
    if isinstance(exc, BudgetExceeded):
        return Refusal(402, "budget_exceeded", "budget_exceeded", f"{REFUSED}: {exc}", {
            "project": exc.project, "month": exc.month, "limit": money_str(exc.limit),
            "spent": money_str(exc.spent), "held": money_str(exc.held),
            "worst_case": money_str(exc.requested),
        })
    if isinstance(exc, UnknownModel):
        return Refusal(402, "budget_exceeded", "unknown_model", f"{REFUSED}: {exc}",
                       {"model": exc.model})
    if isinstance(exc, LedgerUnavailable):
        return Refusal(
            503, "ledger_unavailable", "ledger_unavailable",
            f"{REFUSED}: its database cannot be reached and hard budgets fail closed ({exc}). "
            "Ledger(..., fail_open=True) lets calls through unmetered (their usage is spooled).",
            retry=True,
        )
    return Refusal(400, "invalid_request_error", "ledger_invalid_request",
                   f"runapi-ledger cannot meter this request, so it was not sent: {exc}")
