"""Issue 11 "seen as a person sees it": the HTML invoice, credit note and budget report
rendered by headless Chromium, checked through the DOM: no element wider than the page, every
required field present.

A small inline script, appended to the page, writes the layout facts (the page's width, the
right edge of every element, the page's text) into the DOM; ``chromium --dump-dom`` prints
the DOM after the page has loaded and laid out. Chromium is Debian's ``chromium`` package
(``.ci/run`` installs it). Without it these tests fail, unless ``LEDGER_TEST_NO_BROWSER=1``
says on purpose that this machine has no browser.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ledger import Ledger, ManualClock
from ledger.render import dollars
from ledger.render import html as render_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("LEDGER_TEST_NO_BROWSER") == "1":
    pytest.skip("LEDGER_TEST_NO_BROWSER=1: no headless Chromium on this machine",
                allow_module_level=True)

NAME = "Café Zürich — 東京 <b>&amp;</b>"
LONG = "a-very-long-model-name-from-a-fine-tuning-job-with-no-spaces-at-all-whatsoever"
NOV = datetime(2026, 11, 1, tzinfo=UTC)
#: A4 at 96 dpi is 794 CSS pixels wide, its printable width about 680; 390 is a phone.
WIDTHS = (794, 680, 390)

#: Appended before ``</body>``: lays the page out and writes what a person would see.
PROBE = """<script>
(() => {
  const page = document.documentElement.clientWidth;
  const wide = [];
  let right = 0;
  for (const el of document.body.querySelectorAll('*')) {
    if (el.tagName === 'SCRIPT' || el.tagName === 'STYLE') continue;
    const box = el.getBoundingClientRect();
    if (box.width === 0 && box.height === 0) continue;
    right = Math.max(right, box.right);
    if (box.right > page + 0.5 || box.left < -0.5) {
      wide.push(el.tagName.toLowerCase() + '.' + el.className + ': ' +
                (el.textContent || '').slice(0, 60));
    }
  }
  const facts = {
    page, right, scroll: document.documentElement.scrollWidth, wide: wide.slice(0, 10),
    text: document.body.innerText,
    charts: document.querySelectorAll('.chart svg').length,
    labels: [...new Set([...document.querySelectorAll('td[data-label]')]
      .filter(t => getComputedStyle(t, '::before').content !== 'none')
      .map(t => t.dataset.label))],
    cols: [...document.querySelectorAll('table.report tbody tr:first-child td')].map(
      t => Math.round(t.getBoundingClientRect().width)),
    ticks: [...document.querySelectorAll('.chart svg')].map(
      svg => [...svg.querySelectorAll('text.tick')].map(t => t.textContent)),
    status: [...document.querySelectorAll('td.status')].map(
      t => [t.textContent, getComputedStyle(t).color]),
  };
  const out = document.createElement('pre');
  out.id = 'ledger-facts';
  out.textContent = JSON.stringify(facts);
  document.body.appendChild(out);
})();
</script>
"""


def seen(page: str, width: int, tmp_path: Path) -> dict[str, Any]:
    """What headless Chromium lays out for ``page`` in a window ``width`` pixels wide."""
    assert CHROMIUM is not None, ("headless Chromium (Debian's chromium package) is needed; "
                                  "LEDGER_TEST_NO_BROWSER=1 skips these tests on purpose")
    assert page.count("</body>") == 1
    source = tmp_path / f"page-{width}.html"
    source.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    profile = tmp_path / f"chromium-{width}"
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={profile}", f"--window-size={width},1000",
         "--dump-dom", source.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'<pre id="ledger-facts">(.*?)</pre>', done.stdout, re.S)
    assert found, f"no facts from chromium (exit {done.returncode}): {done.stderr[-2000:]}"
    facts: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    return facts


def assert_fits(facts: dict[str, Any]) -> None:
    assert facts["page"] > 0
    assert facts["wide"] == [], (facts["wide"], facts.get("cols"), facts["page"])
    assert facts["right"] <= facts["page"] + 0.5
    assert facts["scroll"] <= facts["page"]  # no horizontal scrolling


@pytest.fixture
def seller(book: Ledger, clock: ManualClock) -> Ledger:
    """An issuer, a customer with a Unicode (and markup-looking) name and 20% VAT, and 12
    models with long names without spaces; the clock after November."""
    book.set_issuer(name="Seller Ltd", address="1 Main St\nLondon", tax_id="GB123456789",
                    payment_terms_days=14, payment_details="IBAN GB00 0000 0000 0000 00")
    book.set_customer("acme", name=NAME, address="Bahnhofstrasse 1\n8001 Zürich",
                      email="billing@acme.test", tax_id="CHE-123.456.789",
                      tax_rate=Decimal("0.20"), tax_name="VAT")
    for i in range(12):
        book.set_price(f"m{i:02d}-{LONG}", Decimal("0.5"), effective_from=NOV)
        book.record("acme", f"m{i:02d}-{LONG}", 2_000_000, 1_000_000, cached_tokens=500_000,
                    at=datetime(2026, 11, 3, tzinfo=UTC))
    clock.set(datetime(2026, 12, 2, tzinfo=UTC))
    return book


def required_invoice_text(text: str) -> None:
    for field in ("Seller Ltd", "1 Main St", "London", "GB123456789",
                  "Café Zürich — 東京 <b>&amp;</b>", "Bahnhofstrasse 1", "billing@acme.test",
                  "CHE-123.456.789", "Issue date", "02 Dec 2026", "Billing period",
                  "1–30 Nov 2026", "Currency", "USD", "Description", "Quantity", "Unit price",
                  "Amount", "Subtotal", "VAT 20%", "input tokens", "cached input tokens",
                  "output tokens"):
        assert field in text, field
    for i in range(12):
        assert f"m{i:02d}-{LONG}" in text.replace("\n", "").replace("\u200b", "")


@pytest.mark.parametrize("width", WIDTHS)
def test_the_invoice_fits_the_page_with_every_field(seller: Ledger, tmp_path: Path,
                                                    width: int) -> None:
    """Issue 11: the HTML invoice in Chromium: nothing wider than the page (A4, a phone),
    seller, bill-to, number, dates, period, lines, tax, total and amount due all shown."""
    inv = seller.invoice("acme", "2026-11")
    facts = seen(render_html.invoice(inv), width, tmp_path)
    assert_fits(facts)
    text = facts["text"]
    required_invoice_text(text)
    assert "Invoice INV-000001" in text and "Due date" in text and "16 Dec 2026" in text
    assert "IBAN GB00 0000 0000 0000 00" in text
    assert f"Total ({inv.currency})" in text and "Amount due" in text
    assert "$" + format(inv.total, ",f") in text and "$" + format(inv.tax, ",f") in text


@pytest.mark.parametrize("width", WIDTHS)
def test_the_credit_note_fits_the_page_with_every_field(seller: Ledger, tmp_path: Path,
                                                        width: int) -> None:
    """Issue 11: the HTML credit note in Chromium: nothing wider than the page; its number,
    the invoice it credits, the reason and the credited (negative) totals shown."""
    inv = seller.invoice("acme", "2026-11")
    note = seller.void_invoice(inv.label, reason="billed the wrong address")
    facts = seen(render_html.credit_note(note), width, tmp_path)
    assert_fits(facts)
    text = facts["text"]
    required_invoice_text(text)
    for field in ("Credit note CN-000001", "Credits invoice", "INV-000001", "Reason",
                  "billed the wrong address", "Total credited (USD)",
                  "-$" + format(inv.total, ",f")):
        assert field in text, field


@pytest.fixture
def report_book(book: Ledger, clock: ManualClock) -> Ledger:
    """Five projects on Nov 10: one far over its budget (forecast 130× its limit), one in
    warning, one "ok" but forecast over its limit, one with no budget and a long name, one
    idle with a budget."""
    book.set_budget("acme", Decimal("10"), hard=False)
    book.set_budget("warn", Decimal("100"))
    book.set_budget("idle", Decimal("5"))
    for day in range(1, 10):
        book.record("acme", "kimi-k2.5", 2_300_000, 0, at=NOV.replace(day=day, hour=9))
    book.record("warn", "kimi-k2.5", 4_100_000, 0, at=NOV.replace(day=2))
    book.record(f"free-{LONG}", "kimi-k2.5", 1234, 0, at=NOV.replace(day=3))
    book.set_budget("soon", Decimal("100"))                  # 40% used, forecast $126
    book.record("soon", "kimi-k2.5", 2_000_000, 0, at=NOV.replace(day=4))
    clock.set(datetime(2026, 11, 10, 12, tzinfo=UTC))
    return book


@pytest.mark.parametrize("width", WIDTHS)
def test_the_budget_report_fits_the_page_with_every_field(report_book: Ledger,
                                                          tmp_path: Path, width: int) -> None:
    """Issue 11: the HTML budget report in Chromium: nothing wider than the page; the day as
    a person says it, every project, its figures and one chart each."""
    report = report_book.budget_report("2026-11")
    facts = seen(render_html.budget_report(report), width, tmp_path)
    assert_fits(facts)
    text = facts["text"].replace("\u200b", "")
    assert "Budget report 2026-11" in text and "day 10 of 30" in text
    assert "E+" not in text
    for row in report.rows:
        assert row.project in text.replace("\n", ""), row.project
        assert dollars(row.spent) in text
    for head in ("Limit", "Spent", "Reserved", "Remaining", "Used", "Forecast", "Status",
                 "Total"):
        assert head in text or head in facts["labels"], head
    assert facts["charts"] == len(report.rows) == 5


GREEN = "rgb(19, 115, 51)"
AMBER = "rgb(176, 96, 0)"
RED = "rgb(176, 0, 32)"


def test_the_budget_report_reads_right(report_book: Ledger, tmp_path: Path) -> None:
    """Issue 11: every chart's y axis is round ticks (1, 2 or 5 × 10^k from $0, one precision
    per axis); a forecast over its limit is never "ok" in green; over is red."""
    report = report_book.budget_report("2026-11")
    facts = seen(render_html.budget_report(report), 794, tmp_path)
    assert len(facts["ticks"]) == 5
    for labels in facts["ticks"]:
        values = [Decimal(label.lstrip("$").replace(",", "")) for label in labels]
        step = values[1]
        assert values[0] == 0 and step.scaleb(-step.adjusted()) in (1, 2, 5), labels
        assert values == [step * i for i in range(len(values))], labels
        assert len({v.as_tuple().exponent for v in values}) == 1, labels  # one precision
    shown = dict(zip((r.project for r in report.rows), facts["status"], strict=True))
    assert shown["soon"] == ["at risk", AMBER]
    assert shown["acme"] == ["over", RED] and shown["warn"] == ["warning", AMBER]
    assert shown["idle"] == ["ok", GREEN]
    for row in report.rows:
        if row.forecast_over:
            assert shown[row.project][1] != GREEN, row.project


# -- printed: Chromium's print-to-PDF of a long invoice, page by page (pdftotext) -------------
SUB_LINES = ("input tokens", "cached input tokens", "output tokens")


def printed(page: str, paper: str, tmp_path: Path) -> list[str]:
    """The text of each page (``pdftotext -layout``) when headless Chromium prints ``page``
    on ``paper`` (``A4``, ``letter``) without its own header and footer."""
    assert CHROMIUM is not None, "headless Chromium (Debian's chromium package) is needed"
    assert shutil.which("pdftotext"), "pdftotext (Debian's poppler-utils) is needed (.ci/run)"
    source = tmp_path / f"print-{paper}.html"
    source.write_text(page.replace("</head>", f"<style>@page {{ size: {paper}; }}</style>"
                                              "</head>"), encoding="utf-8")
    out = tmp_path / f"print-{paper}.pdf"
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-print'}",
         "--no-pdf-header-footer", f"--print-to-pdf={out}", source.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert out.is_file(), f"chromium printed nothing (exit {done.returncode}): {done.stderr}"
    import pypdf

    count = len(pypdf.PdfReader(out).pages)
    return [subprocess.run(["pdftotext", "-enc", "UTF-8", "-layout", "-f", str(i), "-l", str(i),
                            str(out), "-"], check=True, capture_output=True, text=True).stdout
            for i in range(1, count + 1)]


@pytest.fixture
def long_book(book: Ledger, clock: ManualClock) -> Ledger:
    """120 models in November (every other one with cached input): an invoice of 120 lines
    and 420 sub-lines, for a customer with a Unicode name and 20% VAT."""
    book.set_issuer(name="Seller Ltd", address="1 Main St")
    book.set_customer("acme", name="Zoë & Łukasz «Ünïcode»", tax_rate=Decimal("0.20"),
                      tax_name="VAT")
    for i in range(120):
        book.set_price(f"model-{i:03d}", Decimal("0.5"), effective_from=NOV)
        book.record("acme", f"model-{i:03d}", 2000 + i, 1000, cached_tokens=500 * (i % 2),
                    at=datetime(2026, 11, 3, tzinfo=UTC))
    clock.set(datetime(2026, 12, 2, tzinfo=UTC))
    return book


@pytest.mark.parametrize("paper", ["A4", "letter"])
def test_a_long_invoice_prints_page_by_page(long_book: Ledger, tmp_path: Path,
                                            paper: str) -> None:
    """Issue 11: printed (Chromium, A4 and Letter), every page has the number, the customer,
    "Page i of N" and the table header; no line is split from its sub-lines across pages;
    the totals come once, at the end, with lines above them on their page."""
    inv = long_book.invoice("acme", "2026-11")
    pages = printed(render_html.invoice(inv), paper, tmp_path)
    assert len(pages) >= 4
    seen_models: list[str] = []
    for i, text in enumerate(pages, start=1):
        assert "INV-000001" in text and "Zoë & Łukasz «Ünïcode»" in text, i
        assert f"Page {i} of {len(pages)}" in text, i
        assert re.search(r"Description\s+Quantity\s+Unit price\s+Amount", text), i
        rows = [("line", m.group(0)) if (m := re.search(r"model-\d{3}", ln)) else
                ("sub", next(s for s in reversed(SUB_LINES) if s in ln))
                for ln in text.splitlines() if "model-" in ln or "tokens" in ln]
        assert rows and rows[0][0] == "line", (i, rows[:3])       # no orphaned sub-lines
        assert rows[-1] == ("sub", "output tokens"), (i, rows[-3:])  # no line cut short
        seen_models += [name for kind, name in rows if kind == "line"]
    assert seen_models == [f"model-{i:03d}" for i in range(120)]   # each line once, in order
    with_totals = [text for text in pages if "Amount due" in text]
    assert len(with_totals) == 1 and with_totals[0] is pages[-1]    # once, not on every page
    last = with_totals[0]
    for total in ("Subtotal", "VAT 20%", "Total (USD)", "$" + format(inv.total, ",f")):
        assert total in last, total
    assert "model-119" in last                                       # not orphaned


def test_totals_are_never_alone_on_a_page(book: Ledger, clock: ManualClock,
                                          tmp_path: Path) -> None:
    """Issue 11: invoices of 6 to 25 lines printed in one file (A4; some end where a page
    does): each starts a page headed with its own number and customer, its totals come once
    and with its last line on their page (only footnotes may follow on a page of their own)."""
    for n in range(6, 26):
        book.set_customer(f"p{n:02d}", name=f"Customer {n}")
        for i in range(n):
            book.set_price(f"m{n:02d}-{i:02d}", Decimal("0.5"), effective_from=NOV)
            book.record(f"p{n:02d}", f"m{n:02d}-{i:02d}", 2000, 1000,
                        at=datetime(2026, 11, 3, tzinfo=UTC))
    clock.set(datetime(2026, 12, 2, tzinfo=UTC))
    invs = book.invoices("2026-11")
    assert [len(i.lines) for i in invs] == list(range(6, 26))
    pages = printed(render_html.invoices(invs, "2026-11"), "A4", tmp_path)
    for inv, n in zip(invs, range(6, 26), strict=True):
        own = [text for text in pages if f"{inv.label} · Customer {n}" in text]
        assert own and f"m{n:02d}-00 " in own[0], inv.label   # starts a page of its own
        totals = [k for k, text in enumerate(own) if "Amount due" in text]
        assert len(totals) == 1, inv.label
        with_lines = own[:totals[0] + 1]           # after the totals page: footnotes only
        assert all(f"m{n:02d}-" in text for text in with_lines), inv.label
        assert sum(f"m{n:02d}-" in text for text in pages) == len(with_lines), inv.label
        assert f"m{n:02d}-{n - 1:02d} " in own[totals[0]], inv.label   # its last line, too
