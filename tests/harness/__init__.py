"""The reliability harness: crashes, database outages, races, hostile input, secrets and soak.

Test equipment, not part of the ``ledger`` package (it does not ship in the wheel). Every suite
is a function that runs a scenario against a real ledger (SQLite or PostgreSQL), through the
real metered transport, and returns :class:`Figures`: calls made, admitted, refused and failed,
overspend, usage lost, holds left unresolved past their TTL, and a list of ``problems`` (empty
when every invariant held). The CI tests (``tests/test_reliability_*.py``,
``tests/test_soak.py``) run them small; ``scripts/reliability.py`` and ``scripts/soak.py`` run
them at full size and print the figures published in ``docs/RELIABILITY.md``.

The checks never trust the ledger's own reading of a reply: each caller parses what it got
with the small independent readers in :mod:`.oracle` (:class:`StreamOracle`, :func:`json_usage`),
and the expected cost of every call is computed from that and the price in force, then compared
with the ledger's events exactly.

Modules, shared first, then one per suite:

* ``common``: the price, model and fake API key; :class:`Figures` and their table.
* ``oracle``: what a caller saw (:class:`Seen`) and the checks of the ledger's records.
* ``calls``: the call drivers (sync and async, ``httpx`` and ``httpx2``).
* ``databases``: throw-away PostgreSQL schemas, the cluster stopped and started, SQLite locks.
* ``crash``, ``outage``, ``races``, ``hostile``, ``security``, ``soak``: the six suites.
* ``__main__``: the crash child (``python -m tests.harness crash-child '<json spec>'``).

``tests`` must be importable: pytest puts the repository root on the path (``pythonpath`` in
``pyproject.toml``); the scripts insert it themselves.
"""

from __future__ import annotations

from .calls import call_async, call_sync, request_body
from .common import FAKE_API_KEY, Figures, figures_table
from .crash import CRASH_DRIVERS, NO_FAULT, CrashCase, crash_suite
from .databases import PostgresCluster, pg_schema, shorten_busy_timeout, sqlite_locked
from .hostile import HostileCase, hostile_cases, hostile_suite
from .oracle import Seen, StreamOracle, json_usage
from .outage import outage_suite
from .races import race_suite
from .security import EVIL_NAMES, database_text, security_suite
from .soak import soak

__all__ = [
    "CRASH_DRIVERS",
    "EVIL_NAMES",
    "FAKE_API_KEY",
    "NO_FAULT",
    "CrashCase",
    "Figures",
    "HostileCase",
    "PostgresCluster",
    "Seen",
    "StreamOracle",
    "call_async",
    "call_sync",
    "crash_suite",
    "database_text",
    "figures_table",
    "hostile_cases",
    "hostile_suite",
    "json_usage",
    "outage_suite",
    "pg_schema",
    "race_suite",
    "request_body",
    "security_suite",
    "shorten_busy_timeout",
    "soak",
    "sqlite_locked",
]
