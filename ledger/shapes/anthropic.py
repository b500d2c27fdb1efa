"""The Anthropic Messages shape (``POST /v1/messages``).

Request: ``model``, ``stream``, ``max_tokens`` (required by the API).
Response: ``usage.input_tokens`` (uncached input only), ``usage.cache_read_input_tokens``,
``usage.cache_creation_input_tokens``, ``usage.output_tokens``; text in ``content[]`` blocks of
type ``text``. The ledger's ``prompt_tokens`` is the sum of the three input counts.
Stream: ``message_start`` (its ``message.usage`` has the input counts and a placeholder
``output_tokens``), ``content_block_delta`` (``text_delta``, ``thinking_delta``,
``input_json_delta``; ``signature_delta`` is not output), ``message_delta`` (cumulative ``usage.output_tokens``; newer APIs may repeat
the input counts there too), ``message_stop``; ``ping``; ``error``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .common import (
    INVALID,
    NOTHING,
    BadCount,
    StreamEvent,
    Usage,
    cap_field,
    error_message,
    event_object,
    invalid_marks,
    make_usage,
    token_field,
)

INPUT = "input_tokens"
OUTPUT = "output_tokens"
CACHE_READ = "cache_read_input_tokens"
CACHE_CREATION = "cache_creation_input_tokens"
FIELDS = (INPUT, OUTPUT, CACHE_READ, CACHE_CREATION)
#: The text field of each billed ``content_block_delta`` (``signature_delta`` is not output).
_DELTA_TEXT = {"text_delta": "text", "thinking_delta": "thinking",
               "input_json_delta": "partial_json"}


CAP_FIELDS: tuple[str, ...] = ("max_tokens",)


def body_user(body: Mapping[str, Any]) -> object:
    """The end user the body names: ``metadata.user_id`` (``None`` when ``metadata`` is not
    an object; whatever ``user_id`` holds otherwise: the caller checks it)."""
    metadata = body.get("metadata")
    return metadata.get("user_id") if isinstance(metadata, Mapping) else None


def max_tokens(body: Mapping[str, Any]) -> int | None:
    """The completion cap: ``max_tokens``."""
    return cap_field(body, "max_tokens")


#: Stream field: 1 while the output count is only ``message_start``'s placeholder.
PLACEHOLDER = "placeholder.output_tokens"


def usage_fields(usage: object) -> dict[str, int] | None:
    """The counts present in a ``usage`` object (nulls are absent); ``None`` if it is not an
    object. A count that is present but not a plausible count is left out and marked
    ``invalid.<name>`` = 1 (a readable one marks it 0), so that the valid counts still stand."""
    if not isinstance(usage, Mapping):
        return None
    fields: dict[str, int] = {}
    for key in FIELDS:
        try:
            value = token_field(usage, key)
        except BadCount:
            fields[INVALID + key] = 1
            continue
        if value is not None:
            fields[key] = value
            fields[INVALID + key] = 0
    return fields


def usage_from_fields(fields: Mapping[str, int]) -> Usage | None:
    """A :class:`Usage` once both ``input_tokens`` and ``output_tokens`` are known. An output
    count that is still ``message_start``'s placeholder (no readable ``message_delta`` usage)
    gives a usage flagged ``estimated``."""
    uncached = fields.get(INPUT)
    output = fields.get(OUTPUT)
    if uncached is None or output is None:
        return None
    read = fields.get(CACHE_READ, 0)
    prompt = uncached + read + fields.get(CACHE_CREATION, 0)
    placeholder = bool(fields.get(PLACEHOLDER))
    notes = ("no final output_tokens in message_delta: message_start's placeholder "
             "is not the output",) if placeholder else ()
    return make_usage(prompt, output, read, invalid=invalid_marks(fields),
                      estimated=placeholder, notes=notes)


def usage_from_object(obj: Mapping[str, Any]) -> Usage | None:
    """The usage of a parsed response body."""
    fields = usage_fields(obj.get("usage"))
    return None if fields is None else usage_from_fields(fields)


def text_from_object(obj: Mapping[str, Any]) -> str:
    """The generated text of a parsed response body: ``text`` and ``thinking`` blocks, and
    the name and JSON input of ``tool_use`` blocks."""
    content = obj.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "".join(_block_text(block) for block in content if isinstance(block, Mapping))


def _block_text(block: Mapping[str, Any]) -> str:
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
    elif kind == "thinking":
        text = block.get("thinking")
    elif kind in ("tool_use", "server_tool_use"):
        name = block.get("name")
        tool_input = block.get("input")
        try:
            arguments = json.dumps(tool_input, ensure_ascii=False) if tool_input else ""
        except (TypeError, ValueError, RecursionError):
            arguments = ""
        return (name if isinstance(name, str) else "") + arguments
    else:
        return ""
    return text if isinstance(text, str) else ""


def read_stream_event(event: str, data: str) -> StreamEvent:
    """Interpret one event of a Messages stream (``event`` is the SSE event type, maybe ``""``)."""
    obj = event_object(event, data, done_marker=False)
    if isinstance(obj, StreamEvent):
        return obj
    kind = obj.get("type")
    if not isinstance(kind, str):
        kind = event
    if kind == "error" or event == "error":
        return StreamEvent(error=error_message(obj.get("error", obj)))
    if kind == "message_start":
        message = obj.get("message")
        usage = message.get("usage") if isinstance(message, Mapping) else None
        fields = usage_fields(usage)
        if fields is not None and OUTPUT in fields:
            fields[PLACEHOLDER] = 1
        return StreamEvent(usage_fields=fields)
    if kind == "message_delta":
        fields = usage_fields(obj.get("usage"))
        if fields is not None and OUTPUT in fields:
            fields[PLACEHOLDER] = 0
        return StreamEvent(usage_fields=fields)
    if kind == "content_block_delta":
        delta = obj.get("delta")
        if isinstance(delta, Mapping):
            kind = delta.get("type")
            key = _DELTA_TEXT.get(kind) if isinstance(kind, str) else None
            text = delta.get(key) if key else None
            if isinstance(text, str):
                return StreamEvent(text=text)
        return NOTHING
    if kind == "content_block_start":
        block = obj.get("content_block")
        text = _block_text(block) if isinstance(block, Mapping) else ""
        return StreamEvent(text=text) if text else NOTHING
    if kind == "message_stop":
        return StreamEvent(done=True)
    return NOTHING


def body_to_forward(body: Mapping[str, Any], *, stream: bool,
                    default_cap: int | None) -> tuple[bytes | None, bool]:
    """Sent as it is: the API requires ``max_tokens`` and streams its usage unasked."""
    return None, False
