"""A real PDF invoice, made with fpdf2.

Fonts: a Unicode TrueType font is embedded (subset) when one is found — ``$LEDGER_PDF_FONT``
(a ``.ttf`` path), else DejaVu Sans, Noto Sans, Liberation Sans or Arial Unicode from the usual
system locations — so any project or model name prints as written. Without one, the PDF uses
the built-in Helvetica and text is reduced to Latin-1 safely: accents are kept where Latin-1
has them, compatible forms are decomposed (NFKD), anything else becomes ``?``. Amounts and
totals are ASCII and always print exactly. The creation date is the invoice's issue time, so
the same invoice renders to the same document.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import TableCellFillMode

from ..invoice import Invoice
from . import dollars

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/local/share/fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial Unicode.ttf",
    "/System/Library/Fonts/Supplemental/Arial Unicode.ttf",
    "C:/Windows/Fonts/arial.ttf",
)
BOLD_NAMES = {"DejaVuSans.ttf": "DejaVuSans-Bold.ttf",
              "NotoSans-Regular.ttf": "NotoSans-Bold.ttf",
              "LiberationSans-Regular.ttf": "LiberationSans-Bold.ttf",
              "arial.ttf": "arialbd.ttf"}


def find_font() -> Path | None:
    """A Unicode TrueType font to embed, or None (then text is reduced to Latin-1)."""
    configured = os.environ.get("LEDGER_PDF_FONT")
    if configured is not None:
        path = Path(configured)
        return path if configured and path.is_file() else None
    for candidate in FONT_CANDIDATES:
        path = Path(candidate)
        if path.is_file():
            return path
    return None


def latin1(text: str) -> str:
    """``text`` reduced to what the built-in PDF fonts can show (Latin-1), never failing."""
    out = []
    for ch in text:
        if ord(ch) < 256 and ch.isprintable():
            out.append(ch)
            continue
        decomposed = unicodedata.normalize("NFKD", ch)
        kept = "".join(c for c in decomposed if ord(c) < 256 and c.isprintable()
                       and not unicodedata.combining(c))
        out.append(kept or "?")
    return "".join(out)


class _Doc(FPDF):
    def __init__(self, font: Path | None) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.unicode = font is not None
        if font is not None:
            bold = font.with_name(BOLD_NAMES.get(font.name, font.name))
            self.add_font("Body", "", str(font))
            self.add_font("Body", "B", str(bold if bold.is_file() else font))
            self.family = "Body"
            self.glyphs = set(getattr(self.fonts.get("body"), "cmap", None) or ())
        else:
            self.family = "Helvetica"
            self.glyphs = set()
        self.set_auto_page_break(auto=True, margin=15)
        self.set_margins(15, 15, 15)

    def text_of(self, value: object) -> str:
        text = "" if value is None else str(value)
        text = "".join(ch if ch.isprintable() else " " for ch in text)
        if not self.unicode:
            return latin1(text)
        if self.glyphs:  # a character the font cannot draw prints as "?", never as nothing
            text = "".join(ch if ord(ch) in self.glyphs or ch == " " else "?" for ch in text)
        return text

    def font(self, size: float, bold: bool = False) -> None:
        self.set_font(self.family, "B" if bold else "", size)

    def footer(self) -> None:
        self.set_y(-12)
        self.font(8)
        self.set_text_color(120)
        self.cell(0, 5, f"Page {self.page_no()}", align="C")
        self.set_text_color(0)


def invoice(inv: Invoice, *, font: Path | bool | None = True) -> bytes:
    """``inv`` as a PDF document (bytes). ``font``: True finds one, a path uses it, None or
    False uses the built-in Helvetica with Latin-1 text."""
    return invoices([inv], font=font)


def invoices(invs: Iterable[Invoice], *, font: Path | bool | None = True) -> bytes:
    """Several invoices in one PDF, one per page."""
    chosen = find_font() if font is True else (None if font is False else font)
    doc = _Doc(chosen)
    doc.set_author("runapi-ledger")
    doc.set_creator("runapi-ledger")
    items = list(invs)
    if items:
        doc.set_title(doc.text_of(f"{items[0].label} {items[0].project} {items[0].month}"))
        doc.set_creation_date(items[0].issued_at)
    for inv in items:
        _page(doc, inv)
    if not items:
        doc.add_page()
        doc.font(11)
        doc.cell(0, 8, "No invoices.")
    return bytes(doc.output())


def _page(doc: _Doc, inv: Invoice) -> None:
    doc.add_page()
    doc.font(18, bold=True)
    doc.cell(0, 10, doc.text_of(("DRAFT invoice" if inv.draft else "Invoice ") +
                                ("" if inv.draft else inv.label)),
             new_x="LMARGIN", new_y="NEXT")
    doc.font(10)
    issued = inv.issued_at.strftime("%Y-%m-%d %H:%M UTC")
    for label, value in (("Project", inv.project), ("Month", inv.month),
                         ("Currency", inv.currency),
                         ("Status", f"draft, not issued ({issued})" if inv.draft
                          else f"issued {issued}")):
        doc.font(10, bold=True)
        doc.cell(25, 6, label)
        doc.font(10)
        doc.multi_cell(0, 6, doc.text_of(value), new_x="LMARGIN", new_y="NEXT")
    doc.ln(4)
    doc.font(9)
    headings = ("Description", "Input /1K", "Output /1K", "Calls", "Tokens in", "Tokens out",
                "Amount")
    with doc.table(col_widths=(46, 22, 22, 14, 24, 24, 28),
                   text_align=("LEFT", "RIGHT", "RIGHT", "RIGHT", "RIGHT", "RIGHT", "RIGHT"),
                   cell_fill_color=245, cell_fill_mode=TableCellFillMode.ROWS,
                   line_height=6) as table:
        heading = table.row()
        for h in headings:
            heading.cell(h)
        for line in inv.lines:
            row = table.row()
            row.cell(doc.text_of(line.description))
            row.cell(dollars(line.input_per_1k))
            row.cell(dollars(line.output_per_1k))
            row.cell(f"{line.calls:,}")
            row.cell(f"{line.prompt_tokens:,}")
            row.cell(f"{line.completion_tokens:,}")
            row.cell(dollars(line.amount))
        if not inv.lines:
            row = table.row()
            row.cell("No usage this month.", colspan=6)
            row.cell("$0.00")
    doc.ln(2)
    doc.font(12, bold=True)
    doc.cell(0, 8, f"Total: {dollars(inv.total)} {inv.currency}", align="R",
             new_x="LMARGIN", new_y="NEXT")
    doc.ln(4)
    doc.font(8)
    doc.set_text_color(90)
    doc.multi_cell(0, 4, "One line per model and unit price. Each amount is the exact cost of "
                   "its calls rounded half-even to the cent; the total is the sum of the lines. "
                   "Adjustments bill usage recorded after an earlier month was invoiced.")
    doc.set_text_color(0)
