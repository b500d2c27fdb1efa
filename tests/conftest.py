"""Shared fixtures: ledgers on SQLite and PostgreSQL, a manual clock, the RunAPI simulator
and metered SDK clients."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import anthropic
import openai
import pytest
from sqlalchemy import select

from ledger import Ledger, ManualClock
from ledger.testing.simulator import RunAPISimulator
from tests.harness.databases import pg_schema

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
    schema = pg_schema(PG_URL)
    try:
        url = schema.__enter__()
    except Exception as exc:  # pragma: no cover - a configured but dead server must fail loudly
        pytest.fail(f"PostgreSQL at LEDGER_TEST_POSTGRES_URL does not answer: {exc}")
    try:
        yield url
    finally:
        schema.__exit__(None, None, None)


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


# -- metering: the simulator and SDK clients metered for project "acme" -----------------------
#: A fake API key: tests check that it never reaches the ledger's tables or spool.
FAKE_API_KEY = "sk-test-SECRET-0123456789abcdef"


@pytest.fixture
def fake_api_key() -> str:
    """The API key the metered SDK clients send (it must never be stored)."""
    return FAKE_API_KEY


@pytest.fixture
def system_book(sqlite_url: str) -> Iterator[Ledger]:
    """A fresh SQLite ledger on a temp file, on the system clock."""
    with Ledger(sqlite_url) as b:
        yield b


@pytest.fixture
def sim() -> Iterator[RunAPISimulator]:
    """A running RunAPI simulator on loopback (stopped after the test)."""
    with RunAPISimulator() as s:
        yield s


@pytest.fixture
def openai_client(book: Ledger, sim: RunAPISimulator) -> Iterator[openai.OpenAI]:
    """The real OpenAI SDK against the simulator, metered for "acme" (httpx)."""
    client = openai.OpenAI(base_url=sim.openai_base_url, api_key=FAKE_API_KEY,
                           http_client=book.httpx_client("acme"))
    with client:
        yield client


@pytest.fixture
def anthropic_client(book: Ledger, sim: RunAPISimulator) -> Iterator[anthropic.Anthropic]:
    """The real Anthropic SDK against the simulator, metered for "acme" (httpx2)."""
    client = anthropic.Anthropic(base_url=sim.anthropic_base_url, api_key=FAKE_API_KEY,
                                 http_client=book.httpx2_client("acme"))
    with client:
        yield client


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (``@pytest.mark.anyio``) run on asyncio."""
    return "asyncio"


@pytest.fixture
def ledger_events() -> Callable[[Ledger], list[dict[str, Any]]]:
    """Read every row of a ledger's ``events`` table, oldest first, as dicts."""
    from ledger.store.schema import events

    def read(book: Ledger) -> list[dict[str, Any]]:
        with book.engine.connect() as conn:
            rows = conn.execute(select(events).order_by(events.c.id)).all()
        return [dict(r._mapping) for r in rows]

    return read
