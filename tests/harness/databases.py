"""The databases the suites run on and break: a throw-away PostgreSQL schema per run
(:func:`pg_schema`), the local PostgreSQL cluster stopped and started (:class:`PostgresCluster`),
the SQLite write lock held by another connection (:func:`sqlite_locked`), and a ledger made to
give up on a locked SQLite file quickly (:func:`shorten_busy_timeout`)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import text
from sqlalchemy.engine import make_url

from ledger.core import Ledger


@contextmanager
def pg_schema(base_url: str) -> Iterator[str]:
    """A fresh PostgreSQL schema on ``base_url`` for one run (dropped afterwards): the URL
    with its ``search_path`` set to it. Connections are not pooled (an outage kills them)."""
    import uuid

    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from ledger.store.engine import normalise_url

    schema = "rel_" + uuid.uuid4().hex[:12]
    admin = create_engine(normalise_url(base_url), poolclass=NullPool)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


class PostgresCluster:
    """The local PostgreSQL cluster serving a URL, stopped and started with ``pg_ctlcluster``
    (Debian's wrapper; needs root). :meth:`down` always starts it again."""

    def __init__(self, version: str, name: str, port: int) -> None:
        self.version, self.name, self.port = version, name, port

    @staticmethod
    def unavailable_reason() -> str | None:
        """Why this machine cannot stop and start PostgreSQL (None: it can)."""
        if os.geteuid() != 0:
            return "not running as root"
        for tool in ("pg_ctlcluster", "pg_lsclusters", "pg_isready"):
            if shutil.which(tool) is None:
                return f"{tool} not found"
        return None

    @classmethod
    def for_url(cls, url: str) -> PostgresCluster:
        port = make_url(url).port or 5432
        out = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True,
                             check=True, timeout=30).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[2] == str(port):
                return cls(parts[0], parts[1], port)
        raise RuntimeError(f"no local PostgreSQL cluster on port {port}: {out!r}")

    def _ctl(self, action: str) -> None:
        cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, action]
        if action == "stop":
            cmd += ["-m", "fast"]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def ready(self) -> bool:
        return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                              check=False, timeout=30).returncode == 0

    def ensure_up(self, timeout: float = 60) -> None:
        """Start the cluster if it is not running; return once it accepts connections."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL did not come back up")
            with suppress(subprocess.CalledProcessError):  # already starting: pg_isready decides
                self._ctl("start")
            time.sleep(0.1)  # polling the server's state: there is no event to wait on

    @contextmanager
    def down(self) -> Iterator[None]:
        """PostgreSQL stopped for the duration of the block, and always started again."""
        try:
            self._ctl("stop")
            yield
        finally:
            self.ensure_up()


@contextmanager
def sqlite_locked(path: str | os.PathLike[str], at_least: float = 0.0) -> Iterator[None]:
    """Another connection holding the SQLite write lock for the block, and for at least
    ``at_least`` seconds (a backup, a ``sqlite3`` shell left in a transaction, a migration)."""
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        locked_at = time.monotonic()
        yield
        # The lock lasting a while is the scenario itself, not a way to wait for something.
        time.sleep(max(0.0, at_least - (time.monotonic() - locked_at)))
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def shorten_busy_timeout(book: Ledger, milliseconds: int) -> None:
    """Make the ledger's SQLite connections give up on a locked file after ``milliseconds``
    (the default is 30 s, longer than a test should wait)."""

    @sa_event.listens_for(book.engine, "connect")
    def _short(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute(f"PRAGMA busy_timeout={int(milliseconds)}")

    book.engine.dispose()
