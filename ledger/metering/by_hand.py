"""Metering a call made by any other client (requests, aiohttp, gRPC, a batch job):
:class:`MeteredCall`, the ``with book.metered_call(...)`` block around a
:class:`~ledger.metering.call.Call`.

Entering the block prepares and holds (steps 1-2); ``call.settle(reply)`` fixes the outcome
(step 3: usage read from an OpenAI- or Anthropic-shape reply, or given as token counts);
leaving the block posts or voids the hold with it (step 4).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from decimal import Decimal
from types import TracebackType
from typing import Any

from ..errors import InvalidInput
from ..money import from_units
from ..names import check_name, new_call_id
from ..records import Hold, Outcome
from ..shapes import SHAPES, Shape, Usage, body_bytes, load_object
from ..shapes import anthropic as anthropic_shape
from ..shapes import openai as openai_shape
from .attribution import client_attribution
from .call import Call
from .meter import Meter
from .reply import by_estimate, failed, from_usage
from .request import PreparedCall, guess_shape, prepare

__all__ = ["MeteredCall", "text_of_reply", "usage_of_reply"]


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

    * ``settle`` fixes the outcome (and returns the exact cost at the held price); the hold is
      posted (or voided) with it when the block exits, so ``settle`` never blocks an event loop.
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

    def __init__(self, meter: Meter, project: str,
                 request_body: Mapping[str, Any] | bytes | str, shape: str | None = None, *,
                 user: str | None = None, tags: Mapping[str, str] | str | None = None) -> None:
        check_name(project, "project")
        if shape is not None and shape not in SHAPES:
            raise InvalidInput(f"shape must be 'openai' or 'anthropic', got {shape!r}")
        self.meter = meter
        self.project = project
        #: The end user and tags given (the body's user is read when the block starts).
        self.attribution = client_attribution(user, tags)
        self.call_id = new_call_id()
        self._body = body_bytes(request_body)
        if shape is None:
            obj = request_body if isinstance(request_body, Mapping) else load_object(self._body)
            shape = guess_shape(obj or {})
        self.shape: Shape = "anthropic" if shape == "anthropic" else "openai"
        self.prepared: PreparedCall | None = None
        self._call: Call | None = None
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
        """The completion tokens held (all ``n`` completions): lower than the body asked when
        ``Ledger(fit="shrink")`` lowered it (then send :attr:`request_body`)."""
        return self._prepared().max_completion_tokens

    @property
    def request_body(self) -> dict[str, Any]:
        """The body to send: the caller's, with the completion cap the ledger held written in
        when it differs (the default cap of an uncapped call, or a cap lowered by
        ``fit="shrink"``). Sending it keeps the call within what was held."""
        prepared = self._prepared()
        if prepared.forward_body is not None:
            obj = load_object(prepared.forward_body)
            if obj is not None:
                return obj
        return dict(prepared.request.body)

    @property
    def worst_case(self) -> Decimal | None:
        """The amount held (``None`` when not held: fail-open without a database)."""
        return None if self.hold is None else from_units(self.hold.amount_units)

    def _prepared(self) -> PreparedCall:
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
                tokens = self.meter.estimator.count_text(prepared.model, text) if text else 0
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
        self.prepared = prepare(self.meter, self.shape, self.project, self._body,
                                call_id=self.call_id, attribution=self.attribution)
        self._call = Call(self.meter, self.prepared)
        self.hold = self._call.hold()
        self.prepared = self._call.prepared  # lowered, if fit="shrink" lowered its cap

    def _end(self, exc: BaseException | None) -> None:
        if self._exited or self.prepared is None or self._call is None:
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
        units = self._call.settle(outcome) if self._call.claim() else None
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
