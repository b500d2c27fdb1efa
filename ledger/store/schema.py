"""The ledger's tables (SQLAlchemy Core). Money and prices are integers (see ``ledger.money``);
instants are integer microseconds since the Unix epoch, UTC, so that every backend compares,
indexes and sums them exactly.

* ``prices``  — dated price catalog; the price of a call is the newest row in force at its start.
* ``budgets`` — dated budget versions, like prices: a limit on a scope (the project, an end
  user ``user``, every end user ``user = '*'``, or a tag ``tag = 'k=v'``; ``''`` for none) per
  ``period`` (day, week, month, total). The version in force for a (project, user, tag,
  period) at an instant is the newest with ``effective_from`` at or before it; a ``removed``
  version ends the budget from then on.
* ``totals``  — running totals per (project, scope, period, window): ``settled`` and ``held``.
  ``scope`` is ``''`` (the project), ``'user:NAME'`` or ``'tag:k=v'``; ``window`` names the
  window's start (``2026-12-03``, the ISO Monday ``2026-11-30``, ``2026-12``, ``total``), so a
  new window starts from zero by itself. The project's month (scope ``''``, ``month``) is kept
  for every project with activity (reports read it); the others exist for budgets. Derived
  from ``events`` and ``holds`` and updated in the same transaction, so checks never scan
  history.
* ``holds``   — TigerBeetle-style pending reservations: pending → posted | voided | expired.
  ``counters`` lists (JSON) the ``totals`` keys the hold reserved against, so that posting,
  voiding or expiring it releases exactly those.
* ``events``  — append-only record of every call (ok, failed, refused, cancelled); the source
  of truth for invoices and audits. ``call_id`` (unique per project) makes every settle, void
  and replay idempotent. ``user`` and ``tags`` attribute it (``tags``: ``",k=v,k2=v2,"``, so
  ``LIKE '%,k=v,%'`` matches one tag exactly).
* ``alerts`` — a budget's window crossing one of its thresholds: at most one row per (budget,
  window, end user, threshold), written in the transaction whose usage crossed it.
* ``invoices`` — issued (frozen) invoices, numbered in sequence; ``state`` is ``issued`` or
  ``void``. At most one *issued* invoice per (project, month) (a partial unique index): a
  voided month can be issued again.
* ``credit_notes`` — one per voided invoice, numbered in their own sequence.
* ``issuer``  — the seller printed on every invoice (one row, ``id = 1``).
* ``customers`` — the bill-to party of a project and its tax rate (millionths).
* ``alert_deliveries`` — which alert reached which webhook target (``ledger alerts deliver``):
  one row per (target, alert id), claimed by one worker at a time (``claimed_by`` until
  ``claimed_until``), ``delivered_at`` set on the first 2xx and never cleared.
* ``proxy_keys`` — the metering proxy's client keys (``ledger serve``): the key's id, who it bills
  (project, user, tags), whether it may see the dashboard, and a SHA-256 of its secret, never
  the secret itself.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    literal_column,
    text,
)
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# An autoincrementing 64-bit key: BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_MICROS = 86_400_000_000


def to_micros(when: datetime) -> int:
    """An aware datetime as integer microseconds since the epoch."""
    delta = when - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    from datetime import timedelta

    return EPOCH + timedelta(microseconds=int(micros))


class Instant(TypeDecorator[datetime]):
    """An aware UTC datetime stored as BIGINT microseconds since the epoch."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        if value is None or isinstance(value, int):
            return value
        return to_micros(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else from_micros(value)


prices = Table(
    "prices",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("model", String(200), nullable=False),
    Column("effective_from", BigInteger, nullable=False),
    Column("input_price", BigInteger, nullable=False),
    Column("output_price", BigInteger, nullable=False),
    Column("cached_price", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("model", "effective_from"),
)

#: A budget's scope columns hold ``''`` for "none" (a unique key treats NULLs as distinct).
SCOPE_TEXT = 420

budgets = Table(
    "budgets",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("project", String(200), nullable=False),
    Column("user", String(200), nullable=False, server_default=""),
    Column("tag", String(SCOPE_TEXT), nullable=False, server_default=""),
    Column("period", String(5), nullable=False),
    Column("limit_units", BigInteger, nullable=False),
    Column("hard", Boolean, nullable=False),
    Column("alerts", String(200), nullable=False),
    Column("effective_from", BigInteger, nullable=False),
    Column("removed", Boolean, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("project", "user", "tag", "period", "effective_from"),
)

totals = Table(
    "totals",
    metadata,
    Column("project", String(200), primary_key=True),
    Column("scope", String(SCOPE_TEXT), primary_key=True),
    Column("period", String(5), primary_key=True),
    Column("window", String(10), primary_key=True),
    Column("settled", BigInteger, nullable=False, server_default="0"),
    Column("held", BigInteger, nullable=False, server_default="0"),
    Index(None, "period", "window"),  # reports of a month, every project
)

holds = Table(
    "holds",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("project", String(200), nullable=False),
    Column("month", String(7), nullable=False),
    Column("model", String(200), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("input_price", BigInteger, nullable=False),
    Column("output_price", BigInteger, nullable=False),
    Column("cached_price", BigInteger, nullable=True),
    Column("est_prompt_tokens", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("state", String(10), nullable=False),
    Column("user", String(200), nullable=True),
    Column("tags", Text, nullable=True),
    # The completion cap held (lower than asked when shrunk to fit); NULL before 0004.
    Column("max_completion", BigInteger, nullable=True),
    # JSON [[scope, period, window], ...]: the totals rows this hold reserved against.
    Column("counters", Text, nullable=True),
    Index(None, "project", "month", "state", "expires_at"),
    Index(None, "state", "expires_at"),
)

events = Table(
    "events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("call_id", String(64), nullable=True),
    Column("project", String(200), nullable=False),
    Column("month", String(7), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("model", String(200), nullable=False),
    Column("status", String(10), nullable=False),
    Column("estimated", Boolean, nullable=False),
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    Column("cached_tokens", BigInteger, nullable=False),
    Column("est_prompt_tokens", BigInteger, nullable=True),
    Column("input_price", BigInteger, nullable=False),
    Column("output_price", BigInteger, nullable=False),
    Column("cached_price", BigInteger, nullable=True),
    Column("cost", BigInteger, nullable=False),
    Column("http_status", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("invoice_id", BigInteger, nullable=True),
    Column("recorded_at", BigInteger, nullable=False),
    # Reasoning tokens the server reported (inside completion_tokens); NULL when not reported.
    Column("reasoning_tokens", BigInteger, nullable=True),
    Column("user", String(200), nullable=True),
    Column("tags", Text, nullable=True),
    UniqueConstraint("project", "call_id"),  # ids are scoped to their project
    Index(None, "month", "project", "id"),  # reports by month; late events past a watermark
    Index(None, "project", "at"),  # a project's window (day, week) from its events
    Index(None, "project", "user", "at"),  # an end user's window
)

#: The UTC day of an event (``at`` // one day in microseconds), written as a literal so that
#: the database can match it to the index below (a bound parameter would not match).
EVENT_DAY = events.c.at // literal_column(str(DAY_MICROS), BigInteger)

#: An invoice's lines (issue 14): the month's events of a project in the order of the
#: invoice's ``GROUP BY`` (model, unit price, UTC day, end user, tags), covering every column
#: the aggregate reads, so SQLite reads the lines from the index alone, in order, with no
#: sort of a million rows and no lookup into the table. It replaced ``(project, month,
#: model)``, whose prefix it keeps (by-model reports and usage filters still use it): the
#: table has as many indexes as before.
Index("ix_events_invoice_lines", events.c.project, events.c.month, events.c.model,
      events.c.input_price, events.c.output_price, events.c.cached_price, EVENT_DAY,
      events.c.user, events.c.tags, events.c.status, events.c.invoice_id, events.c.estimated,
      events.c.prompt_tokens, events.c.completion_tokens, events.c.cached_tokens,
      events.c.cost, events.c.at)

alerts = Table(
    "alerts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("project", String(200), nullable=False),
    Column("budget_user", String(200), nullable=False, server_default=""),
    Column("budget_tag", String(SCOPE_TEXT), nullable=False, server_default=""),
    Column("period", String(5), nullable=False),
    Column("window", String(10), nullable=False),
    Column("user", String(200), nullable=False, server_default=""),
    Column("threshold", Integer, nullable=False),
    Column("spent_units", BigInteger, nullable=False),
    Column("limit_units", BigInteger, nullable=False),
    Column("at", BigInteger, nullable=False),
    UniqueConstraint("project", "budget_user", "budget_tag", "period", "window", "user",
                     "threshold"),
)

invoices = Table(
    "invoices",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("number", BigInteger, nullable=False, unique=True),
    Column("project", String(200), nullable=False),
    Column("month", String(7), nullable=False),
    Column("issued_at", BigInteger, nullable=False),
    Column("total_units", BigInteger, nullable=False),
    Column("document", Text, nullable=False),
    Column("state", String(10), nullable=False, server_default="issued"),
    Column("voided_at", BigInteger, nullable=True),
    Index("ix_invoices_project_month_issued", "project", "month", unique=True,
          sqlite_where=text("state = 'issued'"), postgresql_where=text("state = 'issued'")),
)

credit_notes = Table(
    "credit_notes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("number", BigInteger, nullable=False, unique=True),
    Column("invoice_number", BigInteger, nullable=False, unique=True),
    Column("project", String(200), nullable=False),
    Column("month", String(7), nullable=False),
    Column("issued_at", BigInteger, nullable=False),
    Column("total_units", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("document", Text, nullable=False),
)

issuer = Table(
    "issuer",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(200), nullable=False),
    Column("address", Text, nullable=False),
    Column("tax_id", String(100), nullable=False),
    Column("payment_terms_days", Integer, nullable=False),
    Column("payment_details", Text, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

customers = Table(
    "customers",
    metadata,
    Column("project", String(200), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("address", Text, nullable=False),
    Column("email", String(320), nullable=False),
    Column("tax_id", String(100), nullable=False),
    Column("tax_rate", BigInteger, nullable=False),  # millionths: 200000 is 20%
    Column("tax_name", String(50), nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

alert_deliveries = Table(
    "alert_deliveries",
    metadata,
    # The webhook URL without credentials (user:password@, secret-looking query values).
    Column("target", String(1000), primary_key=True),
    Column("alert_id", BigInteger, primary_key=True, autoincrement=False),
    Column("delivered_at", BigInteger, nullable=True),   # the first 2xx; NULL: not yet
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text, nullable=True),           # redacted; never the secret
    Column("last_attempt_at", BigInteger, nullable=True),
    Column("claimed_by", String(200), nullable=True),    # the worker delivering it now
    Column("claimed_until", BigInteger, nullable=True),  # its claim lapses then
)

proxy_keys = Table(
    "proxy_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=True),
    Column("project", String(200), nullable=False),
    Column("user", String(200), nullable=True),
    Column("tags", Text, nullable=True),  # "k=v,k2=v2", sorted by key; NULL when none
    Column("admin", Boolean, nullable=False),
    Column("secret_sha256", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("last_used_at", BigInteger, nullable=True),
    Column("revoked_at", BigInteger, nullable=True),
)
