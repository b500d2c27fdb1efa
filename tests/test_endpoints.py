"""Every call metered or refused (issue 9 items 1-3, issue 12's refusals): which endpoints are
metered, free or refused; null and bad completion caps; the project header; require_budget;
``ledger.refusal``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

import ledger
from ledger import Ledger
from ledger.endpoints import classify, normalise_free_paths
from ledger.errors import InvalidInput
from ledger.money import from_units
from ledger.testing import Behavior, RunAPISimulator
from ledger.testing.simulator import simulated_usage

MODEL = "kimi-k2.5"
MESSAGES = [{"role": "user", "content": "Say hello"}]
Handler = Callable[[httpx.Request], httpx.Response]


class Upstream:
    """A mock RunAPI: records what it was sent and answers with ``reply(request)``."""

    def __init__(self, reply: Handler | None = None) -> None:
        self.sent: list[httpx.Request] = []
        self.reply = reply or (lambda request: httpx.Response(200, json={"ok": True}))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.sent.append(request)
        return self.reply(request)

    def body(self, i: int = -1) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.sent[i].content)
        return value


def client(book: Ledger, upstream: Upstream, project: str = "acme",
           **options: Any) -> httpx.Client:
    transport = ledger.MeteredTransport(book, project, wrapped=httpx.MockTransport(upstream),
                                        **options)
    return httpx.Client(transport=transport, base_url="https://runapi.test")


def chat_reply(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={
        "id": "c1", "object": "chat.completion", "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}})


def rows(book: Ledger) -> list[Any]:
    return list(book.usage(project=None))


# -- recorded shapes (OpenAI's API reference and openai-python's test fixtures) ----------------

RESPONSE_BODY = {
    "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b", "object": "response",
    "created_at": 1741476542, "status": "completed", "model": "kimi-k2.5",
    "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": "In a peaceful grove...",
                             "annotations": []}]}],
    "usage": {"input_tokens": 36, "input_tokens_details": {"cached_tokens": 8},
              "output_tokens": 87, "output_tokens_details": {"reasoning_tokens": 20},
              "total_tokens": 123},
}


def responses_stream(usage: dict[str, Any] | None = None) -> bytes:
    created = {"id": "resp_1", "object": "response", "status": "in_progress", "model": MODEL,
               "output": [], "usage": None}
    completed = {**created, "status": "completed", "usage": usage or RESPONSE_BODY["usage"]}
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"type": "response.created", "sequence_number": 0,
                              "response": created}),
        ("response.output_text.delta", {"type": "response.output_text.delta",
                                        "item_id": "msg_1", "output_index": 0,
                                        "content_index": 0, "delta": "Hi", "sequence_number": 1}),
        ("response.output_text.delta", {"type": "response.output_text.delta",
                                        "item_id": "msg_1", "output_index": 0,
                                        "content_index": 0, "delta": " there",
                                        "sequence_number": 2}),
        ("response.completed", {"type": "response.completed", "sequence_number": 3,
                                "response": completed}),
    ]
    return b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
                    for name, data in events)


def sse(body: bytes) -> Handler:
    return lambda request: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=body)


class TestEndpointRoutes:
    @pytest.mark.parametrize(("path", "shape"), [
        ("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic"),
        ("/v1/responses", "responses"), ("/v1/completions", "completions"),
        ("/v1/embeddings", "embeddings"), ("/openai/v1/chat/completions", "openai"),
        ("/v1/CHAT/Completions/", "openai"), ("/v1//chat//completions", "openai"),
        ("/v1/chat%2Fcompletions", "openai"), ("/v1/chat/%63ompletions", "openai"),
        ("/v1/x/../responses", "responses"), ("/v1/./embeddings?x=/models", "embeddings"),
    ])
    def test_metered_paths_however_spelled(self, path: str, shape: str) -> None:
        """Issue 9 item 1: a metered path spelled differently is still metered."""
        route = classify("POST", path)
        assert (route.kind, route.shape) == ("metered", shape)

    @pytest.mark.parametrize("path", [
        "/v1/files", "/v1/images/generations", "/v1/audio/speech", "/v1/threads/t1/messages",
        "/v1/chat/completions;x", "/v1/chat%252Fcompletions", "/v1/chat/completions%00",
        "/v1/batches", "/v1/responses/resp_1/cancel", "/v1/chat/completions x",
    ])
    def test_other_posts_are_refused(self, path: str) -> None:
        """Issue 9 item 1: any other POST (or an ambiguous spelling) is refused."""
        assert classify("POST", path).kind == "refused"

    @pytest.mark.parametrize(("method", "path"), [
        ("GET", "/v1/models"), ("GET", "/v1/chat/completions"), ("DELETE", "/v1/files/f"),
        ("POST", "/v1/models"), ("POST", "/v1/messages/count_tokens"),
    ])
    def test_free_requests(self, method: str, path: str) -> None:
        """Issue 9 item 1: GETs, /v1/models and /v1/messages/count_tokens pass free."""
        assert classify(method, path).kind == "free"

    def test_free_paths_cannot_free_a_metered_endpoint(self) -> None:
        """Issue 9 item 1: free_paths naming a metered endpoint (any spelling) is refused."""
        for bad in (["/v1/chat/completions"], ["/v1/Responses/"], ["v1/x"], "/v1/x"):
            with pytest.raises(InvalidInput):
                normalise_free_paths(bad)  # type: ignore[arg-type]
        free = normalise_free_paths(["/v1/Files/"])
        assert classify("POST", "/v1/files", free).kind == "free"


class TestUnmeteredEndpoint:
    def test_other_post_is_refused_before_sending(self, book: Ledger) -> None:
        """Issue 9 item 1: a POST to /v1/files gets 400 unmetered_endpoint and is not sent."""
        upstream = Upstream()
        with client(book, upstream) as http:
            response = http.post("/v1/files", json={"purpose": "batch"})
        assert response.status_code == 400 and upstream.sent == []
        error = response.json()["error"]
        assert error["code"] == error["type"] == "unmetered_endpoint"
        info = ledger.refusal(response)
        assert info is not None and info.code == "unmetered_endpoint"

    def test_free_paths_pass_through(self, book: Ledger) -> None:
        """Issue 9 item 1: a path the client lists in free_paths is forwarded unmetered."""
        upstream = Upstream()
        with client(book, upstream, free_paths=["/v1/files"]) as http:
            assert http.post("/v1/files", json={}).status_code == 200
            assert http.get("/v1/models").status_code == 200
            assert http.post("/v1/messages/count_tokens", json={}).status_code == 200
        assert len(upstream.sent) == 3 and rows(book) == []

    @pytest.mark.parametrize("factory", ["httpx_client", "httpx2_client"])
    def test_client_factories_take_free_paths(self, book: Ledger, factory: str) -> None:
        """Issue 9 item 1: the client factories take free_paths (and refuse bad ones)."""
        with pytest.raises(InvalidInput):
            getattr(book, factory)("acme", free_paths=["/v1/chat/completions"])
        made = getattr(book, factory)("acme", free_paths=["/v1/x"])
        assert made._transport.free_paths == frozenset({"/v1/x"})
        made.close()

    def test_openai_sdk_sees_unmetered_endpoint(self, book: Ledger) -> None:
        """Issue 9 item 1: the SDK raises a 400 whose ledger.refusal code says why."""
        sdk = openai.OpenAI(base_url="https://runapi.test/v1", api_key="sk-test", max_retries=0,
                            http_client=client(book, Upstream()))
        with pytest.raises(openai.APIStatusError) as caught:
            sdk.files.create(file=("x.jsonl", b"{}"), purpose="batch")
        assert caught.value.status_code == 400
        info = ledger.refusal(caught.value)
        assert info is not None and info.code == "unmetered_endpoint"


class TestNewEndpointsMetered:
    """Against the simulator (the real SDK, real HTTP, the shapes' real objects and event
    streams) unless the bytes themselves are the point (recorded figures, a cut stream)."""

    def test_responses_plain_recorded_body(self, book: Ledger) -> None:
        """Issue 9 item 1: /v1/responses is metered at its reported usage (a recorded body with
        cached and reasoning tokens)."""
        upstream = Upstream(lambda r: httpx.Response(200, json=RESPONSE_BODY))
        with client(book, upstream) as http:
            http.post("/v1/responses", json={"model": MODEL, "input": "Tell me a story"})
        (row,) = rows(book)
        assert (row.status, row.prompt_tokens, row.completion_tokens, row.cached_tokens,
                row.estimated) == ("ok", 36, 87, 8, False)
        assert getattr(row, "reasoning_tokens", 20) == 20
        assert upstream.body()["max_output_tokens"] == book.default_max_tokens

    def test_openai_sdk_responses_plain_and_streamed(self, book: Ledger,
                                                     sim: RunAPISimulator) -> None:
        """Issue 9 item 1: responses.create, plain and streamed, through the metered client
        to the simulator: billed at the usage of the response / of response.completed."""
        sim.enqueue(Behavior(cached_tokens=3), Behavior(cached_tokens=2))
        sdk = openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-test", max_retries=0,
                            http_client=book.httpx_client("acme"))
        reply = sdk.responses.create(model=MODEL, input="Tell me a story")
        events = list(sdk.responses.create(model=MODEL, input="Tell me a story", stream=True,
                                           max_output_tokens=7))
        assert reply.usage is not None and events[-1].type == "response.incomplete"
        done = events[-1].response.usage
        assert done is not None and done.output_tokens == 7
        assert [(r.status, r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.estimated)
                for r in rows(book)] == [
            ("ok", reply.usage.input_tokens, reply.usage.output_tokens, 3, False),
            ("ok", done.input_tokens, 7, 2, False)]
        assert [r.json["max_output_tokens"] for r in sim.api_requests] == [
            book.default_max_tokens, 7]

    @pytest.mark.parametrize("cap", [None, "absent"])
    def test_responses_null_cap_gets_the_default(self, book: Ledger, sim: RunAPISimulator,
                                                 cap: Any) -> None:
        """Issue 9 items 1, 2: a null or absent max_output_tokens is sent as the default cap."""
        body: dict[str, Any] = {"model": MODEL, "input": "x"}
        if cap != "absent":
            body["max_output_tokens"] = cap
        with book.httpx_client("acme") as http:
            assert http.post(sim.openai_base_url + "/responses", json=body).status_code == 200
        assert sim.requests[-1].json["max_output_tokens"] == book.default_max_tokens

    def test_responses_stream_at_every_split(self, book: Ledger, sim: RunAPISimulator) -> None:
        """Issue 9 item 1: the simulator's Responses stream (OpenAI's whole event sequence)
        is billed from response.completed, however it is split."""
        from ledger.sse import StreamMeter

        sim.enqueue(Behavior(usage=(36, 87), cached_tokens=8, reply="Hi there you"))
        with httpx.Client() as plain:
            data = plain.post(sim.openai_base_url + "/responses", json={
                "model": MODEL, "input": "x", "stream": True}).content
        assert data.count(b"event: response.") == 4 + 3 + 4
        for cut in range(1, len(data)):
            meter = StreamMeter("responses")
            meter.feed(data[:cut])
            meter.feed(data[cut:])
            meter.finish()
            assert meter.done and meter.usage is not None
            assert (meter.usage.prompt_tokens, meter.usage.completion_tokens,
                    meter.usage.cached_tokens) == (36, 87, 8)
            assert meter.text == "Hi there you"
        sim.enqueue(Behavior(usage=(36, 87), cached_tokens=8))
        with book.httpx_client("acme") as http, http.stream(
                "POST", sim.openai_base_url + "/responses",
                json={"model": MODEL, "input": "x", "stream": True,
                      "max_output_tokens": 200}) as response:
            assert b"response.completed" in b"".join(response.iter_bytes())
        (row,) = rows(book)
        assert (row.status, row.prompt_tokens, row.completion_tokens) == ("ok", 36, 87)

    def test_responses_stream_without_completed_is_failed(self, book: Ledger) -> None:
        """Issue 9 item 1: a Responses stream cut before response.completed is failed ($0)."""
        data = responses_stream().split(b"event: response.completed")[0]
        with client(book, Upstream(sse(data))) as http, http.stream(
                "POST", "/v1/responses", json={"model": MODEL, "input": "x",
                                               "stream": True}) as response:
            response.read()
        (row,) = rows(book)
        assert row.status == "failed" and row.cost == 0

    def test_responses_failed_event_costs_nothing(self, book: Ledger,
                                                  sim: RunAPISimulator) -> None:
        """Issue 9 item 1: a Responses stream ending in response.failed is failed at $0."""
        sim.enqueue(Behavior(error_event=True))
        sdk = openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-test", max_retries=0,
                            http_client=book.httpx_client("acme"))
        kinds = [e.type for e in sdk.responses.create(model=MODEL, input="x", stream=True)]
        assert kinds[-1] == "response.failed"
        (row,) = rows(book)
        assert row.status == "failed" and row.cost == 0

    @pytest.mark.parametrize("prompt", ["Once upon", ["a", "b"], [1, 2, 3], [[1, 2], [3]]])
    def test_completions(self, book: Ledger, sim: RunAPISimulator, prompt: Any) -> None:
        """Issue 9 item 1: /v1/completions (prompt a string or list) is metered; cap sent."""
        sdk = openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-test", max_retries=0,
                            http_client=book.httpx_client("acme"))
        reply = sdk.completions.create(model=MODEL, prompt=prompt, max_tokens=None)
        assert reply.usage is not None
        (row,) = rows(book)
        assert (row.status, row.prompt_tokens, row.completion_tokens, row.estimated) == (
            "ok", reply.usage.prompt_tokens, reply.usage.completion_tokens, False)
        assert sim.requests[-1].json["max_tokens"] == book.default_max_tokens
        assert (row.prompt_tokens, row.completion_tokens) == simulated_usage(
            sim.requests[-1].json, shape="completions")

    def test_completions_stream_asks_for_usage(self, book: Ledger, sim: RunAPISimulator) -> None:
        """Issue 9 item 1: a Completions stream gets include_usage and is billed from it; the
        caller, who did not ask, sees neither the usage chunk nor the usage: null fields."""
        with book.httpx_client("acme") as http, http.stream(
                "POST", sim.openai_base_url + "/completions",
                json={"model": MODEL, "prompt": "say it", "stream": True,
                      "max_tokens": 9}) as response:
            seen = b"".join(response.iter_bytes())
        assert sim.requests[-1].json["stream_options"] == {"include_usage": True}
        assert b'"usage"' not in seen and seen.endswith(b"data: [DONE]\n\n")
        (row,) = rows(book)
        assert (row.prompt_tokens, row.completion_tokens, row.estimated) == (2, 9, False)

    @pytest.mark.parametrize("value", ["hello world", ["a", "b"], [1, 2, 3], [[1, 2], [3, 4]]])
    def test_embeddings_input_only(self, book: Ledger, sim: RunAPISimulator,
                                   value: Any) -> None:
        """Issue 9 item 1: /v1/embeddings bills input tokens only; worst case = input estimate."""
        est = book.estimate({"model": MODEL, "input": value}, shape="embeddings")
        assert est.max_completion_tokens == 0 and est.prompt_tokens > 0
        sdk = openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-test", max_retries=0,
                            http_client=book.httpx_client("acme"))
        reply = sdk.embeddings.create(model=MODEL, input=value)  # base64, as the SDK asks
        assert reply.data and len(reply.data[0].embedding) > 0
        (row,) = rows(book)
        assert (row.status, row.prompt_tokens, row.completion_tokens, row.estimated) == (
            "ok", reply.usage.prompt_tokens, 0, False)
        assert "max_tokens" not in sim.requests[-1].json

    def test_embeddings_respect_hard_budgets(self, book: Ledger, sim: RunAPISimulator) -> None:
        """Issue 9 item 1: an embeddings call that cannot fit is refused, never sent."""
        book.set_budget("acme", Decimal("0.0001"))
        with book.httpx_client("acme") as http:
            response = http.post(sim.openai_base_url + "/embeddings",
                                 json={"model": MODEL, "input": "x " * 500})
        assert response.status_code == 402 and sim.request_count == 0


class TestCaps:
    @pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
    def test_null_cap_is_sent_as_the_default(self, book: Ledger, field: str) -> None:
        """Issue 9 item 2: "max_tokens": null is forwarded with the default cap, as held."""
        upstream = Upstream(chat_reply)
        with client(book, upstream) as http:
            http.post("/v1/chat/completions",
                      json={"model": MODEL, "messages": MESSAGES, field: None})
        sent = upstream.body()
        assert sent["max_tokens"] == book.default_max_tokens
        assert sent.get("max_completion_tokens") is None

    def test_openai_sdk_none_cap_is_capped(self, book: Ledger) -> None:
        """Issue 9 item 2: the OpenAI SDK's max_tokens=None reaches the server capped."""
        upstream = Upstream(chat_reply)
        sdk = openai.OpenAI(base_url="https://runapi.test/v1", api_key="sk-test",
                            http_client=client(book, upstream))
        sdk.chat.completions.create(model=MODEL, messages=MESSAGES,  # type: ignore[arg-type]
                                    extra_body={"max_tokens": None})
        assert upstream.body()["max_tokens"] == book.default_max_tokens

    @pytest.mark.parametrize(("path", "body", "sent_cap"), [
        ("/chat/completions", {"messages": MESSAGES, "max_tokens": None}, "max_tokens"),
        ("/chat/completions", {"messages": MESSAGES, "max_completion_tokens": None},
         "max_tokens"),
        ("/responses", {"input": "Say hello", "max_output_tokens": None}, "max_output_tokens"),
        ("/completions", {"prompt": "Say hello", "max_tokens": None}, "max_tokens"),
    ])
    def test_null_cap_is_sent_as_held_even_with_send_default_cap_off(
            self, sqlite_url: str, path: str, body: dict[str, Any], sent_cap: str) -> None:
        """Issue 9 item 2: with send_default_cap=False a null cap is still sent as the default
        cap the hold assumed (null is the SDKs' "not given"); only a body with no cap field
        at all, as the caller asked, goes uncapped."""
        with RunAPISimulator() as sim, Ledger(sqlite_url, send_default_cap=False) as book, \
                book.httpx_client("acme") as http:
            assert http.post(sim.openai_base_url + path,
                             json={"model": MODEL, **body}).status_code == 200
            sent = sim.requests[-1].json
            assert sent[sent_cap] == book.default_max_tokens
            assert sent.get("max_completion_tokens") is None
            uncapped = {k: v for k, v in body.items() if v is not None}
            assert http.post(sim.openai_base_url + path,
                             json={"model": MODEL, **uncapped}).status_code == 200
            assert sent_cap not in sim.requests[-1].json  # no field: forwarded as written

    def test_openai_sdk_none_cap_is_capped_with_send_default_cap_off(
            self, sqlite_url: str) -> None:
        """Issue 9 item 2: the OpenAI SDK's max_tokens=None (sent as null) reaches the server
        with the held cap even under send_default_cap=False."""
        with RunAPISimulator() as sim, Ledger(sqlite_url, send_default_cap=False) as book:
            sdk = openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-test",
                                http_client=book.httpx_client("acme"))
            sdk.chat.completions.create(model=MODEL, messages=MESSAGES,  # type: ignore[arg-type]
                                        max_tokens=None)
            assert sim.requests[-1].json["max_tokens"] == book.default_max_tokens

    def test_completions_cap_is_max_tokens_only(self, book: Ledger) -> None:
        """Issue 9 item 2: a legacy completion with only max_completion_tokens (not one of its
        fields) is held at the default cap, so the default cap is what is sent."""
        with RunAPISimulator() as sim, book.httpx_client("acme") as http:
            http.post(sim.openai_base_url + "/completions",
                      json={"model": MODEL, "prompt": "Say hello", "max_completion_tokens": 5})
            assert sim.requests[-1].json["max_tokens"] == book.default_max_tokens
        (row,) = rows(book)
        assert row.status == "ok" and not row.estimated

    @pytest.mark.parametrize("value", ["100", 1.5, 100.0, True, 0, -3])
    @pytest.mark.parametrize(("path", "field", "extra"), [
        ("/v1/chat/completions", "max_tokens", {"messages": MESSAGES}),
        ("/v1/chat/completions", "max_completion_tokens", {"messages": MESSAGES}),
        ("/v1/responses", "max_output_tokens", {"input": "x"}),
        ("/v1/completions", "max_tokens", {"prompt": "x"}),
        ("/v1/messages", "max_tokens", {"messages": MESSAGES}),
    ])
    def test_bad_cap_refused_naming_the_field(self, book: Ledger, value: Any, path: str,
                                              field: str, extra: dict[str, Any]) -> None:
        """Issue 9 item 2: a string/float/bool/0/negative cap is a 400 naming the field."""
        upstream = Upstream()
        with client(book, upstream) as http:
            response = http.post(path, json={"model": MODEL, **extra, field: value})
        assert response.status_code == 400 and upstream.sent == []
        assert f'"{field}" must be a positive integer' in response.json()["error"]["message"]


class TestProjectHeader:
    def test_other_project_refused(self, book: Ledger) -> None:
        """Issue 9 item 3: X-Ledger-Project naming another project is 400 project_not_allowed."""
        book.set_budget("acme", Decimal("1"))
        upstream = Upstream(chat_reply)
        body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 5}
        with client(book, upstream) as http:
            for name in ("other", "acme ", " acme", "ACME"):
                response = http.post("/v1/chat/completions", json=body,
                                     headers={"X-Ledger-Project": name})
                assert response.status_code == 400, name
                assert response.json()["error"]["code"] == "project_not_allowed"
            ok = http.post("/v1/chat/completions", json=body, headers={"X-Ledger-Project": "acme"})
            assert ok.status_code == 200
        assert len(upstream.sent) == 1 and "x-ledger-project" not in upstream.sent[0].headers
        assert [r.project for r in rows(book)] == ["acme"]

    def test_two_headers_refused(self, book: Ledger) -> None:
        """Issue 9 item 3: two X-Ledger-Project headers are refused, not joined or picked."""
        upstream = Upstream(chat_reply)
        with client(book, upstream, projects="*") as http:
            response = http.post(
                "/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES},
                headers=[("X-Ledger-Project", "acme"), ("X-Ledger-Project", "beta")])
        assert response.status_code == 400 and upstream.sent == []

    def test_allow_list_and_star(self, book: Ledger) -> None:
        """Issue 9 item 3: projects=[...] allows exactly those; projects="*" any valid name."""
        upstream = Upstream(chat_reply)
        body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 5}
        with client(book, upstream, projects=["beta"]) as http:
            assert http.post("/v1/chat/completions", json=body,
                             headers={"X-Ledger-Project": "beta"}).status_code == 200
            assert http.post("/v1/chat/completions", json=body,
                             headers={"X-Ledger-Project": "gamma"}).status_code == 400
        with client(book, upstream, projects="*") as http:
            assert http.post("/v1/chat/completions", json=body,
                             headers={"X-Ledger-Project": "gamma"}).status_code == 200
        assert sorted(r.project for r in rows(book)) == ["beta", "gamma"]
        with pytest.raises(InvalidInput):
            client(book, upstream, projects="beta")

    def test_httpx2_factory_takes_projects(self, book: Ledger) -> None:
        """Issue 9 item 3: httpx2_client(projects=...) allows the listed project only."""
        made = book.httpx2_client("acme", projects=["beta"])
        assert made._transport.projects == frozenset({"beta"})  # type: ignore[attr-defined]
        made.close()


class TestRequireBudget:
    def test_project_without_budget_refused(self, sqlite_url: str, clock: Any) -> None:
        """Issue 9 item 3: Ledger(require_budget=True) refuses a project with no budget."""
        with Ledger(sqlite_url, clock=clock, require_budget=True) as book:
            upstream = Upstream(chat_reply)
            body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 5}
            with client(book, upstream) as http:
                refused = http.post("/v1/chat/completions", json=body)
                book.set_budget("acme", Decimal("5"), hard=False)
                allowed = http.post("/v1/chat/completions", json=body)
            assert refused.status_code == 402 and len(upstream.sent) == 1
            error = refused.json()["error"]
            assert error["code"] == error["type"] == "no_budget"
            assert allowed.status_code == 200
            with pytest.raises(ledger.NoBudget), book.metered_call("nobody", body):
                pass


    def test_a_budget_that_starts_later_is_no_budget_yet(self, sqlite_url: str,
                                                          clock: Any) -> None:
        """A project whose only budget starts next month is refused today (no_budget), and
        metered once that budget is in force."""
        with Ledger(sqlite_url, clock=clock, require_budget=True) as book:
            later = clock.now() + timedelta(days=40)
            book.set_budget("acme", Decimal("5"), effective_from=later)
            upstream = Upstream(chat_reply)
            body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 5}
            with client(book, upstream) as http:
                refused = http.post("/v1/chat/completions", json=body)
                clock.set(later)
                allowed = http.post("/v1/chat/completions", json=body)
            assert refused.status_code == 402 and refused.json()["error"]["code"] == "no_budget"
            assert allowed.status_code == 200 and len(upstream.sent) == 1


def test_a_refused_budget_remaining_is_exact_in_any_decimal_context() -> None:
    """RefusedBudget.remaining (the 402 body's "remaining") ignores the caller's context."""
    import decimal

    from ledger.metering.refusal import RefusedBudget

    refused = RefusedBudget("acme", "2026-11", Decimal("50.00"), Decimal("12.3456789"),
                            Decimal("0.0001234"), Decimal("1"))
    with decimal.localcontext() as ctx:
        ctx.prec, ctx.rounding = 4, decimal.ROUND_DOWN
        assert refused.remaining == Decimal("37.6541977")


class TestRefusalObject:
    def test_each_refusal_has_its_own_code_and_type(self, book: Ledger) -> None:
        """Issue 12: unknown_model is no longer of type budget_exceeded."""
        with client(book, Upstream()) as http:
            response = http.post("/v1/chat/completions",
                                 json={"model": "no-such", "messages": MESSAGES})
        error = response.json()["error"]
        assert error["code"] == error["type"] == "unknown_model"
        info = ledger.refusal(response)
        assert info is not None and info.code == "unknown_model" and info.budget is None

    def test_budget_refusal_through_both_sdks(self, book: Ledger) -> None:
        """Issue 12: ledger.refusal reads openai and anthropic SDK errors, with the budget."""
        book.set_budget("acme", Decimal("0.000001"))
        sdk = openai.OpenAI(base_url="https://runapi.test/v1", api_key="sk-test",
                            http_client=client(book, Upstream()))
        with pytest.raises(openai.APIStatusError) as caught:
            sdk.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
        info = ledger.refusal(caught.value)
        assert info is not None and info.code == "budget_exceeded" and info.status == 402
        assert info.budget is not None and info.budget.limit == Decimal("0.000001")
        assert info.budget.project == "acme" and "runapi-ledger" in info.message
        transport = ledger.MeteredTransport(book, "acme",
                                            wrapped=httpx2.MockTransport(lambda r: None))
        claude = anthropic.Anthropic(base_url="https://runapi.test", api_key="sk-ant-test",
                                     http_client=httpx2.Client(transport=transport))
        with pytest.raises(anthropic.APIStatusError) as refused:
            claude.messages.create(model=MODEL, max_tokens=100,
                                   messages=MESSAGES)  # type: ignore[arg-type]
        info = ledger.refusal(refused.value)
        assert info is not None and info.code == "budget_exceeded" and info.budget is not None

    def test_ledger_errors_and_others(self) -> None:
        """Issue 12: refusal() of a LedgerError gives its code; of anything else, None."""
        exc = ledger.BudgetExceeded("acme", "2026-11", limit=Decimal("1"), spent=Decimal("1"),
                                    held=Decimal("0"), requested=Decimal("0.5"))
        info = ledger.refusal(exc)
        assert info is not None and info.code == "budget_exceeded"
        assert info.budget is not None and info.budget.worst_case == Decimal("0.5")
        assert ledger.refusal(ledger.NoBudget("acme")).code == "no_budget"  # type: ignore[union-attr]
        assert ledger.refusal(ledger.ProjectNotAllowed("b", "a")).code == "project_not_allowed"  # type: ignore[union-attr]
        assert ledger.refusal(ValueError("x")) is None
        assert ledger.refusal(None) is None
        # A server's own 402 with a lookalike body is not the ledger's refusal.
        lookalike = httpx.Response(402, json={"error": {"code": "budget_exceeded",
                                                        "message": "server says no"}})
        assert ledger.refusal(lookalike) is None
        assert ledger.refusal(httpx.Response(200, json={})) is None


def _compress(encoding: str, data: bytes) -> bytes:
    import gzip
    import zlib

    import brotli
    import zstandard

    if encoding == "gzip":
        return gzip.compress(data, mtime=0)
    if encoding == "deflate":
        return zlib.compress(data)
    if encoding == "br":
        return bytes(brotli.compress(data))
    return bytes(zstandard.ZstdCompressor().compress(data))


class TestCompressedReplies:
    @pytest.mark.parametrize("encoding", ["br", "zstd", "gzip", "deflate"])
    def test_compressed_stream_billed_from_its_usage(self, book: Ledger, encoding: str) -> None:
        """Issue 9 item 10: a 200 stream sent br/zstd/gzip/deflate is billed from its usage."""
        from ledger.testing.simulator import Behavior, RunAPISimulator

        chunks = [{"id": "c", "object": "chat.completion.chunk", "model": MODEL,
                   "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]},
                  {"id": "c", "object": "chat.completion.chunk", "model": MODEL, "choices": [],
                   "usage": {"prompt_tokens": 13, "completion_tokens": 5, "total_tokens": 18}}]
        raw = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
        raw += b"data: [DONE]\n\n"
        with RunAPISimulator() as sim:
            sim.enqueue(Behavior(raw=_compress(encoding, raw), content_type="text/event-stream",
                                 headers=(("content-encoding", encoding),), retry_after=None))
            sdk = openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-test", max_retries=0,
                                http_client=book.httpx_client("acme"))
            stream = sdk.chat.completions.create(model=MODEL, messages=MESSAGES,  # type: ignore[arg-type]
                                                 stream=True, max_tokens=50)
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hi"
        (row,) = rows(book)
        assert (row.status, row.prompt_tokens, row.completion_tokens, row.estimated) == (
            "ok", 13, 5, False)

    def test_unknown_encoding_is_charged_by_estimate(self, book: Ledger) -> None:
        """Issue 9 item 10: a 200 stream in an encoding the ledger cannot read is never $0."""
        upstream = Upstream(lambda r: httpx.Response(
            200, headers={"content-type": "text/event-stream", "content-encoding": "x-weird"},
            content=b"\x00\x01garbage"))
        with client(book, upstream) as http, http.stream(
                "POST", "/v1/chat/completions",
                json={"model": MODEL, "messages": MESSAGES, "stream": True,
                      "max_tokens": 40}) as response:
            for _ in response.iter_raw():
                pass
        (row,) = rows(book)
        assert row.status == "ok" and row.estimated and row.cost > 0
        assert row.completion_tokens == 40


class TestOpenAtExit:
    SCRIPT = """
        import time, ledger
        from ledger.testing import Behavior, RunAPISimulator

        sim = RunAPISimulator().start()
        sim.enqueue(Behavior(chunk_delay=60))  # the stream stays open: one event a minute
        book = ledger.Ledger(URL)
        settle = book.store.settle
        def slow_settle(*args, **kwargs):  # a settle that takes a while, as on a busy DB
            time.sleep(0.5)
            return settle(*args, **kwargs)
        book.store.settle = slow_settle
        http = book.httpx_client("acme")
        request = http.build_request("POST", sim.openai_base_url + "/chat/completions",
            json={"model": "kimi-k2.5", "stream": True, "max_tokens": 30,
                  "messages": [{"role": "user", "content": "hi"}]})
        RESPONSE = http.send(request, stream=True)
        RAW = RESPONSE.iter_raw()   # kept alive: nothing closes the stream before exit
        assert next(RAW)
        print(book.budget("acme").held > 0, flush=True)
    """

    def run_and_exit(self, url: str, script: str) -> None:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(script).replace(
            "URL", repr(url))], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "True"  # the call was held and open when it exited

    def test_stream_open_at_exit_is_settled(self, tmp_path: Any) -> None:
        """Issue 9 item 15: a stream still open (its iterator alive) at interpreter exit is
        settled by the atexit hook, not left pending; without the hook it stays pending."""
        url = f"sqlite:///{tmp_path}/exit.db"
        self.run_and_exit(url, self.SCRIPT)
        with Ledger(url, replay_spool=False) as book:
            (row,) = list(book.usage())
            assert row.status == "cancelled" and row.estimated and row.cost > 0
            assert book.budget("acme").held == 0
        # The control: the same run with the hook taken out leaves the hold pending, so the
        # settle above is the hook's doing (not the garbage collector's or the spool's).
        control = f"sqlite:///{tmp_path}/control.db"
        self.run_and_exit(control, "import atexit, ledger.transport\n"
                                   "atexit.unregister(ledger.transport._settle_open_at_exit)\n"
                          + textwrap.dedent(self.SCRIPT))
        with Ledger(control, replay_spool=False) as book:
            assert list(book.usage()) == [] and book.budget("acme").held > 0


class TestReusedIds:
    @pytest.mark.parametrize("end", ["post", "void", "expire"])
    def test_dead_hold_id_cannot_be_held_again(self, any_book: Ledger, clock: Any,
                                               end: str) -> None:
        """Issue 9 item 4: hold() with a posted/voided/expired hold's id raises, never skips
        the budget by returning the dead hold."""
        from datetime import timedelta

        book = any_book
        book.set_budget("acme", Decimal("1"))
        book.hold("acme", MODEL, 10, 10, call_id="reused-1")
        if end == "post":
            book.settle("reused-1", 10, 10)
        elif end == "void":
            book.void("reused-1")
        else:
            clock.advance(book.hold_ttl + timedelta(seconds=1))
            book.expire_holds()
        with pytest.raises(InvalidInput, match="reused-1"):
            book.hold("acme", MODEL, 10, 1_000_000, call_id="reused-1")
        assert book.budget("acme").held == 0

    def test_pending_same_hold_is_idempotent_other_call_is_not(self, book: Ledger) -> None:
        """Issue 9 item 4: the same pending hold again is a no-op; different numbers raise."""
        first = book.hold("acme", MODEL, 10, 10, call_id="same-1")
        again = book.hold("acme", MODEL, 10, 10, call_id="same-1")
        assert (again.call_id, again.amount_units, again.state) == (
            first.call_id, first.amount_units, "pending")
        assert book.budget("acme").held == from_units(first.amount_units)
        with pytest.raises(InvalidInput):
            book.hold("beta", MODEL, 10, 10, call_id="same-1")
        with pytest.raises(InvalidInput):
            book.hold("acme", MODEL, 10, 500, call_id="same-1")

    def test_record_conflicting_reuse_raises(self, any_book: Ledger) -> None:
        """Issue 9 item 4: record(request_id=X) again with other numbers raises; the same
        numbers again are an idempotent no-op; another project's X is its own call."""
        book = any_book
        cost = book.record("acme", MODEL, prompt_tokens=100, completion_tokens=50,
                           request_id="r-1")
        assert book.record("acme", MODEL, prompt_tokens=100, completion_tokens=50,
                           request_id="r-1") == cost
        with pytest.raises(InvalidInput, match="r-1"):
            book.record("acme", MODEL, prompt_tokens=100, completion_tokens=51,
                        request_id="r-1")
        assert book.record("beta", MODEL, prompt_tokens=100, completion_tokens=50,
                           request_id="r-1") == cost
        assert book.spend("acme") == cost and book.spend("beta") == cost


class TestEndpointEdges:
    """Second-read fixes: other methods, free-path suffixes, the built-in free list."""

    def test_a_write_method_to_a_metered_endpoint_is_refused(self) -> None:
        """Issue 9 item 1: PUT/PATCH/DELETE to /v1/chat/completions never runs unpriced."""
        for method in ("PUT", "PATCH", "DELETE", "put"):
            assert classify(method, "/v1/chat/completions").kind == "refused"
            assert classify(method, "/v1/messages").kind == "refused"
        assert classify("DELETE", "/v1/files/file-1").kind == "free"
        assert classify("GET", "/v1/chat/completions/abc").kind == "free"

    def test_free_paths_match_exactly(self) -> None:
        """Issue 9 item 1: listing /batches frees /batches, not /v1/messages/batches."""
        free = normalise_free_paths(["/batches", "/v1/x"])
        assert classify("POST", "/batches", free).kind == "free"
        assert classify("POST", "/v1/X/", free).kind == "free"
        assert classify("POST", "/v1/messages/batches", free).kind == "refused"
        assert classify("POST", "/other/v1/x", free).kind == "refused"

    def test_the_built_in_free_list_needs_its_version_segment(self) -> None:
        """Issue 9 item 1: a POST to some /x/models is refused; /v1/models stays free."""
        assert classify("POST", "/v1/models").kind == "free"
        assert classify("POST", "/openai/v1/models").kind == "free"
        assert classify("POST", "/v1/messages/count_tokens").kind == "free"
        assert classify("POST", "/v1/fine_tuning/models").kind == "refused"
