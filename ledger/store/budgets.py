"""The SQL behind budget definitions, windows, spend, alerts and their audit (not the hot path:
SQLAlchemy Core on connections). The hold/settle side is ``ledger.store.ops`` and
``ledger.store.counters``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from ..budget import PROJECT_SCOPE, CounterKey, scope_of, version_in_force
from ..clock import period_windows, window_bounds, window_of
from ..money import from_units
from ..records import Alert, Budget, BudgetWindow
from .counters import decode_keys, ensure_statement
from .prepared import ALL_TIME, BUDGET_COLUMNS, HotStatements
from .schema import alerts, budgets, events, from_micros, holds, to_micros, totals

BudgetKey = tuple[str, str | None, str | None, str]


def alerts_text(thresholds: Iterable[int]) -> str:
    return ",".join(str(t) for t in thresholds)


def budget_of(project: str, row: Any) -> tuple[Budget, bool]:
    """A (Budget, removed) pair from a row of ``BUDGET_COLUMNS``."""
    user, tag, period, limit, hard, thresholds, effective, removed = row
    parsed = tuple(int(t) for t in str(thresholds).split(",") if t) if thresholds else ()
    return (Budget(project, user or None, tag or None, str(period), from_units(int(limit)),
                   bool(hard), parsed, from_micros(int(effective))), bool(removed))


class BudgetRows:
    """:func:`budget_of` remembered per process, by project and row (a row is a budget
    version exactly as stored, so the same row is the same budget): the hot path reads a
    call's budget rows twice per call. Bounded: full, it starts again."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._found: dict[tuple[Any, ...], tuple[Budget, bool]] = {}

    def __call__(self, project: str, rows: Iterable[Any]) -> list[tuple[Budget, bool]]:
        out = []
        for row in rows:
            key = (project, *row)
            found = self._found.get(key)
            if found is None:
                if len(self._found) >= self._size:
                    self._found.clear()
                found = self._found[key] = budget_of(project, row)
            out.append(found)
        return out


def versions(conn: Connection, project: str | None, at: datetime) -> dict[str, list[tuple[Budget, bool]]]:
    """Every version up to ``at``, by project."""
    stmt = select(budgets.c.project, *BUDGET_COLUMNS).where(
        budgets.c.effective_from <= to_micros(at))
    if project is not None:
        stmt = stmt.where(budgets.c.project == project)
    out: dict[str, list[tuple[Budget, bool]]] = {}
    for row in conn.execute(stmt.order_by(budgets.c.project, budgets.c.id)).all():
        out.setdefault(row[0], []).append(budget_of(row[0], row[1:]))
    return out


def in_force(conn: Connection, project: str | None, at: datetime,
             now: datetime | None = None) -> list[Budget]:
    """The budgets in force for the windows holding ``at`` as of ``now`` (default ``at``),
    sorted by project, user, tag and period."""
    out: list[Budget] = []
    for _, found in sorted(versions(conn, project, now or at).items()):
        out.extend(version_in_force(found, at, now or at).values())
    return sorted(out, key=_order)


def _order(b: Budget) -> tuple[str, str, str, int]:
    return (b.project, b.user or "", b.tag or "", PERIOD_ORDER[b.period])


PERIOD_ORDER = {"day": 0, "week": 1, "month": 2, "total": 3}


def set_budget(conn: Connection, hot: HotStatements, insert: Any, budget: Budget,
               now: datetime) -> None:
    """Write a new dated version (the same instant again replaces it), then, if it is in
    force now, start its current window(s) from the usage already in them (see
    ``Store.set_budget``)."""
    values = {
        "project": budget.project, "user": budget.user or "", "tag": budget.tag or "",
        "period": budget.period, "limit_units": _units(budget), "hard": budget.hard,
        "alerts": alerts_text(budget.alerts), "effective_from": to_micros(budget.effective_from),
        "removed": False, "created_at": to_micros(now)}
    _upsert_version(conn, insert, values)
    if budget.effective_from <= now:
        backfill(conn, hot, budget, now)


def _units(budget: Budget) -> int:
    from ..money import to_units

    return to_units(budget.limit, "limit")


def _upsert_version(conn: Connection, insert: Any, values: dict[str, Any]) -> None:
    stmt = insert(budgets).values(values)
    conn.execute(stmt.on_conflict_do_update(
        index_elements=[budgets.c.project, budgets.c.user, budgets.c.tag, budgets.c.period,
                        budgets.c.effective_from],
        set_={k: stmt.excluded[k] for k in ("limit_units", "hard", "alerts", "removed",
                                            "created_at")}))


def backfill(conn: Connection, hot: HotStatements, budget: Budget, now: datetime) -> None:
    """Recount ``budget``'s running total(s) of the window holding ``now`` from the events in
    it (one per end user with events in it, for ``"*"``). Pending holds keep what they
    reserved (``held``); held before the budget existed, they were not reserved against it,
    and their cost is counted when they settle."""
    window = window_of(budget.period, now)
    lo, hi = window_bounds(budget.period, window)
    lo_m = ALL_TIME[0] if lo is None else to_micros(lo)
    hi_m = ALL_TIME[1] if hi is None else to_micros(hi)
    if budget.user == "*":
        users = [r[0] for r in conn.execute(
            select(events.c.user).where(events.c.project == budget.project,
                                        events.c.user.is_not(None),
                                        events.c.at >= lo_m, events.c.at < hi_m)
            .group_by(events.c.user)).all()]
        scopes = [scope_of("*", None, u) for u in sorted(users)]
    else:
        scopes = [scope_of(budget.user, budget.tag)]
    for scope in scopes:
        key: CounterKey = (scope, budget.period, window)
        cond = (totals.c.project == budget.project, totals.c.scope == scope,
                totals.c.period == budget.period, totals.c.window == window)
        # Lock the row first: a settle adding to it waits, and the sum below (a later
        # statement: a fresh snapshot) sees every event committed before.
        locked = conn.execute(update(totals).where(*cond).values(held=totals.c.held)).rowcount
        if not locked:
            stmt, ensure = ensure_statement(hot, budget.project, key)
            conn.exec_driver_sql(stmt.sql, stmt.args(ensure))
            continue
        settled = conn.execute(select(func.coalesce(func.sum(events.c.cost), 0)).where(
            *_event_scope(budget.project, scope), events.c.at >= lo_m,
            events.c.at < hi_m)).scalar_one()
        conn.execute(update(totals).where(*cond).values(settled=int(settled)))


def _event_scope(project: str, scope: str) -> list[Any]:
    cond: list[Any] = [events.c.project == project]
    if scope.startswith("user:"):
        cond.append(events.c.user == scope[5:])
    elif scope.startswith("tag:"):
        cond.append(events.c.tags.like(f"%,{_escape(scope[4:])},%", escape="\\"))
    return cond


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def remove_budget(conn: Connection, insert: Any, project: str, period: str, user: str | None,
                  tag: str | None, now: datetime) -> bool:
    """End a budget from ``now`` on (a dated removal: past windows keep their limit); its
    versions dated after ``now`` are dropped. False if it had none in force nor to come."""
    key = (budgets.c.project == project, budgets.c.user == (user or ""),
           budgets.c.tag == (tag or ""), budgets.c.period == period)
    rows = conn.execute(select(*BUDGET_COLUMNS).where(*key)).all()
    found = [budget_of(project, r) for r in rows]
    current = version_in_force(found, now, now)
    future = [b for b, removed in found if b.effective_from > now and not removed]
    if not current and not future:
        return False
    conn.execute(budgets.delete().where(*key, budgets.c.effective_from > to_micros(now)))
    base = next(iter(current.values()), None) or future[0]
    _upsert_version(conn, insert, {
        "project": project, "user": user or "", "tag": tag or "", "period": period,
        "limit_units": _units(base), "hard": base.hard, "alerts": alerts_text(base.alerts),
        "effective_from": to_micros(now), "removed": True, "created_at": to_micros(now)})
    return True


def has_budget(conn: Connection, project: str, at: datetime | None) -> bool:
    """Any budget in force at ``at`` (None: any defined and not removed, whenever from)."""
    rows = conn.execute(select(*BUDGET_COLUMNS).where(budgets.c.project == project)).all()
    found = [budget_of(project, r) for r in rows]
    if at is None:
        newest: dict[BudgetKey, tuple[datetime, bool]] = {}
        for b, removed in found:
            if b.key not in newest or b.effective_from > newest[b.key][0]:
                newest[b.key] = (b.effective_from, removed)
        return any(not removed for _, removed in newest.values())
    return bool(version_in_force(found, at, at))


def counter(conn: Connection, project: str, key: CounterKey) -> tuple[int, int] | None:
    row = conn.execute(select(totals.c.settled, totals.c.held).where(
        totals.c.project == project, totals.c.scope == key[0], totals.c.period == key[1],
        totals.c.window == key[2])).first()
    return None if row is None else (int(row[0]), int(row[1]))


def windows(conn: Connection, at: datetime, project: str | None) -> list[BudgetWindow]:
    """Every budget's window at ``at`` with its totals (``"*"``: one per end user with a
    running total in it, except users whose own budget of that period replaces it)."""
    out: list[BudgetWindow] = []
    found = in_force(conn, project, at)
    windows_at = period_windows(at)
    for b in found:
        window = windows_at[b.period]
        if b.user != "*":
            key = (scope_of(b.user, b.tag), b.period, window)
            settled, held = counter(conn, b.project, key) or _from_events(
                conn, b.project, key)
            out.append(BudgetWindow(b, b.user, window, settled, held))
            continue
        own = {x.user for x in found if x.project == b.project and x.period == b.period
               and x.user not in (None, "*") and x.tag is None}
        rows = conn.execute(select(totals.c.scope, totals.c.settled, totals.c.held).where(
            totals.c.project == b.project, totals.c.period == b.period,
            totals.c.window == window, totals.c.scope.like("user:%"))
            .order_by(totals.c.scope)).all()
        for scope, settled, held in rows:
            user = str(scope)[5:]
            if user not in own:
                out.append(BudgetWindow(b, user, window, int(settled), int(held)))
    return out


def _from_events(conn: Connection, project: str, key: CounterKey) -> tuple[int, int]:
    scope, period, window = key
    lo, hi = window_bounds(period, window)
    cond = _event_scope(project, scope)
    if lo is not None and hi is not None:
        cond += [events.c.at >= to_micros(lo), events.c.at < to_micros(hi)]
    return int(conn.execute(select(func.coalesce(func.sum(events.c.cost), 0))
                            .where(*cond)).scalar_one()), 0


def spend_units(conn: Connection, project: str, at: datetime, period: str, user: str | None,
                tag: str | None) -> int:
    """Settled cost of ``project`` (or its end user, or its tag) in the ``period`` window
    holding ``at``, from its events (the running totals count only budgets' scopes)."""
    key = (scope_of(user, tag), period, window_of(period, at))
    if key[0] == PROJECT_SCOPE and period == "month":
        found = counter(conn, project, key)
        return 0 if found is None else found[0]
    return _from_events(conn, project, key)[0]


def list_alerts(conn: Connection, project: str | None, since_id: int) -> list[Alert]:
    stmt = select(alerts).where(alerts.c.id > since_id).order_by(alerts.c.id)
    if project is not None:
        stmt = stmt.where(alerts.c.project == project)
    return [Alert(int(r.id), r.project, r.user or None, r.budget_tag or None, r.period,
                  r.window, int(r.threshold), from_units(int(r.spent_units)),
                  from_units(int(r.limit_units)), from_micros(int(r.at)))
            for r in conn.execute(stmt).all()]


def check_counters(conn: Connection, now: datetime) -> list[str]:
    """Differences between running totals and the events and pending holds they count.

    ``held`` must equal the pending holds that reserved the row. ``settled`` must equal the
    cost of the window's events in its scope, for the project's months (always kept) and for
    every row whose budget is in force for its window; a removed budget's row stops counting
    (setting it again recounts it).
    """
    rows = conn.execute(select(totals)).all()
    held: dict[tuple[str, CounterKey], int] = {}
    for project, month, amount, text in conn.execute(
            select(holds.c.project, holds.c.month, holds.c.amount, holds.c.counters)
            .where(holds.c.state == "pending")).all():
        for key in decode_keys(text, month):
            held[(project, key)] = held.get((project, key), 0) + int(amount)
    budgets_now = versions(conn, None, now)
    problems = []
    recorded = {(r.project, (r.scope, r.period, r.window)) for r in rows}
    for (project, key), amount in sorted(held.items()):
        if (project, key) not in recorded:
            problems.append(f"{(project, *key)}: pending holds reserve {amount} against a "
                            "running total that does not exist")
    for r in rows:
        key = (r.scope, r.period, r.window)
        want_held = held.get((r.project, key), 0)
        counted = _counted(budgets_now.get(r.project, []), key, now)
        want_settled = _from_events(conn, r.project, key)[0] if counted else int(r.settled)
        have = (int(r.settled), int(r.held))
        if have != (want_settled, want_held):
            problems.append(f"{(r.project, *key)}: totals (settled, held) = {have}, "
                            f"events/holds say {(want_settled, want_held)}")
    return problems


def _counted(found: list[tuple[Budget, bool]], key: CounterKey, now: datetime) -> bool:
    """Whether the running total ``key`` counts every event of its window: a project's month,
    or a window whose budget is in force for it (as of ``now``)."""
    scope, period, window = key
    if scope == PROJECT_SCOPE and period == "month":
        return True
    start, _ = window_bounds(period, window)
    if start is not None and start > now:
        return False
    user = scope[5:] if scope.startswith("user:") else None
    force = version_in_force([(b, r) for b, r in found if b.period == period], start or now, now)
    return any(scope_of(b.user, b.tag, user) == scope for b in force.values())
