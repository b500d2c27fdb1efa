"""Issue 12 item "No recipes": langchain-openai's ChatOpenAI metered through ``http_client`` and
``http_async_client`` (docs/INTEGRATIONS.md), billed exactly, and a refusal ``.with_retry()``
does not retry once it is told which errors are worth retrying."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from helpers import Events
from recipe_helpers import assert_billed_exactly, assert_refused_once, framework

from ledger import Ledger
from ledger.testing.simulator import RunAPISimulator

openai = framework("openai", "openai")
langchain_openai = framework("langchain_openai", "langchain-openai")

#: What is worth retrying: never a 402 (nor any other 4xx but 429).
TRANSIENT = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)


def chat(book: Ledger, sim: RunAPISimulator) -> Any:
    return langchain_openai.ChatOpenAI(
        model="kimi-k2.5", base_url=sim.openai_base_url, api_key="sk-...",
        http_client=book.httpx_client("acme"),
        http_async_client=book.async_httpx_client("acme"),
        stream_usage=True)


class TestMetered:
    def test_invoke_and_stream_are_billed_exactly(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": ChatOpenAI.invoke and .stream over http_client, exact."""
        llm = chat(book, sim)
        reply = llm.invoke("hello there")
        chunks = list(llm.stream("hello there"))
        usage = assert_billed_exactly(book, sim, ledger_events, calls=2)
        streamed = [c.usage_metadata for c in chunks if c.usage_metadata]
        assert len(streamed) == 1
        assert usage == [
            (reply.usage_metadata["input_tokens"], reply.usage_metadata["output_tokens"]),
            (streamed[0]["input_tokens"], streamed[0]["output_tokens"])]
        assert "".join(str(c.content) for c in chunks).startswith("Echo:")

    @pytest.mark.anyio
    async def test_ainvoke_and_astream_are_billed_exactly(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": ChatOpenAI.ainvoke and .astream over http_async_client."""
        llm = chat(book, sim)
        reply = await llm.ainvoke("hello there")
        chunks = [c async for c in llm.astream("hello there")]
        usage = assert_billed_exactly(book, sim, ledger_events, calls=2)
        streamed = [c.usage_metadata for c in chunks if c.usage_metadata]
        assert usage == [
            (reply.usage_metadata["input_tokens"], reply.usage_metadata["output_tokens"]),
            (streamed[0]["input_tokens"], streamed[0]["output_tokens"])]

    @pytest.mark.anyio
    async def test_without_http_async_client_async_calls_go_around_the_ledger(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": why the recipe passes both clients: with http_client alone,
        ainvoke reaches the server unmetered."""
        llm = langchain_openai.ChatOpenAI(model="kimi-k2.5", base_url=sim.openai_base_url,
                                          api_key="sk-...", http_client=book.httpx_client("acme"))
        await llm.ainvoke("hello there")
        assert sim.request_count == 1 and ledger_events(book) == []


class TestRefused:
    def test_refusal_raises_the_402_status_error(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": over budget, invoke raises openai.APIStatusError 402, once."""
        book.set_budget("acme", Decimal("0.0001"))
        with pytest.raises(openai.APIStatusError) as caught:
            chat(book, sim).invoke("hello there")
        assert caught.value.status_code == 402
        assert caught.value.body["type"] == "budget_exceeded"
        assert_refused_once(book, sim, ledger_events)

    def test_default_with_retry_retries_the_refusal_three_times(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": why the recipe names the errors: a bare with_retry() retries
        every exception, the 402 included (three refused attempts)."""
        book.set_budget("acme", Decimal("0.0001"))
        llm = chat(book, sim).with_retry(wait_exponential_jitter=False)
        with pytest.raises(openai.APIStatusError):
            llm.invoke("hello there")
        assert sim.request_count == 0
        assert [e["status"] for e in ledger_events(book)] == ["refused"] * 3

    def test_with_retry_on_transient_errors_does_not_retry_the_refusal(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": with_retry(retry_if_exception_type=TRANSIENT) lets the 402
        through on the first attempt."""
        book.set_budget("acme", Decimal("0.0001"))
        llm = chat(book, sim).with_retry(retry_if_exception_type=TRANSIENT,
                                         stop_after_attempt=3)
        with pytest.raises(openai.APIStatusError) as caught:
            llm.invoke("hello there")
        assert caught.value.status_code == 402
        assert_refused_once(book, sim, ledger_events)

    @pytest.mark.anyio
    async def test_async_with_retry_on_transient_errors_does_not_retry_the_refusal(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": the same through ainvoke and http_async_client."""
        book.set_budget("acme", Decimal("0.0001"))
        llm = chat(book, sim).with_retry(retry_if_exception_type=TRANSIENT)
        with pytest.raises(openai.APIStatusError) as caught:
            await llm.ainvoke("hello there")
        assert caught.value.status_code == 402
        assert_refused_once(book, sim, ledger_events)
