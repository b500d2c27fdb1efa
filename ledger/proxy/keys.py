"""The proxy's client keys: made, checked and revoked.

A key reads ``lk_<id>_<secret>``: ``id`` is 16 hex digits (64 random bits, not secret: it names
the key in ``ledger key list`` and finds its row), ``secret`` is 43 URL-safe characters holding
256 random bits from :mod:`secrets`. The ledger stores only the id and the SHA-256 of the secret.

Why a plain SHA-256 and not bcrypt/argon2: those slow hashes protect *guessable* secrets
(passwords) from a stolen table. A 256-bit random secret cannot be guessed whatever the hash's
speed, so a fast hash loses nothing, and the proxy checks a key on every request in
microseconds. The digest is compared with :func:`hmac.compare_digest` (constant time).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from ..errors import InvalidInput
from ..names import check_name
from ..records import Attribution
from ..store import keys as rows
from ..store.keys import KeyRow
from ..store.ops import Store

__all__ = [
    "KEY_PATTERN",
    "KeyRow",
    "NewKey",
    "attribution_of",
    "create_key",
    "digest",
    "parse_key",
    "revoke_key",
    "verify_key",
]

PREFIX = "lk_"
KEY_PATTERN = re.compile(r"lk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class NewKey:
    """A key just made: ``key`` is the whole secret key (shown once), ``row`` what is stored."""

    key: str
    row: KeyRow


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def parse_key(text: str | None) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed key, else None."""
    if not text:
        return None
    match = KEY_PATTERN.fullmatch(text.strip())
    return None if match is None else (match.group(1), match.group(2))


def attribution_of(user: str | None, tags: list[str] | tuple[str, ...]) -> Attribution:
    """The key's end user and ``["feature=search", "env=prod"]`` tags, validated as every
    attribution is (:meth:`ledger.records.Attribution.of`)."""
    for pair in tags:
        if "," in pair:
            raise InvalidInput(f"one tag per --tag (KEY=VALUE, no ','), got {pair!r}")
    return Attribution.of(user, ",".join(tags) if tags else None)


def create_key(store: Store, now: datetime, project: str, *, user: str | None = None,
               tags: list[str] | tuple[str, ...] = (), name: str | None = None,
               admin: bool = False) -> NewKey:
    """Make and store a key for ``project`` (and ``user``, ``tags``); returns it once."""
    check_name(project, "project")
    who = attribution_of(user, tags)
    if name is not None:
        check_name(name, "name")
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    row = KeyRow(key_id, name, project, who.user, who.tags_text, bool(admin), digest(secret),
                 now, None, None)
    rows.insert_key(store, row)
    return NewKey(f"{PREFIX}{key_id}_{secret}", row)


def verify_key(store: Store, text: str | None) -> KeyRow | None:
    """The stored, unrevoked key ``text`` is, else None (malformed, unknown, wrong, revoked).

    One primary-key read per call: a revocation counts from the next request, in every
    process."""
    parsed = parse_key(text)
    if parsed is None:
        return None
    key_id, secret = parsed
    row = rows.get_key(store, key_id)
    if row is None:
        hmac.compare_digest(digest(secret), digest(secret))  # same work either way
        return None
    if not hmac.compare_digest(row.secret_sha256, digest(secret)) or row.revoked:
        return None
    return row


def revoke_key(store: Store, key_id: str, now: datetime) -> bool:
    """Revoke key ``key_id`` (``lk_..``: the whole key also names it); False if unknown."""
    parsed = parse_key(key_id)
    if parsed is not None:
        key_id = parsed[0]
    key_id = key_id.removeprefix(PREFIX)
    return rows.revoke_key(store, key_id, now)
