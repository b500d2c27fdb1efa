""""The database is unavailable": recognised and translated here, and nowhere else.

Every store operation runs through :func:`translated`; opening a ledger goes through
:func:`unavailable`. What counts as unavailable is :func:`is_unavailable`: SQLAlchemy's
``OperationalError`` / ``InterfaceError`` (connection refused, server gone, disk I/O, a
locked SQLite file), any DBAPI error that invalidated its connection, and the raw DBAPI
``OperationalError`` / ``InterfaceError`` of the hot path's pooled cursors (sqlite3, psycopg).
Anything else (an integrity error, a bug) passes through unchanged.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from sqlalchemy import exc as sa_exc

from ..errors import LedgerUnavailable

__all__ = ["is_unavailable", "translated", "unavailable"]

T = TypeVar("T")


def _raw_errors() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [sqlite3.OperationalError, sqlite3.InterfaceError]
    psycopg = sys.modules.get("psycopg")  # loaded if (and only if) an engine uses it
    if psycopg is not None:
        found += [psycopg.OperationalError, psycopg.InterfaceError]
    return tuple(found)


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached or written (see the module docs)."""
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        return bool(exc.connection_invalidated)
    return isinstance(exc, _raw_errors())


def unavailable(exc: BaseException, *, opening: str | None = None) -> LedgerUnavailable:
    """The ``LedgerUnavailable`` for ``exc`` (``opening``: the ledger being opened, if so).

    Its ``reason`` is the driver's own words, its ``opening`` flag says whether the failure
    came while opening the ledger; the CLI words its one line from those, never from the text.
    """
    orig = getattr(exc, "orig", None)
    reason = str(orig if orig is not None else exc)
    if opening is not None:
        return LedgerUnavailable(f"cannot open the ledger database {opening}: {reason}",
                                 reason=reason, opening=True)
    return LedgerUnavailable(f"ledger database unavailable: {reason}", reason=reason)


def translated(fn: Callable[..., T]) -> Callable[..., T]:
    """Run a store operation (its first argument has ``.engine``); an unavailable database
    becomes ``LedgerUnavailable`` and drops the pool (the server may have restarted:
    reconnect next time)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except LedgerUnavailable:
            raise
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            args[0].engine.pool.dispose()
            raise unavailable(exc) from exc

    return wrapper
