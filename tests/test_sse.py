"""The incremental SSE reader: pass-through, framing, usage/text/done/error, and dropping."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import InvalidInput
from ledger.shapes import Shape, Usage
from ledger.sse import StreamMeter

EOLS = (b"\n", b"\r\n", b"\r")
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)


def data_event(obj: Any, eol: bytes = b"\n", event: str | None = None) -> bytes:
    """One SSE event: an optional ``event:`` line, a ``data:`` line of JSON, a blank line."""
    head = b"event: " + event.encode() + eol if event else b""
    return head + b"data: " + json.dumps(obj, ensure_ascii=False).encode() + eol + eol


def openai_chunk(text: str) -> dict[str, Any]:
    """A chat.completion.chunk carrying ``text``."""
    return {"id": "c1", "object": "chat.completion.chunk", "usage": None,
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


def openai_usage_chunk(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    """The usage-only chunk: no choices, a usage object."""
    return {"id": "c1", "object": "chat.completion.chunk", "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion,
                      "prompt_tokens_details": {"cached_tokens": cached}}}


@dataclass
class Stream:
    """A generated stream: its events' bytes, what it says, and which event is usage-only."""

    events: list[bytes]
    text: str
    usage: Usage | None
    usage_index: int | None = None

    @property
    def raw(self) -> bytes:
        """All the bytes of the stream."""
        return b"".join(self.events)

    @property
    def without_usage(self) -> bytes:
        """The bytes minus exactly the usage-only event."""
        return b"".join(e for i, e in enumerate(self.events) if i != self.usage_index)


def multiline_event(obj: dict[str, Any], eol: bytes) -> bytes:
    """An event whose JSON is split over two ``data:`` lines, after a comment and an id."""
    head, tail = b'{"id": "c1",', json.dumps(obj, ensure_ascii=False).encode()[1:]
    return (b": keep-alive" + eol + b"id: 7" + eol + b"data: " + head + eol
            + b"data:" + tail + eol + eol)


def openai_stream(pieces: list[str], usage: tuple[int, int, int] | None,
                  eols: list[bytes] | None = None) -> Stream:
    """An OpenAI stream of ``pieces``, then the usage-only chunk (if any), then [DONE].

    Odd-numbered text chunks are written as multi-line events with a comment and an id.
    """
    eols = eols or [b"\n"]
    events = [(multiline_event if i % 2 else data_event)(openai_chunk(p), eols[i % len(eols)])
              for i, p in enumerate(pieces)]
    usage_index = None
    if usage is not None:
        usage_index = len(events)
        events.append(data_event(openai_usage_chunk(*usage), eols[-1]))
    events.append(b"data: [DONE]" + eols[0] + eols[0])
    return Stream(events, "".join(pieces), Usage(*usage) if usage else None, usage_index)


def anthropic_stream(pieces: list[str], input_tokens: int, cache_read: int, cache_write: int,
                     outputs: list[int], eols: list[bytes] | None = None) -> Stream:
    """An Anthropic stream: message_start, text deltas, message_delta(s), message_stop."""
    eols = eols or [b"\n"]

    def ev(i: int, name: str, obj: dict[str, Any]) -> bytes:
        return data_event({"type": name, **obj}, eols[i % len(eols)], event=name)

    events = [ev(0, "message_start", {"message": {
        "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "m",
        "usage": {"input_tokens": input_tokens, "output_tokens": 1,
                  "cache_read_input_tokens": cache_read,
                  "cache_creation_input_tokens": cache_write}}}),
        ev(1, "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ev(2, "ping", {})]
    for i, piece in enumerate(pieces):
        events.append(ev(i, "content_block_delta",
                         {"index": 0, "delta": {"type": "text_delta", "text": piece}}))
    events.append(ev(3, "content_block_stop", {"index": 0}))
    for i, out in enumerate(outputs):
        events.append(ev(i, "message_delta", {"delta": {"stop_reason": "end_turn"},
                                              "usage": {"output_tokens": out}}))
    events.append(ev(4, "message_stop", {}))
    prompt = input_tokens + cache_read + cache_write
    usage = Usage(prompt, outputs[-1] if outputs else 1, cache_read)
    return Stream(events, "".join(pieces), usage)


def run(meter: StreamMeter, chunks: list[bytes]) -> bytes:
    """Feed every chunk, finish, and return everything the meter handed on."""
    out = b"".join(meter.feed(c) for c in chunks)
    return out + meter.finish()


def split(raw: bytes, cuts: list[int]) -> list[bytes]:
    """``raw`` cut at the given offsets."""
    points = sorted({0, len(raw), *(c % (len(raw) + 1) for c in cuts)})
    return [raw[a:b] for a, b in itertools.pairwise(points)]


def summary(meter: StreamMeter) -> tuple[Any, ...]:
    """Everything the meter concluded, for comparisons."""
    return (meter.usage, meter.text, meter.extra_text_chars, meter.done, meter.error,
            meter.garbled)


def bytewise(raw: bytes) -> list[bytes]:
    """One chunk per byte."""
    return [raw[i:i + 1] for i in range(len(raw))]


class TestPassThrough:
    def test_chunks_returned_unchanged_and_uncopied(self) -> None:
        """Without dropping, feed returns the very chunk object it was given."""
        meter = StreamMeter("openai")
        raw = openai_stream(["a", "b"], (3, 2, 0)).raw
        for chunk in (raw[:7], raw[7:], b""):
            assert meter.feed(chunk) is chunk
        assert meter.finish() == b""

    def test_non_utf8_bytes_pass_untouched(self) -> None:
        """Invalid UTF-8 passes through as is; the text gets replacement characters."""
        raw = b'data: {"choices":[{"delta":{"content":"a\xff\xfeb"}}]}\n\ndata: [DONE]\n\n'
        meter = StreamMeter("openai")
        assert run(meter, bytewise(raw)) == raw
        assert meter.text == "a\ufffd\ufffdb" and meter.done and not meter.garbled

    def test_empty_chunks_are_harmless(self) -> None:
        """Empty chunks, even between the CR and LF of a CRLF, change nothing."""
        raw = openai_stream(["x"], None, [b"\r\n"]).raw
        chunks: list[bytes] = []
        for piece in bytewise(raw):
            chunks += [piece, b""]
        for drop in (False, True):
            meter = StreamMeter("openai", drop_usage_chunk=drop)
            assert run(meter, chunks) == raw
            assert (meter.text, meter.done) == ("x", True)

    def test_finish_is_idempotent(self) -> None:
        """A second finish releases nothing more."""
        meter = StreamMeter("openai", drop_usage_chunk=True)
        assert meter.feed(b"data: {") == b""
        assert meter.finish() == b"data: {"
        assert meter.finish() == b""

    def test_bad_arguments(self) -> None:
        """An unknown shape or a nonsensical limit is refused at construction."""
        with pytest.raises(InvalidInput):
            StreamMeter("gemini")  # type: ignore[arg-type]
        with pytest.raises(InvalidInput):
            StreamMeter("openai", max_event_bytes=0)


class TestOpenAI:
    def test_text_usage_done(self) -> None:
        """Text deltas, the usage chunk and [DONE] are all read."""
        stream = openai_stream(["Hel", "lo"], (10, 2, 4))
        meter = StreamMeter("openai")
        run(meter, [stream.raw])
        assert summary(meter) == (Usage(10, 2, 4), "Hello", 0, True, None, False)

    def test_no_usage_no_done(self) -> None:
        """A stream cut short has no usage and is not done."""
        meter = StreamMeter("openai")
        run(meter, [data_event(openai_chunk("partial"))])
        assert (meter.usage, meter.text, meter.done) == (None, "partial", False)

    def test_latest_valid_usage_wins(self) -> None:
        """A later valid usage replaces an earlier one; an invalid one is ignored."""
        bad = openai_usage_chunk(1, 1)
        bad["usage"]["completion_tokens"] = -5
        meter = StreamMeter("openai")
        run(meter, [data_event(openai_usage_chunk(5, 1)), data_event(openai_usage_chunk(7, 3)),
                    data_event(bad)])
        assert meter.usage == Usage(7, 3)

    def test_error_chunk(self) -> None:
        """A data chunk with a top-level error reports its message."""
        meter = StreamMeter("openai")
        run(meter, [data_event(openai_chunk("a")),
                    data_event({"error": {"message": "overloaded", "type": "server_error"}})])
        assert meter.error == "overloaded" and not meter.done

    def test_bad_json_is_garbled(self) -> None:
        """An unparseable event marks the stream garbled; later events still count."""
        meter = StreamMeter("openai")
        run(meter, [b"data: {nope\n\n", data_event(openai_chunk("ok")), b"data: [DONE]\n\n"])
        assert (meter.garbled, meter.text, meter.done) == (True, "ok", True)

    def test_done_without_trailing_blank_line(self) -> None:
        """A server closing right after 'data: [DONE]' still ends the stream properly."""
        meter = StreamMeter("openai")
        run(meter, [data_event(openai_chunk("a")), b"data: [DONE]"])
        assert meter.done


class TestAnthropic:
    def test_text_usage_done(self) -> None:
        """Input and cache counts come from message_start, output from the last message_delta."""
        stream = anthropic_stream(["Hi", " there"], 20, 100, 30, [5, 9])
        meter = StreamMeter("anthropic")
        run(meter, [stream.raw])
        assert summary(meter) == (Usage(150, 9, 100), "Hi there", 0, True, None, False)

    def test_message_delta_input_counts(self) -> None:
        """Input counts repeated in message_delta (newer APIs) are taken; nulls are ignored."""
        meter = StreamMeter("anthropic")
        run(meter, [
            data_event({"type": "message_start", "message": {"usage": {
                "input_tokens": 10, "output_tokens": 1}}}, event="message_start"),
            data_event({"type": "message_delta", "usage": {
                "input_tokens": 12, "cache_read_input_tokens": None,
                "cache_creation_input_tokens": 3, "output_tokens": 40}}, event="message_delta"),
        ])
        assert meter.usage == Usage(15, 40, 0)
        assert not meter.done

    @pytest.mark.parametrize("raw", [
        b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", '
        b'"message": "Overloaded"}}\n\n',
        b'data: {"type": "error", "error": {"message": "Overloaded"}}\n\n',
        b"event: error\ndata: Overloaded\n\n",
    ])
    def test_error_event(self, raw: bytes) -> None:
        """An error event (by name or by data type) reports its message."""
        meter = StreamMeter("anthropic")
        run(meter, [raw])
        assert meter.error == "Overloaded"

    def test_first_error_is_kept(self) -> None:
        """After several errors, the first one's message is reported."""
        meter = StreamMeter("anthropic")
        run(meter, [b"event: error\ndata: first\n\n", b"event: error\ndata: second\n\n"])
        assert meter.error == "first"


class TestFraming:
    @pytest.mark.parametrize("eol", EOLS)
    def test_line_endings(self, eol: bytes) -> None:
        """LF, CRLF and CR line endings read the same, even fed byte by byte."""
        stream = anthropic_stream(["a", "b"], 1, 2, 3, [4], [eol])
        meter = StreamMeter("anthropic")
        assert run(meter, bytewise(stream.raw)) == stream.raw
        assert summary(meter) == (stream.usage, "ab", 0, True, None, False)

    def test_comments_multiline_data_and_bom(self) -> None:
        """Comments are skipped, data lines join with LF, a leading BOM and 'data:x' work."""
        raw = (b"\xef\xbb\xbf: hello\n"
               b'data:{"choices":\ndata: [{"delta": {"content": "x"}}]}\n'
               b": another comment\n\n"
               b"id: 5\nretry: 10\ndata: [DONE]\n\n")
        meter = StreamMeter("openai")
        run(meter, bytewise(raw))
        assert (meter.text, meter.done, meter.garbled) == ("x", True, False)

    def test_multibyte_character_split(self) -> None:
        """A character split across chunks decodes whole."""
        raw = data_event(openai_chunk("日本語 😀"))
        for cut in range(len(raw)):
            meter = StreamMeter("openai")
            run(meter, [raw[:cut], raw[cut:]])
            assert meter.text == "日本語 😀" and not meter.garbled

    def test_overlong_event_is_skipped(self) -> None:
        """An event beyond the size cap is dropped unread and marks the stream garbled."""
        big = data_event(openai_chunk("x" * 5000))
        rest = data_event(openai_chunk("ok")) + b"data: [DONE]\n\n"
        for drop in (False, True):
            meter = StreamMeter("openai", max_event_bytes=1000, drop_usage_chunk=drop)
            out = b"".join(meter.feed(c) for c in split(big + rest, list(range(0, 8000, 300))))
            assert out + meter.finish() == big + rest
            assert (meter.text, meter.done, meter.garbled) == ("ok", True, True)

    def test_overlong_event_not_held_back(self) -> None:
        """When dropping, the bytes of an over-long event are released as they come."""
        meter = StreamMeter("openai", max_event_bytes=100, drop_usage_chunk=True)
        first = meter.feed(b"data: " + b"y" * 200)
        assert first == b"data: " + b"y" * 200
        assert meter.feed(b"y" * 50) == b"y" * 50

    def test_text_cap(self) -> None:
        """Text beyond the cap is counted, not stored."""
        meter = StreamMeter("openai", max_text_chars=5)
        run(meter, [data_event(openai_chunk("abc")), data_event(openai_chunk("defg")),
                    data_event(openai_chunk("hi"))])
        assert (meter.text, meter.extra_text_chars) == ("abcde", 4)


class TestEverySplit:
    @pytest.mark.parametrize("eol", EOLS)
    def test_openai_every_cut(self, eol: bytes) -> None:
        """Cut anywhere (inside CRLF, a character, a line): same reading, exact bytes."""
        stream = openai_stream(["a", "é, \"b\"", "😀"], (12, 3, 2), [eol])
        for cut in range(len(stream.raw) + 1):
            for drop in (False, True):
                meter = StreamMeter("openai", drop_usage_chunk=drop)
                out = run(meter, [stream.raw[:cut], stream.raw[cut:]])
                assert out == (stream.without_usage if drop else stream.raw), (cut, drop)
                assert summary(meter) == (Usage(12, 3, 2), "aé, \"b\"😀", 0, True, None, False)

    @pytest.mark.parametrize("eol", EOLS)
    def test_anthropic_error_every_cut(self, eol: bytes) -> None:
        """An 'event: error' line split anywhere still names the next data as an error."""
        raw = b"event: error" + eol + b"data: Overloaded" + eol + eol
        for cut in range(len(raw) + 1):
            meter = StreamMeter("anthropic")
            assert run(meter, [raw[:cut], raw[cut:]]) == raw
            assert (meter.error, meter.garbled) == ("Overloaded", False), cut


class TestDropUsageChunk:
    def test_usage_chunk_is_swallowed(self) -> None:
        """The usage-only chunk is read but not handed on; everything else is."""
        stream = openai_stream(["a", "b"], (9, 2, 0), [b"\r\n"])
        meter = StreamMeter("openai", drop_usage_chunk=True)
        assert run(meter, [stream.raw]) == stream.without_usage
        assert (meter.usage, meter.text, meter.done) == (Usage(9, 2), "ab", True)

    def test_partial_event_is_held(self) -> None:
        """Bytes of an incomplete event are held until its blank line arrives."""
        meter = StreamMeter("openai", drop_usage_chunk=True)
        event = data_event(openai_chunk("a"))
        assert meter.feed(event[:10]) == b""
        assert meter.feed(event[10:]) == event

    def test_unterminated_trailing_usage_is_released(self) -> None:
        """An unterminated last event is read at finish but released, not dropped."""
        tail = data_event(openai_usage_chunk(3, 4)).rstrip(b"\n")
        meter = StreamMeter("openai", drop_usage_chunk=True)
        assert run(meter, [tail]) == tail
        assert meter.usage == Usage(3, 4)

    def test_null_usage_chunks_are_not_dropped(self) -> None:
        """Chunks with choices and "usage": null pass; so does a choices-less chunk without usage."""
        raw = data_event(openai_chunk("a")) + data_event({"choices": [], "usage": None})
        meter = StreamMeter("openai", drop_usage_chunk=True)
        assert run(meter, [raw]) == raw


# -- properties ---------------------------------------------------------------------------------

SSE_BITS = st.sampled_from([
    b"data: ", b"data:", b"event: error", b"event: message_stop", b":", b"\n", b"\r", b"\r\n",
    b"{", b"}", b"[DONE]", b'"usage"', b'{"choices":[],"usage":{"prompt_tokens":1,'
    b'"completion_tokens":2}}', b'{"type":"message_stop"}', b"\xef\xbb\xbf", b"\xff", b"\xe6\x97",
    b"\xa5", b" ",
])
NOISE = st.one_of(
    st.lists(st.binary(max_size=40), max_size=12),
    st.lists(SSE_BITS, max_size=40).map(lambda bits: [b"".join(bits)]),
)
SHAPES = st.sampled_from(["openai", "anthropic"])


@st.composite
def openai_streams(draw: st.DrawFn) -> Stream:
    """Valid OpenAI streams, with mixed line endings and possibly a usage chunk."""
    pieces = draw(st.lists(TEXT, max_size=6))
    usage = draw(st.none() | st.tuples(st.integers(1, 10**6), st.integers(0, 10**6)).map(
        lambda pc: (pc[0], pc[1], pc[0] // 2)))
    eols = draw(st.lists(st.sampled_from(EOLS), min_size=1, max_size=4))
    return openai_stream(pieces, usage, eols)


@st.composite
def anthropic_streams(draw: st.DrawFn) -> Stream:
    """Valid Anthropic streams with mixed line endings."""
    pieces = draw(st.lists(TEXT, max_size=6))
    counts = draw(st.lists(st.integers(0, 10**6), min_size=3, max_size=3).filter(any))
    outputs = draw(st.lists(st.integers(1, 10**6), min_size=1, max_size=3))
    eols = draw(st.lists(st.sampled_from(EOLS), min_size=1, max_size=4))
    return anthropic_stream(pieces, counts[0], counts[1], counts[2], outputs, eols)


class TestProperties:
    @settings(max_examples=200, deadline=None)
    @given(SHAPES, NOISE, st.lists(st.integers(0, 10**4), max_size=10), st.booleans())
    def test_arbitrary_bytes(self, shape: Shape, chunks: list[bytes], cuts: list[int],
                             drop: bool) -> None:
        """Any bytes, any chunking: no exception, and the same outcome as one big chunk."""
        raw = b"".join(chunks)
        whole = StreamMeter(shape, drop_usage_chunk=drop)
        whole_out = run(whole, [raw])
        meter = StreamMeter(shape, drop_usage_chunk=drop)
        out = run(meter, split(raw, cuts))
        assert out == whole_out
        assert summary(meter) == summary(whole)
        if drop:
            assert len(out) <= len(raw)
        else:
            assert out == raw
        if meter.usage is not None:
            assert 0 <= meter.usage.cached_tokens <= meter.usage.prompt_tokens

    @settings(max_examples=200, deadline=None)
    @given(openai_streams(), st.data())
    def test_openai_any_split(self, stream: Stream, data: st.DataObject) -> None:
        """A valid OpenAI stream reads the same however it is split; bytes are exact."""
        cuts = data.draw(st.lists(st.integers(0, len(stream.raw)), max_size=12))
        for drop in (False, True):
            meter = StreamMeter("openai", drop_usage_chunk=drop)
            out = run(meter, split(stream.raw, cuts))
            assert out == (stream.without_usage if drop else stream.raw)
            assert summary(meter) == (stream.usage, stream.text, 0, True, None, False)

    @settings(max_examples=200, deadline=None)
    @given(anthropic_streams(), st.data())
    def test_anthropic_any_split(self, stream: Stream, data: st.DataObject) -> None:
        """A valid Anthropic stream reads the same however it is split; bytes pass untouched."""
        cuts = data.draw(st.lists(st.integers(0, len(stream.raw)), max_size=12))
        meter = StreamMeter("anthropic")
        assert run(meter, split(stream.raw, cuts)) == stream.raw
        assert summary(meter) == (stream.usage, stream.text, 0, True, None, False)
