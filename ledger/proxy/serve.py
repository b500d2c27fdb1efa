"""Running the proxy: uvicorn, ``--workers N`` processes sharing one ledger, graceful drain.

Each worker builds its own app from the environment (:func:`ledger.proxy.app.app_from_env`):
the ledger's URL (``LEDGER_DATABASE_URL``), the upstream, the body limit and where the upstream
key is (``$RUNAPI_API_KEY`` is inherited; a ``--upstream-key-file`` is passed by path, never
its content). SQLite serves the workers of one host; PostgreSQL those of many.

SIGTERM (and Ctrl-C): uvicorn stops accepting connections and lets the requests in flight
finish, streams included, for up to ``drain_seconds``; then it cancels what is left, and each
cancelled stream is closed and settled (charged by estimate of what it streamed) before the
worker exits.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile

from .app import ENV_KEY_FILE, ENV_MAX_BODY, ENV_UPSTREAM

__all__ = ["serve"]


def serve(*, db: str | None, host: str, port: int, upstream: str, workers: int,
          max_body_bytes: int, upstream_key_file: str | None, drain_seconds: float,
          access_log: bool = True) -> None:
    import uvicorn

    if db:
        os.environ["LEDGER_DATABASE_URL"] = db
    os.environ[ENV_UPSTREAM] = upstream
    os.environ[ENV_MAX_BODY] = str(max_body_bytes)
    if upstream_key_file:
        os.environ[ENV_KEY_FILE] = os.path.abspath(upstream_key_file)
    else:
        os.environ.pop(ENV_KEY_FILE, None)
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="ledger-proxy-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # uvicorn drains on SIGTERM/SIGINT, then raises the signal again with the handler that was
    # there before it started: this one, so a drained proxy exits 0 and cleans up.
    def drained(signum: int, _frame: object) -> None:
        raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, drained)
    try:
        uvicorn.run("ledger.proxy.app:app_from_env", factory=True, host=host, port=port,
                    workers=workers if workers > 1 else None, lifespan="on",
                    timeout_graceful_shutdown=max(1, round(drain_seconds)),
                    server_header=False, date_header=False, access_log=access_log,
                    log_level="info")
    finally:
        signal.signal(signal.SIGTERM, previous)
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
