"""The ledger's transactional operations: the only code that writes the tables.

Every operation is one short transaction. The hot path never sums history: a hold is one
conditional UPDATE of the project-month's running totals (``settled + held + amount <= limit``),
atomic under SQLite's write lock (``BEGIN IMMEDIATE``) and under PostgreSQL's row lock (READ
COMMITTED re-evaluates the condition on the locked row). Settles, voids and records are
idempotent by ``call_id`` through the unique key on ``events``; the first resolution wins.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Engine,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from .. import redact
from ..budget import BudgetState
from ..clock import month_of
from ..errors import BudgetExceeded, InvalidInput, UnknownModel
from ..faults import fault_point
from ..money import MAX_UNITS, from_units
from ..pricing import Price, worst_case_units
from ..records import CHARGED, STATUSES, Hold, Outcome
from .prepared import HOLD_COLUMNS, NO_LIMIT, HotStatements, hold_values, raw_transaction
from .schema import budgets, events, from_micros, holds, prices, to_micros, totals
from .unavailable import translated

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
    def set_budget(self, project: str, limit_units: int, hard: bool, now: datetime) -> None:
        stmt = self._insert(budgets).values(
            project=project, limit_units=limit_units, hard=hard, updated_at=to_micros(now))
        stmt = stmt.on_conflict_do_update(
            index_elements=[budgets.c.project],
            set_={"limit_units": stmt.excluded.limit_units, "hard": stmt.excluded.hard,
                  "updated_at": stmt.excluded.updated_at},
        )
        with self.write() as conn:
            conn.execute(stmt)

    @_translate
    def has_budget(self, project: str) -> bool:
        """Whether ``project`` has a budget (hard or soft)."""
        with self.read() as conn:
            return conn.execute(
                select(budgets.c.project).where(budgets.c.project == project)).first() is not None

    @_translate
    def state(self, project: str, month: str) -> BudgetState:
        with self.read() as conn:
            return self._state(conn, project, month)

    @staticmethod
    def _state(conn: Connection, project: str, month: str) -> BudgetState:
        budget = conn.execute(
            select(budgets.c.limit_units, budgets.c.hard).where(budgets.c.project == project)
        ).first()
        total = conn.execute(
            select(totals.c.settled, totals.c.held)
            .where(totals.c.project == project, totals.c.month == month)
        ).first()
        return BudgetState(
            project, month,
            None if budget is None else budget[0], bool(budget[1]) if budget else False,
            total[0] if total else 0, total[1] if total else 0,
        )

    @_translate
    def states(self, month: str) -> list[BudgetState]:
        """Every project with a budget or with activity in ``month``."""
        with self.read() as conn:
            rows = conn.execute(
                select(totals.c.project, totals.c.settled, totals.c.held)
                .where(totals.c.month == month)
            ).all()
            limits = {r[0]: (r[1], bool(r[2])) for r in conn.execute(
                select(budgets.c.project, budgets.c.limit_units, budgets.c.hard)).all()}
        found = {r[0]: (r[1], r[2]) for r in rows}
        out = []
        for project in sorted(set(found) | set(limits)):
            limit = limits.get(project)
            settled, held = found.get(project, (0, 0))
            out.append(BudgetState(project, month, limit[0] if limit else None,
                                   limit[1] if limit else False, settled, held))
        return out

    # -- holds ------------------------------------------------------------------------------
    @_translate
    def hold(
        self, call_id: str, project: str, model: str, prompt_tokens: int,
        max_completion_tokens: int, now: datetime, ttl: timedelta,
    ) -> Hold:
        """Reserve the call's worst case, or raise BudgetExceeded / UnknownModel.

        Idempotent: holding an id whose hold is still pending, for the same project, model and
        tokens, returns that hold unchanged; any other reuse of an id (a posted, voided or
        expired hold, or another call's) raises ``InvalidInput``.
        """
        hold = self._try_hold(call_id, project, model, prompt_tokens, max_completion_tokens,
                              now, ttl)
        # Refused (None): holds of dead processes may be what blocks it. Expire them, retry.
        if hold is None and self.expire(now, project=project, month=month_of(now)):
            hold = self._try_hold(call_id, project, model, prompt_tokens,
                                  max_completion_tokens, now, ttl)
        if hold is not None:
            return hold
        with self.read() as conn:
            state = self._state(conn, project, month_of(now))
            price = self._price_row(conn, model, now)
        if price is None:
            raise UnknownModel(model)
        if state.limit is None or not state.hard:  # only the 64-bit ceiling refuses these
            _check_added(0, project, state.month,
                         worst_case_units(price, prompt_tokens, max_completion_tokens))
        assert state.limit is not None
        raise BudgetExceeded(
            project, state.month, limit=state.limit, spent=state.spent, held=state.held,
            requested=from_units(worst_case_units(price, prompt_tokens, max_completion_tokens)),
        )

    def _try_hold(
        self, call_id: str, project: str, model: str, prompt_tokens: int,
        max_completion_tokens: int, now: datetime, ttl: timedelta,
    ) -> Hold | None:
        """The usual path: insert the hold priced in SQL, then reserve the amount it returned
        (computed once, so the hold and the running total always agree). Anything unusual
        (first call of the month, unknown model, refused, a repeated call id) rolls back and
        takes the step-by-step path, which says exactly what happened. ``None``: refused."""
        month = month_of(now)
        with raw_transaction(self.engine, transient=True) as tx:
            row = self.hot.insert_hold_priced.run(
                tx, id=call_id, project=project, month=month, model=model,
                prompt=prompt_tokens, max_completion=max_completion_tokens,
                at=to_micros(now), created_at=to_micros(now),
                expires_at=to_micros(now + ttl)).fetchone()
            usual = row is not None and self.hot.reserve.run(
                tx, project=project, month=month, amount=row[0], no_limit=NO_LIMIT
            ).rowcount == 1
            if usual:
                fault_point("hold:before-commit")
            else:
                tx.discard()
        if not usual:
            return self._try_hold_stepwise(call_id, project, model, prompt_tokens,
                                           max_completion_tokens, now, ttl)
        price = Price(model, now, row[1], row[2], row[3])
        return Hold(call_id, project, month, model, row[0], price, prompt_tokens, now, now + ttl)

    def _try_hold_stepwise(
        self, call_id: str, project: str, model: str, prompt_tokens: int,
        max_completion_tokens: int, now: datetime, ttl: timedelta,
    ) -> Hold | None:
        """The step-by-step hold; ``None`` when it does not fit (rolled back)."""
        month, hot = month_of(now), self.hot
        with raw_transaction(self.engine, transient=True) as cur:
            price = self._raw_price(cur, model, now)
            if price is None:
                raise UnknownModel(model)
            amount = worst_case_units(price, prompt_tokens, max_completion_tokens)
            hot.insert_hold.run(
                cur, id=call_id, project=project, month=month, model=model, amount=amount,
                input_price=price.input_units, output_price=price.output_units,
                cached_price=price.cached_units, est_prompt_tokens=prompt_tokens,
                created_at=to_micros(now), expires_at=to_micros(now + ttl), state="pending")
            if cur.fetchone() is None:  # this call id already has a hold
                found = _hold_from_row(hot.get_hold.run(cur, id=call_id).fetchone())
                same = (found.project, found.model, found.est_prompt_tokens,
                        found.amount_units) == (project, model, prompt_tokens, amount)
                if found.state == "pending" and same:
                    return found  # the same hold asked for again: idempotent
                # A dead hold (posted, voided, expired) or another call's: never returned as
                # if it were this one, which would skip the budget (issue 9 item 4).
                raise InvalidInput(
                    f"call id {call_id!r} is already used by a {found.state} hold"
                    + ("" if same else " of another call (project, model or tokens differ)")
                    + ": use a new call id")
            reserve = {"project": project, "month": month, "amount": amount,
                       "no_limit": NO_LIMIT}
            if hot.reserve.run(cur, **reserve).rowcount != 1:
                hot.ensure_totals.run(cur, project=project, month=month)
                if hot.reserve.run(cur, **reserve).rowcount != 1:
                    cur.discard()  # refused: roll the hold row back with the transaction
                    return None
            fault_point("hold:before-commit")
            return Hold(call_id, project, month, model, amount, price, prompt_tokens,
                        now, now + ttl)

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
               fallback: tuple[str, str, datetime] | None = None) -> int:
        """Resolve a call: post its hold at the actual cost (zero unless ``ok``/``cancelled``)
        and append its event. Returns the cost in units. Idempotent by ``call_id``: a second
        resolution changes nothing and returns the first one's cost.

        ``fallback`` (project, model, started_at) prices a call whose hold row is missing.
        """
        charged = outcome.charged
        hot = self.hot
        with raw_transaction(self.engine) as cur:
            row = hot.post_hold.run(cur, id=call_id,
                                    state="posted" if charged else "voided").fetchone()
            released = 0
            hold: Hold | None
            if row is not None:  # the usual case: a pending hold, now resolved
                hold = _hold_from_row(row)
                released = hold.amount_units
            else:  # expired, already resolved, or never held
                found = hot.get_hold.run(cur, id=call_id).fetchone()
                hold = None if found is None else _hold_from_row(found)
            if hold is not None:
                project, model, started, price = hold.project, hold.model, hold.created_at, hold.price
                month, est = hold.month, hold.est_prompt_tokens
            elif fallback is not None:
                project, model, started = fallback
                found_price = self._raw_price(cur, model, started)
                if found_price is None:
                    raise UnknownModel(model)
                price, month, est = found_price, month_of(started), None
            else:
                raise InvalidInput(f"no hold with call id {call_id!r}")
            cost = price.cost_units(outcome.prompt_tokens, outcome.completion_tokens,
                                    outcome.cached_tokens) if charged else 0
            event = self._event(call_id, project, month, started, model, outcome, est, price,
                                cost, now)
            inserted, added = cur.batch(
                (hot.insert_event, event),
                (hot.add_totals, {"project": project, "month": month, "settled": cost,
                                  "held": -released}))
            if inserted.fetchone() is None:  # resolved before: the first resolution stands
                first = hot.event_cost.run(cur, call_id=call_id).fetchone()[0]
                cur.discard()  # rolls back this attempt's totals update
                return int(first)
            _check_added(added.rowcount, project, month, cost)
            fault_point("settle:before-commit")
        fault_point("settle:after-commit")
        return cost

    @_translate
    def record(
        self, project: str, model: str, outcome: Outcome, at: datetime, now: datetime,
        request_id: str | None,
    ) -> int:
        """Append a call that was not held (usage reported by hand). Idempotent by request_id:
        the same id with the same project, model and counts is a no-op returning the cost
        recorded; with other numbers it raises ``InvalidInput``."""
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
                                        price, cost, now))
            if cur.fetchone() is None:  # this request id is already recorded
                row = hot.event_numbers.run(cur, call_id=request_id).fetchone()
                if tuple(row[1:]) != (project, model, outcome.prompt_tokens,
                                      outcome.completion_tokens, outcome.cached_tokens):
                    # Another call's numbers under the same id: never dropped in silence
                    # (issue 9 item 4).
                    raise InvalidInput(
                        f"request_id {request_id!r} is already recorded with other numbers "
                        f"(project {row[1]!r}, model {row[2]!r}, {row[3]} prompt + {row[4]} "
                        "completion tokens): use a new request_id")
                return int(row[0])
            _check_added(hot.add_totals.run(cur, project=project, month=month, settled=cost,
                                            held=0).rowcount, project, month, cost)
            return cost

    @staticmethod
    def _event(call_id: str | None, project: str, month: str, at: datetime, model: str,
               outcome: Outcome, est: int | None, price: Price | None, cost: int,
               now: datetime) -> dict[str, Any]:
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
        }

    @_translate
    def record_refused(self, call_id: str, project: str, model: str, at: datetime,
                       now: datetime, reason: str, est_prompt_tokens: int | None) -> None:
        """Append a refused call (cost zero) so refusals show up in usage and audits."""
        row = self._event(call_id, project, month_of(at), at, model,
                          Outcome("refused", http_status=402, error=reason),
                          est_prompt_tokens, None, 0, now)
        with self.write() as conn:
            conn.execute(self._insert(events).values(row)
                         .on_conflict_do_nothing(index_elements=[events.c.call_id]))

    def _add_totals(self, conn: Connection, project: str, month: str, *, settled: int,
                    held: int) -> None:
        """The hot path's running-total upsert, on a SQLAlchemy connection."""
        stmt = self.hot.add_totals
        conn.exec_driver_sql(stmt.sql, stmt.args(
            {"project": project, "month": month, "settled": settled, "held": held}))

    # -- expiry -----------------------------------------------------------------------------
    @_translate
    def expire(self, now: datetime, project: str | None = None, month: str | None = None) -> int:
        """Expire pending holds past their TTL (their process died, or their response was
        abandoned); returns how many. Each expiry is written down as an ``expired`` event
        (cost zero, no call id, so the call's own late settle still records its usage): a
        call never vanishes from the record without a trace."""
        cond = [holds.c.state == "pending", holds.c.expires_at <= to_micros(now)]
        if project is not None:
            cond.append(holds.c.project == project)
        if month is not None:
            cond.append(holds.c.month == month)
        with self.write() as conn:
            rows = conn.execute(
                update(holds).where(*cond).values(state="expired").returning(*HOLD_COLUMNS)
            ).all()
            freed: dict[tuple[str, str], int] = {}
            for row in rows:
                hold = _hold_from_row(row)
                freed[(hold.project, hold.month)] = (
                    freed.get((hold.project, hold.month), 0) + hold.amount_units)
                conn.execute(events.insert().values(self._event(
                    None, hold.project, hold.month, hold.created_at, hold.model,
                    Outcome("expired", error=f"hold {hold.call_id} expired unresolved after "
                            f"its TTL (process died or response abandoned)"),
                    hold.est_prompt_tokens, hold.price, 0, now)))
            for (p, m), amount in freed.items():
                self._add_totals(conn, p, m, settled=0, held=-amount)
            return len(rows)

    @_translate
    def pending_holds(self) -> list[Hold]:
        with self.read() as conn:
            rows = conn.execute(select(*HOLD_COLUMNS).where(holds.c.state == "pending")).all()
        return [_hold_from_row(r) for r in rows]

    # -- audits -----------------------------------------------------------------------------
    @_translate
    def check_totals(self) -> list[str]:
        """Differences between running totals and what events and pending holds imply."""
        with self.read() as conn:
            recorded = dict(((p, m), (s, h)) for p, m, s, h in conn.execute(
                select(totals.c.project, totals.c.month, totals.c.settled, totals.c.held)).all())
            spent = {(p, m): int(s) for p, m, s in conn.execute(
                select(events.c.project, events.c.month, func.sum(events.c.cost))
                .group_by(events.c.project, events.c.month)).all()}
            held = {(p, m): int(s) for p, m, s in conn.execute(
                select(holds.c.project, holds.c.month, func.sum(holds.c.amount))
                .where(holds.c.state == "pending")
                .group_by(holds.c.project, holds.c.month)).all()}
            negative = conn.execute(select(func.count()).select_from(events).where(
                or_(events.c.cost < 0, events.c.prompt_tokens < 0,
                    events.c.completion_tokens < 0))).scalar_one()
        problems = []
        for key in sorted(set(recorded) | set(spent) | set(held)):
            want = (spent.get(key, 0), held.get(key, 0))
            have = recorded.get(key, (0, 0))
            if tuple(have) != want:
                problems.append(f"{key}: totals (settled, held) = {tuple(have)}, events/holds say {want}")
        if negative:
            problems.append(f"{negative} events with negative amounts")
        return problems


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
    return Hold(v["id"], v["project"], v["month"], v["model"], v["amount"], price,
                v["est_prompt_tokens"], created, from_micros(v["expires_at"]), v["state"])


__all__ = ["CHARGED", "STATUSES", "Hold", "Outcome", "Store"]  # Hold, Outcome: ledger.records
