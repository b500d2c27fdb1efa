"""Money is exact, floats are refused, and the pricing math is linear, monotone and dated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import InvalidInput
from ledger.money import (
    MAX_TOKENS,
    from_units,
    money_str,
    price_from_units,
    price_to_units,
    round_half_even_to_cent,
    to_decimal,
    to_units,
)
from ledger.pricing import Price, price_in_force

tokens = st.integers(min_value=0, max_value=MAX_TOKENS)
price_units = st.integers(min_value=0, max_value=10**10)
instants = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
)


class TestMoneyAtTheDoor:
    def test_float_is_refused(self) -> None:
        """A float never becomes money: TypeError names the field."""
        with pytest.raises(TypeError, match="limit"):
            to_decimal(0.1, "limit")

    def test_bool_is_refused(self) -> None:
        """True is not one dollar."""
        with pytest.raises(TypeError):
            to_decimal(True)

    @pytest.mark.parametrize("bad", ["abc", "NaN", "Infinity", ""])
    def test_non_numbers_are_refused(self, bad: str) -> None:
        """Garbage, NaN and infinities are InvalidInput (a ValueError)."""
        with pytest.raises(ValueError):
            to_decimal(bad)

    def test_more_precision_than_storable_is_refused(self) -> None:
        """An amount finer than 10^-10 USD cannot be stored exactly, so it is refused."""
        with pytest.raises(InvalidInput):
            to_units(Decimal("0.00000000001"))

    def test_prices_keep_seven_places(self) -> None:
        """A price per 1K keeps 7 decimal places exactly and refuses an 8th."""
        assert price_from_units(price_to_units("0.0000001")) == Decimal("0.0000001")
        with pytest.raises(InvalidInput):
            price_to_units("0.00000001")

    @given(st.integers(min_value=-(10**18), max_value=10**18))
    def test_units_round_trip(self, units: int) -> None:
        """Units to Decimal and back is the identity."""
        assert to_units(from_units(units)) == units

    def test_money_str_is_plain(self) -> None:
        """Exact strings never use exponent notation."""
        assert money_str(from_units(1)) == "0.0000000001"
        assert money_str(from_units(123_400_000_000)) == "12.34"
        assert money_str(from_units(10**11)) == "10.00"


class TestCostMath:
    @given(price_units, price_units, tokens, tokens, tokens, tokens)
    def test_cost_is_linear(self, pin: int, pout: int, a_in: int, a_out: int, b_in: int,
                            b_out: int) -> None:
        """cost(a) + cost(b) == cost(a + b), exactly."""
        p = Price("m", datetime(2026, 1, 1, tzinfo=UTC), pin, pout)
        assert p.cost(a_in, a_out) + p.cost(b_in, b_out) == p.cost(a_in + b_in, a_out + b_out)

    @given(price_units, price_units, tokens, tokens, st.integers(0, 1000), st.integers(0, 1000))
    def test_cost_is_monotone(self, pin: int, pout: int, t_in: int, t_out: int, more_in: int,
                              more_out: int) -> None:
        """More tokens never cost less."""
        p = Price("m", datetime(2026, 1, 1, tzinfo=UTC), pin, pout)
        assert p.cost(t_in + more_in, t_out + more_out) >= p.cost(t_in, t_out)

    @given(price_units, price_units)
    def test_zero_tokens_cost_zero(self, pin: int, pout: int) -> None:
        """No tokens, no charge, whatever the price."""
        assert Price("m", datetime(2026, 1, 1, tzinfo=UTC), pin, pout).cost(0, 0) == 0

    @given(tokens, tokens)
    def test_cost_is_tokens_times_price_over_1000(self, t_in: int, t_out: int) -> None:
        """The stored integer cost equals the textbook Decimal formula exactly."""
        p = Price("m", datetime(2026, 1, 1, tzinfo=UTC),
                  price_to_units("0.020"), price_to_units("0.0615"))
        expected = Decimal(t_in) * Decimal("0.020") / 1000 + Decimal(t_out) * Decimal("0.0615") / 1000
        assert p.cost(t_in, t_out) == expected

    def test_cached_tokens_use_the_cached_price(self) -> None:
        """Cached input is billed at the cached price, the rest of the prompt at the input price."""
        p = Price("m", datetime(2026, 1, 1, tzinfo=UTC), price_to_units("0.010"),
                  price_to_units("0.030"), price_to_units("0.001"))
        assert p.cost(1000, 1000, cached_tokens=400) == Decimal("0.006") + Decimal("0.0004") + Decimal("0.03")


class TestRounding:
    @given(st.integers(min_value=0, max_value=10**16))
    def test_half_even_moves_at_most_half_a_cent(self, units: int) -> None:
        """Rounding an invoice line moves it by at most half a cent."""
        exact = from_units(units)
        assert abs(round_half_even_to_cent(exact) - exact) <= Decimal("0.005")

    def test_ties_go_to_even(self) -> None:
        """Half a cent rounds to the even cent (banker's rounding), both ways."""
        assert round_half_even_to_cent(Decimal("0.125")) == Decimal("0.12")
        assert round_half_even_to_cent(Decimal("0.135")) == Decimal("0.14")


class TestPriceInForce:
    @given(st.lists(instants, min_size=1, max_size=8, unique=True), instants)
    def test_newest_effective_price_wins(self, starts: list[datetime], at: datetime) -> None:
        """The price used at any instant is the newest one whose effective_from <= that instant."""
        catalog = [Price("m", s, i, i) for i, s in enumerate(starts)]
        found = price_in_force(catalog, "m", at)
        eligible = [p for p in catalog if p.effective_from <= at]
        if not eligible:
            assert found is None
        else:
            assert found == max(eligible, key=lambda p: p.effective_from)

    def test_store_agrees_with_the_pure_rule(self, book) -> None:  # type: ignore[no-untyped-def]
        """The database lookup picks the same price as ``price_in_force`` at every instant."""
        base = datetime(2026, 11, 1, tzinfo=UTC)
        for day, price in ((0, "0.010"), (10, "0.020"), (20, "0.015")):
            book.set_price("m", Decimal(price), effective_from=base + timedelta(days=day))
        catalog = [p for p in book.prices() if p.model == "m"]
        for hours in range(0, 24 * 30, 7):
            at = base + timedelta(hours=hours)
            assert book.price("m", at=at) == price_in_force(catalog, "m", at)
