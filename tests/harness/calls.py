"""The call drivers: one chat request of either shape made with an ``httpx``/``httpx2``
client, sync (:func:`call_sync`) or async (:func:`call_async`), read by the caller's own
oracle and returned as a :class:`~tests.harness.oracle.Seen`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ledger.metering import CALL_ID_HEADER

from .common import HTTPX_ERRORS, MODEL, Shape
from .oracle import Seen, StreamOracle, json_usage


def request_body(shape: Shape, *, model: str = MODEL, stream: bool = False,
                 max_tokens: int | None = 100, content: str = "hello there") -> dict[str, Any]:
    """A request of any shape (chat of either shape, Responses, Completions, Embeddings); an
    OpenAI-family stream asks for its usage itself."""
    body: dict[str, Any] = {"model": model}
    if shape == "responses":
        body["input"] = content
    elif shape == "completions":
        body["prompt"] = content
    elif shape == "embeddings":
        body["input"] = [content]
        return body  # no cap, never streamed
    else:
        body["messages"] = [{"role": "user", "content": content}]
    if max_tokens is not None:
        body["max_output_tokens" if shape == "responses" else "max_tokens"] = max_tokens
    if stream:
        body["stream"] = True
        if shape in ("openai", "completions"):
            body["stream_options"] = {"include_usage": True}
    return body


def _start_seen(response: Any, tag: str) -> Seen:
    return Seen(status=response.status_code, call_id=response.headers.get(CALL_ID_HEADER),
                refused=response.headers.get("x-ledger-refused"), tag=tag)


def _finish_seen(seen: Seen, shape: Shape, stream: bool, parts: list[bytes],
                 oracle: StreamOracle | None) -> None:
    if seen.refused is not None:
        seen.refusal_body = b"".join(parts)[:500].decode("utf-8", "replace")
    if seen.refused is not None or seen.status >= 400:
        return
    if oracle is not None:
        seen.complete, seen.error_event = oracle.done, oracle.error
        seen.garbled, seen.usage = oracle.garbled, oracle.usage
    else:
        seen.usage, seen.complete = json_usage(shape, b"".join(parts))
        seen.garbled = not seen.complete


def call_sync(client: Any, url: str, shape: Shape, body: Mapping[str, Any], *,
              headers: Mapping[str, str] | None = None, close_after: int | None = None,
              tag: str = "") -> Seen:
    """Make one call with an ``httpx``/``httpx2`` client and say what the caller saw."""
    stream = body.get("stream") is True
    start = time.perf_counter()
    seen = Seen(tag=tag)
    try:
        with client.stream("POST", url, json=dict(body), headers=dict(headers or {})) as r:
            seen = _start_seen(r, tag)
            oracle = StreamOracle(shape) if stream and seen.status < 400 else None
            parts: list[bytes] = []
            # (A response made in memory, like the ledger's refusals, has no raw stream left.)
            raw = iter([r.read()]) if r.is_stream_consumed else r.iter_raw()
            for n, chunk in enumerate(raw, 1):
                if _take(seen, oracle, parts, chunk, n, close_after):
                    break
            _finish_seen(seen, shape, stream, parts, oracle)
    except HTTPX_ERRORS as exc:
        seen.exception = f"{type(exc).__name__}: {exc}"
    seen.latency = time.perf_counter() - start
    return seen


async def call_async(client: Any, url: str, shape: Shape, body: Mapping[str, Any], *,
                     headers: Mapping[str, str] | None = None, close_after: int | None = None,
                     tag: str = "") -> Seen:
    """The async twin of :func:`call_sync`."""
    stream = body.get("stream") is True
    start = time.perf_counter()
    seen = Seen(tag=tag)
    try:
        async with client.stream("POST", url, json=dict(body),
                                 headers=dict(headers or {})) as r:
            seen = _start_seen(r, tag)
            oracle = StreamOracle(shape) if stream and seen.status < 400 else None
            parts: list[bytes] = []
            n = 0
            raw = _once(await r.aread()) if r.is_stream_consumed else r.aiter_raw()
            async for chunk in raw:
                n += 1
                if _take(seen, oracle, parts, chunk, n, close_after):
                    break
            _finish_seen(seen, shape, stream, parts, oracle)
    except HTTPX_ERRORS as exc:
        seen.exception = f"{type(exc).__name__}: {exc}"
    seen.latency = time.perf_counter() - start
    return seen


def _take(seen: Seen, oracle: StreamOracle | None, parts: list[bytes], chunk: bytes, n: int,
          close_after: int | None) -> bool:
    """Keep the ``n``-th chunk the caller read; True when the caller stops reading here."""
    parts.append(chunk)
    if oracle is None:
        return False
    oracle.feed(chunk)
    if close_after is not None and n >= close_after and not (oracle.done or oracle.error):
        seen.cancelled = True
        return True
    return False


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
