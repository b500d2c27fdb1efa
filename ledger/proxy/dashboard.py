"""``/dashboard``: what an admin key sees, as JSON for the page's script (``static/``).

The page is static HTML, CSS and JS served by the app (no CDN: it works offline). It fetches
:func:`state` every two seconds and writes every value with ``textContent``, never as HTML, so
a project named ``<img src=x onerror=alert(1)>`` is shown as those characters; the page's
Content-Security-Policy allows only its own script besides. Nothing here carries a prompt or
a reply (the ledger stores neither), nor any key.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ..clock import month_of
from ..money import money_str
from ..store.activity import calls_since, recent_calls

if TYPE_CHECKING:
    from ..core import Ledger

__all__ = ["RATE_WINDOW", "state"]

RATE_WINDOW = timedelta(minutes=1)



def state(book: Ledger) -> dict[str, Any]:
    """The dashboard's figures now (money as exact decimal strings)."""
    from ..invoice import issued_invoices
    from ..money import from_units

    now = book.now()
    month = month_of(now)
    budgets = []
    for s in book.store.states(month):
        if s.limit is None:
            continue
        used = s.settled_units + s.held_units
        budgets.append({
            "project": s.project, "period": "month", "window": month, "user": None,
            "tag": None, "hard": s.hard, "limit": money_str(s.limit),
            "spent": money_str(s.spent), "held": money_str(s.held),
            "remaining": money_str(s.remaining) if s.remaining is not None else None,
            "percent_used": (round(100 * used / s.limit_units, 1)
                             if s.limit_units else None),
            "status": s.status,
        })
    # TODO(issue 13, coordinator): after merging `budgets` (helper A), list every budget's
    # window (book.store.windows(now): user, tag, period) and book.alerts() here.
    alerts: list[dict[str, Any]] = []
    calls = [{"at": c.at.isoformat(), "project": c.project, "model": c.model,
              "status": c.status, "prompt_tokens": c.prompt_tokens,
              "completion_tokens": c.completion_tokens,
              "cost": money_str(from_units(c.cost_units))}
             for c in recent_calls(book.store, 20)]
    per_minute = calls_since(book.store, now - RATE_WINDOW)
    invoices = [{"number": i.label, "project": i.project, "month": i.month,
                 "total": money_str(i.total), "state": i.state}
                for i in issued_invoices(book.store)[-20:]]
    return {"now": now.isoformat(), "month": month, "budgets": budgets,
            "rate": {"calls_last_minute": per_minute}, "calls": calls, "alerts": alerts,
            "invoices": invoices}
