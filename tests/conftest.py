"""Shared fixtures: ledgers on SQLite and PostgreSQL, a manual clock."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, text

from ledger import Ledger, ManualClock

PG_URL = os.environ.get("LEDGER_TEST_POSTGRES_URL")
REQUIRE_PG = os.environ.get("LEDGER_TEST_REQUIRE_POSTGRES") == "1"


def pytest_configure(config: pytest.Config) -> None:
    if REQUIRE_PG and not PG_URL:
        raise pytest.UsageError("LEDGER_TEST_REQUIRE_POSTGRES=1 but LEDGER_TEST_POSTGRES_URL is unset")


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when told: 2026-11-10 12:00 UTC."""
    return ManualClock(datetime(2026, 11, 10, 12, 0, tzinfo=UTC))


@pytest.fixture
def sqlite_url(tmp_path: os.PathLike[str]) -> str:
    return f"sqlite:///{tmp_path}/ledger.db"


@pytest.fixture
def book(sqlite_url: str, clock: ManualClock) -> Iterator[Ledger]:
    """A fresh SQLite ledger on a temp file, with a manual clock."""
    with Ledger(sqlite_url, clock=clock) as b:
        yield b


def pg_schema_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL schema for one test; dropped afterwards."""
    if not PG_URL:
        pytest.skip("PostgreSQL tests need LEDGER_TEST_POSTGRES_URL (no PostgreSQL configured)")
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # pragma: no cover - a configured but dead server must fail loudly
        pytest.fail(f"PostgreSQL at LEDGER_TEST_POSTGRES_URL does not answer: {exc}")
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a fresh PostgreSQL schema (skipped, with the reason, without PostgreSQL)."""
    yield from pg_schema_url()


@pytest.fixture(params=["sqlite", "postgres"])
def any_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> Iterator[str]:
    """The same test on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ledger.db"
    else:
        yield from pg_schema_url()


@pytest.fixture
def any_book(any_url: str, clock: ManualClock) -> Iterator[Ledger]:
    """A fresh ledger on SQLite and on PostgreSQL, with a manual clock."""
    with Ledger(any_url, clock=clock) as b:
        yield b
