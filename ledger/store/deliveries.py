"""What the webhook worker remembers: table ``alert_deliveries``, one row per (target, alert).

Every operation is one short transaction, atomic on both backends without explicit locks:

* :func:`claim` inserts the row if it is new (``ON CONFLICT DO NOTHING``) and then takes it
  with one conditional ``UPDATE``: not yet delivered, and unclaimed, or claimed by this worker,
  or claimed by a worker whose claim has lapsed. SQLite runs it under its write lock;
  PostgreSQL re-evaluates the condition on the locked row (READ COMMITTED), so of two workers
  racing for one row exactly one gets ``rowcount == 1``.
* :func:`delivered` sets ``delivered_at`` once (the first 2xx) and releases the claim; a
  delivered row is never claimed again, so an alert is never sent twice to a target after
  its 2xx was recorded.
* :func:`failed` counts the attempt, keeps the (redacted) error, and extends the claim over
  the back-off, so another worker does not take over an alert that is being retried.

A worker killed mid-delivery leaves its claim behind; it lapses at ``claimed_until`` and the
next worker (or the same one restarted) takes the alert over: at-least-once until a 2xx.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, case, func, or_, select, update

from .ops import Store
from .schema import alert_deliveries as deliveries
from .schema import alerts as alerts_table
from .schema import from_micros, to_micros
from .unavailable import translated

__all__ = ["Delivery", "claim", "delivered", "failed", "first_pending", "release", "rows"]


@dataclass(frozen=True)
class Delivery:
    """One alert's delivery to one target, as remembered."""

    target: str
    alert_id: int
    delivered_at: datetime | None
    attempts: int
    last_error: str | None
    claimed_by: str | None
    claimed_until: datetime | None


@translated
def claim(store: Store, target: str, alert_id: int, worker: str, now: datetime,
          until: datetime) -> bool:
    """Take ``alert_id`` for ``worker`` until ``until``; False if it is delivered already or
    another worker's claim is still running."""
    at = to_micros(now)
    with store.write() as conn:
        conn.execute(store._insert(deliveries).values(
            target=target, alert_id=alert_id, attempts=0).on_conflict_do_nothing(
            index_elements=[deliveries.c.target, deliveries.c.alert_id]))
        taken = conn.execute(
            update(deliveries)
            .where(deliveries.c.target == target, deliveries.c.alert_id == alert_id,
                   deliveries.c.delivered_at.is_(None),
                   or_(deliveries.c.claimed_by.is_(None), deliveries.c.claimed_by == worker,
                       deliveries.c.claimed_until.is_(None),
                       deliveries.c.claimed_until <= at))
            .values(claimed_by=worker, claimed_until=to_micros(until)))
        return bool(taken.rowcount == 1)


@translated
def delivered(store: Store, target: str, alert_id: int, now: datetime) -> bool:
    """Record the first 2xx (False if one was recorded already) and release the claim."""
    with store.write() as conn:
        done = conn.execute(
            update(deliveries)
            .where(deliveries.c.target == target, deliveries.c.alert_id == alert_id,
                   deliveries.c.delivered_at.is_(None))
            .values(delivered_at=to_micros(now), attempts=deliveries.c.attempts + 1,
                    last_attempt_at=to_micros(now), last_error=None, claimed_by=None,
                    claimed_until=None))
        return bool(done.rowcount == 1)


@translated
def failed(store: Store, target: str, alert_id: int, worker: str, error: str, now: datetime,
           until: datetime) -> None:
    """Count a failed attempt (``error`` is already redacted) and keep the claim until
    ``until`` (past the back-off before the next attempt)."""
    with store.write() as conn:
        conn.execute(
            update(deliveries)
            .where(deliveries.c.target == target, deliveries.c.alert_id == alert_id,
                   deliveries.c.delivered_at.is_(None))
            .values(attempts=deliveries.c.attempts + 1, last_error=error[:2000],
                    last_attempt_at=to_micros(now),
                    # extended only if still ours (another worker may have taken a lapsed one)
                    claimed_until=case((deliveries.c.claimed_by == worker, to_micros(until)),
                                       else_=deliveries.c.claimed_until)))


@translated
def release(store: Store, target: str, worker: str) -> int:
    """Give up every claim of ``worker`` on ``target`` that is not delivered (a worker
    stopping cleanly); returns how many."""
    with store.write() as conn:
        done = conn.execute(
            update(deliveries)
            .where(deliveries.c.target == target, deliveries.c.claimed_by == worker,
                   deliveries.c.delivered_at.is_(None))
            .values(claimed_by=None, claimed_until=None))
        return int(done.rowcount)


@translated
def first_pending(store: Store, target: str, after: int, project: str | None = None,
                  settled_before: datetime | None = None) -> tuple[int | None, int]:
    """The oldest alert above id ``after`` (of ``project``) not delivered to ``target`` (None:
    every one is), and the highest alert id above ``after`` written before
    ``settled_before`` (``after`` if none): the worker asks for the alerts from the first and
    need never look below the second again.

    Why the second is not simply the highest id: on PostgreSQL ids are handed out as rows are
    inserted but become visible as their transactions commit, in another order; a lower id
    may still be on its way when a higher one is seen. An alert is written in a settle's
    short transaction, so one older than ``settled_before`` (the worker gives a margin of
    :data:`ledger.delivery.IN_FLIGHT`) has committed or never will.

    One anti-join of ``alerts`` with this target's rows, from ``after`` up, on the primary
    keys of both tables."""
    a = alerts_table.c
    joined = alerts_table.outerjoin(
        deliveries, and_(deliveries.c.alert_id == a.id, deliveries.c.target == target))
    cond = [a.id > after] if project is None else [a.id > after, a.project == project]
    settled = cond if settled_before is None else [*cond, a.at < to_micros(settled_before)]
    with store.read() as conn:
        first = conn.execute(select(func.min(a.id)).select_from(joined)
                             .where(*cond, deliveries.c.delivered_at.is_(None))).scalar_one()
        top = conn.execute(select(func.max(a.id)).where(*settled)).scalar_one()
    return (None if first is None else int(first)), (after if top is None else int(top))


@translated
def rows(store: Store, target: str | None = None, alert_ids: list[int] | None = None
         ) -> list[Delivery]:
    """The remembered deliveries (of ``target``, of ``alert_ids``), by target and alert id."""
    cond = []
    if target is not None:
        cond.append(deliveries.c.target == target)
    if alert_ids is not None:
        cond.append(deliveries.c.alert_id.in_(alert_ids))
    with store.read() as conn:
        found = conn.execute(
            select(deliveries).where(*cond)
            .order_by(deliveries.c.target, deliveries.c.alert_id)).all()
    return [Delivery(r.target, int(r.alert_id),
                     None if r.delivered_at is None else from_micros(r.delivered_at),
                     int(r.attempts), r.last_error, r.claimed_by,
                     None if r.claimed_until is None else from_micros(r.claimed_until))
            for r in found]
