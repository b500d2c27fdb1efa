"""The records a call carries from step to step: its ``Attribution`` (who it is for), its
``Estimate`` (before), its ``Hold`` (reserved) and its ``Outcome`` (how it ended, what ``post``
or ``void`` writes down); and the budget records: ``Budget`` (one dated definition),
``BudgetWindow`` (a budget's totals in one window) and ``Alert`` (a threshold crossed).

Plain frozen dataclasses, shared by the pure steps and the store; no I/O.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from .errors import InvalidInput
from .money import from_units, money_context
from .names import MAX_NAME, check_name
from .pricing import Price

__all__ = [
    "CHARGED",
    "DEFAULT_ALERTS",
    "PERIODS",
    "STATUSES",
    "Alert",
    "Attribution",
    "Budget",
    "BudgetWindow",
    "Estimate",
    "Hold",
    "Outcome",
]

#: A budget's period: UTC calendar windows (``week``: ISO, from Monday), or ``total`` (never
#: resets: prepaid credit).
PERIODS = ("day", "week", "month", "total")
#: Alert thresholds of a budget, in percent of its limit, unless it says otherwise.
DEFAULT_ALERTS = (80, 100)
MAX_TAG = MAX_NAME
WARNING_PERCENT = 80


def _check_tag_part(value: object, what: str) -> str:
    value = check_name(value, f"tag {what}")  # a str, not blank, at most MAX_TAG characters
    if "," in value:
        raise InvalidInput(f"tag {what} must not contain ',': {value!r}")
    if what == "key" and "=" in value:
        raise InvalidInput(f"tag key must not contain '=': {value!r}")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in value):
        raise InvalidInput(f"tag {what} must not contain control characters: {value!r}")
    return value


def parse_tag(text: object, field: str = "tag") -> tuple[str, str]:
    """One tag ``"k=v"`` as ``(k, v)``, validated (the key may not hold ``=``; the value may)."""
    if not isinstance(text, str):
        raise TypeError(f"{field} must be a str 'key=value', not {type(text).__name__}")
    key, sep, value = text.partition("=")
    if not sep:
        raise InvalidInput(f"{field} must look like key=value, got {text!r}")
    return _check_tag_part(key.strip(), "key"), _check_tag_part(value.strip(), "value")


def check_user(user: object, field: str = "user") -> str | None:
    """An end user's name (like a project name), or None; ``"*"`` is reserved for budgets."""
    if user is None:
        return None
    name = check_name(user, field)
    if name == "*":
        raise InvalidInput(f"{field} '*' is not an end user's name (it means each user, in a "
                           "budget)")
    return name


@dataclass(frozen=True)
class Attribution:
    """Who a call is for, besides its project: an optional end user and optional tags.

    ``tags`` is sorted by key, keys unique. Build one with :meth:`of` (which validates).
    """

    user: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def tags_text(self) -> str | None:
        """``"env=prod,feature=search"`` (sorted by key) or None without tags."""
        return ",".join(f"{k}={v}" for k, v in self.tags) if self.tags else None

    @property
    def tags_column(self) -> str | None:
        """The stored form: ``",env=prod,feature=search,"`` (so ``LIKE '%,k=v,%'`` matches
        exactly one tag), or None."""
        return f",{self.tags_text}," if self.tags else None

    @property
    def tag_texts(self) -> tuple[str, ...]:
        """Each tag as ``"k=v"``."""
        return tuple(f"{k}={v}" for k, v in self.tags)

    @classmethod
    def of(cls, user: str | None = None,
           tags: Mapping[str, str] | str | None = None) -> Attribution:
        """Validate and build: ``user`` like a project name; ``tags`` from a dict or
        ``"k=v,k2=v2"`` (keys and values non-empty, no ``,``, no ``=`` in a key, no control
        characters, at most 200 characters each). ``InvalidInput`` names what is wrong."""
        name = check_user(user)
        pairs: dict[str, str] = {}
        if tags is None or tags == "":
            pass
        elif isinstance(tags, str):
            for part in tags.split(","):
                if not part.strip():
                    raise InvalidInput(f"tags must be 'k=v,k2=v2' with no empty part, got {tags!r}")
                key, value = parse_tag(part, "tags")
                if key in pairs:
                    raise InvalidInput(f"tag key {key!r} is given twice in tags")
                pairs[key] = value
        elif isinstance(tags, Mapping):
            for key, value in tags.items():
                k = _check_tag_part(_check_tag_part(key, "key").strip(), "key")
                v = _check_tag_part(_check_tag_part(value, "value").strip(), "value")
                if k in pairs:
                    raise InvalidInput(f"tag key {k!r} is given twice in tags")
                pairs[k] = v
        else:
            raise TypeError(f"tags must be a dict or a 'k=v,k2=v2' string, not "
                            f"{type(tags).__name__}")
        return cls(name, tuple(sorted(pairs.items())))

    @classmethod
    def from_columns(cls, user: str | None, tags: str | None) -> Attribution:
        """Back from the stored ``user`` and ``tags`` columns (no validation: stored valid)."""
        pairs: list[tuple[str, str]] = []
        for part in (tags or "").strip(",").split(","):
            if part:
                key, _, value = part.partition("=")
                pairs.append((key, value))
        return cls(user or None, tuple(pairs))

STATUSES = ("ok", "failed", "refused", "cancelled", "expired")
#: Statuses that carry a charge (a cancelled call is charged for what it streamed): an
#: outcome with one of them posts its hold; any other voids it.
CHARGED = ("ok", "cancelled")


@dataclass(frozen=True)
class Estimate:
    """A pre-flight estimate: tokens in, the completion cap, and the worst-case cost."""

    model: str
    prompt_tokens: int
    max_completion_tokens: int
    cost: Decimal
    capped_by_default: bool
    price: Price


@dataclass(frozen=True)
class Hold:
    """A pending reservation: the call's id, where it counts, and the price it will post at."""

    call_id: str
    project: str
    month: str
    model: str
    amount_units: int
    price: Price
    est_prompt_tokens: int
    created_at: datetime
    expires_at: datetime
    state: str = "pending"
    attribution: Attribution = field(default_factory=Attribution)
    #: The completion cap actually held: lower than asked when the hold was shrunk to fit.
    max_completion_tokens: int | None = None
    #: The matching hard budget with the least remaining after this hold (None: no hard one).
    tightest: BudgetWindow | None = None


@dataclass(frozen=True)
class Outcome:
    """How a call ended: a charged status posts the hold at this usage, any other voids it."""

    status: str = "ok"                # ok | failed | cancelled | refused | expired
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    estimated: bool = False
    http_status: int | None = None
    error: str | None = None
    #: Reasoning tokens the server reported (part of completion_tokens), or None.
    reasoning_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise InvalidInput(f"status must be one of {STATUSES}, got {self.status!r}")
        for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens"):
            value = getattr(self, name)
            if value is None and name == "reasoning_tokens":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
            if value < 0:
                raise InvalidInput(f"{name} must not be negative, got {value}")

    @property
    def charged(self) -> bool:
        """Whether this outcome posts the hold (at its usage) rather than voiding it."""
        return self.status in CHARGED


@dataclass(frozen=True)
class Budget:
    """One budget as defined (dated like prices): its scope, period, limit and alerts.

    ``user``: None (the whole project), an end user's name, or ``"*"`` (each end user gets
    their own window); ``tag``: None or ``"k=v"`` (calls carrying that tag).
    """

    project: str
    user: str | None
    tag: str | None
    period: str
    limit: Decimal
    hard: bool
    alerts: tuple[int, ...]
    effective_from: datetime

    @property
    def label(self) -> str:
        """``"acme month"``, ``"acme user=* day"``, ``"acme tag=feature=search week"``."""
        scope = (f" user={self.user}" if self.user is not None else "") + (
            f" tag={self.tag}" if self.tag is not None else "")
        return f"{self.project}{scope} {self.period}"

    @property
    def key(self) -> tuple[str, str | None, str | None, str]:
        """What identifies a budget across its dated versions."""
        return (self.project, self.user, self.tag, self.period)


class RunningTotals:
    """What is settled and what is held, as money (a mixin of the records that carry
    ``settled_units`` and ``held_units``)."""

    settled_units: int
    held_units: int

    @property
    def spent(self) -> Decimal:
        return from_units(self.settled_units)

    @property
    def held(self) -> Decimal:
        return from_units(self.held_units)


@dataclass(frozen=True)
class BudgetWindow(RunningTotals):
    """One budget's window (``window``: its start, ``"total"`` for a total budget) and its
    running totals. ``user`` is the end user whose window it is (for ``"*"``)."""

    budget: Budget
    user: str | None
    window: str
    settled_units: int
    held_units: int

    @property
    def limit(self) -> Decimal:
        return self.budget.limit

    @property
    def remaining(self) -> Decimal:
        with money_context():
            return self.budget.limit - self.spent - self.held

    @property
    def percent_used(self) -> Decimal:
        """``(spent + held) / limit × 100``, to two decimals."""
        with money_context():
            used = self.spent + self.held
            return (used * 100 / self.budget.limit).quantize(Decimal("0.01"))

    @property
    def status(self) -> str:
        """``over`` (spent + held above the limit), ``warning`` (80% or more) or ``ok``."""
        with money_context():
            used = self.spent + self.held
            if used > self.budget.limit:
                return "over"
            if used * 100 >= WARNING_PERCENT * self.budget.limit:
                return "warning"
        return "ok"

    @property
    def label(self) -> str:
        """The budget's label, with the end user for a ``"*"`` budget, and the window."""
        who = f" ({self.user})" if self.budget.user == "*" and self.user else ""
        return f"{self.budget.label}{who} {self.window}"


@dataclass(frozen=True)
class Alert:
    """A budget's window crossed one of its thresholds (at most once each, ever)."""

    id: int
    project: str
    user: str | None
    tag: str | None
    period: str
    window: str
    threshold: int
    spent: Decimal
    limit: Decimal
    at: datetime
