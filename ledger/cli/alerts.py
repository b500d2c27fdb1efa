"""``ledger alerts``: the budget alerts raised (``list``) and their webhook worker (``deliver``)."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import click

from ..render import csv as render_csv
from ..render import json as render_json
from ..render import table as render_table
from ..webhook import SECRET_ENV
from .options import CliState, echo, format_option, pass_state, stdout_text


@click.group()
def alerts() -> None:
    """Budget alerts: one per budget, window and threshold crossed (default 80% and 100%),
    raised exactly once. List them, or deliver them to a webhook.

    \b
    Example:
      ledger alerts list --project acme
      ledger alerts deliver --webhook https://hooks.example.com/ledger --follow
    """


@alerts.command("list")
@click.option("--project", metavar="P", help="Only this project's alerts.")
@click.option("--since-id", type=click.IntRange(min=0), default=0, metavar="N",
              help="Only alerts with an id above N (the last one you have seen).")
@format_option("table", "json", "csv")
@pass_state
def list_alerts(state: CliState, project: str | None, since_id: int, fmt: str) -> None:
    """List the alerts raised, oldest first: id, budget (project, user, tag, period),
    window, threshold, spent and limit when it was crossed, and when.

    \b
    Example:
      ledger alerts list
      ledger alerts list --project acme --since-id 41 --format json
    """
    from ..webhook import payload

    found = state.open().alerts(project, since_id=since_id)
    out = stdout_text()
    if fmt == "json":
        render_json.write({"alerts": [{k: v for k, v in payload(a).items() if k != "type"}
                                      for a in found]}, out)
    elif fmt == "csv":
        render_csv.alerts(out, found)
    else:
        render_table.console(out).print(render_table.alerts(found))


@alerts.command("deliver")
@click.option("--webhook", "url", required=True, metavar="URL",
              help="POST each alert to this http(s) URL (credentials in it are never stored "
                   "or printed).")
@click.option("--secret", envvar=SECRET_ENV, show_envvar=True, metavar="S",
              help="Sign each body with this secret (header X-Ledger-Signature: hex "
                   f"HMAC-SHA256). Prefer ${SECRET_ENV}: a command line is visible to "
                   "other users of the machine.")
@click.option("--follow", is_flag=True,
              help="Keep running: deliver new alerts as they are raised (stop with Ctrl-C "
                   "or SIGTERM).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              metavar="SEC", help="With --follow: seconds between looks for new alerts.")
@click.option("--timeout", type=click.FloatRange(min=0.1, max=600), default=10.0,
              show_default=True, metavar="SEC", help="Seconds to wait for the webhook.")
@click.option("--attempts", type=click.IntRange(1, 1000), default=8, show_default=True,
              metavar="N", help="Attempts per alert before this run gives up on it (it is "
                                "kept for the next run; --follow tries again later).")
@click.option("--project", metavar="P", help="Only this project's alerts.")
@click.option("--since-id", type=click.IntRange(min=0), default=0, metavar="N",
              help="Skip alerts up to id N (for a new webhook that needs no history).")
@pass_state
def deliver(state: CliState, url: str, secret: str | None, follow: bool, interval: float,
            timeout: float, attempts: int, project: str | None, since_id: int) -> None:
    """POST every alert not yet delivered to the webhook, oldest first, as JSON (id,
    project, user, tag, period, window, threshold, spent, limit, at), signed with the
    secret. A failure, a timeout or a non-2xx answer is retried with exponential back-off
    (1s doubling to 60s, jittered). Each alert is delivered to a webhook once: after a 2xx
    it is never sent there again (until then it may be sent again: receivers dedupe on
    its id). Several workers may serve one webhook: they never send one alert at once.

    Exit code 0 when everything pending was delivered; 2 when an alert kept failing (it
    is kept and retried by the next run) or the URL is not an http(s) URL.

    \b
    Example:
      export LEDGER_WEBHOOK_SECRET=...
      ledger alerts deliver --webhook https://hooks.example.com/ledger
      ledger alerts deliver --webhook https://hooks.example.com/ledger --follow --interval 10
    """
    from ..delivery import Backoff, Worker
    from ..errors import InvalidInput
    from ..webhook import HttpSender, check_url

    try:
        check_url(url)
    except InvalidInput as exc:
        raise click.BadParameter(str(exc).removeprefix("--webhook "), param_hint="--webhook") \
            from None
    book = state.open()
    stop = threading.Event()
    send = HttpSender(timeout, secrets=(secret or "",))
    worker = Worker(
        book.store, lambda since: book.alerts(project, since_id=since), url, secret or "",
        send=send, now=book.now, sleep=stop.wait,
        worker_id=f"{socket.gethostname()}:{os.getpid()}",
        lease=timedelta(seconds=3 * timeout + 2), backoff=Backoff(1.0, 60.0, attempts),
        since_id=since_id, project=project, report=echo,
        warn=lambda line: echo(line, err=True))
    try:
        if follow:
            with _stopped_by_sigterm(stop):
                echo(f"delivering alerts to {worker.shown} every {interval:g}s "
                     "(Ctrl-C to stop)", err=True)
                result = worker.follow(interval, stop.is_set)
            echo(f"stopped: {len(result.delivered)} alerts delivered to {worker.shown}",
                 err=True)
            return
        result = worker.run()
    finally:
        send.close()
    if result.busy:
        echo(f"alert {result.busy[0]} is being delivered by another worker: left to it",
             err=True)
    count = len(result.delivered)
    echo(f"{count} alert{'' if count == 1 else 's'} delivered to {worker.shown}"
         if count else f"nothing to deliver to {worker.shown}")


@contextmanager
def _stopped_by_sigterm(stop: threading.Event) -> Iterator[None]:
    """SIGTERM stops a following worker after its current delivery (it is never cut)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
