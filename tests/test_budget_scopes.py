"""Budgets on any scope and period (issue 10), on SQLite and PostgreSQL: nested, per end user,
per tag, prepaid credit, calendar windows, dated limits, removal, refusals, shrink; and ids
scoped to their project (issue 9 item 4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from ledger import BudgetExceeded, InvalidInput, Ledger, ManualClock
from ledger.clock import window_bounds, window_of
from ledger.records import Attribution, Hold
from ledger.store.ops import NOBODY, Outcome
from ledger.testing import assert_consistent

#: Model "m" costs $0.001 a token, in and out: a call of N tokens costs N/1000 dollars.
M = "m"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.fixture
def book(any_book: Ledger) -> Ledger:
    any_book.set_price(M, Decimal("1"), effective_from=EPOCH)
    return any_book


def who(user: str | None = None, tags: dict[str, str] | str | None = None) -> Attribution:
    return Attribution.of(user, tags)


def record(book: Ledger, project: str, tokens: int, *, user: str | None = None,
           tags: dict[str, str] | None = None, at: datetime | None = None) -> Decimal:
    """Record a call of ``tokens`` prompt tokens (cost tokens/1000 dollars)."""
    from ledger.money import from_units

    now = book.now()
    return from_units(book.store.record(project, M, Outcome("ok", tokens, 0), at or now, now,
                                        None, who(user, tags)))


def hold(book: Ledger, project: str, prompt: int, completion: int, *,
         user: str | None = None, tags: dict[str, str] | None = None,
         min_completion: int | None = None) -> Hold:
    import uuid

    return book.store.hold(uuid.uuid4().hex, project, M, prompt, completion, book.now(),
                           book.hold_ttl, who(user, tags), min_completion)


class TestContractExamples:
    def test_every_example_of_the_contract_sets_a_budget(self, book: Ledger) -> None:
        """Each set_budget of the contract's "Budgets on any scope" works and is listed."""
        book.set_budget("acme", Decimal("50"))
        book.set_budget("acme", Decimal("2"), period="day")
        book.set_budget("acme", Decimal("0.10"), period="day", user="*")
        book.set_budget("acme", Decimal("1"), period="day", user="alice")
        book.set_budget("acme", Decimal("5"), period="week", tag="feature=search")
        book.set_budget("acme", Decimal("100"), period="total")
        book.set_budget("acme", Decimal("3"), hard=False, alerts=(50, 80, 100), period="week",
                        effective_from=book.now() - timedelta(hours=1))
        found = {(b.user, b.tag, b.period): (b.limit, b.hard) for b in book.budgets("acme")}
        assert found == {
            (None, None, "month"): (Decimal("50"), True),
            (None, None, "day"): (Decimal("2"), True),
            ("*", None, "day"): (Decimal("0.10"), True),
            ("alice", None, "day"): (Decimal("1"), True),
            (None, "feature=search", "week"): (Decimal("5"), True),
            (None, None, "total"): (Decimal("100"), True),
            (None, None, "week"): (Decimal("3"), False),
        }
        assert all(b.project == "acme" for b in book.budgets())
        assert book.remove_budget("acme", period="day", user="*") is True
        assert ("*", None, "day") not in {(b.user, b.tag, b.period) for b in book.budgets("acme")}
        assert book.budgets("other") == []

    @pytest.mark.parametrize(("kwargs", "error", "field"), [
        ({"period": "year"}, InvalidInput, "period"),
        ({"period": 1}, TypeError, "period"),
        ({"user": "*", "tag": "a=b"}, InvalidInput, "user or on a tag"),
        ({"tag": "nokey"}, InvalidInput, "tag"),
        ({"tag": "a=b,c=d"}, InvalidInput, "tag"),
        ({"user": ""}, InvalidInput, "user"),
        ({"alerts": (0, 80)}, InvalidInput, "alerts"),
        ({"alerts": (80, 1001)}, InvalidInput, "alerts"),
        ({"alerts": (80.0,)}, TypeError, "alerts"),
        ({"alerts": "80"}, TypeError, "alerts"),
        ({"alerts": (True,)}, TypeError, "alerts"),
        ({"effective_from": datetime(2026, 1, 1)}, InvalidInput, "effective_from"),
    ])
    def test_bad_budgets_are_refused_naming_the_field(self, book: Ledger, kwargs: dict[str, object],
                                                      error: type[Exception], field: str) -> None:
        """A bad period, scope or threshold raises InvalidInput/TypeError naming it."""
        with pytest.raises(error, match=field):
            book.set_budget("acme", Decimal("1"), **kwargs)  # type: ignore[arg-type]
        assert book.budgets("acme") == []


class TestNestedBudgets:
    def test_a_call_must_fit_the_day_inside_the_month(self, book: Ledger) -> None:
        """$2/day inside $50/month: the day refuses first, and the refusal names it."""
        book.set_budget("acme", Decimal("50"))
        book.set_budget("acme", Decimal("2"), period="day")
        record(book, "acme", 1500)                                  # $1.50 today
        hold(book, "acme", 200, 300)                                # $0.50 more fits
        with pytest.raises(BudgetExceeded) as err:
            hold(book, "acme", 1, 0)
        window = err.value.budget
        assert (window.budget.period, window.budget.user, window.window) == (
            "day", None, "2026-11-10")
        assert (window.limit, window.spent, window.held) == (
            Decimal("2"), Decimal("1.5"), Decimal("0.5"))
        assert "acme day" in str(err.value)
        assert_consistent(book)

    def test_the_month_refuses_when_the_days_fit(self, book: Ledger, clock: ManualClock) -> None:
        """Each day under its limit, the month's limit still binds."""
        book.set_budget("acme", Decimal("3"))
        book.set_budget("acme", Decimal("2"), period="day")
        record(book, "acme", 1800)
        clock.advance(days=1)
        record(book, "acme", 1000)
        with pytest.raises(BudgetExceeded) as err:
            hold(book, "acme", 300, 0)
        assert err.value.budget.budget.period == "month"
        tightest = hold(book, "acme", 200, 0).tightest
        assert tightest is not None and tightest.budget.period == "month"
        assert_consistent(book)

    def test_tightest_is_the_budget_with_least_left(self, book: Ledger) -> None:
        """Hold.tightest names the matching hard budget with the least remaining."""
        book.set_budget("acme", Decimal("50"))
        book.set_budget("acme", Decimal("2"), period="day")
        book.set_budget("acme", Decimal("10"), period="day", user="*", hard=False)
        h = hold(book, "acme", 500, 0, user="bob")
        assert h.tightest is not None
        assert (h.tightest.budget.period, h.tightest.remaining) == ("day", Decimal("1.5"))
        assert hold(book, "free", 1, 1).tightest is None


class TestEndUsers:
    def test_each_user_gets_the_star_budget_and_alice_her_own(self, book: Ledger) -> None:
        """"*" gives each user $0.10 a day; alice's own $1 replaces it for her."""
        book.set_budget("acme", Decimal("0.10"), period="day", user="*")
        book.set_budget("acme", Decimal("1"), period="day", user="alice")
        record(book, "acme", 100, user="bob")
        with pytest.raises(BudgetExceeded) as err:
            hold(book, "acme", 1, 0, user="bob")
        assert (err.value.budget.budget.user, err.value.budget.user) == ("*", "bob")
        hold(book, "acme", 100, 0, user="carol")                     # carol has her own $0.10
        record(book, "acme", 500, user="alice")
        hold(book, "acme", 400, 0, user="alice")                     # alice: $1
        with pytest.raises(BudgetExceeded) as err:
            hold(book, "acme", 101, 0, user="alice")
        assert err.value.budget.budget.user == "alice"
        hold(book, "acme", 5000, 0)                                  # no user: no user budget
        assert book.spend("acme", user="alice", period="day") == Decimal("0.5")
        assert book.spend("acme", user="bob", period="day") == Decimal("0.1")
        windows = {(w.budget.user, w.user): w.spent for w in book.budget_windows("acme")}
        assert windows == {("*", "bob"): Decimal("0.1"), ("*", "carol"): Decimal("0"),
                           ("alice", "alice"): Decimal("0.5")}
        assert_consistent(book)

    def test_a_star_budget_set_during_a_day_starts_from_the_day_so_far(self, book: Ledger) -> None:
        """A budget set mid-window counts the usage already in it (each user's own)."""
        record(book, "acme", 80, user="bob")
        record(book, "acme", 10, user="dan")
        book.set_budget("acme", Decimal("0.10"), period="day", user="*")
        with pytest.raises(BudgetExceeded):
            hold(book, "acme", 30, 0, user="bob")
        hold(book, "acme", 90, 0, user="dan")
        assert_consistent(book)


class TestTags:
    def test_a_tag_budget_holds_only_calls_with_that_tag(self, book: Ledger,
                                                          clock: ManualClock) -> None:
        """tag feature=search per week: other tags and untagged calls are not counted."""
        book.set_budget("acme", Decimal("1"), period="week", tag="feature=search")
        record(book, "acme", 900, tags={"feature": "search", "env": "prod"})
        record(book, "acme", 5000, tags={"feature": "chat"})
        record(book, "acme", 5000)
        with pytest.raises(BudgetExceeded) as err:
            hold(book, "acme", 200, 0, tags={"feature": "search"})
        assert err.value.budget.budget.tag == "feature=search"
        hold(book, "acme", 200, 0, tags={"feature": "chat"})
        assert book.spend("acme", tag="feature=search", period="week") == Decimal("0.9")
        clock.set(datetime(2026, 11, 16, tzinfo=UTC))              # next Monday
        hold(book, "acme", 999, 0, tags={"feature": "search"})
        assert_consistent(book)

    def test_tag_matching_is_exact(self, book: Ledger) -> None:
        """tag a=b does not match a=bc, xa=b, or a tag value holding LIKE wildcards."""
        book.set_budget("acme", Decimal("0.001"), period="day", tag="a=b")
        for tags in ({"a": "bc"}, {"xa": "b"}, {"a": "%"}, {"a": "_"}):
            record(book, "acme", 100, tags=tags)
        hold(book, "acme", 1, 0, tags={"a": "b"})
        assert book.spend("acme", tag="a=b", period="day") == 0
        assert book.spend("acme", tag="a=%", period="day") == Decimal("0.1")


    def test_tag_matching_is_case_sensitive_on_both_backends(self, book: Ledger) -> None:
        """env=prod is not env=Prod: spend, usage and a new tag budget's running total count
        only the exact tag (SQLite's LIKE folds ASCII case unless told not to)."""
        record(book, "acme", 1000, tags={"env": "prod"})
        record(book, "acme", 7000, tags={"env": "Prod"})
        record(book, "acme", 3000, tags={"ENV": "prod"})
        assert book.spend("acme", tag="env=prod", period="day") == Decimal("1")
        assert book.spend("acme", tag="env=Prod", period="day") == Decimal("7")
        book.set_budget("acme", Decimal("2"), period="day", tag="env=prod")
        [window] = [w for w in book.budget_windows("acme") if w.budget.tag == "env=prod"]
        assert window.spent == Decimal("1")
        hold(book, "acme", 900, 0, tags={"env": "prod"})  # fits: 1 + 0.9 <= 2
        assert_consistent(book)


class TestWindows:
    @pytest.mark.parametrize(("period", "start", "last", "first_next"), [
        ("day", datetime(2026, 11, 10, 1, tzinfo=UTC), datetime(2026, 11, 10, 23, 59, 59, tzinfo=UTC),
         datetime(2026, 11, 11, tzinfo=UTC)),
        ("week", datetime(2026, 11, 9, tzinfo=UTC), datetime(2026, 11, 15, 23, 59, 59, tzinfo=UTC),
         datetime(2026, 11, 16, tzinfo=UTC)),
        ("month", datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC),
         datetime(2026, 12, 1, tzinfo=UTC)),
    ])
    def test_a_window_starts_from_zero_by_itself(self, book: Ledger, clock: ManualClock,
                                                 period: str, start: datetime, last: datetime,
                                                 first_next: datetime) -> None:
        """Spent to the limit, refused up to the window's last second, free at the next one."""
        clock.set(start)
        book.set_budget("acme", Decimal("1"), period=period)
        record(book, "acme", 1000)
        clock.set(last)
        with pytest.raises(BudgetExceeded):
            hold(book, "acme", 1, 0)
        clock.set(first_next)
        tightest = hold(book, "acme", 1000, 0).tightest
        assert tightest is not None and tightest.window == window_of(period, first_next)
        assert book.spend("acme", period=period) == 0
        assert_consistent(book)

    def test_window_names_and_bounds(self) -> None:
        """Windows are named by their start (ISO Monday for weeks) and bounded in UTC."""
        at = datetime(2027, 1, 1, 5, tzinfo=UTC)                   # a Friday
        assert [window_of(p, at) for p in ("day", "week", "month", "total")] == [
            "2027-01-01", "2026-12-28", "2027-01", "total"]
        assert window_bounds("week", "2026-12-28") == (datetime(2026, 12, 28, tzinfo=UTC),
                                                         datetime(2027, 1, 4, tzinfo=UTC))
        assert window_bounds("total", "total") == (None, None)
        with pytest.raises(InvalidInput):
            window_bounds("week", "2026-12-29")

    def test_a_total_budget_is_prepaid_credit(self, book: Ledger, clock: ManualClock) -> None:
        """A total budget never resets; raising its limit tops it up."""
        book.set_budget("acme", Decimal("1"), period="total")
        record(book, "acme", 700)
        clock.advance(days=40)
        record(book, "acme", 300)
        with pytest.raises(BudgetExceeded) as err:
            hold(book, "acme", 1, 0)
        assert err.value.budget.window == "total"
        book.set_budget("acme", Decimal("1.5"), period="total")      # top up $0.50
        hold(book, "acme", 500, 0)
        with pytest.raises(BudgetExceeded):
            hold(book, "acme", 1, 0)
        assert book.spend("acme", period="total") == Decimal("1")
        assert_consistent(book)


class TestDatedLimits:
    def test_a_past_window_keeps_the_limit_it_had(self, book: Ledger, clock: ManualClock) -> None:
        """Changing the limit in December leaves November's report at November's limit."""
        book.set_budget("acme", Decimal("10"))
        record(book, "acme", 4000)
        clock.set(datetime(2026, 12, 5, tzinfo=UTC))
        book.set_budget("acme", Decimal("5"))
        assert book.budget("acme", "2026-11").limit == Decimal("10")
        assert book.budget("acme").limit == Decimal("5")
        rows = {r.project: r.limit for r in book.budget_report("2026-11").rows}
        assert rows == {"acme": Decimal("10")}

    def test_a_future_limit_takes_effect_at_its_date(self, book: Ledger,
                                                     clock: ManualClock) -> None:
        """effective_from in the future: today's limit stands until then."""
        book.set_budget("acme", Decimal("1"), period="day")
        book.set_budget("acme", Decimal("5"), period="day",
                        effective_from=clock.now() + timedelta(days=1))
        record(book, "acme", 900)
        with pytest.raises(BudgetExceeded):
            hold(book, "acme", 200, 0)
        clock.advance(days=1)
        record(book, "acme", 4000)
        hold(book, "acme", 900, 0)
        assert_consistent(book)

    def test_remove_budget_ends_it_from_now(self, book: Ledger, clock: ManualClock) -> None:
        """remove_budget: calls are no longer refused; a second removal says False."""
        book.set_budget("acme", Decimal("1"), period="day", user="*")
        record(book, "acme", 1000, user="bob")
        assert book.remove_budget("acme", period="day", user="*") is True
        assert book.remove_budget("acme", period="day", user="*") is False
        assert book.remove_budget("acme", period="week") is False
        hold(book, "acme", 5000, 0, user="bob")
        assert book.budgets("acme") == []
        assert not book.store.has_budget("acme")
        book.set_budget("acme", Decimal("1"), period="day", user="*")  # again: recounted
        assert book.store.has_budget("acme")                # require_budget counts any budget
        with pytest.raises(BudgetExceeded):
            hold(book, "acme", 1, 0, user="bob")
        assert_consistent(book)


class TestShrink:
    def test_a_call_that_does_not_fit_is_held_with_a_lower_cap(self, book: Ledger) -> None:
        """min_completion_tokens: the largest cap that fits every hard budget is held."""
        book.set_budget("acme", Decimal("1"))
        book.set_budget("acme", Decimal("0.5"), period="day")
        record(book, "acme", 100)                                    # day: $0.40 left
        h = hold(book, "acme", 100, 4096, min_completion=64)
        assert (h.max_completion_tokens, h.amount_units) == (300, 400 * 10**7)
        with pytest.raises(BudgetExceeded) as err:
            hold(book, "acme", 10, 4096, min_completion=64)
        assert err.value.budget.budget.period == "day"
        full = hold(book, "other", 10, 4096, min_completion=64)
        assert full.max_completion_tokens == 4096
        assert_consistent(book)

    def test_a_shrunk_hold_asked_again_is_the_same_hold(self, book: Ledger) -> None:
        """The same call id with the same ask returns the shrunk hold; a bigger prompt raises."""
        book.set_budget("acme", Decimal("0.5"))
        first = book.store.hold("c-1", "acme", M, 100, 4096, book.now(), book.hold_ttl,
                                NOBODY, 64)
        again = book.store.hold("c-1", "acme", M, 100, 4096, book.now(), book.hold_ttl,
                                NOBODY, 64)
        assert (again.amount_units, again.max_completion_tokens) == (
            first.amount_units, first.max_completion_tokens) == (5 * 10**9, 400)
        with pytest.raises(InvalidInput, match="c-1"):
            book.store.hold("c-1", "acme", M, 101, 4096, book.now(), book.hold_ttl, NOBODY, 64)
        assert book.budget("acme").held == Decimal("0.5")

    def test_shrink_never_goes_below_the_minimum(self, book: Ledger) -> None:
        """When even min_completion_tokens does not fit, the call is refused."""
        book.set_budget("acme", Decimal("0.1"))
        with pytest.raises(BudgetExceeded):
            hold(book, "acme", 50, 4096, min_completion=64)
        assert hold(book, "acme", 30, 4096, min_completion=64).max_completion_tokens == 70


class TestSettleCounts:
    def test_settle_and_void_update_every_budget(self, book: Ledger) -> None:
        """A settled call counts in each matching window; a void releases each hold."""
        book.set_budget("acme", Decimal("5"))
        book.set_budget("acme", Decimal("1"), period="day", user="*")
        book.set_budget("acme", Decimal("1"), period="week", tag="f=x", hard=False)
        h = hold(book, "acme", 100, 100, user="u", tags={"f": "x"})
        assert {(w.budget.period, w.held) for w in book.budget_windows("acme")} == {
            ("month", Decimal("0.2")), ("day", Decimal("0.2")), ("week", Decimal("0.2"))}
        book.store.settle(h.call_id, Outcome("ok", 100, 300), book.now())   # overage kept
        assert {(w.budget.period, w.spent, w.held) for w in book.budget_windows("acme")} == {
            ("month", Decimal("0.4"), Decimal(0)), ("day", Decimal("0.4"), Decimal(0)),
            ("week", Decimal("0.4"), Decimal(0))}
        v = hold(book, "acme", 100, 100, user="u", tags={"f": "x"})
        book.store.settle(v.call_id, Outcome("failed"), book.now())
        assert all(w.held == 0 for w in book.budget_windows("acme"))
        assert book.spend("acme", user="u", period="day") == Decimal("0.4")
        assert_consistent(book)

    def test_expiry_releases_every_window(self, book: Ledger, clock: ManualClock) -> None:
        """An expired hold gives back what it reserved in each window."""
        book.set_budget("acme", Decimal("1"), period="day", user="*")
        hold(book, "acme", 900, 0, user="u")
        clock.advance(book.hold_ttl + timedelta(seconds=1))
        hold(book, "acme", 900, 0, user="u")                         # fits once it expired
        assert_consistent(book)

    def test_usage_rows_carry_user_and_tags(self, book: Ledger) -> None:
        """Events keep the call's user and tags; usage filters by them."""
        record(book, "acme", 10, user="alice", tags={"feature": "search", "env": "prod"})
        record(book, "acme", 10, user="bob")
        rows = list(book.usage(project="acme", tag="feature=search"))
        assert [(r.user, r.tags) for r in rows] == [("alice", "env=prod,feature=search")]
        assert [r.user for r in book.usage(user="bob")] == ["bob"]


class TestIdsPerProject:
    def test_the_same_request_id_in_two_projects_is_two_calls(self, book: Ledger) -> None:
        """Issue 9 item 4: record(request_id=X) in another project is recorded, not dropped."""
        a = book.record("acme", M, prompt_tokens=100, completion_tokens=0, request_id="req-1")
        b = book.record("beta", M, prompt_tokens=200, completion_tokens=0, request_id="req-1")
        assert (book.spend("acme"), book.spend("beta")) == (a, b) == (
            Decimal("0.1"), Decimal("0.2"))
        assert book.record("beta", M, prompt_tokens=200, completion_tokens=0,
                           request_id="req-1") == b
        with pytest.raises(InvalidInput, match="req-1"):
            book.record("beta", M, prompt_tokens=201, completion_tokens=0, request_id="req-1")
        assert_consistent(book)

    def test_a_settled_call_id_does_not_swallow_another_projects_record(self,
                                                                         book: Ledger) -> None:
        """Issue 9 item 4: a settled call's id, recorded by another project, is its own call."""
        h = book.hold("acme", M, 10, 10, call_id="shared-id")
        book.settle(h.call_id, 10, 10)
        book.record("beta", M, prompt_tokens=50, completion_tokens=0, request_id="shared-id")
        assert book.spend("beta") == Decimal("0.05")


def test_nobody_is_the_default_attribution() -> None:
    """A call with no user and no tags is attributed to its project only."""
    assert (NOBODY.user, NOBODY.tags, NOBODY.tags_text) == (None, (), None)
    assert Attribution.of("u", "b=2, a=1").tags_text == "a=1,b=2"
    assert Attribution.of(None, {"a": "x=y"}).tags_column == ",a=x=y,"
    for bad in ("a", "a=", "=b", "a=1,a=2", "a=b\x1b"):
        with pytest.raises(InvalidInput):
            Attribution.of(None, bad)
    with pytest.raises(InvalidInput):
        Attribution.of("*")


def test_window_end_agrees_with_window_bounds() -> None:
    """The hot path's window_end is the end window_bounds gives, across years and weeks."""
    from ledger.clock import window_end

    at = datetime(2025, 12, 28, 23, 59, 59, 999999, tzinfo=UTC)
    for hours in range(0, 24 * 400, 7):
        when = at + timedelta(hours=hours)
        for period in ("day", "week", "month", "total"):
            assert window_end(period, when) == window_bounds(period, window_of(period, when))[1]


class TestConcurrency:
    def test_threads_sharing_several_budgets_never_overspend_nor_deadlock(
            self, book: Ledger) -> None:
        """8 threads, overlapping budgets (month, day, "*" day, tag week): every hard window
        stays within its limit, no error but refusals, and the books balance."""
        import random
        import threading

        book.set_budget("acme", Decimal("3"))
        book.set_budget("acme", Decimal("2"), period="day")
        book.set_budget("acme", Decimal("0.3"), period="day", user="*")
        book.set_budget("acme", Decimal("1"), period="week", tag="f=x")
        errors: list[BaseException] = []
        admitted: list[int] = []
        barrier = threading.Barrier(8)

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            barrier.wait()
            for _ in range(25):
                user = rng.choice(["u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", None])
                tags = rng.choice([{"f": "x"}, {"f": "y"}, None])
                try:
                    h = hold(book, "acme", rng.randint(10, 60), rng.randint(0, 60), user=user,
                             tags=tags)
                except BudgetExceeded:
                    continue
                except BaseException as exc:  # deadlocks, "database is locked", anything
                    errors.append(exc)
                    continue
                used = rng.randint(0, h.est_prompt_tokens)
                book.store.settle(h.call_id, Outcome("ok", used, 0), book.now())
                admitted.append(used)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert admitted
        for w in book.budget_windows("acme"):
            assert w.settled_units + w.held_units <= w.budget.limit * 10**10, w.label
        assert book.spend("acme") == Decimal(sum(admitted)) / 1000
        assert_consistent(book)
