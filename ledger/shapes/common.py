"""What every shape module shares: the records (:class:`Usage`, :class:`CallRequest`,
:class:`StreamEvent`) and the small, untrusting readers of counts, caps and JSON that
``ledger.shapes.openai``, ``anthropic``, ``responses``, ``completions`` and ``embeddings`` are
built from. Pure; see :mod:`ledger.shapes` for the rules they follow.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import InvalidInput
from ..money import MAX_TOKENS, check_tokens

Shape = Literal["openai", "anthropic", "responses", "completions", "embeddings"]
SHAPES: tuple[Shape, ...] = ("openai", "anthropic", "responses", "completions", "embeddings")


@dataclass(frozen=True)
class Usage:
    """Tokens a call used, as the server reported them.

    ``prompt_tokens`` counts ALL input tokens (for Anthropic: ``input_tokens`` +
    ``cache_read_input_tokens`` + ``cache_creation_input_tokens``); ``cached_tokens`` is the
    part of them read from a prompt cache. Constructing one validates it: every count is an
    ``int`` in ``[0, MAX_TOKENS]`` (``TypeError`` / ``InvalidInput`` otherwise) and
    ``cached_tokens <= prompt_tokens``.
    """

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    #: Reasoning (thinking) tokens, when the server reports them; they are part of
    #: ``completion_tokens`` (priced as completion), recorded on their own for audits.
    reasoning_tokens: int | None = None
    #: What the ledger had to correct or could not read in the reported usage (a bad
    #: optional detail dropped, a disagreeing ``total_tokens``...); empty when it was clean.
    notes: tuple[str, ...] = ()
    #: Some count is not the server's final word (e.g. an Anthropic stream whose
    #: ``message_delta`` never gave the output tokens): charge it as an estimate.
    estimated: bool = False

    def __post_init__(self) -> None:
        check_tokens(self.prompt_tokens, "prompt_tokens")
        check_tokens(self.completion_tokens, "completion_tokens")
        check_tokens(self.cached_tokens, "cached_tokens")
        if self.reasoning_tokens is not None:
            check_tokens(self.reasoning_tokens, "reasoning_tokens")
        if self.cached_tokens > self.prompt_tokens:
            raise InvalidInput(
                f"cached_tokens ({self.cached_tokens}) exceeds prompt_tokens ({self.prompt_tokens})"
            )


@dataclass(frozen=True)
class CallRequest:
    """A parsed request body: what the ledger needs to know before forwarding it.

    ``model`` is ``None`` when absent or not a string. ``max_tokens`` is the completion cap the
    request sets (OpenAI: ``max_completion_tokens``, else ``max_tokens``; Anthropic:
    ``max_tokens``), ``None`` when absent or not a non-negative integer. ``body`` is the parsed
    JSON object itself (treat it as read-only).
    """

    shape: Shape
    model: str | None
    stream: bool
    max_tokens: int | None
    body: Mapping[str, Any]


@dataclass(frozen=True)
class StreamEvent:
    """What one server-sent event of a response stream says.

    ``usage_fields`` are the valid token counts the event carries, keyed by the shape's own
    field names (merge them into the fields seen so far, then read a :class:`Usage` with
    :func:`usage_from_fields`). ``usage_only`` marks OpenAI's usage-only chunk
    (``choices == []`` with a ``usage``), the one a client that did not ask for it must not see.
    """

    text: str = ""
    usage_fields: Mapping[str, int] | None = None
    done: bool = False
    error: str | None = None
    garbled: bool = False
    usage_only: bool = False


GARBLED = StreamEvent(garbled=True)
NOTHING = StreamEvent()


class BadCount(Exception):
    """Internal: a token count is present but is not a plausible count."""


def token_field(usage: Mapping[str, Any], key: str) -> int | None:
    """The token count under ``key``: ``None`` when absent or null.

    Raises :class:`BadCount` when present but not an int (bools and floats included), negative,
    or larger than ``MAX_TOKENS``.
    """
    value = usage.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS:
        raise BadCount(key)
    return value


def optional_count(candidates: list[tuple[object, str]]) -> tuple[int | None, bool]:
    """An optional count that may sit in several places (``(container, key)`` pairs): the
    smallest valid value found (``None`` if none), and whether some place held a value that
    is not a plausible count (``-1``, ``"20"``, ``20.0``, ``true``...)."""
    found: list[int] = []
    bad = False
    for container, key in candidates:
        if not isinstance(container, Mapping):
            continue
        try:
            value = token_field(container, key)
        except BadCount:
            bad = True
            continue
        if value is not None:
            found.append(value)
    return (min(found) if found else None), bad


#: Prefix of the marker fields that say an optional detail was present but unreadable.
INVALID = "invalid."


def invalid_marks(fields: Mapping[str, int], prefix: str = "") -> list[str]:
    """The names of the details marked unreadable (``invalid.<name>`` = 1) under ``prefix``."""
    head = prefix + INVALID
    return [key[len(head):] for key, value in fields.items()
            if key.startswith(head) and value]


def make_usage(prompt: int, completion: int, cached: int, *, reasoning: int | None = None,
               total: int | None = None, invalid: list[str] | tuple[str, ...] = (),
               estimated: bool = False, notes: tuple[str, ...] = ()) -> Usage | None:
    """A :class:`Usage`, or ``None`` when the required counts are implausible. No prompt
    tokens at all is implausible (every call sends a prompt): such a reply is charged by
    estimate rather than recorded as a success at $0.

    Optional details never cost the valid counts (issue 9 items 9 and 11): a detail that was
    unreadable (``invalid``) or impossible (``cached > prompt``) is dropped with a note, and a
    ``total`` larger than ``prompt + completion`` is billed (the difference goes to the
    completion tokens: xAI leaves reasoning out of ``completion_tokens``), with a note.
    """
    if prompt == 0 or prompt > MAX_TOKENS or completion > MAX_TOKENS:
        return None
    out = list(notes)
    out.extend(f"usage {name} unreadable: dropped" for name in invalid)
    if cached > prompt:
        out.append(f"usage cached_tokens {cached} > prompt_tokens {prompt}: dropped")
        cached = 0
    if total is not None:
        reported = prompt + completion
        if total > reported:
            completion = min(completion + total - reported, MAX_TOKENS)
            out.append(f"usage total_tokens {total} > prompt+completion {reported}: "
                       f"billed the total ({total - reported} more completion tokens)")
        elif total < reported:
            out.append(f"usage total_tokens {total} < prompt+completion {reported}: "
                       "billed prompt+completion")
    if reasoning is not None and reasoning > completion:
        out.append(f"usage reasoning_tokens {reasoning} > completion_tokens {completion}")
    if estimated:
        out.append("usage incomplete: charged by estimate")
    return Usage(prompt, completion, cached, reasoning, tuple(dict.fromkeys(out)), estimated)


def combine_usages(usages: list[Usage]) -> Usage | None:
    """One call's usage from the usage of each of its choices (Kimi streams with ``n > 1``
    report one per choice): the prompt is billed once (the largest reported, as every choice
    shares it), the completions are summed."""
    if not usages:
        return None
    if len(usages) == 1:
        return usages[0]
    prompt = max(u.prompt_tokens for u in usages)
    completion = min(sum(u.completion_tokens for u in usages), MAX_TOKENS)
    cached = min(u.cached_tokens for u in usages)
    reasonings = [u.reasoning_tokens for u in usages if u.reasoning_tokens is not None]
    reasoning = min(sum(reasonings), MAX_TOKENS) if reasonings else None
    notes = tuple(dict.fromkeys(n for u in usages for n in u.notes))
    return Usage(prompt, completion, cached, reasoning, notes, any(u.estimated for u in usages))


def cap_field(body: Mapping[str, Any], key: str) -> int | None:
    """The completion cap under ``key``: ``None`` when absent or null (no cap).

    Raises :class:`~ledger.errors.InvalidInput` naming the field when it is anything but a
    positive integer (a string, a float, a bool, 0, a negative): a cap the ledger cannot read
    would leave the hold and the forwarded body disagreeing (issue 9 item 2).
    """
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInput(
            f'"{key}" must be a positive integer (or null for no cap), not {value!r}'[:200])
    return value


def nonnegative_int(value: object) -> int | None:
    """``value`` as a non-negative int (an integral float is accepted), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    return None


def error_message(error: object) -> str:
    """A readable message from an API error object (``{"message": ...}``) or anything else."""
    if isinstance(error, Mapping):
        for key in ("message", "type", "code"):
            value = error.get(key)
            if isinstance(value, str) and value:
                return value
    elif isinstance(error, str) and error:
        return error
    try:
        text = json.dumps(error, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        text = ""
    return text if text and text != "null" else "unknown error"


def load_object(body: bytes | str) -> dict[str, Any] | None:
    """The JSON object in ``body``, or ``None`` when it is not one. Never raises."""
    try:
        value = json.loads(body)
    except Exception:  # ValueError, RecursionError, huge ints, bad encodings: all "not JSON"
        return None
    return value if isinstance(value, dict) else None


def dump_json(value: Any) -> bytes:
    """Compact JSON bytes; UTF-8 where possible, ASCII escapes when the text has lone surrogates."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode("ascii")


# -- the public entry points (they dispatch to the shape modules) ------------------------------


def body_bytes(body: Mapping[str, Any] | bytes | str) -> bytes:
    """A request body given as a mapping (serialised as JSON), a str or bytes, as bytes."""
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, Mapping):
        return json.dumps(body, separators=(",", ":")).encode("utf-8")
    raise TypeError(f"request body must be a mapping, bytes or str, not {type(body).__name__}")


def event_object(event: str, data: str, *, done_marker: bool) -> dict[str, Any] | StreamEvent:
    """The JSON object one server-sent event carries, or the :class:`StreamEvent` that already
    answers it: nothing for an empty event, the end for ``[DONE]`` (where the shape uses that
    marker: ``done_marker``), an error for an unparseable ``error`` event, garbled otherwise."""
    stripped = data.strip()
    if not stripped:
        return NOTHING
    if done_marker and stripped == "[DONE]":
        return StreamEvent(done=True)
    obj = load_object(stripped)
    if obj is None:
        return StreamEvent(error=stripped) if event == "error" else GARBLED
    return obj
