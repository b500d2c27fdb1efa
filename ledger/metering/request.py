"""Step 1 of a metered call, **prepare** (pure): parse and estimate the request body, choose
who pays, ask for stream usage, and note the credentials to keep out of what is stored.

* **Which project:** the ``X-Ledger-Project`` request header if present (the transport removes
  it before forwarding), else the client's project.
* **Which end user and tags:** :mod:`ledger.metering.attribution` (the client's, the
  ``X-Ledger-User`` / ``X-Ledger-Tags`` headers, the body's user).
* **A lowered cap** (``fit="shrink"``): :func:`shrink` rewrites the body to send with the cap
  the hold could afford.
* **Privacy:** :func:`secrets_of` finds the request's credentials; :func:`redact` blanks them
  out of any error text a server echoes them in, before an outcome is stored or spooled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ..errors import InvalidInput
from ..names import check_name, new_call_id
from ..records import Attribution, Outcome
from ..redact import redact_text
from ..shapes import (
    CallRequest,
    Shape,
    body_to_forward,
    body_user,
    body_with_cap,
    nonnegative_int,
    parse_request,
)
from .attribution import NOTHING_ASKED, Asked, resolve
from .meter import Meter

__all__ = [
    "CALL_ID_HEADER",
    "PROJECT_HEADER",
    "PreparedCall",
    "choices_of",
    "guess_shape",
    "prepare",
    "redact",
    "secrets_of",
    "shrink",
]

#: Request header that overrides the client's project for one call (removed before forwarding).
PROJECT_HEADER = "x-ledger-project"
#: Response header carrying the ledger's id of a metered call.
CALL_ID_HEADER = "x-ledger-call-id"
#: OpenAI's largest ``n`` (as ``ledger.estimate`` counts it).
MAX_CHOICES = 128


@dataclass(frozen=True)
class PreparedCall:
    """A call ready to hold: who pays, what it is, its estimate, and what to forward."""
    call_id: str
    project: str
    shape: Shape
    model: str
    request: CallRequest
    prompt_tokens: int
    max_completion_tokens: int
    capped_by_default: bool
    started: datetime
    #: The body to send instead of the caller's (``include_usage`` injected), or ``None``.
    forward_body: bytes | None = None
    #: The ledger asked for stream usage: drop the usage-only chunk the caller never asked for.
    drop_usage_chunk: bool = False
    #: The request's credentials (see :func:`secrets_of`): blanked out of any error text a
    #: server echoes them in, before the outcome is stored or spooled.
    secrets: tuple[str, ...] = field(default=(), repr=False)
    #: Who the call is for, besides its project (end user, tags).
    attribution: Attribution = field(default_factory=Attribution)
    #: How many completions the call asks for (OpenAI ``n``): the cap is per completion, the
    #: hold's ``max_completion_tokens`` is for all of them.
    choices: int = 1
    #: The per-completion cap the body was sent with after ``fit="shrink"`` lowered it
    #: (``x-ledger-max-tokens``), or ``None`` when it was not lowered.
    shrunk_to: int | None = None


#: Request headers whose values are credentials.
SECRET_HEADERS = ("authorization", "proxy-authorization", "x-api-key", "api-key")
REDACTED = "[REDACTED]"


def secrets_of(headers: Mapping[str, str]) -> tuple[str, ...]:
    """The credentials in request headers (whole values, and the token after a scheme such
    as ``Bearer``), longest first; values shorter than 8 characters are not worth hiding."""
    found: set[str] = set()
    for name in SECRET_HEADERS:
        value = headers.get(name)
        if value:
            found.add(value.strip())
            found.add(value.strip().split(" ", 1)[-1].strip())
    return tuple(sorted((v for v in found if len(v) >= 8), key=len, reverse=True))


def redact(outcome: Outcome, secrets: tuple[str, ...]) -> Outcome:
    """The outcome with every secret blanked out of its error text."""
    error = outcome.error and redact_text(outcome.error)  # credential-looking values too
    if not error:
        return outcome
    for secret in secrets:
        error = error.replace(secret, REDACTED)
    return outcome if error == outcome.error else replace(outcome, error=error)


def choices_of(request: CallRequest) -> int:
    """How many completions a request asks for (``n``, OpenAI Chat and Completions), >= 1."""
    if request.shape not in ("openai", "completions"):
        return 1
    n = nonnegative_int(request.body.get("n"))
    return min(n, MAX_CHOICES) if n is not None and n > 1 else 1


def prepare(meter: Meter, shape: Shape, project: str, body: bytes, *,
            call_id: str | None = None, secrets: tuple[str, ...] = (),
            attribution: Attribution | None = None, asked: Asked = NOTHING_ASKED) -> PreparedCall:
    """Parse and estimate a request body; raises :class:`InvalidInput` if it cannot be metered
    (a bad ``X-Ledger-User`` / ``X-Ledger-Tags`` in ``asked``, or body user, included).

    CPU only (JSON and the tokenizer); the started time comes from the meter's clock.
    """
    check_name(project, "project")
    request = parse_request(shape, body)
    if request.model is None:
        raise InvalidInput(f'the {shape} request body has no "model" (a string)')
    check_name(request.model, "model")
    who = resolve(attribution or Attribution(), asked, body_user(request))
    tokens = meter.estimator.estimate(request)
    cap = meter.default_max_tokens if tokens.capped_by_default and meter.send_default_cap else None
    forward_body, injected = body_to_forward(request, cap)
    return PreparedCall(
        call_id=call_id or new_call_id(), project=project, shape=shape, model=request.model,
        request=request, prompt_tokens=tokens.prompt_tokens,
        max_completion_tokens=tokens.max_completion_tokens,
        capped_by_default=tokens.capped_by_default, started=meter.now(),
        forward_body=forward_body, drop_usage_chunk=injected, secrets=secrets,
        attribution=who, choices=choices_of(request),
    )


def shrink(prepared: PreparedCall, held_completion_tokens: int) -> PreparedCall:
    """The call with its completion cap lowered to what its hold affords
    (``held_completion_tokens``, for all its ``n`` completions): the body to send rewritten
    (:func:`ledger.shapes.body_with_cap`). ``InvalidInput`` if it cannot be rewritten (the
    caller then releases the hold: a call is never sent with more than was held)."""
    per_choice = held_completion_tokens // prepared.choices
    if per_choice < 1:
        raise InvalidInput("the completion cap cannot be lowered below 1 token per choice")
    body = body_with_cap(prepared.request, prepared.forward_body, per_choice)
    if body is None:
        raise InvalidInput("the request body's completion cap cannot be lowered")
    return replace(prepared, forward_body=body, shrunk_to=per_choice,
                   max_completion_tokens=per_choice * prepared.choices)


def guess_shape(body: Mapping[str, Any]) -> Shape:
    """The API shape of a request body given without one: Anthropic if it has a field only
    Anthropic's Messages API uses (``system``, ``stop_sequences``, ``top_k``,
    ``anthropic_version``, ``thinking``), else OpenAI."""
    for key in ("system", "stop_sequences", "top_k", "anthropic_version", "thinking"):
        if key in body:
            return "anthropic"
    return "openai"
