"""The reply, passed to the client as it arrives: :class:`UpstreamResponse`.

The body bytes are the metered stream's (``aiter_raw``: no decoding, no re-chunking). For a
stream, a watcher waits for the client to go away meanwhile; when it does, the copy stops at once (not at
the next chunk), and in every case, end, error, disconnect or a shutdown that cancels the
request, the upstream response is closed under a shield: closing the metered stream ends the
upstream call and settles it (a call cut short is charged by estimate of what streamed, as
``cancelled``). An error reply is read whole instead, so that the upstream key can be blanked
out of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import anyio
import httpx
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .forward import response_headers

__all__ = ["UpstreamResponse"]


def _is_stream(response: httpx.Response) -> bool:
    """A reply that may take long (server-sent events, or no length given): watched for the
    client going away. A JSON body with its length comes at once and is copied without."""
    kind = response.headers.get("content-type", "")
    return "text/event-stream" in kind or "content-length" not in response.headers


def _declared_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


async def _copy_whole(upstream: httpx.Response, chunks: AsyncIterator[bytes], send: Send) -> None:
    """Copy a body of known length; its last byte completes the ASGI response at once, so
    the server takes the client's next request on that connection while the metered stream
    settles this call (it does so when the body ends: the loop pulls on until then) instead
    of after."""
    expected = _declared_length(upstream)
    sent, complete = 0, False
    async for chunk in chunks:
        sent += len(chunk)
        if not complete:
            complete = expected is not None and sent >= expected
            await send({"type": "http.response.body", "body": chunk, "more_body": not complete})
    if not complete:
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class UpstreamResponse(Response):
    """Streams an ``httpx`` response (opened with ``stream=True``) to the ASGI client."""

    def __init__(self, upstream: httpx.Response, done: Callable[[], None],
                 secret: str) -> None:
        self.upstream = upstream
        self.status_code = upstream.status_code
        self.background = None
        self._done = done
        self._secret = secret.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.upstream.is_error:
            await self._error(send)
            return
        upstream = self.upstream
        chunks = upstream.aiter_raw()
        try:
            await send({"type": "http.response.start", "status": upstream.status_code,
                        "headers": response_headers(upstream)})
            if not _is_stream(upstream):  # a whole JSON body: it comes at once
                await _copy_whole(upstream, chunks, send)
                return
            async with anyio.create_task_group() as tg:
                async def watch() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(watch)
                async for chunk in chunks:
                    await send({"type": "http.response.body", "body": chunk,
                                "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                tg.cancel_scope.cancel()
        except OSError:  # the client went away while we wrote to it
            pass
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await chunks.aclose()  # type: ignore[attr-defined]
                finally:
                    await upstream.aclose()
                    self._done()

    async def _error(self, send: Send) -> None:
        """An error reply (small, never a stream of tokens) is read whole, and the upstream
        key is blanked out of it in case the upstream echoes it ("incorrect API key sk-...")."""
        upstream = self.upstream
        try:
            body = await upstream.aread()
        finally:
            with anyio.CancelScope(shield=True):
                await upstream.aclose()
                self._done()
        body = body.replace(self._secret, b"[REDACTED]") if self._secret else body
        # aread() decoded the body: its length and encoding are those of the bytes sent now.
        headers = [(k, v) for k, v in response_headers(upstream)
                   if k.lower() not in (b"content-length", b"content-encoding")]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": upstream.status_code,
                    "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
