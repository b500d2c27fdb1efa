"""Issue 12 item "No recipes": a pydantic-ai Agent on its OpenAI chat model, metered through the
provider's ``http_client`` (docs/INTEGRATIONS.md), billed exactly, refused without a retry."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from helpers import Events
from recipe_helpers import assert_billed_exactly, assert_refused_once, framework

from ledger import Ledger
from ledger.testing.simulator import RunAPISimulator

pydantic_ai = framework("pydantic_ai", "pydantic-ai-slim[openai]")
models_openai = framework("pydantic_ai.models.openai", "pydantic-ai-slim[openai]")
providers_openai = framework("pydantic_ai.providers.openai", "pydantic-ai-slim[openai]")
exceptions = framework("pydantic_ai.exceptions", "pydantic-ai-slim[openai]")


def agent(book: Ledger, sim: RunAPISimulator) -> Any:
    provider = providers_openai.OpenAIProvider(
        base_url=sim.openai_base_url, api_key="sk-...",
        http_client=book.async_httpx_client("acme"))
    return pydantic_ai.Agent(models_openai.OpenAIChatModel("kimi-k2.5", provider=provider))


class TestMetered:
    def test_run_sync_is_billed_exactly(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": Agent.run_sync on OpenAIChatModel, billed at its usage."""
        result = agent(book, sim).run_sync("hello there")
        assert str(result.output).startswith("Echo:")
        usage = assert_billed_exactly(book, sim, ledger_events, calls=1)
        assert usage == [(result.usage.input_tokens, result.usage.output_tokens)]

    @pytest.mark.anyio
    async def test_run_stream_is_billed_exactly(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": Agent.run_stream (text deltas), billed exactly."""
        async with agent(book, sim).run_stream("hello there") as run:
            text = "".join([d async for d in run.stream_text(delta=True)])
        assert text.startswith("Echo:")
        assert sim.api_requests[0].json["stream"] is True
        usage = assert_billed_exactly(book, sim, ledger_events, calls=1)
        assert usage == [(run.usage.input_tokens, run.usage.output_tokens)]


class TestRefused:
    def test_refusal_raises_model_http_error_402_once(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": over budget, run_sync raises ModelHTTPError 402, once."""
        book.set_budget("acme", Decimal("0.0001"))
        with pytest.raises(exceptions.ModelHTTPError) as caught:
            agent(book, sim).run_sync("hello there")
        assert caught.value.status_code == 402
        assert caught.value.body["type"] == "budget_exceeded"
        assert_refused_once(book, sim, ledger_events)
