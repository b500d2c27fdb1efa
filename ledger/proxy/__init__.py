"""``ledger serve``: the metering proxy, for apps in any language (issue 13).

Clients point their SDK at the proxy with an ``lk_`` key; the proxy authenticates the key
(:mod:`.keys`, :mod:`.auth`), forwards the call through the library's own async metered
transport for the key's project (:mod:`.forward`), streams the reply back untouched
(:mod:`.stream`), and serves ``/healthz``, ``/readyz``, ``/metrics`` (:mod:`.metrics`) and
``/dashboard`` (:mod:`.dashboard`). :mod:`.app` puts them together (Starlette, ASGI);
:mod:`.serve` runs it under uvicorn.

Nothing is imported here, so that ``ledger key ...`` works without the ``proxy`` extra.
"""
