"""The alert webhook worker: signed JSON, retries with back-off, each alert once per target
after a 2xx, claims between workers, a killed worker's alerts delivered by the next run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ledger import Ledger, ManualClock
from ledger.delivery import Backoff, Worker
from ledger.errors import DeliveryFailed, InvalidInput
from ledger.store import deliveries
from ledger.store.schema import alert_deliveries, to_micros
from ledger.webhook import SIGNATURE_HEADER, Attempt, HttpSender, body, sign, target_of, verify

SECRET = "s3cr3t-webhook-key-do-not-leak"
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class FakeAlert:
    """An alert as ``book.alerts()`` returns it (``ledger.records.Alert``'s fields)."""

    id: int
    project: str = "acme"
    user: str | None = None
    tag: str | None = None
    period: str = "month"
    window: str = "2026-12"
    threshold: int = 80
    spent: Decimal = Decimal("8.00")
    limit: Decimal = Decimal("10.00")
    at: datetime = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def alerts(n: int) -> list[FakeAlert]:
    return [FakeAlert(i, threshold=80 if i % 2 else 100, user=f"u{i}" if i % 3 == 0 else None)
            for i in range(1, n + 1)]


def stored(book: Ledger, items: list[FakeAlert]) -> Any:
    """Write ``items`` into the ledger's ``alerts`` table (as the store would) and return the
    worker's source: ``book.alerts(since_id=...)``."""
    from ledger.store.schema import alerts as alerts_table

    with book.store.write() as conn:
        for a in items:
            conn.execute(book.store._insert(alerts_table).values(
                # a tag of its own per alert, so the unique (budget, window, threshold) holds
                id=a.id, project=a.project, budget_user="*" if a.user else "",
                budget_tag=a.tag or f"n={a.id}",
                period=a.period, window=a.window, user=a.user or "", threshold=a.threshold,
                spent_units=int(a.spent * 10**10), limit_units=int(a.limit * 10**10),
                at=to_micros(a.at)).on_conflict_do_nothing())
    return lambda since: book.alerts(since_id=since)


# -- a real loopback receiver --------------------------------------------------------------
@dataclass
class Received:
    alert_id: int
    body: bytes
    signature: str
    outcome: str          # "ok", "500", "timeout", "hang"
    at: float = field(default_factory=time.monotonic)


class Receiver:
    """An HTTP server on 127.0.0.1 in a thread. ``script`` lists the outcome of the first
    requests in order (``"500"``, ``"503"``, ``"timeout"``: answer only after the client gave
    up, ``"hang"``: never answer); every later request gets 200."""

    def __init__(self, script: list[str] | None = None, *, delay: float = 0.0,
                 hang_on: int | None = None, late: float = 2.5) -> None:
        self.script = list(script or [])
        self.late = late
        self.delay = delay
        self.hang_on = hang_on
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.hanging = threading.Event()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                alert_id = json.loads(data)["id"]
                with receiver.lock:
                    outcome = receiver.script.pop(0) if receiver.script else "ok"
                    if receiver.hang_on == alert_id and not receiver.hanging.is_set():
                        outcome = "hang"
                    receiver.received.append(Received(alert_id, data,
                                                      self.headers[SIGNATURE_HEADER], outcome))
                if outcome == "hang":
                    receiver.hanging.set()
                    receiver.release.wait(30)
                    return
                if outcome == "timeout":
                    time.sleep(receiver.late)  # past the worker's timeout: it never sees this
                if receiver.delay:
                    time.sleep(receiver.delay)
                code = 200 if outcome in ("ok", "timeout") else int(outcome)
                try:
                    self.send_response(code)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/ledger"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def acknowledged(self) -> dict[int, int]:
        """How many times each alert was answered 2xx to a client still listening."""
        out: dict[int, int] = {}
        for r in self.received:
            if r.outcome == "ok":
                out[r.alert_id] = out.get(r.alert_id, 0) + 1
        return out

    def nothing_after_a_2xx(self) -> bool:
        seen: set[int] = set()
        for r in self.received:
            if r.alert_id in seen:
                return False
            if r.outcome == "ok":
                seen.add(r.alert_id)
        return True


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def now() -> datetime:
    return datetime.now(UTC)


FAST = Backoff(base=0.01, cap=0.05, attempts=6)


#: Generous (a loaded machine answers late): an answer the worker did not wait for is sent
#: again, which is allowed (at-least-once) but would make "exactly once" counts flaky.
TIMEOUT = 5.0
SHORT = 1.0  # for the receiver's "timeout" outcome, which answers after 2.5 s


def worker(book: Ledger, url: str, items: list[FakeAlert], *, timeout: float = TIMEOUT,
           backoff: Backoff = FAST, worker_id: str = "w1",
           lease: timedelta = timedelta(seconds=2), lines: list[str] | None = None) -> Worker:
    return Worker(book.store, stored(book, items), url, SECRET, send=HttpSender(timeout),
                  now=now, sleep=time.sleep, worker_id=worker_id, lease=lease,
                  backoff=backoff, report=None if lines is None else lines.append)


def all_rows(book: Ledger) -> list[dict[str, Any]]:
    with book.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(alert_deliveries))]


# -- the body and its signature ------------------------------------------------------------
class TestPayload:
    def test_body_fields_are_exact_and_signed_over_the_exact_bytes(self) -> None:
        """The body has the contract's keys (money as exact strings) and its HMAC checks."""
        alert = FakeAlert(7, user="alice", tag="feature=search", period="day",
                          window="2026-12-03", spent=Decimal("0.100000"), limit=Decimal("0.10"))
        data = body(alert)
        decoded = json.loads(data)
        assert decoded == {"type": "budget_alert", "id": 7, "project": "acme", "user": "alice",
                           "tag": "feature=search", "period": "day", "window": "2026-12-03",
                           "threshold": 80, "spent": "0.100000", "limit": "0.10",
                           "at": "2026-12-03T09:00:00+00:00"}
        signature = sign(data, SECRET)
        assert len(signature) == 64 and verify(data, SECRET, signature)
        assert not verify(data + b" ", SECRET, signature)
        assert not verify(data, SECRET + "x", signature)

    def test_the_target_keeps_no_credentials(self) -> None:
        """A URL's user:password and secret-looking query values never reach the table."""
        target = target_of("https://bob:hunter2@Hooks.Example.com:8443/x?token=abc&team=ops"
                           "&X-Api-Key=k1#frag")
        shown, _, fingerprint = target.partition("#")
        assert shown == ("https://hooks.example.com:8443/x?token=%5BREDACTED%5D&team=ops"
                         "&X-Api-Key=%5BREDACTED%5D")
        assert len(fingerprint) == 12 and int(fingerprint, 16) >= 0
        assert "hunter2" not in target and "abc" not in target and "k1" not in target

    def test_receivers_that_differ_only_in_their_token_are_two_targets(self, book: Ledger
                                                                       ) -> None:
        """``?token=A`` and ``?token=B`` are two receivers: each gets every alert (the blanked
        form alone would have made the second one look delivered already)."""
        rec = Receiver()  # one host and path: only the token tells the two apart
        try:
            items = alerts(2)
            assert worker(book, rec.url + "?token=A", items).run().delivered == [1, 2]
            assert worker(book, rec.url + "?token=B", items).run().delivered == [1, 2]
            assert rec.acknowledged() == {1: 2, 2: 2}
            assert all("token=A" not in r["target"] and "token=B" not in r["target"]
                       for r in all_rows(book))
        finally:
            rec.close()

    def test_an_alert_committed_after_a_higher_one_is_still_delivered(self, book: Ledger
                                                                      ) -> None:
        """PostgreSQL commits ids out of order: alert 2 is seen (and delivered) while alert 1
        is still committing; the following worker's next poll still sends alert 1."""
        rec = Receiver()
        try:
            items = [FakeAlert(2, at=now())]
            w = worker(book, rec.url, items)
            assert w.run().delivered == [2]
            stored(book, [FakeAlert(1, at=now())])  # committed now, below the id seen
            assert w.run().delivered == [1]
            assert rec.acknowledged() == {1: 1, 2: 1}
        finally:
            rec.close()

    @pytest.mark.parametrize("url", ["", "hooks.example.com/x", "ftp://example.com/x",
                                     "http://", "http://exa mple.com/", "http://host:99999/",
                                     "http://h/" + "x" * 1000])
    def test_a_bad_url_is_refused_with_a_clear_error(self, book: Ledger, url: str) -> None:
        """Not an http(s) URL with a host: InvalidInput naming --webhook, before any work."""
        with pytest.raises(InvalidInput, match="--webhook must be"):
            Worker(book.store, stored(book, []), url, SECRET, send=HttpSender(), now=now,
                   sleep=time.sleep, worker_id="w")

    def test_no_secret_no_worker(self, book: Ledger) -> None:
        """An unsigned webhook could be forged: the worker refuses to start without a secret."""
        with pytest.raises(InvalidInput, match="LEDGER_WEBHOOK_SECRET"):
            Worker(book.store, stored(book, []), "http://127.0.0.1:9/", "", send=HttpSender(),
                   now=now, sleep=time.sleep, worker_id="w")


# -- back-off ----------------------------------------------------------------------------------
class TestBackoff:
    def test_delays_grow_exponentially_to_the_cap_with_jitter(self, book: Ledger) -> None:
        """Injected sleep and randomness: after the n-th failure the worker waits within
        [step/2, step) of min(cap, base x 2^(n-1)), and gives up after `attempts`."""
        slept: list[float] = []
        rolls = iter([0.0, 0.999, 0.5, 0.0, 0.0, 0.0])
        calls: list[str] = []

        def down(url: str, data: bytes, headers: Any) -> Attempt:
            calls.append(headers["X-Ledger-Delivery-Attempt"])
            return Attempt(False, 503, "HTTP 503 Service Unavailable")

        w = Worker(book.store, stored(book, [FakeAlert(1)]), "http://127.0.0.1:9/h", SECRET,
                   send=down, now=book.now, sleep=slept.append, worker_id="w",
                   backoff=Backoff(base=1, cap=5, attempts=6), rand=lambda: next(rolls))
        with pytest.raises(DeliveryFailed, match="after 6 attempts: HTTP 503") as info:
            w.run()
        assert info.value.alert_id == 1 and info.value.target == "http://127.0.0.1:9/h"
        assert calls == ["1", "2", "3", "4", "5", "6"]
        assert slept == [0.5, pytest.approx(1.999), 3.0, 2.5, 2.5]   # steps 1, 2, 4, 5, 5
        [row] = deliveries.rows(book.store)
        assert (row.attempts, row.delivered_at, row.last_error) == (
            6, None, "HTTP 503 Service Unavailable")

    def test_backoff_rejects_nonsense(self) -> None:
        """A zero base or no attempts at all is refused."""
        with pytest.raises(InvalidInput):
            Backoff(base=0)
        with pytest.raises(InvalidInput):
            Backoff(attempts=0)


# -- against the loopback receiver -------------------------------------------------------------
class TestLoopback:
    def test_fails_twice_times_out_once_then_every_alert_once(self, book: Ledger) -> None:
        """The receiver fails the first two attempts (500, 503) and times out once: every alert
        arrives with a valid signature, is acknowledged exactly once, and nothing is sent
        after its 2xx, not even by a second run."""
        rec = Receiver(["500", "503", "timeout"])
        try:
            items = alerts(4)
            lines: list[str] = []
            result = worker(book, rec.url, items, lines=lines, timeout=SHORT).run()
            assert result.delivered == [1, 2, 3, 4]
            assert rec.acknowledged() == {1: 1, 2: 1, 3: 1, 4: 1}
            assert [r.outcome for r in rec.received[:4]] == ["500", "503", "timeout", "ok"]
            assert all(verify(r.body, SECRET, r.signature) for r in rec.received)
            assert {json.loads(r.body)["id"] for r in rec.received} == {1, 2, 3, 4}
            assert rec.nothing_after_a_2xx()
            assert lines[0].startswith("delivered alert 1 (acme tag=n=1 month 2026-12: 80%) to "
                                       f"{target_of(rec.url)} after 4 attempts")
            before = len(rec.received)
            assert worker(book, rec.url, items).run().delivered == []
            assert len(rec.received) == before
            rows = {r.alert_id: r for r in deliveries.rows(book.store)}
            assert rows[1].attempts == 4 and all(r.delivered_at for r in rows.values())
        finally:
            rec.close()

    def test_new_alerts_are_delivered_by_the_next_run_only(self, book: Ledger,
                                                          receiver: Receiver) -> None:
        """Alerts raised after a run go out on the next one; the old ones never again."""
        items = alerts(2)
        assert worker(book, receiver.url, items).run().delivered == [1, 2]
        items += [FakeAlert(3), FakeAlert(4)]
        assert worker(book, receiver.url, items).run().delivered == [3, 4]
        assert receiver.acknowledged() == {1: 1, 2: 1, 3: 1, 4: 1}

    def test_each_target_gets_each_alert(self, book: Ledger) -> None:
        """Deliveries are remembered per target: a second webhook gets every alert too."""
        one, two = Receiver(), Receiver()
        try:
            items = alerts(3)
            assert worker(book, one.url, items).run().delivered == [1, 2, 3]
            assert worker(book, two.url, items).run().delivered == [1, 2, 3]
            assert one.acknowledged() == two.acknowledged() == {1: 1, 2: 1, 3: 1}
        finally:
            one.close()
            two.close()

    def test_unreachable_gives_a_clear_error_and_loses_nothing(self, book: Ledger) -> None:
        """Nobody listening: DeliveryFailed names the alert, the target and the reason; nothing
        is marked delivered; once the receiver is up the next run delivers all of it."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}/hook?token=abc"
        items = alerts(3)
        with pytest.raises(DeliveryFailed) as info:
            worker(book, url, items, backoff=Backoff(0.01, 0.02, 3)).run()
        message = str(info.value)
        assert f"alert 1 could not be delivered to http://127.0.0.1:{port}/hook?token=" in message
        assert "after 3 attempts" in message and "ConnectError" in message
        assert "abc" not in message
        assert [(r["alert_id"], r["delivered_at"], r["attempts"]) for r in all_rows(book)] == [
            (1, None, 3)]
        rec = Receiver()
        try:
            assert worker(book, rec.url, items).run().delivered == [1, 2, 3]
        finally:
            rec.close()

    def test_the_secret_is_never_stored_or_logged(self, book: Ledger,
                                                  caplog: pytest.LogCaptureFixture) -> None:
        """Neither the secret nor URL credentials reach the table, the log or the report."""
        caplog.set_level("DEBUG")
        rec = Receiver(["500", "timeout"])
        try:
            lines: list[str] = []
            url = rec.url.replace("http://", "http://bob:hunter2@") + f"?secret={SECRET}"
            worker(book, url, alerts(2), lines=lines, timeout=SHORT).run()
            dump = repr(all_rows(book)) + caplog.text + "\n".join(lines)
            assert rec.acknowledged() == {1: 1, 2: 1}
            assert SECRET not in dump and "hunter2" not in dump
            assert "[REDACTED]" in all_rows(book)[0]["target"] or "%5BREDACTED%5D" in \
                all_rows(book)[0]["target"]
        finally:
            rec.close()


@pytest.mark.parametrize("workers", [2, 4])
def test_concurrent_workers_never_send_one_alert_twice(any_url: str, workers: int) -> None:
    """Several workers for one target, at once (SQLite and PostgreSQL): every alert is
    acknowledged exactly once, none is sent after its 2xx, and they arrive in id order."""
    rec = Receiver(delay=0.02)
    books = [Ledger(any_url) for _ in range(workers)]
    try:
        items = alerts(24)
        errors: list[BaseException] = []

        def run(i: int) -> None:
            try:
                worker(books[i], rec.url, items, worker_id=f"w{i}").run()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert rec.acknowledged() == {i: 1 for i in range(1, 25)}
        assert len(rec.received) == 24 and rec.nothing_after_a_2xx()
        assert [r.alert_id for r in rec.received] == list(range(1, 25))
    finally:
        rec.close()
        for b in books:
            b.close()


# -- a worker killed mid-delivery ----------------------------------------------------------------
WORKER_SCRIPT = textwrap.dedent("""
    import sys, time
    from datetime import UTC, datetime, timedelta
    sys.path.insert(0, {tests!r})
    from test_alerts_delivery import SECRET
    from ledger import Ledger
    from ledger.delivery import Backoff, Worker
    from ledger.webhook import HttpSender
    book = Ledger(sys.argv[1])
    w = Worker(book.store, lambda since: book.alerts(since_id=since), sys.argv[2], SECRET,
               send=HttpSender(5.0),
               now=lambda: datetime.now(UTC), sleep=time.sleep, worker_id=sys.argv[3],
               lease=timedelta(seconds=2), backoff=Backoff(0.01, 0.05, 5),
               report=lambda line: print(line, flush=True))
    w.run()
""")


def test_a_worker_killed_mid_delivery_is_finished_by_the_next_run(sqlite_url: str,
                                                                  tmp_path: Path) -> None:
    """SIGKILL while alert 3 is in flight (the receiver holds it): a restarted worker
    delivers 3 again (no 2xx was seen: at-least-once), then 4 and 5; 1 and 2 never again."""
    with Ledger(sqlite_url) as book:
        stored(book, alerts(5))  # and migrated before the worker starts
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT.format(tests=str(ROOT / "tests")))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rec = Receiver(hang_on=3)
    try:
        proc = subprocess.Popen([sys.executable, str(script), sqlite_url, rec.url, "first"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert rec.hanging.wait(30), proc.communicate(timeout=5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        rec.release.set()
        with Ledger(sqlite_url) as book:
            [mid] = [r for r in deliveries.rows(book.store) if r.alert_id == 3]
            assert mid.delivered_at is None and mid.claimed_by == "first"
        started = time.monotonic()
        again = subprocess.run([sys.executable, str(script), sqlite_url, rec.url, "second"],
                               env=env, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stderr
        assert time.monotonic() - started < 30
        assert [line.split()[2] for line in again.stdout.splitlines()] == ["3", "4", "5"]
        assert rec.acknowledged() == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1}
        assert [r.alert_id for r in rec.received] == [1, 2, 3, 3, 4, 5]
        assert rec.nothing_after_a_2xx()
    finally:
        rec.close()


# -- the command line, on alerts the ledger raised -------------------------------------------
@pytest.fixture
def raised(book: Ledger) -> Ledger:
    """acme $1/month crosses 50% and 100%; bob's $0.10 day crosses 80%: three alerts."""
    from ledger.records import Attribution, Outcome

    book.set_budget("acme", Decimal("1"), alerts=(50, 100))
    book.set_budget("beta", Decimal("0.10"), period="day", user="*")
    for project, tokens, user in (("acme", 30_000, None), ("acme", 25_000, None),
                                  ("beta", 4_500, "bob")):
        book.store.record(project, "kimi-k2.5", Outcome("ok", tokens, 0), book.now(),
                          book.now(), None, attribution=Attribution.of(user))
    assert len(book.alerts()) == 3
    return book


def cli(url: str, *args: str, env: dict[str, str] | None = None) -> Any:
    from click.testing import CliRunner

    from ledger.cli import main
    from ledger.cli.options import CliState

    return CliRunner().invoke(main, ["alerts", "deliver", *args], obj=CliState(db=url),
                              env={"LEDGER_WEBHOOK_SECRET": SECRET, **(env or {})})


class TestCommand:
    def test_delivers_every_alert_once_signed(self, raised: Ledger, sqlite_url: str,
                                             receiver: Receiver) -> None:
        """`ledger alerts deliver` with the secret from $LEDGER_WEBHOOK_SECRET: each alert
        POSTed once, signed, with the ledger's figures; a second run sends nothing."""
        result = cli(sqlite_url, "--webhook", receiver.url)
        assert result.exit_code == 0, (result.stdout, result.stderr)
        assert result.stdout.splitlines()[-1] == f"3 alerts delivered to {receiver.url}"
        sent = [json.loads(r.body) for r in receiver.received]
        assert [(a["project"], a["user"], a["threshold"]) for a in sent] == [
            ("acme", None, 50), ("acme", None, 100), ("beta", "bob", 80)]
        assert sent[1]["spent"] == "1.10" and sent[1]["limit"] == "1.00"
        assert [a["id"] for a in sent] == [a.id for a in raised.alerts()]
        assert all(verify(r.body, SECRET, r.signature) for r in receiver.received)
        again = cli(sqlite_url, "--webhook", receiver.url)
        assert again.exit_code == 0 and "nothing to deliver" in again.stdout
        assert len(receiver.received) == 3
        assert SECRET not in result.stdout + result.stderr

    def test_a_retry_is_said_on_stderr(self, raised: Ledger, sqlite_url: str) -> None:
        """A failed attempt that will be retried is one line on stderr; the result on stdout."""
        rec = Receiver(["500"])
        try:
            result = cli(sqlite_url, "--webhook", rec.url)
        finally:
            rec.close()
        assert result.exit_code == 0, result.stderr
        [line] = result.stderr.strip().splitlines()
        assert line.startswith(f"alert {raised.alerts()[0].id}: attempt 1 failed (HTTP 500")
        assert "retrying in" in line and "3 alerts delivered" in result.stdout

    def test_project_and_since_id(self, raised: Ledger, sqlite_url: str,
                                  receiver: Receiver) -> None:
        """--project and --since-id choose which alerts a webhook gets."""
        first = raised.alerts()[0].id
        assert cli(sqlite_url, "--webhook", receiver.url, "--project", "acme",
                   "--since-id", str(first)).exit_code == 0
        assert [json.loads(r.body)["threshold"] for r in receiver.received] == [100]

    @pytest.mark.parametrize("url", ["not a url", "ftp://example.com/", "http://"])
    def test_a_bad_url_is_one_line_and_exit_2(self, raised: Ledger, sqlite_url: str,
                                              url: str) -> None:
        """A malformed --webhook: exit 2, one line, nothing touched."""
        result = cli(sqlite_url, "--webhook", url)
        assert result.exit_code == 2 and result.stdout == ""
        [line] = result.stderr.strip().splitlines()
        assert "--webhook" in line and "http" in line
        assert deliveries.rows(raised.store) == []

    def test_no_secret(self, raised: Ledger, sqlite_url: str, receiver: Receiver) -> None:
        """Neither --secret nor $LEDGER_WEBHOOK_SECRET: exit 2 saying how to give one."""
        result = cli(sqlite_url, "--webhook", receiver.url, env={"LEDGER_WEBHOOK_SECRET": ""})
        assert result.exit_code == 2 and "LEDGER_WEBHOOK_SECRET" in result.stderr
        assert receiver.received == []
        given = cli(sqlite_url, "--webhook", receiver.url, "--secret", "other",
                    env={"LEDGER_WEBHOOK_SECRET": ""})
        assert given.exit_code == 0 and len(receiver.received) == 3
        assert all(verify(r.body, "other", r.signature) for r in receiver.received)

    def test_unreachable_exit_2_and_nothing_lost(self, raised: Ledger, sqlite_url: str
                                                 ) -> None:
        """Nobody listening: one line naming the alert and the target, exit 2; every alert
        is still there for the next run."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://user:pw@127.0.0.1:{port}/hook"
        result = cli(sqlite_url, "--webhook", url, "--attempts", "1", "--timeout", "1")
        assert result.exit_code == 2, (result.stdout, result.stderr)
        [line] = result.stderr.strip().splitlines()
        assert f"could not be delivered to http://127.0.0.1:{port}/hook after 1 attempt" in line
        assert "pw" not in line.replace("http", "")
        assert all(r.delivered_at is None for r in deliveries.rows(raised.store))
        rec = Receiver()
        try:
            assert cli(sqlite_url, "--webhook", rec.url).exit_code == 0
            assert len(rec.received) == 3
        finally:
            rec.close()


def test_the_command_killed_mid_delivery_is_finished_by_the_next_run(raised: Ledger,
                                                                     sqlite_url: str) -> None:
    """`python -m ledger alerts deliver` killed (SIGKILL) while the receiver holds alert 2:
    run again, it delivers 2 (again: it never saw a 2xx) and 3, never 1 again."""
    ids = [a.id for a in raised.alerts()]
    rec = Receiver(hang_on=ids[1])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LEDGER_WEBHOOK_SECRET": SECRET}
    command = [sys.executable, "-m", "ledger", "--db", sqlite_url, "alerts", "deliver",
               "--webhook", rec.url, "--timeout", "1"]
    try:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert rec.hanging.wait(30), proc.communicate(timeout=5)
        proc.kill()
        proc.wait(10)
        rec.release.set()
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stderr
        assert again.stdout.splitlines()[-1] == f"2 alerts delivered to {rec.url}"
        assert [r.alert_id for r in rec.received] == [ids[0], ids[1], ids[1], ids[2]]
        assert rec.acknowledged() == {i: 1 for i in ids} and rec.nothing_after_a_2xx()
    finally:
        rec.close()


class TestFollow:
    def test_follow_delivers_new_alerts_as_they_come(self, book: Ledger,
                                                     receiver: Receiver) -> None:
        """A following worker delivers alerts raised while it runs, and releases its claims
        when stopped."""
        items = alerts(2)
        stop = threading.Event()
        w = worker(book, receiver.url, items)
        thread = threading.Thread(target=w.follow, args=(0.05, stop.is_set))
        thread.start()
        try:
            deadline = time.monotonic() + 20
            while len(receiver.received) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            stored(book, [FakeAlert(3)])
            while len(receiver.received) < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            stop.set()
            thread.join(20)
        assert receiver.acknowledged() == {1: 1, 2: 1, 3: 1}
        assert all(r.claimed_by is None for r in deliveries.rows(book.store))

    def test_follow_survives_a_failing_webhook(self, book: Ledger) -> None:
        """--follow: an alert that fails every attempt is reported and tried again on the next
        pass, and then delivered; nothing is skipped past it."""
        rec = Receiver(["500", "500", "500"])
        lines: list[str] = []
        stop = threading.Event()
        w = worker(book, rec.url, alerts(2), backoff=Backoff(0.01, 0.02, 2), lines=lines)
        thread = threading.Thread(target=w.follow, args=(0.05, stop.is_set))
        thread.start()
        try:
            deadline = time.monotonic() + 20
            while len(rec.acknowledged()) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            stop.set()
            thread.join(20)
            rec.close()
        assert [r.alert_id for r in rec.received] == [1, 1, 1, 1, 2]  # 2 tries, then 2 more
        assert any("could not be delivered" in line for line in lines)
        assert rec.acknowledged() == {1: 1, 2: 1}


def test_the_following_command_stops_cleanly_on_sigterm(raised: Ledger, sqlite_url: str,
                                                        receiver: Receiver) -> None:
    """`ledger alerts deliver --follow`: delivers, then SIGTERM stops it with exit 0."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LEDGER_WEBHOOK_SECRET": SECRET}
    proc = subprocess.Popen([sys.executable, "-m", "ledger", "--db", sqlite_url, "alerts",
                             "deliver", "--webhook", receiver.url, "--follow", "--interval",
                             "0.2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 30
    while len(receiver.received) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert len(receiver.received) == 3
    assert "stopped: 3 alerts delivered" in err and out.count("delivered alert") == 3


def test_a_project_filter_never_hides_other_alerts_from_a_later_run(book: Ledger,
                                                                    receiver: Receiver) -> None:
    """A run for --project beta, then one for every project, on the same webhook: the second
    delivers acme's older alerts too and never beta's again."""
    items = [FakeAlert(1), FakeAlert(2, project="beta"), FakeAlert(3), FakeAlert(4, "beta")]
    w = worker(book, receiver.url, items)
    w.project = "beta"
    w.fetch = lambda since: book.alerts("beta", since_id=since)
    assert w.run().delivered == [2, 4]
    assert worker(book, receiver.url, items).run().delivered == [1, 3]
    assert [r.alert_id for r in receiver.received] == [2, 4, 1, 3]
    assert worker(book, receiver.url, items).run().delivered == []


def test_nothing_pending_reads_no_alerts(book: Ledger, receiver: Receiver) -> None:
    """Once everything is delivered, a pass asks the source for nothing (cheap polling)."""
    asked: list[int] = []
    w = worker(book, receiver.url, alerts(3))
    real = w.fetch
    w.fetch = lambda since: asked.append(since) or real(since)
    assert w.run().delivered == [1, 2, 3] and asked == [0]
    assert w.run().delivered == [] and asked == [0]


class TestClaims:
    """Another worker's claim, on an injected clock (no real waiting)."""

    def make(self, book: Ledger, clock: ManualClock, renew: bool) -> tuple[Worker, list[int]]:
        sent: list[int] = []
        url = "http://127.0.0.1:9/hook"

        def send(_url: str, data: bytes, headers: Any) -> Attempt:
            sent.append(json.loads(data)["id"])
            return Attempt(True, 200)

        def sleep(seconds: float) -> None:
            clock.advance(seconds)
            if renew:  # the other worker is alive: it keeps its claim
                deliveries.claim(book.store, url, 1, "other", clock.now(),
                                 clock.now() + timedelta(seconds=10))

        w = Worker(book.store, stored(book, alerts(2)), url, SECRET, send=send,
                   now=clock.now, sleep=sleep, worker_id="me", lease=timedelta(seconds=10))
        assert deliveries.claim(book.store, url, 1, "other", clock.now(),
                                clock.now() + timedelta(seconds=10))
        return w, sent

    def test_a_dead_workers_claim_is_taken_over_when_it_lapses(self, book: Ledger,
                                                                clock: ManualClock) -> None:
        """Alert 1 claimed by a worker that died: this run waits for the claim to lapse, then
        delivers 1 and 2, in order."""
        start = clock.now()
        w, sent = self.make(book, clock, renew=False)
        assert w.run().delivered == [1, 2] and sent == [1, 2]
        assert timedelta(seconds=10) <= clock.now() - start <= timedelta(seconds=12)

    def test_a_live_workers_claim_is_left_to_it(self, book: Ledger, clock: ManualClock) -> None:
        """Alert 1 held by a live worker (it renews its claim): this run sends nothing, not
        even alert 2 (order), and returns with 1 in busy once the first claim seen lapses."""
        w, sent = self.make(book, clock, renew=True)
        result = w.run()
        assert result.busy == [1] and result.delivered == [] and sent == []
