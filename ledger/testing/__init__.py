"""Helpers for testing code that uses runapi-ledger (ours and yours).

* ``RunAPISimulator`` / ``Behavior``: a real loopback HTTP server speaking RunAPI's OpenAI and
  Anthropic shapes, streaming or not, with failure injection (see ``simulator``).
* ``ManualClock``: time that moves only when told, for budgets, expiry and month boundaries.
* ``temporary_ledger``: a ledger on a throw-away SQLite file.
* ``assert_consistent``: the ledger's books balance (running totals equal the events and
  pending holds; no negative amounts).

Example::

    from ledger.testing import RunAPISimulator, temporary_ledger, assert_consistent

    with RunAPISimulator() as sim, temporary_ledger() as book:
        client = openai.OpenAI(base_url=sim.openai_base_url, api_key="test",
                               http_client=book.httpx_client("acme"))
        client.chat.completions.create(model="kimi-k2.5", messages=[...])
        assert book.spend("acme") > 0
        assert_consistent(book)
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from ..clock import Clock, ManualClock
from ..core import Ledger
from .simulator import Behavior, RecordedRequest, RunAPISimulator

__all__ = [
    "Behavior",
    "ManualClock",
    "RecordedRequest",
    "RunAPISimulator",
    "assert_consistent",
    "temporary_ledger",
]


@contextmanager
def temporary_ledger(*, clock: Clock | None = None, hold_ttl: timedelta | None = None,
                     **kwargs: Any) -> Iterator[Ledger]:
    """A fresh ledger on a SQLite file in a temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="ledger-test-") as d:
        if hold_ttl is not None:
            kwargs["hold_ttl"] = hold_ttl
        book = Ledger(f"sqlite:///{d}/ledger.db", clock=clock, spool_path=f"{d}/ledger.spool",
                      **kwargs)
        try:
            yield book
        finally:
            book.close()


def assert_consistent(book: Ledger) -> None:
    """Fail with the differences if the running totals disagree with events and holds."""
    problems = book.store.check_totals(book.now())
    if problems:
        raise AssertionError("ledger books do not balance:\n" + "\n".join(problems))
