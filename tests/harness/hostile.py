"""Suite 4, hostile input: seeded generated replies (malformed JSON, truncations, absurd
token counts, non-UTF-8 bytes, huge lines, broken streams) through the real metered transport."""

from __future__ import annotations

import gzip
import json
import random
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import brotli
import httpx
import zstandard

from ledger.clock import ManualClock
from ledger.core import Ledger
from ledger.metering import CALL_ID_HEADER
from ledger.money import MAX_TOKENS, from_units
from ledger.store.schema import events
from ledger.testing.simulator import Behavior, RunAPISimulator
from ledger.transport import MeteredTransport

from .calls import request_body
from .common import MODEL, PATHS, Figures, Shape, backend_of, cost
from .oracle import StreamOracle, audit, event_rows

Expect = Literal["ok-exact", "ok-estimated", "ok", "failed", "cancelled", "any"]


@dataclass
class HostileCase:
    """One generated reply: what the server sends and what the ledger must make of it."""

    kind: str
    shape: Shape
    stream: bool
    status: int
    content_type: str | None
    chunks: list[bytes]
    expect: Expect
    usage: tuple[int, int] | None = None
    include_usage: bool = True
    content_encoding: str | None = None
    fail_after: int | None = None
    close_after: int | None = None
    #: The cached tokens the row must show (``None``: not checked).
    cached: int | None = None
    #: At least this many completion tokens must be billed (an estimate that counts them).
    min_completion: int = 0
    #: The request's completion cap: 500, ``None`` (sent as null) or ``"absent"``.
    request_cap: Any = 500

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


_BAD_COUNTS: list[Any] = [-1, -(10 ** 9), 1.5, 2.0, "12", True, None, [], {}, {"n": 1},
                          MAX_TOKENS + 1, 10 ** 30, 2 ** 63, 1e308, "NaN", float("inf")]
#: Unreadable optional details (issue 9 item 9): dropped, the valid counts kept.
_BAD_DETAILS: list[Any] = [-1, "20", 20.5, True, [], {"n": 1}, MAX_TOKENS + 1]
#: The shapes of the generated replies, with their weights.
_SHAPES: tuple[tuple[Shape, float], ...] = (
    ("openai", 0.35), ("anthropic", 0.25), ("responses", 0.25), ("completions", 0.1),
    ("embeddings", 0.05))
#: Streamed shapes (embeddings are never streamed).
_STREAM_SHAPES: tuple[Shape, ...] = ("openai", "anthropic", "responses", "completions")


def _bad_count(rnd: random.Random) -> Any:
    return rnd.choice(_BAD_COUNTS)


def _usage_obj(shape: Shape, p: Any, c: Any, *, cached: Any = None,
               total: Any = "sum") -> dict[str, Any]:
    """A usage object of ``shape``; ``cached`` (if not None) where that shape reports it;
    ``total``: ``"sum"`` for p + c (0 when either is not an int), or the value to send."""
    if total == "sum":
        total = p + c if isinstance(p, int) and isinstance(c, int) else 0
    if shape in ("openai", "completions"):
        usage: dict[str, Any] = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": total}
        if cached is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        return usage
    if shape == "responses":
        usage = {"input_tokens": p, "output_tokens": c, "total_tokens": total,
                 "output_tokens_details": {"reasoning_tokens": 0}}
        usage["input_tokens_details"] = {"cached_tokens": 0 if cached is None else cached}
        return usage
    if shape == "embeddings":
        return {"prompt_tokens": p, "total_tokens": p}
    usage = {"input_tokens": p, "output_tokens": c}
    if cached is not None:
        usage["cache_read_input_tokens"] = cached
    return usage


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


def _text(rnd: random.Random, n: int) -> str:
    alphabet = "abc xyz ÿ€中🙂\\\"\n\t<>&'=+-@"
    return "".join(rnd.choice(alphabet) for _ in range(n))


def _json_reply(shape: Shape, text_: str, usage: dict[str, Any] | None) -> dict[str, Any]:
    obj: dict[str, Any]
    if shape == "openai":
        obj = {"id": "chatcmpl-h", "object": "chat.completion", "model": MODEL,
               "choices": [{"index": 0, "finish_reason": "stop", "message": {
                   "role": "assistant", "content": text_}}]}
    elif shape == "responses":
        obj = {"id": "resp_h", "object": "response", "status": "completed", "model": MODEL,
               "output": [{"type": "message", "id": "msg_h", "status": "completed",
                           "role": "assistant", "content": [
                               {"type": "output_text", "text": text_, "annotations": []}]}]}
    elif shape == "completions":
        obj = {"id": "cmpl-h", "object": "text_completion", "model": MODEL,
               "choices": [{"text": text_, "index": 0, "finish_reason": "stop"}]}
    elif shape == "embeddings":
        obj = {"object": "list", "model": MODEL,
               "data": [{"object": "embedding", "index": 0, "embedding": [0.1, -0.2, 0.3]}]}
    else:
        obj = {"id": "msg_h", "type": "message", "role": "assistant", "model": MODEL,
               "content": [{"type": "text", "text": text_}], "stop_reason": "end_turn"}
    if usage is not None:
        obj["usage"] = usage
    return obj


def _ev(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _dumps(data) + b"\n\n"


def _sse_events(shape: Shape, pieces: list[str], usage: dict[str, Any] | None,
                include_usage: bool, *,
                reasoning: list[str] | None = None) -> tuple[list[bytes], int]:
    """A stream's events and the index of its end event. ``reasoning``: pieces of reasoning
    (OpenAI ``reasoning_content``, Anthropic ``thinking_delta``, Responses reasoning summary
    deltas, Completions: more text) sent before the text."""
    out: list[bytes] = []
    reasoning = reasoning or []
    if shape in ("openai", "completions"):
        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            if shape == "completions":
                choice: dict[str, Any] = {"text": delta.get("content", ""), "index": 0,
                                          "finish_reason": finish}
                return b"data: " + _dumps({"id": "c", "object": "text_completion",
                                           "choices": [choice]}) + b"\n\n"
            return b"data: " + _dumps({"id": "c", "object": "chat.completion.chunk",
                                       "choices": [{"index": 0, "delta": delta,
                                                    "finish_reason": finish}]}) + b"\n\n"
        if shape == "openai":
            out.append(chunk({"role": "assistant", "content": ""}))
            out.extend(chunk({"reasoning_content": r}) for r in reasoning)
        else:
            out.extend(chunk({"content": r}) for r in reasoning)
        out.extend(chunk({"content": p}) for p in pieces)
        out.append(chunk({}, "stop"))
        if include_usage and usage is not None:
            out.append(b"data: " + _dumps({"id": "c", "object": "chat.completion.chunk",
                                           "choices": [], "usage": usage}) + b"\n\n")
        out.append(b"data: [DONE]\n\n")
        return out, len(out) - 1

    if shape == "responses":
        seq = iter(range(1 << 30))
        response: dict[str, Any] = {"id": "resp_h", "object": "response",
                                    "status": "in_progress", "model": MODEL, "output": [],
                                    "usage": None}
        out.append(_ev("response.created", {"type": "response.created",
                                            "sequence_number": next(seq), "response": response}))
        out.append(_ev("response.in_progress", {"type": "response.in_progress",
                                                "sequence_number": next(seq),
                                                "response": response}))
        out.extend(_ev("response.reasoning_summary_text.delta", {
            "type": "response.reasoning_summary_text.delta", "sequence_number": next(seq),
            "item_id": "rs_h", "output_index": 0, "summary_index": 0, "delta": r})
            for r in reasoning)
        out.append(_ev("response.output_item.added", {
            "type": "response.output_item.added", "sequence_number": next(seq),
            "output_index": 0, "item": {"id": "msg_h", "type": "message",
                                        "status": "in_progress", "role": "assistant",
                                        "content": []}}))
        out.extend(_ev("response.output_text.delta", {
            "type": "response.output_text.delta", "sequence_number": next(seq),
            "item_id": "msg_h", "output_index": 0, "content_index": 0, "delta": p})
            for p in pieces)
        out.append(_ev("response.output_text.done", {
            "type": "response.output_text.done", "sequence_number": next(seq),
            "item_id": "msg_h", "output_index": 0, "content_index": 0,
            "text": "".join(pieces)}))
        done = {**response, "status": "completed"}
        if usage is None:
            done.pop("usage")
        else:
            done["usage"] = usage
        out.append(_ev("response.completed", {"type": "response.completed",
                                              "sequence_number": next(seq), "response": done}))
        return out, len(out) - 1

    start_usage = {"input_tokens": usage.get("input_tokens"), "output_tokens": 1} if usage else None
    if usage and "cache_read_input_tokens" in usage and start_usage is not None:
        start_usage["cache_read_input_tokens"] = usage["cache_read_input_tokens"]
    message: dict[str, Any] = {"id": "msg_h", "type": "message", "role": "assistant",
                               "model": MODEL, "content": []}
    if start_usage is not None:
        message["usage"] = start_usage
    out.append(_ev("message_start", {"type": "message_start", "message": message}))
    if reasoning:
        out.append(_ev("content_block_start", {"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "thinking",
                                                                 "thinking": ""}}))
        out.extend(_ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "thinking_delta",
                                                         "thinking": r}})
                   for r in reasoning)
        out.append(_ev("content_block_stop", {"type": "content_block_stop", "index": 0}))
    index = 1 if reasoning else 0
    out.append(_ev("content_block_start", {"type": "content_block_start", "index": index,
                                           "content_block": {"type": "text", "text": ""}}))
    out.append(_ev("ping", {"type": "ping"}))
    out.extend(_ev("content_block_delta", {"type": "content_block_delta", "index": index,
                                           "delta": {"type": "text_delta", "text": p}})
               for p in pieces)
    out.append(_ev("content_block_stop", {"type": "content_block_stop", "index": index}))
    delta: dict[str, Any] = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}
    if usage is not None:
        delta["usage"] = {"output_tokens": usage.get("output_tokens")}
    out.append(_ev("message_delta", delta))
    out.append(_ev("message_stop", {"type": "message_stop"}))
    return out, len(out) - 1


def _kimi_events(pieces: list[list[str]], usages: list[dict[str, Any]]) -> tuple[list[bytes], int]:
    """A Kimi stream (issue 9 item 5): one list of pieces per choice; the last chunk of each
    choice carries that choice's ``usage`` inside ``choices[i]`` (no usage-only chunk)."""
    out = [b"data: " + _dumps({"id": "c", "object": "chat.completion.chunk", "choices": [
        {"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        for i in range(len(pieces))]}) + b"\n\n"]
    for i, choice in enumerate(pieces):
        out.extend(b"data: " + _dumps({"id": "c", "object": "chat.completion.chunk", "choices": [
            {"index": i, "delta": {"content": p}, "finish_reason": None}]}) + b"\n\n"
            for p in choice)
    for i, usage in enumerate(usages):
        out.append(b"data: " + _dumps({"id": "c", "object": "chat.completion.chunk", "choices": [
            {"index": i, "delta": {}, "finish_reason": "stop", "usage": usage}]}) + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return out, len(out) - 1


def _error_event(shape: Shape) -> bytes:
    if shape in ("openai", "completions"):
        return b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'
    if shape == "responses":
        return _ev("response.failed", {"type": "response.failed", "sequence_number": 99,
                                       "response": {"id": "resp_h", "status": "failed",
                                                    "error": {"code": "server_error",
                                                              "message": "overloaded"}}})
    return (b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", '
            b'"message": "Overloaded"}}\n\n')


def _end_again(shape: Shape) -> bytes:
    """The shape's end marker, sent again after an error event (hostile)."""
    if shape in ("openai", "completions"):
        return b"data: [DONE]\n\n"
    if shape == "responses":
        return _ev("response.completed", {"type": "response.completed", "response": {
            "status": "completed", "usage": _usage_obj("responses", 5, 5)}})
    return b'event: message_stop\ndata: {"type": "message_stop"}\n\n'


def _compress(encoding: str, data: bytes) -> bytes:
    """``data`` sent with ``Content-Encoding: encoding`` (issue 9 item 10)."""
    if encoding == "gzip":
        return gzip.compress(data, mtime=0)  # deterministic for a seed (no timestamp)
    if encoding == "br":
        return bytes(brotli.compress(data))
    return bytes(zstandard.ZstdCompressor().compress(data))


def _split(rnd: random.Random, data: bytes) -> list[bytes]:
    """Cut bytes at random places (inside UTF-8 sequences, between CR and LF...)."""
    if not data:
        return [b""] if rnd.random() < 0.5 else []
    n = rnd.choice((1, 1, 2, 3, 5, 17, 64))
    cuts = sorted(rnd.sample(range(1, len(data)), min(n - 1, len(data) - 1))) if len(data) > 1 else []
    out, prev = [], 0
    for cut in [*cuts, len(data)]:
        out.append(data[prev:cut])
        prev = cut
    return out


def _valid_usage(rnd: random.Random, shape: Shape = "openai") -> tuple[int, int]:
    roll = rnd.random()
    if roll < 0.05:
        p, c = rnd.randint(1, 50), 0
    elif roll < 0.1:
        p, c = rnd.randint(MAX_TOKENS // 2, MAX_TOKENS), rnd.randint(0, MAX_TOKENS)
    else:
        p, c = rnd.randint(1, 5000), rnd.randint(0, 5000)
    return (p, 0) if shape == "embeddings" else (p, c)


def _billed_total(p: int, c: int, extra: int) -> tuple[int, int]:
    """Issue 9 item 11: a ``total_tokens`` above prompt + completion is billed (the difference
    as completion); a total beyond any model's reach is not believed (dropped)."""
    return (p, c) if p + c + extra > MAX_TOKENS else (p, c + extra)


def _reasoning(rnd: random.Random) -> list[str]:
    """Reasoning pieces of known words (one cl100k token each at least)."""
    return [" ".join(["think"] * rnd.randint(1, 30)) + " " for _ in range(rnd.randint(1, 8))]


def _words(pieces: list[str]) -> int:
    return len("".join(pieces).split())


def _hostile_json(rnd: random.Random, shape: Shape, huge: bool) -> HostileCase:
    p, c = _valid_usage(rnd, shape)
    kind = rnd.choice(("valid", "valid", "no-usage", "bad-usage", "truncated", "non-utf8",
                       "garbage", "empty", "nested", "long-number", "gzip", "bad-gzip",
                       "wrong-type", "huge-line", "error-status", "cached-gt-prompt",
                       "zero-usage", "bad-detail", "total-more", "total-less", "top-cached",
                       "br", "zstd"))
    if huge:
        kind = "huge-line"
    elif kind == "huge-line":
        kind = "valid"
    if shape == "embeddings" and kind in ("cached-gt-prompt", "bad-detail", "total-more",
                                          "total-less", "top-cached"):
        kind = "valid"  # no details, no completion: nothing to disagree with
    if kind == "top-cached" and shape not in ("openai", "completions"):
        kind = "bad-detail"  # Kimi's top-level cached_tokens is a Chat Completions field
    if kind in ("total-more", "total-less") and shape == "anthropic":
        kind = "cached-gt-prompt"  # the Messages API has no total_tokens
    text_ = _text(rnd, rnd.randint(0, 200))
    ctype: str | None = rnd.choice(("application/json", "application/json; charset=utf-8",
                                    "application/json", None, "text/plain"))
    status, encoding = rnd.choice((200, 200, 200, 201)), None
    usage: tuple[int, int] | None = None
    cached: int | None = None
    expect: Expect
    if kind == "valid":
        body, expect, usage = _dumps(_json_reply(shape, text_, _usage_obj(shape, p, c))), "ok-exact", (p, c)
    elif kind == "no-usage":
        body, expect = _dumps(_json_reply(shape, text_, None)), "ok-estimated"
    elif kind == "bad-usage":
        bad = _usage_obj(shape, *(rnd.choice(((_bad_count(rnd), c), (p, _bad_count(rnd)),
                                              (_bad_count(rnd), _bad_count(rnd))))))
        if shape == "embeddings":  # its only count is the prompt (total_tokens backs it up)
            bad = {"prompt_tokens": _bad_count(rnd), "total_tokens": _bad_count(rnd)}
        body, expect = _dumps(_json_reply(shape, text_, bad)), "ok-estimated"
    elif kind == "zero-usage":  # a success that says it used nothing: not believed
        body = _dumps(_json_reply(shape, text_, _usage_obj(shape, 0, 0)))
        expect = "ok"
    elif kind == "cached-gt-prompt":
        usage_obj = (_usage_obj(shape, p, c, cached=p + 1) if shape != "anthropic" else
                     {"input_tokens": p, "output_tokens": c, "cache_read_input_tokens": -5})
        # Issue 9 item 9: the impossible detail is dropped (noted); the valid counts stand.
        body, expect, usage, cached = (_dumps(_json_reply(shape, text_, usage_obj)),
                                       "ok-exact", (p, c), 0)
    elif kind == "bad-detail":  # issue 9 item 9: one unreadable detail, valid counts kept
        usage_obj = _usage_obj(shape, p, c, cached=rnd.choice(_BAD_DETAILS))
        body, expect, usage, cached = (_dumps(_json_reply(shape, text_, usage_obj)),
                                       "ok-exact", (p, c), 0)
    elif kind == "total-more":  # issue 9 item 11: reasoning left out of the completion
        extra = rnd.randint(1, 3000)
        usage_obj = _usage_obj(shape, p, c, total=p + c + extra)
        body, expect = _dumps(_json_reply(shape, text_, usage_obj)), "ok-exact"
        usage = _billed_total(p, c, extra)
    elif kind == "total-less":  # issue 9 item 11: prompt + completion billed, the larger
        usage_obj = _usage_obj(shape, p, c, total=max(0, p + c - rnd.randint(1, p + c)))
        body, expect, usage = _dumps(_json_reply(shape, text_, usage_obj)), "ok-exact", (p, c)
    elif kind == "top-cached":  # issue 9 item 6: Kimi's top-level usage.cached_tokens
        k = rnd.randint(0, p)
        usage_obj = {**_usage_obj(shape, p, c), "cached_tokens": k}
        body, expect, usage, cached = (_dumps(_json_reply(shape, text_, usage_obj)),
                                       "ok-exact", (p, c), k)
    elif kind == "truncated":
        full = _dumps(_json_reply(shape, text_, _usage_obj(shape, p, c)))
        body, expect = full[:rnd.randrange(1, len(full))], "ok-estimated"
    elif kind == "non-utf8":
        full = _dumps(_json_reply(shape, text_, _usage_obj(shape, p, c)))
        at = full.index(b'"model"')
        body, expect = full[:at] + bytes([0xff, 0xfe, 0xc3]) + full[at:], "ok-estimated"
    elif kind == "garbage":
        body, expect = rnd.randbytes(rnd.randint(1, 3000)), "ok"
    elif kind == "empty":
        body, expect = rnd.choice((b"", b"   ", b"\n", b"null", b"[]", b'"usage"', b"0")), "ok-estimated"
    elif kind == "nested":
        depth = rnd.choice((100, 5000, 200_000))
        body, expect = b'{"usage": ' + b"[" * depth + b"]" * depth + b"}", "ok-estimated"
    elif kind == "long-number":
        digits = b"9" * rnd.choice((30, 5000, 50_000))
        body = b'{"usage": {"prompt_tokens": ' + digits + b', "completion_tokens": 1, ' \
               b'"input_tokens": ' + digits + b', "output_tokens": 1, "total_tokens": ' + \
               digits + b'}}'
        expect = "ok-estimated"
    elif kind in ("gzip", "br", "zstd"):  # issue 9 item 10: every encoding httpx decodes
        body = _compress(kind, _dumps(_json_reply(shape, text_, _usage_obj(shape, p, c))))
        encoding, expect, usage = kind, "ok-exact", (p, c)
    elif kind == "bad-gzip":
        body, encoding, expect = rnd.randbytes(200), rnd.choice(("gzip", "br", "zstd")), "ok"
    elif kind == "wrong-type":
        body = _dumps(rnd.choice(([1, 2, 3], "a string", 42, None,
                                  {"usage": "lots"}, {"usage": [p, c]})))
        expect = "ok-estimated"
    elif kind == "huge-line":
        big = _text(rnd, 1000) * rnd.choice((100, 1000, 2000))
        body = _dumps(_json_reply(shape, big, _usage_obj(shape, p, c)))
        expect, usage = "ok-exact", (p, c)
    else:  # error-status
        status = rnd.choice((400, 401, 403, 404, 408, 429, 500, 502, 503, 529, 599))
        body = rnd.choice((_dumps({"error": {"message": _text(rnd, 50)}}),
                           rnd.randbytes(100), b"", _dumps(_json_reply(shape, "x", _usage_obj(shape, p, c)))))
        expect = "failed"
    chunks = _split(rnd, body)
    case = HostileCase(f"json/{kind}", shape, False, status, ctype, chunks, expect, usage,
                       content_encoding=encoding, cached=cached)
    if status < 400 and rnd.random() < 0.05 and len(chunks) > 1:
        case.fail_after, case.expect, case.usage = rnd.randrange(len(chunks)), "failed", None
    return case


def _hostile_stream(rnd: random.Random, shape: Shape, huge: bool) -> HostileCase:
    p, c = _valid_usage(rnd)
    # Anthropic and Responses streams carry their usage unasked.
    include_usage = shape in ("anthropic", "responses") or rnd.random() < 0.9
    kind = rnd.choice(("valid", "valid", "bad-usage", "no-usage", "truncated", "mid-event",
                       "error-event", "garbled-event", "non-utf8", "crlf", "cr", "comments",
                       "bom", "after-end", "random", "huge-line", "error-status", "cancel",
                       "json-content-type", "double-usage", "bad-detail", "total-more",
                       "reasoning-no-usage", "final-usage-missing", "kimi-choice-usage",
                       "br", "zstd", "gzip"))
    if huge:
        kind = "huge-line"
    elif kind == "huge-line":
        kind = "valid"
    if kind == "kimi-choice-usage" and shape != "openai":
        kind = "valid"
    if kind == "final-usage-missing" and shape != "anthropic":
        kind = "no-usage"
    if kind == "total-more" and shape == "anthropic":
        kind = "bad-detail"
    if kind in ("br", "zstd", "gzip"):
        include_usage = True  # (a compressed stream is handed on as it is: nothing to drop)
    pieces = [_text(rnd, rnd.randint(0, 12)) for _ in range(rnd.randint(0, 12))]
    reasoning: list[str] = []
    usage_obj: dict[str, Any] | None = _usage_obj(shape, p, c)
    expect: Expect = "ok-exact" if include_usage else "ok-estimated"
    usage: tuple[int, int] | None = (p, c) if include_usage else None
    cached: int | None = None
    min_completion = 0
    status, ctype = 200, rnd.choice(("text/event-stream", "text/event-stream; charset=utf-8",
                                     "TEXT/EVENT-STREAM", None))
    close_after = None
    encoding: str | None = None
    if kind == "bad-usage":
        usage_obj = _usage_obj(shape, *(rnd.choice(((_bad_count(rnd), c), (p, _bad_count(rnd))))))
        # Issue 9 item 8: an unreadable final count is an estimate, flagged (Anthropic too).
        expect, usage = "ok-estimated", None
    elif kind == "no-usage":
        usage_obj, expect, usage = None, "ok-estimated", None
    elif kind == "final-usage-missing":  # issue 9 item 8: message_start's placeholder only
        usage_obj = {"input_tokens": p, "output_tokens": None}
        expect, usage = "ok-estimated", None
    elif kind == "reasoning-no-usage":  # issue 9 item 7: reasoning counts in the estimate
        reasoning, usage_obj, expect, usage = _reasoning(rnd), None, "ok-estimated", None
        min_completion = _words(reasoning)
    elif kind == "bad-detail" and include_usage:  # issue 9 item 9
        usage_obj = _usage_obj(shape, p, c, cached=rnd.choice(_BAD_DETAILS))
        cached = 0
    elif kind == "total-more" and include_usage:  # issue 9 item 11
        extra = rnd.randint(1, 3000)
        usage_obj = _usage_obj(shape, p, c, total=p + c + extra)
        usage = _billed_total(p, c, extra)
    elif kind == "huge-line":
        pieces.append(_text(rnd, 1000) * rnd.choice((100, 1000)))
    if kind == "kimi-choice-usage":  # issue 9 items 5, 6: usage inside choices[i]
        n = rnd.choice((1, 1, 2, 3))
        per_choice = [_valid_usage(rnd) for _ in range(n)]
        prompt = per_choice[0][0]
        k = rnd.randint(0, prompt)
        usages = [{"prompt_tokens": prompt, "completion_tokens": cc,
                   "total_tokens": prompt + cc, "cached_tokens": k} for _, cc in per_choice]
        evs, end = _kimi_events([pieces] * n, usages)
        expect, usage, cached = "ok-exact", (prompt, sum(cc for _, cc in per_choice)), k
        if usage[1] > MAX_TOKENS:
            expect, usage, cached = "ok", None, None
    else:
        evs, end = _sse_events(shape, pieces, usage_obj, include_usage, reasoning=reasoning)
    if kind == "double-usage" and shape in ("openai", "completions") and include_usage:
        evs.insert(end, b"data: " + _dumps({"choices": [], "usage": _usage_obj(shape, p + 1, c)})
                   + b"\n\n")
        expect, usage = "ok", None
    elif kind == "truncated":  # up to, not including, the end event (even after the usage)
        evs, expect, usage, cached = evs[:rnd.randint(0, end)], "failed", None, None
    elif kind == "mid-event":
        cut = rnd.randrange(0, end + 1)
        part = evs[cut][:rnd.randrange(1, max(2, len(evs[cut]) - 2))]
        evs, expect, usage = [*evs[:cut], part], "failed", None
    elif kind == "error-event":
        evs, expect, usage = [*evs[:rnd.randrange(0, end)], _error_event(shape)], "failed", None
        if rnd.random() < 0.5:
            evs.append(_end_again(shape))
    elif kind == "garbled-event":
        evs.insert(rnd.randint(1, max(1, end - 1)), rnd.choice((b'data: {"choices": [{"de\n\n',
                                                      b"data: \xff\xfe{]\n\n", b"data:\n\n",
                                                      b"event: content_block_delta\ndata: nope\n\n")))
        expect, usage, cached = "ok", None, None
    elif kind == "non-utf8":
        evs.insert(rnd.randint(1, max(1, end - 1)), b"data: {\"x\": \"\xc3\x28\xa0\xa1\"}\n\n")
        expect, usage, cached = "ok", None, None
    elif kind == "crlf":
        evs = [e.replace(b"\n", b"\r\n") for e in evs]
    elif kind == "cr":
        evs = [e.replace(b"\n", b"\r") for e in evs]
    elif kind == "comments":
        evs = [b": keep-alive\nid: 7\nretry: 100\n" + e for e in evs]
    elif kind == "bom":
        evs[0] = b"\xef\xbb\xbf" + evs[0]
    elif kind == "after-end":
        evs.append(rnd.randbytes(rnd.randint(1, 500)))
    elif kind == "random":
        evs, expect, usage, cached = [rnd.randbytes(rnd.randint(0, 4000))], "any", None, None
    elif kind == "error-status":
        status = rnd.choice((400, 429, 500, 503, 529))
        expect, usage, cached = "failed", None, None
    elif kind == "json-content-type":
        ctype, expect, usage, cached = "application/json", "ok", None, None
    elif kind == "cancel":
        close_after = 1
        # (Not with a usage chunk to drop: the ledger then hands on whole events only, so
        # the caller's first chunk is not the server's.)
        if not include_usage:
            include_usage, expect, usage = True, "ok-exact", (p, c)
            evs, end = _sse_events(shape, pieces, usage_obj, include_usage)
    elif kind in ("br", "zstd", "gzip"):  # issue 9 item 10: a 200 stream, compressed
        encoding = kind
    body = b"".join(evs)
    if encoding is not None:
        body = _compress(encoding, body)
    chunks = _split(rnd, body)
    if kind == "cancel":  # the caller reads one chunk, cut before the end event, and closes
        cut = rnd.randint(1, len(b"".join(evs[:end])))
        chunks, expect, usage, cached = [body[:cut], body[cut:]], "cancelled", None, None
    case = HostileCase(f"sse/{kind}", shape, True, status, ctype, chunks, expect, usage,
                       include_usage=include_usage, close_after=close_after,
                       content_encoding=encoding, cached=cached,
                       min_completion=min_completion)
    if not include_usage and expect == "ok-exact" and kind != "kimi-choice-usage":
        case.expect, case.cached = "ok-estimated", None
    if status < 400 and kind != "cancel" and rnd.random() < 0.05 and len(chunks) > 1:
        case.fail_after = rnd.randrange(len(chunks))
        before = StreamOracle(shape)
        seen = b"".join(chunks[:case.fail_after])
        before.feed(seen if encoding is None else _decompress_prefix(encoding, seen))
        # A break after the end event changes nothing: the call was settled at that event.
        if kind == "json-content-type" or not (before.done or before.error):
            case.expect, case.usage, case.cached = "failed", None, None
    return case


def _decompress_prefix(encoding: str, data: bytes) -> bytes:
    """What a prefix of a compressed body decodes to (as much as can be)."""
    try:
        if encoding == "gzip":
            return zlib.decompressobj(47).decompress(data)
        if encoding == "br":
            out: bytes = brotli.Decompressor().process(data)
            return out
        out = zstandard.ZstdDecompressor().decompressobj().decompress(data)
        return out
    except Exception:
        return b""


def hostile_cases(seed: int, n: int, *, huge_every: int = 500) -> Iterator[HostileCase]:
    """``n`` generated replies, deterministic for a seed: half JSON bodies, half SSE streams,
    of every metered shape (Chat Completions and Kimi's variants, Anthropic Messages, Responses,
    Completions, Embeddings), with malformed JSON, truncations, bad and absurd token counts,
    bad optional details, disagreeing totals, compressed bodies, non-UTF-8 bytes, huge lines
    (one case in ``huge_every``), error events and statuses, broken transports and callers
    closing early."""
    rnd = random.Random(seed)
    shapes = [s for s, _ in _SHAPES]
    weights = [w for _, w in _SHAPES]
    for i in range(n):
        shape: Shape = rnd.choices(shapes, weights)[0]
        huge = huge_every > 0 and i % huge_every == huge_every - 1
        if shape == "embeddings" or rnd.random() < 0.5:
            case = _hostile_json(rnd, shape, huge)
        else:
            case = _hostile_stream(rnd, shape, huge)
        if shape in CAP_FIELD:
            case.request_cap = rnd.choice((500, 500, None, "absent"))
        yield case


class _Injected(httpx.ReadError):
    """The transport error a hostile case raises mid-body (must reach the caller as is)."""


class _Chunks(httpx.SyncByteStream):
    def __init__(self, case: HostileCase, error: BaseException) -> None:
        self.case, self.error = case, error

    def __iter__(self) -> Iterator[bytes]:
        for i, chunk in enumerate(self.case.chunks):
            if self.case.fail_after is not None and i == self.case.fail_after:
                raise self.error
            yield chunk

    def close(self) -> None:
        pass


#: The completion cap field of each shape that has one the ledger may fill in.
CAP_FIELD: dict[str, str] = {"openai": "max_tokens", "completions": "max_tokens",
                             "responses": "max_output_tokens"}


def _hostile_request(case: HostileCase) -> dict[str, Any]:
    body = request_body(case.shape, stream=case.stream, max_tokens=500)
    if case.stream and case.shape in ("openai", "completions") and not case.include_usage:
        body.pop("stream_options")
    field = CAP_FIELD.get(case.shape)
    if field is not None and case.request_cap != 500:  # issue 9 item 2: null or no cap
        if case.request_cap is None:
            body[field] = None
        else:
            body.pop(field)
    return body


def _forwarded_cap_problem(case: HostileCase, request: httpx.Request,
                           default_cap: int) -> str | None:
    """Issue 9 item 2: what reached the server is capped at what was held."""
    field = CAP_FIELD.get(case.shape)
    if field is None:
        return None
    try:
        sent = json.loads(request.content)
    except ValueError:
        return "the forwarded body is not JSON"
    want = 500 if case.request_cap == 500 else default_cap
    if sent.get(field) != want:
        return f"forwarded {field}={sent.get(field)!r}, held {want}"
    return None


def _judge(case: HostileCase, row: Mapping[str, Any] | None, figures: Figures, where: str) -> None:
    if row is None:
        figures.problem(f"{where}: no event")
        figures.usage_lost += 1
        return
    amount, status = from_units(row["cost"]), row["status"]
    if amount < 0 or row["prompt_tokens"] < 0 or row["completion_tokens"] < 0:
        figures.problem(f"{where}: negative amount stored ({row})")
    if status == "failed":
        figures.failed += 1
    ok = {"ok-exact": status == "ok" and not row["estimated"] and case.usage is not None
                      and amount == cost(*case.usage),
          "ok-estimated": status == "ok" and row["estimated"] and amount > 0,
          "ok": status == "ok" and amount > 0,
          "failed": status == "failed" and amount == 0,
          "cancelled": status == "cancelled" and amount > 0,
          "any": (status == "failed" and amount == 0) or (status in ("ok", "cancelled")
                                                          and amount > 0)}[case.expect]
    if case.cached is not None and status == "ok" and row["cached_tokens"] != case.cached:
        figures.problem(f"{where}: cached tokens {row['cached_tokens']}, want {case.cached}")
    if (case.min_completion and status == "ok"
            and row["completion_tokens"] < case.min_completion):
        figures.problem(f"{where}: estimated {row['completion_tokens']} completion tokens, "
                        f"the reasoning alone has {case.min_completion} words")
    if status in ("ok", "cancelled") and amount <= 0:
        figures.problem(f"{where}: a success recorded at $0")
    if not ok:
        figures.problem(f"{where}: want {case.expect} {case.usage}, recorded {status} "
                        f"estimated={row['estimated']} at {amount} "
                        f"({row['prompt_tokens']}+{row['completion_tokens']} tokens)")


def hostile_suite(book: Ledger, *, n: int = 10_000, loopback: int = 300, seed: int = 1,
                  huge_every: int = 500) -> Figures:
    """Feed ``n`` generated replies through the real metered transport (most through an
    ``httpx.MockTransport``, ``loopback`` of them over real loopback HTTP from the simulator):
    the caller gets every byte the server sent and no exception but the server's own; each
    call is recorded once, never a success at $0, never a negative amount."""
    figures = Figures("hostile", backend_of(book.url))
    kinds: Counter[str] = Counter()
    start = time.perf_counter()
    cases = list(hostile_cases(seed, n + loopback, huge_every=huge_every))
    current: list[HostileCase] = []
    loopback_calls = 0
    injected = _Injected("injected by the test server")

    def handler(request: httpx.Request) -> httpx.Response:
        case = current[0]
        request.read()
        problem = _forwarded_cap_problem(case, request, book.default_max_tokens)
        if problem:
            figures.problem(f"{case.kind}: {problem}")
        headers = [] if case.content_type is None else [("content-type", case.content_type)]
        if case.content_encoding:
            headers.append(("content-encoding", case.content_encoding))
        return httpx.Response(case.status, headers=headers, stream=_Chunks(case, injected))

    mock = httpx.Client(transport=MeteredTransport(book, "hostile", projects="*",
                                                   wrapped=httpx.MockTransport(handler)))
    with RunAPISimulator() as sim, book.httpx_client("hostile", timeout=60,
                                                    projects="*") as real:
        for i, case in enumerate(cases):
            over_loopback = i >= n
            if over_loopback:
                if case.fail_after is not None or case.close_after is not None:
                    continue  # a broken transport or an early close is not a body to send
                loopback_calls += 1
                sim.enqueue(Behavior(
                    status=case.status, raw=case.body, content_type=case.content_type,
                    headers=(() if case.content_encoding is None
                             else (("content-encoding", case.content_encoding),)),
                    retry_after=None))
            current[:] = [case]
            project = f"h{i}"
            kinds[case.kind] += 1
            figures.calls += 1
            got: list[bytes] = []
            call_id: str | None = None
            error: BaseException | None = None
            client, base = (real, sim.base_url) if over_loopback else (mock, "http://runapi.test")
            try:
                with client.stream("POST", base + PATHS[case.shape], json=_hostile_request(case),
                                   headers={"x-ledger-project": project}) as r:
                    call_id = r.headers.get(CALL_ID_HEADER)
                    if r.headers.get("x-ledger-refused"):
                        figures.refused += 1
                        figures.problem(f"{case.kind} #{i}: refused {r.headers['x-ledger-refused']}")
                    for k, chunk in enumerate(r.iter_raw(), 1):
                        got.append(chunk)
                        if case.close_after is not None and k >= case.close_after:
                            break
            except Exception as exc:  # the point: which exceptions reach the caller
                error = exc
            where = f"{case.kind} #{i} (seed {seed})"
            if error is not None and error is not injected:
                figures.problem(f"{where}: the caller got {type(error).__name__}: {error}")
            if error is None and case.fail_after is not None:
                figures.problem(f"{where}: the transport error did not reach the caller")
            drops = (case.stream and case.shape in ("openai", "completions")
                     and not case.include_usage)
            if (error is None and case.close_after is None and not drops
                    and b"".join(got) != case.body):
                figures.problem(f"{where}: the caller did not get the server's bytes unchanged")
            figures.admitted += 1
            rows = event_rows(book, events.c.project == project)
            if len(rows) > 1:
                figures.charged_twice += 1
                figures.problem(f"{where}: recorded {len(rows)} times")
            if call_id is not None and rows and rows[0]["call_id"] != call_id:
                figures.problem(f"{where}: the event is not the call's")
            _judge(case, rows[0] if rows else None, figures, where)
    mock.close()
    figures.seconds = time.perf_counter() - start
    figures.extra["inputs"] = figures.calls
    figures.extra["over_loopback"] = loopback_calls
    figures.extra["kinds"] = len(kinds)
    figures.extra["by_kind"] = dict(sorted(kinds.items()))
    audit(book, figures, book.clock if isinstance(book.clock, ManualClock) else None)
    return figures
