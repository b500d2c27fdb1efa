"""A stateful Hypothesis test of the two-phase budget against a simple model of it."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from ledger import BudgetExceeded, Ledger, ManualClock
from ledger.clock import month_of
from ledger.money import price_to_units, to_units

LIMIT = Decimal("1.00")
TTL = timedelta(minutes=10)


@dataclass
class ModelHold:
    call_id: str
    month: str
    amount: int
    input_units: int
    output_units: int
    prompt: int
    max_completion: int
    expires_at: datetime
    state: str = "pending"


class TwoPhaseBudget(RuleBasedStateMachine):
    """Holds, settles, voids, expiry, time, month boundaries and price changes."""

    holds = Bundle("holds")

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp()
        self.clock = ManualClock(datetime(2026, 11, 28, tzinfo=UTC))
        self.book = Ledger(f"sqlite:///{self.dir}/l.db", clock=self.clock, hold_ttl=TTL)
        self.book.set_budget("p", LIMIT)
        self.limit = to_units(LIMIT)
        self.price = price_to_units("0.020")
        self.model: dict[str, ModelHold] = {}
        self.settled: dict[str, int] = {}
        self.late: dict[str, int] = {}  # settled after the hold expired: usage kept, over limit
        self.n = 0

    def teardown(self) -> None:
        self.book.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _held(self, month: str) -> int:
        return sum(h.amount for h in self.model.values() if h.state == "pending" and h.month == month)

    def _expire(self, month: str | None = None) -> None:
        now = self.clock.now()
        for h in self.model.values():
            if h.state == "pending" and h.expires_at <= now and (month is None or h.month == month):
                h.state = "expired"

    @rule(target=holds, prompt=st.integers(0, 20_000), max_completion=st.integers(0, 30_000))
    def hold(self, prompt: int, max_completion: int) -> str:
        self.n += 1
        call_id = f"c{self.n}"
        month = month_of(self.clock.now())
        amount = (prompt + max_completion) * self.price
        settled = self.settled.get(month, 0)
        fits = settled + self._held(month) + amount <= self.limit
        if not fits:
            self._expire()  # the store expires the project's dead holds (any window) first
            fits = settled + self._held(month) + amount <= self.limit
        try:
            self.book.hold("p", "kimi-k2.5", prompt, max_completion, call_id=call_id)
        except BudgetExceeded:
            assert not fits, "refused a hold the model admits"
            return call_id
        assert fits, "admitted a hold that does not fit"
        self.model[call_id] = ModelHold(call_id, month, amount, self.price, self.price, prompt,
                                        max_completion, self.clock.now() + TTL)
        return call_id

    @rule(call_id=holds, used=st.floats(0, 1))
    def settle(self, call_id: str, used: float) -> None:
        h = self.model.get(call_id)
        if h is None:
            return
        prompt, completion = h.prompt, int(h.max_completion * used)
        cost = self.book.settle(call_id, prompt, completion)
        if h.state in ("pending", "expired"):
            expected = prompt * h.input_units + completion * h.output_units
            assert to_units(cost) == expected
            self.settled[h.month] = self.settled.get(h.month, 0) + expected
            if h.state == "expired":
                self.late[h.month] = self.late.get(h.month, 0) + expected
            h.state = "posted"

    @rule(call_id=holds)
    def void(self, call_id: str) -> None:
        h = self.model.get(call_id)
        if h is None:
            return
        self.book.void(call_id)
        if h.state in ("pending", "expired"):
            h.state = "voided"

    @rule()
    def expire(self) -> None:
        self.book.expire_holds()
        self._expire()

    @rule(seconds=st.integers(0, 1200))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule()
    def next_month(self) -> None:
        now = self.clock.now()
        first = (now.replace(day=1) + timedelta(days=32)).replace(day=1, hour=0, minute=0,
                                                                   second=0, microsecond=0)
        self.clock.set(first)

    @rule(price=st.sampled_from(["0.010", "0.020", "0.035"]))
    def change_price(self, price: str) -> None:
        self.book.set_price("kimi-k2.5", Decimal(price), effective_from=self.clock.now())
        self.price = price_to_units(price)

    @invariant()
    def totals_match_the_model_and_the_events(self) -> None:
        for month in {h.month for h in self.model.values()} | set(self.settled):
            state = self.book.store.state("p", month)
            assert state.settled_units == self.settled.get(month, 0)
            assert state.held_units == self._held(month)
            # The hard-limit invariant; only usage settled after its hold expired may exceed it.
            assert state.settled_units + state.held_units <= self.limit + self.late.get(month, 0)
            assert state.settled_units >= 0 and state.held_units >= 0
        assert self.book.store.check_totals() == []


TwoPhaseBudget.TestCase.settings = settings(max_examples=40, stateful_step_count=30,
                                            deadline=None)
TestTwoPhaseBudget = TwoPhaseBudget.TestCase
