"""The OpenAI Chat Completions shape (``POST /v1/chat/completions``).

Request: ``model``, ``stream``, ``stream_options.include_usage``, and the completion cap
``max_completion_tokens`` (newer) or ``max_tokens`` (older).
Response: ``usage.prompt_tokens`` (all input), ``usage.completion_tokens``,
``usage.prompt_tokens_details.cached_tokens``; the text in ``choices[].message.content``.
Stream: ``data: {chunk}`` events, text in ``choices[].delta.content``, an optional usage-only
chunk (``choices == []``) before the final ``data: [DONE]``; an error is a chunk with a
top-level ``"error"``.
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
    dump_json,
    error_message,
    load_object,
    make_usage,
    cap_field,
    token_field,
)

PROMPT = "prompt_tokens"
COMPLETION = "completion_tokens"
CACHED = "cached_tokens"


def max_tokens(body: Mapping[str, Any]) -> int | None:
    """The completion cap: ``max_completion_tokens`` if given, else ``max_tokens``."""
    newer = cap_field(body, "max_completion_tokens")
    older = cap_field(body, "max_tokens")
    return newer if newer is not None else older


def usage_fields(usage: object) -> dict[str, int] | None:
    """The valid counts of a ``usage`` object, or ``None`` if it is incomplete or implausible."""
    if not isinstance(usage, Mapping):
        return None
    try:
        prompt = token_field(usage, PROMPT)
        completion = token_field(usage, COMPLETION)
        details = usage.get("prompt_tokens_details")
        cached = token_field(details, CACHED) if isinstance(details, Mapping) else None
    except BadCount:
        return None
    if prompt is None or completion is None:
        return None
    return {PROMPT: prompt, COMPLETION: completion, CACHED: cached or 0}


def usage_from_fields(fields: Mapping[str, int]) -> Usage | None:
    """A :class:`Usage` from fields read by :func:`usage_fields`."""
    prompt = fields.get(PROMPT)
    completion = fields.get(COMPLETION)
    if prompt is None or completion is None:
        return None
    return make_usage(prompt, completion, fields.get(CACHED, 0))


def usage_from_object(obj: Mapping[str, Any]) -> Usage | None:
    """The usage of a parsed response body."""
    fields = usage_fields(obj.get("usage"))
    return None if fields is None else usage_from_fields(fields)


def text_from_object(obj: Mapping[str, Any]) -> str:
    """The completion text of a parsed response body (every choice, in order)."""
    parts: list[str] = []
    choices = obj.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            message = choice.get("message") if isinstance(choice, Mapping) else None
            if isinstance(message, Mapping):
                parts.append(_content_text(message.get("content")))
    return "".join(parts)


def read_stream_event(event: str, data: str) -> StreamEvent:
    """Interpret one event of a Chat Completions stream."""
    stripped = data.strip()
    if not stripped:
        return NOTHING
    if stripped == "[DONE]":
        return StreamEvent(done=True)
    obj = load_object(stripped)
    if obj is None:
        return StreamEvent(error=stripped) if event == "error" else GARBLED
    error: str | None = None
    if obj.get("error") is not None:
        error = error_message(obj["error"])
    elif event == "error":
        error = error_message(obj)
    texts: list[str] = []
    choices = obj.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            delta = choice.get("delta") if isinstance(choice, Mapping) else None
            if isinstance(delta, Mapping):
                content = delta.get("content")
                if isinstance(content, str):
                    texts.append(content)
    raw_usage = obj.get("usage")
    return StreamEvent(
        text="".join(texts),
        usage_fields=usage_fields(raw_usage),
        error=error,
        usage_only=isinstance(choices, list) and not choices and raw_usage is not None,
    )


def with_stream_usage(body: Mapping[str, Any]) -> tuple[bytes, bool] | None:
    """The body with ``stream_options.include_usage = true``, unless it already asks for it."""
    new_body, injected = body_to_forward(body, stream=True, default_cap=None)
    return None if new_body is None else (new_body, injected)


def body_to_forward(body: Mapping[str, Any], *, stream: bool,
                    default_cap: int | None) -> tuple[bytes | None, bool]:
    """What to send instead of the caller's body (``None``: send it as it is), and whether
    stream usage was injected. A stream that does not ask for its usage gets
    ``stream_options.include_usage``; a call that sets no completion cap gets
    ``max_tokens = default_cap`` (when given), so its hold is its true worst case."""
    new_body = dict(body)
    injected = False
    if stream:
        options = body.get("stream_options")
        if not (isinstance(options, Mapping) and options.get("include_usage") is True):
            new_options = dict(options) if isinstance(options, Mapping) else {}
            new_options["include_usage"] = True
            new_body["stream_options"] = new_options
            injected = True
    if (default_cap is not None and body.get("max_tokens") is None
            and body.get("max_completion_tokens") is None):
        # A null cap is no cap (the SDK sends null for None): send the default one, so the
        # server's worst case is the one held (issue 9 item 2).
        new_body.pop("max_completion_tokens", None)
        new_body["max_tokens"] = default_cap
    if new_body == body:
        return None, False
    try:
        return dump_json(new_body), injected
    except (TypeError, ValueError, RecursionError):  # a hand-built body that is not JSON
        return None, False


def _content_text(content: object) -> str:
    """Text of a message ``content``: a string, or a list of ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""
