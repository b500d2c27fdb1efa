"""Issue 12 item "No recipes": openai-agents on its Chat Completions model, metered through the
AsyncOpenAI client it is given (docs/INTEGRATIONS.md), billed exactly, refused without a retry.
(Its default Responses model is in test_responses_recipes.py.)"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from helpers import Events
from recipe_helpers import assert_billed_exactly, assert_refused_once, framework

from ledger import Ledger
from ledger.testing.simulator import RunAPISimulator

openai = framework("openai", "openai")
agents = framework("agents", "openai-agents")


@pytest.fixture(autouse=True)
def no_tracing() -> None:
    agents.set_tracing_disabled(True)  # tracing would post to api.openai.com


def agent(book: Ledger, sim: RunAPISimulator, **settings: Any) -> Any:
    client = openai.AsyncOpenAI(base_url=sim.openai_base_url, api_key="sk-...",
                                http_client=book.async_httpx_client("acme"))
    model = agents.OpenAIChatCompletionsModel(model="kimi-k2.5", openai_client=client)
    return agents.Agent(name="echo", model=model,
                        model_settings=agents.ModelSettings(**settings))


class TestMetered:
    def test_run_sync_is_billed_exactly(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": Runner.run_sync on OpenAIChatCompletionsModel, exact."""
        result = agents.Runner.run_sync(agent(book, sim), "hello there")
        assert str(result.final_output).startswith("Echo:")
        usage = assert_billed_exactly(book, sim, ledger_events, calls=1)
        seen = result.context_wrapper.usage
        assert usage == [(seen.input_tokens, seen.output_tokens)]

    @pytest.mark.anyio
    async def test_run_streamed_is_billed_exactly(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": Runner.run_streamed, billed exactly (include_usage=True so
        the agent's own usage shows the billed tokens too)."""
        result = agents.Runner.run_streamed(agent(book, sim, include_usage=True), "hello there")
        events = [e async for e in result.stream_events()]
        assert events and str(result.final_output).startswith("Echo:")
        assert sim.api_requests[0].json["stream"] is True
        usage = assert_billed_exactly(book, sim, ledger_events, calls=1)
        seen = result.context_wrapper.usage
        assert usage == [(seen.input_tokens, seen.output_tokens)]

    @pytest.mark.anyio
    async def test_stream_without_include_usage_is_billed_all_the_same(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": without include_usage the agent sees no usage (0 tokens) but
        the ledger asked for it and bills exactly."""
        result = agents.Runner.run_streamed(agent(book, sim), "hello there")
        assert [e async for e in result.stream_events()]
        assert_billed_exactly(book, sim, ledger_events, calls=1)
        assert result.context_wrapper.usage.input_tokens == 0


class TestRefused:
    def test_refusal_raises_the_402_status_error_once(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": over budget, Runner.run_sync raises APIStatusError 402, once."""
        book.set_budget("acme", Decimal("0.0001"))
        with pytest.raises(openai.APIStatusError) as caught:
            agents.Runner.run_sync(agent(book, sim), "hello there")
        assert caught.value.status_code == 402
        assert caught.value.body["type"] == "budget_exceeded"
        assert_refused_once(book, sim, ledger_events)

    def test_opt_in_retries_on_transient_errors_do_not_retry_the_refusal(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": ModelSettings(retry=...) limited to network errors and
        429/5xx raises the 402 on the first attempt."""
        book.set_budget("acme", Decimal("0.0001"))
        policies = agents.retry_policies
        retry = agents.ModelRetrySettings(max_retries=3, policy=policies.any(
            policies.network_error(), policies.http_status([429, 500, 502, 503, 504])))
        with pytest.raises(openai.APIStatusError) as caught:
            agents.Runner.run_sync(agent(book, sim, retry=retry), "hello there")
        assert caught.value.status_code == 402
        assert_refused_once(book, sim, ledger_events)

    def test_a_policy_that_retries_4xx_would_retry_the_refusal(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": why the recipe lists statuses: a policy naming 402 retries
        it (every attempt refused, none sent)."""
        book.set_budget("acme", Decimal("0.0001"))
        retry = agents.ModelRetrySettings(
            max_retries=2, backoff={"initial_delay": 0.0, "max_delay": 0.0, "jitter": False},
            policy=agents.retry_policies.http_status([402]))
        with pytest.raises(openai.APIStatusError):
            agents.Runner.run_sync(agent(book, sim, retry=retry), "hello there")
        assert sim.request_count == 0
        assert [e["status"] for e in ledger_events(book)] == ["refused"] * 3
