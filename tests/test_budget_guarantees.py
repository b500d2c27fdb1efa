"""Hard budgets stay hard through the metered transport, and no call vanishes unrecorded."""

from __future__ import annotations

import gc
import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import openai

from ledger import Ledger, ManualClock, MeteredTransport
from ledger.testing import Behavior, RunAPISimulator, assert_consistent

LONG_REPLY = " ".join(["word"] * 2000)
BODY: dict[str, Any] = {"model": "kimi-k2.5",
                        "messages": [{"role": "user", "content": "write a lot"}]}


class TestDefaultCap:
    def test_uncapped_call_is_sent_with_the_default_cap(self, sqlite_url: str,
                                                        sim: RunAPISimulator) -> None:
        """A call with no max_tokens goes out with the ledger's default cap: never overspent."""
        sim.default = Behavior(reply=LONG_REPLY)
        with Ledger(sqlite_url, default_max_tokens=100) as book:
            book.set_budget("acme", Decimal("0.01"))
            client = openai.OpenAI(base_url=sim.openai_base_url, api_key="k",
                                   http_client=book.httpx_client("acme"))
            client.chat.completions.create(**BODY)
            assert sim.requests[-1].json["max_tokens"] == 100
            state = book.budget("acme")
            assert state.spent <= state.limit  # type: ignore[operator]
            assert_consistent(book)

    def test_a_cap_the_caller_set_is_left_alone(self, book: Ledger,
                                                sim: RunAPISimulator) -> None:
        """max_tokens or max_completion_tokens from the caller is forwarded unchanged."""
        client = openai.OpenAI(base_url=sim.openai_base_url, api_key="k",
                               http_client=book.httpx_client("acme"))
        client.chat.completions.create(**BODY, max_completion_tokens=7)
        sent = sim.requests[-1].json
        assert sent["max_completion_tokens"] == 7 and "max_tokens" not in sent

    def test_default_cap_can_be_turned_off(self, sqlite_url: str,
                                           sim: RunAPISimulator) -> None:
        """send_default_cap=False forwards the body as the caller wrote it."""
        with Ledger(sqlite_url, send_default_cap=False) as book:
            client = openai.OpenAI(base_url=sim.openai_base_url, api_key="k",
                                   http_client=book.httpx_client("acme"))
            client.chat.completions.create(**BODY)
        assert "max_tokens" not in sim.requests[-1].json


class TestNothingVanishes:
    def test_expired_hold_leaves_an_expired_event(self, book: Ledger,
                                                  clock: ManualClock) -> None:
        """A hold that expires unresolved is written down (cost zero), not silently dropped."""
        h = book.hold("acme", "kimi-k2.5", 100, 100)
        clock.advance(book.hold_ttl + timedelta(seconds=1))
        assert book.expire_holds() == 1
        rows = list(book.usage(project="acme", status="expired"))
        assert len(rows) == 1 and rows[0].cost == 0 and h.call_id in (rows[0].error or "")
        assert book.settle(h.call_id, 100, 10) == Decimal("0.0022")   # late usage still counts
        assert_consistent(book)

    def test_abandoned_stream_is_settled_when_collected(self, book: Ledger,
                                                        sim: RunAPISimulator) -> None:
        """A streamed response dropped unread and unclosed settles when garbage-collected."""
        with httpx.Client(transport=MeteredTransport(book, "acme")) as client:
            request = client.build_request(
                "POST", sim.openai_base_url + "/chat/completions",
                json={**BODY, "stream": True, "max_tokens": 20})
            response = client.send(request, stream=True)
            assert response.status_code == 200
            del response, request
            gc.collect()
            for thread in threading.enumerate():  # the settle runs off the collector
                if thread.name == "ledger-abandoned-stream":
                    thread.join(10)
        assert book.budget("acme").held == 0
        statuses = [r.status for r in book.usage(project="acme")]
        assert statuses == ["cancelled"]
        assert_consistent(book)


    def test_long_stream_renews_its_hold(self, sqlite_url: str, sim: RunAPISimulator) -> None:
        """A stream that outlasts the hold TTL keeps renewing its hold: it never expires."""
        sim.default = Behavior(chunk_delay=0.1)
        with Ledger(sqlite_url, hold_ttl=timedelta(seconds=0.6)) as book, \
                httpx.Client(transport=MeteredTransport(book, "acme")) as client:
            body = {**BODY, "stream": True, "max_tokens": 20}
            expired = []
            with client.stream("POST", sim.openai_base_url + "/chat/completions",
                               json=body) as response:
                for i, _chunk in enumerate(response.iter_raw()):
                    if i in (10, 15):  # 1 s and 1.5 s in: past the 0.6 s TTL
                        expired.append(book.expire_holds())
            assert expired == [0, 0]
            assert [r.status for r in book.usage(project="acme")] == ["ok"]
            assert_consistent(book)
