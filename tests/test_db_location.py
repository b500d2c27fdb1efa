"""Issue 12 item 2: where the ledger lives. A SQLite URL whose directory does not exist is an
error naming the path (never a new, empty ledger somewhere else) unless asked to create it, and
``ledger db info`` says which database, revision, spool and counts are in use."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import ledger
from ledger import Ledger, ManualClock
from ledger.cli import main
from ledger.cli.options import CliState
from ledger.store.engine import head_revision


def cli(*args: str, db: str | None, clock: ManualClock | None = None) -> Result:
    return CliRunner().invoke(main, list(args), obj=CliState(db=db, clock=clock))


def one_line_error(result: Result) -> str:
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


class TestMissingDirectory:
    def test_library_refuses_a_missing_directory_and_names_it(self, tmp_path: Path) -> None:
        """Issue 12 item 2: Ledger() on sqlite:////typo/dir/x.db raises InvalidInput naming
        the path, and creates nothing."""
        target = tmp_path / "typo" / "dir" / "x.db"
        with pytest.raises(ledger.InvalidInput, match=str(target.parent)) as caught:
            Ledger(f"sqlite:///{target}")
        assert isinstance(caught.value, ledger.LedgerError)
        assert "create" in str(caught.value)
        assert not (tmp_path / "typo").exists()

    def test_create_true_makes_the_directory(self, tmp_path: Path) -> None:
        """Issue 12 item 2: Ledger(..., create=True) makes the directory and a working ledger."""
        target = tmp_path / "new" / "dir" / "x.db"
        with Ledger(f"sqlite:///{target}", create=True) as book:
            assert book.record("p", "kimi-k2.5", 1000, 0) == Decimal("0.02")
        assert target.exists()

    def test_an_existing_directory_still_gets_a_fresh_ledger(self, tmp_path: Path) -> None:
        """Issue 12 item 2: only the directory must exist; a new file in it is migrated."""
        with Ledger(f"sqlite:///{tmp_path}/fresh.db") as book:
            assert book.spend("p") == 0
        assert (tmp_path / "fresh.db").exists()

    def test_a_file_where_the_directory_should_be(self, tmp_path: Path) -> None:
        """Issue 12 item 2: a parent that is a file is reported as not a directory."""
        (tmp_path / "plain").write_text("x")
        with pytest.raises(ledger.InvalidInput, match="is not a directory"):
            Ledger(f"sqlite:///{tmp_path}/plain/x.db")
        with pytest.raises(ledger.InvalidInput, match="cannot create"):
            Ledger(f"sqlite:///{tmp_path}/plain/x.db", create=True)

    def test_memory_databases_need_no_directory(self) -> None:
        """Issue 12 item 2: in-memory SQLite is unaffected by the directory check."""
        with Ledger("sqlite://") as book:
            assert book.record("p", "kimi-k2.5", 1000, 0) == Decimal("0.02")

    def test_cli_typo_is_one_line_exit_2_and_creates_nothing(self, tmp_path: Path) -> None:
        """Issue 12 item 2: `ledger --db sqlite:////typo/dir/x.db budget set` exits 2 with one
        line naming the path, and no directory appears."""
        target = tmp_path / "typo" / "dir" / "x.db"
        for args in (("price", "list"), ("budget", "set", "acme", "5"), ("db", "upgrade"),
                     ("db", "info")):
            line = one_line_error(cli(*args, db=f"sqlite:///{target}"))
            assert str(target.parent) in line, line
        assert not (tmp_path / "typo").exists()

    def test_cli_upgrade_create_makes_it(self, tmp_path: Path) -> None:
        """Issue 12 item 2: `ledger db upgrade --create` makes the directory and migrates."""
        target = tmp_path / "typo" / "dir" / "x.db"
        result = cli("db", "upgrade", "--create", db=f"sqlite:///{target}")
        assert result.exit_code == 0, result.stderr
        assert result.stdout.startswith("upgraded to revision")
        assert target.exists()
        assert cli("price", "list", db=f"sqlite:///{target}").exit_code == 0


class TestDbInfo:
    def test_json_names_database_revision_spool_and_counts(self, tmp_path: Path,
                                                           clock: ManualClock) -> None:
        """Issue 12 item 2: `ledger db info --format json` reports what is in use."""
        url = f"sqlite:///{tmp_path}/l.db"
        with Ledger(url, clock=clock) as book:
            book.set_budget("acme", Decimal("5"))
            book.set_budget("beta", Decimal("5"))
            book.record("acme", "kimi-k2.5", 10, 10)
            book.record("acme", "kimi-k2.5", 10, 10)
            with book.metered_call("acme", {"model": "kimi-k2.5", "messages": [
                    {"role": "user", "content": "hi"}], "max_tokens": 5}) as call:
                result = cli("db", "info", "--format", "json", db=url, clock=clock)
                call.settle(prompt_tokens=1, completion_tokens=1)
        assert result.exit_code == 0, result.stderr
        info = json.loads(result.stdout)
        assert info["database"] == url
        assert info["path"] == str((tmp_path / "l.db").resolve())
        assert info["exists"] is True
        assert info["revision"] == head_revision() and info["at_head"] is True
        assert info["spool"] == {"path": f"{tmp_path}/l.db.spool", "entries": 0}
        assert info["counts"] == {"events": 2, "holds_pending": 1, "budgets": 2, "invoices": 0}

    def test_table_and_password_redaction(self, tmp_path: Path) -> None:
        """Issue 12 item 2: the table shows the database with its password hidden, the
        revision and the counts."""
        url = f"sqlite:///{tmp_path}/l.db"
        with Ledger(url) as book:
            book.record("acme", "kimi-k2.5", 10, 10)
        out = cli("db", "info", db=url)
        assert out.exit_code == 0, out.stderr
        assert url in out.stdout and "at head" in out.stdout and "events" in out.stdout
        from ledger.store.info import LedgerInfo

        secret = "postgresql+psycopg://app:s3cr3t-pw@db.internal/billing"
        from sqlalchemy.engine import make_url

        shown = make_url(secret).render_as_string(hide_password=True)
        assert "s3cr3t" not in shown
        facts = LedgerInfo(url=shown, backend="postgresql", path=None, exists=True,
                           revision=None, head=head_revision(), spool_path="/x.spool",
                           spooled=3, events=0, holds_pending=0, budgets=0, invoices=0)
        assert facts.as_dict()["at_head"] is False
        assert "s3cr3t" not in json.dumps(facts.as_dict())

    def test_info_never_creates_or_migrates(self, tmp_path: Path) -> None:
        """Issue 12 item 2: db info on a file that is not there says so and creates nothing."""
        result = cli("db", "info", "--format", "json", db=f"sqlite:///{tmp_path}/none.db")
        assert result.exit_code == 0, result.stderr
        info = json.loads(result.stdout)
        assert info["exists"] is False and info["revision"] is None
        assert info["at_head"] is False
        assert not (tmp_path / "none.db").exists()
        table = cli("db", "info", db=f"sqlite:///{tmp_path}/none.db")
        assert "does not exist yet" in table.stdout and "not migrated" in table.stdout

    @pytest.mark.postgres
    def test_postgres_password_is_redacted(self, pg_url: str) -> None:
        """Issue 12 item 2: on PostgreSQL the URL is printed with any password as ***."""
        from sqlalchemy.engine import make_url

        with_pw = make_url(pg_url).set(password="s3cr3t-pw").render_as_string(hide_password=False)
        Ledger(pg_url).close()  # migrate the throw-away schema
        result = cli("db", "info", "--format", "json", db=with_pw)
        assert result.exit_code == 0, result.stderr
        assert "s3cr3t" not in result.stdout
        info = json.loads(result.stdout)
        assert "***" in info["database"] and info["backend"] == "postgresql"
        assert info["at_head"] is True
