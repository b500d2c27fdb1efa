"""The OpenAI Responses shape (``POST /v1/responses``; issue 9 item 1).

Request: ``model``, ``stream``, ``input`` (a string or a list of items), ``instructions``,
``tools``, and the completion cap ``max_output_tokens``.
Response: ``usage.input_tokens`` (all input), ``usage.output_tokens`` (reasoning included),
``usage.input_tokens_details.cached_tokens``; text in ``output[].content[]`` parts of type
``output_text``.
Stream: typed events (``event: response.output_text.delta`` with ``delta``), ending with
``response.completed`` (or ``response.incomplete``) whose ``response.usage`` is the usage; a
failure is ``response.failed`` or ``error``. The usage comes unasked: nothing is injected.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .common import (
    INVALID,
    NOTHING,
    BadCount,
    StreamEvent,
    Usage,
    cap_field,
    dump_json,
    error_message,
    event_object,
    invalid_marks,
    make_usage,
    optional_count,
    token_field,
)

INPUT = "input_tokens"
OUTPUT = "output_tokens"
CACHED = "cached_tokens"
REASONING = "reasoning_tokens"
TOTAL = "total_tokens"
CAP = "max_output_tokens"
CAP_FIELDS: tuple[str, ...] = (CAP,)


def body_user(body: Mapping[str, Any]) -> object:
    """The end user the body names: ``user`` (whatever it holds; the caller checks it)."""
    return body.get("user")


def max_tokens(body: Mapping[str, Any]) -> int | None:
    """The completion cap: ``max_output_tokens``."""
    return cap_field(body, CAP)


def usage_fields(usage: object) -> dict[str, int] | None:
    """The valid counts of a Responses ``usage`` object, or ``None``."""
    if not isinstance(usage, Mapping):
        return None
    try:
        prompt = token_field(usage, INPUT)
        completion = token_field(usage, OUTPUT)
    except BadCount:
        return None
    if prompt is None or completion is None:
        return None
    # One unreadable detail never costs the valid counts (issue 9 item 9): it is dropped and
    # marked, as the Chat Completions reader does; total_tokens is checked (item 11).
    cached, bad_cached = optional_count([(usage.get("input_tokens_details"), CACHED)])
    reasoning, bad_reasoning = optional_count([(usage.get("output_tokens_details"), REASONING)])
    total, bad_total = optional_count([(usage, TOTAL)])
    fields = {INPUT: prompt, OUTPUT: completion, CACHED: cached or 0}
    for name, value in ((REASONING, reasoning), (TOTAL, total)):
        if value is not None:
            fields[name] = value
    for name, bad in ((CACHED, bad_cached), (REASONING, bad_reasoning), (TOTAL, bad_total)):
        fields[INVALID + name] = int(bad)
    return fields


def usage_from_fields(fields: Mapping[str, int]) -> Usage | None:
    prompt = fields.get(INPUT)
    completion = fields.get(OUTPUT)
    if prompt is None or completion is None:
        return None
    return make_usage(prompt, completion, fields.get(CACHED, 0),
                      reasoning=fields.get(REASONING), total=fields.get(TOTAL),
                      invalid=invalid_marks(fields))


def usage_from_object(obj: Mapping[str, Any]) -> Usage | None:
    fields = usage_fields(obj.get("usage"))
    return None if fields is None else usage_from_fields(fields)


def text_from_object(obj: Mapping[str, Any]) -> str:
    """The text of every ``output_text`` (and ``refusal``) part, reasoning summaries and
    function-call arguments included (they are output tokens too)."""
    parts: list[str] = []
    output = obj.get("output")
    if not isinstance(output, list):
        return ""
    for item in output:
        if not isinstance(item, Mapping):
            continue
        arguments = item.get("arguments")
        if isinstance(arguments, str):
            parts.append(arguments)
        for key in ("content", "summary"):
            content = item.get(key)
            if isinstance(content, list):
                for part in content:
                    if isinstance(part, Mapping):
                        for field in ("text", "refusal"):
                            value = part.get(field)
                            if isinstance(value, str):
                                parts.append(value)
    return "".join(parts)


_DONE = ("response.completed", "response.incomplete")
_FAILED = ("response.failed", "error")


def read_stream_event(event: str, data: str) -> StreamEvent:
    """Interpret one event of a Responses stream."""
    obj = event_object(event, data, done_marker=False)
    if isinstance(obj, StreamEvent):
        return obj
    kind = obj.get("type")
    if not isinstance(kind, str):
        kind = event
    if kind in _FAILED or event in _FAILED:
        response = obj.get("response")
        error = response.get("error") if isinstance(response, Mapping) else None
        return StreamEvent(error=error_message(error or obj.get("error") or obj.get("message")
                                               or obj))
    if kind in _DONE:
        response = obj.get("response")
        usage = response.get("usage") if isinstance(response, Mapping) else None
        return StreamEvent(usage_fields=usage_fields(usage), done=True)
    if kind.endswith(".delta"):  # output_text, refusal, reasoning, function-call arguments
        delta = obj.get("delta")
        if isinstance(delta, str):
            return StreamEvent(text=delta)
    return NOTHING


def body_to_forward(body: Mapping[str, Any], *, stream: bool,
                    default_cap: int | None) -> tuple[bytes | None, bool]:
    """A call with no (or a null) ``max_output_tokens`` is sent with the default cap."""
    if default_cap is None or body.get(CAP) is not None:
        return None, False
    new_body = {**body, CAP: default_cap}
    try:
        return dump_json(new_body), False
    except (TypeError, ValueError, RecursionError):
        return None, False
