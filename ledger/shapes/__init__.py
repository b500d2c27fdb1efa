"""The two request/response shapes RunAPI serves, read without any I/O.

* ``"openai"``: ``POST .../chat/completions`` (OpenAI Chat Completions).
* ``"anthropic"``: ``POST .../messages`` (Anthropic Messages).
* ``"responses"``: ``POST .../responses`` (OpenAI Responses).
* ``"completions"``: ``POST .../completions`` (OpenAI legacy Completions).
* ``"embeddings"``: ``POST .../embeddings`` (OpenAI Embeddings: input tokens only).

Which path is which (and which are free or refused) is :mod:`ledger.endpoints`.

This package turns a request body into a :class:`CallRequest` (model, stream flag, completion
cap), reads the :class:`Usage` and completion text out of a response body, and interprets one
server-sent event of a response stream as a :class:`StreamEvent` (the SSE framing itself lives
in :mod:`ledger.sse`). The shape-specific details are in :mod:`ledger.shapes.openai` and
:mod:`ledger.shapes.anthropic`; everything here is pure, stateless and thread-safe.

Readers of response data never raise: a server's body is not trusted, so a missing or
malformed required count reads as "no usage" (``None``) and anything unexpected as "no text"
(``""``). A bad *optional* detail (cached or reasoning tokens, ``total_tokens``) only drops
that detail, noted in :attr:`Usage.notes`. The "text" read from a reply is everything the
model generated that is billed as completion (visible text, reasoning, tool-call arguments):
it is what the ledger counts when it must estimate the completion tokens.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from ..errors import InvalidInput
from .common import (
    GARBLED as GARBLED,
)
from .common import (
    INVALID as INVALID,
)
from .common import (
    NOTHING as NOTHING,
)
from .common import (
    SHAPES as SHAPES,
)
from .common import (
    BadCount as BadCount,
)
from .common import (
    CallRequest as CallRequest,
)
from .common import (
    Shape as Shape,
)
from .common import (
    StreamEvent as StreamEvent,
)
from .common import (
    Usage as Usage,
)
from .common import (
    body_bytes as body_bytes,
)
from .common import (
    cap_field as cap_field,
)
from .common import (
    combine_usages as combine_usages,
)
from .common import (
    dump_json as dump_json,
)
from .common import (
    error_message as error_message,
)
from .common import (
    invalid_marks as invalid_marks,
)
from .common import (
    load_object as load_object,
)
from .common import (
    make_usage as make_usage,
)
from .common import (
    nonnegative_int as nonnegative_int,
)
from .common import (
    optional_count as optional_count,
)
from .common import (
    token_field as token_field,
)

__all__ = [
    "CallRequest",
    "Shape",
    "StreamEvent",
    "Usage",
    "body_user",
    "body_with_cap",
    "parse_request",
    "read_stream_event",
    "text_from_body",
    "usage_from_body",
    "usage_from_fields",
    "with_stream_usage",
]

def parse_request(shape: Shape, body: bytes) -> CallRequest:
    """Parse a request body of the given shape.

    Raises :class:`~ledger.errors.InvalidInput` when ``shape`` is unknown or ``body`` is not a
    JSON object, and names the field when a completion cap is not a positive integer (or
    null). Other fields of the wrong type never raise: they read as absent.
    """
    module = _module(shape)
    try:
        value = json.loads(body)
    except RecursionError:
        raise InvalidInput(f"the {shape} request body is nested too deeply") from None
    except (ValueError, TypeError) as exc:  # JSONDecodeError, UnicodeDecodeError, digit limits
        raise InvalidInput(f"the {shape} request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInput(
            f"the {shape} request body must be a JSON object, not {type(value).__name__}"
            if value is not None
            else f"the {shape} request body must be a JSON object, not null"
        )
    model = value.get("model")
    return CallRequest(
        shape=shape,
        model=model if isinstance(model, str) else None,
        stream=value.get("stream") is True,
        max_tokens=module.max_tokens(value),
        body=value,
    )


def usage_from_body(shape: Shape, body: bytes) -> Usage | None:
    """The usage reported in a (non-streaming) response body; ``None`` if absent or implausible.

    Never raises, whatever the bytes: missing or null required counts, non-integers, bools,
    negatives and counts above ``MAX_TOKENS`` all give ``None``.
    """
    try:
        module = _module(shape)
        obj = load_object(body)
        return None if obj is None else module.usage_from_object(obj)
    except Exception:  # belt and braces: this reads untrusted bytes and must never raise
        return None


def text_from_body(shape: Shape, body: bytes) -> str:
    """The completion text of a (non-streaming) response body; ``""`` on anything unexpected."""
    try:
        module = _module(shape)
        obj = load_object(body)
        return "" if obj is None else module.text_from_object(obj)
    except Exception:
        return ""


def usage_from_fields(shape: Shape, fields: Mapping[str, int]) -> Usage | None:
    """The :class:`Usage` that the stream usage fields merged so far add up to, if complete."""
    try:
        return _module(shape).usage_from_fields(fields)
    except Exception:
        return None


def read_stream_event(shape: Shape, event: str, data: str) -> StreamEvent:
    """Interpret one server-sent event (its ``event:`` type, possibly ``""``, and its data)."""
    try:
        return _module(shape).read_stream_event(event, data)
    except Exception:
        return GARBLED


def with_stream_usage(req: CallRequest) -> tuple[bytes, bool] | None:
    """Ask an OpenAI stream to report its usage.

    For an OpenAI streaming request whose ``stream_options.include_usage`` is not ``true``,
    return ``(new body bytes with stream_options.include_usage = true, True)``; the ``True``
    says the ledger injected it, so the usage-only chunk must be dropped before the caller sees
    it (``StreamMeter(..., drop_usage_chunk=True)``). Anything else: ``None`` (send the body as
    it is).
    """
    if req.shape not in ("openai", "completions") or not req.stream:
        return None
    return openai.with_stream_usage(req.body)


def body_to_forward(req: CallRequest, default_cap: int | None) -> tuple[bytes | None, bool]:
    """The body to send instead of the caller's (``None``: unchanged) and whether stream usage
    was injected (then the usage-only chunk must be dropped before the caller sees it).

    Only OpenAI-family bodies change: a Chat Completions or Completions stream is asked for its
    usage, and a call with no (or a null) completion cap gets the default cap when one is given
    (``max_tokens``; Responses: ``max_output_tokens``). (The Anthropic API requires
    ``max_tokens`` and streams its usage unasked; embeddings have no completion.)
    """
    if req.shape == "anthropic":
        return None, False
    return _module(req.shape).body_to_forward(req.body, stream=req.stream,
                                              default_cap=default_cap)


def body_user(req: CallRequest) -> str | None:
    """The end user the body names (OpenAI-family ``user``, Anthropic ``metadata.user_id``),
    or ``None`` when absent or not a string (a body's other fields are not the ledger's to
    reject). The string is returned as it is: the caller validates it as a name."""
    try:
        value = _module(req.shape).body_user(req.body)
    except Exception:  # a hand-built mapping with odd types: no user
        return None
    return value if isinstance(value, str) else None


def body_with_cap(req: CallRequest, forward_body: bytes | None, cap: int) -> bytes | None:
    """The body to send with its completion cap lowered to ``cap`` (``fit="shrink"``):
    ``forward_body`` (the body the ledger already rewrote) or else the caller's, with every
    cap field it sets (non-null) given ``cap``, or, when it sets none, the shape's own field
    (``max_tokens``; Responses: ``max_output_tokens``). ``None`` when the shape has no cap
    (embeddings) or the body cannot be rewritten."""
    fields = _module(req.shape).CAP_FIELDS
    if not fields:
        return None
    obj = dict(req.body) if forward_body is None else load_object(forward_body)
    if obj is None:
        return None
    present = [key for key in fields if obj.get(key) is not None]
    for key in fields:
        if key in obj and obj[key] is None:
            del obj[key]  # a null cap is no cap: the one set below is the only one
    for key in present or [fields[-1]]:
        obj[key] = cap
    try:
        return dump_json(obj)
    except (TypeError, ValueError, RecursionError):
        return None


class _ShapeModule(Protocol):
    """What each shape module provides (``ledger.shapes.openai``, ``ledger.shapes.anthropic``)."""

    #: The request's completion cap fields (read first first); empty: no completion.
    CAP_FIELDS: tuple[str, ...]

    def body_user(self, body: Mapping[str, Any]) -> object: ...

    def max_tokens(self, body: Mapping[str, Any]) -> int | None: ...

    def usage_from_object(self, obj: Mapping[str, Any]) -> Usage | None: ...

    def text_from_object(self, obj: Mapping[str, Any]) -> str: ...

    def usage_from_fields(self, fields: Mapping[str, int]) -> Usage | None: ...

    def read_stream_event(self, event: str, data: str) -> StreamEvent: ...

    def body_to_forward(self, body: Mapping[str, Any], *, stream: bool,
                        default_cap: int | None) -> tuple[bytes | None, bool]: ...


def _module(shape: str) -> _ShapeModule:
    module = _MODULES.get(shape)
    if module is None:
        raise InvalidInput(f"unknown API shape {shape!r}: expected one of {', '.join(SHAPES)}")
    return module


from . import anthropic, completions, embeddings, openai, responses  # noqa: E402

_MODULES: dict[str, _ShapeModule] = {
    "openai": openai, "anthropic": anthropic, "responses": responses,
    "completions": completions, "embeddings": embeddings,
}
