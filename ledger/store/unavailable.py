""""The database is unavailable": recognised and translated here, and nowhere else.

Every store operation runs through :func:`translated`; opening a ledger goes through
:func:`unavailable`. What counts as unavailable is :func:`is_unavailable`: SQLAlchemy's
``OperationalError`` / ``InterfaceError`` (connection refused, server gone, disk I/O, a
locked SQLite file), any DBAPI error that invalidated its connection, and the raw DBAPI
``OperationalError`` / ``InterfaceError`` of the hot path's pooled cursors (sqlite3, psycopg).
A PostgreSQL server that is read-only (hot standby, failover) or shutting down counts too.
An integer past the 64-bit columns is not an outage: :func:`translated` turns it into one
clear ``InvalidInput`` (:func:`out_of_range`). Anything else (an integrity error, a bug)
passes through unchanged.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from sqlalchemy import exc as sa_exc

from ..errors import InvalidInput, LedgerError, LedgerUnavailable
from ..money import MAX_UNITS

__all__ = ["is_out_of_range", "is_unavailable", "out_of_range", "translated", "unavailable"]

T = TypeVar("T")


def _raw_errors() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [sqlite3.OperationalError, sqlite3.InterfaceError]
    psycopg = sys.modules.get("psycopg")  # loaded if (and only if) an engine uses it
    if psycopg is not None:
        found += [psycopg.OperationalError, psycopg.InterfaceError]
    return tuple(found)


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
    """Whether ``exc`` means the database cannot be reached or written *now* (see the module
    docs): also a PostgreSQL server that is read-only (hot standby, failover:
    ``ReadOnlySqlTransaction``, an ``InternalError``), shutting down or refusing connections.
    An integer overflow is not an outage."""
    if is_out_of_range(exc):
        return False
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    sqlstate = getattr(_driver_error(exc), "sqlstate", None)
    if isinstance(sqlstate, str) and (sqlstate in _UNAVAILABLE_SQLSTATES
                                      or sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES):
        return True
    return isinstance(exc, _raw_errors())


def is_out_of_range(exc: BaseException) -> bool:
    """Whether ``exc`` says an integer did not fit the database's 64-bit column or sum
    (PostgreSQL ``bigint out of range``, SQLite ``integer overflow``, a Python int too large
    for the driver)."""
    orig = _driver_error(exc)
    if isinstance(orig, OverflowError):
        return True
    if getattr(orig, "sqlstate", None) == _OUT_OF_RANGE_SQLSTATE:
        return True
    return isinstance(orig, sqlite3.Error) and "integer overflow" in str(orig)


def out_of_range(exc: BaseException) -> InvalidInput:
    """The ``InvalidInput`` for an amount past the 64-bit columns."""
    orig = _driver_error(exc)
    return InvalidInput(f"an amount is out of the range the ledger can store (a total above "
                        f"{MAX_UNITS} units of 10^-10 USD): {orig}")


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
        except LedgerError:
            raise
        except Exception as exc:
            if is_out_of_range(exc):
                raise out_of_range(exc) from exc
            if not is_unavailable(exc):
                raise
            args[0].engine.pool.dispose()
            raise unavailable(exc) from exc

    return wrapper
