"""``ledger serve``: the metering proxy (needs the ``proxy`` extra)."""

from __future__ import annotations

import click

from .options import CliState, echo, pass_state


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address to listen on (0.0.0.0: every interface).")
@click.option("--port", default=8787, show_default=True, type=click.IntRange(0, 65535),
              help="The port to listen on.")
@click.option("--upstream", default="https://runapi.ai", show_default=True, metavar="URL",
              help="Where calls are forwarded (the request's path is appended).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 256),
              help="Worker processes, sharing the ledger (PostgreSQL for many hosts).")
@click.option("--max-body-bytes", default=10 * 1024 * 1024, show_default=True,
              type=click.IntRange(1), help="Larger request bodies get 413.")
@click.option("--upstream-key-file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Read the upstream RunAPI key from FILE (default: $RUNAPI_API_KEY).")
@click.option("--drain-seconds", default=30.0, show_default=True, type=click.FloatRange(0),
              help="On SIGTERM, how long calls in flight may finish before they are cut "
                   "(and settled).")
@click.option("--no-access-log", is_flag=True, help="Do not log one line per request.")
@pass_state
def serve(state: CliState, host: str, port: int, upstream: str, workers: int,
          max_body_bytes: int, upstream_key_file: str | None, drain_seconds: float,
          no_access_log: bool) -> None:
    """Run the metering proxy: apps in any language point their SDK at it with an lk_ key
    (`ledger key create`), and it meters each call for the key's project exactly as the
    library does, then forwards it with the upstream key ($RUNAPI_API_KEY).

    OpenAI SDKs: base URL http://HOST:PORT/v1; Anthropic SDKs: http://HOST:PORT. Also
    GET /healthz, /readyz, /metrics (Prometheus) and /dashboard (admin keys).

    \b
    Example:
      export RUNAPI_API_KEY=...
      ledger key create acme
      ledger serve --port 8787 --workers 4
    """
    try:
        import prometheus_client  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ModuleNotFoundError as exc:
        from ..errors import InvalidInput

        raise InvalidInput(f"ledger serve needs the proxy extra ({exc.name} is missing): "
                       "pip install 'runapi-ledger[proxy]'") from None
    from ..proxy.app import read_upstream_key
    from ..proxy.serve import serve as run

    read_upstream_key(upstream_key_file)  # fail now, not in every worker
    book = state.open()  # migrates once, before the workers start
    db = book.url
    state.close()
    echo(f"ledger proxy: http://{host}:{port} -> {upstream} ({workers} worker"
         f"{'s' if workers > 1 else ''})", err=True)
    run(db=db, host=host, port=port, upstream=upstream, workers=workers,
        max_body_bytes=max_body_bytes, upstream_key_file=upstream_key_file,
        drain_seconds=drain_seconds, access_log=not no_access_log)
