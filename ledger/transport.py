"""``MeteredTransport``: every RunAPI call through ``httpx`` or ``httpx2``, sync or async, metered.

One small class implements the transport contract of both packages (``handle_request`` and
``handle_async_request``; ``httpx2`` is an API-identical fork of ``httpx``), so the same object
works in ``httpx.Client``, ``httpx.AsyncClient``, ``httpx2.Client`` and ``httpx2.AsyncClient``.
It wraps another transport (default: the package's ``HTTPTransport`` / ``AsyncHTTPTransport``,
picked from the request's type) and drives a :class:`~ledger.metering.Call` through the
steps of :mod:`ledger.metering` (hold → post | void | expire):

* Which requests are metered, free or refused is :func:`ledger.endpoints.classify`: the
  ``POST`` endpoints ``chat/completions``, ``messages``, ``responses``, ``completions`` and
  ``embeddings`` are metered; other methods, ``models``, ``messages/count_tokens`` and the
  client's ``free_paths`` pass through untouched; any other ``POST`` is answered 400
  ``unmetered_endpoint`` without being sent.
* ``X-Ledger-Project`` is removed from every request. On a metered call it may name the
  client's own project, or one the client allows (``projects=[...]`` or ``projects="*"``);
  any other is answered 400 ``project_not_allowed`` (compared exactly: ``"acme "`` is not
  ``"acme"``).
* ``X-Ledger-User`` and ``X-Ledger-Tags`` are removed from every request too; on a metered
  call they add to the client's ``user=`` / ``tags=`` (:mod:`ledger.metering.attribution`:
  a bad or contradicting value is answered 400 ``ledger_invalid_request``, unsent).
* Before sending: prepare (parse, estimate), then hold. A refusal never reaches the network:
  the caller gets 402 (budget / unknown model), 400 (body cannot be metered) or 503 (database
  down, failing closed) with an error body of its API's shape.
* The request is forwarded with ``Accept-Encoding: identity`` (so the ledger reads the reply
  as it passes) and, for an OpenAI stream that did not ask for usage, with
  ``stream_options.include_usage`` added; the usage-only chunk is then dropped on the way back.
* The response stream is wrapped (the idea of httpx's ``BoundSyncStream`` /
  ``BoundAsyncStream``): bytes reach the caller as they arrive, and one I/O-free
  :class:`~ledger.metering.BodySteps` decides, chunk by chunk, what to pass on and when to
  renew or settle (exactly once, when the body ends, breaks or is closed). The sync and async
  stream classes are thin shells that only carry its decisions out.
* A transport error voids the call and is re-raised unchanged.
* Every metered response says what was held: ``x-ledger-call-id``, ``x-ledger-cost-held``
  (the worst case, an exact decimal), and when a hard budget matches, ``x-ledger-remaining``
  (what the tightest one has left after this hold) and ``x-ledger-budget`` (its label);
  ``x-ledger-max-tokens`` when ``fit="shrink"`` lowered the completion cap (see
  :func:`budget_headers`).

Async drivers never touch the database on the event loop: preparing + holding is one worker
thread hop, settling another (``anyio.to_thread``; shielded from cancellation so a cancelled
task still settles what it used).
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Literal, overload
from urllib.parse import quote

import httpx
import httpx2

from .endpoints import classify, normalise_free_paths
from .errors import (
    BudgetExceeded,
    InvalidInput,
    LedgerError,
    LedgerUnavailable,
    NoBudget,
    ProjectNotAllowed,
    UnknownModel,
    UnmeteredEndpoint,
)
from .metering.attribution import TAGS_HEADER, USER_HEADER, Asked, client_attribution
from .metering.body import RENEW, BodySteps, Todo
from .metering.call import Call, renew_interval
from .metering.meter import HasMeter, Meter
from .metering.refusal import refusal_for
from .metering.reply import ResponseMeter, exception_text, failed
from .metering.request import (
    CALL_ID_HEADER,
    PROJECT_HEADER,
    PreparedCall,
    prepare,
    secrets_of,
)
from .money import from_units, money_str
from .names import check_name
from .records import Hold, Outcome
from .shapes import Shape

__all__ = [
    "MeteredTransport",
    "async_httpx2_client",
    "async_httpx_client",
    "budget_headers",
    "httpx2_client",
    "httpx_client",
]

log = logging.getLogger("ledger.transport")

AnyRequest = httpx.Request | httpx2.Request
AnyResponse = httpx.Response | httpx2.Response


class MeteredTransport(httpx.BaseTransport, httpx.AsyncBaseTransport,
                       httpx2.BaseTransport, httpx2.AsyncBaseTransport):
    """Meter the RunAPI calls a client sends, for ``project`` (see the module docs).

    ``MeteredTransport(book, "acme")`` wraps a default ``HTTPTransport`` of the client's
    package (``httpx`` or ``httpx2``, sync or async, chosen on the first request);
    ``wrapped=`` wraps your own transport instead (it must suit the client it is used in)::

        client = httpx.Client(transport=ledger.MeteredTransport(book, "acme"))

    ``projects=[...]`` lists the other projects a request may name in ``X-Ledger-Project``
    (``"*"``: any); ``free_paths=[...]`` lists POST paths that cost nothing and are passed
    through unmetered (any other unmetered POST is refused). ``user=`` and ``tags=``
    (``{"feature": "search"}`` or ``"feature=search,env=prod"``) attribute every call to an end
    user and tags; per request, ``X-Ledger-User`` / ``X-Ledger-Tags`` add to them.
    """

    def __init__(self, book: HasMeter, project: str, wrapped: Any = None, *,
                 projects: Iterable[str] | Literal["*"] | None = None,
                 free_paths: Iterable[str] | None = None, user: str | None = None,
                 tags: Mapping[str, str] | str | None = None) -> None:
        self.book = book
        self.meter: Meter = book.meter
        self.project = check_name(project, "project")
        self.attribution = client_attribution(user, tags)
        self.projects = _allowed_projects(projects)
        self.free_paths = normalise_free_paths(free_paths)
        self.wrapped = wrapped
        self._defaults: dict[tuple[bool, bool], Any] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<MeteredTransport project={self.project!r} wrapped={self.wrapped!r}>"

    # -- the wrapped transport -------------------------------------------------------------
    def _inner(self, request: AnyRequest, is_async: bool) -> Any:
        if self.wrapped is not None:
            return self.wrapped
        two = isinstance(request, httpx2.Request)
        key = (two, is_async)
        inner = self._defaults.get(key)
        if inner is None:
            with self._lock:
                inner = self._defaults.get(key)
                if inner is None:
                    lib: Any = httpx2 if two else httpx
                    inner = lib.AsyncHTTPTransport() if is_async else lib.HTTPTransport()
                    self._defaults[key] = inner
        return inner

    # -- sync ------------------------------------------------------------------------------
    @overload
    def handle_request(self, request: httpx.Request) -> httpx.Response: ...

    @overload
    def handle_request(self, request: httpx2.Request) -> httpx2.Response: ...

    def handle_request(self, request: AnyRequest) -> AnyResponse:
        inner = self._inner(request, False)
        try:
            shape, project, asked = self._route(request)
        except LedgerError as exc:
            return _refuse(request, _error_shape(request), exc)
        if shape is None:
            response: AnyResponse = inner.handle_request(request)
            return response
        meter = self.meter
        try:
            call = Call(meter, prepare(meter, shape, project, request.read(),
                                       secrets=secrets_of(request.headers),
                                       attribution=self.attribution, asked=asked))
            call.hold()
        except (BudgetExceeded, UnknownModel, NoBudget, LedgerUnavailable, InvalidInput) as exc:
            return _refuse(request, shape, exc)
        forward = _forward_request(request, call.prepared)
        try:
            response = inner.handle_request(forward)
        except BaseException as exc:
            if call.claim():
                call.settle(failed(exception_text(exc)))
            raise
        return _metered_response(response, call, is_async=False)

    def close(self) -> None:
        for inner in self._closables():
            close = getattr(inner, "close", None)
            if close is not None:
                close()

    def __enter__(self) -> MeteredTransport:
        return self

    def __exit__(self, exc_type: type[BaseException] | None = None,
                 exc_value: BaseException | None = None,
                 traceback: TracebackType | None = None) -> None:
        self.close()

    # -- async -----------------------------------------------------------------------------
    @overload
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response: ...

    @overload
    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response: ...

    async def handle_async_request(self, request: AnyRequest) -> AnyResponse:
        import anyio
        import anyio.to_thread

        inner = self._inner(request, True)
        try:
            shape, project, asked = self._route(request)
        except LedgerError as exc:
            return _refuse(request, _error_shape(request), exc)
        if shape is None:
            response: AnyResponse = await inner.handle_async_request(request)
            return response
        body = await request.aread()
        meter = self.meter

        def start() -> Call:
            call = Call(meter, prepare(meter, shape, project, body,
                                       secrets=secrets_of(request.headers),
                                       attribution=self.attribution, asked=asked))
            call.hold()
            return call

        try:
            # Shielded: a task cancelled while its hold is being written still gets the hold
            # back, and the cancellation then lands in the forward below, which voids it.
            with anyio.CancelScope(shield=True):
                call = await anyio.to_thread.run_sync(start)
        except (BudgetExceeded, UnknownModel, NoBudget, LedgerUnavailable, InvalidInput) as exc:
            return _refuse(request, shape, exc)
        forward = _forward_request(request, call.prepared)
        try:
            response = await inner.handle_async_request(forward)
        except BaseException as exc:
            if call.claim():
                outcome = failed(exception_text(exc))
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(call.settle, outcome)
            raise
        return _metered_response(response, call, is_async=True)

    async def aclose(self) -> None:
        for inner in self._closables():
            aclose = getattr(inner, "aclose", None)
            if aclose is not None:
                await aclose()

    async def __aenter__(self) -> MeteredTransport:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None = None,
                        exc_value: BaseException | None = None,
                        traceback: TracebackType | None = None) -> None:
        await self.aclose()

    def _route(self, request: AnyRequest) -> tuple[Shape | None, str, Asked]:
        """The call's shape (``None``: pass through), project and what its headers ask about
        its end user and tags; drops ``X-Ledger-Project``, ``X-Ledger-User`` and
        ``X-Ledger-Tags`` from every request (the upstream never sees them).
        Raises ``UnmeteredEndpoint`` / ``ProjectNotAllowed`` / ``InvalidInput`` (refused)."""
        headers = request.headers
        named = headers.get_list(PROJECT_HEADER)
        if named:
            del headers[PROJECT_HEADER]
        asked = Asked(tuple(headers.get_list(USER_HEADER)), tuple(headers.get_list(TAGS_HEADER)))
        if asked.users:
            del headers[USER_HEADER]
        if asked.tags:
            del headers[TAGS_HEADER]
        raw = request.url.raw_path.decode("ascii", "replace")
        route = classify(request.method, raw, self.free_paths)
        if route.kind == "refused":
            raise UnmeteredEndpoint(route.path)
        if route.kind == "free":
            return None, self.project, asked
        if not named:
            return route.shape, self.project, asked
        if len(named) > 1:
            raise ProjectNotAllowed(", ".join(named), self.project)
        project = named[0]
        if project != self.project and not (
                self.projects == "*" or project in self.projects):
            raise ProjectNotAllowed(project, self.project)
        return route.shape, check_name(project, "project"), asked

    def _closables(self) -> list[Any]:
        if self.wrapped is not None:
            return [self.wrapped]
        with self._lock:
            inners = list(self._defaults.values())
            self._defaults.clear()
        return inners


# -- helpers shared by the sync and async paths (no I/O) ---------------------------------------


def _allowed_projects(projects: Iterable[str] | str | None) -> frozenset[str] | Literal["*"]:
    if projects is None:
        return frozenset()
    if projects == "*":
        return "*"
    if isinstance(projects, str):
        raise InvalidInput('projects must be a list of project names or "*", not one string')
    return frozenset(check_name(p, "project") for p in projects)


def _error_shape(request: AnyRequest) -> Shape:
    """The API shape to answer an unrouted request in: Anthropic if it looks like one."""
    headers = request.headers
    if "anthropic-version" in headers or "x-api-key" in headers:
        return "anthropic"
    return "openai"


def _lib(request: AnyRequest) -> Any:
    return httpx2 if isinstance(request, httpx2.Request) else httpx


def _refuse(request: AnyRequest, shape: Shape, exc: LedgerError) -> AnyResponse:
    refusal = refusal_for(exc)
    response: AnyResponse = _lib(request).Response(
        refusal.status, headers=refusal.headers(), content=refusal.body(shape), request=request)
    return response


def _forward_request(request: AnyRequest, prepared: PreparedCall) -> AnyRequest:
    """The request to send: reads replies uncompressed; the injected body if there is one."""
    request.headers["accept-encoding"] = "identity"
    if prepared.forward_body is None:
        return request
    headers = request.headers.copy()
    headers.pop("content-length", None)
    headers.pop("transfer-encoding", None)
    forward: AnyRequest = _lib(request).Request(
        request.method, request.url, headers=headers, content=prepared.forward_body,
        extensions=request.extensions)
    return forward


def _metered_response(response: AnyResponse, call: Call, *, is_async: bool) -> AnyResponse:
    """Wrap the response stream so the call settles when the body ends or is closed."""
    if response.is_stream_consumed:
        # Built in memory and already read (a mock, a cache, a test double): the client would
        # never pull its body through our stream. Serve the same bytes as a fresh stream.
        lib: Any = httpx2 if isinstance(response, httpx2.Response) else httpx
        response = lib.Response(response.status_code, headers=response.headers,
                                stream=lib.ByteStream(response.content),
                                extensions=response.extensions)
    prepared, meter = call.prepared, call.meter
    estimator = meter.estimator
    reply = ResponseMeter(
        prepared, response.status_code, response.headers.get("content-type"),
        response.headers.get("content-encoding"),
        lambda text: estimator.count_text(prepared.model, text))
    if reply.drops:
        response.headers.pop("content-length", None)
    response.headers[CALL_ID_HEADER] = prepared.call_id
    for name, value in budget_headers(call.held, prepared):
        response.headers[name] = value
    steps = BodySteps(reply, call, renew_interval(meter))
    stream: Any
    if is_async:
        stream = _AsyncMeteredStream(response.stream, steps)
    else:
        stream = _SyncMeteredStream(response.stream, steps)
    # A response dropped unread and unclosed never runs the stream's code: settle it when it
    # is garbage-collected instead of leaving its hold to expire; one still open at
    # interpreter exit is settled by _settle_open_at_exit (issue 9 item 15).
    finalizer = weakref.finalize(stream, _abandoned, steps, id(steps))
    finalizer.atexit = False  # ours runs instead, in this thread: no new thread at exit
    _live[id(steps)] = finalizer  # one dict operation: atomic, no lock (see _abandoned)
    response.stream = stream
    return response


#: Printable ASCII but ``%``: what a header value keeps as it is.
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def header_text(text: str) -> str:
    """``text`` safe in a header value: printable ASCII kept, anything else (and ``%``)
    percent-encoded as UTF-8 (a name may hold any character; a header must not hold a line
    break)."""
    return quote(text, safe=_HEADER_SAFE)


def budget_headers(hold: Hold | None, prepared: PreparedCall) -> list[tuple[str, str]]:
    """The budget signals of a metered response: ``x-ledger-cost-held`` (the hold's worst
    case, an exact decimal), and when a hard budget matched the call, ``x-ledger-remaining``
    (the tightest one's remaining after this hold, an exact decimal, negative never) and
    ``x-ledger-budget`` (its label, percent-encoded outside printable ASCII); plus
    ``x-ledger-max-tokens`` (the completion cap the body was sent with) when ``fit="shrink"``
    lowered it. None when the call was not held (failing open)."""
    if hold is None:
        return []
    out = [("x-ledger-cost-held", money_str(from_units(hold.amount_units)))]
    tightest = hold.tightest
    if tightest is not None:
        out.append(("x-ledger-remaining", money_str(tightest.remaining)))
        out.append(("x-ledger-budget", header_text(tightest.budget.label)))
    if prepared.shrunk_to is not None:
        out.append(("x-ledger-max-tokens", str(prepared.shrunk_to)))
    return out


#: The finalizers of metered responses not yet garbage-collected (settled or not).
#: Plain dict operations only (atomic under the GIL): a lock here could deadlock when the
#: garbage collector runs a finalizer while this thread holds it.
_live: dict[int, weakref.finalize[Any, Any]] = {}


@atexit.register
def _settle_open_at_exit() -> None:
    """At interpreter exit, settle every metered response still open (as when it is garbage
    collected: charged by estimate of what was streamed), synchronously, so no hold is left
    pending for its TTL. Never raises."""
    finalizers = list(_live.values())
    _live.clear()
    for finalizer in finalizers:
        try:
            detached = finalizer.detach()
            if detached is None:
                continue
            steps = detached[2][0]
            if steps.call.claim():
                _settle_abandoned(steps)
        except Exception:
            log.exception("settling an open response at exit failed")


def _abandoned(steps: BodySteps, key: int) -> None:
    """Called by the garbage collector: never raise there, and never touch the database from
    inside it (a lock held by the interrupted code could deadlock) — settle on a thread."""
    try:
        _live.pop(key, None)
        if steps.call.claim():
            threading.Thread(target=_settle_abandoned, args=(steps,),
                             name="ledger-abandoned-stream").start()
    except Exception:
        pass


def _settle_abandoned(steps: BodySteps) -> None:
    try:
        steps.call.settle(steps.meter.outcome("closed"))
    except Exception:
        log.exception("settling an abandoned response failed")


class _SyncMeteredStream(httpx.SyncByteStream, httpx2.SyncByteStream):
    """The response body, passed through as it arrives; a shell around :class:`BodySteps`."""

    def __init__(self, stream: Any, steps: BodySteps) -> None:
        self._stream = stream
        self._steps = steps

    def _do(self, todo: Todo) -> None:
        if isinstance(todo, Outcome):
            self._steps.call.settle(todo)
        elif todo is RENEW:
            self._steps.call.renew()

    def __iter__(self) -> Iterator[bytes]:
        steps = self._steps
        try:
            for chunk in self._stream:
                out, todo = steps.chunk(chunk)
                if todo is not None:
                    self._do(todo)
                if out:
                    yield out
        except GeneratorExit:  # the caller stopped reading and dropped the body unclosed
            self._do(steps.closed())
            raise
        except Exception as exc:
            self._do(steps.error(exc))
            raise
        tail, outcome = steps.end()
        self._do(outcome)
        if tail:
            yield tail

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._do(self._steps.closed())


class _AsyncMeteredStream(httpx.AsyncByteStream, httpx2.AsyncByteStream):
    """The async twin of :class:`_SyncMeteredStream`: the same steps, the I/O in a worker
    thread (shielded, so a cancelled task still settles what it used)."""

    def __init__(self, stream: Any, steps: BodySteps) -> None:
        self._stream = stream
        self._steps = steps

    async def _do(self, todo: Todo) -> None:
        import anyio
        import anyio.to_thread

        if isinstance(todo, Outcome):
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._steps.call.settle, todo)
        elif todo is RENEW:
            await anyio.to_thread.run_sync(self._steps.call.renew)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        steps = self._steps
        try:
            async for chunk in self._stream:
                out, todo = steps.chunk(chunk)
                if todo is not None:
                    await self._do(todo)
                if out:
                    yield out
        except GeneratorExit:  # finalised unclosed (aclose() from the event loop's hook)
            await self._do(steps.closed())
            raise
        except Exception as exc:
            await self._do(steps.error(exc))
            raise
        tail, outcome = steps.end()
        await self._do(outcome)
        if tail:
            yield tail

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            await self._do(self._steps.closed())


# -- ready-made clients ----------------------------------------------------------------------


def httpx_client(book: HasMeter, project: str, **kwargs: Any) -> httpx.Client:
    """An ``httpx.Client(**kwargs)`` whose RunAPI calls are metered for ``project``."""
    client: httpx.Client = _metered_client(httpx.Client, book, project, kwargs)
    return client


def async_httpx_client(book: HasMeter, project: str, **kwargs: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient(**kwargs)`` whose RunAPI calls are metered for ``project``."""
    client: httpx.AsyncClient = _metered_client(httpx.AsyncClient, book, project, kwargs)
    return client


def httpx2_client(book: HasMeter, project: str, **kwargs: Any) -> httpx2.Client:
    """An ``httpx2.Client(**kwargs)`` (the Anthropic SDK's) metered for ``project``."""
    client: httpx2.Client = _metered_client(httpx2.Client, book, project, kwargs)
    return client


def async_httpx2_client(book: HasMeter, project: str, **kwargs: Any) -> httpx2.AsyncClient:
    """An ``httpx2.AsyncClient(**kwargs)`` metered for ``project``."""
    client: httpx2.AsyncClient = _metered_client(httpx2.AsyncClient, book, project, kwargs)
    return client


def _metered_client(cls: Any, book: HasMeter, project: str, kwargs: dict[str, Any]) -> Any:
    """Build the client exactly as its package would (TLS, limits, proxies from the
    environment, mounts), then wrap every transport it routes through, so no route bypasses
    the ledger."""
    def wrap(transport: Any) -> Any:
        if transport is None or isinstance(transport, MeteredTransport):
            return transport
        return MeteredTransport(book, project, transport, projects=projects,
                                free_paths=free_paths, user=user, tags=tags)

    projects = kwargs.pop("projects", None)
    free_paths = kwargs.pop("free_paths", None)
    user = kwargs.pop("user", None)
    tags = kwargs.pop("tags", None)
    # Validates the project name and options before building anything.
    MeteredTransport(book, project, projects=projects, free_paths=free_paths, user=user,
                     tags=tags)
    client = cls(**kwargs)
    client._transport = wrap(client._transport)
    client._mounts = {pattern: wrap(t) for pattern, t in client._mounts.items()}
    return client
