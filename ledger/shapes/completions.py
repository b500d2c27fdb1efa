"""The OpenAI legacy Completions shape (``POST /v1/completions``; issue 9 item 1).

Request: ``model``, ``prompt`` (a string, a list of strings, or token arrays), ``stream``,
``stream_options.include_usage``, the cap ``max_tokens`` (times ``n``).
Response: the Chat Completions ``usage``; text in ``choices[].text``. Stream: ``data:``
chunks with ``choices[].text``, the usage-only chunk when asked for, ``data: [DONE]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import openai as chat
from .common import (
    StreamEvent,
    cap_field,
    error_message,
    event_object,
)

usage_fields = chat.usage_fields
usage_from_fields = chat.usage_from_fields
usage_from_object = chat.usage_from_object
body_to_forward = chat.body_to_forward
body_user = chat.body_user
CAP_FIELDS: tuple[str, ...] = ("max_tokens",)


def max_tokens(body: Mapping[str, Any]) -> int | None:
    """The completion cap: ``max_tokens``."""
    return cap_field(body, "max_tokens")


def text_from_object(obj: Mapping[str, Any]) -> str:
    choices = obj.get("choices")
    if not isinstance(choices, list):
        return ""
    return "".join(c["text"] for c in choices
                   if isinstance(c, Mapping) and isinstance(c.get("text"), str))


def read_stream_event(event: str, data: str) -> StreamEvent:
    """Interpret one event of a Completions stream."""
    obj = event_object(event, data, done_marker=True)
    if isinstance(obj, StreamEvent):
        return obj
    error = error_message(obj["error"]) if obj.get("error") is not None else None
    raw_usage = obj.get("usage")
    choices = obj.get("choices")
    return StreamEvent(
        text=text_from_object(obj), usage_fields=usage_fields(raw_usage), error=error,
        usage_only=isinstance(choices, list) and not choices and raw_usage is not None)
