"""Issue 11: the PDF invoice as a person sees it: text per page (pypdf) and pixels (pdftoppm)."""

from __future__ import annotations

import io
import shutil
import subprocess
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pypdf
import pytest

from ledger import Ledger, ManualClock
from ledger.render import pdf

NAME = "Café Zürich — 東京"
LONG = "a-very-long-model-name-from-a-fine-tuning-job-with-no-spaces-at-all-whatsoever"


@pytest.fixture
def long_invoice(book: Ledger, clock: ManualClock) -> bytes:
    """A three-page invoice: 25 models with long names, a customer with a Unicode name."""
    book.set_issuer(name="Seller Ltd", address="1 Main St")
    book.set_customer("acme", name=NAME, tax_rate=Decimal("0.20"), tax_name="VAT")
    nov = datetime(2026, 11, 1, tzinfo=UTC)
    for i in range(25):
        book.set_price(f"m{i:02d}-{LONG}", Decimal("0.5"), effective_from=nov)
        book.record("acme", f"m{i:02d}-{LONG}", 2_000_000, 1_000_000,
                    at=datetime(2026, 11, 3, tzinfo=UTC))
    clock.set(datetime(2026, 12, 2, tzinfo=UTC))
    return pdf.invoice(book.invoice("acme", "2026-11"))


def test_every_page_has_number_customer_and_page_i_of_n(long_invoice: bytes) -> None:
    """Issue 11: number, customer (as written) and "Page i of N" on every page; header repeats."""
    pages = pypdf.PdfReader(io.BytesIO(long_invoice)).pages
    assert len(pages) >= 2
    for i, page in enumerate(pages, start=1):
        text = page.extract_text()
        assert "INV-000001" in text and NAME in text
        assert f"Page {i} of {len(pages)}" in text
        assert "Description" in text and "Amount" in text
    assert "$1,500.00" in pages[0].extract_text()           # a line, with its separator
    last = pages[-1].extract_text()
    assert "$37,500.00" in last and "$7,500.00" in last and "$45,000.00" in last


def test_no_text_runs_off_the_page(long_invoice: bytes, tmp_path: Path) -> None:
    """Issue 11: rasterised, the outer 8 mm of every page stay white (nothing overflows)."""
    from PIL import Image

    assert shutil.which("pdftoppm"), "pdftoppm (Debian's poppler-utils) is needed (.ci/run)"
    source = tmp_path / "inv.pdf"
    source.write_bytes(long_invoice)
    subprocess.run(["pdftoppm", "-r", "50", "-png", str(source), str(tmp_path / "p")],
                   check=True)
    images = sorted(tmp_path.glob("p-*.png"))
    assert len(images) >= 2
    for path in images:
        img = Image.open(path).convert("L")
        w, h = img.size
        band = int(w * 8 / 210)  # 8 mm of an A4 page's 210 mm
        for x in [*range(band), *range(w - band, w)]:
            assert min(img.getpixel((x, y)) for y in range(h)) > 200, (path.name, x)


# -- the font: a Unicode TTF from a dependency first, system fonts only as fallback ---------
SELLER = "ООО «Ромашка» · Αθήνα"          # Cyrillic and Greek
BUYER = "Zoë & Łukasz «Ünïcode»"
STREET = "ул. Тверская 1 / Οδός Ερμού 2"


def pdftotext(document: bytes, tmp_path: Path, page: int | None = None,
              layout: bool = False) -> str:
    """The text poppler's ``pdftotext`` reads from ``document`` (one page, if given; as laid
    out on the page, row by row, with ``layout``)."""
    assert shutil.which("pdftotext"), "pdftotext (Debian's poppler-utils) is needed (.ci/run)"
    source = tmp_path / "doc.pdf"
    source.write_bytes(document)
    pages = [] if page is None else ["-f", str(page), "-l", str(page)]
    pages += ["-layout"] if layout else []
    return subprocess.run(["pdftotext", "-enc", "UTF-8", *pages, str(source), "-"],
                          check=True, capture_output=True, text=True).stdout


def pdffonts(document: bytes, tmp_path: Path) -> list[str]:
    """The fonts of ``document`` as poppler's ``pdffonts`` lists them (one line each)."""
    assert shutil.which("pdffonts"), "pdffonts (Debian's poppler-utils) is needed (.ci/run)"
    source = tmp_path / "fonts.pdf"
    source.write_bytes(document)
    out = subprocess.run(["pdffonts", str(source)], check=True, capture_output=True,
                         text=True).stdout
    return out.splitlines()[2:]


@pytest.fixture
def no_system_fonts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without any system font the PDF renderer knows (and no font configured)."""
    monkeypatch.delenv("LEDGER_PDF_FONT", raising=False)
    monkeypatch.delenv("LEDGER_PDF_FALLBACK_FONT", raising=False)
    monkeypatch.setattr(pdf, "FONT_CANDIDATES", ())
    monkeypatch.setattr(pdf, "FALLBACK_CANDIDATES", ())


def test_the_font_of_a_dependency_comes_before_system_fonts(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Issue 11: the PDF font is Noto Sans from the fontpkg-noto-sans dependency, even where
    a system font exists; a system font is used only when that package is missing."""
    import fontpkg_noto_sans

    monkeypatch.delenv("LEDGER_PDF_FONT", raising=False)
    system = tmp_path / "SystemSans.ttf"
    shipped = pdf.packaged_font()
    assert shipped is not None and shipped.is_file()
    assert shipped.is_relative_to(Path(fontpkg_noto_sans.__file__).parent)
    system.write_bytes(shipped.read_bytes())
    monkeypatch.setattr(pdf, "FONT_CANDIDATES", (str(tmp_path / "missing.ttf"), str(system)))
    assert pdf.find_font() == shipped
    monkeypatch.setattr(pdf, "packaged_font", lambda: None)
    assert pdf.find_font() == system


def test_latin_cyrillic_and_greek_names_print_as_written_without_system_fonts(
        no_system_fonts: None, book: Ledger, clock: ManualClock, tmp_path: Path) -> None:
    """Issue 11: with no system font at all, the invoice and its credit note (pdftotext)
    show accented, Polish, Cyrillic and Greek names and guillemets as given, regular and
    bold, in the embedded Noto Sans (never the built-in Helvetica)."""
    book.set_issuer(name=SELLER, address=STREET)
    book.set_customer("acme", name=BUYER, address=STREET, tax_rate=Decimal("0.20"))
    book.record("acme", "kimi-k2.5", 1000, 1000, at=datetime(2026, 11, 3, tzinfo=UTC))
    clock.set(datetime(2026, 12, 2, tzinfo=UTC))
    inv = book.invoice("acme", "2026-11")
    note = book.void_invoice(inv.label, reason=f"wrong address: {STREET}")
    for document in (pdf.invoice(inv), pdf.credit_note(note)):
        text = pdftotext(document, tmp_path)
        for name in (SELLER, BUYER, STREET, "INV-000001"):
            assert name in text, (name, text)
        fonts = pdffonts(document, tmp_path)
        assert fonts and all("NotoSans" in line for line in fonts), fonts
        assert all(" yes " in line for line in fonts), fonts   # embedded
        assert len({line.split()[0] for line in fonts}) == 2, fonts  # regular and bold


def test_a_line_keeps_its_sub_lines_and_the_totals_keep_a_line(
        book: Ledger, clock: ManualClock, tmp_path: Path) -> None:
    """Issue 11: in a PDF of 45 lines (every other one with cached input), no page starts
    with a sub-line or ends before a line's last sub-line, and the totals page also has the
    last line."""
    book.set_customer("acme", name=BUYER)
    nov = datetime(2026, 11, 1, tzinfo=UTC)
    for i in range(45):
        book.set_price(f"model-{i:03d}", Decimal("0.5"), effective_from=nov)
        book.record("acme", f"model-{i:03d}", 2000 + i, 1000, cached_tokens=500 * (i % 2),
                    at=datetime(2026, 11, 3, tzinfo=UTC))
    clock.set(datetime(2026, 12, 2, tzinfo=UTC))
    document = pdf.invoice(book.invoice("acme", "2026-11"))
    count = len(pypdf.PdfReader(io.BytesIO(document)).pages)
    assert count >= 3
    seen = []
    for page in range(1, count + 1):
        text = pdftotext(document, tmp_path, page, layout=True)
        rows = ["line" if "model-" in ln else ln.strip().split("  ")[0]
                for ln in text.splitlines() if "model-" in ln or " tokens " in ln]
        assert rows[0] == "line", (page, rows[:3])
        assert rows[-1] == "output tokens", (page, rows[-3:])
        seen += [ln for ln in text.splitlines() if "model-" in ln]
        if page == count:
            assert "Amount due" in text and "model-044" in text
    assert len(seen) == 45
