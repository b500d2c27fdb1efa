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
from ledger.sse import StreamMeter
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
        """The seeded generator yields every kind, every shape, every expectation."""
        cases = list(hostile_cases(3, 4000, huge_every=50))
        kinds = Counter(c.kind for c in cases)
        assert len(kinds) >= 49 and min(v for k, v in kinds.items() if "huge" not in k) >= 15
        assert kinds["json/huge-line"] + kinds["sse/huge-line"] == 4000 // 50
        assert {c.shape for c in cases} == {"openai", "anthropic", "responses", "completions",
                                            "embeddings"}
        assert {c.expect for c in cases} == {"ok-exact", "ok-estimated", "ok", "failed",
                                             "cancelled", "any"}
        assert sum(c.fail_after is not None for c in cases) > 50
        assert any(len(c.body) > 1_000_000 for c in cases)

    def test_it_covers_the_items_of_issue_9(self) -> None:
        """Issue 9 items 1-3, 5-11: Responses/Completions/Embeddings bodies and streams, null
        and absent caps, Kimi's usage in choices and top-level cached_tokens, reasoning-only
        estimates, a missing final Anthropic count, bad details, disagreeing totals, br/zstd
        encoded 200 streams and bodies."""
        cases = list(hostile_cases(3, 4000, huge_every=50))
        by = Counter((c.shape, c.kind) for c in cases)
        for shape in ("responses", "completions"):
            for kind in ("sse/valid", "sse/truncated", "sse/error-event", "json/valid",
                         "json/bad-detail", "json/total-more", "sse/br"):
                assert by[(shape, kind)] > 0, (shape, kind)
        assert by[("embeddings", "json/valid")] > 0 and by[("embeddings", "json/zstd")] > 0
        for kind in ("sse/kimi-choice-usage", "json/top-cached", "sse/reasoning-no-usage"):
            assert by[("openai", kind)] > 0, kind
        assert by[("anthropic", "sse/final-usage-missing")] > 0
        assert {c.content_encoding for c in cases if c.stream} >= {"br", "zstd", "gzip"}
        assert {c.request_cap for c in cases if c.shape != "embeddings"} >= {500, None,
                                                                              "absent"}
        kimi = [c for c in cases if c.kind == "sse/kimi-choice-usage"]
        assert any(c.body.count(b'"usage"') > 1 for c in kimi)  # n > 1: one per choice

    def test_it_is_deterministic_for_a_seed(self) -> None:
        """The same seed makes the same replies, so any failure can be replayed."""
        def fingerprint(seed: int) -> list[tuple[str, bytes]]:
            return [(c.kind, c.body) for c in hostile_cases(seed, 300)]

        assert fingerprint(11) == fingerprint(11)
        assert fingerprint(11) != fingerprint(12)


#: Stream kinds whose reading has an end (a split can change nothing but where it is cut).
WHOLE_STREAMS = {"sse/valid", "sse/bad-usage", "sse/no-usage", "sse/crlf", "sse/cr",
                 "sse/comments", "sse/bom", "sse/after-end", "sse/double-usage",
                 "sse/bad-detail", "sse/total-more", "sse/reasoning-no-usage",
                 "sse/final-usage-missing", "sse/kimi-choice-usage", "sse/error-event",
                 "sse/truncated", "sse/garbled-event", "sse/non-utf8"}


def stream_reading(shape: str, chunks: list[bytes], drop: bool = False) -> tuple[Any, ...]:
    meter = StreamMeter(shape, drop_usage_chunk=drop)  # type: ignore[arg-type]
    out = b"".join(meter.feed(c) for c in chunks) + meter.finish()
    return out, meter.usage, meter.text, meter.done, meter.error, meter.garbled


class TestEveryOffset:
    @pytest.mark.timeout(300)
    def test_generated_streams_read_the_same_split_at_every_byte_offset(self) -> None:
        """Issue 9 "Done when": one generated stream of each kind and shape (Responses, Kimi's
        usage in choices, bad details, totals...) cut in two at every byte offset gives the
        same bytes and the same reading (usage, text, end, error) as in one piece."""
        picked: dict[tuple[str, str], HostileCase] = {}
        for case in hostile_cases(5, 6000, huge_every=0):
            if (case.stream and case.kind in WHOLE_STREAMS and case.content_encoding is None
                    and case.fail_after is None and case.status == 200
                    and 0 < len(case.body) <= 1500):
                picked.setdefault((case.shape, case.kind), case)
        assert len(picked) >= 60 and {s for s, _ in picked} == {
            "openai", "anthropic", "responses", "completions"}
        for (shape, kind), case in picked.items():
            raw = case.body
            whole = stream_reading(shape, [raw])
            assert whole[0] == raw
            for cut in range(len(raw) + 1):
                assert stream_reading(shape, [raw[:cut], raw[cut:]]) == whole, (shape, kind, cut)
            if shape in ("openai", "completions"):  # the ledger asked for the usage: dropped
                ones = [raw[i:i + 1] for i in range(len(raw))]
                assert stream_reading(shape, ones, True)[1:] == stream_reading(
                    shape, [raw], True)[1:], (shape, kind)


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
