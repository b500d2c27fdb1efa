"""Suite 4, hostile input: seeded generated replies (malformed JSON, truncations, absurd
token counts, non-UTF-8 bytes, huge lines, broken streams) through the real metered transport."""

from __future__ import annotations

import gzip
import json
import random
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx

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

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


_BAD_COUNTS: list[Any] = [-1, -(10 ** 9), 1.5, 2.0, "12", True, None, [], {}, {"n": 1},
                          MAX_TOKENS + 1, 10 ** 30, 2 ** 63, 1e308, "NaN", float("inf")]


def _bad_count(rnd: random.Random) -> Any:
    return rnd.choice(_BAD_COUNTS)


def _usage_obj(shape: Shape, p: Any, c: Any) -> dict[str, Any]:
    if shape == "openai":
        return {"prompt_tokens": p, "completion_tokens": c,
                "total_tokens": p + c if isinstance(p, int) and isinstance(c, int) else 0}
    return {"input_tokens": p, "output_tokens": c}


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


def _text(rnd: random.Random, n: int) -> str:
    alphabet = "abc xyz ÿ€中🙂\\\"\n\t<>&'=+-@"
    return "".join(rnd.choice(alphabet) for _ in range(n))


def _json_reply(shape: Shape, text_: str, usage: dict[str, Any] | None) -> dict[str, Any]:
    if shape == "openai":
        obj: dict[str, Any] = {"id": "chatcmpl-h", "object": "chat.completion", "model": MODEL,
                               "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                   "role": "assistant", "content": text_}}]}
    else:
        obj = {"id": "msg_h", "type": "message", "role": "assistant", "model": MODEL,
               "content": [{"type": "text", "text": text_}], "stop_reason": "end_turn"}
    if usage is not None:
        obj["usage"] = usage
    return obj


def _sse_events(shape: Shape, pieces: list[str], usage: dict[str, Any] | None,
                include_usage: bool) -> tuple[list[bytes], int]:
    """A stream's events and the index of its end event."""
    out: list[bytes] = []
    if shape == "openai":
        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return b"data: " + _dumps({"id": "c", "object": "chat.completion.chunk",
                                       "choices": [{"index": 0, "delta": delta,
                                                    "finish_reason": finish}]}) + b"\n\n"
        out.append(chunk({"role": "assistant", "content": ""}))
        out.extend(chunk({"content": p}) for p in pieces)
        out.append(chunk({}, "stop"))
        if include_usage and usage is not None:
            out.append(b"data: " + _dumps({"id": "c", "object": "chat.completion.chunk",
                                           "choices": [], "usage": usage}) + b"\n\n")
        out.append(b"data: [DONE]\n\n")
        return out, len(out) - 1

    def ev(name: str, data: dict[str, Any]) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + _dumps(data) + b"\n\n"

    start_usage = {"input_tokens": usage.get("input_tokens"), "output_tokens": 1} if usage else None
    message: dict[str, Any] = {"id": "msg_h", "type": "message", "role": "assistant",
                               "model": MODEL, "content": []}
    if start_usage is not None:
        message["usage"] = start_usage
    out.append(ev("message_start", {"type": "message_start", "message": message}))
    out.append(ev("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "text", "text": ""}}))
    out.append(ev("ping", {"type": "ping"}))
    out.extend(ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                          "delta": {"type": "text_delta", "text": p}})
               for p in pieces)
    out.append(ev("content_block_stop", {"type": "content_block_stop", "index": 0}))
    delta: dict[str, Any] = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}
    if usage is not None:
        delta["usage"] = {"output_tokens": usage.get("output_tokens")}
    out.append(ev("message_delta", delta))
    out.append(ev("message_stop", {"type": "message_stop"}))
    return out, len(out) - 1


def _error_event(shape: Shape) -> bytes:
    if shape == "openai":
        return b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'
    return (b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", '
            b'"message": "Overloaded"}}\n\n')


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


def _valid_usage(rnd: random.Random) -> tuple[int, int]:
    roll = rnd.random()
    if roll < 0.05:
        return rnd.randint(1, 50), 0
    if roll < 0.1:
        return rnd.randint(MAX_TOKENS // 2, MAX_TOKENS), rnd.randint(0, MAX_TOKENS)
    return rnd.randint(1, 5000), rnd.randint(0, 5000)


def _hostile_json(rnd: random.Random, shape: Shape, huge: bool) -> HostileCase:
    p, c = _valid_usage(rnd)
    kind = rnd.choice(("valid", "valid", "no-usage", "bad-usage", "truncated", "non-utf8",
                       "garbage", "empty", "nested", "long-number", "gzip", "bad-gzip",
                       "wrong-type", "huge-line", "error-status", "cached-gt-prompt",
                       "zero-usage"))
    if huge:
        kind = "huge-line"
    elif kind == "huge-line":
        kind = "valid"
    text_ = _text(rnd, rnd.randint(0, 200))
    ctype: str | None = rnd.choice(("application/json", "application/json; charset=utf-8",
                                    "application/json", None, "text/plain"))
    status, encoding = rnd.choice((200, 200, 200, 201)), None
    usage: tuple[int, int] | None = None
    expect: Expect
    if kind == "valid":
        body, expect, usage = _dumps(_json_reply(shape, text_, _usage_obj(shape, p, c))), "ok-exact", (p, c)
    elif kind == "no-usage":
        body, expect = _dumps(_json_reply(shape, text_, None)), "ok-estimated"
    elif kind == "bad-usage":
        bad = _usage_obj(shape, *(rnd.choice(((_bad_count(rnd), c), (p, _bad_count(rnd)),
                                              (_bad_count(rnd), _bad_count(rnd))))))
        body, expect = _dumps(_json_reply(shape, text_, bad)), "ok-estimated"
    elif kind == "zero-usage":  # a success that says it used nothing: not believed
        body = _dumps(_json_reply(shape, text_, _usage_obj(shape, 0, 0)))
        expect = "ok"
    elif kind == "cached-gt-prompt":
        usage_obj = (_usage_obj(shape, p, c) | {"prompt_tokens_details": {"cached_tokens": p + 1}}
                     if shape == "openai" else
                     {"input_tokens": p, "output_tokens": c, "cache_read_input_tokens": -5})
        # Issue 9 item 9: the impossible detail is dropped (noted); the valid counts stand.
        body, expect, usage = _dumps(_json_reply(shape, text_, usage_obj)), "ok-exact", (p, c)
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
               b'"input_tokens": ' + digits + b', "output_tokens": 1}}'
        expect = "ok-estimated"
    elif kind == "gzip":
        body = gzip.compress(_dumps(_json_reply(shape, text_, _usage_obj(shape, p, c))),
                             mtime=0)  # deterministic for a seed (no timestamp)
        encoding, expect, usage = "gzip", "ok-exact", (p, c)
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
                       content_encoding=encoding)
    if status < 400 and rnd.random() < 0.05 and len(chunks) > 1:
        case.fail_after, case.expect, case.usage = rnd.randrange(len(chunks)), "failed", None
    return case


def _hostile_stream(rnd: random.Random, shape: Shape, huge: bool) -> HostileCase:
    p, c = _valid_usage(rnd)
    include_usage = shape == "anthropic" or rnd.random() < 0.9
    kind = rnd.choice(("valid", "valid", "bad-usage", "no-usage", "truncated", "mid-event",
                       "error-event", "garbled-event", "non-utf8", "crlf", "cr", "comments",
                       "bom", "after-end", "random", "huge-line", "error-status", "cancel",
                       "json-content-type", "double-usage"))
    if huge:
        kind = "huge-line"
    elif kind == "huge-line":
        kind = "valid"
    pieces = [_text(rnd, rnd.randint(0, 12)) for _ in range(rnd.randint(0, 12))]
    usage_obj: dict[str, Any] | None = _usage_obj(shape, p, c)
    expect: Expect = "ok-exact" if include_usage else "ok-estimated"
    usage: tuple[int, int] | None = (p, c) if include_usage else None
    status, ctype = 200, rnd.choice(("text/event-stream", "text/event-stream; charset=utf-8",
                                     "TEXT/EVENT-STREAM", None))
    close_after = None
    if kind == "bad-usage":
        usage_obj = _usage_obj(shape, *(rnd.choice(((_bad_count(rnd), c), (p, _bad_count(rnd))))))
        # Anthropic's message_start says output_tokens 1: a bad final count may leave that.
        expect, usage = ("ok-estimated" if shape == "openai" else "ok"), None
    elif kind == "no-usage":
        usage_obj, expect, usage = None, "ok-estimated", None
    elif kind == "huge-line":
        pieces.append(_text(rnd, 1000) * rnd.choice((100, 1000)))
    evs, end = _sse_events(shape, pieces, usage_obj, include_usage)
    if kind == "double-usage" and shape == "openai" and include_usage:
        evs.insert(end, b"data: " + _dumps({"choices": [], "usage": _usage_obj(shape, p + 1, c)})
                   + b"\n\n")
        expect, usage = "ok", None
    elif kind == "truncated":  # up to, not including, the end event (even after the usage)
        evs, expect, usage = evs[:rnd.randint(0, end)], "failed", None
    elif kind == "mid-event":
        cut = rnd.randrange(0, end + 1)
        part = evs[cut][:rnd.randrange(1, max(2, len(evs[cut]) - 2))]
        evs, expect, usage = [*evs[:cut], part], "failed", None
    elif kind == "error-event":
        evs, expect, usage = [*evs[:rnd.randrange(0, end)], _error_event(shape)], "failed", None
        if rnd.random() < 0.5:
            evs.append(b"data: [DONE]\n\n" if shape == "openai"
                       else b'event: message_stop\ndata: {"type": "message_stop"}\n\n')
    elif kind == "garbled-event":
        evs.insert(rnd.randrange(1, end), rnd.choice((b'data: {"choices": [{"de\n\n',
                                                      b"data: \xff\xfe{]\n\n", b"data:\n\n",
                                                      b"event: content_block_delta\ndata: nope\n\n")))
        expect, usage = "ok", None
    elif kind == "non-utf8":
        evs.insert(rnd.randrange(1, end), b"data: {\"x\": \"\xc3\x28\xa0\xa1\"}\n\n")
        expect, usage = "ok", None
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
        evs, expect, usage = [rnd.randbytes(rnd.randint(0, 4000))], "any", None
    elif kind == "error-status":
        status = rnd.choice((400, 429, 500, 503, 529))
        expect, usage = "failed", None
    elif kind == "json-content-type":
        ctype, expect, usage = "application/json", "ok", None
    elif kind == "cancel":
        close_after = 1
        # (Not with a usage chunk to drop: the ledger then hands on whole events only, so
        # the caller's first chunk is not the server's.)
        if not include_usage:
            include_usage, expect, usage = True, "ok-exact", (p, c)
            evs, end = _sse_events(shape, pieces, usage_obj, include_usage)
    body = b"".join(evs)
    chunks = _split(rnd, body)
    if kind == "cancel":  # the caller reads one chunk, cut before the end event, and closes
        cut = rnd.randint(1, len(b"".join(evs[:end])))
        chunks, expect, usage = [body[:cut], body[cut:]], "cancelled", None
    case = HostileCase(f"sse/{kind}", shape, True, status, ctype, chunks, expect, usage,
                       include_usage=include_usage, close_after=close_after)
    if not include_usage and expect == "ok-exact":
        case.expect = "ok-estimated"
    if status < 400 and kind != "cancel" and rnd.random() < 0.05 and len(chunks) > 1:
        case.fail_after = rnd.randrange(len(chunks))
        before = StreamOracle(shape)
        before.feed(b"".join(chunks[:case.fail_after]))
        # A break after the end event changes nothing: the call was settled at that event.
        if kind == "json-content-type" or not (before.done or before.error):
            case.expect, case.usage = "failed", None
    return case


def hostile_cases(seed: int, n: int, *, huge_every: int = 500) -> Iterator[HostileCase]:
    """``n`` generated replies, deterministic for a seed: half JSON bodies, half SSE streams,
    both shapes, with malformed JSON, truncations, bad and absurd token counts, non-UTF-8
    bytes, huge lines (one case in ``huge_every``), error events and statuses, broken
    transports and callers closing early."""
    rnd = random.Random(seed)
    for i in range(n):
        shape: Shape = "openai" if rnd.random() < 0.5 else "anthropic"
        huge = huge_every > 0 and i % huge_every == huge_every - 1
        if rnd.random() < 0.5:
            yield _hostile_json(rnd, shape, huge)
        else:
            yield _hostile_stream(rnd, shape, huge)


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


def _hostile_request(case: HostileCase) -> dict[str, Any]:
    body = request_body(case.shape, stream=case.stream, max_tokens=500)
    if case.stream and case.shape == "openai" and not case.include_usage:
        body.pop("stream_options")
    return body


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
            drops = case.stream and case.shape == "openai" and not case.include_usage
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
