"""The life of one metered call, written once for every driver.

Every metered call takes the same path, whoever drives it (the sync and async transports of
``httpx`` and ``httpx2`` in :mod:`ledger.transport`, or :class:`MeteredCall` for any other
client)::

    prepare (pure: parse, estimate, choose the project, ask for stream usage)
      -> begin (I/O: hold the worst case; refused -> BudgetExceeded / UnknownModel)
      -> forward (the driver's job)
      -> ResponseMeter (pure: watches the reply's bytes go by, decides the Outcome)
      -> finish (I/O: settle or void; a failing database -> the spool; never raises)

The pure parts decide everything; :func:`begin` and :func:`finish` are the only I/O, plain
sync functions that async drivers run in a worker thread.

Decisions kept here:

* **Which project:** the ``X-Ledger-Project`` request header if present (the transport removes
  it before forwarding), else the client's project.
* **Refusals** are answered by the transports as an HTTP error in the caller's API shape
  (:class:`Refusal`): 402 ``budget_exceeded`` when the hold does not fit (code
  ``budget_exceeded``) or the model has no price (code ``unknown_model``: its cost cannot be
  bounded, so no budget can admit it); 400 when the body cannot be metered (not JSON, no
  model); 503 ``ledger_unavailable`` when the database cannot be reached before the call and
  the ledger fails closed. The 402 and 400 carry ``x-should-retry: false``.
* **Outcomes** (:meth:`ResponseMeter.outcome`): HTTP status >= 400 (or any other non-2xx,
  e.g. a redirect, which is not a completion), a transport error, an
  error event or a stream that ends without its end event -> ``failed`` (cost zero, status and
  error kept). A complete reply -> ``ok`` at the reported usage; without readable usage,
  ``ok`` charged by estimate (prompt estimate + tokens of the returned text), flagged
  ``estimated``. A stream closed by the caller before its end -> ``cancelled``, charged by
  estimate of what was streamed, flagged.
* **Privacy:** nothing here keeps headers, API keys, prompts or completions; outcomes carry
  only token counts, the HTTP status and a short error message.
"""

from __future__ import annotations

import json
import logging
import warnings
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from .errors import BudgetExceeded, InvalidInput, LedgerError, LedgerUnavailable, UnknownModel
from .faults import fault_point
from .money import from_units, money_str
from .shapes import (
    SHAPES,
    CallRequest,
    Shape,
    Usage,
    body_bytes,
    body_to_forward,
    error_message,
    load_object,
    parse_request,
    text_from_body,
    usage_from_body,
)
from .shapes import anthropic as anthropic_shape
from .shapes import openai as openai_shape
from .sse import StreamMeter
from .store.ops import Hold, Outcome

if TYPE_CHECKING:
    from .core import Ledger

__all__ = [
    "CALL_ID_HEADER",
    "PROJECT_HEADER",
    "MeteredCall",
    "Prepared",
    "Refusal",
    "ResponseMeter",
    "begin",
    "finish",
    "guess_shape",
    "prepare",
    "redact",
    "refusal_for",
    "secrets_of",
]

log = logging.getLogger("ledger.metering")

#: Request header that overrides the client's project for one call (removed before forwarding).
PROJECT_HEADER = "x-ledger-project"
#: Response header carrying the ledger's id of a metered call.
CALL_ID_HEADER = "x-ledger-call-id"
#: A non-stream reply body larger than this is not kept for parsing (charged by estimate).
MAX_BODY_BYTES = 16 << 20
#: An error reply body is read for its message up to this size.
MAX_ERROR_BYTES = 64 << 10
MAX_ERROR_CHARS = 300

Ending = Literal["eof", "closed", "error"]


# -- preparing a call (pure) ------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """A call ready to hold: who pays, what it is, its estimate, and what to forward."""

    call_id: str
    project: str
    shape: Shape
    model: str
    request: CallRequest
    prompt_tokens: int
    max_completion_tokens: int
    capped_by_default: bool
    started: datetime
    #: The body to send instead of the caller's (``include_usage`` injected), or ``None``.
    forward_body: bytes | None = None
    #: The ledger asked for stream usage: drop the usage-only chunk the caller never asked for.
    drop_usage_chunk: bool = False
    #: The request's credentials (see :func:`secrets_of`): blanked out of any error text a
    #: server echoes them in, before the outcome is stored or spooled.
    secrets: tuple[str, ...] = field(default=(), repr=False)


#: Request headers whose values are credentials.
SECRET_HEADERS = ("authorization", "proxy-authorization", "x-api-key", "api-key")
REDACTED = "[REDACTED]"


def secrets_of(headers: Mapping[str, str]) -> tuple[str, ...]:
    """The credentials in request headers (whole values, and the token after a scheme such
    as ``Bearer``), longest first; values shorter than 8 characters are not worth hiding."""
    found: set[str] = set()
    for name in SECRET_HEADERS:
        value = headers.get(name)
        if value:
            found.add(value.strip())
            found.add(value.strip().split(" ", 1)[-1].strip())
    return tuple(sorted((v for v in found if len(v) >= 8), key=len, reverse=True))


def redact(outcome: Outcome, secrets: tuple[str, ...]) -> Outcome:
    """The outcome with every secret blanked out of its error text."""
    error = outcome.error
    if not error or not secrets:
        return outcome
    for secret in secrets:
        error = error.replace(secret, REDACTED)
    return outcome if error == outcome.error else replace(outcome, error=error)


def prepare(book: Ledger, shape: Shape, project: str, body: bytes, *,
            call_id: str | None = None, secrets: tuple[str, ...] = ()) -> Prepared:
    """Parse and estimate a request body; raises :class:`InvalidInput` if it cannot be metered.

    CPU only (JSON and the tokenizer); the started time comes from the ledger's clock.
    """
    from .core import check_name, new_call_id

    check_name(project, "project")
    request = parse_request(shape, body)
    if request.model is None:
        raise InvalidInput(f'the {shape} request body has no "model" (a string)')
    check_name(request.model, "model")
    tokens = book.estimator.estimate(request)
    cap = book.default_max_tokens if tokens.capped_by_default and book.send_default_cap else None
    forward_body, injected = body_to_forward(request, cap)
    return Prepared(
        call_id=call_id or new_call_id(), project=project, shape=shape, model=request.model,
        request=request, prompt_tokens=tokens.prompt_tokens,
        max_completion_tokens=tokens.max_completion_tokens,
        capped_by_default=tokens.capped_by_default, started=book.now(),
        forward_body=forward_body, drop_usage_chunk=injected, secrets=secrets,
    )


def guess_shape(body: Mapping[str, Any]) -> Shape:
    """The API shape of a request body given without one: Anthropic if it has a field only
    Anthropic's Messages API uses (``system``, ``stop_sequences``, ``top_k``,
    ``anthropic_version``, ``thinking``), else OpenAI."""
    for key in ("system", "stop_sequences", "top_k", "anthropic_version", "thinking"):
        if key in body:
            return "anthropic"
    return "openai"


# -- refusals (pure) --------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """A call the ledger answers itself, without sending it: an HTTP error in the API's shape."""

    status: int
    type: str
    code: str
    message: str
    details: Mapping[str, str] = field(default_factory=dict)
    retry: bool = False

    def body(self, shape: Shape) -> bytes:
        """The JSON error body: OpenAI ``{"error": {message, type, code, ...}}``, Anthropic
        ``{"type": "error", "error": {type, message, ...}}``; details are extra fields."""
        if shape == "anthropic":
            payload: dict[str, Any] = {
                "type": "error",
                "error": {"type": self.type, "message": self.message, "code": self.code,
                          **self.details},
            }
        else:
            payload = {"error": {"message": self.message, "type": self.type, "param": None,
                                 "code": self.code, **self.details}}
        return json.dumps(payload, separators=(",", ":")).encode()

    def headers(self) -> list[tuple[str, str]]:
        out = [("content-type", "application/json"), ("x-ledger-refused", self.code)]
        out.append(("x-should-retry", "true" if self.retry else "false"))
        if self.retry:
            out.append(("retry-after", "1"))
        return out


REFUSED = "runapi-ledger refused this call before sending it"


def refusal_for(exc: LedgerError) -> Refusal:
    """The HTTP answer to a call refused before sending it (see the module docs)."""
    if isinstance(exc, BudgetExceeded):
        return Refusal(402, "budget_exceeded", "budget_exceeded", f"{REFUSED}: {exc}", {
            "project": exc.project, "month": exc.month, "limit": money_str(exc.limit),
            "spent": money_str(exc.spent), "held": money_str(exc.held),
            "worst_case": money_str(exc.requested),
        })
    if isinstance(exc, UnknownModel):
        return Refusal(402, "budget_exceeded", "unknown_model", f"{REFUSED}: {exc}",
                       {"model": exc.model})
    if isinstance(exc, LedgerUnavailable):
        return Refusal(
            503, "ledger_unavailable", "ledger_unavailable",
            f"{REFUSED}: its database cannot be reached and hard budgets fail closed ({exc}). "
            "Ledger(..., fail_open=True) lets calls through unmetered (their usage is spooled).",
            retry=True,
        )
    return Refusal(400, "invalid_request_error", "ledger_invalid_request",
                   f"runapi-ledger cannot meter this request, so it was not sent: {exc}")


# -- the I/O ends (sync; async drivers run them in a worker thread) ---------------------------


def begin(book: Ledger, prepared: Prepared) -> Hold | None:
    """Hold the call's worst case. Returns the hold, or ``None`` when the database is down and
    the ledger fails open (the call goes through unmetered; :func:`finish` spools it).

    Raises ``BudgetExceeded`` / ``UnknownModel`` after recording the refusal, and
    ``LedgerUnavailable`` when the database is down and the ledger fails closed.
    """
    p = prepared
    fault_point("call:before-hold")
    try:
        hold = book.store.hold(p.call_id, p.project, p.model, p.prompt_tokens,
                               p.max_completion_tokens, p.started, book.hold_ttl)
    except (BudgetExceeded, UnknownModel) as exc:
        try:
            book.store.record_refused(p.call_id, p.project, p.model, p.started, book.now(),
                                      str(exc), p.prompt_tokens)
        except LedgerError:  # the refusal stands even if it cannot be written down
            log.warning("could not record refused call %s", p.call_id, exc_info=True)
        raise
    except LedgerUnavailable:
        if book.fail_open:
            log.warning("ledger database unavailable; call %s goes through unmetered (fail_open)",
                        p.call_id, exc_info=True)
            return None
        raise
    fault_point("call:after-hold")
    return hold


def finish(book: Ledger, prepared: Prepared, outcome: Outcome) -> int | None:
    """Settle or void the call; returns its cost in units, or ``None`` if it went to the spool.

    Never raises: the caller already has (or is getting) its response. A database failure
    appends the outcome to the spool, replayed exactly once later; a call with no hold (fail
    open) is priced at replay from its model and start time.
    """
    p = prepared
    fault_point("call:after-response")
    outcome = redact(outcome, p.secrets)
    try:
        cost = book.store.settle(p.call_id, outcome, book.now(),
                                 fallback=(p.project, p.model, p.started))
    except Exception as exc:  # whatever the database did, keep the usage
        if not isinstance(exc, LedgerUnavailable):
            log.error("settling call %s failed; spooling it", p.call_id, exc_info=True)
        try:
            book.spool.append(p.call_id, p.project, p.model, p.started, outcome)
        except Exception:  # the last resort: say so loudly, never break the caller
            log.critical("call %s could not be settled nor spooled: %r", p.call_id, outcome,
                         exc_info=True)
        return None
    book.replay_if_spooled()  # the database answers again: count what waited in the spool
    return cost


# -- outcomes (pure) --------------------------------------------------------------------------


def failed(error: str, http_status: int | None = None) -> Outcome:
    return Outcome("failed", http_status=http_status, error=error[:MAX_ERROR_CHARS])


def by_estimate(prepared: Prepared, completion_tokens: int, *, status: str = "ok",
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

    def __init__(self, prepared: Prepared, status: int, content_type: str | None,
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
            if encoding in ("gzip", "x-gzip", "deflate"):
                self._decoder = zlib.decompressobj(47)  # zlib or gzip header, auto-detected
            else:
                self._undecodable = True
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


# -- MeteredCall: metering a call made by any other client ------------------------------------


def _reply_object(reply: object) -> Mapping[str, Any] | None:
    """A reply as a JSON object: a mapping, JSON bytes/str, or an SDK model (``model_dump``)."""
    if isinstance(reply, Mapping):
        return reply
    if isinstance(reply, (bytes, bytearray, str)):
        return load_object(bytes(reply) if not isinstance(reply, str) else reply)
    dump = getattr(reply, "model_dump", None)
    if callable(dump):
        try:
            value = dump()
        except Exception:
            return None
        return value if isinstance(value, Mapping) else None
    raise TypeError(
        f"reply must be a mapping, JSON bytes/str or an SDK response, not {type(reply).__name__}")


def usage_of_reply(shape: Shape, obj: Mapping[str, Any]) -> Usage | None:
    """The usage of a reply object, read in ``shape`` first, then in the other shape."""
    modules = (openai_shape, anthropic_shape) if shape == "openai" else (anthropic_shape,
                                                                          openai_shape)
    for module in modules:
        try:
            usage: Usage | None = module.usage_from_object(obj)
        except Exception:  # a reply is untrusted
            usage = None
        if usage is not None:
            return usage
    return None


def text_of_reply(shape: Shape, obj: Mapping[str, Any]) -> str:
    modules = (openai_shape, anthropic_shape) if shape == "openai" else (anthropic_shape,
                                                                          openai_shape)
    for module in modules:
        try:
            text: str = module.text_from_object(obj)
        except Exception:
            text = ""
        if text:
            return text
    return ""


class MeteredCall:
    """A call made by any client, metered by hand: ``Ledger.metered_call(project, body)``.

    ::

        with book.metered_call("acme", body) as call:   # estimate + hold (BudgetExceeded)
            reply = my_client.post(...).json()
            call.settle(reply)                           # or settle(prompt_tokens=..., ...)

    ``async with`` works the same; the database work then runs in a worker thread.

    * ``settle`` only decides the outcome (and returns the exact cost at the held price); the
      ledger is written when the block exits, so ``settle`` never blocks an event loop.
    * An exception inside the block before ``settle`` voids the hold (cost zero, recorded as
      failed with the exception's type name) and propagates. After ``settle``, the settled
      usage stands (the call did happen) and the exception propagates.
    * Leaving the block normally **without settling** charges the hold's worst case (prompt
      estimate + the completion cap), flagged ``estimated``, and warns (``RuntimeWarning``).
      The call most likely happened and was billed by RunAPI; charging the amount that was
      reserved never under-bills and never pushes a hard budget past its limit, and it shows
      up (estimated, with a note) instead of silently costing $0.
    * If the database is down at the start, ``LedgerUnavailable`` is raised, unless the ledger
      fails open: then the call is not held, ``settle`` returns ``None`` and the usage is
      spooled (or recorded, if the database is back) at exit.
    """

    def __init__(self, book: Ledger, project: str, request_body: Mapping[str, Any] | bytes | str,
                 shape: str | None = None) -> None:
        from .core import check_name, new_call_id

        check_name(project, "project")
        if shape is not None and shape not in SHAPES:
            raise InvalidInput(f"shape must be 'openai' or 'anthropic', got {shape!r}")
        self.book = book
        self.project = project
        self.call_id = new_call_id()
        self._body = body_bytes(request_body)
        if shape is None:
            obj = request_body if isinstance(request_body, Mapping) else load_object(self._body)
            shape = guess_shape(obj or {})
        self.shape: Shape = "anthropic" if shape == "anthropic" else "openai"
        self.prepared: Prepared | None = None
        self.hold: Hold | None = None
        self._outcome: Outcome | None = None
        self._entered = False
        self._exited = False
        #: The recorded cost after the block exits (``None`` while open, or if spooled).
        self.cost: Decimal | None = None

    # -- what the call is -----------------------------------------------------------------
    @property
    def model(self) -> str:
        return self._prepared().model

    @property
    def prompt_tokens(self) -> int:
        """The estimated prompt tokens."""
        return self._prepared().prompt_tokens

    @property
    def max_completion_tokens(self) -> int:
        return self._prepared().max_completion_tokens

    @property
    def worst_case(self) -> Decimal | None:
        """The amount held (``None`` when not held: fail-open without a database)."""
        return None if self.hold is None else from_units(self.hold.amount_units)

    def _prepared(self) -> Prepared:
        if self.prepared is None:
            raise InvalidInput("the metered call has not started: use it in a with block")
        return self.prepared

    # -- the outcome ----------------------------------------------------------------------
    def settle(self, reply: object = None, /, *, prompt_tokens: int | None = None,
               completion_tokens: int | None = None, cached_tokens: int = 0) -> Decimal | None:
        """Settle from a reply (usage read from an OpenAI- or Anthropic-shape body, a dict,
        JSON bytes or an SDK response object) or from token counts. Returns the exact cost
        at the held price (``None`` when the call is not held). A reply without readable
        usage is charged by estimate (prompt estimate + tokens of its text), flagged.
        """
        prepared = self._prepared()
        if self._outcome is not None or self._exited:
            raise InvalidInput(f"call {self.call_id} is already settled")
        if reply is not None:
            if prompt_tokens is not None or completion_tokens is not None or cached_tokens:
                raise InvalidInput("give a reply or token counts, not both")
            obj = _reply_object(reply)
            usage = None if obj is None else usage_of_reply(self.shape, obj)
            if usage is not None:
                outcome = from_usage(usage)
            else:
                text = "" if obj is None else text_of_reply(self.shape, obj)
                tokens = self.book.estimator.count_text(prepared.model, text) if text else 0
                outcome = by_estimate(prepared, tokens)
        else:
            if prompt_tokens is None or completion_tokens is None:
                raise InvalidInput("settle needs a reply, or prompt_tokens and completion_tokens")
            outcome = from_usage(Usage(prompt_tokens, completion_tokens, cached_tokens))
        self._outcome = outcome
        if self.hold is None:
            return None
        return from_units(self.hold.price.cost_units(
            outcome.prompt_tokens, outcome.completion_tokens, outcome.cached_tokens))

    def void(self, error: str | None = None, *, http_status: int | None = None) -> None:
        """The call failed: it costs zero and is recorded as failed."""
        self._prepared()
        if self._outcome is not None or self._exited:
            raise InvalidInput(f"call {self.call_id} is already settled")
        self._outcome = failed(error or "voided", http_status)

    # -- the block ------------------------------------------------------------------------
    def _begin(self) -> None:
        if self._entered:
            raise InvalidInput("a metered call can be entered only once")
        self._entered = True
        self.prepared = prepare(self.book, self.shape, self.project, self._body,
                                call_id=self.call_id)
        self.hold = begin(self.book, self.prepared)

    def _end(self, exc: BaseException | None) -> None:
        if self._exited or self.prepared is None:
            return
        self._exited = True
        outcome = self._outcome
        if outcome is None:
            if exc is not None:
                outcome = failed(f"exception in the metered block: {type(exc).__name__}")
            else:
                warnings.warn(
                    f"metered call {self.call_id} ({self.project}, {self.prepared.model}) left "
                    "its block without settle(): charged the held worst case, flagged estimated",
                    RuntimeWarning, stacklevel=3)
                outcome = by_estimate(self.prepared, self.prepared.max_completion_tokens,
                                      error="not settled: charged the held worst case")
        self._outcome = outcome
        units = finish(self.book, self.prepared, outcome)
        self.cost = None if units is None else from_units(units)

    def __enter__(self) -> MeteredCall:
        self._begin()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._end(exc)

    async def __aenter__(self) -> MeteredCall:
        import anyio.to_thread

        await anyio.to_thread.run_sync(self._begin)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        import anyio
        import anyio.to_thread

        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._end, exc)

    def __repr__(self) -> str:
        return f"<MeteredCall {self.call_id} project={self.project!r} shape={self.shape}>"
