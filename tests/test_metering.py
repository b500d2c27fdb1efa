"""The I/O-free call lifecycle (``ledger.metering``) and ``Ledger.metered_call`` for calls made
by any other client, sync and async."""

from __future__ import annotations

import gzip
import json
from decimal import Decimal
from typing import Any

import openai
import pytest
from helpers import MESSAGES, Events, cost, only_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import BudgetExceeded, Ledger, LedgerUnavailable, ManualClock, UnknownModel
from ledger.errors import InvalidInput
from ledger.metering import (
    MeteredCall,
    PreparedCall,
    ResponseMeter,
    guess_shape,
    prepare,
    refusal_for,
    strip_null_usage,
)
from ledger.money import from_units

BODY: dict[str, Any] = {"model": "kimi-k2.5", "messages": MESSAGES, "max_tokens": 50}


def prepared(book: Ledger, shape: str = "openai", **extra: Any) -> PreparedCall:
    body = {**BODY, **extra}
    return prepare(book.meter, shape, "acme", json.dumps(body).encode())  # type: ignore[arg-type]


def run(meter: ResponseMeter, chunks: list[bytes]) -> bytes:
    out = b"".join(meter.feed(c) for c in chunks)
    return out + meter.finish()


class TestPrepare:
    def test_openai_stream_asks_for_usage(self, book: Ledger) -> None:
        """An OpenAI stream without include_usage gets it injected, to be dropped on return."""
        p = prepared(book, stream=True)
        assert p.drop_usage_chunk and p.forward_body is not None
        assert json.loads(p.forward_body)["stream_options"] == {"include_usage": True}
        assert p.max_completion_tokens == 50 and p.prompt_tokens > 0

    def test_other_bodies_are_forwarded_as_they_are(self, book: Ledger) -> None:
        """Non-streams and Anthropic streams are not re-serialised."""
        assert prepared(book).forward_body is None
        assert prepared(book, "anthropic", stream=True).forward_body is None
        asked = prepared(book, stream=True, stream_options={"include_usage": True})
        assert asked.forward_body is None and not asked.drop_usage_chunk

    def test_unmeterable_bodies_raise_invalid_input(self, book: Ledger) -> None:
        """Not JSON, or no model: InvalidInput (the transport answers 400)."""
        with pytest.raises(InvalidInput):
            prepare(book.meter, "openai", "acme", b"[1, 2")
        with pytest.raises(InvalidInput, match="model"):
            prepare(book.meter, "openai", "acme", b'{"messages": []}')
        with pytest.raises(InvalidInput):
            prepare(book.meter, "openai", "", json.dumps(BODY).encode())

    def test_guess_shape(self) -> None:
        """Bodies with Anthropic-only fields are Anthropic; the rest OpenAI."""
        assert guess_shape({"model": "m", "system": "be brief", "messages": []}) == "anthropic"
        assert guess_shape(BODY) == "openai"


class TestRefusals:
    def test_budget_refusal_bodies_in_both_shapes(self) -> None:
        """402 budget_exceeded with project, limit, spent, held and worst case, per shape."""
        exc = BudgetExceeded("acme", "2026-11", limit=Decimal("1"), spent=Decimal("0.5"),
                             held=Decimal("0.25"), requested=Decimal("0.3"))
        refusal = refusal_for(exc)
        assert refusal.status == 402
        oa = json.loads(refusal.body("openai"))["error"]
        assert (oa["type"], oa["code"]) == ("budget_exceeded", "budget_exceeded")
        assert (oa["limit"], oa["spent"], oa["held"], oa["worst_case"]) == (
            "1", "0.5", "0.25", "0.3")
        an = json.loads(refusal.body("anthropic"))
        assert an["type"] == "error" and an["error"]["type"] == "budget_exceeded"
        assert "remaining $0.25" in an["error"]["message"]
        assert ("x-should-retry", "false") in refusal.headers()

    def test_other_refusals(self) -> None:
        """Unknown model: 402 saying how to price it; no database: 503; bad body: 400."""
        unknown = refusal_for(UnknownModel("m9"))
        assert unknown.status == 402 and "ledger price set m9" in unknown.message
        assert refusal_for(LedgerUnavailable("down")).status == 503
        assert refusal_for(InvalidInput("no model")).status == 400


class TestResponseMeter:
    def test_json_reply_with_usage(self, book: Ledger) -> None:
        """A complete JSON reply settles at its usage."""
        meter = ResponseMeter(prepared(book), 200, "application/json", None, len)
        body = b'{"usage": {"prompt_tokens": 3, "completion_tokens": 4}}'
        assert run(meter, [body[:10], body[10:]]) == body
        outcome = meter.outcome("eof")
        assert (outcome.status, outcome.prompt_tokens, outcome.completion_tokens) == ("ok", 3, 4)

    def test_gzip_reply_is_read_on_the_side(self, book: Ledger) -> None:
        """A server that compresses anyway: the bytes pass unchanged, usage is still read."""
        raw = gzip.compress(b'{"usage": {"input_tokens": 6, "output_tokens": 1}}')
        meter = ResponseMeter(prepared(book, "anthropic"), 200, "application/json", "gzip", len)
        assert run(meter, [raw[:7], raw[7:]]) == raw
        assert meter.outcome("eof").prompt_tokens == 6

    def test_error_status_fails_with_the_servers_message(self, book: Ledger) -> None:
        """Status >= 400: failed, zero, with the error message of either shape."""
        meter = ResponseMeter(prepared(book), 429, "application/json", None, len)
        run(meter, [b'{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}'])
        outcome = meter.outcome("eof")
        assert (outcome.status, outcome.http_status, outcome.error) == (
            "failed", 429, "HTTP 429: slow")

    def test_redirect_is_not_a_completion(self, book: Ledger) -> None:
        """A 3xx answer is voided (the followed request is metered on its own)."""
        meter = ResponseMeter(prepared(book), 307, "application/json", None, len)
        run(meter, [b""])
        assert meter.outcome("eof").status == "failed"

    def test_drop_mode_removes_usage_chunk_and_null_usage(self, book: Ledger) -> None:
        """The usage chunk the ledger asked for is dropped, and "usage":null stripped."""
        p = prepared(book, stream=True)
        meter = ResponseMeter(p, 200, "text/event-stream", None, len)
        chunks = [b'data: {"choices":[{"delta":{"content":"Hi"}}],"usage":null}\n\n',
                  b'data: {"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":1}}\n\n',
                  b"data: [DONE]\n\n"]
        out = b"".join(meter.feed(c) for c in chunks)
        assert meter.terminal
        assert out == b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\ndata: [DONE]\n\n'
        assert meter.outcome("eof").completion_tokens == 1

    def test_strip_null_usage_leaves_content_alone(self) -> None:
        """Escaped quotes inside strings never match."""
        chunk = b'data: {"c":"say \\",\\"usage\\":null","usage":null}\n\n'
        assert strip_null_usage(chunk) == b'data: {"c":"say \\",\\"usage\\":null"}\n\n'

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(chunks=st.lists(st.binary(max_size=64), max_size=8),
           status=st.sampled_from([200, 400, 500]),
           ctype=st.sampled_from(["text/event-stream", "application/json", None]),
           encoding=st.sampled_from([None, "gzip", "br"]),
           shape=st.sampled_from(["openai", "anthropic"]),
           stream=st.booleans(),
           ending=st.sampled_from(["eof", "closed", "error"]))
    def test_arbitrary_bytes_never_raise(self, book: Ledger, chunks: list[bytes], status: int,
                                         ctype: str | None, encoding: str | None, shape: str,
                                         stream: bool, ending: Any) -> None:
        """Whatever the server sends, the meter never raises and never loses bytes."""
        meter = ResponseMeter(prepared(book, shape, stream=stream), status, ctype, encoding, len)
        out = run(meter, chunks)
        if not meter.drops:
            assert out == b"".join(chunks)
        outcome = meter.outcome(ending, "boom" if ending == "error" else None)
        if status >= 400 or ending == "error":
            assert outcome.status == "failed"
        assert outcome.status in ("ok", "failed", "cancelled")


class TestMeteredCall:
    def test_settle_from_an_openai_reply(self, book: Ledger, ledger_events: Events) -> None:
        """with metered_call(...) as call: call.settle(openai_reply) bills its usage."""
        with book.metered_call("acme", BODY) as call:
            assert call.worst_case is not None and book.budget("acme").held == call.worst_case
            charged = call.settle({"usage": {"prompt_tokens": 10, "completion_tokens": 40}})
        assert charged == call.cost == cost(50) == book.spend("acme")
        event = only_event(book, ledger_events)
        assert (event["status"], event["estimated"], event["call_id"]) == ("ok", False,
                                                                           call.call_id)
        assert event["est_prompt_tokens"] == call.prompt_tokens
        assert book.budget("acme").held == 0

    def test_settle_from_an_anthropic_reply(self, book: Ledger, ledger_events: Events) -> None:
        """An Anthropic body (shape guessed) settles from input/output/cache-read tokens."""
        body = {"model": "kimi-k2.5", "system": "be brief", "max_tokens": 20,
                "messages": MESSAGES}
        with book.metered_call("acme", body) as call:
            assert call.shape == "anthropic" and call.max_completion_tokens == 20
            call.settle({"type": "message", "content": [{"type": "text", "text": "ok"}],
                         "usage": {"input_tokens": 8, "output_tokens": 2,
                                   "cache_read_input_tokens": 4}})
        event = only_event(book, ledger_events)
        assert (event["prompt_tokens"], event["cached_tokens"],
                event["completion_tokens"]) == (12, 4, 2)
        assert book.spend("acme") == cost(14)

    def test_settle_from_token_counts_and_sdk_objects(self, book: Ledger) -> None:
        """settle(prompt_tokens=, completion_tokens=) and an SDK response object both work."""
        with book.metered_call("acme", BODY) as call:
            call.settle(prompt_tokens=100, completion_tokens=0)
        reply = openai.types.chat.ChatCompletion.model_validate({
            "id": "x", "object": "chat.completion", "created": 0, "model": "kimi-k2.5",
            "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3,
                                     "total_tokens": 10}})
        with book.metered_call("acme", json.dumps(BODY), shape="openai") as call:
            call.settle(reply)
        assert book.spend("acme") == cost(110)

    @pytest.mark.parametrize(("shape", "path", "body"), [
        ("responses", "/v1/responses", {"input": "count the apples", "max_output_tokens": 30}),
        ("completions", "/v1/completions", {"prompt": "count the apples", "max_tokens": 30}),
        ("embeddings", "/v1/embeddings", {"input": ["count the apples", "and pears"]}),
    ])
    def test_every_metered_shape_settles_from_its_own_reply(
            self, book: Ledger, ledger_events: Events, shape: str, path: str,
            body: dict[str, Any]) -> None:
        """Issue 9 item 1 (small ones): metered_call(shape="responses"/"completions"/
        "embeddings") holds by that shape's cap and settles from that shape's usage."""
        import httpx

        from ledger.testing import RunAPISimulator
        from ledger.testing.simulator import simulated_usage

        request = {"model": "kimi-k2.5", **body}
        with RunAPISimulator() as sim, book.metered_call("acme", request, shape=shape) as call:
            assert call.shape == shape
            assert call.max_completion_tokens == (0 if shape == "embeddings" else 30)
            reply = httpx.post(sim.base_url + path, json=request).json()
            call.settle(reply)
        event = only_event(book, ledger_events)
        reported = simulated_usage(request, shape=shape)  # type: ignore[arg-type]
        assert (event["prompt_tokens"], event["completion_tokens"]) == reported
        assert event["status"] == "ok" and not event["estimated"] and reported[0] > 0
        assert book.spend("acme") == cost(sum(reported))

    def test_an_unknown_shape_names_every_shape(self, book: Ledger) -> None:
        """Issue 9 item 1 (small ones): the shape errors list all five shapes."""
        from ledger.sse import StreamMeter

        with pytest.raises(InvalidInput) as by_hand:
            book.metered_call("acme", BODY, shape="gemini")
        with pytest.raises(InvalidInput) as streamed:
            StreamMeter("gemini")  # type: ignore[arg-type]
        for caught in (by_hand, streamed):
            for name in ("openai", "anthropic", "responses", "completions", "embeddings"):
                assert name in str(caught.value)

    def test_reply_without_usage_is_charged_by_estimate(self, book: Ledger,
                                                        ledger_events: Events) -> None:
        """No usage in the reply: prompt estimate + tokens of its text, flagged estimated."""
        text = "four words right here"
        with book.metered_call("acme", BODY) as call:
            call.settle({"choices": [{"message": {"role": "assistant", "content": text}}]})
        event = only_event(book, ledger_events)
        tokens = book.estimator.count_text("kimi-k2.5", text)
        assert event["estimated"] and event["completion_tokens"] == tokens
        assert from_units(event["cost"]) == cost(call.prompt_tokens + tokens)

    def test_exception_voids_and_propagates(self, book: Ledger, ledger_events: Events) -> None:
        """An exception in the block: cost zero, recorded failed, the exception propagates."""
        with pytest.raises(ConnectionError), book.metered_call("acme", BODY):
            raise ConnectionError("secret prompt text must not be stored")
        event = only_event(book, ledger_events)
        assert (event["status"], event["cost"]) == ("failed", 0)
        assert event["error"] == "exception in the metered block: ConnectionError"
        assert book.budget("acme").held == 0

    def test_exception_after_settle_keeps_the_usage(self, book: Ledger) -> None:
        """The call happened: an exception after settle() does not undo the charge."""
        with pytest.raises(KeyError), book.metered_call("acme", BODY) as call:
            call.settle(prompt_tokens=1, completion_tokens=1)
            raise KeyError("later")
        assert book.spend("acme") == cost(2)

    def test_leaving_without_settle_charges_the_hold_and_warns(
            self, book: Ledger, ledger_events: Events) -> None:
        """No settle(): the held worst case is charged, flagged estimated, with a warning."""
        with pytest.warns(RuntimeWarning, match="without settle"):
            with book.metered_call("acme", BODY) as call:
                held = call.worst_case
        event = only_event(book, ledger_events)
        assert event["estimated"] and event["completion_tokens"] == 50
        assert book.spend("acme") == held and book.budget("acme").held == 0

    def test_budget_exceeded_at_enter(self, book: Ledger, ledger_events: Events) -> None:
        """A call that cannot fit raises BudgetExceeded before the block; refusal recorded."""
        book.set_budget("acme", Decimal("0.0001"))
        ran = False
        with pytest.raises(BudgetExceeded), book.metered_call("acme", BODY):
            ran = True
        assert not ran and only_event(book, ledger_events)["status"] == "refused"

    def test_unknown_model_at_enter(self, book: Ledger) -> None:
        """A model with no price raises UnknownModel (never a silent $0)."""
        with pytest.raises(UnknownModel), book.metered_call("acme", {**BODY, "model": "x1"}):
            pass

    def test_settle_twice_is_an_error(self, book: Ledger) -> None:
        """A call settles once."""
        with book.metered_call("acme", BODY) as call:
            call.void("gave up")
            with pytest.raises(InvalidInput, match="already settled"):
                call.settle(prompt_tokens=1, completion_tokens=1)
        assert book.spend("acme") == 0

    def test_database_down_fails_closed_or_open(self, sqlite_url: str, clock: ManualClock,
                                                ledger_events: Events,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
        """No database at the start: LedgerUnavailable, unless fail_open (then recorded)."""
        def down(*args: Any, **kwargs: Any) -> Any:
            raise LedgerUnavailable("ledger database unavailable")

        with Ledger(sqlite_url, clock=clock) as closed:
            monkeypatch.setattr(closed.store, "hold", down)
            with pytest.raises(LedgerUnavailable), closed.metered_call("acme", BODY):
                pass
        with Ledger(sqlite_url, clock=clock, fail_open=True) as book:
            monkeypatch.setattr(book.store, "hold", down)
            with book.metered_call("acme", BODY) as call:
                assert call.settle(prompt_tokens=5, completion_tokens=5) is None
            assert call.cost == cost(10) and book.spend("acme") == cost(10)

    @pytest.mark.anyio
    async def test_async_with_settles_at_exit(self, book: Ledger,
                                              ledger_events: Events) -> None:
        """async with: settle() only decides; the ledger is written (off the loop) at exit."""
        async with book.metered_call("acme", BODY) as call:
            assert isinstance(call, MeteredCall)
            call.settle({"usage": {"input_tokens": 3, "output_tokens": 3}})
            assert ledger_events(book) == []
        assert book.spend("acme") == cost(6)

    @pytest.mark.anyio
    async def test_async_exception_voids(self, book: Ledger, ledger_events: Events) -> None:
        """An exception in an async block voids the hold and propagates."""
        with pytest.raises(TimeoutError):
            async with book.metered_call("acme", BODY):
                raise TimeoutError
        assert only_event(book, ledger_events)["status"] == "failed"
        assert book.budget("acme").held == 0
