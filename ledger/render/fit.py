"""Terminal tables that fit the width they are given, whatever it is (80 columns too).

* Money, counts and dates are *kept*: never wrapped, never cut with "…" (rich's ``no_wrap``
  and a minimum width of their longest cell or header).
* Names (projects, models, errors) *fold*: they wrap at spaces, or inside a long word, and
  are never cut.
* When the kept columns and a few characters of every name cannot fit side by side, the
  table becomes a stacked list: one block per row, one ``label  value`` line per column.
* One precision per money column (``money_column``): every amount of a column shows as many
  decimals as the most precise one needs (trailing zeros, never rounding).
* An empty table says so (``empty``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from rich import box
from rich.console import Console, ConsoleOptions, RenderableType
from rich.table import Table
from rich.text import Text

from ..money import in_money_context

__all__ = ["Col", "Fitted", "money_column"]

NAME_MIN = 8  # a folded name keeps at least this many characters per line


@dataclass(frozen=True)
class Col:
    name: str
    right: bool = False
    keep: bool = False            # money, counts, dates: never wrapped or cut
    min: int = NAME_MIN           # a folding column's narrowest width


@dataclass
class Fitted:
    """A rich renderable: the table if it fits ``options.max_width``, else stacked."""

    cols: Sequence[Col]
    rows: list[list[Text]]
    footer: list[Text] | None = None
    title: str | None = None
    empty: str = "Nothing to show."
    note: Text | None = None
    _widths: list[int] = field(default_factory=list)

    def _widest(self) -> list[int]:
        return [max([len(col.name), *(r[i].cell_len for r in self._all())])
                for i, col in enumerate(self.cols)]

    def needed(self) -> int:
        """The narrowest the table can be with nothing kept wrapped and names folded."""
        return len(self.cols) - 1 + sum(  # the box's one-space divider between columns
            w if col.keep else min(w, col.min) for col, w in zip(self.cols, self._widest(),
                                                                 strict=True))

    def widths(self, max_width: int) -> list[int]:
        """Every column's width: kept ones their widest cell; folding ones at least their
        minimum, then the space left shared out one character at a time, first to the
        columns closest to whole (a short model name unbroken before a long project name
        gets more), so the layout is ours and rich never cuts a cell."""
        widest = self._widest()
        out = [w if col.keep else min(w, col.min) for col, w in zip(self.cols, widest,
                                                                    strict=True)]
        spare = max_width - self.needed()
        while spare > 0:
            short = [(widest[i] - out[i], i) for i, col in enumerate(self.cols)
                     if not col.keep and out[i] < widest[i]]
            if not short:
                break
            out[min(short)[1]] += 1
            spare -= 1
        return out

    def _all(self) -> Iterator[list[Text]]:
        yield from self.rows
        if self.footer is not None:
            yield self.footer

    def __rich_console__(self, console: Console, options: ConsoleOptions
                         ) -> Iterator[RenderableType]:
        if self.title:
            yield Text(self.title, style="bold")
        if not self.rows:
            yield Text(self.empty)
        elif self.needed() <= options.max_width:
            yield self.table(options.max_width)
        else:
            yield from self.stacked()
        if self.note is not None:
            yield self.note

    def table(self, max_width: int) -> Table:
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0), pad_edge=False,
                      show_footer=self.footer is not None)
        for i, (col, width) in enumerate(zip(self.cols, self.widths(max_width), strict=True)):
            table.add_column(
                col.name, justify="right" if col.right else "left",
                footer=self.footer[i] if self.footer is not None else "",
                no_wrap=col.keep, overflow="fold", width=width)
        for row in self.rows:
            table.add_row(*row)
        return table

    def stacked(self) -> Iterator[RenderableType]:
        """One block per row: its first cell as a heading, then ``label  value`` lines."""
        blocks = [*self.rows, *([self.footer] if self.footer is not None else [])]
        for n, row in enumerate(blocks):
            head = row[0].copy()
            head.stylize("bold")
            yield head
            grid = Table.grid(padding=(0, 2))
            grid.add_column(no_wrap=True, style="dim")
            grid.add_column(overflow="fold")
            for col, cell in zip(self.cols[1:], row[1:], strict=True):
                if cell.plain:
                    value = cell.copy()
                    value.justify = "left"
                    grid.add_row(Text("  " + col.name), value)
            yield grid
            if n < len(blocks) - 1:
                yield Text("")


@in_money_context
def money_column(values: Sequence[Decimal | None], *, dash: str = "-") -> list[Text]:
    """Exact amounts, all with the decimals the most precise one needs (at least cents)."""
    places = 2
    for value in values:
        if value is not None:
            exponent = value.normalize().as_tuple().exponent
            assert isinstance(exponent, int)
            places = max(places, -exponent)
    quantum = Decimal(1).scaleb(-places)
    return [Text(dash if v is None else ("-$" if v < 0 else "$")
                 + format(v.copy_abs().quantize(quantum), "f"), justify="right")
            for v in values]
