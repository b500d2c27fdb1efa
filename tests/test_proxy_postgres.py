"""Many proxies, one ledger: two ``ledger serve`` processes (one of them with two workers) on
one PostgreSQL ledger, racing for a small hard budget through both, never overspend it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from helpers import MESSAGES, cost

from ledger import Ledger
from ledger.proxy.keys import create_key
from ledger.testing import assert_consistent
from ledger.testing.simulator import Behavior, RunAPISimulator
from tests.harness.proxy import running_proxy

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]

CALLS = 40
#: Worst case = actual: 5 prompt + 20 completion tokens ($0.0005): exactly ten calls fit.
LIMIT = Decimal("0.005")


def test_two_proxies_racing_one_hard_budget_never_overspend(pg_url: str, tmp_path: Path) -> None:
    """40 concurrent streamed calls through two proxies: at most the budget is spent, every
    refusal is a 402 that never reached upstream, the books balance, and the two-worker
    proxy's /metrics counts its calls over both workers."""
    with Ledger(pg_url) as book:
        book.set_budget("race", LIMIT)
        key = create_key(book.store, book.now(), "race").key
        with RunAPISimulator() as sim:
            sim.default = Behavior(chunk_delay=0.01)
            with running_proxy(pg_url, sim.base_url, tmp_path, args=["--workers", "2"]) as a, \
                    running_proxy(pg_url, sim.base_url, tmp_path) as b:
                targets = [a.openai_base_url, b.openai_base_url] * (CALLS // 2)

                def call(base: str) -> int:
                    with httpx.Client(timeout=60) as client:
                        with client.stream(
                                "POST", base + "/chat/completions",
                                headers={"authorization": f"Bearer {key}"},
                                json={"model": "kimi-k2.5", "messages": MESSAGES,
                                      "max_tokens": 20, "stream": True}) as reply:
                            reply.read()
                            return reply.status_code

                with ThreadPoolExecutor(CALLS) as pool:
                    statuses = list(pool.map(call, targets))
                # /metrics of the two-worker proxy adds up both workers' calls.
                through_a = sum(1 for t, st in zip(targets, statuses, strict=True)
                                if t == a.openai_base_url and st == 200)
                page = httpx.get(a.url + "/metrics").text
                line = 'ledger_proxy_calls_total{model="kimi-k2.5",project="race",status="ok"}'
                counted = [float(x.split()[-1]) for x in page.splitlines() if x.startswith(line)]
                assert counted == ([float(through_a)] if through_a else [])
            admitted = statuses.count(200)
            assert statuses.count(402) == CALLS - admitted
            assert 1 <= admitted <= 10
            assert sim.request_count == admitted
        assert book.spend("race") == cost(25) * admitted <= LIMIT
        assert book.budget("race").held == 0
        assert_consistent(book)
