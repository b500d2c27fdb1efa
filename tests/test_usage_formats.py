"""Usage the ledger used not to read (issue 9, items 5-9 and 11), on replies recorded from real
servers and Moonshot's documented formats (``tests/fixtures/usage/README.md`` names each source).

Each test names its item; each fails on the code before the fix. Streams are also read split at
every byte offset: the reading must not depend on where the network cut them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from ledger import Ledger, ManualClock
from ledger.cli import main
from ledger.cli.options import CliState
from ledger.metering import ResponseMeter, prepare
from ledger.shapes import Shape, Usage, text_from_body, usage_from_body
from ledger.sse import StreamMeter
from ledger.store.ops import Outcome
from ledger.transport import MeteredTransport

FIXTURES = Path(__file__).parent / "fixtures" / "usage"
SSE = "text/event-stream"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def request(shape: Shape, *, stream: bool = True, n: int | None = None) -> bytes:
    body: dict[str, Any] = {"model": "kimi-k2.5", "max_tokens": 4000, "stream": stream,
                            "messages": [{"role": "user", "content": "What's the weather?"}]}
    if n is not None:
        body["n"] = n
    return json.dumps(body).encode()


def outcome_of(book: Ledger, shape: Shape, raw: bytes, *, stream: bool = True,
               cut: int | None = None, n: int | None = None) -> Outcome:
    """Run ``raw`` through the metering of a reply; ``cut``: the caller closes after that many
    bytes."""
    prepared = prepare(book, shape, "acme", request(shape, stream=stream, n=n))
    meter = ResponseMeter(prepared, 200, SSE if stream else "application/json", None,
                          lambda text: book.estimator.count_text(prepared.model, text))
    body = raw if cut is None else raw[:cut]
    for i in range(0, len(body), 97):
        meter.feed(body[i:i + 97])
    meter.finish()
    return meter.outcome("eof" if cut is None else "closed")


def stream_reading(shape: Shape, chunks: list[bytes], drop: bool = False) -> tuple[Any, ...]:
    meter = StreamMeter(shape, drop_usage_chunk=drop)
    out = b"".join(meter.feed(c) for c in chunks) + meter.finish()
    return out, meter.usage, meter.text, meter.done, meter.error, meter.garbled


def assert_every_split_reads_the_same(shape: Shape, raw: bytes) -> Usage | None:
    """Cut ``raw`` at every byte offset: the same bytes handed on and the same reading.

    Streams up to 2,500 bytes are cut in two at each offset; longer ones are fed one byte per
    chunk (every offset a boundary at once) and cut in two around every event boundary."""
    whole = stream_reading(shape, [raw])
    assert whole[0] == raw and whole[3] and whole[4] is None and not whole[5]
    if len(raw) <= 2500:
        cuts: Iterable[int] = range(len(raw) + 1)
    else:
        assert stream_reading(shape, [raw[i:i + 1] for i in range(len(raw))]) == whole
        ends = [i for i in range(len(raw)) if raw[i:i + 2] == b"\n\n"]
        cuts = sorted({c for e in ends for c in range(e - 2, e + 4) if 0 <= c <= len(raw)})
    for cut in cuts:
        assert stream_reading(shape, [raw[:cut], raw[cut:]]) == whole, cut
    for drop in (True,) if shape == "openai" else ():
        assert stream_reading(shape, [raw[i:i + 1] for i in range(len(raw))], drop)[1:] == \
            stream_reading(shape, [raw], drop)[1:]
    usage: Usage | None = whole[1]
    return usage


def without_final_usage(raw: bytes) -> bytes:
    """An Anthropic stream whose ``message_delta`` carries no ``usage``."""
    lines = []
    for line in raw.decode().split("\n"):
        if line.startswith("data: ") and '"message_delta"' in line:
            obj = json.loads(line[6:])
            obj.pop("usage", None)
            line = "data: " + json.dumps(obj)
        lines.append(line)
    return "\n".join(lines).encode()


class TestKimiUsageInChoices:
    """Issue 9 item 5."""

    def test_the_documented_stream_is_billed_at_its_reported_usage(self, book: Ledger) -> None:
        """Issue 9 item 5: usage inside choices[0] of Kimi's last chunk is read (19/13)."""
        outcome = outcome_of(book, "openai", fixture("kimi_doc_stream_choice_usage.sse"))
        assert (outcome.status, outcome.estimated) == ("ok", False)
        assert (outcome.prompt_tokens, outcome.completion_tokens) == (19, 13)

    def test_n_choices_bill_the_prompt_once_and_every_completion(self, book: Ledger) -> None:
        """Issue 9 item 5: with n=2 each choice's usage counts: prompt once, 13 + 8 completion."""
        outcome = outcome_of(book, "openai", fixture("kimi_doc_stream_choice_usage_n2.sse"), n=2)
        assert (outcome.estimated, outcome.prompt_tokens, outcome.completion_tokens) == (
            False, 19, 21)

    def test_a_repeated_choice_usage_is_not_counted_twice(self) -> None:
        """Issue 9 item 5: the same choice reporting its usage twice counts once (latest)."""
        raw = fixture("kimi_doc_stream_choice_usage.sse")
        last = raw.split(b"\n\n")[-3] + b"\n\n"
        meter = StreamMeter("openai")
        meter.feed(raw.replace(b"data: [DONE]", last + b"data: [DONE]"))
        meter.finish()
        assert meter.usage == Usage(19, 13)

    def test_a_top_level_usage_wins_over_the_choices(self) -> None:
        """Issue 9 item 5 (guard): Kimi with include_usage also sends the total: it is the one billed."""
        raw = fixture("kimi_doc_stream_choice_usage.sse").replace(
            b"data: [DONE]", b'data: {"choices":[],"usage":{"prompt_tokens":19,'
            b'"completion_tokens":14,"total_tokens":33}}\n\ndata: [DONE]')
        meter = StreamMeter("openai", drop_usage_chunk=True)
        meter.feed(raw)
        meter.finish()
        assert meter.usage == Usage(19, 14)

    def test_a_non_stream_body_with_usage_in_its_choice(self) -> None:
        """Issue 9 item 5: a body whose only usage is inside choices[0] is read too."""
        body = json.dumps({"choices": [{"index": 0, "message": {"content": "hi"},
                                        "usage": {"prompt_tokens": 19, "completion_tokens": 13,
                                                  "total_tokens": 32}}]}).encode()
        assert usage_from_body("openai", body) == Usage(19, 13)

    @pytest.mark.parametrize("name, usage", [
        ("kimi_doc_stream_choice_usage.sse", Usage(19, 13)),
        ("kimi_doc_stream_choice_usage_n2.sse", Usage(19, 21)),
    ])
    def test_every_split_reads_the_same(self, name: str, usage: Usage) -> None:
        """Issue 9 item 5: the choice usage is read the same wherever the stream is cut."""
        assert assert_every_split_reads_the_same("openai", fixture(name)) == usage


class TestKimiCacheAndReasoningTokens:
    """Issue 9 item 6."""

    def test_top_level_cached_tokens_in_a_body(self) -> None:
        """Issue 9 item 6: Kimi's usage.cached_tokens (no prompt_tokens_details) is read."""
        assert usage_from_body("openai", fixture("kimi_doc_cached.json")) == Usage(19, 21, 10)

    def test_top_level_cached_tokens_in_a_stream(self) -> None:
        """Issue 9 item 6: the same in the stream's final usage, at every split."""
        usage = assert_every_split_reads_the_same("openai", fixture("kimi_doc_stream_top_cached.sse"))
        assert usage == Usage(19, 13, 12)

    def test_both_places_disagreeing_take_the_smaller(self) -> None:
        """Issue 9 item 6 (guard): cached tokens are cheaper; two reports disagreeing bill the fewer."""
        body = json.dumps({"usage": {"prompt_tokens": 30, "completion_tokens": 5,
                                     "cached_tokens": 12,
                                     "prompt_tokens_details": {"cached_tokens": 8}}}).encode()
        usage = usage_from_body("openai", body)
        assert usage is not None and usage.cached_tokens == 8

    def test_reasoning_tokens_of_a_real_kimi_stream(self) -> None:
        """Issue 9 item 6: kimi-k2.5 via a real server: 76/47, 64 cached, 34 reasoning."""
        usage = assert_every_split_reads_the_same(
            "openai", fixture("kimi_k25_avian_thinking_tool_stream.sse"))
        assert usage is not None
        assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens,
                usage.reasoning_tokens, usage.notes) == (76, 47, 64, 34, ())

    def test_responses_api_reasoning_tokens(self) -> None:
        """Issue 9 item 6: output_tokens_details.reasoning_tokens is read as well."""
        body = json.dumps({"usage": {"prompt_tokens": 10, "completion_tokens": 30,
                                     "output_tokens_details": {"reasoning_tokens": 20}}}).encode()
        usage = usage_from_body("openai", body)
        assert usage is not None and usage.reasoning_tokens == 20

    def test_reasoning_tokens_are_stored_and_listed(self, sqlite_url: str,
                                                    clock: ManualClock) -> None:
        """Issue 9 item 6: the reasoning tokens reach events.reasoning_tokens and `ledger usage`;
        they stay inside the completion tokens for the price."""
        raw = fixture("kimi_k25_avian_thinking_tool_stream.sse")
        with Ledger(sqlite_url, clock=clock) as book:
            transport = MeteredTransport(book, "acme", wrapped=httpx.MockTransport(
                lambda _: httpx.Response(200, content=raw, headers={"content-type": SSE})))
            with httpx.Client(transport=transport) as client:
                with client.stream("POST", "http://runapi.test/v1/chat/completions",
                                   content=request("openai")) as response:
                    assert response.read() == raw
            rows = list(book.usage())
            assert [(r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.reasoning_tokens,
                     r.estimated) for r in rows] == [(76, 47, 64, 34, False)]
            price = book.price("kimi-k2.5")
            assert rows[0].cost == (price.input_per_1k * 76 + price.output_per_1k * 47) / 1000
        result = CliRunner().invoke(main, ["usage", "--format", "json"],
                                    obj=CliState(db=sqlite_url, clock=clock))
        assert result.exit_code == 0, result.stderr
        listed = json.loads(result.stdout)
        rows_json = listed if isinstance(listed, list) else listed["rows"]
        assert [r["reasoning_tokens"] for r in rows_json] == [34]

    def test_usage_without_reasoning_stores_null(self, book: Ledger,
                                                 ledger_events: Callable[[Ledger], list[Any]]
                                                 ) -> None:
        """Issue 9 item 6: a server that reports no reasoning tokens leaves the column NULL."""
        with book.metered_call("acme", {"model": "kimi-k2.5", "messages": []}) as call:
            call.settle({"usage": {"prompt_tokens": 5, "completion_tokens": 2}})
        assert [e["reasoning_tokens"] for e in ledger_events(book)] == [None]


class TestEstimateCountsAllOutput:
    """Issue 9 item 7."""

    def test_a_cut_kimi_stream_counts_reasoning_and_tool_arguments(self, book: Ledger) -> None:
        """Issue 9 item 7: a real kimi-k2.5 stream (47 completion tokens, 34 reasoning) closed
        before its usage is estimated from its reasoning and tool call, not its empty text."""
        raw = fixture("kimi_k25_avian_thinking_tool_stream.sse")
        cut = raw.index(b'"finish_reason": "tool_calls"')
        outcome = outcome_of(book, "openai", raw, cut=cut)
        assert (outcome.status, outcome.estimated) == ("cancelled", True)
        assert 35 <= outcome.completion_tokens <= 94, outcome

    def test_a_cut_anthropic_stream_counts_thinking_and_tool_input(self, book: Ledger) -> None:
        """Issue 9 item 7: thinking_delta and input_json_delta are counted (real claude stream,
        119 output tokens), signature_delta is not."""
        raw = fixture("anthropic_sonnet4_thinking_tool_stream.sse")
        outcome = outcome_of(book, "anthropic", raw, cut=raw.index(b"event: message_delta"))
        assert outcome.status == "cancelled"
        assert 60 <= outcome.completion_tokens <= 240, outcome
        meter = StreamMeter("anthropic")
        meter.feed(raw)
        meter.finish()
        assert "Florence" in meter.text and '"location"' in meter.text
        signature = json.loads(next(
            line[6:] for line in raw.decode().splitlines() if "signature_delta" in line))
        assert signature["delta"]["signature"][:40] not in meter.text

    def test_anthropic_sdk_tool_use_stream(self, book: Ledger) -> None:
        """Issue 9 item 7: the tool's JSON input counts (anthropic-sdk-python fixture)."""
        meter = StreamMeter("anthropic")
        meter.feed(fixture("anthropic_sdk_tool_use_stream.sse"))
        meter.finish()
        assert meter.text.endswith('get_weather{"location": "Paris"}')

    def test_a_body_without_usage_counts_reasoning_and_tool_calls(self, book: Ledger) -> None:
        """Issue 9 item 7: non-stream bodies: reasoning_content and tool_calls arguments."""
        body = json.dumps({"choices": [{"message": {
            "content": None, "reasoning_content": "Let me think about the weather " * 20,
            "tool_calls": [{"type": "function", "function": {
                "name": "weather", "arguments": json.dumps({"location": "Florence"})}}]}}]})
        outcome = outcome_of(book, "openai", body.encode(), stream=False)
        assert outcome.estimated and outcome.completion_tokens >= 100
        assert "Florence" in text_from_body("openai", body.encode())

    def test_an_anthropic_body_without_usage_counts_thinking_and_tool_use(self) -> None:
        """Issue 9 item 7: a real claude body, usage removed: thinking and tool_use input."""
        obj = json.loads(fixture("anthropic_sonnet4_thinking_tool.json"))
        obj.pop("usage")
        text = text_from_body("anthropic", json.dumps(obj).encode())
        assert "Florence" in text and '"location"' in text and len(text) > 200

    def test_every_split_of_the_thinking_streams(self) -> None:
        """Issue 9 item 7: the text (reasoning, tool input) reads the same at every split."""
        usage = assert_every_split_reads_the_same(
            "anthropic", fixture("anthropic_sonnet4_thinking_tool_stream.sse"))
        assert usage is not None and usage.completion_tokens == 119 and not usage.estimated
        assert assert_every_split_reads_the_same(
            "anthropic", fixture("anthropic_sdk_tool_use_stream.sse")) == Usage(377, 65)


class TestAnthropicPlaceholderOutput:
    """Issue 9 item 8."""

    @pytest.mark.parametrize("name", ["anthropic_sonnet4_thinking_tool_stream.sse",
                                      "anthropic_sdk_tool_use_stream.sse"])
    def test_a_stream_without_final_usage_is_an_estimate(self, book: Ledger, name: str) -> None:
        """Issue 9 item 8: no usage in message_delta: flagged estimated, output from the text."""
        outcome = outcome_of(book, "anthropic", without_final_usage(fixture(name)))
        assert (outcome.status, outcome.estimated) == ("ok", True)
        assert outcome.completion_tokens > 10, outcome
        assert outcome.error is not None and "message_delta" in outcome.error

    @pytest.mark.parametrize("bad", ['"65"', "-1", "65.0", "true", "null", "{}"])
    def test_an_unreadable_final_count_is_an_estimate(self, book: Ledger, bad: str) -> None:
        """Issue 9 item 8: an unreadable message_delta output_tokens is no exact count either."""
        raw = fixture("anthropic_sdk_tool_use_stream.sse").replace(
            b'"output_tokens":65', b'"output_tokens":' + bad.encode())
        outcome = outcome_of(book, "anthropic", raw)
        assert (outcome.status, outcome.estimated, outcome.prompt_tokens) == ("ok", True, 377)
        assert outcome.completion_tokens > 1

    def test_every_split_of_a_stream_without_final_usage(self) -> None:
        """Issue 9 item 8: flagged the same however the stream is cut."""
        usage = assert_every_split_reads_the_same(
            "anthropic", without_final_usage(fixture("anthropic_sdk_tool_use_stream.sse")))
        assert usage is not None and usage.estimated and usage.completion_tokens == 1


BAD_VALUES = [-1, "20", 20.0, True, [20], 10**30]


class TestBadOptionalDetail:
    """Issue 9 item 9."""

    @pytest.mark.parametrize("bad", BAD_VALUES)
    @pytest.mark.parametrize("where", ["details", "top", "reasoning", "total"])
    def test_openai_keeps_the_valid_counts(self, bad: object, where: str) -> None:
        """Issue 9 item 9: one bad optional detail drops only itself, with a note."""
        usage_obj: dict[str, Any] = {"prompt_tokens": 100, "completion_tokens": 20}
        if where == "details":
            usage_obj["prompt_tokens_details"] = {"cached_tokens": bad}
        elif where == "top":
            usage_obj["cached_tokens"] = bad
        elif where == "reasoning":
            usage_obj["completion_tokens_details"] = {"reasoning_tokens": bad}
        else:
            usage_obj["total_tokens"] = bad
        usage = usage_from_body("openai", json.dumps({"usage": usage_obj}).encode())
        assert usage is not None
        assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens,
                usage.reasoning_tokens) == (100, 20, 0, None)
        assert any("unreadable" in note for note in usage.notes), usage.notes

    @pytest.mark.parametrize("bad", BAD_VALUES)
    def test_anthropic_keeps_the_valid_counts(self, bad: object) -> None:
        """Issue 9 item 9: a bad cache_read_input_tokens drops only itself."""
        body = json.dumps({"usage": {"input_tokens": 100, "output_tokens": 20,
                                     "cache_read_input_tokens": bad,
                                     "cache_creation_input_tokens": 5}}).encode()
        usage = usage_from_body("anthropic", body)
        assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (105, 20)
        assert usage.notes and not usage.estimated

    def test_cached_above_prompt_is_dropped(self) -> None:
        """Issue 9 item 9: cached_tokens > prompt_tokens is impossible: dropped, noted."""
        body = b'{"usage": {"prompt_tokens": 1, "completion_tokens": 1, ' \
               b'"prompt_tokens_details": {"cached_tokens": 2}}}'
        usage = usage_from_body("openai", body)
        assert usage is not None and (usage.prompt_tokens, usage.cached_tokens) == (1, 0)
        assert usage.notes

    def test_the_call_is_exact_and_carries_the_note(self, book: Ledger) -> None:
        """Issue 9 item 9: in a stream too; the outcome is exact and its note says why."""
        raw = fixture("kimi_doc_stream_top_cached.sse").replace(
            b'"cached_tokens":12', b'"cached_tokens":"12"')
        outcome = outcome_of(book, "openai", raw)
        assert (outcome.estimated, outcome.prompt_tokens, outcome.completion_tokens,
                outcome.cached_tokens) == (False, 19, 13, 0)
        assert outcome.error is not None and "cached_tokens unreadable" in outcome.error

    def test_a_required_count_still_refuses_the_usage(self) -> None:
        """Issue 9 item 9 (guard): only optional details are dropped; a bad prompt count is no usage."""
        body = b'{"usage": {"prompt_tokens": "19", "completion_tokens": 13}}'
        assert usage_from_body("openai", body) is None


class TestTotalTokens:
    """Issue 9 item 11."""

    @pytest.mark.parametrize("name, usage", [
        ("xai_grok4_fast.json", (165, 127, 156, 125)),
        ("xai_grok3_mini_thinking.json", (288, 377, 7, 350)),
    ])
    def test_xai_bodies_bill_the_total(self, name: str, usage: tuple[int, ...]) -> None:
        """Issue 9 item 11: xAI leaves reasoning out of completion_tokens: the total is billed."""
        found = usage_from_body("openai", fixture(name))
        assert found is not None
        assert (found.prompt_tokens, found.completion_tokens, found.cached_tokens,
                found.reasoning_tokens) == usage
        assert found.notes and "total_tokens" in found.notes[0]

    def test_xai_stream_at_every_split(self, book: Ledger) -> None:
        """Issue 9 item 11: the real xAI stream (296 = 165 + 2 + 129) is billed 165 + 131."""
        raw = fixture("xai_grok4_fast_stream.sse")
        usage = assert_every_split_reads_the_same("openai", raw)
        assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (165, 131)
        outcome = outcome_of(book, "openai", raw)
        assert (outcome.estimated, outcome.completion_tokens, outcome.reasoning_tokens) == (
            False, 131, 129)
        assert outcome.error is not None and "total_tokens 296" in outcome.error

    def test_a_smaller_total_bills_prompt_plus_completion(self) -> None:
        """Issue 9 item 11: a total below prompt + completion: the larger is billed, noted."""
        body = b'{"usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 40}}'
        usage = usage_from_body("openai", body)
        assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (50, 10)
        assert usage.notes and "total_tokens 40" in usage.notes[0]

    def test_an_agreeing_total_leaves_no_note(self) -> None:
        """Issue 9 item 11 (guard): the usual case is untouched."""
        body = b'{"usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60}}'
        assert usage_from_body("openai", body) == Usage(50, 10)


class TestResponsesUsageDetails:
    """The Responses API's usage follows the same detail rules as Chat Completions."""

    @staticmethod
    def body(usage: dict[str, Any]) -> bytes:
        return json.dumps({"object": "response", "status": "completed", "output": [],
                           "usage": usage}).encode()

    def test_a_bad_detail_is_dropped_and_noted(self) -> None:
        """Issue 9 item 9: a bad cached count keeps input/output and says it was dropped."""
        usage = usage_from_body("responses", self.body(
            {"input_tokens": 20, "output_tokens": 5, "total_tokens": 25,
             "input_tokens_details": {"cached_tokens": "3"}}))
        assert usage is not None
        assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (20, 5, 0)
        assert any("cached_tokens unreadable" in note for note in usage.notes)

    def test_a_larger_total_is_billed(self) -> None:
        """Issue 9 item 11: total_tokens above input + output bills the total, noted."""
        usage = usage_from_body("responses", self.body(
            {"input_tokens": 20, "output_tokens": 5, "total_tokens": 40}))
        assert usage is not None
        assert (usage.prompt_tokens, usage.completion_tokens) == (20, 20)
        assert any("total_tokens 40" in note for note in usage.notes)
