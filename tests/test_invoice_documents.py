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
