"""An incremental server-sent-events reader that lets the bytes pass through.

:class:`StreamMeter` watches a response stream go by, chunk by chunk, and keeps what the
ledger needs from it: the usage, the completion text, whether the stream ended properly,
whether the server reported an error, and whether anything was unreadable.

Framing follows the WHATWG SSE rules: lines end with ``\\n``, ``\\r\\n`` or ``\\r``; a blank
line ends an event; ``:`` lines are comments; several ``data:`` lines join with ``\\n``; one
leading space after the colon is dropped; a UTF-8 BOM at the start is ignored. Lines are split
on bytes (CR and LF never occur inside a multi-byte UTF-8 character) and decoded with
``errors="replace"`` only once complete, so chunk boundaries may fall anywhere: inside a
character, inside a ``\\r\\n``, inside an event. At the end of the stream an unterminated last
event is still read (leniency towards servers that close right after ``data: [DONE]``).

Memory is bounded: at most one event is buffered, up to ``max_event_bytes`` (1 MiB); a longer
event is skipped (and, when holding bytes back, released unread) and the stream is marked
``garbled``. At most ``max_text_chars`` (4 Mi characters) of text are kept; the rest is only
counted in ``extra_text_chars``.

``feed`` and ``finish`` never raise. A meter serves one stream; its methods take a lock, so
``finish`` may come from another thread than ``feed`` (e.g. a close from a cleanup thread).
"""

from __future__ import annotations

import re
import threading

from .errors import InvalidInput
from .shapes import SHAPES, Shape, StreamEvent, Usage, read_stream_event, usage_from_fields

__all__ = ["MAX_EVENT_BYTES", "MAX_TEXT_CHARS", "StreamMeter"]

MAX_EVENT_BYTES = 1 << 20
MAX_TEXT_CHARS = 4 << 20

_EOL = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"
_CR = 0x0D
_LF = 0x0A


class StreamMeter:
    """Meter one response stream while passing its bytes on.

    With ``drop_usage_chunk=False`` :meth:`feed` returns each chunk itself, unchanged and at
    once (zero-copy), and parses it on the side. With ``drop_usage_chunk=True`` (an OpenAI
    stream whose usage the ledger asked for, see :func:`ledger.shapes.with_stream_usage`) it
    returns whole events as they complete, except the usage-only chunk, which the caller never
    asked for and never sees; bytes of an incomplete event are held back until it completes,
    and :meth:`finish` releases whatever is still held.
    """

    def __init__(
        self,
        shape: Shape,
        *,
        drop_usage_chunk: bool = False,
        max_event_bytes: int = MAX_EVENT_BYTES,
        max_text_chars: int = MAX_TEXT_CHARS,
    ) -> None:
        if shape not in SHAPES:
            raise InvalidInput(f"unknown API shape {shape!r}: expected one of {', '.join(SHAPES)}")
        if max_event_bytes < 1 or max_text_chars < 0:
            raise InvalidInput("max_event_bytes must be positive and max_text_chars not negative")
        self._shape: Shape = shape
        self._drop = drop_usage_chunk
        self._max_event = max_event_bytes
        self._max_text = max_text_chars
        self._lock = threading.Lock()
        # framing state
        self._line = bytearray()      # the incomplete line (one marker byte while skipping)
        self._first_line = True       # a BOM may start the first line
        self._after_cr = False        # the last byte seen was a CR ending a line
        self._cr_closed = False       # ... and that line was the blank one closing an event
        self._last_dropped = False    # the last event closed was the dropped usage chunk
        self._event_type = ""
        self._data: list[str] = []
        self._event_bytes = 0         # bytes of the complete lines of the current event
        self._skipping = False        # the current event was too long: ignore it to its end
        self._hold = bytearray()      # drop mode: bytes received and not yet released
        self._finished = False
        self._broken = False          # an internal error: pass everything through from now on
        # what the stream said
        self._fields: dict[str, int] = {}
        self._usage: Usage | None = None
        self._parts: list[str] = []
        self._loose = 0  # parts appended since the last compaction
        self._text_chars = 0
        self._extra_text = 0
        self._text: str | None = ""
        self._done = False
        self._error: str | None = None
        self._garbled = False

    # -- results -------------------------------------------------------------------------------
    @property
    def shape(self) -> Shape:
        """The API shape of the stream."""
        return self._shape

    @property
    def usage(self) -> Usage | None:
        """The latest valid usage the stream reported, or ``None``."""
        return self._usage

    @property
    def text(self) -> str:
        """The completion text seen so far (at most ``max_text_chars`` characters)."""
        with self._lock:
            if self._text is None:
                self._text = "".join(self._parts)
                self._parts = [self._text] if self._text else []
                self._loose = 0
            return self._text

    @property
    def extra_text_chars(self) -> int:
        """Characters of completion text seen beyond ``max_text_chars`` (not stored)."""
        return self._extra_text

    @property
    def done(self) -> bool:
        """A proper end was seen (OpenAI ``data: [DONE]``; Anthropic ``message_stop``)."""
        return self._done

    @property
    def error(self) -> str | None:
        """The message of the first error event the server sent, or ``None``."""
        return self._error

    @property
    def garbled(self) -> bool:
        """Some event could not be read (bad JSON, too long, or an internal error)."""
        return self._garbled

    # -- feeding -------------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> bytes:
        """Take the next chunk of the body; return the bytes to hand to the caller now."""
        if not chunk:
            return chunk
        with self._lock:
            if self._broken:
                return chunk
            if not self._drop:
                try:
                    self._scan(chunk)
                except Exception:  # never let a parsing bug break the caller's stream
                    self._break()
                return chunk
            base = len(self._hold)
            self._hold += chunk
            try:
                ends = self._scan(chunk)
                return self._release(base, chunk, ends)
            except Exception:
                self._break()
                released = bytes(self._hold)
                self._hold.clear()
                return released

    def finish(self) -> bytes:
        """The stream ended: read a trailing unterminated event and release anything held."""
        with self._lock:
            if self._finished:
                return b""
            self._finished = True
            if not self._broken:
                try:
                    if self._line and not self._skipping:
                        line = bytes(self._line)
                        self._line.clear()
                        self._take_line(self._strip_bom(line))
                    if not self._skipping:
                        self._close_event(droppable=False)
                except Exception:
                    self._break()
            released = bytes(self._hold)
            self._hold.clear()
            return released

    # -- internals -----------------------------------------------------------------------------
    def _break(self) -> None:
        self._broken = True
        self._garbled = True

    def _release(self, base: int, chunk: bytes, ends: list[tuple[int, bool]]) -> bytes:
        """Cut the held bytes at the events that ended in this chunk; drop the usage chunk."""
        hold = self._hold
        if (
            base == 0
            and ends
            and ends[-1][0] == len(chunk)
            and not any(dropped for _, dropped in ends)
        ):
            hold.clear()
            return chunk  # the common case: the chunk is whole events
        out = bytearray()
        start = 0
        for offset, dropped in ends:
            end = base + offset
            if not dropped:
                out += hold[start:end]
            start = end
        if self._skipping:  # an over-long event is released as it comes, unread
            out += hold[start:]
            start = len(hold)
        del hold[:start]
        return bytes(out)

    def _scan(self, chunk: bytes) -> list[tuple[int, bool]]:
        """Parse a chunk; return ``(offset just past the event, drop it?)`` per event closed."""
        ends: list[tuple[int, bool]] = []
        size = len(chunk)
        pos = 0
        if self._after_cr:
            self._after_cr = False
            if chunk[0] == _LF:  # the LF of a CRLF split across chunks
                pos = 1
                if self._cr_closed:  # it belongs to the event already closed
                    ends.append((1, self._last_dropped))
        for match in _EOL.finditer(chunk, pos):
            start, end = match.span()
            if self._skipping:
                blank = start == pos and not self._line
                self._line.clear()
                self._first_line = False
            else:
                line = bytes(self._line) + chunk[pos:start] if self._line else chunk[pos:start]
                self._line.clear()
                line = self._strip_bom(line)
                blank = not line
                if not blank:
                    self._event_bytes += len(line) + end - start
                    if self._event_bytes > self._max_event:
                        self._skip()
                    else:
                        self._take_line(line)
            if blank:
                dropped = self._close_event(droppable=True)
                self._last_dropped = dropped
                ends.append((end, dropped))
            self._after_cr = self._cr_closed = False
            if end == size and chunk[end - 1] == _CR:
                self._after_cr = True
                self._cr_closed = blank
            pos = end
        if pos < size:
            if self._skipping:
                if not self._line:
                    self._line.append(chunk[pos])  # only "this line is not blank" matters
            else:
                self._line += chunk[pos:]
                if self._event_bytes + len(self._line) > self._max_event:
                    self._skip()
        return ends

    def _strip_bom(self, line: bytes) -> bytes:
        if self._first_line:
            self._first_line = False
            if line.startswith(_BOM):
                return line[len(_BOM):]
        return line

    def _skip(self) -> None:
        """The current event is too long: forget it and ignore the rest of it."""
        self._garbled = True
        self._skipping = True
        self._data.clear()
        self._event_type = ""
        if self._line:
            del self._line[1:]

    def _take_line(self, raw: bytes) -> None:
        """One complete, non-blank line of the current event."""
        line = raw.decode("utf-8", "replace")
        if line.startswith(":"):
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event_type = value

    def _close_event(self, *, droppable: bool) -> bool:
        """A blank line: read the event; return whether its bytes are to be dropped."""
        dropped = False
        if self._skipping:
            self._skipping = False
            self._line.clear()
        elif self._data:
            event = read_stream_event(self._shape, self._event_type, "\n".join(self._data))
            self._apply(event)
            dropped = droppable and self._drop and event.usage_only
        self._data.clear()
        self._event_type = ""
        self._event_bytes = 0
        return dropped

    def _apply(self, event: StreamEvent) -> None:
        if event.garbled:
            self._garbled = True
        if event.text:
            self._add_text(event.text)
        if event.usage_fields is not None:
            self._fields = {**self._fields, **event.usage_fields}
            usage = usage_from_fields(self._shape, self._fields)
            if usage is not None:
                self._usage = usage
        if event.done:
            self._done = True
        if event.error is not None and self._error is None:
            self._error = event.error

    def _add_text(self, text: str) -> None:
        room = self._max_text - self._text_chars
        if room <= 0:
            self._extra_text += len(text)
            return
        if len(text) > room:
            self._extra_text += len(text) - room
            text = text[:room]
        self._parts.append(text)
        self._text_chars += len(text)
        self._text = None
        self._loose += 1
        if self._loose >= 512:  # many tiny deltas: keep one string per 512, not 512 objects
            self._parts[-512:] = ["".join(self._parts[-512:])]
            self._loose = 0
