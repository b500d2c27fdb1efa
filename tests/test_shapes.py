"""The request/response shapes: routing, request parsing, usage and text of response bodies."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.endpoints import shape_for
from ledger.errors import InvalidInput
from ledger.money import MAX_TOKENS
from ledger.shapes import (
    CallRequest,
    Usage,
    parse_request,
    text_from_body,
    usage_from_body,
    with_stream_usage,
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
USAGE_KEYS = st.sampled_from([
    "prompt_tokens", "completion_tokens", "prompt_tokens_details", "cached_tokens",
    "input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens",
])
COUNTS = st.one_of(st.integers(-5, MAX_TOKENS + 5), st.none(), st.booleans(),
                   st.floats(allow_nan=False), st.text(max_size=3), JSON)


def dumps(value: Any) -> bytes:
    """Compact JSON bytes of ``value``."""
    return json.dumps(value).encode()


def openai_request(**fields: Any) -> CallRequest:
    """A parsed OpenAI request with the given fields."""
    return parse_request("openai", dumps({"model": "kimi-k2.5", "messages": [], **fields}))


class TestShapeFor:
    @pytest.mark.parametrize(("method", "path", "shape"), [
        ("POST", "/v1/chat/completions", "openai"),
        ("post", "/v1/chat/completions?api-version=2", "openai"),
        ("POST", "/v1/chat/completions/", "openai"),
        ("POST", "/openai/deployments/x/chat/completions", "openai"),
        ("POST", "/v1/messages", "anthropic"),
        ("POST", "/v1/messages/?beta=true", "anthropic"),
        ("POST", "https://runapi.ai/v1/messages#frag", "anthropic"),
        ("GET", "/v1/chat/completions", None),
        ("PUT", "/v1/messages", None),
        ("POST", "/v1/messages/count_tokens", None),
        ("POST", "/v1/messages/batches", None),
        ("POST", "/v1/threads/thread_1/messages", None),
        ("POST", "/v1/completions", "completions"),
        ("POST", "/v1/embeddings", "embeddings"),
        ("POST", "/v1/responses", "responses"),
        ("POST", "/", None),
        ("POST", "", None),
    ])
    def test_routes(self, method: str, path: str, shape: str | None) -> None:
        """Only POSTs to the metered endpoints are metered calls, of their shape (issue 9
        item 1 added responses, completions and embeddings)."""
        assert shape_for(method, path) == shape


class TestParseRequest:
    def test_openai_fields(self) -> None:
        """model, stream and max_tokens are read from an OpenAI body."""
        req = openai_request(stream=True, max_tokens=300)
        assert (req.shape, req.model, req.stream, req.max_tokens) == (
            "openai", "kimi-k2.5", True, 300)
        assert req.body["messages"] == []

    def test_openai_max_completion_tokens_wins(self) -> None:
        """max_completion_tokens takes precedence over the older max_tokens."""
        assert openai_request(max_completion_tokens=50, max_tokens=300).max_tokens == 50
        assert openai_request(max_completion_tokens=None, max_tokens=300).max_tokens == 300

    def test_anthropic_fields(self) -> None:
        """model, stream and max_tokens are read from an Anthropic body."""
        req = parse_request("anthropic", dumps({"model": "kimi-k2.6", "max_tokens": 1024,
                                                "messages": [], "stream": False}))
        assert (req.shape, req.model, req.stream, req.max_tokens) == (
            "anthropic", "kimi-k2.6", False, 1024)

    @pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
    @pytest.mark.parametrize("value", [-1, 0, "100", True, False, 1.5, 100.0, [], {}])
    def test_invalid_cap_is_refused_naming_the_field(self, field: str, value: object) -> None:
        """Issue 9 item 2: a cap that is not a positive integer is refused, naming the field."""
        with pytest.raises(InvalidInput, match=f'"{field}"'):
            openai_request(**{field: value})

    @pytest.mark.parametrize("value", [0, -5, "9", 2.0, True])
    def test_invalid_anthropic_cap_is_refused(self, value: object) -> None:
        """Issue 9 item 2: an Anthropic max_tokens that is not a positive integer is refused."""
        with pytest.raises(InvalidInput, match='"max_tokens"'):
            parse_request("anthropic", dumps({"model": "m", "max_tokens": value, "messages": []}))

    def test_null_cap_is_no_cap(self) -> None:
        """Issue 9 item 2: a null cap reads as absent (the default cap applies)."""
        assert openai_request(max_tokens=None, max_completion_tokens=None).max_tokens is None

    @pytest.mark.parametrize("model", [None, 5, ["m"], {"id": "m"}])
    def test_non_string_model_is_none(self, model: object) -> None:
        """A model that is not a string reads as None."""
        assert openai_request(model=model).model is None

    @pytest.mark.parametrize("stream", ["true", 1, None, False])
    def test_stream_only_when_true(self, stream: object) -> None:
        """Only JSON true turns streaming on."""
        assert openai_request(stream=stream).stream is False

    @pytest.mark.parametrize("body", [
        b"", b"[]", b"null", b"42", b'"text"', b"{", b"\xff\xfe{", b"{'a': 1}",
        b"[" * 100_000, b'{"a": ' + b"9" * 5000 + b"}",
    ])
    def test_not_an_object_raises_invalid_input(self, body: bytes) -> None:
        """A body that is not a JSON object raises InvalidInput (a ValueError)."""
        with pytest.raises(InvalidInput, match="request body"):
            parse_request("openai", body)

    def test_unknown_shape_raises(self) -> None:
        """An unknown shape name is refused."""
        with pytest.raises(InvalidInput, match="shape"):
            parse_request("gemini", b"{}")  # type: ignore[arg-type]


class TestUsageFromBody:
    def test_openai_usage_with_cache(self) -> None:
        """OpenAI usage: prompt, completion and cached tokens."""
        body = dumps({"usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
                                "prompt_tokens_details": {"cached_tokens": 64}}})
        assert usage_from_body("openai", body) == Usage(100, 20, 64)

    def test_openai_null_details(self) -> None:
        """Null or absent details mean no cached tokens."""
        body = dumps({"usage": {"prompt_tokens": 10, "completion_tokens": 2,
                                "prompt_tokens_details": None}})
        assert usage_from_body("openai", body) == Usage(10, 2, 0)

    def test_anthropic_usage_sums_input(self) -> None:
        """Anthropic prompt tokens are input + cache read + cache creation."""
        body = dumps({"type": "message", "usage": {
            "input_tokens": 5, "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 200, "output_tokens": 42}})
        assert usage_from_body("anthropic", body) == Usage(1205, 42, 1000)

    def test_anthropic_null_cache_fields(self) -> None:
        """Null cache counts are zero."""
        body = dumps({"usage": {"input_tokens": 5, "output_tokens": 1,
                                "cache_read_input_tokens": None}})
        assert usage_from_body("anthropic", body) == Usage(5, 1, 0)

    @pytest.mark.parametrize("usage", [
        {"prompt_tokens": 10},
        {"completion_tokens": 10},
        {"prompt_tokens": -1, "completion_tokens": 1},
        {"prompt_tokens": True, "completion_tokens": 1},
        {"prompt_tokens": 1.0, "completion_tokens": 1},
        {"prompt_tokens": "1", "completion_tokens": 1},
        {"prompt_tokens": MAX_TOKENS + 1, "completion_tokens": 1},
        None, [], "usage",
    ])
    def test_openai_implausible_usage_is_none(self, usage: object) -> None:
        """Missing, non-int, bool, negative, too large or inconsistent counts give None."""
        assert usage_from_body("openai", dumps({"usage": usage})) is None

    def test_anthropic_sum_too_large_is_none(self) -> None:
        """Anthropic input counts that add up beyond MAX_TOKENS are not believed."""
        body = dumps({"usage": {"input_tokens": MAX_TOKENS, "cache_read_input_tokens": 1,
                                "output_tokens": 1}})
        assert usage_from_body("anthropic", body) is None

    @pytest.mark.parametrize("body", [b"", b"{", b"[]", b"null", b"\xff", b'{"error": {}}'])
    def test_garbage_is_none(self, body: bytes) -> None:
        """Bodies without a usage object read as None."""
        assert usage_from_body("openai", body) is None
        assert usage_from_body("anthropic", body) is None

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=200), st.sampled_from(["openai", "anthropic"]))
    def test_arbitrary_bytes_never_raise(self, body: bytes, shape: Any) -> None:
        """Any bytes at all: no exception, and never a negative count."""
        _check_usage(usage_from_body(shape, body))
        assert isinstance(text_from_body(shape, body), str)

    @settings(max_examples=200, deadline=None)
    @given(JSON, st.sampled_from(["openai", "anthropic"]))
    def test_arbitrary_json_never_raises(self, value: Any, shape: Any) -> None:
        """Any JSON document, as the body or as its usage: no exception, no negative count."""
        for body in (value, {"usage": value}, {"choices": value, "content": value}):
            _check_usage(usage_from_body(shape, dumps(body)))
            assert isinstance(text_from_body(shape, dumps(body)), str)

    @settings(max_examples=200, deadline=None)
    @given(st.dictionaries(USAGE_KEYS, COUNTS, max_size=8), st.sampled_from(["openai", "anthropic"]))
    def test_arbitrary_usage_objects(self, usage: dict[str, Any], shape: Any) -> None:
        """Usage objects with arbitrary values in the real keys: valid Usage or None."""
        usage["prompt_tokens_details"] = {"cached_tokens": usage.get("cached_tokens")}
        _check_usage(usage_from_body(shape, dumps({"usage": usage})))


def _check_usage(usage: Usage | None) -> None:
    """A usage read from a body is None or a plausible count triple."""
    if usage is not None:
        assert 0 <= usage.cached_tokens <= usage.prompt_tokens <= MAX_TOKENS
        assert 0 <= usage.completion_tokens <= MAX_TOKENS


class TestUsage:
    @pytest.mark.parametrize(("args", "error"), [
        ((-1, 0), InvalidInput), ((0, MAX_TOKENS + 1), InvalidInput), ((5, 1, 6), InvalidInput),
        ((1.0, 0), TypeError), ((True, 0), TypeError),
    ])
    def test_validates(self, args: tuple[Any, ...], error: type[Exception]) -> None:
        """A Usage cannot hold an implausible count."""
        with pytest.raises(error):
            Usage(*args)


class TestTextFromBody:
    def test_openai_message_content(self) -> None:
        """OpenAI text is the choices' message content, in order."""
        body = dumps({"choices": [{"message": {"content": "Hello"}},
                                  {"message": {"content": [{"type": "text", "text": " there"}]}},
                                  {"message": {"content": None, "tool_calls": []}}]})
        assert text_from_body("openai", body) == "Hello there"

    def test_anthropic_text_blocks(self) -> None:
        """Anthropic text is the text content blocks, joined."""
        body = dumps({"content": [{"type": "text", "text": "a"},
                                  {"type": "tool_use", "input": {}},
                                  {"type": "text", "text": "b"}]})
        assert text_from_body("anthropic", body) == "ab"

    @pytest.mark.parametrize("body", [b"", b"nope", b'{"choices": 3}', b'{"content": {"x": 1}}',
                                      b'{"choices": [{"message": {"content": 5}}]}'])
    def test_unexpected_is_empty(self, body: bytes) -> None:
        """Anything unexpected gives the empty string."""
        assert text_from_body("openai", body) == ""
        assert text_from_body("anthropic", body) == ""


class TestWithStreamUsage:
    def test_injects_include_usage(self) -> None:
        """An OpenAI stream without include_usage gets it, other fields untouched."""
        req = openai_request(stream=True, temperature=0.5, stream_options={"other": 1},
                             messages=[{"role": "user", "content": "héllo"}])
        result = with_stream_usage(req)
        assert result is not None
        body, injected = result
        assert injected is True
        parsed = json.loads(body)
        assert parsed["stream_options"] == {"other": 1, "include_usage": True}
        assert {k: v for k, v in parsed.items() if k != "stream_options"} == {
            k: v for k, v in req.body.items() if k != "stream_options"}

    @pytest.mark.parametrize("options", [None, "yes", [], {"include_usage": False},
                                         {"include_usage": "true"}])
    def test_replaces_anything_but_true(self, options: object) -> None:
        """Any stream_options without include_usage == true is fixed."""
        result = with_stream_usage(openai_request(stream=True, stream_options=options))
        assert result is not None
        assert json.loads(result[0])["stream_options"]["include_usage"] is True

    def test_already_asked(self) -> None:
        """A stream that already asks for usage is left alone."""
        req = openai_request(stream=True, stream_options={"include_usage": True})
        assert with_stream_usage(req) is None

    def test_not_streaming_or_anthropic(self) -> None:
        """Non-streaming requests and Anthropic requests are left alone."""
        assert with_stream_usage(openai_request(stream=False)) is None
        anthropic = parse_request("anthropic", b'{"model": "m", "stream": true, "max_tokens": 1}')
        assert with_stream_usage(anthropic) is None

    def test_lone_surrogate_still_valid_json(self) -> None:
        """A body holding an escaped lone surrogate is re-encoded as valid ASCII JSON."""
        req = parse_request("openai", b'{"stream": true, "messages": "\\ud800"}')
        result = with_stream_usage(req)
        assert result is not None
        assert json.loads(result[0])["messages"] == "\ud800"
