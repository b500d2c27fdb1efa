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
    month = month_of(now)  # the window of the invoices and reports shown
    budgets = [{
        "project": w.budget.project, "period": w.budget.period, "window": w.window,
        "user": w.user if w.budget.user == "*" and w.user else w.budget.user,
        "tag": w.budget.tag, "hard": w.budget.hard, "limit": money_str(w.limit),
        "spent": money_str(w.spent), "held": money_str(w.held),
        "remaining": money_str(w.remaining), "percent_used": str(w.percent_used),
        "status": w.status,
    } for w in book.store.windows(now)]
    alerts = [{
        "id": a.id, "project": a.project, "user": a.user, "tag": a.tag, "period": a.period,
        "window": a.window, "threshold": a.threshold, "spent": money_str(a.spent),
        "limit": money_str(a.limit), "at": a.at.isoformat(),
    } for a in book.store.alerts()[-20:]][::-1]
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
