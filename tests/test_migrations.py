"""Migrations on SQLite and PostgreSQL: up from empty, no drift, down and up again."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from ledger import Ledger
from ledger.store.engine import current_revision, downgrade, head_revision, make_engine, upgrade
from ledger.store.schema import metadata


def test_upgrade_from_empty_reaches_head(any_url: str) -> None:
    """An empty database is brought to the head, and a second upgrade does nothing."""
    engine = make_engine(any_url)
    assert upgrade(engine) is True
    assert upgrade(engine) is False
    with engine.connect() as conn:
        assert current_revision(conn) == head_revision()
        assert set(inspect(conn).get_table_names()) >= {
            "prices", "budgets", "totals", "holds", "events", "invoices", "alembic_version"}
    engine.dispose()


def test_models_and_migrated_schema_do_not_drift(any_url: str) -> None:
    """Autogenerate finds no difference between the tables in code and the migrated schema."""
    engine = make_engine(any_url)
    upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                metadata)
    engine.dispose()
    assert diff == []


def test_downgrade_and_upgrade_again(any_url: str) -> None:
    """Down to base drops everything; up again restores the schema and the built-in prices."""
    engine = make_engine(any_url)
    upgrade(engine)
    downgrade(engine, "base")
    with engine.connect() as conn:
        assert "events" not in inspect(conn).get_table_names()
    upgrade(engine)
    with engine.connect() as conn:
        models = {r[0] for r in conn.execute(text("SELECT model FROM prices"))}
    engine.dispose()
    assert models == {"kimi-k2.5", "kimi-k2.6"}


def test_opening_a_fresh_database_migrates_it(any_url: str) -> None:
    """Ledger(url) on an empty database needs no manual migration."""
    with Ledger(any_url) as book:
        assert book.price("kimi-k2.5").input_per_1k == 2 * book.price("kimi-k2.6").input_per_1k / 2
        with book.engine.connect() as conn:
            assert current_revision(conn) == head_revision()


def test_the_schema_head_constant_is_alembics_head() -> None:
    """``SCHEMA_HEAD`` (the no-Alembic check of an up-to-date ledger) names the newest
    migration: a new migration that forgets it fails here."""
    from ledger.store.engine import SCHEMA_HEAD

    assert head_revision() == SCHEMA_HEAD


def test_an_up_to_date_ledger_opens_without_importing_alembic(tmp_path: Path) -> None:
    """A second process opening a ledger already at head never imports Alembic; one behind
    head is still upgraded (the fast check only ever says "nothing to do")."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path}/l.db"
    Ledger(url).close()
    code = ("import sys\nfrom ledger import Ledger\nLedger(sys.argv[1]).close()\n"
            "print('alembic' in sys.modules)")
    fresh = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True,
                           check=True)
    assert fresh.stdout.strip() == "False"
    engine = make_engine(url)
    downgrade(engine, "0006")
    behind = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True,
                            check=True)
    assert behind.stdout.strip() == "True"
    with engine.connect() as conn:
        assert current_revision(conn) == head_revision()
    engine.dispose()
