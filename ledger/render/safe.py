"""What reaches a terminal carries no control characters of anyone else's making.

Project and model names, error texts and file names come from callers and servers. Printed
raw, ``\\x1b]52;c;...\\x07`` writes the reader's clipboard (OSC 52), ``\\x1b]8;;URL\\x07``
plants a link (OSC 8), ``\\x1b]0;...\\x07`` retitles the window, CSI sequences (``\\x1b[``, or
the one-character C1 form ``\\x9b``) move the cursor, clear the screen or repaint earlier
lines, a CR overwrites the line, and bidirectional overrides (U+202E...) make text read
differently from what it is. This module is the one place that neutralises them:

* :func:`terminal_text` for messages (``click.echo``, errors, notes): every such character
  becomes a visible escape (``\\x1b``, ``\\u202e``), so the reader sees that it was there;
  line feeds and tabs are kept.
* :class:`SafeConsole`, the rich console behind every table: the same characters are removed
  from the text rich prints (rich measures them as zero cells wide, so columns stay aligned);
  rich's own colours and styles are untouched.

JSON is exact (its encoder escapes control characters itself) and CSV is exact except for
spreadsheet formulas (:func:`ledger.render.csv.safe_text`): neither goes through here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment

__all__ = ["UNSAFE", "SafeConsole", "strip_controls", "terminal_text"]

#: C0 controls but tab and line feed, DEL, C1 controls (``\x9b`` is CSI on its own, ``\x9d``
#: OSC), bidirectional embeddings, overrides, isolates and marks, and the Unicode line and
#: paragraph separators.
UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

#: What a table cell may not hold either: tabs and line feeds inside text (rich's own line
#: breaks are separate segments and pass).
_UNSAFE_IN_CELL = re.compile(f"[\t{UNSAFE.pattern[1:-1]}]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_text(text: str) -> str:
    """``text`` with every terminal control character shown as an escape (``\\x1b``)."""
    return UNSAFE.sub(_escape, text)


def strip_controls(text: str) -> str:
    """``text`` without terminal control characters (tabs included; line feeds kept)."""
    return _UNSAFE_IN_CELL.sub("", text)


class SafeConsole(Console):
    """A rich console that never prints a control character that came with the data."""

    def render(self, renderable: RenderableType,
               options: ConsoleOptions | None = None) -> Iterable[Segment]:
        return _clean(super().render(renderable, options))


def _clean(segments: Iterable[Segment]) -> Iterator[Segment]:
    for segment in segments:
        text = segment.text
        if segment.control is None and _UNSAFE_IN_CELL.search(text):
            yield Segment(strip_controls(text), segment.style, segment.control)
        else:
            yield segment
