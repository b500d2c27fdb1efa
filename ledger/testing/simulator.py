"""A loopback HTTP server that imitates RunAPI, for tests and the demo.

``RunAPISimulator`` is a real HTTP/1.1 server (stdlib only: ``http.server``) bound to
``127.0.0.1`` on a free port, serving in a background daemon thread. It speaks both
shapes RunAPI serves, so the real ``openai`` and ``anthropic`` SDKs can talk to it::

    from ledger.testing.simulator import RunAPISimulator, Behavior

    with RunAPISimulator() as sim:
        client = openai.OpenAI(base_url=sim.base_url + "/v1", api_key="test")
        claude = anthropic.Anthropic(base_url=sim.base_url, api_key="test")
        sim.enqueue(Behavior(status=500))        # the next API request fails, then normal
        ...
        assert sim.request_count == 2
        sim.requests[-1].json["model"]

Endpoints
---------
``POST /v1/chat/completions`` (also ``/chat/completions``)
    OpenAI shape, streaming (``"stream": true``) or not. A stream carries usage only when
    the request says ``"stream_options": {"include_usage": true}``: then every chunk has
    ``"usage": null`` and a last extra chunk with ``"choices": []`` holds the usage, as OpenAI
    does. The stream ends with ``data: [DONE]``.
``POST /v1/messages`` (also ``/messages``)
    Anthropic shape, streaming or not. A stream is the real event sequence ``message_start``
    (usage: input tokens, ``output_tokens`` 1), ``content_block_start``, ``ping``,
    ``content_block_delta`` (``text_delta``) x N, ``content_block_stop``, ``message_delta``
    (``usage.output_tokens`` final), ``message_stop``.
``POST /v1/responses`` (also ``/responses``)
    OpenAI Responses shape, as recorded from api.openai.com: a ``response`` object with
    ``output`` (one ``message`` item, its ``output_text`` part) and ``usage``
    ``{input_tokens, input_tokens_details.cached_tokens, output_tokens,
    output_tokens_details.reasoning_tokens, total_tokens}``; status ``incomplete`` when
    ``max_output_tokens`` cut the reply. A stream is the real typed event sequence
    ``response.created``, ``response.in_progress``, ``response.output_item.added``,
    ``response.content_part.added``, ``response.output_text.delta`` x N,
    ``response.output_text.done``, ``response.content_part.done``,
    ``response.output_item.done``, ``response.completed`` (or ``response.incomplete``)
    carrying the usage; each event has its ``sequence_number``; no ``[DONE]``. An
    ``error_event`` is ``response.failed``.
``POST /v1/completions`` (also ``/completions``)
    Legacy Completions: ``choices[].text`` and the Chat Completions ``usage``; a stream of
    ``text_completion`` chunks, the usage-only chunk when ``stream_options.include_usage``,
    then ``data: [DONE]``.
``POST /v1/embeddings`` (also ``/embeddings``)
    One vector of ``EMBEDDING_DIMENSIONS`` floats per input (base64 float32 when
    ``encoding_format`` is ``"base64"``, as the OpenAI SDK asks by default) and ``usage``
    ``{prompt_tokens, total_tokens}``. Never streamed.
``POST /v1/messages/count_tokens``
    ``{"input_tokens": N}`` with the rule below (not counted in ``request_count``).
``GET /v1/models`` (also ``/models``, ``/v1/models/{id}``)
    ``kimi-k2.5`` and ``kimi-k2.6``; Anthropic's list shape when the request carries an
    ``anthropic-version`` header, OpenAI's otherwise.

Anything else answers 404 (405 for a wrong method on an API path) with an error body of
the API's shape. A request body that is not a JSON object answers 400 in the API's shape.
Streams use chunked transfer-encoding (one SSE event per HTTP chunk); other bodies carry a
Content-Length. Connections are kept alive between requests.

Behaviours
----------
Each ``POST`` to an API path (chat/completions, messages, responses, completions,
embeddings) takes the next ``Behavior`` from the
FIFO queue filled by ``enqueue()``, or ``sim.default`` when the queue is empty (``Behavior()``
is a normal success). Other paths (models, count_tokens) always behave normally and never
consume the queue. Every request, on any path, is recorded in ``sim.requests`` *before* its
behaviour runs. The order of precedence inside one request is: ``delay``, then ``raw``, then
``status >= 400``, then request validation (invalid JSON → 400, ``known_models`` → 404), then
the success response (``malformed``, stream options...).

Token counting (deterministic, so tests can compute the figures)
-----------------------------------------------------------------
* a *word* is a run of non-whitespace characters (``len(text.split())``);
* the *text* of a content is the string itself, or for a list of parts the text of every
  part (a part's ``"text"`` string, or recursively its ``"content"``); images etc. count 0;
* **prompt tokens** = for each entry of ``messages``: 3 + words of its content; plus the words
  of a top-level ``system`` (Anthropic shape; no +3 for it). So an OpenAI system *message*
  costs 3 more than the same Anthropic ``system`` field;
  Responses: for each ``input`` item 3 + words of its content (a string ``input`` is one
  user item; a ``function_call_output`` counts its ``output``), plus the words of
  ``instructions``. Completions ``prompt`` / Embeddings ``input``: the words of each string
  (a token array counts one per token), no +3;
* the **reply** is ``Behavior.reply`` if given; otherwise ``"Echo:"`` followed by the words of
  the last ``user`` message repeated cyclically (``"..."`` if it has none), in total
  ``DEFAULT_REPLY_WORDS`` (20) words joined by single spaces;
* the **limit** is ``max_completion_tokens`` if it is an int, else ``max_tokens`` if it is an
  int, else none (Responses: ``max_output_tokens``; Completions: the first prompt is echoed;
  Embeddings: no reply, 0 completion tokens). A reply with more words than the limit is cut to its first ``limit`` words
  (joined by single spaces) and the finish reason is ``"length"`` / ``"max_tokens"``,
  otherwise ``"stop"`` / ``"end_turn"``;
* **completion tokens** = words of the (possibly cut) reply. A stream sends one word (with
  its trailing whitespace) per content chunk, so completion tokens = content chunks;
* ``Behavior.usage = (p, c)`` replaces the reported figures (the reply text is unchanged);
* ``Behavior.cached_tokens = k`` is reported as OpenAI
  ``usage.prompt_tokens_details.cached_tokens = k`` (``prompt_tokens`` still includes them)
  (Responses: ``input_tokens_details.cached_tokens``)
  and as Anthropic ``cache_read_input_tokens = k`` with ``input_tokens = max(0, p - k)``
  (Anthropic's input tokens exclude cache reads); ``cache_creation_input_tokens`` is 0.

``simulated_usage(body, behavior, shape)`` (``shape``: a request's ``RecordedRequest.shape``)
returns the ``(prompt, completion)`` pair the simulator
reports for a request body (except under ``stream_bytes``, where completion tokens are the
number of chunks actually sent and ``max_tokens`` is ignored).

Errors and retries
------------------
A status >= 400 answers ``{"error": {"message", "type", "code"}}`` (OpenAI) or
``{"type": "error", "error": {"type", "message"}}`` (Anthropic). 429 and 5xx also carry
``retry-after: 0`` *and* ``retry-after-ms: 1``: both SDKs treat ``retry-after: 0`` as "no
advice" and fall back to their 0.5 s+ exponential backoff, whereas ``retry-after-ms: 1`` makes
them retry after a millisecond (``Behavior.retry_after`` changes or removes this).
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import itertools
import json
import logging
import math
import re
import socket
import socketserver
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final, Literal, Self

__all__ = [
    "DEFAULT_REPLY_WORDS",
    "EMBEDDING_DIMENSIONS",
    "SIMULATED_MODELS",
    "Behavior",
    "RecordedRequest",
    "RunAPISimulator",
    "prompt_tokens",
    "shape_of_path",
    "simulated_reply",
    "simulated_usage",
]

log = logging.getLogger(__name__)

#: Number of words of the default reply (before ``max_tokens`` truncation).
DEFAULT_REPLY_WORDS: Final = 20
#: Model ids listed by ``GET /v1/models``.
SIMULATED_MODELS: Final = ("kimi-k2.5", "kimi-k2.6")

_OPENAI_PATHS: Final = frozenset({"/v1/chat/completions", "/chat/completions"})
_ANTHROPIC_PATHS: Final = frozenset({"/v1/messages", "/messages"})
_RESPONSES_PATHS: Final = frozenset({"/v1/responses", "/responses"})
_COMPLETIONS_PATHS: Final = frozenset({"/v1/completions", "/completions"})
_EMBEDDINGS_PATHS: Final = frozenset({"/v1/embeddings", "/embeddings"})
_COUNT_TOKENS_PATHS: Final = frozenset({"/v1/messages/count_tokens", "/messages/count_tokens"})
_MODELS_PATHS: Final = frozenset({"/v1/models", "/models"})
_COALESCE_BYTES: Final = 64 * 1024
_POLL_INTERVAL: Final = 0.05
_WORD_PIECE = re.compile(r"\S+\s*")

#: The API shape of a request: Chat Completions (``"openai"``), Anthropic Messages, OpenAI
#: Responses, legacy Completions, Embeddings (the names ``ledger.shapes`` uses).
Shape = Literal["openai", "anthropic", "responses", "completions", "embeddings"]
#: Dimensions of a simulated embedding vector.
EMBEDDING_DIMENSIONS: Final = 8


# --------------------------------------------------------------------------------------------
# Public value types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Behavior:
    """How the simulator answers one API request. Every field is optional.

    ``Behavior()`` is a normal, successful answer. Non-stream requests ignore the stream-only
    fields (``chunk_delay``, ``cut_after``, ``error_event``, ``stream_bytes``).
    """

    #: HTTP status. >= 400 answers an error body in the API's shape (see module docs);
    #: another 2xx answers the normal success body with that status.
    status: int = 200
    #: Seconds to wait before answering (interrupted promptly by ``stop()``).
    delay: float = 0.0
    #: Stream: seconds to wait between two SSE events.
    chunk_delay: float = 0.0
    #: Success body / stream without any ``usage`` (the key is absent, not null).
    omit_usage: bool = False
    #: A 200 whose body is truncated JSON (non-stream), or SSE events whose JSON is broken.
    malformed: bool = False
    #: Override of the reported (prompt/input tokens, completion/output tokens).
    usage: tuple[int, int] | None = None
    #: Cached prompt tokens reported (OpenAI ``prompt_tokens_details.cached_tokens``,
    #: Anthropic ``cache_read_input_tokens``).
    cached_tokens: int = 0
    #: Stream: after this many content chunks, drop the connection without the terminating
    #: events and without the final zero-size HTTP chunk (the client sees a broken chunked
    #: body). If the reply has fewer chunks, the cut comes after the last content chunk.
    #: With ``error_event``, it is where the error event is sent instead.
    cut_after: int | None = None
    #: Stream: after ``cut_after`` content chunks (2 if unset) send an error event
    #: (OpenAI: ``data: {"error": {...}}``; Anthropic: ``event: error``) and end the body cleanly.
    error_event: bool = False
    #: The completion text (default: ``"Echo: ..."``, see module docs).
    reply: str | None = None
    #: Stream: send content chunks (words of the reply, cycled) until about this many body
    #: bytes were written, generating them on the fly; ``max_tokens`` is ignored.
    stream_bytes: int | None = None
    #: Send exactly these body bytes with ``status`` (and Content-Length), nothing else.
    raw: bytes | None = None
    #: Content-Type of ``raw`` (default: ``text/event-stream`` for a stream request,
    #: else ``application/json``).
    content_type: str | None = None
    #: Error ``type`` of an error body or error event (default: from the status / shape).
    error_type: str | None = None
    #: Error ``message`` of an error body or error event.
    error_message: str | None = None
    #: Seconds advertised on 429/5xx answers as ``retry-after`` (rounded up) and
    #: ``retry-after-ms`` (at least 1); ``None`` sends neither header.
    retry_after: float | None = 0.0
    #: If set, only these model ids are accepted; others answer 404 ``model_not_found``.
    known_models: tuple[str, ...] | None = None
    #: Extra response headers (added to every answer this behaviour produces).
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.status, bool) or not isinstance(self.status, int):
            raise TypeError("Behavior.status must be an int")
        if not 200 <= self.status <= 599:
            raise ValueError(f"Behavior.status must be within 200..599, got {self.status}")
        for name in ("delay", "chunk_delay"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"Behavior.{name} must be a finite number >= 0")
        if self.usage is not None and (
            len(self.usage) != 2 or any(not _is_count(v) for v in self.usage)
        ):
            raise ValueError("Behavior.usage must be a pair of ints >= 0")
        for name in ("cached_tokens", "cut_after", "stream_bytes"):
            value = getattr(self, name)
            if value is not None and not _is_count(value):
                raise ValueError(f"Behavior.{name} must be an int >= 0")
        if self.raw is not None and not isinstance(self.raw, bytes):
            raise TypeError("Behavior.raw must be bytes")
        if self.retry_after is not None and (
            not isinstance(self.retry_after, (int, float))
            or not math.isfinite(self.retry_after)
            or self.retry_after < 0
        ):
            raise ValueError("Behavior.retry_after must be a finite number >= 0 or None")
        if self.known_models is not None and isinstance(self.known_models, str):
            raise TypeError("Behavior.known_models must be a tuple of model ids, not a str")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the simulator received it."""

    method: str
    #: Path without the query string, e.g. ``"/v1/chat/completions"``.
    path: str
    #: Header names in lower case; repeated headers joined with ``", "``.
    headers: dict[str, str]
    body: bytes
    #: The body parsed as JSON, or ``None`` when empty or not valid JSON.
    json: Any
    #: The query string (without ``?``), ``""`` if none.
    query: str = ""
    #: Monotonic time at which the request was received.
    received_at: float = field(default=0.0, compare=False)

    @property
    def shape(self) -> Shape | None:
        """The API shape of the path (``"responses"`` for ``/v1/responses``...), or ``None``."""
        return shape_of_path(self.path)


# --------------------------------------------------------------------------------------------
# Token counting
# --------------------------------------------------------------------------------------------


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _text_of(content: object) -> str:
    """All text in a message content (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(t for t in (_text_of(part) for part in content) if t)
    if isinstance(content, Mapping):
        text = content.get("text")
        if isinstance(text, str):
            return text
        if "content" in content:
            return _text_of(content["content"])
    return ""


def _words(text: str) -> int:
    return len(text.split())


def _messages(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return []
    return [m for m in messages if isinstance(m, Mapping)]


def _input_items(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A Responses ``input`` as message-like items (a string is one user message)."""
    value = body.get("input")
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        return []
    items: list[Mapping[str, Any]] = []
    for item in value:
        if isinstance(item, str):
            items.append({"role": "user", "content": item})
        elif isinstance(item, Mapping):
            if "content" in item:
                items.append(item)
            else:  # function_call_output ("output"), function_call ("arguments")
                text = item.get("output", item.get("arguments"))
                items.append({"role": item.get("type"), "content": text})
    return items


def _prompt_texts(value: object) -> list[str]:
    """Completions ``prompt`` / Embeddings ``input``: strings, or token arrays (one word per
    token, so a token array of n ids counts n)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return [" ".join("t" for _ in value)]
        return [t for v in value for t in _prompt_texts(v)]
    return []


def _guess_shape(body: Mapping[str, Any]) -> Shape:
    if "messages" in body:
        return "anthropic" if "system" in body else "openai"
    if "prompt" in body:
        return "completions"
    if "input" in body:
        return "responses"
    return "openai"


def prompt_tokens(body: Mapping[str, Any], shape: Shape | None = None) -> int:
    """Prompt tokens the simulator counts for a request body of ``shape`` (see module docs;
    ``None``: Chat Completions / Messages rules)."""
    if shape == "responses":
        total = sum(3 + _words(_text_of(m.get("content"))) for m in _input_items(body))
        return total + _words(_text_of(body.get("instructions")))
    if shape == "completions":
        return sum(_words(t) for t in _prompt_texts(body.get("prompt")))
    if shape == "embeddings":
        return sum(_words(t) for t in _prompt_texts(body.get("input")))
    total = sum(3 + _words(_text_of(m.get("content"))) for m in _messages(body))
    return total + _words(_text_of(body.get("system")))


def _limit(body: Mapping[str, Any], shape: Shape | None = None) -> int | None:
    if shape == "embeddings":
        return 0
    keys = ("max_output_tokens",) if shape == "responses" else (
        "max_completion_tokens", "max_tokens")
    for key in keys:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return max(0, value)
    return None


def _last_user_text(body: Mapping[str, Any], shape: Shape | None) -> str:
    if shape == "completions":
        texts = _prompt_texts(body.get("prompt"))
        return texts[0] if texts else ""
    last_user = ""
    for message in _input_items(body) if shape == "responses" else _messages(body):
        if message.get("role") == "user":
            last_user = _text_of(message.get("content"))
    return last_user


def simulated_reply(body: Mapping[str, Any], behavior: Behavior | None = None,
                    shape: Shape | None = None) -> tuple[str, bool]:
    """The reply text for a request body and whether its cap (``max_tokens``,
    ``max_output_tokens``) truncated it. Embeddings have no reply: ``("", False)``."""
    if shape == "embeddings":
        return "", False
    limit = _limit(body, shape)
    reply = behavior.reply if behavior is not None else None
    if reply is None:
        base = _last_user_text(body, shape).split() or ["..."]
        words = ["Echo:", *itertools.islice(itertools.cycle(base), DEFAULT_REPLY_WORDS - 1)]
        if limit is not None and limit < len(words):
            return " ".join(words[:limit]), True
        return " ".join(words), False
    words = reply.split()
    if limit is not None and limit < len(words):
        return " ".join(words[:limit]), True
    return reply, False


def simulated_usage(body: Mapping[str, Any], behavior: Behavior | None = None,
                    shape: Shape | None = None) -> tuple[int, int]:
    """(prompt tokens, completion tokens) reported for a request body of ``shape`` (a
    :attr:`RecordedRequest.shape`; ``None``: guessed from the body) under ``behavior``.

    Not exact under ``stream_bytes`` (completion tokens = chunks actually sent).
    """
    shape = shape or _guess_shape(body)
    if behavior is not None and behavior.usage is not None:
        return behavior.usage if shape != "embeddings" else (behavior.usage[0], 0)
    text, _ = simulated_reply(body, behavior, shape)
    return prompt_tokens(body, shape), _words(text)


# --------------------------------------------------------------------------------------------
# Response bodies
# --------------------------------------------------------------------------------------------

_OPENAI_ERRORS: Final[dict[int, tuple[str, str | None]]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    402: ("insufficient_quota", "insufficient_quota"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "not_found"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}
_ANTHROPIC_ERRORS: Final[dict[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Overloaded" if status == 529 else "Error"


def _error_payload(
    shape: Shape,
    status: int,
    message: str | None = None,
    error_type: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    msg = message or f"Simulated {status} {_status_phrase(status)}"
    if shape == "anthropic":
        etype = error_type or _ANTHROPIC_ERRORS.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        return {"type": "error", "error": {"type": etype, "message": msg}}
    default_type, default_code = _OPENAI_ERRORS.get(
        status, ("server_error", None) if status >= 500 else ("invalid_request_error", None)
    )
    return {
        "error": {
            "message": msg,
            "type": error_type or default_type,
            "param": None,
            "code": code if code is not None else default_code,
        }
    }


@dataclass
class _Call:
    """Everything about one API request that the response builders need."""

    shape: Shape
    body: dict[str, Any]
    behavior: Behavior
    request_id: str
    created: int
    #: Responses streams: the next ``sequence_number``.
    sequence: int = 0

    @property
    def model(self) -> str:
        model = self.body.get("model")
        return model if isinstance(model, str) else SIMULATED_MODELS[0]

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True and self.shape != "embeddings"

    @property
    def include_usage(self) -> bool:
        options = self.body.get("stream_options")
        return isinstance(options, Mapping) and options.get("include_usage") is True

    @property
    def item_id(self) -> str:
        """The id of a Responses output message."""
        return "msg_" + self.request_id.removeprefix("resp_")

    def reply(self) -> tuple[str, bool]:
        return simulated_reply(self.body, self.behavior, self.shape)

    def usage(self, completion_tokens: int) -> tuple[int, int, int]:
        """(prompt, completion, cached) to report."""
        b = self.behavior
        if b.usage is not None:
            return b.usage[0], b.usage[1], b.cached_tokens
        return prompt_tokens(self.body, self.shape), completion_tokens, b.cached_tokens

    def openai_usage(self, completion_tokens: int) -> dict[str, Any]:
        prompt, completion, cached = self.usage(completion_tokens)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }

    def anthropic_usage(self, completion_tokens: int) -> dict[str, Any]:
        prompt, completion, cached = self.usage(completion_tokens)
        return {
            "input_tokens": max(0, prompt - cached),
            "output_tokens": completion,
            "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": 0,
        }

    def responses_usage(self, completion_tokens: int) -> dict[str, Any]:
        prompt, completion, cached = self.usage(completion_tokens)
        return {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion,
        }

    def embeddings_usage(self) -> dict[str, Any]:
        prompt = self.usage(0)[0]
        return {"prompt_tokens": prompt, "total_tokens": prompt}

    # -- non-stream ----------------------------------------------------------------------

    def body_bytes(self) -> bytes:
        text, truncated = self.reply()
        completion = _words(text)
        obj: dict[str, Any]
        if self.shape == "openai":
            obj = {
                "id": self.request_id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": None,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "length" if truncated else "stop",
                    }
                ],
            }
            if not self.behavior.omit_usage:
                obj["usage"] = self.openai_usage(completion)
        elif self.shape == "anthropic":
            obj = {
                "id": self.request_id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "max_tokens" if truncated else "end_turn",
                "stop_sequence": None,
            }
            if not self.behavior.omit_usage:
                obj["usage"] = self.anthropic_usage(completion)
        elif self.shape == "responses":
            obj = self.response_object("incomplete" if truncated else "completed", text,
                                       usage=completion)
        elif self.shape == "completions":
            obj = {
                "id": self.request_id,
                "object": "text_completion",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": None,
                "choices": [
                    {
                        "text": text,
                        "index": 0,
                        "logprobs": None,
                        "finish_reason": "length" if truncated else "stop",
                    }
                ],
            }
            if not self.behavior.omit_usage:
                obj["usage"] = self.openai_usage(completion)
        else:
            obj = {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": self.embedding(text_in)}
                    for i, text_in in enumerate(
                        _prompt_texts(self.body.get("input")) or [""])
                ],
                "model": self.model,
            }
            if not self.behavior.omit_usage:
                obj["usage"] = self.embeddings_usage()
        data = json.dumps(obj).encode()
        if self.behavior.malformed:
            return data[: max(1, len(data) * 2 // 3)]  # a valid prefix, cut mid-object
        return data

    def embedding(self, text: str) -> list[float] | str:
        """A deterministic unit-ish vector for ``text``; base64 of little-endian float32 when
        the request asks ``encoding_format: "base64"`` (what the OpenAI SDK asks by default)."""
        seed = sum(map(ord, text)) or 1
        vector = [((seed * (i + 7)) % 97) / 97.0 for i in range(EMBEDDING_DIMENSIONS)]
        if self.body.get("encoding_format") == "base64":
            return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        return vector

    def response_object(self, status: str, text: str | None, *,
                        usage: int | None = None) -> dict[str, Any]:
        """A Responses ``response`` object (as recorded from api.openai.com): ``text`` None
        means no output yet; ``usage`` the completion tokens to report (None: ``null``)."""
        b = self.behavior
        cap = self.body.get("max_output_tokens")
        output: list[dict[str, Any]] = []
        if text is not None:
            output.append(self.message_item("completed", text))
        obj: dict[str, Any] = {
            "id": self.request_id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": (
                {"reason": "max_output_tokens"} if status == "incomplete" else None),
            "instructions": self.body.get("instructions"),
            "max_output_tokens": cap if isinstance(cap, int) else None,
            "max_tool_calls": None,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "prompt_cache_key": None,
            "reasoning": {"effort": None, "summary": None},
            "safety_identifier": None,
            "service_tier": "default",
            "store": True,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto",
            "tools": [],
            "top_logprobs": 0,
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": None,
            "user": None,
            "metadata": {},
        }
        if usage is not None and not b.omit_usage:
            obj["usage"] = self.responses_usage(usage)
        elif b.omit_usage and text is not None:
            del obj["usage"]
        return obj

    def message_item(self, status: str, text: str | None) -> dict[str, Any]:
        content = [] if text is None else [self.text_part(text)]
        return {"id": self.item_id, "type": "message", "status": status, "content": content,
                "role": "assistant"}

    @staticmethod
    def text_part(text: str) -> dict[str, Any]:
        return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}

    # -- stream events -------------------------------------------------------------------

    def responses_event(self, kind: str, **fields: Any) -> bytes:
        """One Responses stream event: ``event: <kind>`` and its data, numbered."""
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return _sse(kind, data)

    def text_event(self, kind: str, **fields: Any) -> bytes:
        return self.responses_event(kind, item_id=self.item_id, output_index=0,
                                    content_index=0, **fields)

    def openai_chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.request_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if self.include_usage and not self.behavior.omit_usage:
            chunk["usage"] = None
        return b"data: " + _dumps(chunk) + b"\n\n"

    def completions_chunk(self, text: str, finish_reason: str | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.request_id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [
                {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if self.include_usage and not self.behavior.omit_usage:
            chunk["usage"] = None
        return b"data: " + _dumps(chunk) + b"\n\n"

    def openai_usage_chunk(self, completion_tokens: int) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.request_id,
            "object": "text_completion" if self.shape == "completions"
            else "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [],
            "usage": self.openai_usage(completion_tokens),
        }
        return b"data: " + _dumps(chunk) + b"\n\n"

    def stream_error_event(self) -> bytes:
        b = self.behavior
        if self.shape == "anthropic":
            payload = _error_payload(
                "anthropic", 529, b.error_message or "Overloaded",
                b.error_type or "overloaded_error")
            return _sse("error", payload)
        message = b.error_message or "Simulated error during streaming"
        if self.shape == "responses":
            response = self.response_object("failed", None)
            response["error"] = {"code": b.error_type or "server_error", "message": message}
            return self.responses_event("response.failed", response=response)
        payload = _error_payload("openai", 500, message, b.error_type or "server_error")
        return b"data: " + _dumps(payload) + b"\n\n"

    # -- a stream, shape by shape --------------------------------------------------------

    def preamble(self) -> list[bytes]:
        if self.shape == "openai":
            return [self.openai_chunk({"role": "assistant", "content": ""})]
        if self.shape == "completions":
            return []
        if self.shape == "responses":
            return [
                self.responses_event("response.created",
                                     response=self.response_object("in_progress", None)),
                self.responses_event("response.in_progress",
                                     response=self.response_object("in_progress", None)),
                self.responses_event("response.output_item.added", output_index=0,
                                     item=self.message_item("in_progress", None)),
                self.text_event("response.content_part.added", part=self.text_part("")),
            ]
        message: dict[str, Any] = {
            "id": self.request_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
        }
        if not self.behavior.omit_usage:
            start_usage = self.anthropic_usage(1)
            start_usage["output_tokens"] = 1
            message["usage"] = start_usage
        return [
            _sse("message_start", {"type": "message_start", "message": message}),
            _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                         "content_block": {"type": "text", "text": ""}}),
            _sse("ping", {"type": "ping"}),
        ]

    def malformed_events(self) -> list[bytes]:
        """A stream event whose JSON is broken, then the stream's normal end marker."""
        if self.shape in ("openai", "completions"):
            return [b'data: {"id": "' + self.request_id.encode() + b'", "choices": [{"de\n\n',
                    b"data: [DONE]\n\n"]
        if self.shape == "responses":
            return [b'event: response.output_text.delta\ndata: {"type": "response.output_te\n\n',
                    self.responses_event("response.completed",
                                         response=self.response_object("completed", ""))]
        return [b'event: content_block_delta\ndata: {"type": "content_block_delta", "in\n\n',
                _sse("message_stop", {"type": "message_stop"})]

    #: Whether one piece's event can be reused for the same piece (not when numbered).
    @property
    def cacheable(self) -> bool:
        return self.shape != "responses"

    def delta_event(self, piece: str) -> bytes:
        if self.shape == "openai":
            return self.openai_chunk({"content": piece})
        if self.shape == "completions":
            return self.completions_chunk(piece)
        if self.shape == "responses":
            return self.text_event("response.output_text.delta", delta=piece, logprobs=[])
        return _sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": piece}})

    def ending(self, sent: int, text: str, truncated: bool) -> list[bytes]:
        """The events after ``sent`` content pieces (together ``text``)."""
        b = self.behavior
        if self.shape in ("openai", "completions"):
            finish = "length" if truncated else "stop"
            events = [self.openai_chunk({}, finish) if self.shape == "openai"
                      else self.completions_chunk("", finish)]
            if self.include_usage and not b.omit_usage:
                events.append(self.openai_usage_chunk(sent))
            return [*events, b"data: [DONE]\n\n"]
        if self.shape == "responses":
            status = "incomplete" if truncated else "completed"
            return [
                self.text_event("response.output_text.done", text=text, logprobs=[]),
                self.text_event("response.content_part.done", part=self.text_part(text)),
                self.responses_event("response.output_item.done", output_index=0,
                                     item=self.message_item("completed", text)),
                self.responses_event(f"response.{status}",
                                     response=self.response_object(status, text, usage=sent)),
            ]
        delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens" if truncated else "end_turn",
                      "stop_sequence": None},
        }
        if not b.omit_usage:
            delta["usage"] = {"output_tokens": self.usage(sent)[1]}
        return [
            _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
            _sse("message_delta", delta),
            _sse("message_stop", {"type": "message_stop"}),
        ]


def _sse(event: str, data: object) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + _dumps(data) + b"\n\n"


class _Stopped(Exception):
    """The simulator is stopping: abandon the current response."""


class _ChunkedWriter:
    """Writes SSE events as HTTP/1.1 chunks on the handler's socket."""

    def __init__(self, handler: _Handler, chunk_delay: float, coalesce: bool) -> None:
        self._handler = handler
        self._chunk_delay = chunk_delay
        self._coalesce = coalesce and chunk_delay == 0
        self._buffer = bytearray()
        self._events = 0
        self.bytes_sent = 0

    def send(self, event: bytes) -> None:
        if self._events and self._chunk_delay:
            self.flush()
            self._handler.pause(self._chunk_delay)
        self._events += 1
        self.bytes_sent += len(event)
        if self._coalesce:
            self._buffer += event
            if len(self._buffer) >= _COALESCE_BYTES:
                self.flush()
        else:
            self._write_chunk(event)

    def flush(self) -> None:
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            self._write_chunk(data)

    def _write_chunk(self, data: bytes) -> None:
        if data:
            self._handler.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))

    def finish(self) -> None:
        """Flush and send the terminating zero-size chunk."""
        self.flush()
        self._handler.wfile.write(b"0\r\n\r\n")

    def cut(self) -> None:
        """Flush, then drop the connection without the terminating chunk."""
        self.flush()
        self._handler.drop_connection()


# --------------------------------------------------------------------------------------------
# HTTP server
# --------------------------------------------------------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many SDK clients connecting at once must not wait on the backlog
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, host: str, port: int, simulator: RunAPISimulator) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.simulator = simulator
        self.stopping = threading.Event()
        self._conn_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        super().__init__((host, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can hang
        # on machines without a network: skip it.
        socketserver.TCPServer.server_bind(self)
        address = self.socket.getsockname()
        self.server_name = str(address[0])
        self.server_port = int(address[1])

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return not self.stopping.is_set()

    def process_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, socket.socket):
            with self._conn_lock:
                self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def drop_all_connections(self) -> None:
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, _Stopped)) or (
            isinstance(exc, OSError) and self.stopping.is_set()
        ):
            return
        log.error("RunAPI simulator: error while handling %s", client_address, exc_info=exc)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart
    server_version = "RunAPISimulator/1.0"
    sys_version = ""
    server: _Server

    # -- plumbing ------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("RunAPI simulator: " + format, *args)

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, TimeoutError, _Stopped):
            self.close_connection = True
        except OSError:
            if not self.server.stopping.is_set():
                raise
            self.close_connection = True

    def pause(self, seconds: float) -> None:
        if seconds > 0 and self.server.stopping.wait(seconds):
            raise _Stopped()

    def drop_connection(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _read_body(self) -> bytes | None:
        """The request body, or None if its framing is invalid (connection then closes)."""
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            parts: list[bytes] = []
            while True:
                line = self.rfile.readline(65537)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    return None
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = self.headers.get("content-length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            return None
        if n < 0:
            return None
        return self.rfile.read(n) if n else b""

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _send_json(
        self, status: int, obj: object, headers: Mapping[str, str] | None = None
    ) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", headers)

    # -- dispatch ------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_OPTIONS(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        sim = self.server.simulator
        path, _, query = self.path.partition("?")
        body = self._read_body()
        if body is None:
            self.close_connection = True
            self._send_json(400, _error_payload(_shape_of(path), 400, "Invalid request body"))
            return
        parsed: Any = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        api_path = path in _SHAPE_OF_PATH
        is_api = _is_api_request(self.command, path)
        sim._record(
            RecordedRequest(
                method=self.command,
                path=path,
                headers=headers,
                body=body,
                json=parsed,
                query=query,
                received_at=time.monotonic(),
            ),
            is_api,
        )
        if is_api:
            self._api(_shape_of(path), parsed, sim._next_behavior())
        elif api_path:
            self._send_json(
                405,
                _error_payload(_shape_of(path), 405, f"Method {self.command} not allowed"),
                {"Allow": "POST"},
            )
        elif path in _MODELS_PATHS or path.startswith(("/v1/models/", "/models/")):
            self._models(path, headers)
        elif path in _COUNT_TOKENS_PATHS and self.command == "POST":
            if not isinstance(parsed, dict):
                self._send_json(400, _error_payload("anthropic", 400, "Invalid JSON body"))
            else:
                self._send_json(200, {"input_tokens": prompt_tokens(parsed)})
        else:
            self._send_json(
                404, _error_payload(_shape_of(path), 404, f"No route for {self.command} {path}")
            )

    def _models(self, path: str, headers: Mapping[str, str]) -> None:
        if self.command not in ("GET", "HEAD"):
            self._send_json(405, _error_payload("openai", 405, "Method not allowed"))
            return
        anthropic_shape = "anthropic-version" in headers
        created = 1_767_225_600  # 2026-01-01T00:00:00Z

        def entry(model: str) -> dict[str, Any]:
            if anthropic_shape:
                return {
                    "type": "model",
                    "id": model,
                    "display_name": model,
                    "created_at": "2026-01-01T00:00:00Z",
                }
            return {"id": model, "object": "model", "created": created, "owned_by": "moonshotai"}

        wanted = path.rstrip("/").rsplit("/", 1)[-1]
        if path.rstrip("/") not in _MODELS_PATHS:
            if wanted not in SIMULATED_MODELS:
                shape: Shape = "anthropic" if anthropic_shape else "openai"
                self._send_json(404, _error_payload(shape, 404, f"model: {wanted}"))
            else:
                self._send_json(200, entry(wanted))
            return
        data = [entry(m) for m in SIMULATED_MODELS]
        if anthropic_shape:
            self._send_json(
                200,
                {
                    "data": data,
                    "has_more": False,
                    "first_id": data[0]["id"],
                    "last_id": data[-1]["id"],
                },
            )
        else:
            self._send_json(200, {"object": "list", "data": data})

    # -- API calls -----------------------------------------------------------------------

    def _api(self, shape: Shape, parsed: Any, behavior: Behavior) -> None:
        sim = self.server.simulator
        request_id = sim._new_id(shape)
        extra: dict[str, str] = {"x-request-id": request_id, "request-id": request_id}
        extra.update(dict(behavior.headers))
        self.pause(behavior.delay)
        wants_stream = isinstance(parsed, dict) and parsed.get("stream") is True
        if behavior.raw is not None:
            content_type = behavior.content_type or (
                "text/event-stream" if wants_stream else "application/json"
            )
            self._send(behavior.status, behavior.raw, content_type, extra)
            return
        if behavior.status >= 400:
            status = behavior.status
            if (status == 429 or status >= 500) and behavior.retry_after is not None:
                lowered = {k.lower() for k in extra}
                if "retry-after" not in lowered:
                    extra["retry-after"] = str(math.ceil(behavior.retry_after))
                if "retry-after-ms" not in lowered:
                    extra["retry-after-ms"] = str(max(1, round(behavior.retry_after * 1000)))
            payload = _error_payload(shape, status, behavior.error_message, behavior.error_type)
            self._send_json(status, payload, extra)
            return
        if not isinstance(parsed, dict):
            self._send_json(
                400,
                _error_payload(shape, 400, "The request body is not a valid JSON object."),
                extra,
            )
            return
        call = _Call(shape, parsed, behavior, request_id, int(time.time()))
        if behavior.known_models is not None and call.model not in behavior.known_models:
            message = (
                f"The model `{call.model}` does not exist or you do not have access to it."
                if shape != "anthropic"
                else f"model: {call.model}"
            )
            self._send_json(
                404,
                _error_payload(shape, 404, message, code="model_not_found"),
                extra,
            )
            return
        if not call.stream:
            self._send(behavior.status, call.body_bytes(), "application/json", extra)
            return
        self._stream(call, extra)

    def _stream(self, call: _Call, extra: Mapping[str, str]) -> None:
        b = call.behavior
        self.send_response(b.status)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        out = _ChunkedWriter(self, b.chunk_delay, coalesce=b.stream_bytes is not None)
        text, truncated = call.reply()
        pieces: Iterator[str]
        if b.stream_bytes is not None:
            words = [w + " " for w in text.split()] or ["x "]
            pieces = itertools.cycle(words)
            truncated = False
        else:
            pieces = iter(_pieces(text))
        stop_at = b.cut_after if b.cut_after is not None else (2 if b.error_event else None)

        for event in call.preamble():
            out.send(event)
        if b.malformed:
            for event in call.malformed_events():
                out.send(event)
            out.finish()
            return

        # Content.
        cache: dict[str, bytes] = {}
        sent_text: list[str] = []
        sent = 0
        for piece in pieces:
            if stop_at is not None and sent >= stop_at:
                break
            if b.stream_bytes is not None and out.bytes_sent >= b.stream_bytes:
                break
            cached = cache.get(piece)
            if cached is None:
                cached = call.delta_event(piece)
                if call.cacheable and len(cache) < 1024:
                    cache[piece] = cached
            out.send(cached)
            if b.stream_bytes is None:
                sent_text.append(piece)
            sent += 1

        # Ending.
        if stop_at is not None:
            if b.error_event:
                out.send(call.stream_error_event())
                out.finish()
            else:
                out.cut()
            return
        for event in call.ending(sent, "".join(sent_text), truncated):
            out.send(event)
        out.finish()


_SHAPE_OF_PATH: Final[dict[str, Shape]] = {
    **dict.fromkeys(_OPENAI_PATHS, "openai"),
    **dict.fromkeys(_ANTHROPIC_PATHS, "anthropic"),
    **dict.fromkeys(_RESPONSES_PATHS, "responses"),
    **dict.fromkeys(_COMPLETIONS_PATHS, "completions"),
    **dict.fromkeys(_EMBEDDINGS_PATHS, "embeddings"),
}


def _is_api_request(method: str, path: str) -> bool:
    return method == "POST" and path in _SHAPE_OF_PATH


def _shape_of(path: str) -> Shape:
    """The shape of an API path (error bodies: Anthropic's for ``/messages``, else OpenAI's)."""
    return _SHAPE_OF_PATH.get(path, "anthropic" if "/messages" in path else "openai")


def shape_of_path(path: str) -> Shape | None:
    """The shape the simulator serves on ``path`` (``None``: not an API call path)."""
    return _SHAPE_OF_PATH.get(path)


def _pieces(text: str) -> list[str]:
    """Split a reply into stream pieces: one word with its trailing whitespace each."""
    pieces = _WORD_PIECE.findall(text)
    lead = text[: len(text) - len(text.lstrip())]
    if pieces and lead:
        pieces[0] = lead + pieces[0]
    return pieces


# --------------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------------


class RunAPISimulator:
    """A RunAPI look-alike HTTP server on a loopback port (see the module docs).

    ``RunAPISimulator(port=0, host="127.0.0.1")``: ``port=0`` picks a free port. Use it as a
    context manager, or call ``start()`` and ``stop()``. All methods are thread-safe.
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self._host = host
        self._requested_port = port
        self._lock = threading.Lock()
        self._queue: deque[Behavior] = deque()
        self._default = Behavior()
        self._requests: list[RecordedRequest] = []
        self._request_count = 0
        self._ids = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> Self:
        """Bind the port and serve in a background daemon thread. Returns ``self``."""
        if self._server is not None:
            raise RuntimeError("RunAPISimulator is already running")
        server = _Server(self._host, self._requested_port, self)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name=f"RunAPISimulator:{server.server_port}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop every open connection. Idempotent; returns promptly."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.stopping.set()
        server.shutdown()
        server.drop_all_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> Self:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self._server is not None else "stopped"
        return f"<RunAPISimulator {where}>"

    # -- addresses -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (only while running)."""
        if self._server is None:
            raise RuntimeError("RunAPISimulator is not running; call start() first")
        return self._server.server_port

    @property
    def host(self) -> str:
        return self._host

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` (no trailing slash): the Anthropic SDK's ``base_url``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """``base_url + "/v1"``: the OpenAI SDK's ``base_url``."""
        return self.base_url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """Same as ``base_url``."""
        return self.base_url

    # -- behaviours ----------------------------------------------------------------------

    def enqueue(self, *behaviors: Behavior) -> None:
        """The next API requests behave like these, in order; then back to ``default``."""
        for behavior in behaviors:
            if not isinstance(behavior, Behavior):
                raise TypeError(f"expected Behavior, got {type(behavior).__name__}")
        with self._lock:
            self._queue.extend(behaviors)

    @property
    def pending(self) -> int:
        """Number of queued behaviours not consumed yet."""
        with self._lock:
            return len(self._queue)

    @property
    def default(self) -> Behavior:
        """The behaviour used when the queue is empty (initially ``Behavior()``)."""
        with self._lock:
            return self._default

    @default.setter
    def default(self, behavior: Behavior) -> None:
        if not isinstance(behavior, Behavior):
            raise TypeError(f"expected Behavior, got {type(behavior).__name__}")
        with self._lock:
            self._default = behavior

    def _next_behavior(self) -> Behavior:
        with self._lock:
            return self._queue.popleft() if self._queue else self._default

    # -- records -------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot (new list) of every request received, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def api_requests(self) -> list[RecordedRequest]:
        """Only the requests counted by ``request_count``, in arrival order."""
        with self._lock:
            return [r for r in self._requests if _is_api_request(r.method, r.path)]

    @property
    def last_request(self) -> RecordedRequest | None:
        with self._lock:
            return self._requests[-1] if self._requests else None

    @property
    def request_count(self) -> int:
        """Number of API calls received: ``POST`` chat/completions, messages, responses,
        completions and embeddings.

        (Also with the ``/v1`` prefix; models, count_tokens and other paths do not count.)
        """
        with self._lock:
            return self._request_count

    def reset(self) -> None:
        """Forget recorded requests, empty the queue and restore ``default = Behavior()``."""
        with self._lock:
            self._requests.clear()
            self._queue.clear()
            self._default = Behavior()
            self._request_count = 0

    def _record(self, request: RecordedRequest, is_api: bool) -> None:
        with self._lock:
            self._requests.append(request)
            if is_api:
                self._request_count += 1

    def _new_id(self, shape: Shape) -> str:
        with self._lock:
            n = next(self._ids)
        prefix = {"openai": "chatcmpl-sim", "anthropic": "msg_sim", "responses": "resp_sim",
                  "completions": "cmpl-sim", "embeddings": "emb-sim"}[shape]
        return f"{prefix}{n:06d}"
