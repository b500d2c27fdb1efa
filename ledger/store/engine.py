"""Opening the database: engine settings per dialect, and bringing the schema to the Alembic head.

SQLite (the zero-setup default): WAL with ``synchronous=NORMAL``, a 30 s busy timeout, and
``BEGIN IMMEDIATE`` for every write transaction, so concurrent processes queue for the write
lock instead of failing with "database is locked". With WAL + NORMAL a committed settle
survives any crash of the application (SIGKILL, OOM): it is in the WAL file when the call
returns. Only an operating-system crash or power loss can lose the last transactions; set
``LEDGER_SQLITE_SYNCHRONOUS=FULL`` to fsync every commit (about 3× slower here, see
docs/BENCHMARKS.md). Checkpoints run every 10,000 WAL pages (~40 MB) instead of 1,000, which
halves the cost of a hold + settle cycle.

PostgreSQL (``postgresql://`` or ``postgresql+psycopg://``, through psycopg 3): READ COMMITTED;
holds are single conditional UPDATEs that re-check their condition under the row lock.

Migrations run once however many processes open a fresh database together: under the SQLite
write lock, or under a PostgreSQL advisory transaction lock.

Which failures mean "the database is unavailable" or "an amount does not fit a 64-bit column"
is decided in one place, :mod:`ledger.store.unavailable`.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import StaticPool

from ..errors import InvalidInput

DEFAULT_URL = "sqlite:///ledger.db"
_MIGRATE_LOCK_KEY = 7_265_811_020_264  # pg_advisory_xact_lock key for schema migration
def normalise_url(url: str) -> str:
    """Accept ``postgres://`` and ``postgresql://`` and route them through psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, *, create: bool = False) -> Engine:
    """An engine configured for the ledger's transactions on this dialect.

    A SQLite file's directory must exist (a typo in ``--db`` is an error, not a new empty
    ledger somewhere else) unless ``create`` is true, which makes it.
    """
    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed.render_as_string(hide_password=False), create=create)
    return create_engine(
        parsed, pool_size=10, max_overflow=20, pool_pre_ping=False,
        isolation_level="READ COMMITTED",
    )


def sqlite_directory(database: str, *, create: bool) -> Path:
    """The directory of a SQLite ledger file: made if ``create``, else it must exist."""
    path = Path(database).expanduser()
    parent = path.parent
    if create:
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidInput(f"cannot create the directory of the SQLite ledger {path}: "
                               f"{exc.strerror or exc} ({parent})") from None
    elif not parent.is_dir():
        why = "is not a directory" if parent.exists() else "does not exist"
        raise InvalidInput(
            f"the directory of the SQLite ledger {path} {why}: {parent} (a typo? to start a "
            f"new ledger there: `ledger db upgrade --create`, or Ledger(url, create=True))")
    return parent


def _sqlite_engine(url: str, *, create: bool = False) -> Engine:
    parsed = make_url(url)
    database = parsed.database or ""
    memory = database in ("", ":memory:") or "mode=memory" in url
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 30, "check_same_thread": False}}
    if memory:
        kwargs["poolclass"] = StaticPool
    else:
        sqlite_directory(database, create=create)
        kwargs["pool_size"] = 8
        kwargs["max_overflow"] = 32
    engine = create_engine(url, **kwargs)
    synchronous = os.environ.get("LEDGER_SQLITE_SYNCHRONOUS", "NORMAL").upper()
    if synchronous not in ("FULL", "NORMAL", "EXTRA"):
        raise ValueError(f"LEDGER_SQLITE_SYNCHRONOUS must be NORMAL, FULL or EXTRA, not {synchronous!r}")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        if not memory:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA wal_autocheckpoint=10000")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA busy_timeout=30000")
        # LIKE is case-sensitive, as on PostgreSQL: a tag scope (",env=prod,") must never
        # count ",env=Prod," (SQLite's LIKE folds ASCII case by default).
        cur.execute("PRAGMA case_sensitive_like=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = "DEFERRED" if conn.get_execution_options().get("ledger_read_only") else "IMMEDIATE"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def migrations_location() -> str:
    return str(resources.files("ledger.migrations"))


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", migrations_location())
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


#: The newest migration (``migrations/versions``): a ledger already there opens without
#: importing Alembic at all (a tenth of a second per process, every CLI command). A test
#: checks it against Alembic's own head, so a new migration cannot forget it.
SCHEMA_HEAD = "0007"


def _at_schema_head(engine: Engine) -> bool:
    """Whether the database says it is at :data:`SCHEMA_HEAD` (one read, no Alembic)."""
    try:
        with engine.connect().execution_options(ledger_read_only=True) as probe:
            found = probe.execute(text("SELECT version_num FROM alembic_version")).scalars()
            return list(found) == [SCHEMA_HEAD]
    except DBAPIError:  # no table yet (a fresh database): the full path decides
        return False


def upgrade(engine: Engine, revision: str = "head") -> bool:
    """Bring the schema to ``revision`` once, whoever else is trying; True if anything ran."""
    if revision == "head" and _at_schema_head(engine):
        return False
    from alembic import command

    head = head_revision() if revision == "head" else revision
    with engine.connect().execution_options(ledger_read_only=True) as probe:
        if inspect(probe).has_table("alembic_version") and current_revision(probe) == head:
            return False
    with engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE holds the write lock throughout
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATE_LOCK_KEY})
        if current_revision(conn) == head:
            return False
        command.upgrade(alembic_config(conn), revision)
    return True


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATE_LOCK_KEY})
        command.downgrade(alembic_config(conn), revision)
