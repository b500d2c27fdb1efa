"""Running totals by window, inside a hold's or a settle's transaction (raw DBAPI cursors).

A running total (a row of ``totals``) is keyed by (project, scope, period, window); see
``ledger.store.schema``. The rules every transaction follows here:

* Rows are touched in one fixed order, sorted by key, whatever the call: two transactions
  sharing several running totals never wait on each other in opposite orders (no deadlock on
  PostgreSQL). Alerts are written after every running total, so they wait on nothing else.
* A running total that does not exist yet is created from the events already in its window
  (``INSERT .. SELECT sum(cost) .. ON CONFLICT DO NOTHING``), then updated: so a budget that
  comes into force during a window starts from that window's usage, and two transactions
  creating the same row at once both count (the loser of the insert updates the winner's row,
  after the winner's commit).
* A hold remembers the keys it reserved against (``holds.counters``, JSON), so that posting,
  voiding or expiring it releases exactly those.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ..budget import PROJECT_SCOPE, CounterKey, Match, crossed
from ..clock import window_bounds
from ..money import from_units
from ..records import Alert
from .prepared import ALL_TIME, HotStatements, Prepared, Tx
from .schema import to_micros

#: How many times a reservation is retried when the running total changes under it (each
#: retry needs another transaction's commit between two statements of this one).
RESERVE_TRIES = 20


def project_month(month: str) -> CounterKey:
    """The project's month: the running total every project with activity has."""
    return (PROJECT_SCOPE, "month", month)


def encode_keys(keys: Iterable[CounterKey]) -> str:
    return json.dumps([list(k) for k in keys], separators=(",", ":"))


def decode_keys(text: str | None, month: str) -> list[CounterKey]:
    """A hold's reserved keys (a hold made before 0004 reserved its project's month only)."""
    if not text:
        return [project_month(month)]
    return [(str(s), str(p), str(w)) for s, p, w in json.loads(text)]


def ensure_statement(hot: HotStatements, project: str,
                     key: CounterKey) -> tuple[Prepared, dict[str, Any]]:
    """The statement creating ``key``'s row from its window's events, and its values."""
    scope, period, window = key
    lo, hi = window_bounds(period, window)
    values: dict[str, Any] = {
        "project": project, "scope": scope, "period": period, "window": window,
        "lo": ALL_TIME[0] if lo is None else to_micros(lo),
        "hi": ALL_TIME[1] if hi is None else to_micros(hi)}
    if scope.startswith("user:"):
        values["user"] = scope[5:]
        return hot.ensure_counter["user"], values
    if scope.startswith("tag:"):
        values["needle"] = f",{scope[4:]},"
        return hot.ensure_counter["tag"], values
    return hot.ensure_counter["project"], values


def _key_values(project: str, key: CounterKey) -> dict[str, Any]:
    return {"project": project, "scope": key[0], "period": key[1], "window": key[2]}


def reserve(tx: Tx, hot: HotStatements, project: str,
            limits: Sequence[tuple[CounterKey, int]],
            amount: int) -> tuple[CounterKey | None, dict[CounterKey, tuple[int, int]]]:
    """Reserve ``amount`` on each running total (sorted ``limits``: key and its limit, or
    ``NO_LIMIT``), creating missing rows. Returns the first key it does not fit (None: all
    reserved; the caller rolls back otherwise) and the totals after each reservation."""
    after: dict[CounterKey, tuple[int, int]] = {}
    for key, limit in limits:
        values = {**_key_values(project, key), "amount": amount, "limit": limit}
        row = hot.reserve_counter.run(tx, **values).fetchone()
        for _ in range(RESERVE_TRIES):
            if row is not None:
                break
            # Refused, or no row yet: a primary-key read tells, so that a refusal never sums
            # its window's events. On PostgreSQL another transaction may have committed the
            # row between the two statements: a row the read finds, with room for the
            # amount, is that one, and the reservation is tried on it again.
            current = hot.read_counter.run(tx, **_key_values(project, key)).fetchone()
            if current is None:
                stmt, ensure = ensure_statement(hot, project, key)
                stmt.run(tx, **ensure)
            elif int(current[0]) + int(current[1]) + amount > limit:
                return key, after
            row = hot.reserve_counter.run(tx, **values).fetchone()
        if row is None:
            return key, after
        after[key] = (int(row[0]), int(row[1]))
    return None, after


def read(tx: Tx, hot: HotStatements, project: str,
         keys: Iterable[CounterKey]) -> dict[CounterKey, tuple[int, int]]:
    """The current totals of ``keys`` (a missing row: what its window's events add up to)."""
    out: dict[CounterKey, tuple[int, int]] = {}
    for key in keys:
        row = hot.read_counter.run(tx, **_key_values(project, key)).fetchone()
        if row is None:
            stmt, ensure = ensure_statement(hot, project, key)
            stmt.run(tx, **ensure)
            row = hot.read_counter.run(tx, **_key_values(project, key)).fetchone()
        out[key] = (0, 0) if row is None else (int(row[0]), int(row[1]))
    return out


def settle_into(tx: Tx, hot: HotStatements, project: str, keys: Sequence[CounterKey],
                released: Mapping[CounterKey, int], cost: int) -> dict[CounterKey, int] | None:
    """Add ``cost`` (already in ``events``, in this transaction) to each running total of
    ``keys`` (sorted) and take back what the hold reserved there (``released``). Returns each
    key's settled total after it, or None when one would pass 64 bits (roll back)."""
    after: dict[CounterKey, int] = {}
    for key in keys:
        held = -released.get(key, 0)
        if key[0] == PROJECT_SCOPE and key[1] == "month":
            row = hot.add_totals.run(tx, project=project, month=key[2], settled=cost,
                                     held=held).fetchone()
            if row is None:
                return None
            after[key] = int(row[0])
            continue
        values = {**_key_values(project, key), "settled": cost, "held": held}
        row = hot.add_counter.run(tx, **values).fetchone()
        if row is None:
            stmt, ensure = ensure_statement(hot, project, key)
            if stmt.run(tx, **ensure).rowcount == 1:  # created, this event included
                row = hot.read_counter.run(tx, **_key_values(project, key)).fetchone()
            else:  # created meanwhile by another transaction (committed now): add to it
                row = hot.add_counter.run(tx, **values).fetchone()
            if row is None:
                return None
        after[key] = int(row[0])
    return after


def write_alerts(tx: Tx, hot: HotStatements, project: str, matches: Iterable[Match],
                 after: Mapping[CounterKey, int], cost: int, now: datetime) -> list[Alert]:
    """Write the alerts whose thresholds this usage crossed (at most one per budget, window,
    user and threshold, ever: ``ON CONFLICT DO NOTHING`` on the unique key)."""
    if cost <= 0:
        return []
    out: list[Alert] = []
    for m in matches:
        settled = after.get(m.key)
        if settled is None:
            continue
        for threshold in crossed(m, settled - cost, settled):
            b = m.budget
            row = hot.insert_alert.run(
                tx, project=project, budget_user=b.user or "", budget_tag=b.tag or "",
                period=b.period, window=m.key[2], user=m.user or "", threshold=threshold,
                spent_units=settled, limit_units=m.limit_units, at=to_micros(now)).fetchone()
            if row is not None:
                out.append(Alert(int(row[0]), project, m.user, b.tag, b.period, m.key[2],
                                 threshold, from_units(settled), b.limit, now))
    return out
