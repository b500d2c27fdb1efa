"""The rows behind the metering proxy's client keys (``ledger.proxy.keys``): table ``proxy_keys``.

A row holds the key's id, who its calls bill (project, end user, tags), whether it may open the
dashboard, and the SHA-256 of its secret; never the secret itself, never the upstream key.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, bindparam, select, update

from ..records import Attribution
from .ops import Store, _translate
from .prepared import Prepared
from .schema import from_micros, proxy_keys, to_micros

__all__ = ["KeyRow", "get_key", "insert_key", "list_keys", "revoke_key", "touch_key"]


@dataclass(frozen=True)
class KeyRow:
    """One proxy key as stored (``secret_sha256`` is the hex SHA-256 of its secret)."""

    id: str
    name: str | None
    project: str
    user: str | None
    tags: str | None              # "k=v,k2=v2" sorted by key, or None
    admin: bool
    secret_sha256: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def attribution(self) -> Attribution:
        """The end user and tags every call with this key carries."""
        return Attribution.from_columns(self.user, self.tags)


_COLUMNS = (proxy_keys.c.id, proxy_keys.c.name, proxy_keys.c.project, proxy_keys.c.user,
            proxy_keys.c.tags, proxy_keys.c.admin, proxy_keys.c.secret_sha256,
            proxy_keys.c.created_at, proxy_keys.c.last_used_at, proxy_keys.c.revoked_at)


def _row(r: Any) -> KeyRow:
    v = tuple(r)
    return KeyRow(v[0], v[1], v[2], v[3], v[4], bool(v[5]), v[6], from_micros(v[7]),
                  None if v[8] is None else from_micros(v[8]),
                  None if v[9] is None else from_micros(v[9]))


@_translate
def insert_key(store: Store, key: KeyRow) -> None:
    with store.write() as conn:
        conn.execute(proxy_keys.insert().values(
            id=key.id, name=key.name, project=key.project, user=key.user, tags=key.tags,
            admin=key.admin, secret_sha256=key.secret_sha256,
            created_at=to_micros(key.created_at), last_used_at=None, revoked_at=None))


#: The per-request read, compiled once per engine (the proxy runs it on every request).
_BY_ID: weakref.WeakKeyDictionary[Engine, Prepared] = weakref.WeakKeyDictionary()


@_translate
def get_key(store: Store, key_id: str) -> KeyRow | None:
    """The key with this id (revoked or not), or None: one primary-key read, as a prepared
    statement on a pooled DBAPI connection (no SQLAlchemy statement building per call)."""
    engine = store.engine
    stmt = _BY_ID.get(engine)
    if stmt is None:
        stmt = _BY_ID[engine] = Prepared(
            select(*_COLUMNS).where(proxy_keys.c.id == bindparam("id")), engine)
    conn = engine.raw_connection()
    try:
        cur = conn.cursor()
        try:
            row = stmt.run(cur, id=key_id).fetchone()
        finally:
            cur.close()
        conn.rollback()  # PostgreSQL opened a transaction for the SELECT; SQLite: a no-op
    except BaseException:
        conn.invalidate()
        raise
    finally:
        conn.close()
    return None if row is None else _row(row)


@_translate
def list_keys(store: Store) -> list[KeyRow]:
    """Every key, revoked ones too, oldest first."""
    with store.read() as conn:
        rows = conn.execute(select(*_COLUMNS).order_by(proxy_keys.c.created_at,
                                                       proxy_keys.c.id)).all()
    return [_row(r) for r in rows]


@_translate
def revoke_key(store: Store, key_id: str, now: datetime) -> bool:
    """Revoke a key from now on; False if there is no such key or it was already revoked."""
    with store.write() as conn:
        done = conn.execute(update(proxy_keys)
                            .where(proxy_keys.c.id == key_id, proxy_keys.c.revoked_at.is_(None))
                            .values(revoked_at=to_micros(now)))
    return bool(done.rowcount)


@_translate
def touch_key(store: Store, key_id: str, now: datetime) -> None:
    """Note that the key was used at ``now`` (never moves the time backwards)."""
    at = to_micros(now)
    with store.write() as conn:
        conn.execute(update(proxy_keys)
                     .where(proxy_keys.c.id == key_id)
                     .where((proxy_keys.c.last_used_at.is_(None))
                            | (proxy_keys.c.last_used_at < at))
                     .values(last_used_at=at))
