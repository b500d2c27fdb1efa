"""What the proxy sends upstream: the client's request as it came (method, path, query, body
bytes, headers), less what is the client's or the hop's, plus the upstream key and the project
the client's key bills. It goes out through the library's own async ``MeteredTransport``
(``projects="*"``: the project is named per request in ``X-Ledger-Project``), so a call through
the proxy is estimated, held, refused, settled and spooled exactly as one made with
``book.async_httpx_client(...)``: one metering path."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import httpx

from ..metering.attribution import TAGS_HEADER, USER_HEADER, Asked, resolve
from ..metering.meter import Meter
from ..metering.request import PROJECT_HEADER
from ..records import Attribution
from ..store.keys import KeyRow
from ..transport import MeteredTransport

__all__ = ["HOP_BY_HOP", "TimedTransport", "Upstream", "attribution_for", "forward_headers",
           "response_headers"]

#: Never forwarded either way (RFC 9110 section 7.6.1), plus what the HTTP client sets itself.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"})
#: The client's own: its credentials (its ``lk_`` key), its dashboard cookie, the host it
#: called, and the length (the HTTP client sets it from the body it sends).
CLIENT_ONLY = frozenset({"authorization", "x-api-key", "api-key", "cookie", "host",
                         "content-length", PROJECT_HEADER, USER_HEADER, TAGS_HEADER})


def forward_headers(headers: Iterable[tuple[bytes, bytes]], key: KeyRow, upstream_key: str,
                    who: Attribution | None = None) -> list[tuple[bytes, bytes]]:
    """The headers to send upstream (see the module docs), as bytes: the client's exactly as
    they came (a UTF-8 ``x-title: Café`` passes as it is), the project, user and tags of the
    key in UTF-8 (a name may hold any character; httpx reads such a header back as UTF-8)."""
    out: list[tuple[bytes, bytes]] = []
    anthropic_style = False
    for name, value in headers:
        lower = name.lower().decode("latin-1")
        if lower == "x-api-key":
            anthropic_style = True
        if lower in HOP_BY_HOP or lower in CLIENT_ONLY:
            continue
        out.append((name, value))
    secret = upstream_key.encode("utf-8")
    if anthropic_style:
        out.append((b"x-api-key", secret))
    else:
        out.append((b"authorization", b"Bearer " + secret))
    out.append((PROJECT_HEADER.encode(), key.project.encode("utf-8")))
    # Who the call is for (attribution_for), handed to the metered transport the way any
    # client names it per request; the transport removes these before sending upstream.
    who = key.attribution if who is None else who
    if who.user is not None:
        out.append((USER_HEADER.encode(), who.user.encode("utf-8")))
    if who.tags_text is not None:
        out.append((TAGS_HEADER.encode(), who.tags_text.encode("utf-8")))
    return out


def attribution_for(key: KeyRow, users: Sequence[str], tags: Sequence[str]) -> Attribution:
    """Who the call is for: the key's end user and tags, to which the request's
    ``X-Ledger-User`` (for a key made without a user) and ``X-Ledger-Tags`` may add, by the
    library's own rules (:func:`ledger.metering.attribution.resolve`): a header naming another
    user than the key's, or another value for one of its tags, raises ``InvalidInput`` (the
    caller gets 400 and nothing is sent). The key's project is never changed."""
    return resolve(key.attribution, Asked(tuple(users), tuple(tags)))


def response_headers(response: httpx.Response) -> list[tuple[bytes, bytes]]:
    """The upstream response's headers as the client gets them (hop-by-hop ones dropped)."""
    return [(k, v) for k, v in response.headers.raw
            if k.lower().decode("latin-1") not in HOP_BY_HOP]


class TimedTransport(httpx.AsyncBaseTransport):
    """The real upstream transport, timing each call to its response headers (the
    ``upstream`` histogram), which the ``MeteredTransport`` wraps."""

    def __init__(self, inner: httpx.AsyncBaseTransport, observe: Any) -> None:
        self.inner = inner
        self.observe = observe

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        start = time.perf_counter()
        response = await self.inner.handle_async_request(request)
        elapsed = time.perf_counter() - start
        response.extensions["ledger_upstream_seconds"] = elapsed
        self.observe(elapsed)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Metered:
    """What ``MeteredTransport`` is built from: a meter (a ``HasMeter``)."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter


class Upstream:
    """The proxy's one way upstream: the library's ``MeteredTransport`` (for whichever project
    each request names) over a pooled ``httpx`` transport, called directly. An
    ``httpx.AsyncClient`` around it would only add what a proxy must not do or does not need
    (cookies, redirects, auth flows, URL merging): about a tenth of the proxy's time per call."""

    def __init__(self, meter: Meter, base: str, observe_upstream: Any, *,
                 timeout: float = 600.0) -> None:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
        inner = TimedTransport(httpx.AsyncHTTPTransport(limits=limits, trust_env=False),
                               observe_upstream)
        self.transport = MeteredTransport(_Metered(meter), "proxy", inner, projects="*")
        self.base = base.rstrip("/")
        self.timeout = httpx.Timeout(timeout, connect=30.0).as_dict()

    def request(self, method: str, target: str, headers: list[tuple[bytes, bytes]],
                body: bytes) -> httpx.Request:
        """The request for ``target`` (the client's raw path and query) on the upstream."""
        return httpx.Request(method, self.base + target, headers=headers, content=body,
                             extensions={"timeout": self.timeout})

    async def send(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; the response's body is still to be read (a metered stream)."""
        response = await self.transport.handle_async_request(request)
        response.request = request
        return response

    async def aclose(self) -> None:
        await self.transport.aclose()
