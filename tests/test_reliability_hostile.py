"""Hostile replies through the real metered transport (issue 5, "hostile input").

A seeded generator (``tests.harness.hostile.hostile_cases``) makes JSON bodies and SSE
streams of both shapes: malformed and truncated JSON, missing, negative, fractional, string and
absurd token counts, non-UTF-8 bytes, huge lines, error statuses and error events mid-stream,
bare CR line endings, a BOM, bytes after the end, arbitrary chunking, transports breaking
mid-body and callers closing early. Most go through ``MeteredTransport`` wrapping an
``httpx.MockTransport``; a few hundred come from the simulator over real loopback HTTP.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from ledger import Ledger, ManualClock
from ledger.metering import CALL_ID_HEADER
from ledger.transport import MeteredTransport
from tests.harness.hostile import HostileCase, hostile_cases, hostile_suite
from tests.harness.oracle import event_rows


@pytest.fixture
def hostile_book(sqlite_url: str) -> Ledger:
    return Ledger(sqlite_url, clock=ManualClock(datetime(2026, 11, 10, 12, tzinfo=UTC)))


class TestHostileReplies:
    @pytest.mark.timeout(600)
    def test_ten_thousand_generated_replies_never_break_the_caller_or_the_books(
            self, hostile_book: Ledger) -> None:
        """10,000 mocked + 300 loopback replies: no crash, bytes unchanged, books exact."""
        figures = hostile_suite(hostile_book, n=10_000, loopback=300, seed=20261110)
        hostile_book.close()
        assert figures.problems == []
        assert figures.extra["inputs"] >= 10_000
        assert figures.extra["over_loopback"] >= 200
        assert (figures.usage_lost, figures.charged_twice, figures.unresolved_holds) == (0, 0, 0)
        assert figures.failed > 1000  # error statuses, error events, cuts: all recorded at 0

    @pytest.mark.timeout(300)
    def test_postgres_books_stay_exact_under_hostile_replies(self, pg_url: str) -> None:
        """The same generator on a PostgreSQL ledger (a shorter run)."""
        with Ledger(pg_url, clock=ManualClock(datetime(2026, 11, 10, tzinfo=UTC))) as book:
            figures = hostile_suite(book, n=600, loopback=30, seed=7)
        assert figures.problems == []
        assert figures.calls >= 600


class TestGenerator:
    def test_it_covers_every_kind_of_damage(self) -> None:
        """The seeded generator yields every kind, both shapes, every expectation."""
        cases = list(hostile_cases(3, 4000, huge_every=50))
        kinds = Counter(c.kind for c in cases)
        assert len(kinds) >= 35 and min(v for k, v in kinds.items() if "huge" not in k) >= 20
        assert kinds["json/huge-line"] + kinds["sse/huge-line"] == 4000 // 50
        assert {c.shape for c in cases} == {"openai", "anthropic"}
        assert {c.expect for c in cases} == {"ok-exact", "ok-estimated", "ok", "failed",
                                             "cancelled", "any"}
        assert sum(c.fail_after is not None for c in cases) > 50
        assert any(len(c.body) > 1_000_000 for c in cases)

    def test_it_is_deterministic_for_a_seed(self) -> None:
        """The same seed makes the same replies, so any failure can be replayed."""
        def fingerprint(seed: int) -> list[tuple[str, bytes]]:
            return [(c.kind, c.body) for c in hostile_cases(seed, 300)]

        assert fingerprint(11) == fingerprint(11)
        assert fingerprint(11) != fingerprint(12)


class TestRegressions:
    def reply(self, book: Ledger, case: HostileCase) -> dict[str, Any]:
        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(case.status, content=case.body,
                                  headers={"content-type": "application/json"})

        client = httpx.Client(transport=MeteredTransport(book, "acme",
                                                         wrapped=httpx.MockTransport(handler)))
        with client:
            response = client.post("http://runapi.test/v1/chat/completions",
                                   json={"model": "kimi-k2.5", "max_tokens": 50,
                                         "messages": [{"role": "user", "content": "hi"}]})
        assert response.content == case.body
        rows = event_rows(book)
        assert len(rows) == 1 and rows[0]["call_id"] == response.headers[CALL_ID_HEADER]
        return rows[0]

    @pytest.mark.parametrize("usage", [
        {"prompt_tokens": 0, "completion_tokens": 0},
        {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    ])
    def test_a_success_claiming_zero_tokens_is_charged_by_estimate(
            self, hostile_book: Ledger, usage: dict[str, int]) -> None:
        """A 200 whose usage says it used nothing is not believed: charged by estimate, > $0."""
        body = json.dumps({"choices": [{"message": {"content": "hello back"}}],
                           "usage": usage}).encode()
        row = self.reply(hostile_book, HostileCase("zero", "openai", False, 200, None, [body],
                                                   "ok"))
        assert row["status"] == "ok" and row["estimated"] and row["cost"] > 0

    def test_absurd_token_counts_are_not_believed(self, hostile_book: Ledger) -> None:
        """Counts beyond any model's reach (10^30) are charged by estimate, never stored."""
        body = b'{"usage": {"prompt_tokens": 1000000000000000000000000000000, ' \
               b'"completion_tokens": 5}}'
        row = self.reply(hostile_book, HostileCase("absurd", "openai", False, 200, None, [body],
                                                   "ok"))
        assert row["status"] == "ok" and row["estimated"]
        assert 0 < row["prompt_tokens"] < 1000
