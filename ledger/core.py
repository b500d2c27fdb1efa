"""``Ledger``: the public face of the library. It validates input, asks the clock for the time,
and delegates every read and write to ``ledger.store`` (the only I/O) and every rule to the pure
modules (``pricing``, ``budget``, ``estimate``)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .budget import BudgetState
from .clock import Clock, SystemClock, month_bounds, month_of, parse_month, require_aware
from .errors import InvalidInput, LedgerUnavailable, UnknownModel
from .metering.attribution import client_attribution
from .metering.meter import Meter, check_fit, check_min_completion_tokens
from .money import (
    MAX_AMOUNT,
    check_tokens,
    from_units,
    price_to_units,
    to_decimal,
    to_units,
)
from .names import MAX_NAME, check_name, new_call_id
from .pricing import Price, worst_case_units
from .records import (
    DEFAULT_ALERTS,
    PERIODS,
    Alert,
    Budget,
    BudgetWindow,
    Estimate,
    Hold,
    Outcome,
    check_user,
    parse_tag,
)
from .store.engine import DEFAULT_URL, make_engine, normalise_url, upgrade
from .store.ops import Store
from .store.unavailable import is_unavailable, unavailable

if TYPE_CHECKING:
    import httpx
    import httpx2

    from .estimate import Estimator
    from .invoice import CreditNote, Invoice
    from .metering.by_hand import MeteredCall
    from .parties import Customer, Issuer
    from .reports import BudgetReport, UsageRow
    from .spool import ReplayResult

log = logging.getLogger("ledger")
DEFAULT_HOLD_TTL = timedelta(minutes=15)

# Re-exported here for the code that imported them from ``ledger.core`` before they had
# modules of their own (``ledger.names``, ``ledger.records``).
__all__ = ["DEFAULT_HOLD_TTL", "MAX_NAME", "Estimate", "Ledger", "check_name", "new_call_id"]


def check_cached(cached_tokens: int, prompt_tokens: int) -> None:
    """Cached tokens are some of the prompt tokens: never more than all of them."""
    if cached_tokens > prompt_tokens:
        raise InvalidInput(f"cached_tokens ({cached_tokens}) must not be more than "
                           f"prompt_tokens ({prompt_tokens})")


def _budget_scope(period: object, user: object, tag: object) -> tuple[str, str | None, str | None]:
    """A budget's period and scope, checked: a period of PERIODS; a user (a name or ``"*"``)
    or a tag (``"k=v"``), not both."""
    if not isinstance(period, str):
        raise TypeError(f"period must be a str, not {type(period).__name__}")
    if period not in PERIODS:
        raise InvalidInput(f"period must be one of {', '.join(PERIODS)}; got {period!r}")
    if user is not None and tag is not None:
        raise InvalidInput("a budget is on a user or on a tag, not both: give user= or tag=")
    name = "*" if user == "*" else check_user(user)
    if tag is None:
        return period, name, None
    key, value = parse_tag(tag, "tag")
    return period, name, f"{key}={value}"


def _thresholds(alerts: object) -> tuple[int, ...]:
    """Alert thresholds: whole percents from 1 to 1000, each once, sorted."""
    if isinstance(alerts, (str, bytes)) or not isinstance(alerts, Iterable):
        raise TypeError(f"alerts must be a sequence of ints (percent), not {type(alerts).__name__}")
    out = set()
    for value in alerts:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"alerts must be ints (percent of the limit), not "
                            f"{type(value).__name__} {value!r}")
        if not 1 <= value <= 1000:
            raise InvalidInput(f"alerts must be percents from 1 to 1000, got {value}")
        out.add(value)
    return tuple(sorted(out))


class Ledger:
    """A cost ledger for RunAPI calls: prices, budgets with atomic holds, usage and invoices.

    Example::

        book = Ledger("sqlite:///usage.db")
        book.set_budget("acme", Decimal("50.00"))
        client = openai.OpenAI(base_url=..., http_client=book.httpx_client("acme"))

    A ``Ledger`` may be shared by threads. Opening a fresh database migrates it to the head.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        clock: Clock | None = None,
        hold_ttl: timedelta = DEFAULT_HOLD_TTL,
        default_max_tokens: int = 4096,
        encodings: Mapping[str, str] | None = None,
        spool_path: str | os.PathLike[str] | None = None,
        fail_open: bool = False,
        send_default_cap: bool = True,
        migrate: bool = True,
        replay_spool: bool = True,
        create: bool = False,
        require_budget: bool = False,
        fit: str = "refuse",
        min_completion_tokens: int = 64,
    ) -> None:
        self.url = normalise_url(url or os.environ.get("LEDGER_DATABASE_URL") or DEFAULT_URL)
        self.clock: Clock = clock or SystemClock()
        if not isinstance(hold_ttl, timedelta) or hold_ttl <= timedelta(0):
            raise InvalidInput("hold_ttl must be a positive timedelta")
        self.hold_ttl = hold_ttl
        self.default_max_tokens = check_tokens(default_max_tokens, "default_max_tokens")
        if self.default_max_tokens < 1:
            raise InvalidInput(f"default_max_tokens must be at least 1, got {default_max_tokens}")
        self.fail_open = fail_open
        #: A metered OpenAI-shape call that sets no completion cap is sent with
        #: ``max_tokens = default_max_tokens``, so what it can cost is what was held: hard
        #: budgets stay hard. ``send_default_cap=False`` sends a body with no cap field as
        #: written, uncapped (the hold still assumes the default cap; the actual cost is
        #: settled even if it is more); a cap field sent as null still gets the default cap.
        self.send_default_cap = send_default_cap
        #: Refuse every metered call of a project with no budget (code ``no_budget``).
        self.require_budget = bool(require_budget)
        #: A metered call whose worst case does not fit a hard budget: ``"refuse"`` it (402),
        #: or ``"shrink"``: send it with its completion cap lowered to what fits (response
        #: header ``x-ledger-max-tokens``), never below ``min_completion_tokens``.
        self.fit = check_fit(fit)
        self.min_completion_tokens = check_min_completion_tokens(min_completion_tokens)
        self._encodings = dict(encodings or {})
        self._estimator: Estimator | None = None
        #: ``create=True`` makes a SQLite file's missing directory; without it a missing one
        #: raises InvalidInput naming the path (a typo is not a new, empty ledger).
        self.engine = make_engine(self.url, create=create)
        self.store = Store(self.engine)
        if migrate:
            try:
                upgrade(self.engine)
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                raise unavailable(exc, opening=repr(self)) from exc
        from .spool import Spool

        #: Absolute, fixed now, and checked now (InvalidInput naming it if it is unwritable).
        self.spool = Spool(spool_path or Spool.default_path(self.url))
        #: What metered calls take from this ledger (``ledger.metering``): they never see it.
        self.meter = Meter(
            store=self.store, now=self.now, estimator_of=lambda: self.estimator,
            spool=self.spool, hold_ttl=self.hold_ttl, fail_open=self.fail_open,
            default_max_tokens=self.default_max_tokens, send_default_cap=self.send_default_cap,
            after_settle=self.replay_if_spooled, require_budget=self.require_budget,
            fit=self.fit, min_completion_tokens=self.min_completion_tokens)
        self.spool.check_writable()
        self._replaying = threading.Lock()
        if replay_spool and self.spool.exists():
            try:
                self.replay()
            except LedgerUnavailable:  # next open, or `ledger replay`
                pass
            except OSError:  # a full disk: the spool stays as it was, for the next replay
                log.warning("spool %s could not be replayed; it is kept", self.spool.path,
                            exc_info=True)

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        from sqlalchemy.engine import make_url

        return f"Ledger({make_url(self.url).render_as_string(hide_password=True)!r})"

    def now(self) -> datetime:
        return require_aware(self.clock.now(), "clock.now()")

    # -- prices -------------------------------------------------------------------------------
    def set_price(
        self,
        model: str,
        per_1k: Decimal | int | str | None = None,
        *,
        input_per_1k: Decimal | int | str | None = None,
        output_per_1k: Decimal | int | str | None = None,
        cached_input_per_1k: Decimal | int | str | None = None,
        effective_from: datetime | None = None,
    ) -> Price:
        """Set a model's price per 1K tokens from ``effective_from`` (default: now) on."""
        check_name(model, "model")
        if per_1k is not None:
            if input_per_1k is not None or output_per_1k is not None:
                raise InvalidInput("give either per_1k or input_per_1k/output_per_1k, not both")
            input_per_1k = output_per_1k = per_1k
        if input_per_1k is None or output_per_1k is None:
            raise InvalidInput("a price needs per_1k, or both input_per_1k and output_per_1k")
        when = self.now() if effective_from is None else require_aware(effective_from, "effective_from")
        price = Price(
            model, when,
            price_to_units(input_per_1k, "input_per_1k"),
            price_to_units(output_per_1k, "output_per_1k"),
            None if cached_input_per_1k is None
            else price_to_units(cached_input_per_1k, "cached_input_per_1k"),
        )
        self.store.set_price(price, self.now())
        return price

    def price(self, model: str, at: datetime | None = None) -> Price:
        """The price of ``model`` in force at ``at`` (default: now); UnknownModel if none."""
        check_name(model, "model")
        when = self.now() if at is None else require_aware(at, "at")
        found = self.store.price_at(model, when)
        if found is None:
            raise UnknownModel(model)
        return found

    def prices(self) -> list[Price]:
        """Every price in the catalog, by model and date."""
        return self.store.price_list()

    # -- budgets ------------------------------------------------------------------------------
    def set_budget(
        self,
        project: str,
        limit: Decimal | int | str,
        hard: bool = True,
        *,
        period: str = "month",
        user: str | None = None,
        tag: str | None = None,
        alerts: Iterable[int] = DEFAULT_ALERTS,
        effective_from: datetime | None = None,
    ) -> Budget:
        """Set a budget: on the project, on one of its end users (``user="*"``: each of them
        gets their own), or on a tag (``tag="feature=search"``); per UTC ``day``, ISO
        ``week``, ``month`` (the default) or ``total`` (prepaid credit: never resets, raising
        the limit tops it up). ``hard=False``: only flagged and alerted. ``alerts``: thresholds
        in percent of the limit. In force from ``effective_from`` (default: now); a past window
        keeps the limit it had. Returns the budget as stored."""
        check_name(project, "project")
        if not isinstance(hard, bool):
            raise TypeError(f"hard must be a bool (True or False), not {type(hard).__name__} "
                            f"{hard!r}")
        amount = to_decimal(limit, "limit")
        if amount <= 0:
            raise InvalidInput(f"limit must be positive, got {amount}")
        if amount > MAX_AMOUNT:
            raise InvalidInput(f"limit must be at most {MAX_AMOUNT}, got {amount}")
        period, user, tag = _budget_scope(period, user, tag)
        thresholds = _thresholds(alerts)
        now = self.now()
        when = now if effective_from is None else require_aware(effective_from, "effective_from")
        budget = Budget(project, user, tag, period, from_units(to_units(amount, "limit")), hard,
                        thresholds, when)
        self.store.set_budget(budget, now)
        return budget

    def remove_budget(self, project: str, *, period: str = "month", user: str | None = None,
                      tag: str | None = None) -> bool:
        """End a budget from now on (past windows keep their limit); False if there was none."""
        check_name(project, "project")
        period, user, tag = _budget_scope(period, user, tag)
        return self.store.remove_budget(project, period, user, tag, self.now())

    def budgets(self, project: str | None = None) -> list[Budget]:
        """The budgets in force now (of ``project``, or every project's)."""
        if project is not None:
            check_name(project, "project")
        return self.store.budgets(project, self.now())

    def budget_windows(self, project: str | None = None) -> list[BudgetWindow]:
        """Every budget's current window: limit, spent, held, remaining, status."""
        if project is not None:
            check_name(project, "project")
        return self.store.windows(self.now(), project)

    def budget(self, project: str, month: str | None = None) -> BudgetState:
        """A project's month: limit, settled (spent), held, remaining, status."""
        check_name(project, "project")
        return self.store.state(project, self._month(month), self.now())

    def spend(self, project: str, month: str | None = None, *, user: str | None = None,
              tag: str | None = None, period: str = "month") -> Decimal:
        """Settled cost of ``project`` (or of one of its end users, or of a tag) in a window:
        ``month`` (default: the current UTC month), or the current ``day``, ``week`` or
        ``total``."""
        check_name(project, "project")
        period, user, tag = _budget_scope(period, user, tag)
        if user == "*":
            raise InvalidInput("spend is per end user: give a user's name, not '*'")
        if month is not None and period != "month":
            raise InvalidInput(f"month is for period='month', not period={period!r}")
        if user is None and tag is None and period == "month":
            return self.budget(project, month).spent
        at = self.now() if month is None else month_bounds(parse_month(month))[0]
        return from_units(self.store.spend_units(project, at, period, user, tag))

    def alerts(self, project: str | None = None, since_id: int = 0) -> list[Alert]:
        """The budget alerts written, oldest first (``since_id``: only those after it).

        Polling with ``since_id`` = the last id seen can miss an alert on PostgreSQL, which
        hands out ids at insert and shows rows at commit, in another order: poll from the
        last id older than a minute instead and skip the ids already handled (as
        ``ledger alerts deliver`` does, see ``ledger.delivery.IN_FLIGHT``)."""
        if project is not None:
            check_name(project, "project")
        if isinstance(since_id, bool) or not isinstance(since_id, int):
            raise TypeError(f"since_id must be an int, not {type(since_id).__name__}")
        return self.store.alerts(project, since_id)

    def on_alert(self, callback: Callable[[Alert], object]) -> None:
        """Call ``callback(alert)`` in this process for each alert, after the commit that
        crossed its threshold (never inside it); an exception in it is logged, never raised."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")

        def each(written: list[Alert]) -> None:
            for alert in written:
                try:
                    callback(alert)
                except Exception:
                    log.exception("on_alert callback %r failed on alert %s", callback, alert.id)

        self.store.alert_listeners.append(each)

    def _month(self, month: str | None) -> str:
        return month_of(self.now()) if month is None else parse_month(month)

    # -- estimate -----------------------------------------------------------------------------
    @property
    def estimator(self) -> Estimator:
        if self._estimator is None:
            from .estimate import Estimator

            self._estimator = Estimator(encodings=self._encodings,
                                        default_max_tokens=self.default_max_tokens)
        return self._estimator

    def estimate(self, body: Mapping[str, Any] | bytes | str, shape: str = "openai") -> Estimate:
        """Tokens and worst-case cost of a request body (OpenAI or Anthropic shape)."""
        from .shapes import body_bytes, parse_request

        request = parse_request(shape, body_bytes(body))  # type: ignore[arg-type]
        if request.model is None:
            raise InvalidInput("the request body has no \"model\"")
        tokens = self.estimator.estimate(request)
        price = self.price(request.model)
        units = worst_case_units(price, tokens.prompt_tokens, tokens.max_completion_tokens)
        return Estimate(request.model, tokens.prompt_tokens, tokens.max_completion_tokens,
                        from_units(units), tokens.capped_by_default, price)

    # -- holds (two-phase) --------------------------------------------------------------------
    def hold(self, project: str, model: str, prompt_tokens: int, max_completion_tokens: int,
             *, call_id: str | None = None, user: str | None = None,
             tags: Mapping[str, str] | str | None = None,
             min_completion_tokens: int | None = None) -> Hold:
        """Reserve a call's worst case against every hard budget it matches (its project's,
        its ``user``'s, its ``tags``'); BudgetExceeded if it cannot fit. With
        ``min_completion_tokens``, a worst case that does not fit holds the largest cap that
        does, down to that (``Hold.max_completion_tokens``: send at most that many)."""
        check_name(project, "project")
        check_name(model, "model")
        check_tokens(prompt_tokens, "prompt_tokens")
        check_tokens(max_completion_tokens, "max_completion_tokens")
        if min_completion_tokens is not None:
            check_min_completion_tokens(min_completion_tokens)
        return self.store.hold(call_id or new_call_id(), project, model, prompt_tokens,
                               max_completion_tokens, self.now(), self.hold_ttl,
                               attribution=client_attribution(user, tags),
                               min_completion_tokens=min_completion_tokens)

    def settle(self, call_id: str, prompt_tokens: int, completion_tokens: int, *,
               cached_tokens: int = 0, estimated: bool = False, status: str = "ok",
               http_status: int | None = None, error: str | None = None) -> Decimal:
        """Post a hold at the actual cost (even above the hold). Idempotent by call id."""
        for name, value in (("prompt_tokens", prompt_tokens),
                            ("completion_tokens", completion_tokens),
                            ("cached_tokens", cached_tokens)):
            check_tokens(value, name)
        check_cached(cached_tokens, prompt_tokens)
        outcome = Outcome(status, prompt_tokens, completion_tokens, cached_tokens, estimated,
                          http_status, error)
        return from_units(self.store.settle(call_id, outcome, self.now()))

    def void(self, call_id: str, *, error: str | None = None, http_status: int | None = None,
             status: str = "failed") -> None:
        """Release a hold: the call failed and costs zero; it is recorded as failed."""
        self.store.settle(call_id, Outcome(status, http_status=http_status, error=error),
                          self.now())

    def expire_holds(self) -> int:
        """Expire every hold past its TTL (their process died); returns how many."""
        return self.store.expire(self.now())

    # -- recording by hand --------------------------------------------------------------------
    def record(self, project: str, model: str, prompt_tokens: int, completion_tokens: int, *,
               cached_tokens: int = 0, at: datetime | None = None,
               request_id: str | None = None, user: str | None = None,
               tags: Mapping[str, str] | str | None = None) -> Decimal:
        """Record a call's usage (for its end ``user`` and ``tags``, if given); returns its
        exact cost. The same request_id twice: once."""
        check_name(project, "project")
        attribution = client_attribution(user, tags)
        check_name(model, "model")
        for name, value in (("prompt_tokens", prompt_tokens),
                            ("completion_tokens", completion_tokens),
                            ("cached_tokens", cached_tokens)):
            check_tokens(value, name)
        check_cached(cached_tokens, prompt_tokens)
        if request_id is not None:
            check_name(request_id, "request_id")
        when = self.now() if at is None else require_aware(at, "at")
        outcome = Outcome("ok", prompt_tokens, completion_tokens, cached_tokens)
        return from_units(self.store.record(project, model, outcome, when, self.now(),
                                            request_id, attribution=attribution))

    # -- metering (ledger.metering, ledger.transport) ----------------------------------------
    def metered_call(self, project: str, request_body: Mapping[str, Any] | bytes | str,
                     shape: str | None = None, *, user: str | None = None,
                     tags: Mapping[str, str] | str | None = None) -> MeteredCall:
        """Estimate and hold a call made by any client, for its end ``user`` and ``tags``
        (else the body's user); settle it from the reply (see README)."""
        from .metering.by_hand import MeteredCall

        return MeteredCall(self.meter, project, request_body, shape, user=user, tags=tags)

    def httpx_client(self, project: str, **kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` (OpenAI SDK) whose RunAPI calls are metered for ``project``.

        ``user=`` / ``tags=`` attribute its calls to an end user and tags (per request:
        headers ``X-Ledger-User`` / ``X-Ledger-Tags``); ``projects=``, ``free_paths=`` as
        ``MeteredTransport``; any other keyword goes to ``httpx.Client``."""
        from .transport import httpx_client

        return httpx_client(self, project, **kwargs)

    def async_httpx_client(self, project: str, **kwargs: Any) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` whose RunAPI calls are metered for ``project``."""
        from .transport import async_httpx_client

        return async_httpx_client(self, project, **kwargs)

    def httpx2_client(self, project: str, **kwargs: Any) -> httpx2.Client:
        """An ``httpx2.Client`` (Anthropic SDK, newer OpenAI SDKs) metered for ``project``."""
        from .transport import httpx2_client

        return httpx2_client(self, project, **kwargs)

    def async_httpx2_client(self, project: str, **kwargs: Any) -> httpx2.AsyncClient:
        """An ``httpx2.AsyncClient`` metered for ``project``."""
        from .transport import async_httpx2_client

        return async_httpx2_client(self, project, **kwargs)

    # -- reports and invoices (ledger.reports, ledger.invoice) --------------------------------
    def invoice(self, project: str, month: str, *, draft: bool = False,
                include_empty: bool = False, by: str | None = None) -> Invoice:
        """The invoice of ``project`` for ``month``; issuing freezes it (``draft``: never).

        Refuses a month not over, a future month and a project never seen; a $0.00 month
        comes back unnumbered unless ``include_empty``. ``by="user"``, ``"tag"`` or
        ``"tag:KEY"`` splits its lines per end user or tag, the total unchanged."""
        from .invoice import invoice

        return invoice(self.store, self.now(), project, month, draft=draft,
                       include_empty=include_empty, by=by)

    def void_invoice(self, number: int | str, *, reason: str) -> CreditNote:
        """Void an issued invoice (``"INV-000005"``): returns its credit note (``CN-000001``);
        the month can then be issued again."""
        from .invoice import void_invoice

        return void_invoice(self.store, self.now(), number, reason=reason)

    def set_issuer(self, name: str, address: str = "", tax_id: str = "", *,
                   payment_terms_days: int = 30, payment_details: str = "") -> Issuer:
        """The seller printed on every invoice issued from now on."""
        from .parties import make_issuer
        from .store.parties import set_issuer

        who = make_issuer(name, address, tax_id, payment_terms_days=payment_terms_days,
                          payment_details=payment_details)
        set_issuer(self.store, who, self.now())
        return who

    def set_customer(self, project: str, name: str, address: str = "", email: str = "",
                     tax_id: str = "", *, tax_rate: Decimal | int | str | None = None,
                     tax_name: str = "Tax") -> Customer:
        """``project``'s bill-to party and tax rate (a fraction: ``Decimal("0.20")``)."""
        from .parties import make_customer
        from .store.parties import set_customer

        who = make_customer(project, name, address, email, tax_id, tax_rate=tax_rate,
                            tax_name=tax_name)
        set_customer(self.store, who, self.now())
        return who

    def issuer(self) -> Issuer | None:
        """The seller recorded by ``set_issuer`` (None: none yet)."""
        from .store.parties import get_issuer

        return get_issuer(self.store)

    def customer(self, project: str) -> Customer | None:
        """``project``'s bill-to party recorded by ``set_customer`` (None: none yet)."""
        from .store.parties import get_customer

        return get_customer(self.store, check_name(project, "project"))

    def budget_report(self, month: str | None = None, *, by: str | None = None) -> BudgetReport:
        """Every project's budget for ``month``: spent, held, remaining, burn rate, forecast;
        every budget (any scope and period) in its window (``.budgets``); with ``by``
        (``"user"``, ``"tag"``, ``"model"``) the month's spend grouped so (``.groups``)."""
        from .reports import budget_report

        return budget_report(self.store, self.now(), self._month(month), by=by)

    def invoices(self, month: str, *, draft: bool = False,
                 by: str | None = None) -> list[Invoice]:
        """The invoice of every project with something to bill for ``month`` (issued unless
        ``draft``), by project; lines split ``by`` end user or tag if asked."""
        from .invoice import invoices_for_month

        return invoices_for_month(self.store, self.now(), month, draft=draft, by=by)

    def usage(self, *, project: str | None = None, month: str | None = None,
              model: str | None = None, status: str | None = None, user: str | None = None,
              tag: str | None = None) -> Iterator[UsageRow]:
        """Stream the recorded calls matching the filters, oldest first (flat memory);
        ``user``: an end user's calls, ``tag`` (``"k=v"``): the calls carrying it."""
        from .reports import usage_rows

        return usage_rows(self.store, project=project, month=month, model=model, status=status,
                          user=user, tag=tag)

    # -- the spool ----------------------------------------------------------------------------
    def replay(self) -> int:
        """Apply the spooled usage (written while the database was failing), exactly once;
        returns how many entries were applied."""
        return self.spool.replay(self.store, self.now()).applied

    def replay_details(self, *, rejected: bool = False) -> ReplayResult:
        """Replay the spool (``rejected``: retry the lines set aside in ``<spool>.rejected``)
        and say what happened: applied, newly rejected, and how many wait in the file."""
        return self.spool.replay(self.store, self.now(), rejected=rejected)

    def replay_if_spooled(self) -> None:
        """After a settle succeeded: if usage waits in the spool, replay it now (one thread at
        a time; a stat() per call otherwise), so a long-running worker counts it against its
        budgets without waiting for a restart."""
        if not self.spool.exists() or not self._replaying.acquire(blocking=False):
            return
        try:
            self.replay()
        except Exception:
            log.warning("spool replay failed; it will be retried", exc_info=True)
        finally:
            self._replaying.release()

