"""Worst cases that don't strangle (issue 10): ``Ledger(fit="shrink")`` sends a call whose worst
case does not fit, but whose prompt does, with its completion cap lowered to what fits (never
below ``min_completion_tokens``), and says so in ``x-ledger-max-tokens``."""

from __future__ import annotations

import json
from contextlib import ExitStack
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import openai
import pytest
from helpers import MESSAGES, Events, only_event

import ledger
from ledger import Ledger, ManualClock
from ledger.errors import BudgetExceeded, InvalidInput
from ledger.money import from_units
from ledger.pricing import worst_case_units
from ledger.testing.simulator import RunAPISimulator

MODEL = "kimi-k2.5"


class Upstream:
    """A mock RunAPI that records what it was sent and answers with a small usage."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(json.loads(request.read()))
        if request.url.path.endswith("/messages"):
            return httpx.Response(200, json={
                "id": "m1", "type": "message", "role": "assistant", "model": MODEL,
                "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn",
                "usage": {"input_tokens": 5, "output_tokens": 3}})
        if request.url.path.endswith("/responses"):
            return httpx.Response(200, json={
                "id": "r1", "object": "response", "status": "completed", "model": MODEL,
                "output": [], "usage": {"input_tokens": 5, "output_tokens": 3,
                                        "total_tokens": 8}})
        return httpx.Response(200, json={
            "id": "c1", "object": "chat.completion", "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})


@pytest.fixture
def shrink_book(sqlite_url: str, clock: ManualClock) -> Ledger:
    """A ledger that shrinks caps to fit, with acme's hard budget at $0.01 (500 tokens)."""
    book = Ledger(sqlite_url, clock=clock, fit="shrink")
    book.set_budget("acme", Decimal("0.01"))
    return book


def mock_client(book: Ledger, upstream: Upstream) -> httpx.Client:
    transport = ledger.MeteredTransport(book, "acme", wrapped=httpx.MockTransport(upstream))
    return httpx.Client(transport=transport, base_url="https://runapi.test")


def largest_fitting_cap(book: Ledger, prompt_tokens: int, remaining: Decimal) -> int:
    """The largest completion cap whose worst case fits ``remaining`` (by the price)."""
    price = book.price(MODEL)
    cap = 0
    while from_units(worst_case_units(price, prompt_tokens, cap + 1)) <= remaining:
        cap += 1
    return cap


class TestShrink:
    @pytest.mark.parametrize("path, body, field", [
        ("/v1/chat/completions", {"messages": MESSAGES}, "max_tokens"),
        ("/v1/chat/completions", {"messages": MESSAGES, "max_completion_tokens": 4000},
         "max_completion_tokens"),
        ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 4000}, "max_tokens"),
        ("/v1/responses", {"input": "hello there"}, "max_output_tokens"),
        ("/v1/completions", {"prompt": "hello there", "max_tokens": 3000}, "max_tokens"),
        ("/v1/messages", {"messages": MESSAGES, "max_tokens": 4000}, "max_tokens"),
    ])
    def test_cap_lowered_to_what_fits_in_each_shape(
            self, shrink_book: Ledger, ledger_events: Events, path: str,
            body: dict[str, Any], field: str) -> None:
        """The body is sent with its cap field lowered to the largest that fits; the response
        says so; the hold never exceeds the budget."""
        upstream = Upstream()
        with mock_client(shrink_book, upstream) as http:
            response = http.post(path, json={"model": MODEL, **body})
        assert response.status_code == 200
        sent = upstream.sent[0]
        cap = int(response.headers["x-ledger-max-tokens"])
        assert sent[field] == cap and 64 <= cap < 500
        event = only_event(shrink_book, ledger_events)
        expected = largest_fitting_cap(shrink_book, event["est_prompt_tokens"],
                                       Decimal("0.01"))
        assert cap == expected
        assert Decimal(response.headers["x-ledger-cost-held"]) <= Decimal("0.01")
        others = {"max_tokens", "max_completion_tokens", "max_output_tokens"} - {field}
        assert all(sent.get(other) in (None, body.get(other)) for other in others)

    def test_a_call_that_fits_is_sent_unchanged(self, shrink_book: Ledger) -> None:
        """A worst case that fits is not shrunk: no x-ledger-max-tokens, body as given."""
        upstream = Upstream()
        with mock_client(shrink_book, upstream) as http:
            response = http.post("/v1/chat/completions",
                                 json={"model": MODEL, "messages": MESSAGES, "max_tokens": 100})
        assert "x-ledger-max-tokens" not in response.headers
        assert upstream.sent[0]["max_tokens"] == 100

    def test_below_the_minimum_is_refused(self, shrink_book: Ledger) -> None:
        """When less than min_completion_tokens fits, the call is refused (402), unsent."""
        shrink_book.record("acme", MODEL, prompt_tokens=450, completion_tokens=0)  # 50 left
        upstream = Upstream()
        with mock_client(shrink_book, upstream) as http:
            response = http.post("/v1/chat/completions",
                                 json={"model": MODEL, "messages": MESSAGES})
        assert response.status_code == 402 and upstream.sent == []
        assert ledger.refusal(response).code == "budget_exceeded"  # type: ignore[union-attr]

    def test_a_small_own_cap_is_never_raised(self, shrink_book: Ledger) -> None:
        """A request capped below the minimum is held and sent at its own cap."""
        upstream = Upstream()
        with mock_client(shrink_book, upstream) as http:
            response = http.post("/v1/chat/completions",
                                 json={"model": MODEL, "messages": MESSAGES, "max_tokens": 10})
        assert response.status_code == 200 and upstream.sent[0]["max_tokens"] == 10
        assert "x-ledger-max-tokens" not in response.headers

    def test_refuse_is_the_default(self, book: Ledger) -> None:
        """Without fit="shrink", the same call is refused as before."""
        book.set_budget("acme", Decimal("0.01"))
        upstream = Upstream()
        with mock_client(book, upstream) as http:
            response = http.post("/v1/chat/completions",
                                 json={"model": MODEL, "messages": MESSAGES})
        assert response.status_code == 402 and upstream.sent == []

    def test_n_choices_share_the_cap(self, shrink_book: Ledger) -> None:
        """With n=2 the cap sent is per choice: both together fit what was held."""
        upstream = Upstream()
        with mock_client(shrink_book, upstream) as http:
            response = http.post("/v1/chat/completions", json={
                "model": MODEL, "messages": MESSAGES, "n": 2, "max_tokens": 1000})
        cap = int(response.headers["x-ledger-max-tokens"])
        assert upstream.sent[0]["max_tokens"] == cap and cap >= 64
        held = Decimal(response.headers["x-ledger-cost-held"])
        assert held <= Decimal("0.01")
        assert held >= from_units(worst_case_units(shrink_book.price(MODEL), 1, 2 * cap))

    def test_more_calls_admitted_than_refusing(self, sqlite_url: str,
                                               clock: ManualClock) -> None:
        """Calls in flight together: shrink admits more of them than refuse does, and the
        holds together never pass the limit."""
        body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 400}
        admitted = {}
        for fit in ("refuse", "shrink"):
            with Ledger(sqlite_url.replace(".db", f"-{fit}.db"), clock=clock, fit=fit) as book:
                # 2250 tokens: 5 worst cases of ~410, and ~200 left for a shrunk sixth
                book.set_budget("acme", Decimal("0.045"))
                calls = []
                with ExitStack() as stack:
                    for _ in range(20):
                        call = book.metered_call("acme", body)
                        try:
                            stack.enter_context(call)
                        except BudgetExceeded:
                            continue
                        calls.append(call)
                    state = book.budget("acme")
                    assert state.held <= state.limit
                    for call in calls:
                        call.settle(prompt_tokens=5, completion_tokens=1)
                admitted[fit] = len(calls)
        assert 1 <= admitted["refuse"] < admitted["shrink"]


class TestShrinkWithSdks:
    def test_openai_stream_shrunk(self, sqlite_url: str, clock: ManualClock,
                                  sim: RunAPISimulator, ledger_events: Events) -> None:
        """The OpenAI SDK streams a shrunk call: the simulator got the lowered cap, the
        response carries x-ledger-max-tokens, the call is billed."""
        with Ledger(sqlite_url, clock=clock, fit="shrink", min_completion_tokens=10) as book:
            book.set_budget("acme", Decimal("0.004"))  # 200 tokens
            client = openai.OpenAI(base_url=sim.openai_base_url, api_key="k",
                                   http_client=book.httpx_client("acme"))
            with client, client.chat.completions.with_streaming_response.create(
                    model=MODEL, messages=MESSAGES, stream=True) as response:
                cap = int(response.headers["x-ledger-max-tokens"])
                list(response.iter_lines())
            assert sim.api_requests[-1].json["max_tokens"] == cap and cap >= 10
            assert only_event(book, ledger_events)["status"] == "ok"

    def test_anthropic_shrunk(self, sqlite_url: str, clock: ManualClock,
                              sim: RunAPISimulator) -> None:
        """The Anthropic SDK's max_tokens is lowered to fit; its raw response says so."""
        with Ledger(sqlite_url, clock=clock, fit="shrink") as book:
            book.set_budget("acme", Decimal("0.01"))
            client = anthropic.Anthropic(base_url=sim.anthropic_base_url, api_key="k",
                                         http_client=book.httpx2_client("acme"))
            with client:
                raw = client.messages.with_raw_response.create(
                    model=MODEL, max_tokens=8000, messages=MESSAGES)
            assert raw.headers["x-ledger-max-tokens"] == \
                str(sim.api_requests[-1].json["max_tokens"])
            assert int(raw.headers["x-ledger-max-tokens"]) < 8000

    def test_metered_call_says_what_to_send(self, shrink_book: Ledger) -> None:
        """A by-hand call under shrink holds the lowered cap and gives the body to send."""
        with shrink_book.metered_call("acme", {"model": MODEL, "messages": MESSAGES}) as call:
            assert 64 <= call.max_completion_tokens < 500
            assert call.request_body["max_tokens"] == call.max_completion_tokens
            assert call.request_body["messages"] == MESSAGES
            call.settle(prompt_tokens=5, completion_tokens=3)


class TestSettings:
    @pytest.mark.parametrize("fit", ["bogus", "", "Shrink", None, 1])
    def test_bad_fit(self, sqlite_url: str, fit: Any) -> None:
        """fit must be "refuse" or "shrink"."""
        with pytest.raises(InvalidInput, match="fit"):
            Ledger(sqlite_url, fit=fit)

    @pytest.mark.parametrize("value, error", [
        (0, InvalidInput), (-1, InvalidInput), (True, TypeError), (1.5, TypeError),
        ("64", TypeError), (10**12, InvalidInput)])
    def test_bad_min_completion_tokens(self, sqlite_url: str, value: Any,
                                       error: type[Exception]) -> None:
        """min_completion_tokens is a positive int."""
        with pytest.raises(error, match="min_completion_tokens"):
            Ledger(sqlite_url, min_completion_tokens=value)

    def test_settings_kept(self, sqlite_url: str) -> None:
        """The settings reach what meters the calls."""
        with Ledger(sqlite_url, fit="shrink", min_completion_tokens=1) as book:
            assert (book.meter.fit, book.meter.min_completion_tokens) == ("shrink", 1)


class TestShrinkAsync:
    @pytest.mark.anyio
    async def test_async_openai_call_shrunk(self, sqlite_url: str, clock: ManualClock,
                                            sim: RunAPISimulator) -> None:
        """The async path lowers the cap too (hold in a worker thread, then the body)."""
        with Ledger(sqlite_url, clock=clock, fit="shrink") as book:
            book.set_budget("acme", Decimal("0.01"))
            client = openai.AsyncOpenAI(base_url=sim.openai_base_url, api_key="k",
                                        http_client=book.async_httpx_client("acme"))
            async with client:
                raw = await client.chat.completions.with_raw_response.create(
                    model=MODEL, messages=MESSAGES, max_tokens=5000)
            cap = int(raw.headers["x-ledger-max-tokens"])
            assert sim.api_requests[-1].json["max_tokens"] == cap and 64 <= cap < 500
