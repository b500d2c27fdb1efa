"""Exports of millions of rows (issue 14): ``ledger usage --format csv|jsonl|json`` through raw
DBAPI cursors and a streaming writer, byte for byte what the row-by-row rendering writes.

The row rendering (``usage_rows`` -> ``UsageRow`` -> ``render.csv.usage`` / ``to_dict``) is the
reference: every fast path is checked against it, on SQLite and PostgreSQL, over rows chosen to
reach every branch (end users, tags, hostile names, failed and refused calls, cached and
reasoning tokens, estimates, instants with and without microseconds).
"""

from __future__ import annotations

import csv
import io
import json
import random
import tracemalloc
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from click.testing import CliRunner
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from ledger import Ledger, ManualClock
from ledger.cli import main
from ledger.money import MAX_UNITS, from_units, money_str, price_from_units, units_str
from ledger.render import csv as render_csv
from ledger.render import json as render_json
from ledger.render.csv import SEPARATORS
from ledger.reports import ExactStrings, usage_dicts, usage_records, usage_rows
from ledger.store.schema import EPOCH, events, from_micros, to_micros

NOV = datetime(2026, 11, 1, tzinfo=UTC)

#: Names a spreadsheet or a terminal would misread (formulas after separators, quotes, line
#: breaks, full-width signs, escapes), and harmless ones that look close.
HOSTILE = [
    "=cmd|' /C calc'!A0", "acme;=cmd|' /C calc'!A0", "acme,=HYPERLINK(\"http://e/\",\"x\")",
    "+1", "-0.50", "@SUM(A1)", "acme\n-2+3", "acme\r=1+1", " \"=1\"", "\uff1dSUM(A1)",
    "say \"hi\", twice", "title\x1b]0;pwned\x07", "bidi\u202egnp.exe", "a-b=c", "naïve 中文 🙂",
]


def _event(i: int, **values: object) -> dict[str, object]:
    row: dict[str, object] = {
        "call_id": f"c-{i}", "project": "acme", "month": "2026-11",
        "at": to_micros(NOV + timedelta(days=1, seconds=i)), "model": "kimi-k2.5",
        "status": "ok", "estimated": False, "prompt_tokens": 10, "completion_tokens": 10,
        "cached_tokens": 0, "est_prompt_tokens": None, "input_price": 200_000,
        "output_price": 200_000, "cached_price": None, "cost": 4_000_000, "http_status": None,
        "error": None, "invoice_id": None, "recorded_at": to_micros(NOV), "reasoning_tokens": None,
        "user": None, "tags": None}
    row.update(values)
    return row


@pytest.fixture
def mixed(any_book: Ledger) -> Ledger:
    """A ledger with one of every kind of row a usage export meets."""
    b = any_book
    b.set_price("kimi-cached", input_per_1k=Decimal("0.0123457"), output_per_1k=Decimal("0.5"),
                cached_input_per_1k=Decimal("0.001"), effective_from=NOV)
    b.record("acme", "kimi-k2.5", 100, 50, at=NOV + timedelta(days=2), user="alice",
             tags={"env": "prod", "feature": "search"})
    b.record("acme", "kimi-cached", 1000, 7, cached_tokens=600, user="bob", tags="env=dev",
             at=NOV + timedelta(days=2, microseconds=1))
    b.record("beta", "kimi-k2.6", 300, 50, at=datetime(2026, 10, 3, tzinfo=UTC))
    for i, name in enumerate(HOSTILE):
        b.set_price(name, Decimal("0.002"), effective_from=NOV)
        b.record(name, name, 10 + i, 3, at=NOV + timedelta(days=3, minutes=i), user=f"u{i}",
                 request_id=f"req-{i}")
    b.void(b.hold("acme", "kimi-k2.5", 10, 10).call_id, error="HTTP 503; =1+1, \"retry\"",
           http_status=503)
    b.settle(b.hold("acme", "kimi-k2.5", 10, 10).call_id, 10, 10, estimated=True)
    b.store.record_refused("r1", "acme", "kimi-k2.5", b.now(), b.now(), "over budget", 10)
    with b.store.write() as conn:  # what the API does not make: values at their edges
        conn.execute(events.insert(), [
            _event(1, reasoning_tokens=40, tags=",k=v,", http_status=200, cost=0),
            _event(2, call_id=None, user="", tags="", error="", cost=MAX_UNITS),
            _event(3, call_id="-cmd", error="\t=tab", cost=-5_000_000_000, at=to_micros(EPOCH)),
            _event(4, call_id="=1", cached_price=7, est_prompt_tokens=12,
                   at=to_micros(datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=UTC))),
        ])
    return b


def _reference_csv(book: Ledger, **filters: str) -> str:
    out = io.StringIO(newline="")
    render_csv.usage(out, usage_rows(book.store, **filters))
    return out.getvalue()


def _streamed_csv(book: Ledger, **filters: str) -> str:
    out = io.StringIO(newline="")
    render_csv.usage_records(out, usage_records(book.store, batch=3, **filters),
                             flush_every=4)
    return out.getvalue()


class TestStreamingEqualsRendering:
    def test_csv_is_byte_for_byte_the_row_rendering(self, mixed: Ledger) -> None:
        """The streamed CSV of every kind of row is exactly the row-by-row rendering."""
        reference = _reference_csv(mixed)
        assert _streamed_csv(mixed) == reference
        assert len(list(csv.reader(io.StringIO(reference, newline="")))) == 1 + 25

    def test_csv_neutralises_every_hostile_name(self, mixed: Ledger) -> None:
        """Every formula in a name, call id or error comes out behind a single quote."""
        rows = list(csv.DictReader(io.StringIO(_streamed_csv(mixed), newline="")))
        for name in HOSTILE:
            (row,) = [r for r in rows if r["project"] in (name, "'" + name)]
            assert row["project"] == row["model"] == render_csv.safe_text(name)
        assert {r["call_id"] for r in rows} >= {"'-cmd", "'=1"}
        assert "'\t=tab" in {r["error"] for r in rows}

    def test_csv_with_filters(self, mixed: Ledger) -> None:
        """Filters (end user, tag, status, month) give the rendering's rows too."""
        for filters in ({"user": "alice"}, {"tag": "env=dev"}, {"status": "failed"},
                        {"status": "estimated"}, {"month": "2026-10"}, {"project": "nobody"}):
            assert _streamed_csv(mixed, **filters) == _reference_csv(mixed, **filters)

    def test_jsonl_and_json_are_the_row_dicts(self, mixed: Ledger) -> None:
        """JSON Lines and the JSON array of records are what ``UsageRow.to_dict`` writes."""
        for stream in (render_json.stream_lines, render_json.stream_array):
            reference, streamed = io.StringIO(), io.StringIO()
            stream((r.to_dict() for r in usage_rows(mixed.store)), reference)
            stream(usage_dicts(usage_records(mixed.store, batch=2)), streamed)
            assert streamed.getvalue() == reference.getvalue()

    def test_the_cli_writes_the_streamed_rendering(self, mixed: Ledger, any_url: str) -> None:
        """``ledger usage --format csv|jsonl`` (with and without --limit) is the rendering."""
        runner = CliRunner()

        def cli(*args: str) -> str:
            result = runner.invoke(main, ["--db", any_url, "usage", *args])
            assert result.exit_code == 0, result.output
            return result.stdout_bytes.decode()

        assert cli("--format", "csv") == _reference_csv(mixed)
        limited = _reference_csv(mixed).split("\r\n")[:6]
        assert cli("--format", "csv", "--limit", "5") == "\r\n".join(limited) + "\r\n"
        lines = [json.dumps(r.to_dict(), ensure_ascii=False) for r in usage_rows(mixed.store)]
        assert cli("--format", "jsonl").splitlines() == lines


class TestExactStrings:
    @settings(max_examples=500, deadline=None)
    @given(st.integers(min_value=-MAX_UNITS, max_value=MAX_UNITS))
    @example(0)
    @example(-1)
    @example(10**10)
    @example(-5 * 10**9)
    @example(123 * 10**10)
    def test_an_amount_from_its_units_is_money_str(self, units: int) -> None:
        """``units_str`` is ``money_str(from_units(...))`` for every storable amount."""
        assert units_str(units) == money_str(from_units(units))

    def test_amounts_at_every_scale(self) -> None:
        """Amounts of every magnitude and trailing-zero pattern convert exactly."""
        rng = random.Random(14)
        for _ in range(20_000):
            units = rng.randint(0, 10_000) * 10 ** rng.randint(0, 14) * rng.choice((1, -1))
            assert units_str(units) == money_str(from_units(units))

    def test_prices_and_instants(self) -> None:
        """Prices and instants are what the Decimal and datetime would print."""
        strings = ExactStrings()
        for units in (0, 1, 7, 200_000, 123_457, 10**10):
            assert strings.price(units) == money_str(price_from_units(units))
        rng = random.Random(3)
        instants = [0, 1, -1, 999_999, 1_000_000, -86_400_000_001,
                    to_micros(datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=UTC)),
                    to_micros(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))]
        instants += [rng.randint(-10**16, 10**17) for _ in range(5_000)]
        for micros in instants * 2:  # the second time from the caches
            assert strings.instant(micros) == from_micros(micros).isoformat()

    @settings(max_examples=800, deadline=None)
    @given(st.text(alphabet=st.sampled_from(
        list(SEPARATORS + "=+-@\uff1d\uff0b\uff0d\uff20 \u00a0\u3000\"'.0123456789aZ(")),
        max_size=10))
    @example("a;=1")
    @example("-1")
    def test_the_plain_text_shortcut_is_safe_text(self, value: str) -> None:
        """The one-match shortcut returns exactly what ``safe_text`` and the csv module do."""
        assert render_csv.fast_safe_text(value) == render_csv.safe_text(value)
        out = io.StringIO(newline="")
        csv.writer(out, lineterminator="\r\n").writerow([value, "x"])
        assert out.getvalue() == render_csv.csv_field(value) + ",x\r\n"


class TestExportIsLazy:
    def _fill(self, book: Ledger, n: int) -> None:
        with book.store.write() as conn:
            conn.execute(events.insert(), [_event(i, project="big", call_id=f"big-{i:06d}",
                                                  user=f"user-{i % 97}") for i in range(n)])

    def test_the_first_record_comes_without_reading_the_rest_sqlite(self, book: Ledger) -> None:
        """SQLite: the first record of 20,000 arrives before the others are read (all of
        them at once would allocate over 10 MB)."""
        self._fill(book, 20_000)
        tracemalloc.start()
        try:
            stream = usage_records(book.store, project="big", batch=100)
            first = next(stream)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert first[17] == "big-000000"
        assert peak < 2_000_000, peak
        assert sum(1 for _ in stream) == 19_999

    def test_the_first_record_comes_from_a_server_side_cursor_postgres(
            self, pg_url: str) -> None:
        """PostgreSQL: while the first record is being used, the server holds the rest in a
        named cursor and has sent one batch (``FETCH FORWARD 100``), not the whole result."""
        with Ledger(pg_url) as book:
            self._fill(book, 5_000)
            stream = usage_records(book.store, project="big", batch=100)
            first = next(stream)
            watcher = create_engine(pg_url.split("?")[0])
            try:
                with watcher.connect() as conn:
                    fetching = conn.execute(text(
                        "SELECT query FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                        "AND query LIKE 'FETCH FORWARD 100 FROM \"ledger_usage_%'")).all()
            finally:
                watcher.dispose()
            assert first[17] == "big-000000"
            assert len(fetching) == 1, fetching
            assert sum(1 for _ in stream) == 4_999


class TestInvoiceReadsItsIndex:
    def test_a_months_lines_come_from_the_covering_index_in_order(
            self, book: Ledger, clock: ManualClock) -> None:
        """SQLite: the invoice aggregate of a month (draft and issue) reads only
        ``ix_events_invoice_lines``, in its order: no sort of the events, no table lookup."""
        from sqlalchemy import event

        for i, (user, tags) in enumerate([("alice", {"env": "prod"}), (None, None)] * 3):
            book.record("acme", "kimi-k2.5", 100 + i, 50, at=NOV + timedelta(days=i),
                        user=user, tags=tags)
        clock.set(datetime(2026, 12, 2, tzinfo=UTC))
        seen: list[tuple[str, object]] = []

        def capture(_conn: object, _cursor: object, statement: str, params: object,
                    _context: object, _many: bool) -> None:
            if "GROUP BY" in statement and "events.id >" not in statement:
                seen.append((statement, params))

        event.listen(book.engine, "before_cursor_execute", capture)
        try:
            draft = book.invoice("acme", "2026-11", draft=True)
            issued = book.invoice("acme", "2026-11")
        finally:
            event.remove(book.engine, "before_cursor_execute", capture)
        assert draft.total == issued.total > 0
        assert len(seen) == 2
        with book.engine.connect() as conn:
            for statement, params in seen:
                plan = [str(r[3]) for r in conn.exec_driver_sql(
                    "EXPLAIN QUERY PLAN " + statement, params)]  # type: ignore[arg-type]
                assert plan == ["SEARCH events USING COVERING INDEX ix_events_invoice_lines "
                                "(project=? AND month=?)"], plan
