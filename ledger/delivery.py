"""The alert delivery worker (``ledger alerts deliver``): every alert, oldest first, POSTed to
one webhook until it answers 2xx, each alert delivered once per target.

The guarantees, and how they are kept (the rows: ``ledger.store.deliveries``):

* **Never twice after a 2xx.** The first 2xx sets ``delivered_at`` on the (target, alert)
  row; a delivered row is never claimed again, by this worker or any other.
* **At-least-once until then.** An alert is marked delivered only after its 2xx. A worker
  killed between the receiver's 2xx and that write, or mid-request, leaves the alert
  undelivered: the next run sends it again (the body carries ``id`` for receivers to dedupe).
* **One worker per alert, oldest first.** Before each attempt a worker claims the row for
  the length of one attempt (``lease``); a failed attempt extends the claim over the
  back-off. Another worker for the same target that reaches an alert claimed by a live
  worker waits (polling) until it is delivered or the claim lapses (a killed worker's claim
  lapses by itself), then goes on. So two workers on one target never send one alert at the
  same time, and alerts reach the target in id order; a second worker is a standby, not
  extra throughput (the trade-off chosen: webhooks see few alerts, order matters more).
* **Retries.** A transport error, a timeout or any non-2xx is retried with exponential
  back-off: ``min(cap, base × 2^(n-1))`` seconds after the n-th failure, jittered into its
  upper half (so many workers do not retry in step). After ``attempts`` failures the pass
  stops at that alert (later ones wait, so order is kept): a one-shot run raises
  :class:`~ledger.errors.DeliveryFailed`, a following run waits ``interval`` and tries again.

The time (``now``), the waiting (``sleep``), the randomness (``rand``) and the HTTP POST
(``send``) are injected; this module does no I/O of its own.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .errors import DeliveryFailed, InvalidInput, LedgerUnavailable
from .store import deliveries
from .store.ops import Store
from .webhook import SIGNATURE_HEADER, AlertLike, Attempt, Sender, body, check_url, sign, target_of

__all__ = ["Backoff", "PassResult", "Worker"]

log = logging.getLogger("ledger.delivery")
#: How often a worker looks again at an alert another worker holds (seconds).
BUSY_POLL = 0.1
#: How long after it is written an alert's transaction may still be committing: the worker
#: never moves its floor past an alert younger than this (``first_pending``).
IN_FLIGHT = timedelta(minutes=1)


@dataclass(frozen=True)
class Backoff:
    """How long to wait after the n-th failed attempt of one alert, and how many to make."""

    base: float = 1.0
    cap: float = 60.0
    attempts: int = 8

    def __post_init__(self) -> None:
        if not self.base > 0 or not self.cap >= self.base:
            raise InvalidInput("back-off needs 0 < base <= cap")
        if self.attempts < 1:
            raise InvalidInput(f"attempts must be at least 1, got {self.attempts}")

    def delay(self, failures: int, rand: float) -> float:
        """Seconds to wait after ``failures`` failures (``rand`` in [0, 1)): the capped
        exponential step, jittered into [step / 2, step)."""
        step = min(self.cap, self.base * float(2 ** min(failures - 1, 62)))  # float ok: seconds
        return float(step / 2 + step / 2 * rand)  # float ok: seconds


@dataclass
class PassResult:
    """What one pass over the pending alerts did."""

    delivered: list[int] = field(default_factory=list)
    #: Alerts claimed by another live worker (left to it), by id.
    busy: list[int] = field(default_factory=list)
    #: The alert that failed every attempt (the pass stopped there), and why.
    failed: DeliveryFailed | None = None


class Worker:
    """Delivers the ledger's alerts (of ``project``; above ``since_id``) to ``url``:
    ``fetch(n)`` returns those with ids above ``n`` (``book.alerts(project, since_id=n)``).

    ``worker_id`` names this worker in its claims (host and process, say); ``lease`` is how
    long one attempt may take before another worker may take the alert over (longer than
    the sender's timeout). ``report`` receives one line for people per delivered or failed
    alert, ``warn`` one per failed attempt that will be retried. The secret is used to sign
    and never kept anywhere else.
    """

    def __init__(self, store: Store, fetch: Callable[[int], Sequence[AlertLike]], url: str,
                 secret: str, *, send: Sender, now: Callable[[], datetime],
                 sleep: Callable[[float], object], worker_id: str,
                 lease: timedelta = timedelta(seconds=60), backoff: Backoff = Backoff(),
                 rand: Callable[[], float] = random.random, since_id: int = 0,
                 project: str | None = None,
                 report: Callable[[str], None] | None = None,
                 warn: Callable[[str], None] | None = None) -> None:
        if not isinstance(secret, str) or not secret:
            raise InvalidInput("a webhook secret is needed to sign alerts: give --secret S or "
                               "set $LEDGER_WEBHOOK_SECRET")
        if lease <= timedelta(0):
            raise InvalidInput("lease must be positive")
        self.store = store
        self.fetch = fetch
        self.url = check_url(url)
        self.target = target_of(url)
        #: The target as messages show it (without the fingerprint of a blanked secret).
        self.shown = self.target.partition("#")[0]
        self._secret = secret
        self.send = send
        self.now = now
        self.sleep = sleep
        self.worker_id = worker_id
        self.lease = lease
        self.backoff = backoff
        self.rand = rand
        self.since_id = since_id
        self.project = project
        #: Every alert up to this id is delivered to the target (or below ``since_id``).
        self._floor = since_id
        self.report = report or (lambda _line: None)
        self.warn = warn or (lambda _line: None)

    def __repr__(self) -> str:  # never the secret
        return f"Worker(target={self.shown!r}, worker_id={self.worker_id!r})"

    # -- one alert --------------------------------------------------------------------------
    def pending(self) -> list[AlertLike]:
        """The alerts from the oldest one not delivered to this target, oldest first (some
        after it may be delivered already: :meth:`deliver` skips them)."""
        first, top = deliveries.first_pending(self.store, self.target, self._floor,
                                              self.project, self.now() - IN_FLIGHT)
        if first is None:
            self._floor = max(self._floor, top)
            return []
        # Never past an id that may still be committing (see first_pending): it is looked
        # at again on the next poll, and skipped there if it was delivered.
        self._floor = max(self._floor, min(first - 1, top))
        return sorted((a for a in self.fetch(first - 1) if a.id > self._floor),
                      key=lambda a: a.id)

    def deliver(self, alert: AlertLike) -> bool | None:
        """POST ``alert`` until a 2xx: True once delivered, None if it is delivered already or
        another worker holds it; DeliveryFailed after every attempt failed."""
        data = body(alert)
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(data, self._secret),
                   "X-Ledger-Alert-Id": str(alert.id)}
        last = Attempt(False, None, "not attempted")
        for n in range(1, self.backoff.attempts + 1):
            now = self.now()
            if not deliveries.claim(self.store, self.target, alert.id, self.worker_id, now,
                                    now + self.lease):
                return None
            last = self.send(self.url, data, {**headers, "X-Ledger-Delivery-Attempt": str(n)})
            if last.ok:
                if deliveries.delivered(self.store, self.target, alert.id, self.now()):
                    self.report(f"delivered alert {alert.id} ({_label(alert)}) to "
                                f"{self.shown}" + (f" after {n} attempts" if n > 1 else ""))
                return True
            error = last.error or "failed"
            if n == self.backoff.attempts:
                deliveries.failed(self.store, self.target, alert.id, self.worker_id, error,
                                  self.now(), self.now())  # let it go: any worker may retry
                break
            wait = self.backoff.delay(n, self.rand())
            deliveries.failed(self.store, self.target, alert.id, self.worker_id, error,
                              self.now(), self.now() + timedelta(seconds=wait) + self.lease)
            log.info("alert %s to %s: attempt %s failed (%s); retrying in %.1fs",
                     alert.id, self.shown, n, error, wait)
            self.warn(f"alert {alert.id}: attempt {n} failed ({error}); retrying in "
                      f"{wait:.1f}s")
            self.sleep(wait)
        failure = DeliveryFailed(alert.id, self.shown, self.backoff.attempts,
                                 last.error or "failed")
        self.report(f"alert {alert.id} ({_label(alert)}): {failure}")
        raise failure

    # -- passes -----------------------------------------------------------------------------
    def run_pass(self) -> PassResult:
        """Deliver the pending alerts in id order; stop at one that fails every attempt or
        that another live worker holds (``busy``)."""
        result = PassResult()
        for alert in self.pending():
            try:
                done = self.deliver(alert)
            except DeliveryFailed as exc:
                result.failed = exc
                break
            if done:
                result.delivered.append(alert.id)
            elif done is None and not self._delivered(alert.id):
                result.busy.append(alert.id)
                break
        return result

    def _lapses(self, alert_id: int, now: datetime) -> datetime:
        """When another worker's claim on ``alert_id`` lapses, as it stands now (a second
        after it; at most a lease and the longest back-off away)."""
        found = deliveries.rows(self.store, self.target, [alert_id])
        until = found[0].claimed_until if found else None
        longest = now + self.lease + timedelta(seconds=self.backoff.cap)
        if until is None:
            return now + self.lease
        return min(until + timedelta(seconds=1), longest)

    def _delivered(self, alert_id: int) -> bool:
        found = deliveries.rows(self.store, self.target, [alert_id])
        return bool(found) and found[0].delivered_at is not None

    def run(self) -> PassResult:
        """One run: deliver everything pending, then return. An alert another worker holds
        is waited for until it is delivered or the claim it had when first seen lapses (a
        killed worker's does, and this worker takes the alert over); if a live worker keeps
        it, the run returns with it in ``busy``. Raises DeliveryFailed (after delivering what
        came before it)."""
        total = PassResult()
        deadline: datetime | None = None
        while True:
            result = self.run_pass()
            total.delivered += result.delivered
            if result.failed is not None:
                raise result.failed
            if not result.busy:
                return total
            now = self.now()
            if deadline is None or result.delivered:
                deadline = self._lapses(result.busy[0], now)
            if now >= deadline:
                total.busy = result.busy
                return total
            self.sleep(BUSY_POLL)

    def follow(self, interval: float, stop: Callable[[], bool]) -> PassResult:
        """Deliver as alerts come, polling every ``interval`` seconds until ``stop()``; a
        failing webhook or an unreachable database is reported and retried, never fatal.
        Claims still held are released when it stops."""
        total = PassResult()
        try:
            while not stop():
                try:
                    result = self.run_pass()
                except LedgerUnavailable as exc:
                    self.report(f"the ledger database is unavailable ({exc}); retrying")
                    result = PassResult()
                total.delivered += result.delivered
                if stop():
                    break
                self.sleep(interval)
        finally:
            with contextlib.suppress(LedgerUnavailable):  # else the claims lapse by themselves
                deliveries.release(self.store, self.target, self.worker_id)
        return total


def _label(alert: AlertLike) -> str:
    scope = alert.project
    if alert.user is not None:
        scope += f" user={alert.user}"
    if alert.tag is not None:
        scope += f" tag={alert.tag}"
    return f"{scope} {alert.period} {alert.window}: {alert.threshold}%"
