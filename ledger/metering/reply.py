"""Step 3 of a metered call, **the reply passes** (pure): :class:`ResponseMeter` watches the
reply's bytes go by and decides the call's :class:`~ledger.records.Outcome`, which step 4
(:meth:`ledger.metering.call.Call.settle`) posts or voids.

* HTTP status >= 400 (or any other non-2xx, e.g. a redirect, which is not a completion), a
  transport error, an error event or a stream that ends without its end event -> ``failed``
  (cost zero: the hold is voided; status and error kept).
* A complete reply -> ``ok`` at the reported usage; without readable usage, ``ok`` charged by
  estimate (prompt estimate + tokens of the returned text), flagged ``estimated``.
* A stream closed by the caller before its end -> ``cancelled``, charged by estimate of what
  was streamed, flagged.
* Outcomes carry only token counts, the HTTP status and a short error message: never headers,
  keys, prompts or completions.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from typing import Any, Literal

from ..records import Outcome
from ..shapes import (
    Shape,
    Usage,
    error_message,
    load_object,
    text_from_body,
    usage_from_body,
)
from ..sse import StreamMeter
from .request import PreparedCall

__all__ = [
    "Ending",
    "ResponseMeter",
    "by_estimate",
    "exception_text",
    "failed",
    "from_usage",
    "strip_null_usage",
]

log = logging.getLogger("ledger.metering")

#: A non-stream reply body larger than this is not kept for parsing (charged by estimate).
MAX_BODY_BYTES = 16 << 20
#: An error reply body is read for its message up to this size.
MAX_ERROR_BYTES = 64 << 10
MAX_ERROR_CHARS = 300

Ending = Literal["eof", "closed", "error"]


def failed(error: str, http_status: int | None = None) -> Outcome:
    return Outcome("failed", http_status=http_status, error=error[:MAX_ERROR_CHARS])


def by_estimate(prepared: PreparedCall, completion_tokens: int, *, status: str = "ok",
                prompt_tokens: int | None = None, http_status: int | None = None,
                error: str | None = None) -> Outcome:
    """A charge by estimate: the prompt estimate (or a reported prompt count) + completion."""
    return Outcome(status, prompt_tokens if prompt_tokens is not None else prepared.prompt_tokens,
                   completion_tokens, 0, True, http_status, error)


def from_usage(usage: Usage, http_status: int | None = None,
               text_tokens: Callable[[], int] | None = None) -> Outcome:
    """The outcome of a reported usage; its notes are kept as the call's note. A usage that
    is itself an estimate (``usage.estimated``) is charged at least ``text_tokens()``."""
    completion = usage.completion_tokens
    if usage.estimated and text_tokens is not None:
        completion = max(completion, text_tokens())
    note = "; ".join(usage.notes)[:MAX_ERROR_CHARS] or None
    return Outcome("ok", usage.prompt_tokens, completion, usage.cached_tokens,
                   usage.estimated, http_status, note, usage.reasoning_tokens)


class _Brotli:
    def __init__(self) -> None:
        import brotli

        self._d = brotli.Decompressor()

    def decompress(self, data: bytes) -> bytes:
        out: bytes = self._d.process(data)
        return out


class _Zstd:
    def __init__(self) -> None:
        import zstandard

        self._d = zstandard.ZstdDecompressor().decompressobj()

    def decompress(self, data: bytes) -> bytes:
        out: bytes = self._d.decompress(data)
        return out


def _decoder_for(encoding: str) -> Any:
    """A decoder (``.decompress(bytes) -> bytes``) for a Content-Encoding the ledger reads on
    the side (gzip, deflate, br, zstd: what httpx decodes for the caller), or ``None``."""
    try:
        if encoding in ("gzip", "x-gzip", "deflate"):
            return zlib.decompressobj(47)  # zlib or gzip header, auto-detected
        if encoding == "br":
            return _Brotli()
        if encoding == "zstd":
            return _Zstd()
    except ImportError:  # brotli / zstandard missing: charged by estimate instead
        return None
    return None


def error_from_body(body: bytes, status: int) -> str:
    """``HTTP 429: <the server's message>`` from an error body of either shape."""
    obj = load_object(body) if body else None
    if obj is not None and obj.get("error") is not None:
        return f"HTTP {status}: {error_message(obj['error'])}"
    return f"HTTP {status}"


def exception_text(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_NULL_USAGE = (b',"usage":null', b', "usage": null', b'"usage":null,', b'"usage": null, ')


def strip_null_usage(events: bytes) -> bytes:
    """Remove the ``"usage": null`` field OpenAI adds to every chunk of a stream that asked for
    usage, from whole events, so that a caller who did not ask sees the chunks it would have
    seen. (Quotes inside JSON strings are escaped, so the pattern cannot match content.)"""
    if b'"usage"' not in events:
        return events
    for pattern in _NULL_USAGE:
        events = events.replace(pattern, b"")
    return events


class ResponseMeter:
    """Watches one metered reply go by and decides how the call ended. Pure; never raises.

    ``feed`` returns the bytes to hand to the caller now: the chunk itself, except for an
    OpenAI stream whose usage the ledger asked for, where the usage-only chunk is dropped (see
    :class:`ledger.sse.StreamMeter`). ``finish`` (at the end of the body) returns any held
    bytes. ``outcome`` says how the call is settled, given how the body ended.

    A body with a ``Content-Encoding`` (the transport asks for ``identity``, but a server may
    ignore it) is decoded on the side for gzip/deflate and passed through unchanged; the
    usage-only chunk is then not dropped (bytes cannot be cut out of a compressed stream).
    """

    def __init__(self, prepared: PreparedCall, status: int, content_type: str | None,
                 content_encoding: str | None, count_text: Callable[[str], int]) -> None:
        self.prepared = prepared
        self.status = status
        self._count = count_text
        ctype = (content_type or "").lower()
        self.sse = "event-stream" in ctype or (prepared.request.stream and "json" not in ctype)
        encoding = (content_encoding or "").strip().lower()
        self._decoder: Any = None
        self._undecodable = False
        if encoding and encoding != "identity":
            self._decoder = _decoder_for(encoding)
            self._undecodable = self._decoder is None
        self.success = 200 <= status < 300
        self.drops = (self.sse and self.success and prepared.drop_usage_chunk
                      and self._decoder is None and not self._undecodable)
        self.stream: StreamMeter | None = None
        if self.sse and self.success:
            self.stream = StreamMeter(prepared.shape, drop_usage_chunk=self.drops)
        self._parts: list[bytes] = []
        self._size = 0
        self._limit = MAX_BODY_BYTES if self.success else MAX_ERROR_BYTES
        self._overflow = False

    def feed(self, chunk: bytes) -> bytes:
        try:
            if self._undecodable:
                return chunk
            data = chunk if self._decoder is None else self._decoder.decompress(chunk)
            if self.stream is not None:
                out = self.stream.feed(data)
                return strip_null_usage(out) if self.drops else chunk
            if not self._overflow:
                self._size += len(data)
                if self._size > self._limit:
                    self._overflow = True
                    self._parts.clear()
                else:
                    self._parts.append(data)
        except Exception:  # a bad body is the server's problem, not the caller's
            self._undecodable = True
        return chunk

    def finish(self) -> bytes:
        try:
            if self.stream is not None:
                tail = self.stream.finish()
                return strip_null_usage(tail) if self.drops else b""
        except Exception:
            self._undecodable = True
        return b""

    @property
    def terminal(self) -> bool:
        """The stream has said how it ends (its end event, or an error event): the call can
        be settled now, before the caller reads on (or drops the stream without closing)."""
        stream = self.stream
        return stream is not None and (stream.done or stream.error is not None)

    def _body(self) -> bytes:
        return b"".join(self._parts)

    def _tokens(self, text: str) -> int:
        try:
            return self._count(text) if text else 0
        except Exception:
            return len(text.encode("utf-8", "replace"))

    def outcome(self, ending: Ending, error: str | None = None) -> Outcome:
        """How the call ended: ``eof`` (the whole body came), ``closed`` (the caller closed it
        first) or ``error`` (reading it raised ``error``)."""
        try:
            return self._outcome(ending, error)
        except Exception as exc:  # still never $0 for a success
            log.error("deciding the outcome of %s failed", self.prepared.call_id, exc_info=True)
            if not self.success or ending == "error":
                return failed(error or f"HTTP {self.status}", self.status)
            return by_estimate(self.prepared, 0, http_status=self.status,
                               error=exception_text(exc))

    def _outcome(self, ending: Ending, error: str | None) -> Outcome:
        status = self.status
        if not self.success:
            message = error_from_body(self._body(), status)
            return failed(message if error is None else f"{message}; {error}", status)
        if ending == "error":
            return failed(error or "the response body could not be read", status)
        if self.stream is not None and self._undecodable:
            # A 200 stream the ledger could not read (an unknown Content-Encoding, a corrupt
            # one): the server answered, so never $0 (issue 9 item 10): charge by estimate,
            # the held worst case when the caller read it all (its length is unknown).
            return by_estimate(
                self.prepared,
                self.prepared.max_completion_tokens if ending == "eof" else 0,
                status="ok" if ending == "eof" else "cancelled", http_status=status,
                error="reply could not be decoded: charged by estimate")
        if self.stream is not None:
            meter = self.stream
            if meter.error is not None:
                return failed(f"error event: {meter.error}", status)
            if meter.done:
                if meter.usage is not None:
                    return from_usage(meter.usage, status, lambda: self._tokens(meter.text))
                return by_estimate(self.prepared, self._tokens(meter.text), http_status=status)
            if ending == "eof":
                return failed("the stream ended before its end event", status)
            # The caller closed the stream early: charge what was streamed, by estimate.
            usage = meter.usage
            completion = max(self._tokens(meter.text), usage.completion_tokens if usage else 0)
            return by_estimate(self.prepared, completion, status="cancelled",
                               prompt_tokens=usage.prompt_tokens if usage else None,
                               http_status=status)
        if self.sse:  # an undecodable stream: charge by estimate, never $0
            return by_estimate(self.prepared, 0, status="ok" if ending == "eof" else "cancelled",
                               http_status=status)
        body = b"" if self._overflow or self._undecodable else self._body()
        if ending == "closed":
            # A complete reply was generated but the caller closed it unread: its usage is
            # unknown, so charge what was held (the worst case), flagged.
            return by_estimate(self.prepared, self.prepared.max_completion_tokens,
                               status="cancelled", http_status=status,
                               error="reply closed unread: charged the held worst case")
        usage = usage_from_body(self.prepared.shape, body) if body else None
        if usage is None:
            other: Shape = "anthropic" if self.prepared.shape == "openai" else "openai"
            usage = usage_from_body(other, body) if body else None
        if usage is not None:
            return from_usage(usage, status)
        text = text_from_body(self.prepared.shape, body) if body else ""
        return by_estimate(self.prepared, self._tokens(text), http_status=status)
