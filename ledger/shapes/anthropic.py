"""The Anthropic Messages shape (``POST /v1/messages``).

Request: ``model``, ``stream``, ``max_tokens`` (required by the API).
Response: ``usage.input_tokens`` (uncached input only), ``usage.cache_read_input_tokens``,
``usage.cache_creation_input_tokens``, ``usage.output_tokens``; text in ``content[]`` blocks of
type ``text``. The ledger's ``prompt_tokens`` is the sum of the three input counts.
Stream: ``message_start`` (its ``message.usage`` has the input counts), ``content_block_delta``
(``text_delta``), ``message_delta`` (cumulative ``usage.output_tokens``; newer APIs may repeat
the input counts there too), ``message_stop``; ``ping``; ``error``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import (
    GARBLED,
    NOTHING,
    BadCount,
    StreamEvent,
    Usage,
    error_message,
    load_object,
    cap_field,
    make_usage,
    token_field,
)

INPUT = "input_tokens"
OUTPUT = "output_tokens"
CACHE_READ = "cache_read_input_tokens"
CACHE_CREATION = "cache_creation_input_tokens"
FIELDS = (INPUT, OUTPUT, CACHE_READ, CACHE_CREATION)


def max_tokens(body: Mapping[str, Any]) -> int | None:
    """The completion cap: ``max_tokens``."""
    return cap_field(body, "max_tokens")


def usage_fields(usage: object) -> dict[str, int] | None:
    """The counts present in a ``usage`` object (nulls are absent); ``None`` if any is invalid."""
    if not isinstance(usage, Mapping):
        return None
    fields: dict[str, int] = {}
    try:
        for key in FIELDS:
            value = token_field(usage, key)
            if value is not None:
                fields[key] = value
    except BadCount:
        return None
    return fields


def usage_from_fields(fields: Mapping[str, int]) -> Usage | None:
    """A :class:`Usage` once both ``input_tokens`` and ``output_tokens`` are known."""
    uncached = fields.get(INPUT)
    output = fields.get(OUTPUT)
    if uncached is None or output is None:
        return None
    read = fields.get(CACHE_READ, 0)
    prompt = uncached + read + fields.get(CACHE_CREATION, 0)
    return make_usage(prompt, output, read)


def usage_from_object(obj: Mapping[str, Any]) -> Usage | None:
    """The usage of a parsed response body."""
    fields = usage_fields(obj.get("usage"))
    return None if fields is None else usage_from_fields(fields)


def text_from_object(obj: Mapping[str, Any]) -> str:
    """The text of a parsed response body's ``text`` content blocks."""
    content = obj.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "".join(
        block["text"]
        for block in content
        if isinstance(block, Mapping)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    )


def read_stream_event(event: str, data: str) -> StreamEvent:
    """Interpret one event of a Messages stream (``event`` is the SSE event type, maybe ``""``)."""
    stripped = data.strip()
    if not stripped:
        return NOTHING
    obj = load_object(stripped)
    if obj is None:
        return StreamEvent(error=stripped) if event == "error" else GARBLED
    kind = obj.get("type")
    if not isinstance(kind, str):
        kind = event
    if kind == "error" or event == "error":
        return StreamEvent(error=error_message(obj.get("error", obj)))
    if kind == "message_start":
        message = obj.get("message")
        usage = message.get("usage") if isinstance(message, Mapping) else None
        return StreamEvent(usage_fields=usage_fields(usage))
    if kind == "message_delta":
        return StreamEvent(usage_fields=usage_fields(obj.get("usage")))
    if kind == "content_block_delta":
        delta = obj.get("delta")
        if isinstance(delta, Mapping) and delta.get("type") == "text_delta":
            text = delta.get("text")
            if isinstance(text, str):
                return StreamEvent(text=text)
        return NOTHING
    if kind == "message_stop":
        return StreamEvent(done=True)
    return NOTHING


def body_to_forward(body: Mapping[str, Any], *, stream: bool,
                    default_cap: int | None) -> tuple[bytes | None, bool]:
    """Sent as it is: the API requires ``max_tokens`` and streams its usage unasked."""
    return None, False
