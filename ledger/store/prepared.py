"""The hot path's statements, compiled once per dialect and run on pooled DBAPI cursors.

The statements are written once with SQLAlchemy Core (so each dialect gets its own SQL from
one definition) and compiled at start-up. Executing them skips SQLAlchemy's per-call statement
building, cache-key generation and result wrapping, which cost more than the database work
itself on a hold or a settle.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import ColumnElement, Engine, bindparam, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import ClauseElement

from ..money import MAX_UNITS
from .schema import alerts, budgets, events, holds, prices, totals

NO_LIMIT = 9_000_000_000_000_000_000
#: Bounds of the ``at`` range that every event is in (a ``total`` window).
ALL_TIME = (-(2**62), 2**62)

HOLD_COLUMNS = (
    holds.c.id, holds.c.project, holds.c.month, holds.c.model, holds.c.amount,
    holds.c.input_price, holds.c.output_price, holds.c.cached_price, holds.c.est_prompt_tokens,
    holds.c.created_at, holds.c.expires_at, holds.c.state, holds.c.user, holds.c.tags,
    holds.c.max_completion, holds.c.counters,
)
BUDGET_COLUMNS = (
    budgets.c.user, budgets.c.tag, budgets.c.period, budgets.c.limit_units, budgets.c.hard,
    budgets.c.alerts, budgets.c.effective_from, budgets.c.removed,
)
HOLD_NAMES = tuple(c.name for c in HOLD_COLUMNS)
#: The columns an event insert sets: every column of ``events`` but its id and its invoice
#: (values laid out by name in ``Store._event``, the one place they are built).
EVENT_VALUES = tuple(c.name for c in events.c if c.name not in ("id", "invoice_id"))


def hold_values(row: Any) -> Mapping[str, Any]:
    """A hold row by column name: a SQLAlchemy ``Row``'s mapping, or a raw DBAPI tuple laid
    out as ``HOLD_COLUMNS`` (the hot path's statements all return them in that order)."""
    mapping = getattr(row, "_mapping", None)
    if mapping is not None:
        return dict(mapping)
    return dict(zip(HOLD_NAMES, row, strict=True))


class Prepared:
    """One statement compiled for one dialect: SQL text plus how to lay out its parameters."""

    def __init__(self, stmt: ClauseElement, engine: Engine) -> None:
        compiled: Any = stmt.compile(dialect=engine.dialect)
        self.sql = str(compiled)
        self.defaults = {k: v for k, v in compiled.params.items() if v is not None}
        self.order: tuple[str, ...] | None = (
            tuple(compiled.positiontup or ()) if compiled.positional else None)

    def args(self, values: Mapping[str, Any]) -> Any:
        merged = {**self.defaults, **values} if self.defaults else values
        if self.order is None:
            return merged
        return tuple(merged[name] for name in self.order)

    def run(self, cur: Any, **values: Any) -> Any:
        cur.execute(self.sql, self.args(values))
        return cur


class HotStatements:
    """Every statement a hold, a settle or a record runs."""

    def __init__(self, engine: Engine) -> None:
        insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        p = bindparam
        contains = func.strpos if engine.dialect.name == "postgresql" else func.instr

        def has_tag(tags: ColumnElement[str], needle: ColumnElement[str]) -> ColumnElement[bool]:
            """``tags`` (",k=v,k2=v2,") holds the tag ``needle`` (",k=v,") exactly."""
            return contains(tags, needle) > 0

        # The budgets that may apply to a call: its project's, "*", its user's, its tags';
        # every version up to now (``ledger.budget.version_in_force`` picks).
        self.budgets_for = Prepared(
            select(*BUDGET_COLUMNS).where(
                budgets.c.project == p("project"), budgets.c.effective_from <= p("now"),
                (budgets.c.user == "") | (budgets.c.user == "*") | (budgets.c.user == p("user")),
                (budgets.c.tag == "")
                | has_tag(p("tags"), literal(",") + budgets.c.tag + literal(","))), engine)
        # Reserve against one running total: conditional on the limit (NO_LIMIT: soft or no
        # budget), returning the totals after it (nothing: it does not fit, or no row yet).
        self.reserve_counter = Prepared(
            update(totals)
            .where(totals.c.project == p("project"), totals.c.scope == p("scope"),
                   totals.c.period == p("period"), totals.c.window == p("window"),
                   totals.c.settled + totals.c.held + p("amount") <= p("limit"))
            .values(held=totals.c.held + p("amount"))
            .returning(totals.c.settled, totals.c.held), engine)
        # Settle into one running total (and release what its hold reserved there); guarded
        # against passing 64 bits like ``add_totals``. Nothing returned: no row yet.
        self.add_counter = Prepared(
            update(totals)
            .where(totals.c.project == p("project"), totals.c.scope == p("scope"),
                   totals.c.period == p("period"), totals.c.window == p("window"),
                   totals.c.settled <= bindparam("max_units", MAX_UNITS) - p("settled"))
            .values(settled=totals.c.settled + p("settled"), held=totals.c.held + p("held"))
            .returning(totals.c.settled, totals.c.held), engine)
        self.read_counter = Prepared(
            select(totals.c.settled, totals.c.held)
            .where(totals.c.project == p("project"), totals.c.scope == p("scope"),
                   totals.c.period == p("period"), totals.c.window == p("window")), engine)
        # A running total that does not exist yet starts from the events already in its
        # window (a budget set during a window, a window's first call): one per scope kind.
        in_window = (events.c.project == p("project"), events.c.at >= p("lo"),
                     events.c.at < p("hi"))
        scoped = {
            "project": (),
            "user": (events.c.user == p("user"),),
            "tag": (has_tag(events.c.tags, p("needle")),),
        }
        self.ensure_counter = {
            kind: Prepared(
                insert(totals).from_select(
                    ["project", "scope", "period", "window", "settled", "held"],
                    select(p("project"), p("scope"), p("period"), p("window"),
                           func.coalesce(func.sum(events.c.cost), 0), literal(0))
                    .where(*in_window, *cond))
                .on_conflict_do_nothing(), engine)
            for kind, cond in scoped.items()}
        self.insert_alert = Prepared(
            insert(alerts).values({c.name: p(c.name) for c in alerts.c if c.name != "id"})
            .on_conflict_do_nothing().returning(alerts.c.id), engine)
        self.price = Prepared(
            select(prices.c.effective_from, prices.c.input_price, prices.c.output_price,
                   prices.c.cached_price)
            .where(prices.c.model == p("model"), prices.c.effective_from <= p("at"))
            .order_by(prices.c.effective_from.desc()).limit(1), engine)
        self.insert_hold = Prepared(
            insert(holds).values({c.name: p(c.name) for c in HOLD_COLUMNS})
            .on_conflict_do_nothing(index_elements=[holds.c.id]).returning(holds.c.id), engine)
        # The usual hold: insert it priced in SQL (returning the amount), then reserve that.
        price_in_force = (prices.c.model == p("model"), prices.c.effective_from <= p("at"))
        priced = (
            select(p("id"), p("project"), p("month"), p("model"),
                   p("prompt") * prices.c.input_price + p("max_completion") * prices.c.output_price,
                   prices.c.input_price, prices.c.output_price, prices.c.cached_price,
                   p("prompt"), p("created_at"), p("expires_at"), literal("pending"),
                   p("user"), p("tags"), p("max_completion"), p("counters"))
            .where(*price_in_force).order_by(prices.c.effective_from.desc()).limit(1))
        self.insert_hold_priced = Prepared(
            insert(holds).from_select([c.name for c in HOLD_COLUMNS], priced)
            .on_conflict_do_nothing(index_elements=[holds.c.id])
            .returning(holds.c.amount, holds.c.input_price, holds.c.output_price,
                       holds.c.cached_price), engine)
        self.get_hold = Prepared(select(*HOLD_COLUMNS).where(holds.c.id == p("id")), engine)
        self.post_hold = Prepared(
            update(holds).where(holds.c.id == p("id"), holds.c.state == "pending")
            .values(state=p("state")).returning(*HOLD_COLUMNS), engine)
        self.insert_event = Prepared(
            insert(events).values({name: p(name) for name in EVENT_VALUES})
            .on_conflict_do_nothing(index_elements=[events.c.project, events.c.call_id])
            .returning(events.c.id), engine)
        self.insert_event_plain = Prepared(
            insert(events).values({name: p(name) for name in EVENT_VALUES})
            .returning(events.c.id), engine)
        self.event_cost = Prepared(
            select(events.c.cost).where(events.c.project == p("project"),
                                        events.c.call_id == p("call_id")), engine)
        self.event_numbers = Prepared(
            select(events.c.cost, events.c.project, events.c.model, events.c.prompt_tokens,
                   events.c.completion_tokens, events.c.cached_tokens, events.c.user,
                   events.c.tags)
            .where(events.c.project == p("project"), events.c.call_id == p("call_id")), engine)
        upsert = insert(totals).values(project=p("project"), scope="", period="month",
                                       window=p("month"), settled=p("settled"), held=p("held"))
        # Guarded so that the running total never passes a signed 64-bit integer (SQLite
        # would silently turn the sum into a float, PostgreSQL raise "bigint out of range"):
        # past it, nothing is written and the row count is 0 (``Store`` refuses the usage).
        # ``settled`` is never negative, so the subtraction cannot overflow.
        self.add_totals = Prepared(upsert.on_conflict_do_update(
            index_elements=[totals.c.project, totals.c.scope, totals.c.period, totals.c.window],
            set_={"settled": totals.c.settled + upsert.excluded.settled,
                  "held": totals.c.held + upsert.excluded.held},
            where=totals.c.settled <= bindparam("max_units", MAX_UNITS) - upsert.excluded.settled,
        ).returning(totals.c.settled, totals.c.held), engine)


class Tx:
    """A write transaction on one pooled DBAPI connection; looks like a cursor (``execute``,
    ``fetchone``, ``rowcount``), and ``batch`` runs statements that do not depend on each
    other's results, each on its own cursor. (A psycopg pipeline for ``batch`` was measured
    and brought nothing on loopback: the time is the server's, not round trips.)"""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.cur = conn.cursor()
        self.discarded = False

    def discard(self) -> None:
        """Roll this transaction back when its block ends, instead of committing it (a hold
        that does not fit, a call resolved before: the block returns what happened)."""
        self.discarded = True

    def execute(self, sql: str, args: Any = None) -> Any:
        return self.cur.execute(sql, args) if args is not None else self.cur.execute(sql)

    def fetchone(self) -> Any:
        return self.cur.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self.cur.fetchall())

    @property
    def rowcount(self) -> int:
        return int(self.cur.rowcount)

    def batch(self, *calls: tuple[Prepared, Mapping[str, Any]]) -> list[Any]:
        cursors = []
        for stmt, values in calls:
            cur = self.conn.cursor()
            cur.execute(stmt.sql, stmt.args(values))
            cursors.append(cur)
        return cursors

    def close(self) -> None:
        self.cur.close()


@contextmanager
def raw_transaction(engine: Engine, *, transient: bool = False) -> Iterator[Tx]:
    """A write transaction on a pooled DBAPI connection.

    SQLite: ``BEGIN IMMEDIATE`` takes the write lock up front (no lock-upgrade deadlocks).
    PostgreSQL: psycopg opens the transaction implicitly at the first statement.
    ``transient`` (holds): on PostgreSQL the commit does not wait for its WAL flush
    (``synchronous_commit = off`` for this transaction only). It is visible to every other
    transaction at once, as usual; only a server crash in the next few hundred milliseconds
    could forget it, and a forgotten hold costs nothing: its call still settles (at the
    price and project it carries) and the budget is re-checked by the next hold.
    Settles and records always wait for durability.
    """
    conn = engine.raw_connection()
    tx = Tx(conn)
    try:
        if engine.dialect.name == "sqlite":
            tx.execute("BEGIN IMMEDIATE")
        elif transient:
            tx.execute("SET LOCAL synchronous_commit = off")
        yield tx
        if tx.discarded:
            conn.rollback()
        else:
            conn.commit()
    except BaseException:
        try:
            conn.rollback()
        except Exception:
            conn.invalidate()
        raise
    finally:
        try:
            tx.close()
        finally:
            conn.close()
