"""Secrets and hostile names (issue 5, "security").

After metered calls with an API key in the headers (ok, streamed, failed with the key echoed
back by the server, refused, spooled) the key is nowhere: not in any table, not in the raw
database files, not in the spool. Project and model names full of SQL, HTML and spreadsheet
formula characters are stored literally and rendered safely in HTML and CSV invoices.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ledger import Ledger, LedgerUnavailable
from ledger.render import csv as render_csv
from ledger.render import html as render_html
from ledger.testing.simulator import Behavior, RunAPISimulator
from tests.harness.common import FAKE_API_KEY
from tests.harness.oracle import event_rows
from tests.harness.security import (
    EVIL_NAMES,
    csv_problems,
    database_text,
    file_text,
    html_problems,
    security_suite,
)

AUTH = {"authorization": f"Bearer {FAKE_API_KEY}", "x-api-key": FAKE_API_KEY}
BODY: dict[str, Any] = {"model": "kimi-k2.5", "max_tokens": 50,
                        "messages": [{"role": "user", "content": "hi"}]}


class TestSecrets:
    @pytest.mark.timeout(300)
    def test_api_key_is_nowhere_after_every_kind_of_call(self, any_url: str,
                                                         tmp_path: Path) -> None:
        """Tables, database files and spool hold no fragment of the key; names survive."""
        path = any_url.removeprefix("sqlite:///") if any_url.startswith("sqlite") else None
        figures = security_suite(any_url, tmp_path, sqlite_path=path)
        assert figures.problems == []
        assert figures.extra["secret_occurrences"] == 0
        assert figures.extra["spool_entries"] == 2  # the spool really was written, and searched
        assert figures.refused == 1 and figures.failed >= 3
        assert figures.extra["invoices_rendered"] == len(EVIL_NAMES)

    def test_a_key_echoed_by_the_server_is_redacted_before_it_is_stored(
            self, book: Ledger, sqlite_url: str, sim: RunAPISimulator,
            monkeypatch: pytest.MonkeyPatch) -> None:
        """A server that repeats the API key in its error: stored and spooled as [REDACTED]."""
        url = sim.openai_base_url + "/chat/completions"
        sim.enqueue(Behavior(status=401, error_message=f"Incorrect API key: {FAKE_API_KEY}"),
                    Behavior(error_event=True, error_message=f"key {FAKE_API_KEY} revoked"),
                    Behavior(status=403, error_message=f"forbidden for Bearer {FAKE_API_KEY}"))
        with book.httpx_client("acme") as client:
            assert client.post(url, json=BODY, headers=AUTH).status_code == 401
            with client.stream("POST", url, json={**BODY, "stream": True}, headers=AUTH) as r:
                r.read()

            def down(*args: Any, **kwargs: Any) -> int:
                raise LedgerUnavailable("ledger database unavailable")

            with monkeypatch.context() as patch:
                patch.setattr(book.store, "settle", down)
                assert client.post(url, json=BODY, headers=AUTH).status_code == 403
        spooled = Path(book.spool.path).read_text()
        assert "[REDACTED]" in spooled and FAKE_API_KEY not in spooled
        book.replay()
        errors = [row["error"] for row in event_rows(book)]
        assert len(errors) == 3 and all("[REDACTED]" in e for e in errors), errors
        path = sqlite_url.removeprefix("sqlite:///")
        for blob in (database_text(book), file_text(path, path + "-wal"), spooled):
            assert FAKE_API_KEY[3:] not in blob

    def test_short_or_absent_credentials_leave_errors_untouched(
            self, book: Ledger, sim: RunAPISimulator) -> None:
        """Only real credentials are redacted: a 4-character key does not blank words out."""
        sim.enqueue(Behavior(status=400, error_message="test failed: bad request"))
        with book.httpx_client("acme") as client:
            client.post(sim.openai_base_url + "/chat/completions", json=BODY,
                        headers={"authorization": "Bearer test"})
        assert event_rows(book)[0]["error"] == "HTTP 400: test failed: bad request"


class TestHostileNames:
    def test_names_are_stored_and_read_back_literally(self, any_book: Ledger) -> None:
        """SQL, HTML and formula characters in names are data: stored and read back as given."""
        for i, name in enumerate(EVIL_NAMES):
            any_book.set_price(name, Decimal("0.010"))
            any_book.set_budget(name, Decimal("5"))
            any_book.record(name, name, 1000, 1000, request_id=f"r{i}")
        rows = event_rows(any_book)
        assert [(r["project"], r["model"]) for r in rows] == [(n, n) for n in EVIL_NAMES]
        assert all(any_book.spend(name) == Decimal("0.02") for name in EVIL_NAMES)
        assert {p.model for p in any_book.prices()} >= set(EVIL_NAMES)
        assert any_book.store.check_totals() == []

    def test_html_invoices_show_names_as_text_only(self, book: Ledger) -> None:
        """Every name renders escaped: no tag, attribute or script of its own in the page."""
        for name in EVIL_NAMES:
            book.set_price(name, Decimal("0.010"))
            book.record(name, name, 10, 10)
            page = render_html.invoice(book.invoice(name, "2026-11", draft=True))
            assert html_problems(page, name) == []
            assert "<script>" not in page and "<img" not in page

    def test_csv_invoices_neutralise_formulas_and_keep_rows_whole(self, book: Ledger) -> None:
        """Formula-like names get a leading ', and a CR inside a name cannot split a row."""
        for name in EVIL_NAMES:
            book.set_price(name, Decimal("0.010"))
            book.record(name, name, 10, 10)
            out = io.StringIO()
            render_csv.invoices(out, [book.invoice(name, "2026-11", draft=True)])
            assert csv_problems(out.getvalue(), name) == []
            rows = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
            assert len(rows) == 2 and len(rows[1]) == len(rows[0]), rows

    def test_hostile_names_through_a_metered_client(self, book: Ledger,
                                                    sim: RunAPISimulator) -> None:
        """A project and a model with hostile names, through the transport, booked as given."""
        project, model = EVIL_NAMES[0], EVIL_NAMES[2]
        book.set_price(model, Decimal("0.020"))
        with book.httpx_client(project) as client:
            reply = client.post(sim.openai_base_url + "/chat/completions",
                                json={**BODY, "model": model}, headers=AUTH)
        assert reply.status_code == 200
        row = event_rows(book)[0]
        assert (row["project"], row["model"], row["status"]) == (project, model, "ok")
        assert reply.headers["x-ledger-call-id"] == row["call_id"]
