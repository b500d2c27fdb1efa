"""Attribution (issue 10): every call carries its end user and tags, from the client, the
X-Ledger-User / X-Ledger-Tags headers (never forwarded) or the body's user; bad values are
refused with a 400 in the caller's API shape, before anything is sent."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from helpers import MESSAGES, Events, only_event

import ledger
from ledger import Ledger
from ledger.errors import InvalidInput
from ledger.metering.attribution import MAX_TAGS, Asked, client_attribution, resolve
from ledger.records import Attribution
from ledger.testing.simulator import RunAPISimulator

MODEL = "kimi-k2.5"
CHAT = {"model": MODEL, "messages": MESSAGES, "max_tokens": 50}
Handler = Callable[[httpx.Request], httpx.Response]


class Upstream:
    """A mock RunAPI: records what it was sent, answers a chat completion with usage."""

    def __init__(self) -> None:
        self.sent: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.sent.append(request)
        return httpx.Response(200, json={
            "id": "c1", "object": "chat.completion", "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}})


def mock_client(book: Ledger, upstream: Upstream, **options: Any) -> httpx.Client:
    transport = ledger.MeteredTransport(book, "acme", wrapped=httpx.MockTransport(upstream),
                                        **options)
    return httpx.Client(transport=transport, base_url="https://runapi.test")


def who(event: dict[str, Any]) -> tuple[str | None, str | None]:
    return event["user"], event["tags"]


class TestFromTheClient:
    def test_openai_sdk_client_user_and_tags(self, book: Ledger, sim: RunAPISimulator,
                                             ledger_events: Events) -> None:
        """httpx_client(user=, tags=) attributes every call of the OpenAI SDK."""
        client = openai.OpenAI(base_url=sim.openai_base_url, api_key="k",
                               http_client=book.httpx_client("acme", user="alice",
                                                             tags={"feature": "search"}))
        with client:
            client.chat.completions.create(model=MODEL, messages=MESSAGES)
        assert who(only_event(book, ledger_events)) == ("alice", ",feature=search,")

    def test_anthropic_sdk_httpx2_client_streamed(self, book: Ledger, sim: RunAPISimulator,
                                                  ledger_events: Events) -> None:
        """httpx2_client(user=, tags=) attributes an Anthropic stream."""
        client = anthropic.Anthropic(base_url=sim.anthropic_base_url, api_key="k",
                                     http_client=book.httpx2_client(
                                         "acme", user="bob", tags="env=prod,feature=chat"))
        with client, client.messages.stream(model=MODEL, max_tokens=100,
                                            messages=MESSAGES) as stream:
            stream.get_final_message()
        assert who(only_event(book, ledger_events)) == ("bob", ",env=prod,feature=chat,")

    @pytest.mark.anyio
    async def test_async_clients(self, book: Ledger, sim: RunAPISimulator,
                                 ledger_events: Events) -> None:
        """async_httpx_client and async_httpx2_client take user= and tags= too."""
        oa = openai.AsyncOpenAI(base_url=sim.openai_base_url, api_key="k",
                                http_client=book.async_httpx_client("acme", user="carol"))
        an = anthropic.AsyncAnthropic(base_url=sim.anthropic_base_url, api_key="k",
                                      http_client=book.async_httpx2_client(
                                          "acme", tags={"feature": "x"}))
        async with oa, an:
            await oa.chat.completions.create(model=MODEL, messages=MESSAGES)
            await an.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
        assert [who(e) for e in ledger_events(book)] == [("carol", None), (None, ",feature=x,")]

    def test_metered_transport_in_a_custom_client(self, book: Ledger, sim: RunAPISimulator,
                                                  ledger_events: Events) -> None:
        """ledger.MeteredTransport(book, project, user=, tags=) in an httpx2.Client."""
        transport = ledger.MeteredTransport(book, "acme", user="dave", tags={"a": "1"})
        with httpx2.Client(transport=transport) as http:
            assert http.post(sim.openai_base_url + "/chat/completions",
                             json=CHAT).status_code == 200
        assert who(only_event(book, ledger_events)) == ("dave", ",a=1,")

    def test_metered_call_record_and_hold(self, book: Ledger, ledger_events: Events) -> None:
        """metered_call, record and hold take user= and tags=; the events carry them."""
        with book.metered_call("acme", CHAT, user="erin", tags={"feature": "batch"}) as call:
            call.settle(prompt_tokens=10, completion_tokens=5)
        book.record("acme", MODEL, prompt_tokens=1, completion_tokens=1, user="frank",
                    tags="env=prod")
        hold = book.hold("acme", MODEL, 10, 10, user="gina", tags={"k": "v"})
        assert hold.attribution == Attribution("gina", (("k", "v"),))
        book.settle(hold.call_id, 10, 2)
        assert [who(e) for e in ledger_events(book)] == [
            ("erin", ",feature=batch,"), ("frank", ",env=prod,"), ("gina", ",k=v,")]

    @pytest.mark.parametrize("user, tags, error", [
        ("", None, InvalidInput), ("a" * 201, None, InvalidInput), ("al\x00ice", None,
                                                                    InvalidInput),
        ("al\nice", None, InvalidInput), ("*", None, InvalidInput), (42, None, TypeError),
        (None, "feature", InvalidInput), (None, {"k": "a,b"}, InvalidInput),
        (None, {f"k{i}": "v" for i in range(MAX_TAGS + 1)}, InvalidInput),
        (None, 5, TypeError),
    ])
    def test_bad_client_values_raise_at_once(self, book: Ledger, user: Any, tags: Any,
                                             error: type[Exception]) -> None:
        """A bad user= or tags= raises when the client is made, not on its first call."""
        with pytest.raises(error):
            book.httpx_client("acme", user=user, tags=tags)
        with pytest.raises(error):
            book.metered_call("acme", CHAT, user=user, tags=tags)
        with pytest.raises(error):
            book.record("acme", MODEL, prompt_tokens=1, completion_tokens=1, user=user,
                        tags=tags)


class TestHeaders:
    def test_headers_attribute_and_never_reach_the_upstream(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """X-Ledger-User / X-Ledger-Tags attribute the call and are removed before sending."""
        client = openai.OpenAI(base_url=sim.openai_base_url, api_key="k",
                               http_client=book.httpx_client("acme"))
        with client:
            client.chat.completions.create(
                model=MODEL, messages=MESSAGES,
                extra_headers={"X-Ledger-User": "alice",
                               "X-Ledger-Tags": "feature=search, env=prod"})
        sent = sim.api_requests[-1].headers
        assert "x-ledger-user" not in sent and "x-ledger-tags" not in sent
        assert who(only_event(book, ledger_events)) == ("alice", ",env=prod,feature=search,")

    def test_removed_from_free_requests_too(self, book: Ledger) -> None:
        """A free request (GET, count_tokens) is sent without the attribution headers."""
        upstream = Upstream()
        with mock_client(book, upstream) as http:
            http.get("/v1/models", headers={"X-Ledger-User": "a", "X-Ledger-Tags": "bad"})
            http.post("/v1/messages/count_tokens", json={},
                      headers={"X-Ledger-User": "a\x01"})
        assert len(upstream.sent) == 2
        for request in upstream.sent:
            assert "x-ledger-user" not in request.headers
            assert "x-ledger-tags" not in request.headers

    def test_header_tags_join_the_clients(self, book: Ledger, ledger_events: Events) -> None:
        """Header tags are added to the client's; repeating a client tag's value is fine."""
        upstream = Upstream()
        with mock_client(book, upstream, tags={"env": "prod"}) as http:
            assert http.post("/v1/chat/completions", json=CHAT,
                             headers={"X-Ledger-Tags": "feature=search,env=prod"}
                             ).status_code == 200
            assert http.post("/v1/chat/completions", json=CHAT,
                             headers=[("X-Ledger-Tags", "a=1"), ("X-Ledger-Tags", "b=2")]
                             ).status_code == 200
        assert [e["tags"] for e in ledger_events(book)] == [
            ",env=prod,feature=search,", ",a=1,b=2,env=prod,"]

    def test_header_never_changes_the_clients_attribution(self, book: Ledger) -> None:
        """A header naming another user, or another value for a client tag, is refused."""
        upstream = Upstream()
        with mock_client(book, upstream, user="alice", tags={"env": "prod"}) as http:
            other_user = http.post("/v1/chat/completions", json=CHAT,
                                   headers={"X-Ledger-User": "mallory"})
            other_tag = http.post("/v1/chat/completions", json=CHAT,
                                  headers={"X-Ledger-Tags": "env=dev"})
            same = http.post("/v1/chat/completions", json=CHAT,
                             headers={"X-Ledger-User": "alice"})
        for response in (other_user, other_tag):
            assert response.status_code == 400
            assert response.json()["error"]["code"] == "ledger_invalid_request"
            assert "contradicts this client's" in response.json()["error"]["message"]
        assert same.status_code == 200 and len(upstream.sent) == 1


class TestBodyUser:
    @pytest.mark.parametrize("path, body", [
        ("/v1/chat/completions", {"messages": MESSAGES, "user": "bob"}),
        ("/v1/responses", {"input": "hi", "user": "bob"}),
        ("/v1/completions", {"prompt": "hi", "user": "bob"}),
        ("/v1/embeddings", {"input": "hi", "user": "bob"}),
        ("/v1/messages", {"messages": MESSAGES, "max_tokens": 5,
                          "metadata": {"user_id": "bob"}}),
    ])
    def test_body_user_is_the_user(self, book: Ledger, ledger_events: Events, path: str,
                                   body: dict[str, Any]) -> None:
        """Without a client or header user, the body's user (Anthropic: metadata.user_id)
        is the user; the body is forwarded unchanged."""
        upstream = Upstream()
        with mock_client(book, upstream) as http:
            response = http.post(path, json={"model": MODEL, **body})
        assert response.status_code == 200
        sent = json.loads(upstream.sent[0].content)
        assert sent.get("user", sent.get("metadata", {}).get("user_id")) == "bob"
        assert only_event(book, ledger_events)["user"] == "bob"

    def test_header_and_client_win_over_the_body(self, book: Ledger,
                                                 ledger_events: Events) -> None:
        """A user from the header (or the client) wins; the body's is left as it is."""
        upstream = Upstream()
        body = {**CHAT, "user": "hashed-42"}
        with mock_client(book, upstream) as http:
            http.post("/v1/chat/completions", json=body, headers={"X-Ledger-User": "alice"})
        with mock_client(book, upstream, user="carol") as http:
            http.post("/v1/chat/completions", json=body)
        assert [e["user"] for e in ledger_events(book)] == ["alice", "carol"]
        assert all(json.loads(r.content)["user"] == "hashed-42" for r in upstream.sent)

    @pytest.mark.parametrize("value", [42, None, {"id": "x"}, ["a"], True, "", "   "])
    def test_body_user_not_a_name_is_ignored(self, book: Ledger, ledger_events: Events,
                                             value: Any) -> None:
        """A body user that is not a string (or blank) is ignored: the call goes through."""
        upstream = Upstream()
        with mock_client(book, upstream) as http:
            assert http.post("/v1/chat/completions",
                             json={**CHAT, "user": value}).status_code == 200
            assert http.post("/v1/messages", json={
                "model": MODEL, "max_tokens": 5, "messages": MESSAGES,
                "metadata": {"user_id": value}}).status_code == 200
            assert http.post("/v1/messages", json={
                "model": MODEL, "max_tokens": 5, "messages": MESSAGES,
                "metadata": "not an object"}).status_code == 200
        assert [e["user"] for e in ledger_events(book)] == [None, None, None]

    def test_body_user_that_is_a_bad_name_is_refused(self, book: Ledger) -> None:
        """A body user string that is not a valid name (too long, a control character) is
        refused with a 400 naming it, not attributed to someone else."""
        upstream = Upstream()
        with mock_client(book, upstream) as http:
            for bad in ("u" * 201, "bob\r\nX-Evil: 1", "a\x00b"):
                response = http.post("/v1/chat/completions", json={**CHAT, "user": bad})
                assert response.status_code == 400, bad
                assert "body's user" in response.json()["error"]["message"]
        assert upstream.sent == []

    def test_metered_call_reads_the_body_user(self, book: Ledger,
                                              ledger_events: Events) -> None:
        """metered_call without user= takes the body's (OpenAI user, Anthropic metadata)."""
        with book.metered_call("acme", {**CHAT, "user": "zed"}) as call:
            call.settle(prompt_tokens=1, completion_tokens=1)
        with book.metered_call("acme", {"model": MODEL, "max_tokens": 5, "messages": MESSAGES,
                                        "metadata": {"user_id": "yan"}},
                               shape="anthropic") as call:
            call.settle(prompt_tokens=1, completion_tokens=1)
        assert [e["user"] for e in ledger_events(book)] == ["zed", "yan"]


BAD_HEADERS: list[tuple[str, list[tuple[str, str | bytes]]]] = [
    ("control character", [("X-Ledger-User", b"al\x01ice")]),
    ("DEL", [("X-Ledger-User", b"alice\x7f")]),
    ("line separator", [("X-Ledger-User", "a\u2028b".encode())]),
    ("empty user", [("X-Ledger-User", "")]),
    ("user twice", [("X-Ledger-User", "a"), ("X-Ledger-User", "b")]),
    ("user too long", [("X-Ledger-User", "u" * 201)]),
    ("user star", [("X-Ledger-User", "*")]),
    ("tag without =", [("X-Ledger-Tags", "feature")]),
    ("empty key", [("X-Ledger-Tags", "=search")]),
    ("empty value", [("X-Ledger-Tags", "feature=")]),
    ("duplicate key", [("X-Ledger-Tags", "feature=a,feature=b")]),
    ("duplicate key across headers", [("X-Ledger-Tags", "k=a"), ("X-Ledger-Tags", "k=a")]),
    ("tag control character", [("X-Ledger-Tags", b"feature=se\x01arch")]),
    ("too many tags", [("X-Ledger-Tags", ",".join(f"k{i}=v" for i in range(MAX_TAGS + 1)))]),
    ("giant header", [("X-Ledger-Tags", "k=" + "v" * 100_000)]),
    ("giant tag list", [("X-Ledger-Tags", ",".join(f"k{i}=v" for i in range(50_000)))]),
    ("long value", [("X-Ledger-Tags", "k=" + "v" * 201)]),
]


class TestAttackerHeaders:
    @pytest.mark.parametrize("case, headers", BAD_HEADERS, ids=[c for c, _ in BAD_HEADERS])
    def test_bad_header_is_a_400_and_nothing_is_sent(
            self, book: Ledger, ledger_events: Events, case: str,
            headers: list[tuple[str, str | bytes]]) -> None:
        """A bad X-Ledger-User / X-Ledger-Tags is refused (400 ledger_invalid_request, OpenAI
        shape, never retried) before anything is sent or held."""
        upstream = Upstream()
        with mock_client(book, upstream) as http:
            response = http.post("/v1/chat/completions", json=CHAT, headers=headers)
        assert response.status_code == 400, case
        error = response.json()["error"]
        assert error["code"] == "ledger_invalid_request"
        assert "X-Ledger-" in error["message"] and len(error["message"]) < 600
        assert response.headers["x-should-retry"] == "false"
        assert upstream.sent == [] and ledger_events(book) == []
        assert book.store.pending_holds() == []

    def test_anthropic_sdk_gets_its_own_shape(self, book: Ledger, sim: RunAPISimulator) -> None:
        """The Anthropic SDK raises its BadRequestError with the ledger's message; nothing is
        sent."""
        client = anthropic.Anthropic(base_url=sim.anthropic_base_url, api_key="k",
                                     max_retries=2, http_client=book.httpx2_client("acme"))
        with client, pytest.raises(anthropic.BadRequestError) as caught:
            client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES,
                                   extra_headers={"X-Ledger-Tags": "feature"})
        body = caught.value.body
        assert isinstance(body, dict) and body["type"] == "error"
        assert body["error"]["code"] == "ledger_invalid_request"
        assert ledger.refusal(caught.value).code == "ledger_invalid_request"  # type: ignore[union-attr]
        assert sim.api_requests == []

    def test_openai_sdk_stream_refused_without_retries(self, book: Ledger,
                                                       sim: RunAPISimulator) -> None:
        """A streamed OpenAI call with a bad header raises BadRequestError once, unsent."""
        client = openai.OpenAI(base_url=sim.openai_base_url, api_key="k", max_retries=3,
                               http_client=book.httpx_client("acme"))
        with client, pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True,
                                           extra_headers={"X-Ledger-Tags": "a=1,a=2"})
        assert sim.api_requests == []


class TestResolve:
    def test_precedence(self) -> None:
        """Client, then header, then body; the header adds tags; blank items are skipped."""
        client = Attribution.of("alice", {"env": "prod"})
        assert resolve(client, Asked(), "bob") is client
        assert resolve(Attribution(), Asked(("carol",)), "bob").user == "carol"
        assert resolve(Attribution(), Asked(), "bob").user == "bob"
        joined = resolve(client, Asked((), (" a=1 , ,b=x=y", "")), None)
        assert joined.tags == (("a", "1"), ("b", "x=y"), ("env", "prod"))
        assert resolve(Attribution(), Asked((), ("",)), None) == Attribution()

    def test_client_attribution_caps_tags(self) -> None:
        """A client may not carry more than MAX_TAGS tags (each may be a budget to check)."""
        assert len(client_attribution(None, {f"k{i}": "v" for i in range(MAX_TAGS)}).tags) \
            == MAX_TAGS
        with pytest.raises(InvalidInput):
            client_attribution(None, {f"k{i}": "v" for i in range(MAX_TAGS + 1)})


class TestKeptEverywhere:
    def test_a_refused_call_is_recorded_with_its_attribution(
            self, book: Ledger, ledger_events: Events) -> None:
        """A call refused by a budget is recorded as refused, for its user and tags."""
        from decimal import Decimal

        book.set_budget("acme", Decimal("0.0001"))
        upstream = Upstream()
        with mock_client(book, upstream, tags={"feature": "search"}) as http:
            response = http.post("/v1/chat/completions", json=CHAT,
                                 headers={"X-Ledger-User": "alice"})
        assert response.status_code == 402 and upstream.sent == []
        event = only_event(book, ledger_events)
        assert event["status"] == "refused" and who(event) == ("alice", ",feature=search,")

    def test_spooled_usage_keeps_its_attribution(
            self, sqlite_url: str, clock: Any, monkeypatch: pytest.MonkeyPatch,
            ledger_events: Events) -> None:
        """Failing open with the database down: the spooled call is attributed at replay."""
        from ledger.errors import LedgerUnavailable

        with Ledger(sqlite_url, clock=clock, fail_open=True) as book:
            def down(*args: Any, **kwargs: Any) -> Any:
                raise LedgerUnavailable("down")

            with monkeypatch.context() as patch:
                patch.setattr(book.store, "hold", down)
                patch.setattr(book.store, "settle", down)
                with book.metered_call("acme", CHAT, user="alice",
                                       tags={"feature": "search"}) as call:
                    call.settle(prompt_tokens=10, completion_tokens=5)
            entry = book.spool.entries()[0]
            assert (entry["user"], entry["tags"]) == ("alice", {"feature": "search"})
            assert book.replay() == 1
            assert who(only_event(book, ledger_events)) == ("alice", ",feature=search,")
