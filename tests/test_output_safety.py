"""Output that can hurt whoever opens it (issue 9 items 19-22): spreadsheet formulas hidden
behind a separator, terminal escapes in names and messages, credentials echoed into error
texts, and ``--output`` pointed at the ledger's own files."""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import CliRunner, Result
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ledger import Ledger, LedgerUnavailable, ManualClock
from ledger.cli import main
from ledger.cli.options import CliState
from ledger.files import check_output, own_files
from ledger.redact import REDACTED, redact_text
from ledger.render import csv as render_csv
from ledger.render import table as render_table
from ledger.render.safe import UNSAFE, terminal_text
from ledger.testing.simulator import Behavior, RunAPISimulator

NOV = datetime(2026, 11, 1, tzinfo=UTC)
Run = Callable[..., Result]


@pytest.fixture
def run(sqlite_url: str, clock: ManualClock) -> Run:
    runner = CliRunner()

    def invoke(*args: str, db: str | None = sqlite_url) -> Result:
        return runner.invoke(main, list(args), obj=CliState(db=db, clock=clock))

    return invoke


def fails(result: Result, code: int, match: str) -> str:
    """Exit ``code``, nothing on stdout, one line on stderr (no traceback)."""
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert match.lower() in lines[0].lower(), lines[0]
    return lines[0]


# -- item 19: CSV formulas after a separator ---------------------------------------------------
SEPARATORS = ",;\t|\r\n"
FORMULA_CHARS = "=+-@\uff1d\uff0b\uff0d\uff20"
DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)


def spreadsheet_would_run(value: str) -> bool:
    """An independent oracle: split the cell on every separator a spreadsheet may use, skip
    spaces and quotes, and look for a formula start; a plain decimal number is a value."""
    if DECIMAL.fullmatch(value):
        return False
    if value.startswith(("\t", "\r", "\n")):
        return True
    for piece in re.split("[" + re.escape(SEPARATORS) + "]", value):
        i = 0
        while i < len(piece) and (piece[i].isspace() or piece[i] in "\"'"):
            i += 1
        if i < len(piece) and piece[i] in FORMULA_CHARS:
            return True
    return False


PAYLOADS = [
    "acme;=cmd|' /C calc'!A0",
    "acme\t=cmd|' /C calc'!A0",
    "acme,=HYPERLINK(\"http://evil.example/\",\"x\")",
    "acme, =1+1",
    "acme|@SUM(A1:A9)",
    "acme\n-2+3+cmd|' /C calc'!A0",
    "acme\r=1+1",
    "acme;  \u00a0+SUM(1)",
    "acme;\"=1+1\"",
    "acme;\uff1dSUM(A1)",
    "a;b;c;d;e;=1",
]


class TestCsvFormulas:
    @pytest.mark.parametrize("payload", PAYLOADS)
    def test_a_formula_after_any_separator_is_neutralised(self, payload: str) -> None:
        """Issue 9 item 19: a formula after ; TAB , | CR or LF gets the leading quote."""
        assert render_csv.safe_text(payload) == "'" + payload

    @pytest.mark.parametrize("value", ["-0.50", "+3", "12.", ".5", "-12.345678", "0"])
    def test_exact_decimals_stay_readable(self, value: str) -> None:
        """Issue 9 item 19: a plain decimal number (an adjustment "-0.50") is not a formula."""
        assert render_csv.safe_text(value) == value

    @pytest.mark.parametrize("value", ["acme", "comma, separated; semi", "a-b=c", "x - y",
                                       "naïve 中文 🙂", "HTTP 500: upstream; retry later"])
    def test_harmless_text_is_unchanged(self, value: str) -> None:
        """Issue 9 item 19: text with separators but no formula after them is left alone."""
        assert render_csv.safe_text(value) == value

    @settings(max_examples=600, deadline=None)
    @given(st.text(alphabet=st.sampled_from(
        list(SEPARATORS + FORMULA_CHARS + " \u00a0\u3000\"'.0123456789aZ|(")), max_size=12))
    @example("a;=1")
    @example("-1;=1")
    def test_no_cell_a_spreadsheet_could_run(self, value: str) -> None:
        """Issue 9 item 19: whatever the text, the written cell is the value itself when no
        piece of it is a formula, else the value behind a single quote."""
        written = render_csv.safe_text(value)
        if spreadsheet_would_run(value):
            assert written == "'" + value
        else:
            assert written == value

    def test_usage_and_invoice_csv_neutralise_names(self, book: Ledger) -> None:
        """Issue 9 item 19: project and model names with a hidden formula, through the usage
        and invoice CSV (parsed back: the name behind a quote, every row whole)."""
        project, model = PAYLOADS[0], PAYLOADS[4]
        book.set_price(model, Decimal("0.010"), effective_from=NOV)
        book.record(project, model, 1000, 0, at=NOV + timedelta(days=1))
        out = io.StringIO()
        render_csv.usage(out, _rows(book))
        rows = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
        assert [(r["project"], r["model"]) for r in rows] == [("'" + project, "'" + model)]
        out = io.StringIO()
        render_csv.invoices(out, [book.invoice(project, "2026-11", draft=True)])
        rows = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
        assert rows and all(r["project"] == "'" + project for r in rows)
        assert rows[0]["model"] == "'" + model and rows[0]["amount"] == "0.01"


def _rows(book: Ledger) -> Any:
    """Every usage row of ``book`` (reports read the ledger, or its store once split)."""
    from ledger.reports import usage_rows

    try:
        return list(usage_rows(book))
    except (AttributeError, TypeError):  # reports that take the store
        return list(usage_rows(book.store))  # type: ignore[arg-type]


# -- item 20: terminal escapes -----------------------------------------------------------------
OSC52 = "\x1b]52;c;SGVsbG8gY2xpcGJvYXJk\x07"
EVIL_TERMINAL = [
    f"clip{OSC52}board",
    "link\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\",
    "title\x1b]0;pwned\x07",
    "csi\x1b[2J\x1b[1;1H",
    "c1\x9b2J\x9d0;t\x9c",
    "bidi\u202egnp.exe",
    "isolate\u2066x\u2069 mark\u200f",
    "cr\roverwritten",
    "bell\x07 backspace\x08 del\x7f vt\x0b",
]
SGR = re.compile(r"\x1b\[[0-9;]*m")


def controls(text: str) -> list[str]:
    """Control characters left in printed text, once rich's own colour codes are removed."""
    return UNSAFE.findall(SGR.sub("", text))


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class TestTerminalEscapes:
    @pytest.mark.parametrize("name", EVIL_TERMINAL)
    def test_terminal_text_shows_controls_as_escapes(self, name: str) -> None:
        """Issue 9 item 20: every control character becomes a visible escape."""
        shown = terminal_text(name)
        assert controls(shown) == [] and "\x1b" not in shown
        assert ("\\x1b" in shown) == ("\x1b" in name)

    @settings(max_examples=300, deadline=None)
    @given(st.text())
    def test_terminal_text_never_passes_a_control(self, text: str) -> None:
        """Issue 9 item 20: nothing from UNSAFE survives, and safe text is untouched."""
        shown = terminal_text(text)
        assert UNSAFE.search(shown) is None
        if UNSAFE.search(text) is None:
            assert shown == text

    @pytest.mark.parametrize("tty", [True, False])
    def test_tables_print_no_control_from_names(self, book: Ledger, tty: bool) -> None:
        """Issue 9 item 20: a usage table of hostile project and model names, on a colour
        terminal and redirected, holds rich's colour codes at most, and stays aligned."""
        for i, name in enumerate(EVIL_TERMINAL):
            book.set_price(name, Decimal("0.010"), effective_from=NOV)
            book.record(name, name, 10 + i, 1, at=NOV + timedelta(days=1))
        out: io.StringIO = _Tty() if tty else io.StringIO()
        console = render_table.console(out, terminal=tty)
        console.width = 250  # a wide terminal: every column shown in full
        console.print(render_table.usage(_rows(book)))
        console.print(render_table.prices(book.prices()))
        printed = out.getvalue()
        assert controls(printed) == []
        assert ("\x1b[" in printed) == tty  # colours on a terminal only
        assert "]52;c;SGVsbG8gY2xpcGJvYXJk" in SGR.sub("", printed)  # the name, defused
        widths = {len(line) for line in SGR.sub("", printed).splitlines()
                  if line.startswith("│")}
        assert len(widths) <= 2  # usage and prices tables: each one width

    def test_cli_tables_and_messages_print_no_control(self, run: Run, book: Ledger,
                                                      tmp_path: Path) -> None:
        """Issue 9 item 20: budget set/list/report, price set/list, usage, invoice and error
        messages: no control character of the data's making reaches stdout or stderr."""
        for name in EVIL_TERMINAL:
            results = [
                run("price", "set", name, "0.010", "--from", "2026-11-01"),
                run("budget", "set", name, "5"),
            ]
            book.record(name, name, 100, 10, at=NOV + timedelta(days=2))
            results += [
                run("budget", "list"), run("budget", "report", "--month", "2026-11"),
                run("price", "list"), run("usage"),
                run("invoice", name, "--month", "2026-11", "--draft"),
                run("usage", "--output", str(tmp_path / f"missing{name}" / "x.csv")),
                run("estimate", "--model", name, "--prompt", "hi"),
            ]
            for result in results:
                assert controls(result.stdout) == [], (name, result.stdout)
                assert controls(result.stderr) == [], (name, result.stderr)
        assert "\\x1b]52;c;" in run("budget", "set", EVIL_TERMINAL[0], "5").stdout

    def test_json_stays_exact(self, run: Run, book: Ledger) -> None:
        """Issue 9 item 20: JSON output keeps names exact (its encoder escapes controls)."""
        import json

        book.record(EVIL_TERMINAL[0], "kimi-k2.5", 1, 1, at=NOV + timedelta(days=1))
        result = run("usage", "--format", "json")
        assert "\x1b" not in result.stdout
        assert json.loads(result.stdout)[0]["project"] == EVIL_TERMINAL[0]


# -- item 21: credentials in error texts -------------------------------------------------------
QUERY_KEY = "sk-query-SECRET-a1b2c3d4e5f6a7b8"
OTHER_TOKEN = "tok-ORG-SECRET-99887766554433"
SECRETS = [
    f"Invalid URL (POST /v1/chat/completions?api-key={QUERY_KEY})",
    f"GET https://runapi.ai/v1/x?model=m&api_key={QUERY_KEY}&n=1",
    f"https://maps.example/geo?key={QUERY_KEY}",
    f"?token={QUERY_KEY}&access_token={QUERY_KEY}",
    f"blob?sv=2024&sig={QUERY_KEY}&se=2026",
    f"X-Amz-Signature={QUERY_KEY}",
    f"token%3D{QUERY_KEY}",
    f'{{"api_key": "{QUERY_KEY}", "n": 1}}',
    f"Authorization: Bearer {OTHER_TOKEN}",
    f"header was Bearer {OTHER_TOKEN}.",
    f"x-api-key: {OTHER_TOKEN}",
    f"Incorrect API key provided: {QUERY_KEY}.",
    "proxy key lk_9f8e7d6c5b4a39281706 is revoked",
    f"postgresql://app:{OTHER_TOKEN}@db.internal/billing",
    f"Cookie: session={OTHER_TOKEN}; theme=dark",
]


def secret_parts(text: str) -> list[str]:
    return [s for s in (QUERY_KEY, QUERY_KEY[3:], OTHER_TOKEN, "9f8e7d6c5b4a39281706")
            if s in text]


class TestCredentialRedaction:
    @pytest.mark.parametrize("text", SECRETS)
    def test_credential_looking_values_are_blanked(self, text: str) -> None:
        """Issue 9 item 21: query parameters, bearer tokens, key shapes, header values."""
        assert secret_parts(text)
        kept = redact_text(text)
        assert secret_parts(kept) == [] and REDACTED in kept

    @pytest.mark.parametrize("text", [
        "HTTP 429: rate limited, retry in 2s", "max_tokens=100 is too large",
        "model kimi-k2.5 not found", "task-12345678 failed", "HTTP 400: Basic auth failed"])
    def test_ordinary_error_texts_are_kept(self, text: str) -> None:
        """Issue 9 item 21: error texts without credentials are not mangled."""
        assert redact_text(text) == text

    @settings(max_examples=300, deadline=None)
    @given(prefix=st.text(max_size=20), suffix=st.text(max_size=20),
           template=st.sampled_from(SECRETS))
    def test_redaction_holds_in_any_context_and_is_idempotent(
            self, prefix: str, suffix: str, template: str) -> None:
        """Issue 9 item 21: surrounded by anything, the credential is gone; twice is once."""
        text = f"{prefix} {template} {suffix}"
        kept = redact_text(text)
        assert secret_parts(kept) == [] or secret_parts(prefix + suffix)
        assert redact_text(kept) == kept

    def test_an_echoed_query_key_is_not_stored(
            self, book: Ledger, sim: RunAPISimulator, openai_client: openai.OpenAI,
            ledger_events: Callable[[Ledger], list[dict[str, Any]]],
            monkeypatch: pytest.MonkeyPatch) -> None:
        """Issue 9 item 21: a key sent in the query string and echoed in an upstream error
        body is kept neither in the events table nor in the spool."""
        for message in (SECRETS[0], SECRETS[8]):
            sim.enqueue(Behavior(status=400, error_message=message, retry_after=None))
            with pytest.raises(openai.BadRequestError):
                openai_client.chat.completions.create(
                    model="kimi-k2.5", messages=[{"role": "user", "content": "hi"}],
                    extra_query={"api-key": QUERY_KEY})
        assert sim.api_requests[0].query == f"api-key={QUERY_KEY}"  # it was really sent

        def down(*args: Any, **kwargs: Any) -> int:
            raise LedgerUnavailable("ledger database unavailable")

        with monkeypatch.context() as patch:
            patch.setattr(book.store, "settle", down)
            sim.enqueue(Behavior(status=400, error_message=SECRETS[1], retry_after=None))
            with pytest.raises(openai.BadRequestError):
                openai_client.chat.completions.create(
                    model="kimi-k2.5", messages=[{"role": "user", "content": "hi"}])
        spool = Path(book.spool.path).read_text()
        assert "call_id" in spool and secret_parts(spool) == [] and REDACTED in spool
        book.replay()
        errors = [e["error"] for e in ledger_events(book) if e["error"]]
        assert len(errors) == 3 and all(REDACTED in e for e in errors), errors
        assert secret_parts(" ".join(errors)) == []

    def test_void_and_settle_by_hand_redact_the_error(
            self, book: Ledger, ledger_events: Callable[[Ledger], list[dict[str, Any]]]) -> None:
        """Issue 9 item 21: Ledger.void / settle(error=...) and metered_call().void() keep no
        credential in the error text either."""
        book.void(book.hold("acme", "kimi-k2.5", 10, 10).call_id, error=SECRETS[2],
                  http_status=400)
        book.settle(book.hold("acme", "kimi-k2.5", 10, 10).call_id, 5, 5, error=SECRETS[9])
        with book.metered_call("acme", {"model": "kimi-k2.5", "max_tokens": 5,
                                        "messages": [{"role": "user", "content": "hi"}]}) as c:
            c.void(SECRETS[11], http_status=401)
        errors = [e["error"] for e in ledger_events(book) if e["error"]]
        assert len(errors) == 3 and secret_parts(" ".join(errors)) == [], errors


# -- item 22: --output over the ledger's own files ---------------------------------------------
class TestOutputOverOwnFiles:
    @pytest.fixture
    def db(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: ManualClock) -> Path:
        monkeypatch.chdir(tmp_path)
        with Ledger("sqlite:///ledger.db", clock=clock) as book:
            book.set_budget("acme", Decimal("5"))
            book.record("acme", "kimi-k2.5", 100, 10, at=NOV + timedelta(days=1))
        (tmp_path / "sub").mkdir()
        os.symlink(tmp_path / "ledger.db", tmp_path / "link.db")
        return tmp_path / "ledger.db"

    @pytest.mark.parametrize("target", [
        "ledger.db", "./ledger.db", "sub/../ledger.db", "{abs}", "link.db", "ledger.db-wal",
        "ledger.db-shm", "ledger.db-journal", "ledger.db.spool", "{abs}.spool.rejected"])
    @pytest.mark.parametrize("db_url", ["sqlite:///ledger.db", "sqlite:///{abs}",
                                        "sqlite:///./sub/../ledger.db"])
    def test_refused_with_one_line(self, db: Path, target: str, db_url: str,
                                   clock: ManualClock) -> None:
        """Issue 9 item 22: --output naming the database, its -wal/-shm/-journal or the spool
        (relative, absolute, through a symlink or ..) exits 2 and leaves the ledger whole."""
        runner = CliRunner()
        out = target.format(abs=db)
        url = db_url.format(abs=db)
        for args in (["usage", "--format", "csv"], ["budget", "report", "--format", "html"],
                     ["invoice", "acme", "--month", "2026-11", "--format", "pdf"]):
            result = runner.invoke(main, [*args, "--output", out],
                                   obj=CliState(db=url, clock=clock))
            line = fails(result, 2, "refusing to write over the ledger's own")
            assert os.path.realpath(db).split("/")[-1] in line
        with Ledger("sqlite:///ledger.db", clock=clock) as book:
            assert book.spend("acme", month="2026-11") == Decimal("0.0022")

    def test_other_files_are_written(self, db: Path, clock: ManualClock) -> None:
        """Issue 9 item 22: a file beside the database is still a fine output."""
        result = CliRunner().invoke(main, ["usage", "--format", "csv", "--output", "x.db"],
                                    obj=CliState(db="sqlite:///ledger.db", clock=clock))
        assert result.exit_code == 0, result.stderr
        assert "acme" in Path("x.db").read_text()

    def test_own_files_of_a_postgres_ledger_are_its_spool(self, tmp_path: Path) -> None:
        """Issue 9 item 22: a PostgreSQL ledger has no database file, but a spool."""
        spool = tmp_path / "pg.spool"
        files = own_files("postgresql://app@db.internal/billing", spool)
        assert files == (spool, Path(f"{spool}.rejected"))
        check_output(tmp_path / "report.html", "postgresql://app@db.internal/billing", spool)
        with pytest.raises(ValueError, match="own spool file"):
            check_output(spool, "postgresql://app@db.internal/billing", spool)
