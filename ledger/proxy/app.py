"""The proxy as an ASGI app (Starlette): :func:`create_app`.

Routes:

* ``/v1/...`` (any method): the API. The client's ``lk_`` key is checked first (401 in the
  API's shape if it is missing, malformed, wrong or revoked; nothing is sent upstream), the
  body is read up to ``max_body_bytes`` (413 past it), then the request goes upstream through
  the metered client (:mod:`.forward`) for the key's project, and the reply streams back
  (:mod:`.stream`). Refusals of the ledger (402 ``budget_exceeded``...) come from the
  transport exactly as for library users, ``x-ledger-*`` headers included.
* ``GET /healthz``: 200 while the process is up. ``GET /readyz``: 200 when the ledger's
  database answers, else 503.
* ``GET /metrics``: Prometheus text (:mod:`.metrics`).
* ``/dashboard``: the admin page (:mod:`.dashboard`): a login form (the key is kept in an
  HttpOnly, SameSite=Strict cookie) or ``Authorization: Bearer`` with an admin key.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import anyio
import anyio.to_thread
import httpx
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from ..errors import InvalidInput, ProjectNotAllowed
from ..metering.attribution import TAGS_HEADER, USER_HEADER
from ..metering.refusal import refusal_for
from ..metering.request import PROJECT_HEADER
from ..records import Attribution
from ..shapes import Shape
from . import dashboard
from .auth import UNAUTHORIZED, KeyChecker, api_error, error_shape, presented_key
from .forward import Upstream, attribution_for, forward_headers
from .metrics import CONTENT_TYPE_LATEST, Metrics, ObservedStore
from .stream import UpstreamResponse

if TYPE_CHECKING:
    from ..core import Ledger
    from ..store.keys import KeyRow

__all__ = ["DEFAULT_MAX_BODY", "ProxySettings", "app_from_env", "create_app"]

log = logging.getLogger("ledger.proxy")
DEFAULT_MAX_BODY = 10 * 1024 * 1024
DEFAULT_UPSTREAM = "https://runapi.ai"
COOKIE = "ledger_dashboard_key"
#: Environment variables ``ledger serve`` hands its worker processes.
ENV_UPSTREAM = "LEDGER_PROXY_UPSTREAM"
ENV_MAX_BODY = "LEDGER_PROXY_MAX_BODY_BYTES"
ENV_KEY_FILE = "LEDGER_PROXY_UPSTREAM_KEY_FILE"
UPSTREAM_KEY_ENV = "RUNAPI_API_KEY"

SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


@dataclass(frozen=True)
class ProxySettings:
    upstream: str = DEFAULT_UPSTREAM
    upstream_key: str = dataclasses.field(default="", repr=False)
    max_body_bytes: int = DEFAULT_MAX_BODY


def read_upstream_key(key_file: str | None) -> str:
    """The upstream RunAPI key: from ``key_file`` if given, else ``$RUNAPI_API_KEY``."""
    if key_file:
        with open(key_file, encoding="utf-8") as fh:
            value = fh.read().strip()
        if not value:
            raise InvalidInput(f"the upstream key file {key_file} is empty")
        return value
    value = os.environ.get(UPSTREAM_KEY_ENV, "").strip()
    if not value:
        raise InvalidInput(f"the proxy needs the upstream RunAPI key: set ${UPSTREAM_KEY_ENV} "
                           "or give --upstream-key-file FILE")
    return value


def app_from_env() -> Starlette:
    """The app of one ``ledger serve`` worker, configured from the environment (uvicorn
    factory)."""
    from ..core import Ledger

    settings = ProxySettings(
        upstream=os.environ.get(ENV_UPSTREAM, DEFAULT_UPSTREAM),
        upstream_key=read_upstream_key(os.environ.get(ENV_KEY_FILE) or None),
        max_body_bytes=int(os.environ.get(ENV_MAX_BODY, DEFAULT_MAX_BODY)))
    return create_app(Ledger(), settings, owns_ledger=True)


def _static(name: str) -> bytes:
    return resources.files("ledger.proxy").joinpath("static", name).read_bytes()


def create_app(book: Ledger, settings: ProxySettings, *, owns_ledger: bool = False) -> Starlette:
    """The proxy app over ``book`` (see the module docs)."""
    if not settings.upstream_key:
        raise InvalidInput("the proxy needs an upstream key")
    metrics = Metrics(lambda: len(book.spool.entries()) if book.spool.exists() else 0)
    meter = dataclasses.replace(book.meter, store=ObservedStore(book.store, metrics))
    checker = KeyChecker(book.store, book.now)
    limit = settings.max_body_bytes
    pages = {name: _static(name) for name in ("dashboard.html", "login.html", "dashboard.js",
                                              "dashboard.css")}
    holder: dict[str, Upstream] = {}
    # A key check is one primary-key read. On SQLite (WAL) a read never waits for a writer,
    # so it runs on the event loop: a worker-thread hop costs more than the read. On
    # PostgreSQL it is a network round trip: a worker thread, so the loop never waits on it.
    inline_reads = book.engine.dialect.name == "sqlite"

    async def check_key(presented: str | None) -> KeyRow | None:
        if not inline_reads:
            return await anyio.to_thread.run_sync(checker.check, presented)
        row = checker.verify(presented)
        if row is not None and checker.touch_due(row):  # a write may wait: a worker thread
            await anyio.to_thread.run_sync(checker.touch, row)
        return row

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        holder["client"] = Upstream(meter, settings.upstream, metrics.upstream.observe)
        try:
            yield
        finally:
            await holder.pop("client").aclose()
            if owns_ledger:
                book.close()

    def refuse(shape: Shape, status: int, kind: str, code: str, message: str,
               extra: dict[str, str] | None = None) -> Response:
        metrics.refusals.labels(code).inc()
        headers = {"x-ledger-refused": code, "x-should-retry": "false", **(extra or {})}
        return Response(api_error(shape, status, kind, code, message), status,
                        headers=headers, media_type="application/json")

    def unauthorized(shape: Shape) -> Response:
        kind, code = UNAUTHORIZED[shape]
        return refuse(shape, 401, kind, code,
                      "runapi-ledger proxy: missing, malformed, unknown or revoked key (give "
                      "your lk_ key as the API key)", {"www-authenticate": "Bearer"})

    def too_large(shape: Shape) -> Response:
        return refuse(shape, 413, "invalid_request_error", "body_too_large",
                      f"runapi-ledger proxy: the request body is over {limit} bytes")

    async def api(request: Request) -> Response:
        start = time.perf_counter()
        shape = error_shape(request.url.path)
        declared = request.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            return too_large(shape)
        key = await check_key(presented_key(request.headers))
        if key is None:
            return unauthorized(shape)
        try:
            for named in request.headers.getlist(PROJECT_HEADER):
                if named != key.project:
                    raise ProjectNotAllowed(named, key.project)
            who = attribution_for(key, request.headers.getlist(USER_HEADER),
                                  request.headers.getlist(TAGS_HEADER))
        except (ProjectNotAllowed, InvalidInput) as exc:
            refusal = refusal_for(exc)
            return refuse(shape, refusal.status, refusal.type, refusal.code, refusal.message)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return too_large(shape)
        return await forward(request, key, who, bytes(body), shape, start)

    async def forward(request: Request, key: KeyRow, who: Attribution, body: bytes,
                      shape: Shape, start: float) -> Response:
        client = holder["client"]
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        target = raw_path.decode("latin-1")
        query = request.scope.get("query_string") or b""
        if query:
            target += "?" + query.decode("latin-1")
        headers = forward_headers(request.headers.raw, key, settings.upstream_key, who)
        outgoing = client.request(request.method, target, headers, body)
        metrics.in_flight.inc()
        try:
            upstream = await client.send(outgoing)
        except httpx.HTTPError as exc:
            metrics.in_flight.dec()
            log.warning("upstream call failed: %s", type(exc).__name__)
            return refuse(shape, 502, "api_error", "upstream_unreachable",
                          f"runapi-ledger proxy: the upstream did not answer "
                          f"({type(exc).__name__})")
        except BaseException:
            metrics.in_flight.dec()
            raise
        upstream_seconds = upstream.extensions.get("ledger_upstream_seconds")
        if upstream_seconds is not None:
            metrics.overhead.observe(max(0.0, time.perf_counter() - start - upstream_seconds))
        refused = upstream.headers.get("x-ledger-refused")
        if refused:
            metrics.refusals.labels(refused).inc()
        return UpstreamResponse(upstream, metrics.in_flight.dec, settings.upstream_key)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        def ping() -> None:
            with book.engine.connect() as conn:
                conn.execute(text("SELECT 1"))

        try:
            await anyio.to_thread.run_sync(ping)
        except Exception as exc:
            return JSONResponse({"status": "unavailable", "reason": type(exc).__name__}, 503)
        return JSONResponse({"status": "ok"})

    async def metrics_page(_request: Request) -> Response:
        data = await anyio.to_thread.run_sync(metrics.exposition)
        return Response(data, headers={"content-type": CONTENT_TYPE_LATEST})

    # -- the dashboard ------------------------------------------------------------------------
    async def admin_of(request: Request) -> KeyRow | bool | None:
        """The admin key of this request; None: no valid key; False: a valid non-admin key."""
        presented = None
        auth = request.headers.get("authorization")
        if auth:
            presented = presented_key({"authorization": auth})
        if presented is None:
            presented = request.cookies.get(COOKIE)
        if not presented:
            return None
        row = await check_key(presented)
        if row is None:
            return None
        return row if row.admin else False

    def page(name: str, status: int = 200, media: str = "text/html; charset=utf-8") -> Response:
        return Response(pages[name], status, headers=SECURITY_HEADERS, media_type=media)

    async def dashboard_page(request: Request) -> Response:
        who = await admin_of(request)
        if who is None:
            return page("login.html", 401)
        if who is False:
            return forbidden()
        return page("dashboard.html")

    def forbidden() -> Response:
        metrics.refusals.labels("not_admin").inc()
        return PlainTextResponse("403: this key is not an admin key (ledger key create ... "
                                 "--admin)", 403, headers=SECURITY_HEADERS)

    async def login(request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > 4096:  # a key is 63 characters
                return too_large("openai")
        form = parse_qs(body.decode("utf-8", "replace"))
        presented = (form.get("key") or [""])[0].strip()
        row = await check_key(presented or None)
        if row is None:
            metrics.refusals.labels("unauthorized").inc()
            return page("login.html", 401)
        if not row.admin:
            return forbidden()
        response = RedirectResponse("/dashboard", 303, headers=SECURITY_HEADERS)
        response.set_cookie(COOKIE, presented, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/dashboard")
        return response

    async def logout(_request: Request) -> Response:
        response = RedirectResponse("/dashboard", 303, headers=SECURITY_HEADERS)
        response.delete_cookie(COOKIE, path="/dashboard", httponly=True, samesite="strict")
        return response

    async def dashboard_state(request: Request) -> Response:
        who = await admin_of(request)
        if who is None:
            return JSONResponse({"error": "unauthorized"}, 401, headers=SECURITY_HEADERS)
        if who is False:
            return JSONResponse({"error": "not an admin key"}, 403, headers=SECURITY_HEADERS)
        data = await anyio.to_thread.run_sync(dashboard.state, book)
        return Response(json.dumps(data), headers=SECURITY_HEADERS,
                        media_type="application/json")

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        media = {"dashboard.js": "text/javascript; charset=utf-8",
                 "dashboard.css": "text/css; charset=utf-8"}.get(name)
        if media is None:
            return PlainTextResponse("not found", 404)
        return page(name, media=media)

    async def not_found(request: Request) -> Response:
        shape = error_shape(request.url.path)
        return Response(api_error(shape, 404, "not_found_error", "not_found",
                                  "runapi-ledger proxy: no such route (the API is under /v1)"),
                        404, media_type="application/json")

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    routes = [
        Route("/v1/{path:path}", api, methods=methods),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_page, methods=["GET"]),
        Route("/dashboard", dashboard_page, methods=["GET"]),
        Route("/dashboard/login", login, methods=["POST"]),
        Route("/dashboard/logout", logout, methods=["POST"]),
        Route("/dashboard/state", dashboard_state, methods=["GET"]),
        Route("/dashboard/static/{name}", asset, methods=["GET"]),
        Route("/{path:path}", not_found, methods=methods),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.book = book
    app.state.metrics = metrics
    return app


