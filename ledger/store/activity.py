"""What the proxy's dashboard shows of recent activity: the last calls (never their text: the
ledger stores none) and how many calls started in a recent span."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from .ops import Store, _translate
from .schema import events, from_micros, to_micros

__all__ = ["RecentCall", "calls_since", "recent_calls"]


@dataclass(frozen=True)
class RecentCall:
    at: datetime
    project: str
    model: str
    status: str
    prompt_tokens: int
    completion_tokens: int
    cost_units: int


@_translate
def recent_calls(store: Store, limit: int = 20) -> list[RecentCall]:
    """The last ``limit`` calls recorded, newest first."""
    with store.read() as conn:
        rows = conn.execute(
            select(events.c.at, events.c.project, events.c.model, events.c.status,
                   events.c.prompt_tokens, events.c.completion_tokens, events.c.cost)
            .order_by(events.c.id.desc()).limit(limit)).all()
    return [RecentCall(from_micros(r[0]), r[1], r[2], r[3], int(r[4]), int(r[5]), int(r[6]))
            for r in rows]


#: ``calls_since`` looks at the newest events only (by primary key: no scan of history).
RECENT_WINDOW = 10_000


@_translate
def calls_since(store: Store, since: datetime) -> int:
    """How many of the last :data:`RECENT_WINDOW` calls started at or after ``since``."""
    newest = (select(events.c.at).order_by(events.c.id.desc()).limit(RECENT_WINDOW)
              .subquery())
    with store.read() as conn:
        return int(conn.execute(select(func.count()).select_from(newest)
                                .where(newest.c.at >= to_micros(since))).scalar_one())
