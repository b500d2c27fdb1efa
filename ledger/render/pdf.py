"""Real PDF invoices and credit notes, made with fpdf2.

Fonts: a Unicode TrueType font is embedded (subset): ``$LEDGER_PDF_FONT`` (a ``.ttf`` path)
if set, else Noto Sans (Latin, Greek, Cyrillic; SIL Open Font License) as shipped by the
``fontpkg-noto-sans`` dependency, so the PDF does not depend on the machine's fonts; only
when that package is missing, DejaVu Sans (Debian ``fonts-dejavu-core``), Noto Sans or
Liberation Sans from the usual system locations. Noto Sans ships as a variable font: its
default instance is the regular face, and the bold face is instanced from it (``wght`` 700)
per document, for the characters the document uses only (fontTools; a fraction of a second).
A CJK fallback font (``$LEDGER_PDF_FALLBACK_FONT``, else Droid Sans Fallback from Debian
``fonts-droid-fallback``, Noto Sans CJK or WenQuanYi) draws the characters the main font
lacks, so "Café Zürich — 東京" prints as written. Without any Unicode font the PDF uses the
built-in Helvetica and text is reduced to Latin-1 safely (accents kept where Latin-1 has
them, NFKD forms decomposed, anything else ``?``).

Every page carries the document number, the customer and "Page i of N" (counted per
document, also when several invoices share one file); the table header repeats on every
page; long model names wrap (at spaces, else between characters) inside their column;
amounts have thousands separators. The creation date is the document's issue time, so the
same invoice renders to the same bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import io
import json
import os
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import MethodReturnValue, TableCellFillMode, WrapMode
from fpdf.fonts import FontFace

from ..invoice import CreditNote, Invoice
from .document import Document, Row, of_credit_note, of_invoice

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
FALLBACK_CANDIDATES = (
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/truetype/droid/DroidSansFallback.ttf",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
)
BOLD_NAMES = {"DejaVuSans.ttf": "DejaVuSans-Bold.ttf",
              "NotoSans-Regular.ttf": "NotoSans-Bold.ttf",
              "LiberationSans-Regular.ttf": "LiberationSans-Bold.ttf",
              "arial.ttf": "arialbd.ttf"}
MARGIN = 15.0
#: The font package (a dependency): Noto Sans, Latin, Greek and Cyrillic.
FONT_PACKAGE = "fontpkg_noto_sans"
BOLD_WEIGHT = 700
#: Always in the bold face, whatever the document says: ASCII, Latin-1 and punctuation.
BOLD_ALWAYS = "".join(map(chr, [*range(0x20, 0x7F), *range(0xA0, 0x100), *range(0x2010, 0x2028),
                               0x2030, 0x2039, 0x203A, 0x20AC]))


def _first_font(variable: str, candidates: Iterable[str],
                packaged: Path | None = None) -> Path | None:
    """The font named by ``$variable`` (set but empty or missing: none), else ``packaged``,
    else the first of ``candidates`` that exists as a TrueType file."""
    configured = os.environ.get(variable)
    if configured is not None:
        path = Path(configured)
        return path if configured and path.is_file() else None
    if packaged is not None:
        return packaged
    for candidate in candidates:
        path = Path(candidate)
        if path.is_file() and path.suffix == ".ttf":
            return path
    return None


def packaged_font() -> Path | None:
    """The regular (upright) Noto Sans file of the ``fontpkg-noto-sans`` package, or None
    when that package is not installed."""
    try:
        module = importlib.import_module(FONT_PACKAGE)
    except ImportError:
        return None
    root = Path(str(module.__file__)).parent
    try:
        meta = json.loads((root / "metadata.json").read_text(encoding="utf-8"))
        files = [root / str(f["path"]) for f in meta["files"] if f.get("style") == "normal"]
    except (OSError, ValueError, KeyError, TypeError):
        files = [f for f in sorted((root / "files").glob("*.ttf")) if "Italic" not in f.name]
    return next((f for f in files if f.suffix == ".ttf" and f.is_file()), None)


def find_font() -> Path | None:
    """A Unicode TrueType font to embed, or None (then text is reduced to Latin-1)."""
    return _first_font("LEDGER_PDF_FONT", FONT_CANDIDATES, packaged_font())


def find_fallback_font() -> Path | None:
    """A font with CJK glyphs for what the main font lacks, or None."""
    return _first_font("LEDGER_PDF_FALLBACK_FONT", FALLBACK_CANDIDATES)


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


def bold_face(font: Path, text: str, folder: Path) -> Path:
    """The bold face of ``font``: its static sibling (``DejaVuSans-Bold.ttf`` ...); else, for
    a variable font with a weight axis (the packaged Noto Sans), a bold instance of the
    characters of ``text`` only, written into ``folder``; else ``font`` itself."""
    sibling = font.with_name(BOLD_NAMES.get(font.name, font.name))
    if sibling != font and sibling.is_file():
        return sibling
    data = _bold_instance(font, font.stat().st_mtime_ns, text)
    if data is None:
        return font
    path = folder / f"{font.stem}-bold.ttf"
    path.write_bytes(data)
    return path


@functools.lru_cache(maxsize=16)
def _bold_instance(font: Path, mtime: int, text: str) -> bytes | None:
    """A bold instance of the variable ``font`` for the characters of ``text`` (TTF bytes),
    or None if ``font`` has no weight axis or fontTools cannot instance it. Cached: the same
    document rendered twice instances once."""
    from fontTools import subset
    from fontTools.ttLib import TTFont
    from fontTools.varLib import instancer

    try:
        face = TTFont(str(font))
        axes = [] if "fvar" not in face else list(face["fvar"].axes)
        weight = next((a for a in axes if a.axisTag == "wght"), None)
        if weight is None:
            return None
        location = {a.axisTag: a.defaultValue for a in axes}
        location["wght"] = min(max(BOLD_WEIGHT, weight.minValue), weight.maxValue)
        options = subset.Options()
        options.hinting = False
        options.layout_features = []  # fpdf2 draws glyph by glyph: no shaping tables
        options.name_IDs = ["*"]
        options.notdef_outline = True
        subsetter = subset.Subsetter(options)
        subsetter.populate(text=BOLD_ALWAYS + text)
        subsetter.subset(face)
        bold = instancer.instantiateVariableFont(face, location, updateFontNames=True)
        bold.recalcTimestamp = False  # the same invoice, the same bytes
        out = io.BytesIO()
        bold.save(out)
        return out.getvalue()
    except Exception:  # a font fontTools cannot instance: regular stands in
        return None


def _characters(docs: Iterable[Document]) -> str:
    """Every character the documents print (a superset: every string field)."""
    def strings(value: object) -> Iterator[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, (tuple, list)):
            for item in value:
                yield from strings(item)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                yield from strings(getattr(value, f.name))

    return "".join(sorted({ch for doc in docs for text in strings(doc) for ch in text}))


class _Doc(FPDF):
    def __init__(self, font: Path | None, fallback: Path | None,
                 bold: Path | None = None) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.unicode = font is not None
        self.glyphs: set[int] = set()
        self.body_glyphs: frozenset[int] = frozenset()
        if font is not None:
            self.add_font("Body", "", str(font))
            self.add_font("Body", "B", str(bold or font))
            self.family = "Body"
            self.glyphs = set(getattr(self.fonts.get("body"), "cmap", None) or ())
            self.body_glyphs = frozenset(self.glyphs)
            if fallback is not None:
                self.add_font("Fallback", "", str(fallback))
                self.add_font("Fallback", "B", str(fallback))
                self.glyphs |= set(getattr(self.fonts.get("fallback"), "cmap", None) or ())
                self.set_fallback_fonts(["Fallback"], exact_match=False)
        else:
            self.family = "Helvetica"
        self.set_auto_page_break(auto=True, margin=MARGIN + 5)
        self.set_margins(MARGIN, MARGIN + 8, MARGIN)
        self.current: Document | None = None
        self.first_page = 1
        self.pages_of_current = 1

    def text_of(self, value: object) -> str:
        text = "" if value is None else str(value)
        text = "".join(ch if ch.isprintable() else " " for ch in text)
        if not self.unicode:
            return latin1(text)
        if self.glyphs:  # a character no font can draw prints as "?", never as nothing
            text = "".join(ch if ord(ch) in self.glyphs or ch == " " else "?" for ch in text)
        return text

    def fits(self, text: str, width: float) -> bool:
        """Whether ``text`` fits ``width`` on one line, when the main font draws all of it
        (characters of a fallback font are measured by wrapping instead)."""
        if self.unicode and not all(ord(ch) in self.body_glyphs for ch in text):
            return False
        return bool(self.get_string_width(text) < width - 0.5)

    def font(self, size: float, bold: bool = False) -> None:
        self.set_font(self.family, "B" if bold else "", size)

    def header(self) -> None:
        if self.current is None:
            return
        self.set_y(8)
        self.font(8)
        self.set_text_color(110)
        self.cell(0, 5, self.text_of(f"{self.current.number}  ·  {self.current.customer}"
                                     if self.unicode else
                                     f"{self.current.number} - {self.current.customer}"),
                  align="L")
        self.set_text_color(0)
        self.set_y(MARGIN + 8)

    def footer(self) -> None:
        if self.current is None:
            return
        self.set_y(-12)
        self.font(8)
        self.set_text_color(110)
        page = self.page_no() - self.first_page + 1
        self.cell(0, 5, self.text_of(f"{self.current.number}  ·  Page {page} of "
                                     f"{self.pages_of_current}"), align="R")
        self.set_text_color(0)


def _choose(font: Path | bool | None) -> tuple[Path | None, Path | None]:
    chosen = find_font() if font is True else (None if font is False else font)
    return chosen, (find_fallback_font() if chosen is not None else None)


def invoice(inv: Invoice, *, font: Path | bool | None = True) -> bytes:
    """``inv`` as a PDF document (bytes). ``font``: True finds one, a path uses it, None or
    False uses the built-in Helvetica with Latin-1 text."""
    return invoices([inv], font=font)


def credit_note(note: CreditNote, *, font: Path | bool | None = True) -> bytes:
    """A credit note as a PDF document."""
    return _render([of_credit_note(note)], note.issued_at, f"{note.number} {note.project}",
                   font)


def invoices(invs: Iterable[Invoice], *, font: Path | bool | None = True) -> bytes:
    """Several invoices in one PDF, each starting on a new page."""
    items = list(invs)
    title = f"{items[0].label} {items[0].project} {items[0].month}" if items else "Invoices"
    return _render([of_invoice(i) for i in items], items[0].issued_at if items else None,
                   title, font)


def _render(docs: list[Document], created: object, title: str,
            font: Path | bool | None) -> bytes:
    chosen, fallback = _choose(font)
    text = _characters(docs) + title
    if chosen is not None and fallback is not None and _covers(chosen, text):
        fallback = None  # the main font draws every character: no need to load another
    with tempfile.TemporaryDirectory(prefix="ledger-pdf-") as folder:
        # fpdf2 reads the font files until the PDF is output: keep them until then
        bold = None if chosen is None else bold_face(chosen, text, Path(folder))
        return _output(docs, created, title, chosen, fallback, bold)


@functools.lru_cache(maxsize=8)
def _cmap(font: Path) -> frozenset[int]:
    """The code points ``font`` has glyphs for (empty if it cannot be read)."""
    from fontTools.ttLib import TTFont

    try:
        return frozenset(TTFont(str(font), lazy=True).getBestCmap() or ())
    except Exception:  # an unreadable font covers nothing: the fallback stays
        return frozenset()


def _covers(font: Path, text: str) -> bool:
    cmap = _cmap(font)
    return all(ord(ch) in cmap for ch in text if ch.isprintable() and not ch.isspace())


def _output(docs: list[Document], created: object, title: str, chosen: Path | None,
            fallback: Path | None, bold: Path | None) -> bytes:
    from datetime import datetime

    # first pass: each document's page count, for "Page i of N"
    counts = []
    for doc in docs:
        probe = _Doc(chosen, fallback, bold)
        _draw(probe, doc, 1)
        counts.append(probe.page_no())
    out = _Doc(chosen, fallback, bold)
    out.set_author("runapi-ledger")
    out.set_creator("runapi-ledger")
    out.set_title(out.text_of(title))
    if isinstance(created, datetime):
        out.set_creation_date(created)
    for doc, pages in zip(docs, counts, strict=True):
        _draw(out, doc, pages)
    if not docs:
        out.add_page()
        out.font(11)
        out.cell(0, 8, "No invoices.")
    return bytes(out.output())


def _draw(pdf: _Doc, doc: Document, pages: int) -> None:
    pdf.current = doc
    pdf.pages_of_current = pages
    pdf.add_page()
    pdf.first_page = pdf.page_no()
    width = pdf.epw
    pdf.font(18, bold=True)
    pdf.set_text_color(176, 0, 0) if doc.draft else pdf.set_text_color(0)
    pdf.multi_cell(width, 9, pdf.text_of(doc.title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0)
    pdf.ln(2)
    # seller and bill-to, side by side
    half = (width - 10) / 2
    top = pdf.get_y()
    for i, (heading, lines) in enumerate((("FROM", doc.seller), ("BILL TO", doc.bill_to))):
        pdf.set_xy(pdf.l_margin + i * (half + 10), top)
        pdf.font(7, bold=True)
        pdf.set_text_color(110)
        pdf.cell(half, 4, heading, new_x="LEFT", new_y="NEXT")
        pdf.set_text_color(0)
        for j, line in enumerate(lines):
            pdf.font(9.5, bold=j == 0)
            pdf.multi_cell(half, 4.6, pdf.text_of(line), new_x="LEFT", new_y="NEXT",
                           wrapmode=WrapMode.WORD)
        if i == 0:
            left_bottom = pdf.get_y()
    pdf.set_y(max(pdf.get_y(), left_bottom) + 4)
    # dates and references
    for label, value in doc.meta:
        pdf.set_x(pdf.l_margin)
        pdf.font(9, bold=True)
        pdf.cell(38, 5, pdf.text_of(label))
        pdf.font(9)
        pdf.multi_cell(width - 38, 5, pdf.text_of(value), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    # the lines: a line and its sub-lines stay on one page, the heading row starts every
    # page of lines, and the totals stay with the last line
    groups: list[list[Row]] = []
    for row in doc.rows:
        if row.sub and groups:
            groups[-1].append(row)
        else:
            groups.append([row])
    # one table per page: as many whole groups as fit (measured), the last with the totals
    head = _height(pdf, [HEADING])
    page: list[Row] = []
    y = pdf.get_y() + head
    for i, group in enumerate(groups):
        needed = _height(pdf, group) + (_totals_height(doc) if i == len(groups) - 1 else 0)
        if y + needed > pdf.page_break_trigger and (page or pdf.get_y() > pdf.t_margin + 1):
            if page:
                _table(pdf, doc, page)
            pdf.add_page()  # (never the heading row alone at the foot of a page)
            page, y = [], pdf.get_y() + head
        page += group
        y += needed
    _table(pdf, doc, page)
    _totals(pdf, doc)
    pdf.ln(4)
    pdf.font(7.5)
    pdf.set_text_color(90)
    for note in doc.notes:
        pdf.multi_cell(width, 3.8, pdf.text_of(note), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)
    pdf.set_text_color(0)
    pdf.current = doc


COLUMNS = (0.46, 0.17, 0.17, 0.20)
LINE_HEIGHT = 4.6
PADDING = (0.8, 1.2)  # vertical, horizontal (mm)
HEADING = Row("Description", "Quantity", "Unit price", "Amount")
#: Room kept for rounding in the measured height of a group of rows (mm).
SLACK = 1.0


def _cells(row: Row) -> tuple[str, str, str, str]:
    desc = ("    " + row.description) if row.sub else row.description
    if row.dates:
        desc += f"\n{row.dates}"
    return desc, row.quantity, row.unit_price, row.amount


def _height(pdf: _Doc, rows: list[Row]) -> float:
    """The height the table gives ``rows`` (mm): per row, its tallest cell's lines as
    wrapped in its column, plus padding; measured with fpdf2's own line breaking."""
    total = SLACK
    for row in rows:
        pdf.font(7.5 if row.sub else 8.5)
        lines = 1
        for text, share in zip(_cells(row), COLUMNS, strict=True):
            shown = pdf.text_of(text)
            room = pdf.epw * share - 2 * PADDING[1]
            if "\n" not in shown and pdf.fits(shown, room):
                continue  # one line (the common case, measured without wrapping)
            wrapped = pdf.multi_cell(room, LINE_HEIGHT, shown, dry_run=True,
                                     output=MethodReturnValue.LINES, wrapmode=WrapMode.WORD)
            assert isinstance(wrapped, list)
            lines = max(lines, len(wrapped))
        total += lines * LINE_HEIGHT + 2 * PADDING[0]
    return total


def _totals_height(doc: Document) -> float:
    return 2 + 6 * len(doc.totals)


def _table(pdf: _Doc, doc: Document, rows: list[Row]) -> None:
    """The heading row and ``rows`` of the lines table (no rows: the empty table's row)."""
    pdf.font(8.5)
    width = pdf.epw
    sub = FontFace(color=(90, 90, 90), size_pt=7.5)
    with pdf.table(col_widths=tuple(width * c for c in COLUMNS),
                   text_align=("LEFT", "RIGHT", "RIGHT", "RIGHT"), cell_fill_color=246,
                   cell_fill_mode=TableCellFillMode.NONE, line_height=LINE_HEIGHT,
                   width=width, borders_layout="HORIZONTAL_LINES", wrapmode=WrapMode.WORD,
                   padding=PADDING) as table:
        head_row = table.row()
        for h in _cells(HEADING):
            head_row.cell(h)
        for row in rows:
            cells = table.row(style=sub if row.sub else None)
            for text in _cells(row):
                cells.cell(pdf.text_of(text))
        if not rows:
            cells = table.row()
            cells.cell(pdf.text_of(doc.empty), colspan=3)
            cells.cell("$0.00")


def _totals(pdf: _Doc, doc: Document) -> None:
    width = pdf.epw
    pdf.ln(2)
    for i, (label, value) in enumerate(doc.totals):
        last = i == len(doc.totals) - 1
        pdf.font(11 if last else 9.5, bold=last)
        pdf.set_x(pdf.l_margin)
        pdf.cell(width * 0.75, 6, pdf.text_of(label), align="R")
        pdf.cell(width * 0.25, 6, pdf.text_of(value), align="R", new_x="LMARGIN",
                 new_y="NEXT")
