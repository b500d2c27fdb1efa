"""Metered calls that succeed: the real OpenAI and Anthropic SDKs (sync and async, streamed and
not) through ``MeteredTransport`` against the loopback simulator, billed exactly."""

from __future__ import annotations

import re
import time
from decimal import Decimal
from typing import Any

import anthropic
import anyio
import httpx
import httpx2
import openai
import pytest
from helpers import MESSAGES, Events, cost, only_event

from ledger import Ledger
from ledger.money import from_units
from ledger.testing.simulator import Behavior, RunAPISimulator
from ledger.transport import MeteredTransport


def assert_billed(book: Ledger, event: dict[str, Any], prompt: int, completion: int) -> None:
    assert event["status"] == "ok" and not event["estimated"]
    assert (event["prompt_tokens"], event["completion_tokens"]) == (prompt, completion)
    assert from_units(event["cost"]) == cost(prompt + completion)
    assert event["est_prompt_tokens"] is not None and event["est_prompt_tokens"] > 0
    assert event["http_status"] == 200
    state = book.budget(event["project"])
    assert state.held == 0


class TestPlain:
    def test_openai_call_is_billed_from_reported_usage(
            self, book: Ledger, openai_client: openai.OpenAI, ledger_events: Events) -> None:
        """A plain OpenAI call is settled at the usage the server reports, exactly."""
        reply = openai_client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES)
        assert reply.usage is not None and reply.usage.prompt_tokens == 5
        assert_billed(book, only_event(book, ledger_events), 5, 20)
        assert book.spend("acme") == Decimal("0.0005")

    def test_anthropic_call_is_billed_from_reported_usage(
            self, book: Ledger, anthropic_client: anthropic.Anthropic,
            ledger_events: Events) -> None:
        """A plain Anthropic call through httpx2 is settled at its reported usage."""
        msg = anthropic_client.messages.create(model="kimi-k2.5", max_tokens=100,
                                               messages=MESSAGES)
        assert msg.usage.input_tokens == 5
        assert_billed(book, only_event(book, ledger_events), 5, 20)
        assert book.spend("acme") == cost(25)

    def test_cached_tokens_are_recorded(self, book: Ledger, openai_client: openai.OpenAI,
                                        sim: RunAPISimulator, ledger_events: Events) -> None:
        """Cached prompt tokens the server reports are kept with the event."""
        sim.enqueue(Behavior(usage=(100, 10), cached_tokens=40))
        openai_client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES)
        event = only_event(book, ledger_events)
        assert (event["prompt_tokens"], event["cached_tokens"]) == (100, 40)
        assert from_units(event["cost"]) == cost(110)  # no cached price: billed at input price

    def test_response_carries_the_ledger_call_id(self, book: Ledger, sim: RunAPISimulator,
                                                 ledger_events: Events) -> None:
        """Each metered response says which ledger event it is (x-ledger-call-id)."""
        with book.httpx_client("acme") as client:
            response = client.post(sim.openai_base_url + "/chat/completions",
                                   json={"model": "kimi-k2.5", "messages": MESSAGES})
        assert response.headers["x-ledger-call-id"] == only_event(book, ledger_events)["call_id"]


class TestStreamed:
    def test_openai_stream_is_billed_and_usage_injection_is_invisible(
            self, book: Ledger, openai_client: openai.OpenAI, sim: RunAPISimulator,
            ledger_events: Events) -> None:
        """An OpenAI stream without include_usage: the ledger asks for usage, the caller never
        sees the usage chunk, and the call is billed from it."""
        chunks = list(openai_client.chat.completions.create(
            model="kimi-k2.5", messages=MESSAGES, stream=True))
        assert all(c.usage is None and c.choices for c in chunks)
        assert "".join(c.choices[0].delta.content or "" for c in chunks).split()[0] == "Echo:"
        sent = sim.api_requests[-1].json
        assert sent["stream_options"] == {"include_usage": True}
        assert_billed(book, only_event(book, ledger_events), 5, 20)

    def test_caller_sees_exactly_the_bytes_it_would_without_the_ledger(
            self, book: Ledger, sim: RunAPISimulator) -> None:
        """The metered stream's bytes equal the unmetered stream's (ids and times aside)."""
        body = {"model": "kimi-k2.5", "messages": MESSAGES, "stream": True}
        url = sim.openai_base_url + "/chat/completions"

        def read(client: httpx.Client) -> bytes:
            with client.stream("POST", url, json=body) as response:
                return b"".join(response.iter_raw())

        with httpx.Client() as bare, book.httpx_client("acme") as metered:
            plain, seen = read(bare), read(metered)

        def normalise(raw: bytes) -> bytes:
            raw = re.sub(rb"chatcmpl-sim\d+", b"ID", raw)
            return re.sub(rb'"created":\s*\d+', b'"created":0', raw)

        assert b'"usage"' not in plain and normalise(seen) == normalise(plain)
        assert book.spend("acme") == cost(25)

    def test_stream_that_asked_for_usage_keeps_its_usage_chunk(
            self, book: Ledger, openai_client: openai.OpenAI, ledger_events: Events) -> None:
        """A caller that asked for include_usage gets the usage chunk, billed once."""
        chunks = list(openai_client.chat.completions.create(
            model="kimi-k2.5", messages=MESSAGES, stream=True,
            stream_options={"include_usage": True}))
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 20
        assert_billed(book, only_event(book, ledger_events), 5, 20)

    def test_anthropic_messages_stream_is_billed(
            self, book: Ledger, anthropic_client: anthropic.Anthropic,
            ledger_events: Events) -> None:
        """client.messages.stream() through httpx2 is billed from the streamed usage."""
        with anthropic_client.messages.stream(model="kimi-k2.5", max_tokens=100,
                                              messages=MESSAGES) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert text.startswith("Echo:") and final.usage.output_tokens == 20
        assert_billed(book, only_event(book, ledger_events), 5, 20)

    def test_max_tokens_limits_the_hold_and_the_bill(
            self, book: Ledger, anthropic_client: anthropic.Anthropic,
            ledger_events: Events) -> None:
        """A stream cut by max_tokens is billed for the tokens it produced."""
        with anthropic_client.messages.stream(model="kimi-k2.5", max_tokens=7,
                                              messages=MESSAGES) as stream:
            stream.until_done()
        assert_billed(book, only_event(book, ledger_events), 5, 7)


class TestAsync:
    @pytest.mark.anyio
    async def test_async_openai_plain_and_stream(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events,
            fake_api_key: str) -> None:
        """AsyncOpenAI over httpx.AsyncClient: plain and streamed calls are billed."""
        async with openai.AsyncOpenAI(base_url=sim.openai_base_url, api_key=fake_api_key,
                                      http_client=book.async_httpx_client("acme")) as client:
            await client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES)
            stream = await client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES,
                                                          stream=True)
            chunks = [c async for c in stream]
        assert all(c.usage is None for c in chunks)
        events = ledger_events(book)
        assert len(events) == 2
        for event in events:
            assert_billed(book, event, 5, 20)

    @pytest.mark.anyio
    async def test_async_anthropic_plain_and_stream(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events,
            fake_api_key: str) -> None:
        """AsyncAnthropic over httpx2.AsyncClient: plain and messages.stream() are billed."""
        async with anthropic.AsyncAnthropic(
                base_url=sim.anthropic_base_url, api_key=fake_api_key,
                http_client=book.async_httpx2_client("acme")) as client:
            await client.messages.create(model="kimi-k2.5", max_tokens=100, messages=MESSAGES)
            async with client.messages.stream(model="kimi-k2.5", max_tokens=100,
                                              messages=MESSAGES) as stream:
                final = await stream.get_final_message()
        assert final.usage.output_tokens == 20
        events = ledger_events(book)
        assert len(events) == 2
        for event in events:
            assert_billed(book, event, 5, 20)

    @pytest.mark.anyio
    async def test_concurrent_async_calls_overlap(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events,
            fake_api_key: str) -> None:
        """Slow async calls run together: the ledger never blocks the event loop."""
        n, delay = 5, 0.4  # at most the simulator's listen backlog (5) connecting at once
        sim.default = Behavior(delay=delay)
        async with openai.AsyncOpenAI(base_url=sim.openai_base_url, api_key=fake_api_key,
                                      http_client=book.async_httpx_client("acme")) as client:
            async def one() -> None:
                await client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES)

            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for _ in range(n):
                    tg.start_soon(one)
            elapsed = time.perf_counter() - started
        arrivals = [r.received_at for r in sim.api_requests]
        assert max(arrivals) - min(arrivals) < delay  # all were in flight at once
        assert elapsed < delay * n / 2
        assert len(ledger_events(book)) == n and book.spend("acme") == cost(25 * n)


class TestProjects:
    def test_project_header_overrides_and_is_not_forwarded(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """X-Ledger-Project bills another project the client allows (issue 9 item 3: only
        with projects=[...]) and never reaches the server."""
        openai_client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-test",
                                      http_client=book.httpx_client("acme", projects=["beta"]))
        openai_client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES,
                                              extra_headers={"X-Ledger-Project": "beta"})
        assert only_event(book, ledger_events)["project"] == "beta"
        assert book.spend("beta") == cost(25) and book.spend("acme") == 0
        assert "x-ledger-project" not in sim.api_requests[-1].headers

    def test_other_endpoints_pass_through_untouched(
            self, book: Ledger, openai_client: openai.OpenAI, sim: RunAPISimulator,
            ledger_events: Events) -> None:
        """GET /v1/models and other non-completion calls are neither metered nor changed."""
        models = openai_client.models.list()
        assert [m.id for m in models.data] == ["kimi-k2.5", "kimi-k2.6"]
        with httpx.Client() as bare, book.httpx_client("acme") as metered:
            for client in (bare, metered):
                client.get(sim.openai_base_url + "/models", headers={"x-custom": "1"})
        plain, seen = sim.requests[-2], sim.requests[-1]
        assert plain.headers == seen.headers and plain.body == seen.body
        assert ledger_events(book) == [] and sim.request_count == 0


class TestCustomClients:
    def test_metered_transport_in_a_custom_httpx_client(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """MeteredTransport(book, project) wraps a default HTTPTransport in httpx.Client."""
        with httpx.Client(transport=MeteredTransport(book, "acme")) as client:
            response = client.post(sim.openai_base_url + "/chat/completions",
                                   json={"model": "kimi-k2.5", "messages": MESSAGES})
        assert response.json()["usage"]["total_tokens"] == 25
        assert_billed(book, only_event(book, ledger_events), 5, 20)

    def test_metered_transport_wraps_a_given_httpx2_transport(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """wrapped= puts the ledger in front of your own transport (here httpx2)."""
        inner = httpx2.HTTPTransport(retries=1)
        with httpx2.Client(transport=MeteredTransport(book, "acme", wrapped=inner)) as client:
            client.post(sim.base_url + "/v1/messages",
                        json={"model": "kimi-k2.5", "max_tokens": 50, "messages": MESSAGES})
        assert_billed(book, only_event(book, ledger_events), 5, 20)

    @pytest.mark.anyio
    async def test_metered_transport_in_async_clients(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """One MeteredTransport class serves httpx.AsyncClient and httpx2.AsyncClient."""
        body = {"model": "kimi-k2.5", "max_tokens": 50, "messages": MESSAGES}
        async with httpx.AsyncClient(transport=MeteredTransport(book, "acme")) as one:
            await one.post(sim.base_url + "/v1/messages", json=body)
        async with httpx2.AsyncClient(transport=MeteredTransport(book, "acme")) as two:
            await two.post(sim.base_url + "/v1/messages", json=body)
        assert len(ledger_events(book)) == 2 and book.spend("acme") == cost(50)

    def test_client_kwargs_are_honoured(self, book: Ledger, sim: RunAPISimulator) -> None:
        """httpx_client(project, **kwargs) passes httpx.Client's own arguments through."""
        with book.httpx_client("acme", base_url=sim.openai_base_url, timeout=5.0,
                               headers={"x-app": "demo"}) as client:
            client.post("/chat/completions", json={"model": "kimi-k2.5", "messages": MESSAGES})
        assert sim.api_requests[-1].headers["x-app"] == "demo"
        assert book.spend("acme") == cost(25)

    def test_no_route_bypasses_the_ledger(self, book: Ledger, sim: RunAPISimulator) -> None:
        """A client's mounts (e.g. proxies) and given transport are metered too."""
        with book.httpx_client("acme", mounts={"http://": httpx.HTTPTransport()}) as client:
            client.post(sim.openai_base_url + "/chat/completions",
                        json={"model": "kimi-k2.5", "messages": MESSAGES})
        with book.httpx2_client("acme", transport=httpx2.HTTPTransport()) as client2:
            client2.post(sim.openai_base_url + "/chat/completions",
                         json={"model": "kimi-k2.5", "messages": MESSAGES})
        assert book.spend("acme") == cost(50)
