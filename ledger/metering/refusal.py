"""A call refused at **hold** (pure): the HTTP answer the transports give instead of sending it.

Each refusal has its own code, and its error type is that code (only ``budget_exceeded`` is of
type ``budget_exceeded``):

* 402 ``budget_exceeded``: the hold does not fit a hard budget;
* 402 ``unknown_model``: the model has no price (its cost cannot be bounded);
* 402 ``no_budget``: ``Ledger(require_budget=True)`` and the project has no budget;
* 400 ``project_not_allowed``: ``X-Ledger-Project`` names a project the client may not bill;
* 400 ``unmetered_endpoint``: a POST to an endpoint the ledger does not meter;
* 400 ``ledger_invalid_request``: the body cannot be metered (not JSON, no model, a bad cap);
* 503 ``ledger_unavailable``: the database cannot be reached and the ledger fails closed.

All but the 503 carry ``x-should-retry: false``; every one carries ``x-ledger-refused: CODE``.
Each is an error body in the caller's API shape (:class:`Refusal`). :func:`refusal` reads one
back from whatever the caller holds (an SDK error, a response, a ``LedgerError``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from ..errors import (
    BudgetExceeded,
    LedgerError,
    LedgerUnavailable,
    NoBudget,
    ProjectNotAllowed,
    UnknownModel,
    UnmeteredEndpoint,
)
from ..money import money_context, money_str
from ..shapes import Shape

__all__ = [
    "CODES",
    "REFUSED",
    "Refusal",
    "RefusalInfo",
    "RefusedBudget",
    "refusal",
    "refusal_for",
    "refused_budget",
]

#: The codes of the ledger's refusals.
CODES = ("budget_exceeded", "unknown_model", "no_budget", "ledger_unavailable",
         "unmetered_endpoint", "project_not_allowed", "ledger_invalid_request")


@dataclass(frozen=True)
class Refusal:
    """A call the ledger answers itself, without sending it: an HTTP error in the API's shape."""

    status: int
    type: str
    code: str
    message: str
    details: Mapping[str, str | None] = field(default_factory=dict)
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
        budget = refused_budget(exc)
        return Refusal(402, "budget_exceeded", "budget_exceeded", f"{REFUSED}: {exc}", {
            "project": exc.project, "month": exc.month, "limit": money_str(budget.limit),
            "spent": money_str(budget.spent), "held": money_str(budget.held),
            "worst_case": money_str(exc.requested), "remaining": money_str(budget.remaining),
            "budget": budget.label, "period": budget.period, "window": budget.window,
            "user": budget.user, "tag": budget.tag,
        })
    if isinstance(exc, UnknownModel):
        return Refusal(402, "unknown_model", "unknown_model", f"{REFUSED}: {exc}",
                       {"model": exc.model})
    if isinstance(exc, NoBudget):
        return Refusal(402, "no_budget", "no_budget", f"{REFUSED}: {exc}",
                       {"project": exc.project})
    if isinstance(exc, ProjectNotAllowed):
        return Refusal(400, "project_not_allowed", "project_not_allowed", f"{REFUSED}: {exc}",
                       {"project": exc.project})
    if isinstance(exc, UnmeteredEndpoint):
        return Refusal(400, "unmetered_endpoint", "unmetered_endpoint", f"{REFUSED}: {exc}")
    if isinstance(exc, LedgerUnavailable):
        return Refusal(
            503, "ledger_unavailable", "ledger_unavailable",
            f"{REFUSED}: its database cannot be reached and hard budgets fail closed ({exc}). "
            "Ledger(..., fail_open=True) lets calls through unmetered (their usage is spooled).",
            retry=True,
        )
    return Refusal(400, "invalid_request_error", "ledger_invalid_request",
                   f"runapi-ledger cannot meter this request, so it was not sent: {exc}")


@dataclass(frozen=True)
class RefusedBudget:
    """The budget that refused a call: its project and the month of the call, its limit, what
    was spent and held in its window, and the call's worst case (Decimal dollars); which
    budget it is (``label``, e.g. ``"acme user=* day"``; its ``period``, ``window`` start,
    ``user`` and ``tag``) and what it had left (``remaining``). ``str()`` is the label.

    The same, whether read from a ``BudgetExceeded`` or from the 402 body an SDK raised on
    (the JSON error carries every field: ``budget`` is the label)."""

    project: str
    month: str
    limit: Decimal
    spent: Decimal
    held: Decimal
    worst_case: Decimal
    label: str = ""
    period: str = "month"
    window: str = ""
    user: str | None = None
    tag: str | None = None

    @property
    def remaining(self) -> Decimal:
        with money_context():  # exact whatever the caller's decimal context
            return self.limit - self.spent - self.held

    def __str__(self) -> str:
        return self.label or f"{self.project} {self.period}"


def refused_budget(exc: BudgetExceeded) -> RefusedBudget:
    """The budget that did not fit, read from the error (its ``.budget`` window when the
    store names one; else the project's month, as before budgets had scopes)."""
    window = getattr(exc, "budget", None)
    if window is None:
        return RefusedBudget(exc.project, exc.month, exc.limit, exc.spent, exc.held,
                             exc.requested, f"{exc.project} month", "month", exc.month)
    budget = window.budget
    return RefusedBudget(exc.project, exc.month, window.limit, window.spent, window.held,
                         exc.requested, budget.label, budget.period, window.window,
                         window.user if budget.user is not None else None, budget.tag)


@dataclass(frozen=True)
class RefusalInfo:
    """What :func:`refusal` found: ``code`` (one of :data:`CODES`), ``message``, ``budget``
    (the :class:`RefusedBudget` that refused, for ``budget_exceeded``; else ``None``: its
    ``label`` names the budget, ``str(budget)`` too) and the
    HTTP ``status`` the caller got (``None`` for a ``LedgerError``)."""

    code: str
    message: str
    budget: RefusedBudget | None = None
    status: int | None = None


def refusal(thing: object) -> RefusalInfo | None:
    """The ledger's refusal carried by ``thing``, or ``None`` if it is not one.

    ``thing`` may be a :class:`~ledger.errors.LedgerError`, an ``openai``/``anthropic`` SDK
    error (its ``.response`` / ``.body`` are read), or an ``httpx``/``httpx2`` response. Never
    raises. A response counts as a refusal only if the ledger answered it (its
    ``x-ledger-refused`` header, or an error body whose code is a ledger code and whose message
    says runapi-ledger refused it).
    """
    try:
        return _refusal(thing)
    except Exception:
        return None


def _refusal(thing: object) -> RefusalInfo | None:
    if isinstance(thing, LedgerError):
        answer = refusal_for(thing)
        budget = refused_budget(thing) if isinstance(thing, BudgetExceeded) else None
        return RefusalInfo(answer.code, str(thing), budget, None)
    response = getattr(thing, "response", None)
    body = getattr(thing, "body", None)
    if response is None and hasattr(thing, "status_code") and hasattr(thing, "headers"):
        response = thing
    if response is None:
        return None
    status = getattr(response, "status_code", None)
    headers = getattr(response, "headers", None)
    header_code = headers.get("x-ledger-refused") if headers is not None else None
    error = _error_object(body) or _error_object(_response_json(response))
    code = error.get("code") if error is not None else None
    message = error.get("message") if error is not None else None
    if header_code not in CODES:
        header_code = None
        if not (isinstance(code, str) and code in CODES and isinstance(message, str)
                and REFUSED in message):
            return None
    final = header_code or str(code)
    text = message if isinstance(message, str) else f"runapi-ledger refused this call ({final})"
    budget = _budget(error) if final == "budget_exceeded" and error is not None else None
    return RefusalInfo(final, text, budget, status if isinstance(status, int) else None)


def _response_json(response: object) -> object:
    try:
        content = response.content  # type: ignore[attr-defined]
    except Exception:  # a stream not read: no body to look at
        return None
    try:
        return json.loads(content)
    except Exception:
        return None


def _error_object(body: object) -> Mapping[str, Any] | None:
    """The error object of an error body of either shape (or an SDK's ``.body``, which is the
    error object itself for openai and the whole body for anthropic)."""
    if not isinstance(body, Mapping):
        return None
    inner = body.get("error")
    if isinstance(inner, Mapping):
        return inner
    return body if "code" in body or "message" in body else None


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _budget(error: Mapping[str, Any]) -> RefusedBudget | None:
    try:
        project, month = str(error["project"]), str(error["month"])
        return RefusedBudget(
            project, month, Decimal(str(error["limit"])),
            Decimal(str(error["spent"])), Decimal(str(error["held"])),
            Decimal(str(error["worst_case"])),
            _optional_str(error.get("budget")) or f"{project} month",
            _optional_str(error.get("period")) or "month",
            _optional_str(error.get("window")) or month,
            _optional_str(error.get("user")), _optional_str(error.get("tag")))
    except (KeyError, TypeError, InvalidOperation):
        return None
