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

Which failures mean "the database is unavailable" (hard budgets fail closed, usage goes to the
spool and is replayed later) is decided in one place, :func:`is_unavailable`; which mean "an
amount does not fit a 64-bit column", in :func:`is_out_of_range`.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import StaticPool

DEFAULT_URL = "sqlite:///ledger.db"
_MIGRATE_LOCK_KEY = 7_265_811_020_264  # pg_advisory_xact_lock key for schema migration
#: SQLSTATEs that say "not now" rather than "never": the server is read-only (a hot standby,
#: a failover in progress: 25006 read_only_sql_transaction), shutting down or not accepting
#: connections (class 57P), or the connection is gone (class 08).
_UNAVAILABLE_SQLSTATES = ("25006", "57P01", "57P02", "57P03")
_UNAVAILABLE_SQLSTATE_CLASSES = ("08",)
#: SQLSTATE 22003 numeric_value_out_of_range (a bigint overflow on PostgreSQL).
_OUT_OF_RANGE_SQLSTATE = "22003"


def _driver_error(exc: BaseException) -> BaseException:
    """The DBAPI exception behind a SQLAlchemy one (or ``exc`` itself)."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        return exc.orig
    return exc


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the ledger database cannot be reached or written *now* (and so
    the call fails closed, its usage is spooled, a replay keeps the spool for later), as
    opposed to a refusal of this one statement.

    True for connection and operational errors (SQLAlchemy's or the driver's own, as the hot
    path runs on raw DBAPI cursors), an invalidated connection, and a PostgreSQL server that is
    read-only (hot standby, failover: ``ReadOnlySqlTransaction``, an ``InternalError``),
    shutting down, or refusing connections. An integer overflow is not an outage.
    """
    if is_out_of_range(exc):
        return False
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        return True
    orig = _driver_error(exc)
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(sqlstate, str) and (sqlstate in _UNAVAILABLE_SQLSTATES
                                      or sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES):
        return True
    # A raw DBAPI error (PEP 249 names; sqlite3's and psycopg's classes both carry them).
    return any(cls.__name__ in ("OperationalError", "InterfaceError")
               and cls.__module__.split(".")[0] in ("sqlite3", "psycopg", "psycopg2")
               for cls in type(orig).__mro__)


def is_out_of_range(exc: BaseException) -> bool:
    """Whether ``exc`` says an integer did not fit the database's 64-bit column or sum
    (PostgreSQL ``bigint out of range``, SQLite ``integer overflow``, a Python int too large
    for the driver)."""
    orig = _driver_error(exc)
    if isinstance(orig, OverflowError):
        return True
    if getattr(orig, "sqlstate", None) == _OUT_OF_RANGE_SQLSTATE:
        return True
    return type(orig).__module__.startswith("sqlite3") and "integer overflow" in str(orig)


def normalise_url(url: str) -> str:
    """Accept ``postgres://`` and ``postgresql://`` and route them through psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str) -> Engine:
    """An engine configured for the ledger's transactions on this dialect."""
    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed.render_as_string(hide_password=False))
    return create_engine(
        parsed, pool_size=10, max_overflow=20, pool_pre_ping=False,
        isolation_level="READ COMMITTED",
    )


def _sqlite_engine(url: str) -> Engine:
    parsed = make_url(url)
    database = parsed.database or ""
    memory = database in ("", ":memory:") or "mode=memory" in url
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 30, "check_same_thread": False}}
    if memory:
        kwargs["poolclass"] = StaticPool
    else:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
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


def upgrade(engine: Engine, revision: str = "head") -> bool:
    """Bring the schema to ``revision`` once, whoever else is trying; True if anything ran."""
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
