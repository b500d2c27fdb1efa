"""The OpenAI Chat Completions shape (``POST /v1/chat/completions``).

Request: ``model``, ``stream``, ``stream_options.include_usage``, and the completion cap
``max_completion_tokens`` (newer) or ``max_tokens`` (older).
Response: ``usage.prompt_tokens`` (all input), ``usage.completion_tokens``,
``usage.prompt_tokens_details.cached_tokens`` (Kimi: a top-level ``usage.cached_tokens``),
``usage.completion_tokens_details.reasoning_tokens`` (part of the completion tokens),
``usage.total_tokens``; the text in ``choices[].message.content`` (and ``reasoning_content``,
``tool_calls``). Stream: ``data: {chunk}`` events, text in ``choices[].delta.content`` (and
``reasoning_content``, ``tool_calls[].function.arguments``), an optional usage-only chunk
(``choices == []``) before the final ``data: [DONE]``; Kimi puts the final ``usage`` inside
``choices[i]`` of the last chunk instead (one per choice when ``n > 1``); an error is a chunk
with a top-level ``"error"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .common import (
    INVALID,
    BadCount,
    StreamEvent,
    Usage,
    cap_field,
    combine_usages,
    dump_json,
    error_message,
    event_object,
    invalid_marks,
    make_usage,
    optional_count,
    token_field,
)

PROMPT = "prompt_tokens"
COMPLETION = "completion_tokens"
CACHED = "cached_tokens"
REASONING = "reasoning_tokens"
TOTAL = "total_tokens"
DETAILS = (CACHED, REASONING, TOTAL)
#: Per-choice usage (Kimi streams) is kept in the stream's fields as ``choices.<i>.<field>``.
CHOICE = "choices."
MAX_CHOICE_INDEX = 128  # OpenAI's largest ``n``


#: The completion cap fields, in reading order; a cap the ledger adds goes in the last.
CAP_FIELDS: tuple[str, ...] = ("max_completion_tokens", "max_tokens")


def body_user(body: Mapping[str, Any]) -> object:
    """The end user the body names: ``user`` (whatever it holds; the caller checks it)."""
    return body.get("user")


def max_tokens(body: Mapping[str, Any]) -> int | None:
    """The completion cap: ``max_completion_tokens`` if given, else ``max_tokens``."""
    newer = cap_field(body, "max_completion_tokens")
    older = cap_field(body, "max_tokens")
    return newer if newer is not None else older


def usage_fields(usage: object, prefix: str = "") -> dict[str, int] | None:
    """The counts of a ``usage`` object (keys under ``prefix``), or ``None`` if a required
    count (``prompt_tokens``, ``completion_tokens``) is missing or not a plausible count.

    Optional details: cached tokens from ``prompt_tokens_details.cached_tokens`` (OpenAI) or
    a top-level ``cached_tokens`` (Kimi), the smaller if both; reasoning tokens from
    ``completion_tokens_details`` (Chat Completions) or ``output_tokens_details`` (Responses
    API); ``total_tokens``. One that is unreadable is left out and marked
    ``invalid.<name>`` = 1, so that the valid counts still stand.
    """
    if not isinstance(usage, Mapping):
        return None
    try:
        prompt = token_field(usage, PROMPT)
        completion = token_field(usage, COMPLETION)
    except BadCount:
        return None
    if prompt is None or completion is None:
        return None
    cached, bad_cached = optional_count(
        [(usage.get("prompt_tokens_details"), CACHED), (usage, CACHED)])
    reasoning, bad_reasoning = optional_count(
        [(usage.get("completion_tokens_details"), REASONING),
         (usage.get("output_tokens_details"), REASONING)])
    total, bad_total = optional_count([(usage, TOTAL)])
    fields = {prefix + PROMPT: prompt, prefix + COMPLETION: completion,
              prefix + CACHED: cached or 0}
    for name, value in ((REASONING, reasoning), (TOTAL, total)):
        if value is not None:
            fields[prefix + name] = value
    for name, bad in ((CACHED, bad_cached), (REASONING, bad_reasoning), (TOTAL, bad_total)):
        fields[prefix + INVALID + name] = int(bad)
    return fields


def _usage_at(fields: Mapping[str, int], prefix: str) -> Usage | None:
    prompt = fields.get(prefix + PROMPT)
    completion = fields.get(prefix + COMPLETION)
    if prompt is None or completion is None:
        return None
    return make_usage(prompt, completion, fields.get(prefix + CACHED, 0),
                      reasoning=fields.get(prefix + REASONING),
                      total=fields.get(prefix + TOTAL),
                      invalid=invalid_marks(fields, prefix))


def usage_from_fields(fields: Mapping[str, int]) -> Usage | None:
    """A :class:`Usage` from fields read by :func:`usage_fields`: the top-level usage when
    there is one, else the per-choice usages (Kimi's streams put the final ``usage`` inside
    ``choices[i]``, one per choice when ``n > 1``), the prompt billed once and the
    completions summed."""
    top = _usage_at(fields, "")
    if top is not None:
        return top
    indexes = sorted({int(key.split(".", 2)[1]) for key in fields
                      if key.startswith(CHOICE) and key.endswith("." + PROMPT)})
    usages = [u for u in (_usage_at(fields, f"{CHOICE}{i}.") for i in indexes) if u is not None]
    return combine_usages(usages)


def choice_usage_fields(choices: object) -> dict[str, int]:
    """The usage each choice carries (``choices[i].usage``), keyed ``choices.<index>.<field>``."""
    fields: dict[str, int] = {}
    if not isinstance(choices, list):
        return fields
    for position, choice in enumerate(choices):
        if not isinstance(choice, Mapping) or choice.get("usage") is None:
            continue
        index = choice.get("index", position)
        if isinstance(index, bool) or not isinstance(index, int):
            index = position
        if not 0 <= index < MAX_CHOICE_INDEX:
            continue
        found = usage_fields(choice["usage"], f"{CHOICE}{index}.")
        if found:
            fields.update(found)
    return fields


def usage_from_object(obj: Mapping[str, Any]) -> Usage | None:
    """The usage of a parsed response body (top-level, else inside its choices)."""
    fields = usage_fields(obj.get("usage")) or {}
    if not fields:
        fields = choice_usage_fields(obj.get("choices"))
    return usage_from_fields(fields) if fields else None


def text_from_object(obj: Mapping[str, Any]) -> str:
    """The generated text of a parsed response body (every choice, in order): content,
    reasoning (``reasoning_content``, Kimi/DeepSeek; else ``reasoning``), refusal, and the
    name and arguments of each tool call."""
    parts: list[str] = []
    choices = obj.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            message = choice.get("message") if isinstance(choice, Mapping) else None
            if isinstance(message, Mapping):
                parts.append(_content_text(message.get("content")))
                parts.extend(_generated_extras(message))
    return "".join(parts)


def _generated_extras(message: Mapping[str, Any]) -> list[str]:
    """Billed output besides ``content`` in a message or a stream delta."""
    parts: list[str] = []
    reasoning = message.get("reasoning_content")
    if not isinstance(reasoning, str):
        reasoning = message.get("reasoning")  # OpenRouter, vLLM
    if isinstance(reasoning, str):
        parts.append(reasoning)
    refusal = message.get("refusal")
    if isinstance(refusal, str):
        parts.append(refusal)
    calls = message.get("tool_calls")
    functions = [call.get("function") for call in calls if isinstance(call, Mapping)] \
        if isinstance(calls, list) else []
    functions.append(message.get("function_call"))
    for function in functions:
        if isinstance(function, Mapping):
            for key in ("name", "arguments"):
                value = function.get(key)
                if isinstance(value, str):
                    parts.append(value)
    return parts


def read_stream_event(event: str, data: str) -> StreamEvent:
    """Interpret one event of a Chat Completions stream."""
    obj = event_object(event, data, done_marker=True)
    if isinstance(obj, StreamEvent):
        return obj
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
                texts.extend(_generated_extras(delta))
    raw_usage = obj.get("usage")
    fields = usage_fields(raw_usage)
    in_choices = choice_usage_fields(choices)
    if in_choices:
        fields = {**(fields or {}), **in_choices}
    return StreamEvent(
        text="".join(texts),
        usage_fields=fields,
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
