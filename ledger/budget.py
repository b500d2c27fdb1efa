"""The pure budget rules: what a project-month has, whether a reservation fits, which budgets
apply to a call (its project's, its end user's, its tags', per period) and where each counts.

A hard budget holds the invariant ``settled + held <= limit`` at every instant: a reservation
(hold) is admitted only when ``settled + held + amount <= limit``. A soft budget admits every
call and only flags the month in reports. A project with no budget is metered, never refused.
A call that already ran is always settled at its actual cost, even above its hold: the overage
is recorded, never dropped — so ``settled`` alone may exceed the limit by actual-cost overruns.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from .clock import window_end, window_of
from .money import from_units, money_context, to_units
from .records import Attribution, Budget, BudgetWindow, RunningTotals

WARNING_RATIO = Decimal("0.8")


@dataclass(frozen=True)
class BudgetState(RunningTotals):
    """A project's month: its limit (None: no budget), what is settled and what is held."""

    project: str
    month: str
    limit_units: int | None
    hard: bool
    settled_units: int
    held_units: int

    @property
    def limit(self) -> Decimal | None:
        return None if self.limit_units is None else from_units(self.limit_units)

    @property
    def remaining(self) -> Decimal | None:
        if self.limit_units is None:
            return None
        return from_units(self.limit_units - self.settled_units - self.held_units)

    def fits(self, amount_units: int) -> bool:
        """Would a reservation of ``amount_units`` be admitted?"""
        return fits(self.limit_units, self.hard, self.settled_units, self.held_units, amount_units)

    @property
    def status(self) -> str:
        """``ok``, ``warning`` (80% or more used) or ``over`` (spent + held above the limit)."""
        if self.limit_units is None:
            return "ok"
        used = self.settled_units + self.held_units
        if used > self.limit_units:
            return "over"
        with money_context():
            if self.limit_units and Decimal(used) >= WARNING_RATIO * self.limit_units:
                return "warning"
        return "ok"


def fits(limit_units: int | None, hard: bool, settled: int, held: int, amount: int) -> bool:
    """The admission rule: only a hard limit refuses, and only what would cross it."""
    if limit_units is None or not hard:
        return True
    return settled + held + amount <= limit_units


# -- budgets on any scope and period ---------------------------------------------------------
#: A running total's key below its project: (scope, period, window). ``scope`` is ``""`` (the
#: project), ``"user:NAME"`` or ``"tag:k=v"``.
CounterKey = tuple[str, str, str]
#: The project's month: kept for every project with activity (reports, ``state``).
PROJECT_SCOPE = ""


def scope_of(user: str | None, tag: str | None, call_user: str | None = None) -> str:
    """The running total a budget counts in: its project's, an end user's (``"*"``: the
    call's user) or a tag's."""
    if tag is not None:
        return f"tag:{tag}"
    if user is not None:
        return f"user:{call_user if user == '*' else user}"
    return PROJECT_SCOPE


@dataclass(frozen=True)
class Match:
    """A budget that applies to a call, and the running total (window) it counts in."""

    budget: Budget
    key: CounterKey
    #: The end user whose window it is (the call's user for ``"*"`` and named budgets).
    user: str | None
    #: The budget's limit in units.
    limit_units: int

    def window(self, settled: int, held: int) -> BudgetWindow:
        return BudgetWindow(self.budget, self.user, self.key[2], settled, held)


@functools.lru_cache(maxsize=1024)
def limit_units(limit: Decimal) -> int:
    """A budget's limit in units (a handful of distinct limits: converted once each)."""
    return to_units(limit, "limit")


def version_in_force(versions: Iterable[tuple[Budget, bool]], at: datetime,
                     now: datetime) -> dict[tuple[str, str | None, str | None, str], Budget]:
    """Each budget key's version in force for the window holding ``at`` as of ``now``: the
    newest with ``effective_from`` at or before ``min(now, end of that window)`` (a past
    window keeps the limit it had; a budget set during a window applies to all of it).
    ``versions`` are (budget, removed) pairs; a removal in force means no budget."""
    newest: dict[tuple[str, str | None, str | None, str], tuple[Budget, bool]] = {}
    ends: dict[str, datetime | None] = {}
    for budget, removed in versions:
        period = budget.period
        if period not in ends:
            ends[period] = window_end(period, at)
        end = ends[period]
        cutoff = now if end is None or now < end else end - timedelta(microseconds=1)
        if budget.effective_from > cutoff:
            continue
        found = newest.get(budget.key)
        if found is None or budget.effective_from > found[0].effective_from:
            newest[budget.key] = (budget, removed)
    return {k: b for k, (b, removed) in newest.items() if not removed}


def matching(in_force: Iterable[Budget], attribution: Attribution, at: datetime) -> list[Match]:
    """The budgets that apply to a call with ``attribution`` started at ``at``: the project's,
    the call's user's own or else the ``"*"`` one (per period), each of its tags'. Sorted by
    running-total key (the fixed order rows are locked in)."""
    user, tags = attribution.user, set(attribution.tag_texts)
    windows: dict[str, str] = {}
    own = {b.period for b in in_force if user is not None and b.user == user}
    out: dict[tuple[CounterKey, str | None, str | None], Match] = {}
    for b in in_force:
        if b.tag is not None:
            if b.tag not in tags:
                continue
        elif b.user is not None:
            if user is None or (b.user != "*" and b.user != user):
                continue
            if b.user == "*" and b.period in own:
                continue  # the user's own budget replaces "*" for this period
        window = windows.get(b.period)
        if window is None:
            window = windows[b.period] = window_of(b.period, at)
        key = (scope_of(b.user, b.tag, user), b.period, window)
        out[(key, b.user, b.tag)] = Match(b, key, user if b.user is not None else None,
                                          limit_units(b.limit))
    return sorted(out.values(), key=lambda m: m.key)


class Matcher:
    """:func:`matching` remembered per process: the same budgets in force, attribution and UTC
    day (every window of every period is a function of the day) give the same matches, so the
    hot path computes them once instead of twice per call (hold, then settle). Bounded: full,
    it starts again. Thread-safe (one dict get or set at a time, under the GIL)."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._found: dict[tuple[tuple[Budget, ...], Attribution, date], tuple[Match, ...]] = {}

    def __call__(self, in_force: Iterable[Budget], attribution: Attribution,
                 at: datetime) -> list[Match]:
        budgets = tuple(in_force)
        key = (budgets, attribution, at.astimezone(UTC).date())
        found = self._found.get(key)
        if found is None:
            if len(self._found) >= self._size:
                self._found.clear()
            found = self._found[key] = tuple(matching(budgets, attribution, at))
        return list(found)


def shrink_cap(matches: Iterable[Match], totals: Mapping[CounterKey, tuple[int, int]],
               prompt_units: int, output_price_units: int, asked: int) -> int:
    """The largest completion cap (at most ``asked``) whose worst case fits every hard budget:
    ``prompt_units + cap × output price <= remaining`` for each (-1: not even the prompt)."""
    cap = asked
    for m in matches:
        if not m.budget.hard:
            continue
        settled, held = totals.get(m.key, (0, 0))
        room = m.limit_units - settled - held - prompt_units
        if room < 0:
            return -1
        if output_price_units > 0:
            cap = min(cap, room // output_price_units)
    return cap


def crossed(match: Match, before: int, after: int) -> list[int]:
    """The thresholds of ``match``'s budget that a window's settled usage, going from
    ``before`` to ``after``, has reached (``t% of limit <= after``), whether this usage crossed
    them or the window was already past them: a limit lowered under what a window had spent
    still alerts on its next usage. The alerts' unique key keeps each to one, ever, so a
    threshold reached before is a no-op insert, not a second alert. ``before`` is kept for
    callers that log the step."""
    del before
    limit = match.limit_units
    return [t for t in match.budget.alerts if t * limit <= after * 100]
