"""Issue 12 item "No recipes": instructor over a metered OpenAI client (docs/INTEGRATIONS.md):
structured output and partial streaming billed exactly, a refusal raised on the first attempt."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from helpers import MESSAGES, Events
from pydantic import BaseModel
from recipe_helpers import assert_billed_exactly, assert_refused_once, framework, status_of

from ledger import Ledger
from ledger.testing.simulator import Behavior, RunAPISimulator

openai = framework("openai", "openai")
instructor = framework("instructor", "instructor")
instructor_core = framework("instructor.core", "instructor")

ADA = Behavior(reply='{"name": "Ada", "age": 36}')


class Person(BaseModel):
    name: str
    age: int


def client(book: Ledger, sim: RunAPISimulator) -> Any:
    return instructor.from_openai(
        openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-...",
                      http_client=book.httpx_client("acme")),
        mode=instructor.Mode.JSON)


class TestMetered:
    def test_structured_output_is_billed_exactly(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": instructor create_with_completion, billed at its usage."""
        sim.enqueue(ADA)
        person, completion = client(book, sim).chat.completions.create_with_completion(
            model="kimi-k2.5", response_model=Person, messages=MESSAGES)
        assert (person.name, person.age) == ("Ada", 36)
        usage = assert_billed_exactly(book, sim, ledger_events, calls=1, behavior=ADA)
        assert usage == [(completion.usage.prompt_tokens, completion.usage.completion_tokens)]

    def test_partial_stream_is_billed_exactly(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": instructor create_partial (a stream), billed exactly."""
        sim.enqueue(ADA)
        partials = list(client(book, sim).chat.completions.create_partial(
            model="kimi-k2.5", response_model=Person, messages=MESSAGES))
        assert partials[-1].name == "Ada" and partials[-1].age == 36
        assert sim.api_requests[0].json["stream"] is True
        assert_billed_exactly(book, sim, ledger_events, calls=1, behavior=ADA)

    @pytest.mark.anyio
    async def test_async_structured_output_is_billed_exactly(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": instructor over AsyncOpenAI, billed exactly."""
        sim.enqueue(ADA)
        aclient = instructor.from_openai(
            openai.AsyncOpenAI(base_url=sim.openai_base_url, api_key="sk-...",
                               http_client=book.async_httpx_client("acme")),
            mode=instructor.Mode.JSON)
        person = await aclient.chat.completions.create(
            model="kimi-k2.5", response_model=Person, messages=MESSAGES)
        assert (person.name, person.age) == ("Ada", 36)
        assert_billed_exactly(book, sim, ledger_events, calls=1, behavior=ADA)


class TestRefused:
    def test_refusal_is_raised_on_the_first_attempt(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": over budget, instructor (max_retries=3) raises
        InstructorRetryException after one attempt, caused by the SDK's 402 status error."""
        book.set_budget("acme", Decimal("0.0001"))
        with pytest.raises(instructor_core.InstructorRetryException) as caught:
            client(book, sim).chat.completions.create(
                model="kimi-k2.5", response_model=Person, messages=MESSAGES, max_retries=3)
        assert caught.value.n_attempts == 1
        cause = caught.value.__cause__
        assert isinstance(cause, openai.APIStatusError) and cause.status_code == 402
        assert cause.body["type"] == "budget_exceeded" and status_of(caught.value) == 402
        assert_refused_once(book, sim, ledger_events)
