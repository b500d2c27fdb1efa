"""Issue 12 item "No recipes", the Responses API half: the OpenAI SDK's ``client.responses``,
pydantic-ai's ``OpenAIResponsesModel`` and openai-agents' default (Responses) model, metered as
docs/INTEGRATIONS.md shows, plain and streamed, against the simulator's ``/v1/responses`` (the
``response`` object and the typed event stream the OpenAI API sends)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from helpers import Events
from recipe_helpers import assert_billed_exactly, assert_refused_once, framework

from ledger import Ledger
from ledger.testing.simulator import RunAPISimulator

openai = framework("openai", "openai")
pydantic_ai = framework("pydantic_ai", "pydantic-ai-slim[openai]")
models_openai = framework("pydantic_ai.models.openai", "pydantic-ai-slim[openai]")
providers_openai = framework("pydantic_ai.providers.openai", "pydantic-ai-slim[openai]")
exceptions = framework("pydantic_ai.exceptions", "pydantic-ai-slim[openai]")
agents = framework("agents", "openai-agents")


def assert_all_responses(sim: RunAPISimulator) -> None:
    """Every call went to /v1/responses (not to a Chat Completions fallback)."""
    assert sim.api_requests and {r.path for r in sim.api_requests} == {"/v1/responses"}


class TestOpenAISDK:
    def test_plain_and_streamed_are_billed_exactly(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": client.responses.create, plain and streamed, billed exactly
        at the usage the SDK reports too."""
        client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-...",
                               http_client=book.httpx_client("acme"))
        reply = client.responses.create(model="kimi-k2.5", input="hello there")
        done = [e.response for e in client.responses.create(
            model="kimi-k2.5", input="hello there", stream=True)
            if e.type == "response.completed"]
        assert reply.output_text.startswith("Echo:") and len(done) == 1
        assert_all_responses(sim)
        usage = assert_billed_exactly(book, sim, ledger_events, calls=2)
        assert reply.usage is not None and done[0].usage is not None
        assert usage == [(reply.usage.input_tokens, reply.usage.output_tokens),
                         (done[0].usage.input_tokens, done[0].usage.output_tokens)]

    def test_stream_helper_is_billed_exactly(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": the SDK's responses.stream() helper, billed exactly."""
        client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-...",
                               http_client=book.httpx_client("acme"))
        with client.responses.stream(model="kimi-k2.5", input="hello there") as stream:
            text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
            final = stream.get_final_response()
        assert text == final.output_text and text.startswith("Echo:")
        assert_billed_exactly(book, sim, ledger_events, calls=1)

    def test_refusal_is_a_402(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": over budget, client.responses.create raises 402, once."""
        book.set_budget("acme", Decimal("0.0001"))
        client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-...",
                               http_client=book.httpx_client("acme"))
        with pytest.raises(openai.APIStatusError) as caught:
            client.responses.create(model="kimi-k2.5", input="hello there")
        assert caught.value.status_code == 402
        assert caught.value.body["type"] == "budget_exceeded"
        assert_refused_once(book, sim, ledger_events)


def pydantic_agent(book: Ledger, sim: RunAPISimulator) -> Any:
    provider = providers_openai.OpenAIProvider(
        base_url=sim.openai_base_url, api_key="sk-...",
        http_client=book.async_httpx_client("acme"))
    return pydantic_ai.Agent(models_openai.OpenAIResponsesModel("kimi-k2.5", provider=provider))


class TestPydanticAIResponsesModel:
    def test_run_sync_is_billed_exactly(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": Agent on OpenAIResponsesModel, billed at its usage."""
        result = pydantic_agent(book, sim).run_sync("hello there")
        assert str(result.output).startswith("Echo:")
        assert_all_responses(sim)
        usage = assert_billed_exactly(book, sim, ledger_events, calls=1)
        assert usage == [(result.usage.input_tokens, result.usage.output_tokens)]

    @pytest.mark.anyio
    async def test_run_stream_is_billed_exactly(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": OpenAIResponsesModel run_stream (text deltas), exact."""
        async with pydantic_agent(book, sim).run_stream("hello there") as run:
            text = "".join([d async for d in run.stream_text(delta=True)])
        assert text.startswith("Echo:")
        assert sim.api_requests[0].json["stream"] is True
        assert_all_responses(sim)
        usage = assert_billed_exactly(book, sim, ledger_events, calls=1)
        assert usage == [(run.usage.input_tokens, run.usage.output_tokens)]

    def test_refusal_is_a_402(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": over budget, OpenAIResponsesModel raises ModelHTTPError 402."""
        book.set_budget("acme", Decimal("0.0001"))
        with pytest.raises(exceptions.ModelHTTPError) as caught:
            pydantic_agent(book, sim).run_sync("hello there")
        assert caught.value.status_code == 402
        assert caught.value.body["type"] == "budget_exceeded"
        assert_refused_once(book, sim, ledger_events)


@pytest.fixture
def agents_default_client(book: Ledger, sim: RunAPISimulator,
                          monkeypatch: pytest.MonkeyPatch) -> Any:
    """openai-agents' default client (used by its default Responses model), metered; the
    process-wide defaults are put back after the test."""
    shared = framework("agents.models._openai_shared", "openai-agents")
    for name in ("_default_openai_client", "_use_responses_by_default"):
        monkeypatch.setattr(shared, name, getattr(shared, name))  # restored at teardown
    agents.set_tracing_disabled(True)
    client = openai.AsyncOpenAI(base_url=sim.openai_base_url, api_key="sk-...",
                                http_client=book.async_httpx_client("acme"))
    agents.set_default_openai_client(client, use_for_tracing=False)
    agents.set_default_openai_api("responses")
    return client


class TestOpenAIAgentsDefaultModel:
    def test_run_sync_is_billed_exactly(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events,
            agents_default_client: Any) -> None:
        """Issue 12 "No recipes": Runner.run_sync on the default (Responses) model, exact."""
        result = agents.Runner.run_sync(agents.Agent(name="echo", model="kimi-k2.5"),
                                        "hello there")
        assert str(result.final_output).startswith("Echo:")
        assert_all_responses(sim)
        usage = assert_billed_exactly(book, sim, ledger_events, calls=1)
        seen = result.context_wrapper.usage
        assert usage == [(seen.input_tokens, seen.output_tokens)]

    @pytest.mark.anyio
    async def test_run_streamed_is_billed_exactly(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events,
            agents_default_client: Any) -> None:
        """Issue 12 "No recipes": Runner.run_streamed on the default model: the usage comes
        in response.completed, so the agent and the ledger both see it, exactly."""
        result = agents.Runner.run_streamed(agents.Agent(name="echo", model="kimi-k2.5"),
                                            "hello there")
        assert [e async for e in result.stream_events()]
        assert str(result.final_output).startswith("Echo:")
        assert sim.api_requests[0].json["stream"] is True
        usage = assert_billed_exactly(book, sim, ledger_events, calls=1)
        seen = result.context_wrapper.usage
        assert usage == [(seen.input_tokens, seen.output_tokens)]

    def test_refusal_is_a_402(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events,
            agents_default_client: Any) -> None:
        """Issue 12 "No recipes": over budget, the default Responses model raises 402, once."""
        book.set_budget("acme", Decimal("0.0001"))
        with pytest.raises(openai.APIStatusError) as caught:
            agents.Runner.run_sync(agents.Agent(name="echo", model="kimi-k2.5"), "hello there")
        assert caught.value.status_code == 402
        assert_refused_once(book, sim, ledger_events)
