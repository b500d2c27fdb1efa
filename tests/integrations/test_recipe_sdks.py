"""Issue 12 item "No recipes": the OpenAI SDK (Chat Completions) and the Anthropic SDK, metered
as docs/INTEGRATIONS.md shows, billed exactly, and refused with a 402 they do not retry."""

from __future__ import annotations

from decimal import Decimal

import pytest
from helpers import MESSAGES, Events
from recipe_helpers import assert_billed_exactly, assert_refused_once, framework

from ledger import Ledger
from ledger.testing.simulator import RunAPISimulator

openai = framework("openai", "openai")
anthropic = framework("anthropic", "anthropic")


class TestOpenAIChatCompletions:
    def test_plain_and_streamed_calls_are_billed_exactly(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": OpenAI SDK chat.completions, plain and streamed, billed exactly."""
        client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-...",
                               http_client=book.httpx_client("acme"))
        reply = client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES)
        stream = client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES,
                                                stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        usage = assert_billed_exactly(book, sim, ledger_events, calls=2)
        assert reply.usage is not None
        assert usage[0] == (reply.usage.prompt_tokens, reply.usage.completion_tokens)
        assert text.startswith("Echo:")

    @pytest.mark.anyio
    async def test_async_stream_is_billed_exactly(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": AsyncOpenAI over async_httpx_client, streamed, billed exactly."""
        async with openai.AsyncOpenAI(base_url=sim.openai_base_url, api_key="sk-...",
                                      http_client=book.async_httpx_client("acme")) as client:
            stream = await client.chat.completions.create(
                model="kimi-k2.5", messages=MESSAGES, stream=True,
                stream_options={"include_usage": True})
            chunks = [c async for c in stream]
        usage = assert_billed_exactly(book, sim, ledger_events, calls=1)
        assert chunks[-1].usage is not None
        assert usage == [(chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens)]

    def test_refusal_is_a_402_status_error_not_retried(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": over a hard budget the SDK raises APIStatusError 402, once."""
        book.set_budget("acme", Decimal("0.0001"))
        client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-...",
                               http_client=book.httpx_client("acme"))
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES)
        assert caught.value.status_code == 402
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["type"] == "budget_exceeded"
        assert_refused_once(book, sim, ledger_events)


class TestAnthropic:
    def test_plain_and_streamed_calls_are_billed_exactly(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": Anthropic SDK messages, plain and streamed, billed exactly."""
        client = anthropic.Anthropic(base_url=sim.anthropic_base_url, api_key="sk-ant-...",
                                     http_client=book.httpx2_client("acme"))
        msg = client.messages.create(model="kimi-k2.5", max_tokens=100, messages=MESSAGES)
        with client.messages.stream(model="kimi-k2.5", max_tokens=100,
                                    messages=MESSAGES) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        usage = assert_billed_exactly(book, sim, ledger_events, calls=2)
        assert usage == [(msg.usage.input_tokens, msg.usage.output_tokens),
                         (final.usage.input_tokens, final.usage.output_tokens)]
        assert text.startswith("Echo:")

    @pytest.mark.anyio
    async def test_async_stream_is_billed_exactly(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": AsyncAnthropic over async_httpx2_client, streamed, exact."""
        async with anthropic.AsyncAnthropic(
                base_url=sim.anthropic_base_url, api_key="sk-ant-...",
                http_client=book.async_httpx2_client("acme")) as client:
            async with client.messages.stream(model="kimi-k2.5", max_tokens=100,
                                              messages=MESSAGES) as stream:
                final = await stream.get_final_message()
        usage = assert_billed_exactly(book, sim, ledger_events, calls=1)
        assert usage == [(final.usage.input_tokens, final.usage.output_tokens)]

    def test_refusal_is_a_402_status_error_not_retried(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": the Anthropic SDK raises APIStatusError 402, error type
        budget_exceeded, once."""
        book.set_budget("acme", Decimal("0.0001"))
        client = anthropic.Anthropic(base_url=sim.anthropic_base_url, api_key="sk-ant-...",
                                     http_client=book.httpx2_client("acme"))
        with pytest.raises(anthropic.APIStatusError) as caught:
            client.messages.create(model="kimi-k2.5", max_tokens=100, messages=MESSAGES)
        assert caught.value.status_code == 402
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["error"]["type"] == "budget_exceeded"
        assert_refused_once(book, sim, ledger_events)
