"""The ledger's transactional operations: the only code that writes the tables.

Every operation is one short transaction. The hot path never sums history: a hold reads the
budgets that match its call (one SELECT over the project's few budget rows), then makes one
conditional UPDATE per running total it counts in (``settled + held + amount <= limit`` for a
hard budget), in key order (see ``ledger.store.counters``), atomic under SQLite's write lock
(``BEGIN IMMEDIATE``) and under PostgreSQL's row locks (READ COMMITTED re-evaluates the
condition on the locked row). A project with no budget or one budget runs the same three
statements as before budgets had scopes, plus that SELECT. Settles, voids and records are
idempotent by (project, ``call_id``) through the unique key on ``events``; the first
resolution wins.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Engine,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from .. import redact
from ..budget import (
    PROJECT_SCOPE,
    BudgetState,
    CounterKey,
    Match,
    Matcher,
    shrink_cap,
    version_in_force,
)
from ..clock import month_bounds, month_of
from ..errors import BudgetExceeded, InvalidInput, UnknownModel
from ..faults import fault_point
from ..money import MAX_UNITS, from_units, to_units
from ..pricing import Price, worst_case_units
from ..records import CHARGED, STATUSES, Alert, Attribution, Budget, BudgetWindow, Hold, Outcome
from . import budgets as budget_sql
from . import counters
from .prepared import HOLD_COLUMNS, NO_LIMIT, HotStatements, hold_values, raw_transaction
from .schema import events, from_micros, holds, prices, to_micros, totals
from .unavailable import translated

log = logging.getLogger("ledger.store")
#: A call attributed to no one but its project.
NOBODY = Attribution()

#: Store operations are wrapped in :func:`ledger.store.unavailable.translated` (the old name
#: is kept for the modules that decorate with it).
_translate = translated


class Store:
    """Transactional access to one ledger database (thread-safe; share one per process)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        self.hot = HotStatements(engine)
        self._budget_rows = budget_sql.BudgetRows()
        self._matcher = Matcher()
        #: Called with the alerts a settle or record wrote, after its commit (never inside
        #: it); an exception in one is logged, never raised.
        self.alert_listeners: list[Callable[[list[Alert]], None]] = []

    # -- plumbing ---------------------------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect().execution_options(ledger_read_only=True) as conn:
            with conn.begin():
                yield conn

    # -- prices -----------------------------------------------------------------------------
    @_translate
    def set_price(self, price: Price, now: datetime) -> None:
        stmt = self._insert(prices).values(
            model=price.model, effective_from=to_micros(price.effective_from),
            input_price=price.input_units, output_price=price.output_units,
            cached_price=price.cached_units, created_at=to_micros(now),
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[prices.c.model, prices.c.effective_from],
            set_={"input_price": stmt.excluded.input_price,
                  "output_price": stmt.excluded.output_price,
                  "cached_price": stmt.excluded.cached_price,
                  "created_at": stmt.excluded.created_at},
        )
        with self.write() as conn:
            conn.execute(stmt)

    def _price_row(self, conn: Connection, model: str, at: datetime) -> Price | None:
        """The price in force (the hot path's statement, on a SQLAlchemy connection)."""
        stmt = self.hot.price
        row = conn.exec_driver_sql(stmt.sql, stmt.args({"model": model, "at": to_micros(at)}))
        return _price_of(model, row.fetchone())

    @_translate
    def price_at(self, model: str, at: datetime) -> Price | None:
        with self.read() as conn:
            return self._price_row(conn, model, at)

    @_translate
    def price_list(self) -> list[Price]:
        with self.read() as conn:
            rows = conn.execute(
                select(prices.c.model, prices.c.effective_from, prices.c.input_price,
                       prices.c.output_price, prices.c.cached_price)
                .order_by(prices.c.model, prices.c.effective_from)
            ).all()
        return [Price(r[0], from_micros(r[1]), r[2], r[3], r[4]) for r in rows]

    # -- budgets ----------------------------------------------------------------------------
    @_translate
    def set_budget(self, budget: Budget, now: datetime) -> None:
        """Write a new dated version of ``budget`` (in force from its ``effective_from``; the
        same instant again replaces that version). Past windows keep the limit they had.

        A budget in force now starts from the usage already in its current window: its running
        total is recounted from the window's events in this transaction (for ``"*"``: each end
        user with events in it). Holds pending at that moment were not reserved against it
        (they keep what they reserved elsewhere); their actual cost is counted in it when they
        settle, so a window can end above a new hard limit by what was in flight when it was
        set. A budget dated in the future starts from its window's events when its first call
        comes.

        On PostgreSQL a settle that has read its budgets but not committed would count its
        event neither in the recount (not committed yet) nor in the new running total (it did
        not see the budget). So this first takes ``events`` in SHARE mode: it waits for the
        transactions writing events to commit, and new ones wait for it (a settle's budget
        read comes after its event insert, so it then sees this budget). Setting a budget is
        rare; a settle waits for it at most one short transaction. (SQLite writes one
        transaction at a time.)
        """
        with self.write() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("LOCK TABLE events IN SHARE MODE"))
            budget_sql.set_budget(conn, self.hot, self._insert, budget, now)

    @_translate
    def remove_budget(self, project: str, period: str, user: str | None, tag: str | None,
                      now: datetime) -> bool:
        """End a budget from ``now`` on (dated: past windows keep their limit); False if it
        has none in force nor dated later."""
        with self.write() as conn:
            return budget_sql.remove_budget(conn, self._insert, project, period, user, tag, now)

    @_translate
    def budgets(self, project: str | None, at: datetime) -> list[Budget]:
        """The budgets in force at ``at`` (of ``project``, or of every project)."""
        with self.read() as conn:
            return budget_sql.in_force(conn, project, at)

    @_translate
    def windows(self, at: datetime, project: str | None = None) -> list[BudgetWindow]:
        """Every budget's window at ``at`` with its totals (for ``"*"``: one per end user with
        activity in it)."""
        with self.read() as conn:
            return budget_sql.windows(conn, at, project)

    @_translate
    def spend_units(self, project: str, at: datetime, period: str = "month",
                    user: str | None = None, tag: str | None = None) -> int:
        """Settled cost in the ``period`` window holding ``at`` (of the project, or of one of
        its end users or tags)."""
        with self.read() as conn:
            return budget_sql.spend_units(conn, project, at, period, user, tag)

    @_translate
    def alerts(self, project: str | None = None, since_id: int = 0) -> list[Alert]:
        """The alerts written, oldest first (``since_id``: only those after it)."""
        with self.read() as conn:
            return budget_sql.list_alerts(conn, project, since_id)

    def _notify(self, written: list[Alert]) -> None:
        """Hand the alerts a commit wrote to every listener; a listener's exception is logged,
        never raised (the call that crossed the threshold has already happened)."""
        if not written:
            return
        for listener in list(self.alert_listeners):
            try:
                listener(list(written))
            except Exception:
                log.exception("alert listener %r failed", listener)

    @_translate
    def has_budget(self, project: str, at: datetime | None = None) -> bool:
        """Whether ``project`` has a budget (hard or soft, any scope) in force at ``at``
        (None: defined and not removed, whenever it starts)."""
        with self.read() as conn:
            return budget_sql.has_budget(conn, project, at)

    @_translate
    def state(self, project: str, month: str, at: datetime | None = None) -> BudgetState:
        """The project's month (its project/month budget, in force for that month as of
        ``at``; default: at the month's end)."""
        with self.read() as conn:
            return self._state(conn, project, month, at)

    @staticmethod
    def _month_limit(found: list[tuple[Budget, bool]], month: str,
                     at: datetime | None) -> Budget | None:
        start, end = month_bounds(month)
        now = end if at is None else at
        force = version_in_force([(b, r) for b, r in found
                                  if b.period == "month" and b.user is None and b.tag is None],
                                 start, now)
        return next(iter(force.values()), None)

    @classmethod
    def _state(cls, conn: Connection, project: str, month: str,
               at: datetime | None) -> BudgetState:
        _, end = month_bounds(month)
        found = budget_sql.versions(conn, project, at or end).get(project, [])
        budget = cls._month_limit(found, month, at)
        total = budget_sql.counter(conn, project, counters.project_month(month))
        return BudgetState(
            project, month, None if budget is None else to_units(budget.limit, "limit"),
            bool(budget and budget.hard), total[0] if total else 0, total[1] if total else 0)

    @_translate
    def states(self, month: str, at: datetime | None = None) -> list[BudgetState]:
        """Every project with a project/month budget or with activity in ``month``."""
        _, end = month_bounds(month)
        with self.read() as conn:
            rows = conn.execute(
                select(totals.c.project, totals.c.settled, totals.c.held)
                .where(totals.c.scope == PROJECT_SCOPE, totals.c.period == "month",
                       totals.c.window == month)
            ).all()
            every = budget_sql.versions(conn, None, at or end)
        limits = {}
        for project, found in every.items():
            budget = self._month_limit(found, month, at)
            if budget is not None:
                limits[project] = (to_units(budget.limit, "limit"), budget.hard)
        found_totals = {r[0]: (int(r[1]), int(r[2])) for r in rows}
        out = []
        for project in sorted(set(found_totals) | set(limits)):
            limit = limits.get(project)
            settled, held = found_totals.get(project, (0, 0))
            out.append(BudgetState(project, month, limit[0] if limit else None,
                                   limit[1] if limit else False, settled, held))
        return out

    # -- holds ------------------------------------------------------------------------------
    @_translate
    def hold(
        self, call_id: str, project: str, model: str, prompt_tokens: int,
        max_completion_tokens: int, now: datetime, ttl: timedelta,
        attribution: Attribution = NOBODY, min_completion_tokens: int | None = None,
    ) -> Hold:
        """Reserve the call's worst case against every hard budget that matches it (and count
        it in its soft ones' windows), in one transaction; or raise BudgetExceeded (``.budget``:
        the one that did not fit) / UnknownModel.

        ``min_completion_tokens`` ("shrink"): when the full worst case does not fit, hold the
        largest completion cap of at least that many tokens that fits every hard budget
        (``Hold.max_completion_tokens``); if even that does not fit, BudgetExceeded.

        Idempotent: holding an id whose hold is still pending, for the same project, model,
        tokens and attribution, returns that hold unchanged (a hold shrunk to a cap of at least
        ``min_completion_tokens`` counts as the same); any other reuse of an id (a posted, voided or
        expired hold, or another call's) raises ``InvalidInput``.
        """
        args = (call_id, project, model, prompt_tokens, now, ttl, attribution)
        result = self._try_hold(*args, max_completion_tokens, min_completion_tokens)
        # Refused: holds of dead processes may be what blocks it. Expire them, retry.
        if isinstance(result, Refused) and self.expire(now, project=project):
            result = self._try_hold(*args, max_completion_tokens, min_completion_tokens)
        if isinstance(result, Refused) and min_completion_tokens is not None:
            for _ in range(5):  # each try re-reads the totals: others hold meanwhile
                cap = self._shrunk_cap(result, prompt_tokens, max_completion_tokens)
                if cap < min_completion_tokens:
                    break
                result = self._try_hold(*args, cap)
                if not isinstance(result, Refused):
                    break
        if isinstance(result, Hold):
            return result
        if result.match is None:  # no budget refused it: only the 64-bit ceiling does that
            _check_added(0, project, month_of(now), result.amount)
        assert result.match is not None
        now_totals = self._totals(project, [result.match.key])
        window = result.match.window(*now_totals[result.match.key])
        raise BudgetExceeded(
            project, month_of(now), limit=window.limit, spent=window.spent, held=window.held,
            requested=from_units(result.amount), budget=window)

    def _totals(self, project: str, keys: list[CounterKey]) -> dict[CounterKey, tuple[int, int]]:
        """The running totals of ``keys`` now (read in a transaction rolled back)."""
        with raw_transaction(self.engine) as tx:
            found = counters.read(tx, self.hot, project, keys)
            tx.discard()
        return found

    def _shrunk_cap(self, refused: Refused, prompt_tokens: int, asked: int) -> int:
        """The largest completion cap that fits every hard budget now (see ``shrink_cap``)."""
        price = refused.price
        found = self._totals(refused.project, [m.key for m in refused.matches if m.budget.hard])
        return shrink_cap(refused.matches, found, prompt_tokens * price.input_units,
                          price.output_units, asked)

    def _matches(self, cur: Any, project: str, attribution: Attribution, at: datetime,
                 now: datetime) -> list[Match]:
        """The budgets that apply to a call started at ``at`` (as of ``now``), one SELECT."""
        rows = self.hot.budgets_for.run(
            cur, project=project, now=to_micros(now), user=attribution.user or "",
            tags=attribution.tags_column or "").fetchall()
        if not rows:
            return []
        found = self._budget_rows(project, rows)
        return self._matcher(version_in_force(found, at, now).values(), attribution, at)

    def _try_hold(
        self, call_id: str, project: str, model: str, prompt_tokens: int, now: datetime,
        ttl: timedelta, attribution: Attribution, max_completion_tokens: int,
        shrink_min: int | None = None,
    ) -> Hold | Refused:
        """One try, in one transaction: read the budgets that match, insert the hold (priced
        in SQL, returning its amount), reserve it on each running total in key order.
        Anything unusual (unknown model, a repeated call id) rolls back and takes the
        step-by-step path, which says exactly what happened."""
        month, hot = month_of(now), self.hot
        with raw_transaction(self.engine, transient=True) as tx:
            matches = self._matches(tx, project, attribution, now, now)
            limits = _limits(matches, month)
            row = hot.insert_hold_priced.run(
                tx, id=call_id, project=project, month=month, model=model,
                prompt=prompt_tokens, max_completion=max_completion_tokens,
                at=to_micros(now), created_at=to_micros(now), expires_at=to_micros(now + ttl),
                user=attribution.user, tags=attribution.tags_column,
                counters=counters.encode_keys(k for k, _ in limits)).fetchone()
            if row is None:
                tx.discard()
            else:
                amount = int(row[0])
                price = Price(model, now, row[1], row[2], row[3])
                failed, after = counters.reserve(tx, hot, project, limits, amount)
                if failed is not None:
                    tx.discard()
                    return Refused(project, amount, price, matches, after,
                                   next((m for m in matches if m.key == failed), None))
                fault_point("hold:before-commit")
        if row is None:
            return self._try_hold_stepwise(call_id, project, model, prompt_tokens,
                                           max_completion_tokens, now, ttl, attribution,
                                           shrink_min)
        return Hold(call_id, project, month, model, amount, price, prompt_tokens, now,
                    now + ttl, attribution=attribution,
                    max_completion_tokens=max_completion_tokens,
                    tightest=_tightest(matches, after))

    def _try_hold_stepwise(
        self, call_id: str, project: str, model: str, prompt_tokens: int,
        max_completion_tokens: int, now: datetime, ttl: timedelta, attribution: Attribution,
        shrink_min: int | None = None,
    ) -> Hold | Refused:
        """The step-by-step hold (unknown model, a repeated call id)."""
        month, hot = month_of(now), self.hot
        with raw_transaction(self.engine, transient=True) as cur:
            price = self._raw_price(cur, model, now)
            if price is None:
                raise UnknownModel(model)
            amount = worst_case_units(price, prompt_tokens, max_completion_tokens)
            matches = self._matches(cur, project, attribution, now, now)
            limits = _limits(matches, month)
            hot.insert_hold.run(
                cur, id=call_id, project=project, month=month, model=model, amount=amount,
                input_price=price.input_units, output_price=price.output_units,
                cached_price=price.cached_units, est_prompt_tokens=prompt_tokens,
                created_at=to_micros(now), expires_at=to_micros(now + ttl), state="pending",
                user=attribution.user, tags=attribution.tags_column,
                max_completion=max_completion_tokens,
                counters=counters.encode_keys(k for k, _ in limits))
            if cur.fetchone() is None:  # this call id already has a hold
                found = _hold_from_row(hot.get_hold.run(cur, id=call_id).fetchone())
                # The same call: same project, model, prompt, attribution and worst case (or
                # the same call shrunk to fit, asked again with the same minimum).
                cap = found.max_completion_tokens
                shrunk = (shrink_min is not None and cap is not None
                          and shrink_min <= cap < max_completion_tokens)
                same = (found.project, found.model, found.est_prompt_tokens,
                        found.attribution) == (project, model, prompt_tokens, attribution) and (
                    found.amount_units == amount or shrunk)
                if found.state == "pending" and same:
                    return found  # the same hold asked for again: idempotent
                # A dead hold (posted, voided, expired) or another call's: never returned as
                # if it were this one, which would skip the budget (issue 9 item 4).
                raise InvalidInput(
                    f"call id {call_id!r} is already used by a {found.state} hold"
                    + ("" if same else " of another call (project, model or tokens differ)")
                    + ": use a new call id")
            failed, after = counters.reserve(cur, hot, project, limits, amount)
            if failed is not None:
                cur.discard()  # refused: roll the hold row back with the transaction
                return Refused(project, amount, price, matches, after,
                               next((m for m in matches if m.key == failed), None))
            fault_point("hold:before-commit")
            return Hold(call_id, project, month, model, amount, price, prompt_tokens,
                        now, now + ttl, attribution=attribution,
                        max_completion_tokens=max_completion_tokens,
                        tightest=_tightest(matches, after))

    def _raw_price(self, cur: Any, model: str, at: datetime) -> Price | None:
        return _price_of(model, self.hot.price.run(cur, model=model, at=to_micros(at)).fetchone())

    @staticmethod
    def _hold_row(conn: Connection, call_id: str) -> Hold | None:
        row = conn.execute(select(*HOLD_COLUMNS).where(holds.c.id == call_id)).first()
        return None if row is None else _hold_from_row(row)

    @_translate
    def renew(self, call_id: str, expires_at: datetime) -> bool:
        """Push a pending hold's expiry out (a long stream is still running); False if the
        hold is no longer pending."""
        with self.write() as conn:
            done = conn.execute(
                update(holds).where(holds.c.id == call_id, holds.c.state == "pending")
                .values(expires_at=to_micros(expires_at)))
            return bool(done.rowcount == 1)

    @_translate
    def get_hold(self, call_id: str) -> Hold | None:
        with self.read() as conn:
            return self._hold_row(conn, call_id)

    # -- settle / void / record -------------------------------------------------------------
    @_translate
    def settle(self, call_id: str, outcome: Outcome, now: datetime,
               fallback: tuple[Any, ...] | None = None) -> int:
        """Resolve a call: post its hold at the actual cost (zero unless ``ok``/``cancelled``)
        and append its event. Returns the cost in units. Idempotent by ``call_id``: a second
        resolution changes nothing and returns the first one's cost.

        The cost counts in the running totals the hold reserved (whose reservation it releases)
        and in those of every budget matching the call now, in the windows of the call's start.
        Alerts whose thresholds it crossed are written in the same transaction and handed to
        ``alert_listeners`` after the commit.

        ``fallback`` (project, model, started_at[, attribution]) prices a call whose hold row
        is missing.
        """
        charged = outcome.charged
        hot = self.hot
        written: list[Alert] = []
        with raw_transaction(self.engine) as cur:
            row = hot.post_hold.run(cur, id=call_id,
                                    state="posted" if charged else "voided").fetchone()
            released: dict[CounterKey, int] = {}
            hold: Hold | None
            if row is not None:  # the usual case: a pending hold, now resolved
                hold = _hold_from_row(row)
                released = dict.fromkeys(counters.decode_keys(row[-1], hold.month),
                                         hold.amount_units)
            else:  # expired, already resolved, or never held
                found = hot.get_hold.run(cur, id=call_id).fetchone()
                hold = None if found is None else _hold_from_row(found)
            if hold is not None:
                project, model, started, price = hold.project, hold.model, hold.created_at, hold.price
                month, est, who = hold.month, hold.est_prompt_tokens, hold.attribution
            elif fallback is not None:
                project, model, started = fallback[0], fallback[1], fallback[2]
                who = fallback[3] if len(fallback) > 3 and fallback[3] is not None else NOBODY
                found_price = self._raw_price(cur, model, started)
                if found_price is None:
                    raise UnknownModel(model)
                price, month, est = found_price, month_of(started), None
            else:
                raise InvalidInput(f"no hold with call id {call_id!r}")
            cost = price.cost_units(outcome.prompt_tokens, outcome.completion_tokens,
                                    outcome.cached_tokens) if charged else 0
            event = self._event(call_id, project, month, started, model, outcome, est, price,
                                cost, now, who)
            if hot.insert_event.run(cur, **event).fetchone() is None:
                # resolved before: the first resolution stands (this attempt rolls back)
                first = hot.event_cost.run(cur, project=project, call_id=call_id).fetchone()[0]
                cur.discard()
                return int(first)
            written = self._count(cur, project, who, started, now, month, cost, released)
            fault_point("settle:before-commit")
        fault_point("settle:after-commit")
        self._notify(written)
        return cost

    def _count(self, cur: Any, project: str, who: Attribution, started: datetime,
               now: datetime, month: str, cost: int,
               released: Mapping[CounterKey, int]) -> list[Alert]:
        """Count a new event's cost in its running totals (key order) and write the alerts
        it crossed; raises InvalidInput if a total would pass 64 bits."""
        matches = self._matches(cur, project, who, started, now)
        keys = sorted({counters.project_month(month), *released, *(m.key for m in matches)})
        after = counters.settle_into(cur, self.hot, project, keys, released, cost)
        if after is None:
            _check_added(0, project, month, cost)
        assert after is not None
        return counters.write_alerts(cur, self.hot, project, matches, after, cost, now)

    @_translate
    def record(
        self, project: str, model: str, outcome: Outcome, at: datetime, now: datetime,
        request_id: str | None, attribution: Attribution = NOBODY,
    ) -> int:
        """Append a call that was not held (usage reported by hand). Idempotent by request_id
        within its project: the same id with the same model, counts and attribution is a no-op
        returning the cost recorded; with other numbers it raises ``InvalidInput``. Another
        project's call with the same id is its own call."""
        hot = self.hot
        with raw_transaction(self.engine) as cur:
            price = self._raw_price(cur, model, at)
            if price is None:
                raise UnknownModel(model)
            month = month_of(at)
            cost = price.cost_units(outcome.prompt_tokens, outcome.completion_tokens,
                                    outcome.cached_tokens) if outcome.charged else 0
            stmt = hot.insert_event if request_id is not None else hot.insert_event_plain
            stmt.run(cur, **self._event(request_id, project, month, at, model, outcome, None,
                                        price, cost, now, attribution))
            if cur.fetchone() is None:  # this request id is already recorded
                row = hot.event_numbers.run(cur, project=project, call_id=request_id).fetchone()
                if tuple(row[1:8]) != (project, model, outcome.prompt_tokens,
                                       outcome.completion_tokens, outcome.cached_tokens,
                                       attribution.user, attribution.tags_column):
                    # Another call's numbers under the same id: never dropped in silence
                    # (issue 9 item 4).
                    raise InvalidInput(
                        f"request_id {request_id!r} is already recorded with other numbers "
                        f"(project {row[1]!r}, model {row[2]!r}, {row[3]} prompt + {row[4]} "
                        "completion tokens" + (f", user {row[6]!r}" if row[6] else "")
                        + (f", tags {row[7].strip(',')!r}" if row[7] else "")
                        + "): use a new request_id")
                return int(row[0])
            written = self._count(cur, project, attribution, at, now, month, cost, {})
        self._notify(written)
        return cost

    @staticmethod
    def _event(call_id: str | None, project: str, month: str, at: datetime, model: str,
               outcome: Outcome, est: int | None, price: Price | None, cost: int,
               now: datetime, attribution: Attribution = NOBODY) -> dict[str, Any]:
        """The one place an event row's values are laid out (``price=None``: a refusal)."""
        return {
            "call_id": call_id, "project": project, "month": month, "at": to_micros(at),
            "model": model, "status": outcome.status, "estimated": outcome.estimated,
            "prompt_tokens": outcome.prompt_tokens,
            "completion_tokens": outcome.completion_tokens,
            "cached_tokens": outcome.cached_tokens, "est_prompt_tokens": est,
            "input_price": 0 if price is None else price.input_units,
            "output_price": 0 if price is None else price.output_units,
            "cached_price": None if price is None else price.cached_units, "cost": cost,
            "http_status": outcome.http_status,
            "error": None if outcome.error is None else redact.redact_text(outcome.error)[:500],
            "recorded_at": to_micros(now), "reasoning_tokens": outcome.reasoning_tokens,
            "user": attribution.user, "tags": attribution.tags_column,
        }

    @_translate
    def record_refused(self, call_id: str, project: str, model: str, at: datetime,
                       now: datetime, reason: str, est_prompt_tokens: int | None,
                       attribution: Attribution = NOBODY) -> None:
        """Append a refused call (cost zero) so refusals show up in usage and audits."""
        row = self._event(call_id, project, month_of(at), at, model,
                          Outcome("refused", http_status=402, error=reason),
                          est_prompt_tokens, None, 0, now, attribution)
        with self.write() as conn:
            conn.execute(self._insert(events).values(row).on_conflict_do_nothing(
                index_elements=[events.c.project, events.c.call_id]))

    # -- expiry -----------------------------------------------------------------------------
    @_translate
    def expire(self, now: datetime, project: str | None = None, month: str | None = None) -> int:
        """Expire pending holds past their TTL (their process died, or their response was
        abandoned); returns how many. Each expiry is written down as an ``expired`` event
        (cost zero, no call id, so the call's own late settle still records its usage): a
        call never vanishes from the record without a trace. What they reserved is released
        from every running total they reserved against, in key order."""
        cond = [holds.c.state == "pending", holds.c.expires_at <= to_micros(now)]
        if project is not None:
            cond.append(holds.c.project == project)
        if month is not None:
            cond.append(holds.c.month == month)
        with self.write() as conn:
            rows = conn.execute(
                update(holds).where(*cond).values(state="expired").returning(*HOLD_COLUMNS)
            ).all()
            freed: dict[tuple[str, CounterKey], int] = {}
            for row in rows:
                hold = _hold_from_row(row)
                for key in counters.decode_keys(row.counters, hold.month):
                    freed[(hold.project, key)] = (
                        freed.get((hold.project, key), 0) + hold.amount_units)
                conn.execute(events.insert().values(self._event(
                    None, hold.project, hold.month, hold.created_at, hold.model,
                    Outcome("expired", error=f"hold {hold.call_id} expired unresolved after "
                            f"its TTL (process died or response abandoned)"),
                    hold.est_prompt_tokens, hold.price, 0, now, hold.attribution)))
            for (p, (scope, period, window)), amount in sorted(freed.items()):
                conn.execute(update(totals).where(
                    totals.c.project == p, totals.c.scope == scope, totals.c.period == period,
                    totals.c.window == window).values(held=totals.c.held - amount))
            return len(rows)

    @_translate
    def pending_holds(self) -> list[Hold]:
        with self.read() as conn:
            rows = conn.execute(select(*HOLD_COLUMNS).where(holds.c.state == "pending")).all()
        return [_hold_from_row(r) for r in rows]

    # -- audits -----------------------------------------------------------------------------
    @_translate
    def check_totals(self, now: datetime | None = None) -> list[str]:
        """Differences between running totals and what events and pending holds imply: every
        running total's ``held`` is what its pending holds reserved; its ``settled`` is the
        cost of its window's events (a project's month always; another window while its
        budget is in force, see ``ledger.store.budgets.check_counters``)."""
        with self.read() as conn:
            when = now or datetime(9999, 1, 1, tzinfo=UTC)  # as of the end of every window
            problems = budget_sql.check_counters(conn, when)
            spent = {(p, m): int(s) for p, m, s in conn.execute(
                select(events.c.project, events.c.month, func.sum(events.c.cost))
                .group_by(events.c.project, events.c.month)).all()}
            months = {(r[0], r[1]) for r in conn.execute(
                select(totals.c.project, totals.c.window)
                .where(totals.c.scope == PROJECT_SCOPE, totals.c.period == "month")).all()}
            negative = conn.execute(select(func.count()).select_from(events).where(
                or_(events.c.cost < 0, events.c.prompt_tokens < 0,
                    events.c.completion_tokens < 0))).scalar_one()
        for key in sorted(set(spent) - months):
            if spent[key]:
                problems.append(f"{key}: events cost {spent[key]} but the project's month has "
                                "no running total")
        if negative:
            problems.append(f"{negative} events with negative amounts")
        return problems


def _limits(matches: list[Match], month: str) -> list[tuple[CounterKey, int]]:
    """Each running total a hold reserves on, in key order, with the limit it must stay under
    (``NO_LIMIT``: a soft budget, or the project's month without a hard budget)."""
    limits = {counters.project_month(month): NO_LIMIT}
    for m in matches:
        limits[m.key] = m.limit_units if m.budget.hard else NO_LIMIT
    return sorted(limits.items())


def _tightest(matches: list[Match], after: Mapping[CounterKey, tuple[int, int]]
              ) -> BudgetWindow | None:
    """The matching hard budget with the least remaining (after this hold)."""
    best: Match | None = None
    least = 0
    for m in matches:
        if m.budget.hard and m.key in after:
            left = m.limit_units - after[m.key][0] - after[m.key][1]
            if best is None or left < least:
                best, least = m, left
    return None if best is None else best.window(*after[best.key])


@dataclass
class Refused:
    """A hold that did not fit (rolled back): what it asked, and the budget that refused it
    (None: none did, the 64-bit ceiling did)."""

    project: str
    amount: int
    price: Price
    matches: list[Match]
    totals: dict[CounterKey, tuple[int, int]]
    match: Match | None


def _check_added(rowcount: int, project: str, month: str, units: int) -> None:
    """The guarded totals upsert wrote nothing: the running total would pass 64 bits."""
    if rowcount != 1:
        raise InvalidInput(
            f"the running total of project {project!r} in {month} cannot take another "
            f"${from_units(units)}: it would pass the ledger's limit of "
            f"${from_units(MAX_UNITS)} (a 64-bit integer of 10^-10 USD)")


def _price_of(model: str, row: Any) -> Price | None:
    """A Price from a row of ``HotStatements.price``."""
    return None if row is None else Price(model, from_micros(row[0]), row[1], row[2], row[3])


def _hold_from_row(row: Any) -> Hold:
    """A Hold from a row of ``HOLD_COLUMNS``, read by name (a SQLAlchemy ``Row`` or a raw
    DBAPI tuple, named by :func:`~ledger.store.prepared.hold_values`)."""
    v: Mapping[str, Any] = hold_values(row)
    created = from_micros(v["created_at"])
    price = Price(v["model"], created, v["input_price"], v["output_price"], v["cached_price"])
    cap = v["max_completion"]
    return Hold(v["id"], v["project"], v["month"], v["model"], v["amount"], price,
                v["est_prompt_tokens"], created, from_micros(v["expires_at"]), v["state"],
                attribution=Attribution.from_columns(v["user"], v["tags"]),
                max_completion_tokens=None if cap is None else int(cap))


__all__ = ["CHARGED", "NOBODY", "STATUSES", "Hold", "Outcome", "Store"]  # Hold, Outcome: ledger.records
