"""Signals on every metered response (issue 10): ``x-ledger-cost-held``, ``x-ledger-remaining`` and
``x-ledger-budget`` (the tightest matching hard budget), streamed or not; and the refusal that
names the budget that did not fit (``ledger.refusal(...).budget``, the 402 body)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import openai
import pytest
from helpers import MESSAGES

import ledger
from ledger import Ledger
from ledger.errors import BudgetExceeded
from ledger.money import from_units
from ledger.pricing import worst_case_units
from ledger.testing.simulator import RunAPISimulator
from ledger.transport import header_text

MODEL = "kimi-k2.5"
CHAT = {"model": MODEL, "messages": MESSAGES, "max_tokens": 100}


def post(book: Ledger, sim: RunAPISimulator, body: dict[str, Any] = CHAT,
         **client: Any) -> httpx.Response:
    with book.httpx_client("acme", **client) as http:
        return http.post(sim.openai_base_url + "/chat/completions", json=body)


def worst(book: Ledger, response: httpx.Response) -> Decimal:
    return Decimal(response.headers["x-ledger-cost-held"])


class TestHeaders:
    def test_no_budget_gives_the_cost_held_only(self, book: Ledger,
                                                sim: RunAPISimulator) -> None:
        """Without a hard budget: x-ledger-cost-held (exact), no remaining, no budget."""
        response = post(book, sim)
        held = response.headers["x-ledger-cost-held"]
        assert Decimal(held) > 0 and "E" not in held
        assert "x-ledger-remaining" not in response.headers
        assert "x-ledger-budget" not in response.headers

    def test_project_month_budget(self, book: Ledger, sim: RunAPISimulator) -> None:
        """The project's monthly budget: remaining after this call's hold, its label."""
        book.set_budget("acme", Decimal("1"))
        response = post(book, sim)
        held = worst(book, response)
        assert Decimal(response.headers["x-ledger-remaining"]) == Decimal("1") - held
        assert response.headers["x-ledger-budget"] == "acme month"

    def test_tightest_of_several(self, book: Ledger, sim: RunAPISimulator) -> None:
        """With a $50 month and a $2 day budget, the day one is the tightest and is named."""
        book.set_budget("acme", Decimal("50"))
        book.set_budget("acme", Decimal("2"), period="day")
        book.record("acme", MODEL, prompt_tokens=10_000, completion_tokens=0)  # $0.20
        response = post(book, sim)
        held = worst(book, response)
        assert response.headers["x-ledger-budget"] == "acme day"
        assert Decimal(response.headers["x-ledger-remaining"]) == Decimal("1.80") - held

    def test_each_user_budget(self, book: Ledger, sim: RunAPISimulator) -> None:
        """A per-user ("*") daily budget is the tightest for that user's call."""
        book.set_budget("acme", Decimal("50"))
        book.set_budget("acme", Decimal("0.10"), period="day", user="*")
        response = post(book, sim, user="alice")
        assert response.headers["x-ledger-budget"] == "acme user=* day"
        assert Decimal(response.headers["x-ledger-remaining"]) == \
            Decimal("0.10") - worst(book, response)

    def test_soft_budget_is_not_a_wall(self, book: Ledger, sim: RunAPISimulator) -> None:
        """Only hard budgets count: a soft one gives no remaining."""
        book.set_budget("acme", Decimal("1"), hard=False)
        assert "x-ledger-remaining" not in post(book, sim).headers

    def test_cost_held_is_the_worst_case(self, book: Ledger, sim: RunAPISimulator) -> None:
        """x-ledger-cost-held is the hold's amount exactly (prompt estimate + cap)."""
        with book.metered_call("acme", CHAT) as call:
            expected = call.worst_case
            call.settle(prompt_tokens=1, completion_tokens=1)
        response = post(book, sim)
        assert worst(book, response) == expected

    def test_openai_sdk_stream_and_plain(self, book: Ledger, sim: RunAPISimulator) -> None:
        """The OpenAI SDK sees the headers on a plain reply and on a stream."""
        book.set_budget("acme", Decimal("1"))
        client = openai.OpenAI(base_url=sim.openai_base_url, api_key="k",
                               http_client=book.httpx_client("acme"))
        with client:
            raw = client.chat.completions.with_raw_response.create(model=MODEL,
                                                                   messages=MESSAGES)
            with client.chat.completions.with_streaming_response.create(
                    model=MODEL, messages=MESSAGES, stream=True) as streamed:
                stream_headers = dict(streamed.headers)
                list(streamed.iter_lines())
        for headers in (raw.headers, stream_headers):
            assert headers["x-ledger-budget"] == "acme month"
            assert Decimal(headers["x-ledger-remaining"]) < Decimal("1")
            assert Decimal(headers["x-ledger-cost-held"]) > 0

    def test_anthropic_sdk_stream(self, book: Ledger, sim: RunAPISimulator) -> None:
        """The Anthropic SDK (httpx2) sees the headers on a stream."""
        book.set_budget("acme", Decimal("1"))
        client = anthropic.Anthropic(base_url=sim.anthropic_base_url, api_key="k",
                                     http_client=book.httpx2_client("acme"))
        with client, client.messages.with_streaming_response.create(
                model=MODEL, max_tokens=100, messages=MESSAGES, stream=True) as streamed:
            assert streamed.headers["x-ledger-budget"] == "acme month"
            remaining = Decimal(streamed.headers["x-ledger-remaining"])
            list(streamed.iter_lines())
        price = book.price(MODEL)
        assert remaining <= Decimal("1") - from_units(worst_case_units(price, 1, 100))

    def test_a_label_is_safe_in_a_header(self, book: Ledger, sim: RunAPISimulator) -> None:
        """A budget whose name holds non-ASCII or a line break is percent-encoded."""
        assert header_text("acme month") == "acme month"
        assert header_text("caf\u00e9\r\nX: 1 50%") == "caf%C3%A9%0D%0AX: 1 50%25"
        book.set_budget("caf\u00e9", Decimal("1"))
        with book.httpx_client("caf\u00e9") as http:
            response = http.post(sim.openai_base_url + "/chat/completions", json=CHAT)
        assert response.headers["x-ledger-budget"] == "caf%C3%A9 month"


class TestRefusalNamesTheBudget:
    def test_from_the_exception(self, book: Ledger) -> None:
        """BudgetExceeded read through ledger.refusal: .budget names the day budget."""
        book.set_budget("acme", Decimal("50"))
        book.set_budget("acme", Decimal("0.001"), period="day")
        with pytest.raises(BudgetExceeded) as caught:
            book.metered_call("acme", CHAT).__enter__()
        info = ledger.refusal(caught.value)
        assert info is not None and info.budget is not None
        assert (info.budget.label, info.budget.period, info.budget.window) == \
            ("acme day", "day", "2026-11-10")
        assert info.budget.limit == Decimal("0.001") and str(info.budget) == "acme day"

    def test_from_the_402_body(self, book: Ledger, sim: RunAPISimulator) -> None:
        """The 402 body carries the budget's label, period, window, limit and remaining (JSON
        strings), and ledger.refusal reads them back from the SDK error."""
        book.set_budget("acme", Decimal("50"))
        book.set_budget("acme", Decimal("0.001"), period="day", user="*")
        client = openai.OpenAI(base_url=sim.openai_base_url, api_key="k", max_retries=2,
                               http_client=book.httpx_client("acme", user="alice"))
        with client, pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=100)
        assert caught.value.status_code == 402 and sim.api_requests == []
        error = json.loads(caught.value.response.content)["error"]
        assert error["type"] == "budget_exceeded"
        assert (error["budget"], error["period"], error["window"], error["limit"],
                error["remaining"], error["user"]) == (
            "acme user=* day", "day", "2026-11-10", "0.001", "0.001", "alice")
        info = ledger.refusal(caught.value)
        assert info is not None and info.budget is not None
        assert info.budget.label == "acme user=* day" and info.budget.user == "alice"
        assert info.budget.remaining == Decimal("0.001")

    def test_anthropic_402_body(self, book: Ledger, sim: RunAPISimulator) -> None:
        """The Anthropic-shape 402 names the tag budget too."""
        book.set_budget("acme", Decimal("0.001"), period="week", tag="feature=search")
        client = anthropic.Anthropic(base_url=sim.anthropic_base_url, api_key="k",
                                     http_client=book.httpx2_client(
                                         "acme", tags={"feature": "search"}))
        with client, pytest.raises(anthropic.APIStatusError) as caught:
            client.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)
        info = ledger.refusal(caught.value)
        assert info is not None and info.budget is not None
        assert (info.budget.label, info.budget.tag, info.budget.window) == (
            "acme tag=feature=search week", "feature=search", "2026-11-09")
