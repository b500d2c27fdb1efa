"""The ``ledger`` command line, through click's CliRunner: every command, every error path.

stdout and stderr are checked separately (Click 8.2+ keeps them apart). Bad input gets exactly
one line on stderr, exit code 2, and never a traceback.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pypdf
import pytest
from click.testing import CliRunner, Result

from ledger import Ledger, ManualClock
from ledger.cli import main
from ledger.cli.options import CliState
from ledger.store.schema import events, to_micros

NOV = datetime(2026, 11, 1, tzinfo=UTC)
EVIL = "=HYPERLINK(\"http://evil\") <script>alert('x')</script>"

Run = Callable[..., Result]


@pytest.fixture
def run(sqlite_url: str, clock: ManualClock) -> Run:
    runner = CliRunner()

    def invoke(*args: str, input: str | bytes | None = None, db: str | None = sqlite_url,
               env: dict[str, str] | None = None) -> Result:
        return runner.invoke(main, list(args), obj=CliState(db=db, clock=clock), input=input,
                             env=env)

    return invoke


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result.stdout


def fails(result: Result, code: int = 2, match: str = "") -> str:
    """Exit ``code``, nothing on stdout, one line on stderr (no traceback)."""
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert match.lower() in lines[0].lower(), lines[0]
    return lines[0]


@pytest.fixture
def usage(book: Ledger) -> Ledger:
    """acme: $0.010 until Nov 15 then $0.050/$0.030 for "m"; an evil project; a failure."""
    book.set_price("m", Decimal("0.010"), effective_from=NOV)
    book.set_price("m", input_per_1k=Decimal("0.050"), output_per_1k=Decimal("0.030"),
                   effective_from=NOV + timedelta(days=14))
    book.set_budget("acme", Decimal("1.00"))
    book.record("acme", "m", 1234, 567, at=NOV + timedelta(days=2))        # 0.01801
    book.record("acme", "m", 1000, 2000, at=NOV + timedelta(days=16))      # 0.11
    book.record(EVIL, "kimi-k2.5", 1000, 0, at=NOV + timedelta(days=3))    # 0.02
    book.void(book.hold("acme", "m", 10, 10).call_id, error="HTTP 500", http_status=500)
    return book


class Html(HTMLParser):
    """Collects start tags and text; fails on unbalanced non-void tags."""

    VOID = frozenset({"meta", "br", "rect", "line", "polyline", "img", "hr", "link", "input",
                      "col"})

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.stack: list[str] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()
        assert self.stack == [], self.stack

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.stack and self.stack[-1] == tag, (tag, self.stack)
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


# -- global ------------------------------------------------------------------------------------
class TestGlobal:
    def test_version_and_help_need_no_database(self, run: Run) -> None:
        assert ok(run("--version")).startswith("ledger ")
        assert "Example:" in ok(run("-h", db="sqlite:////nonexistent/dir/x.db"))

    def test_db_from_the_environment(self, sqlite_url: str, book: Ledger) -> None:
        book.set_price("env-model", Decimal("0.5"))
        result = CliRunner().invoke(main, ["price", "list", "--format", "csv"],
                                    env={"LEDGER_DATABASE_URL": sqlite_url})
        assert "env-model" in ok(result)

    @pytest.mark.parametrize("url, match", [
        ("sqlite:////etc/passwd/ledger.db", ""),
        ("no-such-dialect://x", "database URL"),
        ("not a url", "database URL"),
        ("postgresql://nobody@127.0.0.1:1/nothing", "cannot"),
    ])
    def test_a_database_that_does_not_connect(self, run: Run, url: str, match: str) -> None:
        fails(run("price", "list", db=url), 2, match)

    def test_an_internal_error_is_one_line_with_exit_70(self, run: Run,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
        def boom(*a: object, **k: object) -> None:
            raise RuntimeError("kaboom")

        monkeypatch.setattr(Ledger, "prices", boom)
        assert "kaboom" in fails(run("price", "list"), 70, "internal error")

    def test_unknown_command_and_option(self, run: Run) -> None:
        fails(run("frobnicate"), 2, "No such command")
        fails(run("price", "list", "--colour"), 2, "No such option")

    def test_python_dash_m_and_a_closed_pipe(self, sqlite_url: str, book: Ledger) -> None:
        """A real process: ``python -m ledger``, and ``| head -1`` ends quietly."""
        start = to_micros(NOV)
        with book.store.write() as conn:
            conn.execute(events.insert(), [
                {"call_id": None, "project": "big", "month": "2026-11", "at": start + i,
                 "model": "kimi-k2.5", "status": "ok", "estimated": False,
                 "prompt_tokens": 10, "completion_tokens": 10, "cached_tokens": 0,
                 "est_prompt_tokens": None, "input_price": 200_000, "output_price": 200_000,
                 "cached_price": None, "cost": 4_000_000, "http_status": None,
                 "error": "x" * 100, "invoice_id": None, "recorded_at": start}
                for i in range(3000)])
        proc = subprocess.run(
            f"{sys.executable} -m ledger --db {sqlite_url} usage --format csv | head -1",
            shell=True, capture_output=True, text=True, timeout=60)
        assert proc.stdout.startswith("id,at,project")
        assert proc.stderr == ""


# -- db, replay --------------------------------------------------------------------------------
def test_db_upgrade(run: Run) -> None:
    assert ok(run("db", "upgrade")).startswith("upgraded to revision")
    assert ok(run("db", "upgrade")).startswith("already at revision")


def test_replay(run: Run) -> None:
    assert ok(run("replay")).startswith("replayed 0 spooled entries")


# -- prices ------------------------------------------------------------------------------------
class TestPrice:
    def test_set_and_list(self, run: Run) -> None:
        assert "input $0.030, output $0.030" in ok(run("price", "set", "m", "0.03"))
        out = ok(run("price", "set", "m2", "--input-per-1k", "0.01", "--output-per-1k",
                     "$0.02", "--cached-input-per-1k", "0.005", "--from", "2026-11-15"))
        assert "from 2026-11-15T00:00:00+00:00" in out and "cached input $0.005" in out
        table = ok(run("price", "list"))
        assert "kimi-k2.5" in table and "m2" in table and "$0.005" in table
        data = json.loads(ok(run("price", "list", "--format", "json")))
        m2 = next(p for p in data["prices"] if p["model"] == "m2")
        assert m2 == {"model": "m2", "effective_from": "2026-11-15T00:00:00+00:00",
                      "input_per_1k": "0.010", "output_per_1k": "0.020",
                      "cached_input_per_1k": "0.005"}
        rows = list(csv.DictReader(io.StringIO(ok(run("price", "list", "--format", "csv")))))
        assert {"kimi-k2.5", "kimi-k2.6", "m", "m2"} == {r["model"] for r in rows}

    @pytest.mark.parametrize("args, match", [
        (["m", "--", "-0.01"], "negative"),
        (["m", "abc"], "number"),
        (["m", "NaN"], "finite"),
        (["m"], "per_1k"),
        (["m", "--input-per-1k", "0.01"], "per_1k"),
        (["m", "0.01", "--from", "next tuesday"], "--from"),
        (["m", "0.00000001"], "decimal places"),
        (["", "0.01"], "model"),
    ])
    def test_bad_input(self, run: Run, args: list[str], match: str) -> None:
        fails(run("price", "set", *args), 2, match)

    def test_unknown_format(self, run: Run) -> None:
        fails(run("price", "list", "--format", "xml"), 2, "--format")


# -- budgets -----------------------------------------------------------------------------------
class TestBudget:
    def test_set_and_list(self, run: Run) -> None:
        assert "$50.00 per month (hard" in ok(run("budget", "set", "acme", "50"))
        assert "soft" in ok(run("budget", "set", "lab", "$12.5", "--soft"))
        table = ok(run("budget", "list"))
        assert "acme" in table and "$50.00" in table and "soft" in table
        data = json.loads(ok(run("budget", "list", "--format", "json")))
        assert data["month"] == "2026-11"
        assert [(b["project"], b["limit"], b["budget"]) for b in data["budgets"]] == [
            ("acme", "50.00", "hard"), ("lab", "12.50", "soft")]
        rows = list(csv.DictReader(io.StringIO(ok(run("budget", "list", "--format", "csv")))))
        assert rows[0]["project"] == "acme" and rows[0]["remaining"] == "50.00"

    @pytest.mark.parametrize("limit, match", [
        ("-5", "positive"), ("0", "positive"), ("abc", "number"), ("1e12", "at most"),
        ("1.00000000001", "decimal places"),
    ])
    def test_bad_limit(self, run: Run, limit: str, match: str) -> None:
        fails(run("budget", "set", "acme", "--", limit), 2, match)

    def test_report_table(self, run: Run, usage: Ledger) -> None:
        out = ok(run("budget", "report", "--month", "2026-11"))
        assert "acme" in out and "Forecast" in out and "Total" in out
        assert "<script>" in out  # a name is printed as written, never as markup

    def test_report_json(self, run: Run, usage: Ledger) -> None:
        data = json.loads(ok(run("budget", "report", "--month", "2026-11", "--format", "json")))
        assert data["month"] == "2026-11"
        acme = next(p for p in data["projects"] if p["project"] == "acme")
        assert {"project", "limit", "spent", "reserved", "remaining", "percent_used",
                "forecast"} <= set(acme)
        assert (acme["limit"], acme["spent"], acme["reserved"]) == ("1.00", "0.12801", "0.00")
        assert acme["status"] == "ok"

    def test_report_csv_neutralises_formulas(self, run: Run, usage: Ledger) -> None:
        text = ok(run("budget", "report", "--format", "csv"))
        rows = list(csv.DictReader(io.StringIO(text)))
        evil = next(r for r in rows if "script" in r["project"])
        assert evil["project"] == "'" + EVIL  # EVIL starts with "=": a formula, neutralised
        assert not any(r["project"].startswith(("=", "+", "-", "@")) for r in rows)

    def test_report_html_to_a_file(self, run: Run, usage: Ledger, tmp_path: Path) -> None:
        target = tmp_path / "report.html"
        assert ok(run("budget", "report", "--format", "html", "--output", str(target))) == ""
        page = Html(target.read_text())
        assert "script" not in page.tags and page.tags.count("svg") == 2
        assert EVIL in "".join(page.text)
        assert not {"link", "img", "iframe"} & set(page.tags)  # self-contained
        assert "src=" not in target.read_text()

    def test_report_bad_month_and_format(self, run: Run) -> None:
        fails(run("budget", "report", "--month", "2026-13"), 2, "YYYY-MM")
        fails(run("budget", "report", "--format", "pdf"), 2, "--format")

    def test_report_output_to_a_missing_directory(self, run: Run, tmp_path: Path) -> None:
        fails(run("budget", "report", "--output", str(tmp_path / "no" / "r.txt")), 2,
              "No such file")


# -- estimate ----------------------------------------------------------------------------------
class TestEstimate:
    def test_prompt(self, run: Run) -> None:
        out = ok(run("estimate", "--model", "kimi-k2.5", "--prompt", "Hello there",
                     "--max-tokens", "500"))
        assert "Prompt tokens" in out and "500" in out and "Worst-case cost" in out

    def test_messages_file_json_and_fit(self, run: Run, book: Ledger, tmp_path: Path) -> None:
        book.set_budget("acme", Decimal("0.05"))
        body = tmp_path / "req.json"
        body.write_text(json.dumps({"model": "kimi-k2.5", "max_tokens": 1000,
                                    "messages": [{"role": "user", "content": "hi"}]}))
        data = json.loads(ok(run("estimate", "--messages", str(body), "--project", "acme",
                                 "--format", "json")))
        assert data["max_completion_tokens"] == 1000 and data["fits"] is True
        assert Decimal(data["cost"]) == Decimal(data["prompt_tokens"] + 1000) * Decimal(
            "0.00002")
        assert data["remaining"] == "0.05" and data["budget"] == "hard"
        result = run("estimate", "--messages", str(body), "--max-tokens", "5000", "--project",
                     "acme", "--format", "json")
        assert result.exit_code == 1 and result.stderr == ""
        data = json.loads(result.stdout)
        assert data["fits"] is False and data["would_be_refused"] is True

    def test_stdin_text_and_json(self, run: Run) -> None:
        assert "Prompt tokens" in ok(run("estimate", "-m", "kimi-k2.5", input="Hello\n"))
        messages = json.dumps([{"role": "user", "content": "hi"}])
        data = json.loads(ok(run("estimate", "-m", "kimi-k2.6", "--format", "json",
                                 input=messages)))
        assert data["model"] == "kimi-k2.6" and data["capped_by_default"] is True

    def test_a_project_without_budget_always_fits(self, run: Run) -> None:
        out = ok(run("estimate", "-m", "kimi-k2.5", "-p", "hi", "--project", "free"))
        assert "never refused" in out

    @pytest.mark.parametrize("args, stdin, match", [
        (["-m", "kimi-k2.5"], "", "empty"),
        (["-m", "kimi-k2.5", "--messages", "/no/such/file.json"], None, "No such file"),
        (["-m", "nope", "-p", "hi"], None, "no price for model"),
        (["-p", "hi"], None, "--model"),
        (["-m", "kimi-k2.5", "-p", "hi", "--messages", "-"], None, "not both"),
        (["-m", "kimi-k2.5", "--messages", "-"], "{not json", "not valid JSON"),
        (["-m", "kimi-k2.5", "--messages", "-"], "42", "list of messages"),
        (["-m", "kimi-k2.5", "-p", "hi", "--max-tokens", "-3"], None, "--max-tokens"),
    ])
    def test_bad_input(self, run: Run, args: list[str], stdin: str | None, match: str) -> None:
        fails(run("estimate", *args, input=stdin), 2, match)


# -- usage -------------------------------------------------------------------------------------
class TestUsage:
    def test_table(self, run: Run, usage: Ledger) -> None:
        out = ok(run("usage", "--project", "acme"))
        assert "failed" in out and "$0.01801" in out

    def test_csv(self, run: Run, usage: Ledger) -> None:
        rows = list(csv.DictReader(io.StringIO(ok(run("usage", "--format", "csv")))))
        assert len(rows) == 4
        assert rows[0]["cost"] == "0.01801" and rows[0]["input_per_1k"] == "0.010"
        assert not any(r["project"].startswith(("=", "+", "-", "@")) for r in rows)

    def test_json_is_one_streamed_array(self, run: Run, usage: Ledger) -> None:
        data = json.loads(ok(run("usage", "--format", "json", "--status", "failed")))
        assert [(r["project"], r["status"], r["cost"], r["http_status"]) for r in data] == [
            ("acme", "failed", "0.00", 500)]
        assert json.loads(ok(run("usage", "--format", "json", "--model", "none"))) == []

    def test_jsonl_filters_and_output_file(self, run: Run, usage: Ledger,
                                           tmp_path: Path) -> None:
        target = tmp_path / "u.jsonl"
        assert ok(run("usage", "--format", "jsonl", "--month", "2026-11", "--model", "m",
                      "--status", "ok", "-o", str(target))) == ""
        rows = [json.loads(line) for line in target.read_text().splitlines()]
        assert [r["cost"] for r in rows] == ["0.01801", "0.11"]

    def test_limit_and_more_note(self, run: Run, usage: Ledger) -> None:
        result = run("usage", "--limit", "1")
        assert result.exit_code == 0 and "3 more" in result.stderr

    def test_calibration(self, run: Run, book: Ledger) -> None:
        h = book.hold("acme", "kimi-k2.5", 100, 10)
        book.settle(h.call_id, 90, 5)
        assert "kimi-k2.5" in ok(run("usage", "--calibration"))
        data = json.loads(ok(run("usage", "--calibration", "--format", "json")))
        assert data["calibration"][0]["ratio"] == "0.9000"
        assert "0.9000" in ok(run("usage", "--calibration", "--format", "csv"))

    def test_bad_input(self, run: Run) -> None:
        fails(run("usage", "--status", "weird"), 2, "--status")
        fails(run("usage", "--month", "november"), 2, "YYYY-MM")
        fails(run("usage", "--format", "xlsx"), 2, "--format")
        fails(run("usage", "--limit", "-1"), 2, "--limit")


# -- invoices ----------------------------------------------------------------------------------
DEC = datetime(2026, 12, 2, tzinfo=UTC)


class TestInvoice:
    @pytest.fixture(autouse=True)
    def november_is_over(self, clock: ManualClock) -> None:
        """The clock on Dec 2: November (the usage fixture's month) can be issued."""
        clock.set(DEC)

    def test_table(self, run: Run, usage: Ledger) -> None:
        result = run("invoice", "acme", "--month", "2026-11")
        out = ok(result)
        assert "INV-000001" in out and "$0.02" in out and "$0.11" in out and "$0.13" in out

    def test_json_keys_and_total(self, run: Run, usage: Ledger) -> None:
        data = json.loads(ok(run("invoice", "acme", "--month", "2026-11", "--format", "json")))
        assert {"project", "month", "currency", "lines", "total"} <= set(data)
        assert (data["project"], data["month"], data["currency"]) == ("acme", "2026-11", "USD")
        assert [(ln["model"], ln["input_per_1k"], ln["prompt_tokens"], ln["completion_tokens"],
                 ln["amount"]) for ln in data["lines"]] == [
            ("m", "0.010", 1234, 567, "0.02"), ("m", "0.050", 1000, 2000, "0.11")]
        assert data["total"] == "0.13"
        assert Decimal(data["total"]) == sum(Decimal(ln["amount"]) for ln in data["lines"])
        again = json.loads(ok(run("invoice", "acme", "--month", "2026-11", "--format", "json")))
        assert again == data  # frozen: the same document

    def test_draft_and_late_usage(self, run: Run, usage: Ledger, clock: ManualClock) -> None:
        draft = json.loads(ok(run("invoice", "acme", "--month", "2026-11", "--draft",
                                  "--format", "json")))
        assert draft["draft"] is True and draft["number"] is None
        issued = json.loads(ok(run("invoice", "acme", "--month", "2026-11", "--format",
                                   "json")))
        assert issued["number"] == 1 and issued["total"] == draft["total"]
        usage.record("acme", "m", 1000, 0, at=NOV + timedelta(days=20))  # late: 0.05
        usage.record("acme", "kimi-k2.5", 1000, 0, at=datetime(2026, 12, 1, tzinfo=UTC))
        clock.set(datetime(2027, 1, 2, tzinfo=UTC))
        dec = json.loads(ok(run("invoice", "acme", "--month", "2026-12", "--format", "json")))
        assert [(ln["kind"], ln["adjusts_month"], ln["amount"]) for ln in dec["lines"]] == [
            ("usage", None, "0.02"), ("adjustment", "2026-11", "0.05")]
        assert dec["number"] == 2 and dec["total"] == "0.07"
        nov = json.loads(ok(run("invoice", "acme", "--month", "2026-11", "--format", "json")))
        assert nov == issued

    def test_issuing_an_unfinished_or_future_month_is_refused(self, run: Run, usage: Ledger,
                                                              clock: ManualClock) -> None:
        """Issue 11: one clear line, exit 2; --draft still works; nothing was numbered."""
        clock.set(NOV + timedelta(days=9))
        fails(run("invoice", "acme", "--month", "2026-11"), 2, "not over")
        fails(run("invoice", "acme", "--month", "2027-01"), 2, "future")
        draft = json.loads(ok(run("invoice", "acme", "--month", "2026-11", "--draft",
                                  "--format", "json")))
        assert draft["number"] is None and draft["total"] == "0.13"
        clock.set(DEC)
        assert json.loads(ok(run("invoice", "acme", "--month", "2026-11", "--format",
                                 "json")))["number"] == 1

    def test_csv(self, run: Run, usage: Ledger) -> None:
        rows = list(csv.DictReader(io.StringIO(ok(run("invoice", "acme", "--month", "2026-11",
                                                      "--format", "csv")))))
        assert [(r["model"], r["amount"], r["invoice_total"]) for r in rows] == [
            ("m", "0.02", "0.13"), ("m", "0.11", "0.13")]

    def test_html_parses_and_escapes(self, run: Run, usage: Ledger) -> None:
        page = Html(ok(run("invoice", EVIL, "--month", "2026-11", "--format", "html")))
        assert "script" not in page.tags and "table" in page.tags
        text = "".join(page.text)
        assert EVIL in text and "$0.02" in text

    def test_pdf_file_and_stdout(self, run: Run, usage: Ledger, tmp_path: Path) -> None:
        target = tmp_path / "inv.pdf"
        ok(run("invoice", "acme", "--month", "2026-11", "--format", "pdf", "-o", str(target)))
        text = pypdf.PdfReader(target).pages[0].extract_text()
        assert "$0.13" in text and "INV-000001" in text and "acme" in text
        result = CliRunner().invoke(main, ["invoice", "acme", "--month", "2026-11",
                                           "--format", "pdf"],
                                    obj=CliState(db=usage.url, clock=usage.clock))
        assert result.exit_code == 0 and result.stdout_bytes.startswith(b"%PDF-")

    def test_pdf_without_a_unicode_font(self, run: Run, usage: Ledger, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("LEDGER_PDF_FONT", "")
        usage.record("Zürich 東京", "kimi-k2.5", 1000, 0, at=NOV + timedelta(days=3))
        target = tmp_path / "inv.pdf"
        ok(run("invoice", "Zürich 東京", "--month", "2026-11", "--format", "pdf", "-o",
               str(target)))
        text = pypdf.PdfReader(target).pages[0].extract_text()
        assert "Zürich ??" in text and "$0.02" in text

    def test_all(self, run: Run, usage: Ledger) -> None:
        usage.record("beta", "kimi-k2.5", 500, 0, at=NOV + timedelta(days=3))
        data = json.loads(ok(run("invoice", "--all", "--month", "2026-11", "--format", "json")))
        assert [(i["project"], i["number"], i["total"]) for i in data["invoices"]] == [
            (EVIL, 1, "0.02"), ("acme", 2, "0.13"), ("beta", 3, "0.01")]
        assert data["total"] == "0.16"
        table = ok(run("invoice", "--all", "--month", "2026-11"))
        assert table.count("Invoice INV-") == 3
        page = Html(ok(run("invoice", "--all", "--month", "2026-11", "--format", "html")))
        assert page.tags.count("h1") == 3

    def test_a_project_with_no_usage_is_a_zero_invoice(self, run: Run) -> None:
        """Issue 11: unknown project refused; a known customer's $0.00 month is unnumbered
        unless --include-empty."""
        fails(run("invoice", "ghost", "--month", "2026-10"), 2, "no usage and no customer")
        ok(run("customer", "set", "ghost", "--name", "Ghost Ltd"))
        result = run("invoice", "ghost", "--month", "2026-10", "--format", "json")
        data = json.loads(ok(result))
        assert (data["lines"], data["total"], data["number"]) == ([], "0.00", None)
        assert "not numbered" in result.stderr
        assert "No usage" in ok(run("invoice", "ghost", "--month", "2026-10"))
        data = json.loads(ok(run("invoice", "ghost", "--month", "2026-10", "--include-empty",
                                 "--format", "json")))
        assert data["number"] == 1 and data["total"] == "0.00"

    @pytest.mark.parametrize("args, match", [
        (["--month", "2026-11"], "PROJECT or --all"),
        (["acme", "--all", "--month", "2026-11"], "PROJECT or --all"),
        (["acme"], "--month"),
        (["acme", "--month", "2026-00"], "YYYY-MM"),
        (["acme", "--month", "26-11"], "YYYY-MM"),
        (["acme", "--month", "2026-11", "--format", "docx"], "--format"),
        (["", "--month", "2026-11"], "project"),
    ])
    def test_bad_input(self, run: Run, args: list[str], match: str) -> None:
        fails(run("invoice", *args), 2, match)

    def test_unwritable_output(self, run: Run, tmp_path: Path) -> None:
        fails(run("invoice", "acme", "--month", "2026-11", "--format", "pdf",
                  "--output", str(tmp_path / "missing" / "x.pdf")), 2, "No such file")
        assert not list(tmp_path.iterdir())


class TestInvoiceLifecycleCli:
    """Issue 11: `ledger issuer set`, `ledger customer set`, `ledger invoice list` and `void`."""

    @pytest.fixture(autouse=True)
    def november_is_over(self, clock: ManualClock) -> None:
        clock.set(DEC)

    def test_parties_list_and_void(self, run: Run, usage: Ledger, tmp_path: Path) -> None:
        """Issue 11: the document carries the parties; void prints a credit note; re-issue."""
        ok(run("issuer", "set", "--name", "Seller Ltd", "--address", "1 Main St\\nLondon",
               "--tax-id", "GB1", "--payment-terms-days", "14"))
        ok(run("customer", "set", "acme", "--name", "Café Zürich — 東京", "--email",
               "b@acme.test", "--tax-rate", "0.20", "--tax-name", "VAT"))
        data = json.loads(ok(run("invoice", "acme", "--month", "2026-11", "--format", "json")))
        assert data["issuer"]["name"] == "Seller Ltd" and data["issuer"]["address"] == \
            "1 Main St\nLondon"
        assert data["customer"]["name"] == "Café Zürich — 東京"
        assert (data["subtotal"], data["tax"], data["total"]) == ("0.13", "0.03", "0.16")
        assert data["due_at"].startswith("2026-12-16")
        listed = json.loads(ok(run("invoice", "list", "--format", "json")))["invoices"]
        assert [(i["number"], i["state"], i["total"]) for i in listed] == [
            ("INV-000001", "issued", "0.16")]
        note = json.loads(ok(run("invoice", "void", "INV-000001", "--reason", "typo",
                                 "--format", "json")))
        assert (note["number"], note["invoice_number"], note["total"]) == (
            "CN-000001", "INV-000001", "-0.16")
        target = tmp_path / "cn.pdf"
        fails(run("invoice", "void", "INV-000001", "--reason", "again"), 2, "already void")
        table = ok(run("invoice", "list"))
        assert "INV-000001" in table and "void (CN-000001)" in table
        again = json.loads(ok(run("invoice", "acme", "--month", "2026-11", "--format",
                                  "json")))
        assert again["number"] == 2 and again["total"] == "0.16"
        ok(run("invoice", "void", "INV-000002", "--reason", "pdf", "--format", "pdf", "-o",
               str(target)))
        text = pypdf.PdfReader(target).pages[0].extract_text()
        assert "CN-000002" in text and "INV-000002" in text and "Café Zürich — 東京" in text

    @pytest.mark.parametrize("args, match", [
        (["customer", "set", "acme", "--name", "A", "--tax-rate", "1.5"], "tax_rate"),
        (["customer", "set", "acme", "--name", "A", "--tax-rate", "x"], "tax_rate"),
        (["customer", "set", "acme", "--name", "A", "--email", "nope"], "email"),
        (["issuer", "set", "--name", " "], "name"),
        (["invoice", "void", "INV-000042", "--reason", "x"], "no invoice"),
        (["invoice", "void", "INV-000001"], "--reason"),
    ])
    def test_bad_input(self, run: Run, args: list[str], match: str) -> None:
        """Issue 11: one line on stderr, exit 2."""
        fails(run(*args), 2, match)
