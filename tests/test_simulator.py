"""The RunAPI simulator, exercised with the real openai and anthropic SDKs."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam

from ledger.testing.simulator import (
    DEFAULT_REPLY_WORDS,
    EMBEDDING_DIMENSIONS,
    Behavior,
    RunAPISimulator,
    prompt_tokens,
    simulated_usage,
)

MODEL = "kimi-k2.5"
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "count the apples please"},
]
# 3 + 3 words (system) + 3 + 4 words (user)
PROMPT_TOKENS = 13


@pytest.fixture(scope="module")
def sim() -> Iterator[RunAPISimulator]:
    with RunAPISimulator() as s:
        yield s


@pytest.fixture(autouse=True)
def _fresh(sim: RunAPISimulator) -> None:
    sim.reset()


@pytest.fixture
def oai(sim: RunAPISimulator) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=sim.base_url + "/v1", api_key="test", max_retries=0)
    yield client
    client.close()


@pytest.fixture
def claude(sim: RunAPISimulator) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(base_url=sim.base_url, api_key="test", max_retries=0)
    yield client
    client.close()


@pytest.fixture
def http(sim: RunAPISimulator) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=sim.base_url, timeout=10) as client:
        yield client


def sse_data(text: str) -> list[Any]:
    """The JSON payloads of an SSE body (``[DONE]`` kept as the string)."""
    out: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


# --- OpenAI shape ------------------------------------------------------------------------------


class TestOpenAI:
    def test_non_stream(self, sim: RunAPISimulator, oai: openai.OpenAI) -> None:
        """A plain chat completion echoes the model and reports usage by the documented rule."""
        r = oai.chat.completions.create(model="any-model", messages=MESSAGES)
        assert r.object == "chat.completion"
        assert r.model == "any-model"
        assert r.id.startswith("chatcmpl-")
        text = r.choices[0].message.content or ""
        assert text.startswith("Echo: count the apples please count")
        assert len(text.split()) == DEFAULT_REPLY_WORDS
        assert r.choices[0].finish_reason == "stop"
        assert r.usage is not None
        assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (PROMPT_TOKENS, 20)
        assert r.usage.total_tokens == PROMPT_TOKENS + 20
        assert r.usage.prompt_tokens_details is not None
        assert r.usage.prompt_tokens_details.cached_tokens == 0
        assert sim.request_count == 1

    def test_max_tokens_truncates(self, oai: openai.OpenAI) -> None:
        """max_completion_tokens / max_tokens bound the reply words and set finish_reason=length."""
        r = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_completion_tokens=4)
        assert r.choices[0].message.content == "Echo: count the apples"
        assert r.choices[0].finish_reason == "length"
        assert r.usage is not None and r.usage.completion_tokens == 4
        r = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=50)
        assert r.usage is not None and r.usage.completion_tokens == DEFAULT_REPLY_WORDS

    def test_stream_without_include_usage(self, oai: openai.OpenAI, http: httpx2.Client) -> None:
        """A stream without stream_options.include_usage carries no usage key at all."""
        chunks = list(oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
        assert all(c.usage is None for c in chunks)
        assert chunks[-1].choices[0].finish_reason == "stop"
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        assert len(text.split()) == DEFAULT_REPLY_WORDS
        # one word per content chunk (plus the role chunk and the finish chunk)
        assert len(chunks) == DEFAULT_REPLY_WORDS + 2

        body = {"model": MODEL, "messages": MESSAGES, "stream": True}
        r = http.post("/v1/chat/completions", json=body)
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["transfer-encoding"] == "chunked"
        events = sse_data(r.text)
        assert events[-1] == "[DONE]"
        assert all("usage" not in e for e in events[:-1])

    def test_stream_with_include_usage(self, oai: openai.OpenAI, http: httpx2.Client) -> None:
        """include_usage: every chunk has usage null, then a choices=[] chunk holds the usage."""
        chunks = list(
            oai.chat.completions.create(
                model=MODEL,
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
                max_tokens=5,
            )
        )
        last = chunks[-1]
        assert last.choices == []
        assert last.usage is not None
        assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (PROMPT_TOKENS, 5)
        assert chunks[-2].choices[0].finish_reason == "length"

        body = {
            "model": MODEL,
            "messages": MESSAGES,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        events = sse_data(http.post("/chat/completions", json=body).text)
        assert events[-1] == "[DONE]"
        assert all(e["usage"] is None for e in events[:-2])
        assert events[-2]["usage"]["completion_tokens"] == DEFAULT_REPLY_WORDS

    def test_cached_tokens_and_usage_override(
        self, sim: RunAPISimulator, oai: openai.OpenAI
    ) -> None:
        """Behavior.usage replaces the figures; cached_tokens lands in prompt_tokens_details."""
        sim.enqueue(Behavior(usage=(1000, 7), cached_tokens=600, reply="fixed reply text"))
        r = oai.chat.completions.create(model=MODEL, messages=MESSAGES)
        assert r.choices[0].message.content == "fixed reply text"
        assert r.usage is not None
        assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (1000, 7)
        assert r.usage.prompt_tokens_details is not None
        assert r.usage.prompt_tokens_details.cached_tokens == 600


# --- Responses, Completions, Embeddings --------------------------------------------------------

R_INPUT = "count the apples please"
R_INSTRUCTIONS = "be terse"
R_PROMPT_TOKENS = 3 + 4 + 2  # the input as one user item + its words + instructions' words


def sse_events(text: str) -> list[tuple[str, Any]]:
    """(event type, JSON data) of each event of an SSE body."""
    out: list[tuple[str, Any]] = []
    for block in text.split("\n\n"):
        lines = block.splitlines()
        kind = next((ln[len("event: "):] for ln in lines if ln.startswith("event: ")), "")
        data = next((ln[len("data: "):] for ln in lines if ln.startswith("data: ")), None)
        if data is not None:
            out.append((kind, data if data == "[DONE]" else json.loads(data)))
    return out


class TestResponses:
    def test_non_stream(self, sim: RunAPISimulator, oai: openai.OpenAI) -> None:
        """/v1/responses answers a response object: output message, usage with its details."""
        sim.enqueue(Behavior(cached_tokens=4))
        r = oai.responses.create(model=MODEL, input=R_INPUT, instructions=R_INSTRUCTIONS)
        assert r.object == "response" and r.status == "completed" and r.id.startswith("resp_")
        assert r.output_text.split()[:3] == ["Echo:", "count", "the"]
        assert r.usage is not None
        assert (r.usage.input_tokens, r.usage.output_tokens) == (R_PROMPT_TOKENS,
                                                                 DEFAULT_REPLY_WORDS)
        assert r.usage.total_tokens == R_PROMPT_TOKENS + DEFAULT_REPLY_WORDS
        assert r.usage.input_tokens_details.cached_tokens == 4
        assert r.usage.output_tokens_details.reasoning_tokens == 0
        assert sim.request_count == 1 and sim.api_requests[0].shape == "responses"

    def test_max_output_tokens_makes_it_incomplete(self, oai: openai.OpenAI) -> None:
        """max_output_tokens cuts the reply: status incomplete, reason max_output_tokens."""
        r = oai.responses.create(model=MODEL, input=R_INPUT, max_output_tokens=3)
        assert r.status == "incomplete" and r.incomplete_details is not None
        assert r.incomplete_details.reason == "max_output_tokens"
        assert r.usage is not None and r.usage.output_tokens == 3 == len(r.output_text.split())

    def test_stream_event_sequence(self, http: httpx2.Client) -> None:
        """A stream is OpenAI's typed event sequence, numbered, usage in response.completed."""
        body = {"model": MODEL, "input": [{"role": "user", "content": R_INPUT}],
                "stream": True, "max_output_tokens": 50}
        events = sse_events(http.post("/v1/responses", json=body).text)
        kinds = [k for k, _ in events]
        assert kinds[:4] == ["response.created", "response.in_progress",
                             "response.output_item.added", "response.content_part.added"]
        assert kinds[4:-4] == ["response.output_text.delta"] * DEFAULT_REPLY_WORDS
        assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                              "response.output_item.done", "response.completed"]
        assert all(data["type"] == kind for kind, data in events)
        assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
        assert events[0][1]["response"]["usage"] is None
        text = "".join(d["delta"] for k, d in events if k == "response.output_text.delta")
        assert events[-4][1]["text"] == text
        usage = events[-1][1]["response"]["usage"]
        assert (usage["input_tokens"], usage["output_tokens"]) == (3 + 4, DEFAULT_REPLY_WORDS)
        assert events[-1][1]["response"]["output"][0]["content"][0]["text"] == text

    def test_stream_helper_and_error_event(self, sim: RunAPISimulator,
                                           oai: openai.OpenAI) -> None:
        """The SDK's responses.stream() rebuilds the text; error_event is response.failed."""
        with oai.responses.stream(model=MODEL, input=R_INPUT) as stream:
            for _ in stream:
                pass
            final = stream.get_final_response()
        assert final.output_text.startswith("Echo: count") and final.usage is not None
        sim.enqueue(Behavior(error_event=True))
        kinds = [e.type for e in oai.responses.create(model=MODEL, input=R_INPUT, stream=True)]
        assert kinds[-1] == "response.failed" and kinds.count("response.output_text.delta") == 2

    def test_omit_usage_and_cut(self, sim: RunAPISimulator, http: httpx2.Client) -> None:
        """omit_usage drops the usage key; cut_after breaks the stream before its end."""
        sim.enqueue(Behavior(omit_usage=True), Behavior(cut_after=1))
        assert "usage" not in http.post("/v1/responses", json={"model": MODEL,
                                                               "input": "x"}).json()
        body = {"model": MODEL, "input": "x", "stream": True}
        with pytest.raises(httpx2.HTTPError):
            http.post("/v1/responses", json=body).read()


class TestCompletionsAndEmbeddings:
    def test_completions(self, sim: RunAPISimulator, oai: openai.OpenAI) -> None:
        """/v1/completions: choices[].text and usage; a stream ends with its usage chunk."""
        r = oai.completions.create(model=MODEL, prompt="say this now", max_tokens=2)
        assert r.object == "text_completion" and r.choices[0].text == "Echo: say"
        assert r.choices[0].finish_reason == "length"
        assert r.usage is not None and (r.usage.prompt_tokens, r.usage.completion_tokens) == (3, 2)
        chunks = list(oai.completions.create(model=MODEL, prompt="say this now", stream=True,
                                             stream_options={"include_usage": True}))
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == DEFAULT_REPLY_WORDS
        assert "".join(c.choices[0].text for c in chunks[:-1]).startswith("Echo: say this")
        assert simulated_usage(sim.api_requests[0].json, shape="completions") == (3, 2)

    def test_embeddings(self, sim: RunAPISimulator, oai: openai.OpenAI) -> None:
        """/v1/embeddings: a vector per input (base64 or float) and usage prompt/total."""
        r = oai.embeddings.create(model=MODEL, input=["one two", "three"])  # SDK asks base64
        assert sim.requests[-1].json["encoding_format"] == "base64"
        assert [len(d.embedding) for d in r.data] == [EMBEDDING_DIMENSIONS] * 2
        assert (r.usage.prompt_tokens, r.usage.total_tokens) == (3, 3)
        floats = oai.embeddings.create(model=MODEL, input="three", encoding_format="float")
        assert sim.requests[-1].body.count(b"base64") == 0
        assert floats.data[0].embedding == pytest.approx(r.data[1].embedding, rel=1e-6)
        assert simulated_usage({"input": [[1, 2, 3], "a b"]}, shape="embeddings") == (5, 0)
        assert sim.request_count == 2


# --- Anthropic shape ---------------------------------------------------------------------------

A_MESSAGES: list[MessageParam] = [
    {"role": "user", "content": [{"type": "text", "text": "count the apples please"}]}
]
A_SYSTEM = "You are terse."
A_PROMPT_TOKENS = 3 + 4 + 3  # message + its words + system words (no +3 for system)


class TestAnthropic:
    def test_non_stream(self, sim: RunAPISimulator, claude: anthropic.Anthropic) -> None:
        """A plain message reports input/output tokens and end_turn, echoing the model."""
        m = claude.messages.create(
            model="whatever",
            max_tokens=100,
            system=A_SYSTEM,
            messages=A_MESSAGES,
        )
        assert m.type == "message" and m.role == "assistant" and m.model == "whatever"
        assert m.id.startswith("msg_")
        assert m.content[0].type == "text"
        assert m.content[0].text.startswith("Echo: count the apples please")
        assert m.stop_reason == "end_turn"
        assert (m.usage.input_tokens, m.usage.output_tokens) == (A_PROMPT_TOKENS, 20)
        assert m.usage.cache_read_input_tokens == 0
        assert m.usage.cache_creation_input_tokens == 0
        assert sim.request_count == 1

    def test_max_tokens_and_cached(self, sim: RunAPISimulator, claude: anthropic.Anthropic) -> None:
        """max_tokens truncates (stop_reason max_tokens); input_tokens exclude cache reads."""
        sim.enqueue(Behavior(cached_tokens=4))
        m = claude.messages.create(model=MODEL, max_tokens=3, messages=A_MESSAGES)
        assert m.stop_reason == "max_tokens"
        assert m.content[0].type == "text" and m.content[0].text == "Echo: count the"
        assert m.usage.output_tokens == 3
        assert m.usage.input_tokens == 7 - 4
        assert m.usage.cache_read_input_tokens == 4

    def test_stream_event_sequence(self, claude: anthropic.Anthropic) -> None:
        """create(stream=True) yields the real event sequence with usage at start and delta."""
        events = list(
            claude.messages.create(
                model=MODEL,
                max_tokens=100,
                messages=A_MESSAGES,
                stream=True,
            )
        )
        types = [e.type for e in events]
        n = DEFAULT_REPLY_WORDS
        assert types == (
            ["message_start", "content_block_start"]
            + ["content_block_delta"] * n
            + ["content_block_stop", "message_delta", "message_stop"]
        )
        start, delta = events[0], events[-2]
        assert start.type == "message_start" and delta.type == "message_delta"
        assert start.message.usage.input_tokens == 7
        assert start.message.usage.output_tokens == 1
        assert delta.usage.output_tokens == n
        assert delta.delta.stop_reason == "end_turn"

    def test_stream_raw_has_ping(self, http: httpx2.Client) -> None:
        """On the wire each event is 'event: NAME' + 'data: JSON', including a ping."""
        body = {"model": MODEL, "max_tokens": 2, "messages": A_MESSAGES, "stream": True}
        r = http.post("/v1/messages", json=body)
        names = [line[7:] for line in r.text.splitlines() if line.startswith("event: ")]
        assert names == [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
        assert [d["type"] for d in sse_data(r.text)] == names

    def test_stream_helper(self, claude: anthropic.Anthropic) -> None:
        """client.messages.stream() accumulates the text and the final usage."""
        with claude.messages.stream(
            model=MODEL,
            max_tokens=6,
            messages=A_MESSAGES,
        ) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert text == "Echo: count the apples please count"
        assert final.usage.output_tokens == 6
        assert final.usage.input_tokens == 7
        assert final.stop_reason == "max_tokens"


# --- Failures and retries ----------------------------------------------------------------------


class TestErrors:
    def test_openai_retries_a_500(self, sim: RunAPISimulator) -> None:
        """A 500 then success: the OpenAI SDK retries quickly and the simulator sees 2 requests."""
        client = openai.OpenAI(base_url=sim.base_url + "/v1", api_key="test", max_retries=2)
        sim.enqueue(Behavior(status=500))
        t0 = time.monotonic()
        r = client.chat.completions.create(model=MODEL, messages=MESSAGES)
        assert r.choices[0].message.content
        assert sim.request_count == 2
        assert time.monotonic() - t0 < 0.4  # retry-after-ms: 1, not the 0.5 s backoff
        retry_counts = [r.headers.get("x-stainless-retry-count") for r in sim.api_requests]
        assert retry_counts == ["0", "1"]

    def test_anthropic_retries_a_500(self, sim: RunAPISimulator) -> None:
        """A 500 then success: the Anthropic SDK retries and the simulator sees 2 requests."""
        client = anthropic.Anthropic(base_url=sim.base_url, api_key="test", max_retries=2)
        sim.enqueue(Behavior(status=500))
        m = client.messages.create(model=MODEL, max_tokens=5, messages=A_MESSAGES)
        assert m.usage.output_tokens == 5
        assert sim.request_count == 2

    def test_error_bodies_have_each_api_shape(
        self, sim: RunAPISimulator, http: httpx2.Client
    ) -> None:
        """status >= 400 answers the API's error shape; 429/5xx carry fast retry headers."""
        sim.enqueue(Behavior(status=429), Behavior(status=529), Behavior(status=401))
        r = http.post("/v1/chat/completions", json={"model": MODEL, "messages": []})
        assert r.status_code == 429
        assert r.json()["error"]["type"] == "rate_limit_error"
        assert set(r.json()["error"]) >= {"message", "type", "code"}
        assert (r.headers["retry-after"], r.headers["retry-after-ms"]) == ("0", "1")
        r = http.post("/v1/messages", json={"model": MODEL, "messages": []})
        assert r.status_code == 529
        assert r.json() == {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Simulated 529 Overloaded"},
        }
        r = http.post("/v1/messages", json={"model": MODEL, "messages": []})
        assert r.json()["error"]["type"] == "authentication_error"
        assert "retry-after" not in r.headers

    def test_sdk_status_errors(
        self, sim: RunAPISimulator, oai: openai.OpenAI, claude: anthropic.Anthropic
    ) -> None:
        """The SDKs raise their status errors with the simulated body."""
        sim.enqueue(Behavior(status=429, error_message="slow down"))
        with pytest.raises(openai.RateLimitError) as oe:
            oai.chat.completions.create(model=MODEL, messages=MESSAGES)
        assert oe.value.status_code == 429 and "slow down" in str(oe.value)
        sim.enqueue(Behavior(status=402, error_type="billing_error"))
        with pytest.raises(anthropic.APIStatusError) as ae:
            claude.messages.create(model=MODEL, max_tokens=5, messages=A_MESSAGES)
        assert ae.value.status_code == 402

    def test_invalid_json_is_400(self, sim: RunAPISimulator, http: httpx2.Client) -> None:
        """A request body that is not a JSON object answers 400 in the API's shape."""
        r = http.post("/v1/chat/completions", content=b"{not json")
        assert r.status_code == 400
        assert r.json()["error"]["type"] == "invalid_request_error"
        r = http.post("/v1/messages", content=b"[1, 2]")
        assert r.status_code == 400
        assert r.json()["type"] == "error"
        assert sim.requests[0].json is None and sim.requests[0].body == b"{not json"

    def test_known_models(self, sim: RunAPISimulator, oai: openai.OpenAI) -> None:
        """Behavior.known_models rejects other model ids with a 404."""
        sim.default = Behavior(known_models=("kimi-k2.5",))
        oai.chat.completions.create(model="kimi-k2.5", messages=MESSAGES)
        with pytest.raises(openai.NotFoundError):
            oai.chat.completions.create(model="gpt-9", messages=MESSAGES)


class TestBrokenStreams:
    def test_cut_stream_openai(self, sim: RunAPISimulator, oai: openai.OpenAI) -> None:
        """cut_after: the OpenAI SDK raises APIConnectionError mid-iteration, no retry."""
        sim.enqueue(Behavior(cut_after=3))
        got: list[str] = []
        with pytest.raises(openai.APIConnectionError) as exc:
            for chunk in oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True):
                got.append(chunk.choices[0].delta.content or "")
        assert isinstance(exc.value.__cause__, httpx2.RemoteProtocolError)
        assert [g for g in got if g] == ["Echo: ", "count ", "the "]
        assert sim.request_count == 1

    def test_cut_stream_anthropic(self, sim: RunAPISimulator, claude: anthropic.Anthropic) -> None:
        """cut_after: the Anthropic SDK lets httpx2.RemoteProtocolError through."""
        sim.enqueue(Behavior(cut_after=2))
        with pytest.raises(httpx2.RemoteProtocolError):
            with claude.messages.stream(model=MODEL, max_tokens=50, messages=A_MESSAGES) as s:
                s.get_final_message()

    def test_cut_stream_on_the_wire(self, sim: RunAPISimulator, http: httpx2.Client) -> None:
        """A cut stream is an incomplete chunked body, even past the reply's last chunk."""
        sim.enqueue(Behavior(cut_after=100))
        body = {"model": MODEL, "messages": MESSAGES, "stream": True}
        received = bytearray()
        with pytest.raises(httpx2.RemoteProtocolError):
            with http.stream("POST", "/v1/chat/completions", json=body) as r:
                for part in r.iter_bytes():
                    received += part
        assert b"[DONE]" not in received and b'finish_reason":"stop' not in received
        # the client recovers on a fresh connection
        assert http.post("/v1/chat/completions", json=body).status_code == 200

    def test_error_event_openai(self, sim: RunAPISimulator, oai: openai.OpenAI) -> None:
        """error_event: a data: {"error": ...} event makes the OpenAI SDK raise APIError."""
        sim.enqueue(Behavior(error_event=True, error_message="boom"))
        with pytest.raises(openai.APIError, match="boom"):
            list(oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))

    def test_error_event_anthropic(self, sim: RunAPISimulator, claude: anthropic.Anthropic) -> None:
        """error_event: 'event: error' makes the Anthropic SDK raise an APIStatusError."""
        sim.enqueue(Behavior(error_event=True, cut_after=1))
        with pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
            list(
                claude.messages.create(
                    model=MODEL,
                    max_tokens=9,
                    messages=A_MESSAGES,
                    stream=True,
                )
            )

    def test_error_event_on_the_wire(self, sim: RunAPISimulator, http: httpx2.Client) -> None:
        """The error event comes after cut_after content chunks and the body ends cleanly."""
        sim.enqueue(Behavior(error_event=True, cut_after=2))
        body = {"model": MODEL, "max_tokens": 9, "messages": A_MESSAGES, "stream": True}
        r = http.post("/v1/messages", json=body)
        data = sse_data(r.text)
        assert [d["type"] for d in data][-3:] == [
            "content_block_delta",
            "content_block_delta",
            "error",
        ]
        assert "message_stop" not in r.text


class TestHostile:
    def test_malformed_non_stream(
        self, sim: RunAPISimulator, oai: openai.OpenAI, claude: anthropic.Anthropic
    ) -> None:
        """malformed: a 200 whose body is truncated JSON; the SDKs fail to decode it."""
        sim.enqueue(Behavior(malformed=True), Behavior(malformed=True))
        with pytest.raises(Exception):  # noqa: B017 (the SDK's exception type is its business)
            oai.chat.completions.create(model=MODEL, messages=MESSAGES)
        with pytest.raises(Exception):  # noqa: B017
            claude.messages.create(model=MODEL, max_tokens=5, messages=A_MESSAGES)

    def test_malformed_stream(self, sim: RunAPISimulator, http: httpx2.Client) -> None:
        """malformed stream: an SSE event with broken JSON, then the normal end marker."""
        sim.enqueue(Behavior(malformed=True))
        r = http.post("/v1/chat/completions", json={"model": MODEL, "stream": True})
        assert r.status_code == 200
        with pytest.raises(ValueError):
            sse_data(r.text)
        assert r.text.endswith("data: [DONE]\n\n")

    def test_omit_usage(
        self, sim: RunAPISimulator, oai: openai.OpenAI, claude: anthropic.Anthropic
    ) -> None:
        """omit_usage: no usage anywhere, streaming or not, in both shapes."""
        sim.default = Behavior(omit_usage=True)
        r = oai.chat.completions.create(model=MODEL, messages=MESSAGES)
        assert r.usage is None
        chunks = list(
            oai.chat.completions.create(
                model=MODEL,
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert all(c.usage is None and c.choices for c in chunks)
        m = claude.messages.create(model=MODEL, max_tokens=5, messages=A_MESSAGES)
        assert m.usage is None
        events = list(
            claude.messages.create(
                model=MODEL,
                max_tokens=5,
                messages=A_MESSAGES,
                stream=True,
            )
        )
        assert events[0].type == "message_start" and events[0].message.usage is None
        assert events[-2].type == "message_delta" and events[-2].usage is None

    def test_raw_bytes(self, sim: RunAPISimulator, http: httpx2.Client) -> None:
        """raw: exactly these body bytes are sent with the given status."""
        junk = b"\x00\xff{{{ not json at all \r\n\r\n"
        sim.enqueue(Behavior(raw=junk, status=502), Behavior(raw=b"", status=200))
        r = http.post("/v1/chat/completions", json={"model": MODEL})
        assert (r.status_code, r.content) == (502, junk)
        assert r.headers["content-length"] == str(len(junk))
        r = http.post("/v1/messages", json={"model": MODEL, "stream": True})
        assert (r.status_code, r.content) == (200, b"")
        assert r.headers["content-type"] == "text/event-stream"


class TestStreamBytes:
    def test_openai_stream_bytes(self, sim: RunAPISimulator, http: httpx2.Client) -> None:
        """stream_bytes: content chunks until about N bytes, usage counts the chunks sent."""
        sim.enqueue(Behavior(stream_bytes=200_000))
        body = {
            "model": MODEL,
            "max_tokens": 3,  # ignored under stream_bytes
            "messages": MESSAGES,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with http.stream("POST", "/v1/chat/completions", json=body) as r:
            raw = r.read()
        assert 200_000 <= len(raw) < 200_000 + 70_000
        events = sse_data(raw.decode())
        content = [
            e for e in events[:-1] if e["choices"] and e["choices"][0]["delta"].get("content")
        ]
        assert events[-2]["usage"]["completion_tokens"] == len(content) > 100

    def test_anthropic_stream_bytes(
        self, sim: RunAPISimulator, claude: anthropic.Anthropic
    ) -> None:
        """stream_bytes works through the Anthropic SDK's stream helper."""
        sim.enqueue(Behavior(stream_bytes=50_000))
        with claude.messages.stream(model=MODEL, max_tokens=1, messages=A_MESSAGES) as s:
            final = s.get_final_message()
        assert final.content[0].type == "text"
        assert final.usage.output_tokens == len(final.content[0].text.split()) > 100


# --- Recording, behaviours, lifecycle ----------------------------------------------------------


class TestSimulator:
    def test_requests_recorded_with_headers(
        self, sim: RunAPISimulator, oai: openai.OpenAI, claude: anthropic.Anthropic
    ) -> None:
        """Each request is recorded: method, path, lower-case headers, body and parsed JSON."""
        oai.chat.completions.create(model=MODEL, messages=MESSAGES)
        claude.messages.create(model=MODEL, max_tokens=5, messages=A_MESSAGES)
        oai.models.list()
        first, second, third = sim.requests
        assert (first.method, first.path) == ("POST", "/v1/chat/completions")
        assert first.headers["authorization"] == "Bearer test"
        assert first.headers["content-type"] == "application/json"
        assert first.json == {"model": MODEL, "messages": MESSAGES}
        assert json.loads(first.body) == first.json
        assert all(k == k.lower() for k in first.headers)
        assert second.path == "/v1/messages"
        assert "anthropic-version" in second.headers
        # anthropic 2.x sends the key as a bearer token; older versions used x-api-key
        assert "test" in (second.headers.get("x-api-key") or second.headers["authorization"])
        assert (third.method, third.path) == ("GET", "/v1/models")
        assert sim.request_count == 2
        assert [r.path for r in sim.api_requests] == ["/v1/chat/completions", "/v1/messages"]

    def test_recorded_before_behaviour(self, sim: RunAPISimulator) -> None:
        """A request is visible in sim.requests while its delay is still running."""
        sim.enqueue(Behavior(delay=0.5))
        done = threading.Event()

        def call() -> None:
            httpx2.post(sim.base_url + "/v1/messages", json={"model": MODEL}, timeout=5)
            done.set()

        threading.Thread(target=call, daemon=True).start()
        deadline = time.monotonic() + 2
        while not sim.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sim.request_count == 1 and not done.is_set()
        assert done.wait(3)

    def test_queue_fifo_then_default(self, sim: RunAPISimulator, http: httpx2.Client) -> None:
        """enqueue() is FIFO, then sim.default applies; other paths never consume the queue."""
        sim.enqueue(Behavior(status=503), Behavior(status=404))
        sim.default = Behavior(reply="from default")
        assert http.get("/v1/models").status_code == 200
        assert http.get("/v1/chat/completions").status_code == 405
        statuses = [
            http.post("/v1/chat/completions", json={"model": MODEL}).status_code for _ in range(3)
        ]
        assert statuses == [503, 404, 200]
        assert sim.pending == 0
        r = http.post("/v1/chat/completions", json={"model": MODEL})
        assert r.json()["choices"][0]["message"]["content"] == "from default"
        sim.reset()
        assert (sim.requests, sim.request_count, sim.default) == ([], 0, Behavior())

    def test_models_endpoint(self, oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
        """GET /v1/models lists kimi-k2.5 and kimi-k2.6 in each SDK's shape."""
        assert [m.id for m in oai.models.list()] == ["kimi-k2.5", "kimi-k2.6"]
        assert [m.id for m in claude.models.list()] == ["kimi-k2.5", "kimi-k2.6"]

    def test_chunk_delay(self, sim: RunAPISimulator, http: httpx2.Client) -> None:
        """chunk_delay spaces the SSE events out."""
        sim.enqueue(Behavior(chunk_delay=0.02))
        body = {"model": MODEL, "max_tokens": 3, "messages": MESSAGES, "stream": True}
        t0 = time.monotonic()
        http.post("/v1/chat/completions", json=body)
        assert time.monotonic() - t0 >= 0.02 * 5  # role, 3 words, finish, [DONE]: 5 gaps

    def test_token_rule_helpers(self) -> None:
        """prompt_tokens/simulated_usage implement the documented counting rule."""
        body = {
            "system": [{"type": "text", "text": "be brief"}],
            "messages": [
                {"role": "user", "content": "a b c"},
                {"role": "assistant", "content": [{"type": "text", "text": "d"}]},
                {"role": "user", "content": [{"type": "image", "source": {}}]},
            ],
            "max_tokens": 7,
        }
        assert prompt_tokens(body) == 2 + (3 + 3) + (3 + 1) + (3 + 0)
        assert simulated_usage(body) == (15, 7)
        assert simulated_usage(body, Behavior(reply="one two")) == (15, 2)
        assert simulated_usage(body, Behavior(usage=(1, 2))) == (1, 2)

    def test_behavior_validation(self) -> None:
        """Behavior rejects nonsense values early."""
        with pytest.raises(ValueError):
            Behavior(status=99)
        with pytest.raises(ValueError):
            Behavior(delay=-1)
        with pytest.raises(ValueError):
            Behavior(usage=(1, -2))
        with pytest.raises(TypeError):
            Behavior(raw="text")  # type: ignore[arg-type]

    def test_stop_is_prompt_with_open_connections(self) -> None:
        """stop() returns quickly despite keep-alive connections and a pending delay."""
        s = RunAPISimulator().start()
        idle = socket.create_connection(("127.0.0.1", s.port))
        client = httpx2.Client(base_url=s.base_url)
        assert client.get("/v1/models").status_code == 200  # leaves a keep-alive connection
        s.default = Behavior(delay=30)
        errors: list[BaseException] = []

        def slow() -> None:
            try:
                client.post("/v1/chat/completions", json={"model": MODEL}, timeout=10)
            except BaseException as e:
                errors.append(e)

        t = threading.Thread(target=slow, daemon=True)
        t.start()
        time.sleep(0.1)
        t0 = time.monotonic()
        s.stop()
        assert time.monotonic() - t0 < 1.5
        t.join(2)
        assert errors and isinstance(errors[0], httpx2.TransportError)
        assert not s.running
        s.stop()  # idempotent
        idle.close()
        client.close()

    def test_manual_start_stop(self) -> None:
        """RunAPISimulator(port=0, host=...).start() / stop() work without a with block."""
        s = RunAPISimulator(port=0, host="127.0.0.1")
        with pytest.raises(RuntimeError):
            _ = s.base_url
        s.start()
        try:
            assert s.base_url == f"http://127.0.0.1:{s.port}"
            assert httpx2.get(s.base_url + "/v1/models").status_code == 200
        finally:
            s.stop()
