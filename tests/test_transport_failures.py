"""Metered calls that are refused, fail, break, lose their usage or are closed early, and a
ledger whose database fails: the real SDKs against the loopback simulator."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import anthropic
import anyio
import httpx
import httpx2
import openai
import pytest
from helpers import MESSAGES, Events, cost, only_event

from ledger import Ledger, LedgerUnavailable, ManualClock
from ledger.money import from_units
from ledger.testing.simulator import Behavior, RunAPISimulator
from ledger.transport import MeteredTransport


def assert_failed(book: Ledger, event: dict[str, Any], http_status: int | None,
                  error: str) -> None:
    assert event["status"] == "failed" and event["cost"] == 0
    assert event["http_status"] == http_status
    assert error in (event["error"] or ""), event["error"]
    assert book.budget(event["project"]).held == 0


def count(book: Ledger, text: str) -> int:
    return book.estimator.count_text("kimi-k2.5", text)


class TestRefused:
    def test_budget_refusal_is_a_402_that_never_reaches_the_server(
            self, book: Ledger, openai_client: openai.OpenAI, sim: RunAPISimulator,
            ledger_events: Events) -> None:
        """Over a hard budget: HTTP 402 budget_exceeded, nothing sent, no SDK retry."""
        book.set_budget("acme", Decimal("0.001"))
        with pytest.raises(openai.APIStatusError) as caught:
            openai_client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES,
                                                  max_tokens=100)
        err = caught.value
        assert err.status_code == 402 and sim.request_count == 0
        assert isinstance(err.body, dict) and err.body["type"] == "budget_exceeded"
        for word in ("'acme'", "limit $0.001", "spent $0", "held $0", "worst case"):
            assert word in err.message
        assert err.body["limit"] == "0.001" and Decimal(err.body["worst_case"]) > Decimal("0.001")
        event = only_event(book, ledger_events)  # one attempt: the SDK did not retry
        assert (event["status"], event["http_status"], event["cost"]) == ("refused", 402, 0)
        assert event["est_prompt_tokens"] > 0

    def test_anthropic_refusal_has_anthropic_error_shape(
            self, book: Ledger, anthropic_client: anthropic.Anthropic, sim: RunAPISimulator,
            ledger_events: Events) -> None:
        """The Anthropic SDK gets {"type": "error", "error": {"type": "budget_exceeded"}}."""
        book.set_budget("acme", Decimal("0.001"))
        with pytest.raises(anthropic.APIStatusError) as caught:
            with anthropic_client.messages.stream(model="kimi-k2.5", max_tokens=1000,
                                                  messages=MESSAGES) as stream:
                stream.until_done()
        err = caught.value
        assert err.status_code == 402 and sim.request_count == 0
        assert isinstance(err.body, dict) and err.body["type"] == "error"
        assert err.body["error"]["type"] == "budget_exceeded"
        assert "budget exceeded for project 'acme'" in err.body["error"]["message"]
        assert len(ledger_events(book)) == 1

    def test_call_that_fits_goes_through(self, book: Ledger, openai_client: openai.OpenAI,
                                         sim: RunAPISimulator) -> None:
        """Under a hard budget with room, the call is held, sent and settled."""
        book.set_budget("acme", Decimal("1.00"))
        openai_client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES,
                                              max_tokens=100)
        state = book.budget("acme")
        assert state.spent == cost(25) and state.held == 0 and sim.request_count == 1

    def test_unknown_model_is_refused_with_how_to_price_it(
            self, book: Ledger, openai_client: openai.OpenAI, sim: RunAPISimulator,
            ledger_events: Events) -> None:
        """A model with no price: 402, nothing sent, and the message says how to price it."""
        with pytest.raises(openai.APIStatusError) as caught:
            openai_client.chat.completions.create(model="mystery-1", messages=MESSAGES)
        err = caught.value
        assert err.status_code == 402 and sim.request_count == 0
        assert isinstance(err.body, dict) and err.body["code"] == "unknown_model"
        assert "ledger price set mystery-1" in err.message
        assert only_event(book, ledger_events)["status"] == "refused"

    def test_body_that_cannot_be_metered_is_not_sent(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """A completion request that is not JSON (or has no model) answers 400 locally."""
        with book.httpx_client("acme") as client:
            bad = client.post(sim.openai_base_url + "/chat/completions", content=b"{oops")
            no_model = client.post(sim.openai_base_url + "/chat/completions",
                                   json={"messages": MESSAGES})
        for response in (bad, no_model):
            assert response.status_code == 400
            assert response.headers["x-should-retry"] == "false"
            assert response.json()["error"]["code"] == "ledger_invalid_request"
        assert sim.request_count == 0 and ledger_events(book) == []


class TestFailed:
    def test_error_status_costs_zero_and_is_recorded(
            self, book: Ledger, openai_client: openai.OpenAI, sim: RunAPISimulator,
            ledger_events: Events) -> None:
        """HTTP 400 from the server: the caller gets it, the call costs zero, recorded failed."""
        sim.enqueue(Behavior(status=400, error_message="bad things"))
        with pytest.raises(openai.BadRequestError):
            openai_client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES)
        assert_failed(book, only_event(book, ledger_events), 400, "HTTP 400: bad things")
        assert book.spend("acme") == 0

    def test_sdk_retries_are_separate_attempts(
            self, book: Ledger, anthropic_client: anthropic.Anthropic, sim: RunAPISimulator,
            ledger_events: Events) -> None:
        """500 then 200: one failed zero-cost attempt, then one billed attempt."""
        sim.enqueue(Behavior(status=500))
        anthropic_client.messages.create(model="kimi-k2.5", max_tokens=100, messages=MESSAGES)
        first, second = ledger_events(book)
        assert_failed(book, first, 500, "HTTP 500")
        assert (second["status"], from_units(second["cost"])) == ("ok", cost(25))
        assert sim.request_count == 2 and book.spend("acme") == cost(25)

    def test_stream_failing_with_error_status(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events,
            fake_api_key: str) -> None:
        """A stream request answered 503: zero, recorded failed with its status."""
        sim.enqueue(Behavior(status=503))
        client = openai.OpenAI(base_url=sim.openai_base_url, api_key=fake_api_key,
                               max_retries=0, http_client=book.httpx_client("acme"))
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES, stream=True)
        assert_failed(book, only_event(book, ledger_events), 503, "HTTP 503")

    def test_transport_error_is_reraised_unchanged(
            self, book: Ledger, ledger_events: Events) -> None:
        """A transport error reaches the caller as the very same exception; zero, failed."""
        boom = httpx.ConnectError("no route to RunAPI")

        class Down(httpx.BaseTransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                raise boom

        with httpx.Client(transport=MeteredTransport(book, "acme", Down())) as client:
            with pytest.raises(httpx.ConnectError) as caught:
                client.post("http://runapi.test/v1/chat/completions",
                            json={"model": "kimi-k2.5", "messages": MESSAGES})
        assert caught.value is boom
        assert_failed(book, only_event(book, ledger_events), None,
                      "ConnectError: no route to RunAPI")

    @pytest.mark.anyio
    async def test_async_transport_error_is_reraised_unchanged(
            self, book: Ledger, ledger_events: Events) -> None:
        """The async twin: the same exception, the call voided."""
        boom = httpx2.ReadTimeout("too slow")

        class Slow(httpx2.AsyncBaseTransport):
            async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
                raise boom

        async with httpx2.AsyncClient(transport=MeteredTransport(book, "acme", Slow())) as c:
            with pytest.raises(httpx2.ReadTimeout) as caught:
                await c.post("http://runapi.test/v1/messages",
                             json={"model": "kimi-k2.5", "max_tokens": 9, "messages": MESSAGES})
        assert caught.value is boom
        assert_failed(book, only_event(book, ledger_events), None, "ReadTimeout: too slow")


class TestBrokenStreams:
    def test_cut_openai_stream_costs_zero(self, book: Ledger, openai_client: openai.OpenAI,
                                          sim: RunAPISimulator, ledger_events: Events) -> None:
        """The server drops the connection mid-stream: the caller sees the error; zero."""
        sim.enqueue(Behavior(cut_after=3))
        with pytest.raises((httpx.HTTPError, httpx2.HTTPError, openai.APIError)):
            for _ in openai_client.chat.completions.create(model="kimi-k2.5",
                                                           messages=MESSAGES, stream=True):
                pass
        assert_failed(book, only_event(book, ledger_events), 200, "RemoteProtocolError")

    def test_cut_anthropic_stream_costs_zero(
            self, book: Ledger, anthropic_client: anthropic.Anthropic, sim: RunAPISimulator,
            ledger_events: Events) -> None:
        """The same for client.messages.stream() over httpx2."""
        sim.enqueue(Behavior(cut_after=2))
        with pytest.raises((httpx2.HTTPError, anthropic.APIError)):
            with anthropic_client.messages.stream(model="kimi-k2.5", max_tokens=100,
                                                  messages=MESSAGES) as stream:
                stream.until_done()
        assert_failed(book, only_event(book, ledger_events), 200, "RemoteProtocolError")

    def test_stream_ending_without_its_end_event_costs_zero(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """A clean end of body with no [DONE]: broken by the server, zero."""
        raw = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
        sim.enqueue(Behavior(raw=raw))
        with book.httpx_client("acme") as client:
            body = {"model": "kimi-k2.5", "messages": MESSAGES, "stream": True}
            with client.stream("POST", sim.openai_base_url + "/chat/completions",
                               json=body) as response:
                assert b"".join(response.iter_bytes()) == raw
        assert_failed(book, only_event(book, ledger_events), 200, "before its end event")

    def test_error_event_mid_stream_costs_zero(
            self, book: Ledger, openai_client: openai.OpenAI, sim: RunAPISimulator,
            ledger_events: Events) -> None:
        """An error event in an OpenAI stream: the SDK raises; zero, recorded with the error."""
        sim.enqueue(Behavior(error_event=True, error_message="model overloaded"))
        with pytest.raises(openai.APIError):
            for _ in openai_client.chat.completions.create(model="kimi-k2.5",
                                                           messages=MESSAGES, stream=True):
                pass
        assert_failed(book, only_event(book, ledger_events), 200,
                      "error event: model overloaded")

    @pytest.mark.anyio
    async def test_async_anthropic_error_event_costs_zero(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events,
            fake_api_key: str) -> None:
        """An Anthropic `event: error` in an async stream: zero, recorded failed."""
        sim.enqueue(Behavior(error_event=True, error_message="overloaded"))
        async with anthropic.AsyncAnthropic(
                base_url=sim.anthropic_base_url, api_key=fake_api_key,
                http_client=book.async_httpx2_client("acme")) as client:
            with pytest.raises(anthropic.APIError):
                async with client.messages.stream(model="kimi-k2.5", max_tokens=100,
                                                  messages=MESSAGES) as stream:
                    await stream.until_done()
        assert_failed(book, only_event(book, ledger_events), 200, "error event: overloaded")


class TestEstimated:
    def test_missing_usage_is_charged_by_estimate(
            self, book: Ledger, openai_client: openai.OpenAI, sim: RunAPISimulator,
            ledger_events: Events) -> None:
        """A 200 without usage: prompt estimate + tokens of the returned text, flagged."""
        sim.enqueue(Behavior(omit_usage=True))
        reply = openai_client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES)
        text = reply.choices[0].message.content or ""
        event = only_event(book, ledger_events)
        assert event["status"] == "ok" and event["estimated"]
        assert event["prompt_tokens"] == event["est_prompt_tokens"]
        assert event["completion_tokens"] == count(book, text) > 0
        assert from_units(event["cost"]) == cost(event["prompt_tokens"] + count(book, text))

    def test_unparseable_body_reaches_caller_unchanged_and_is_charged(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """A 200 whose JSON is broken passes through byte for byte; charged the prompt estimate."""
        sim.enqueue(Behavior(raw=b'{"id": "x", "choices": [{"mess'))
        with book.httpx_client("acme") as client:
            response = client.post(sim.openai_base_url + "/chat/completions",
                                   json={"model": "kimi-k2.5", "messages": MESSAGES})
        assert response.content == b'{"id": "x", "choices": [{"mess'
        event = only_event(book, ledger_events)
        assert event["status"] == "ok" and event["estimated"] and event["cost"] > 0
        assert from_units(event["cost"]) == cost(event["est_prompt_tokens"])

    def test_stream_without_usage_is_charged_by_streamed_text(
            self, book: Ledger, anthropic_client: anthropic.Anthropic, sim: RunAPISimulator,
            ledger_events: Events) -> None:
        """An Anthropic stream with no usage at all: estimate of the streamed text, flagged."""
        sim.enqueue(Behavior(omit_usage=True))
        text = ""
        for sse in anthropic_client.messages.create(model="kimi-k2.5", max_tokens=100,
                                                    messages=MESSAGES, stream=True):
            if sse.type == "content_block_delta" and sse.delta.type == "text_delta":
                text += sse.delta.text
        event = only_event(book, ledger_events)
        assert event["status"] == "ok" and event["estimated"]
        assert event["completion_tokens"] == count(book, text)
        assert from_units(event["cost"]) == cost(event["est_prompt_tokens"] + count(book, text))

    def test_caller_closing_a_stream_early_is_cancelled_and_charged_for_what_streamed(
            self, book: Ledger, openai_client: openai.OpenAI, sim: RunAPISimulator,
            ledger_events: Events) -> None:
        """Closing after a few chunks: cancelled, charged prompt estimate + streamed text."""
        sim.enqueue(Behavior(chunk_delay=0.05))
        seen = ""
        with openai_client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES,
                                                   stream=True) as stream:
            for chunk in stream:
                seen += chunk.choices[0].delta.content or ""
                if len(seen.split()) >= 3:
                    break
        event = only_event(book, ledger_events)
        assert event["status"] == "cancelled" and event["estimated"]
        assert event["prompt_tokens"] == event["est_prompt_tokens"]
        assert count(book, seen) <= event["completion_tokens"] < 20
        assert from_units(event["cost"]) == cost(event["prompt_tokens"]
                                                 + event["completion_tokens"])
        assert book.budget("acme").held == 0

    @pytest.mark.anyio
    async def test_async_anthropic_stream_closed_early_uses_reported_input_tokens(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events,
            fake_api_key: str) -> None:
        """An Anthropic stream closed early keeps message_start's input tokens; cancelled."""
        sim.enqueue(Behavior(chunk_delay=0.05, usage=(7, 99)))
        async with anthropic.AsyncAnthropic(
                base_url=sim.anthropic_base_url, api_key=fake_api_key,
                http_client=book.async_httpx2_client("acme")) as client:
            async with client.messages.stream(model="kimi-k2.5", max_tokens=100,
                                              messages=MESSAGES) as stream:
                async for _ in stream.text_stream:
                    break
        event = only_event(book, ledger_events)
        assert (event["status"], event["estimated"], event["prompt_tokens"]) == (
            "cancelled", True, 7)
        assert 1 <= event["completion_tokens"] < 20
        assert book.budget("acme").held == 0


class TestLedgerInTrouble:
    def test_db_failure_while_settling_spools_and_replays_exactly_once(
            self, book: Ledger, openai_client: openai.OpenAI, ledger_events: Events,
            monkeypatch: pytest.MonkeyPatch) -> None:
        """The database fails at settle: the caller gets its reply, the spool keeps the usage,
        and replay records it exactly once."""
        def down(*args: Any, **kwargs: Any) -> int:
            raise LedgerUnavailable("ledger database unavailable: disk I/O error")

        with monkeypatch.context() as patch:
            patch.setattr(book.store, "settle", down)
            reply = openai_client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES)
        assert reply.choices[0].message.content
        assert ledger_events(book) == [] and len(book.spool.entries()) == 1
        assert book.budget("acme").held > 0  # still held until the spool is replayed
        assert book.replay() == 1
        event = only_event(book, ledger_events)
        assert (event["status"], from_units(event["cost"])) == ("ok", cost(25))
        assert book.budget("acme").held == 0 and book.spend("acme") == cost(25)
        assert book.replay() == 0 and len(ledger_events(book)) == 1

    def test_spooled_stream_is_replayed_on_next_open(
            self, book: Ledger, anthropic_client: anthropic.Anthropic, sqlite_url: str,
            clock: ManualClock, ledger_events: Events, monkeypatch: pytest.MonkeyPatch) -> None:
        """A streamed call spooled while the database failed is recorded when a Ledger opens."""
        def down(*args: Any, **kwargs: Any) -> int:
            raise LedgerUnavailable("ledger database unavailable: locked")

        with monkeypatch.context() as patch:
            patch.setattr(book.store, "settle", down)
            with anthropic_client.messages.stream(model="kimi-k2.5", max_tokens=100,
                                                  messages=MESSAGES) as stream:
                stream.until_done()
        assert book.spool.exists()
        with Ledger(sqlite_url, clock=clock) as reopened:
            assert reopened.spend("acme") == cost(25) and not reopened.spool.exists()
            assert len(ledger_events(reopened)) == 1

    def test_db_down_before_the_call_fails_closed(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events,
            monkeypatch: pytest.MonkeyPatch, fake_api_key: str) -> None:
        """Database unreachable before a call: 503 ledger_unavailable, nothing sent."""
        def down(*args: Any, **kwargs: Any) -> Any:
            raise LedgerUnavailable("ledger database unavailable: connection refused")

        monkeypatch.setattr(book.store, "hold", down)
        client = openai.OpenAI(base_url=sim.openai_base_url, api_key=fake_api_key,
                               max_retries=0, http_client=book.httpx_client("acme"))
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES)
        assert caught.value.status_code == 503 and "fail_open=True" in caught.value.message
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["type"] == "ledger_unavailable"
        assert sim.request_count == 0

    def test_fail_open_lets_the_call_through_and_still_records_it(
            self, sqlite_url: str, clock: ManualClock, sim: RunAPISimulator,
            ledger_events: Events, monkeypatch: pytest.MonkeyPatch, fake_api_key: str) -> None:
        """Ledger(fail_open=True): the call goes through unheld and its usage is recorded."""
        with Ledger(sqlite_url, clock=clock, fail_open=True) as book:
            def down(*args: Any, **kwargs: Any) -> Any:
                raise LedgerUnavailable("ledger database unavailable")

            monkeypatch.setattr(book.store, "hold", down)
            client = openai.OpenAI(base_url=sim.openai_base_url, api_key=fake_api_key,
                                   http_client=book.httpx_client("acme"))
            client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES)
            event = only_event(book, ledger_events)
            assert (event["status"], event["est_prompt_tokens"]) == ("ok", None)
            assert book.spend("acme") == cost(25) and sim.request_count == 1


def test_stream_dropped_without_close_is_still_settled(
        book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
    """A caller that stops reading and drops the response unclosed: cancelled, not lost."""
    sim.enqueue(Behavior(chunk_delay=0.02))
    client = book.httpx_client("acme")
    body = {"model": "kimi-k2.5", "messages": MESSAGES, "stream": True}
    request = client.build_request("POST", sim.openai_base_url + "/chat/completions", json=body)
    response = client.send(request, stream=True)
    for seen, _ in enumerate(response.iter_bytes()):
        if seen == 3:
            break
    del response  # the generators are closed here, not at the hold's expiry
    event = only_event(book, ledger_events)
    assert event["status"] == "cancelled" and event["estimated"]
    assert book.budget("acme").held == 0
    client.close()


@pytest.mark.anyio
async def test_cancelled_async_call_is_voided(
        book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
    """A task cancelled while waiting for the server: its hold is voided, recorded failed."""
    sim.enqueue(Behavior(delay=2.0))
    async with book.async_httpx_client("acme") as client:
        with anyio.move_on_after(0.3):
            await client.post(sim.openai_base_url + "/chat/completions",
                              json={"model": "kimi-k2.5", "messages": MESSAGES})
    event = only_event(book, ledger_events)
    assert (event["status"], event["cost"]) == ("failed", 0)
    assert "Cancel" in event["error"]
    assert book.budget("acme").held == 0
