"""Issue 12 item "No recipes", the Responses API half: the OpenAI SDK's ``client.responses``,
pydantic-ai's ``OpenAIResponsesModel`` and openai-agents' default (Responses) model, metered as
docs/INTEGRATIONS.md shows.

Not collected by default (no ``test_`` prefix): ``/v1/responses`` is not metered on this ledger
yet and the simulator answers it 404. Once the /v1/responses release lands, rename this file
``test_responses_recipes.py`` so it becomes a test. Until then run it by naming it:
``.venv-integrations/bin/python -m pytest tests/integrations/responses_recipes.py``."""

from __future__ import annotations

from decimal import Decimal

import pytest
from helpers import PRICE, Events
from recipe_helpers import assert_refused_once, framework

from ledger import Ledger
from ledger.money import from_units
from ledger.testing.simulator import RunAPISimulator

openai = framework("openai", "openai")
pydantic_ai = framework("pydantic_ai", "pydantic-ai-slim[openai]")
models_openai = framework("pydantic_ai.models.openai", "pydantic-ai-slim[openai]")
providers_openai = framework("pydantic_ai.providers.openai", "pydantic-ai-slim[openai]")
exceptions = framework("pydantic_ai.exceptions", "pydantic-ai-slim[openai]")
agents = framework("agents", "openai-agents")


def assert_billed_as_reported(book: Ledger, sim: RunAPISimulator, ledger_events: Events,
                              reported: list[tuple[int, int]]) -> None:
    """One settled event per request, at the (input, output) tokens the framework reported,
    and the spend is that usage times the price, exactly."""
    events = ledger_events(book)
    assert sim.request_count == len(reported) == len(events)
    assert all(e["status"] == "ok" and not e["estimated"] for e in events)
    assert [(e["prompt_tokens"], e["completion_tokens"]) for e in events] == reported
    expected = sum((PRICE * (i + o) / 1000 for i, o in reported), Decimal(0))
    assert sum((from_units(e["cost"]) for e in events), Decimal(0)) == expected
    assert book.spend("acme") == expected and expected > 0


def test_openai_responses_plain_and_streamed_are_billed_exactly(
        book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
    """Issue 12 "No recipes": client.responses.create, plain and streamed, billed exactly."""
    client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-...",
                           http_client=book.httpx_client("acme"))
    reply = client.responses.create(model="kimi-k2.5", input="hello there")
    done = [e.response for e in client.responses.create(
        model="kimi-k2.5", input="hello there", stream=True) if e.type == "response.completed"]
    assert reply.usage is not None and len(done) == 1 and done[0].usage is not None
    assert_billed_as_reported(book, sim, ledger_events, [
        (reply.usage.input_tokens, reply.usage.output_tokens),
        (done[0].usage.input_tokens, done[0].usage.output_tokens)])


def test_openai_responses_refusal_is_a_402(
        book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
    """Issue 12 "No recipes": over budget, client.responses.create raises 402, once."""
    book.set_budget("acme", Decimal("0.0001"))
    client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-...",
                           http_client=book.httpx_client("acme"))
    with pytest.raises(openai.APIStatusError) as caught:
        client.responses.create(model="kimi-k2.5", input="hello there")
    assert caught.value.status_code == 402
    assert_refused_once(book, sim, ledger_events)


def pydantic_agent(book: Ledger, sim: RunAPISimulator) -> object:
    provider = providers_openai.OpenAIProvider(
        base_url=sim.openai_base_url, api_key="sk-...",
        http_client=book.async_httpx_client("acme"))
    return pydantic_ai.Agent(models_openai.OpenAIResponsesModel("kimi-k2.5", provider=provider))


def test_pydantic_ai_responses_model_is_billed_exactly(
        book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
    """Issue 12 "No recipes": Agent on OpenAIResponsesModel, billed at its usage."""
    result = pydantic_agent(book, sim).run_sync("hello there")  # type: ignore[attr-defined]
    assert_billed_as_reported(book, sim, ledger_events,
                              [(result.usage.input_tokens, result.usage.output_tokens)])


def test_pydantic_ai_responses_refusal_is_a_402(
        book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
    """Issue 12 "No recipes": over budget, OpenAIResponsesModel raises ModelHTTPError 402."""
    book.set_budget("acme", Decimal("0.0001"))
    with pytest.raises(exceptions.ModelHTTPError) as caught:
        pydantic_agent(book, sim).run_sync("hello there")  # type: ignore[attr-defined]
    assert caught.value.status_code == 402
    assert_refused_once(book, sim, ledger_events)


@pytest.fixture
def agents_default_client(book: Ledger, sim: RunAPISimulator,
                          monkeypatch: pytest.MonkeyPatch) -> object:
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


def test_openai_agents_default_responses_model_is_billed_exactly(
        book: Ledger, sim: RunAPISimulator, ledger_events: Events,
        agents_default_client: object) -> None:
    """Issue 12 "No recipes": Runner.run_sync on the default (Responses) model, exact."""
    result = agents.Runner.run_sync(agents.Agent(name="echo", model="kimi-k2.5"), "hello there")
    seen = result.context_wrapper.usage
    assert_billed_as_reported(book, sim, ledger_events, [(seen.input_tokens, seen.output_tokens)])


def test_openai_agents_default_responses_refusal_is_a_402(
        book: Ledger, sim: RunAPISimulator, ledger_events: Events,
        agents_default_client: object) -> None:
    """Issue 12 "No recipes": over budget, the default Responses model raises 402, once."""
    book.set_budget("acme", Decimal("0.0001"))
    with pytest.raises(openai.APIStatusError) as caught:
        agents.Runner.run_sync(agents.Agent(name="echo", model="kimi-k2.5"), "hello there")
    assert caught.value.status_code == 402
    assert_refused_once(book, sim, ledger_events)
