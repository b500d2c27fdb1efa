"""Step 1 of a metered call, **prepare** (pure): parse and estimate the request body, choose
who pays, ask for stream usage, and note the credentials to keep out of what is stored.

* **Which project:** the ``X-Ledger-Project`` request header if present (the transport removes
  it before forwarding), else the client's project.
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
from ..records import Outcome
from ..redact import redact_text
from ..shapes import CallRequest, Shape, body_to_forward, parse_request
from .meter import Meter

__all__ = [
    "CALL_ID_HEADER",
    "PROJECT_HEADER",
    "PreparedCall",
    "guess_shape",
    "prepare",
    "redact",
    "secrets_of",
]

#: Request header that overrides the client's project for one call (removed before forwarding).
PROJECT_HEADER = "x-ledger-project"
#: Response header carrying the ledger's id of a metered call.
CALL_ID_HEADER = "x-ledger-call-id"


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


def prepare(meter: Meter, shape: Shape, project: str, body: bytes, *,
            call_id: str | None = None, secrets: tuple[str, ...] = ()) -> PreparedCall:
    """Parse and estimate a request body; raises :class:`InvalidInput` if it cannot be metered.

    CPU only (JSON and the tokenizer); the started time comes from the meter's clock.
    """
    check_name(project, "project")
    request = parse_request(shape, body)
    if request.model is None:
        raise InvalidInput(f'the {shape} request body has no "model" (a string)')
    check_name(request.model, "model")
    tokens = meter.estimator.estimate(request)
    cap = meter.default_max_tokens if tokens.capped_by_default and meter.send_default_cap else None
    if cap is None and tokens.capped_by_default and null_cap_field(request):
        # ``send_default_cap=False`` leaves a body with no cap field as written (the caller
        # asked for that), but a cap sent as null gets the held default all the same: null is
        # how SDKs spell "not given", and forwarding it uncapped while holding the default is
        # the overspend of issue 9 item 2.
        cap = meter.default_max_tokens
    forward_body, injected = body_to_forward(request, cap)
    return PreparedCall(
        call_id=call_id or new_call_id(), project=project, shape=shape, model=request.model,
        request=request, prompt_tokens=tokens.prompt_tokens,
        max_completion_tokens=tokens.max_completion_tokens,
        capped_by_default=tokens.capped_by_default, started=meter.now(),
        forward_body=forward_body, drop_usage_chunk=injected, secrets=secrets,
    )


def guess_shape(body: Mapping[str, Any]) -> Shape:
    """The API shape of a request body given without one: Anthropic if it has a field only
    Anthropic's Messages API uses (``system``, ``stop_sequences``, ``top_k``,
    ``anthropic_version``, ``thinking``), else OpenAI."""
    for key in ("system", "stop_sequences", "top_k", "anthropic_version", "thinking"):
        if key in body:
            return "anthropic"
    return "openai"


#: The completion cap fields of each shape that the ledger fills in (Anthropic requires its
#: ``max_tokens``; embeddings have no completion).
NULLABLE_CAPS: dict[str, tuple[str, ...]] = {
    "openai": ("max_tokens", "max_completion_tokens"),
    "responses": ("max_output_tokens",),
    "completions": ("max_tokens",),
}


def null_cap_field(request: CallRequest) -> bool:
    """The body carries a cap field of its shape set to ``null``."""
    return any(key in request.body and request.body[key] is None
               for key in NULLABLE_CAPS.get(request.shape, ()))
