"""The one way to make an amount of money, and the only rounding rule.

* Money is ``decimal.Decimal`` from end to end. ``to_decimal`` refuses floats with ``TypeError``
  (a float has already lost the exact value), and NaN or infinities with ``InvalidInput``.
* In the database an amount is an integer count of ``UNIT`` (10⁻¹⁰ USD), a price an integer
  count of ``PRICE_UNIT`` (10⁻⁷ USD) per 1K tokens. Then the cost of a call is the exact
  integer product ``tokens × price_units`` in ``UNIT`` — no division, SQL sums stay exact and
  fast on every backend, and 64-bit totals hold up to $922,337,203 per row.
* Amounts are never rounded while stored or summed. ``round_half_even_to_cent`` is the single
  place that rounds, used only when an invoice line is rendered.
* Every computation on money runs in the ledger's own decimal context (``money_context()``:
  60 significant digits, half-even), never the caller's: a caller's ``getcontext().prec = 6``
  or ``rounding = ROUND_DOWN`` changes nothing. Conversions to stored integers run in
  ``EXACT`` (any rounding at all traps), so an input with more digits than can be stored
  exactly is refused with ``InvalidInput``, never rounded. A stored integer is at most
  ``MAX_UNITS`` (2⁶³ − 1, a signed 64-bit column).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DecimalException,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
    localcontext,
)
from typing import ParamSpec, TypeVar

from .errors import InvalidInput

P = ParamSpec("P")
R = TypeVar("R")

AMOUNT_PLACES = 10
PRICE_PLACES = 7
UNIT = Decimal(1).scaleb(-AMOUNT_PLACES)          # 0.0000000001 USD
PRICE_UNIT = Decimal(1).scaleb(-PRICE_PLACES)     # 0.0000001 USD per 1K tokens
CENT = Decimal("0.01")
MAX_TOKENS = 100_000_000                          # per call; larger counts are not believed
MAX_PRICE_PER_1K = Decimal(1000)
MAX_AMOUNT = Decimal(100_000_000)                 # a budget limit, at most
CURRENCY = "USD"
MAX_UNITS = 2**63 - 1                             # a signed 64-bit SQL integer
#: The ledger's decimal context for money: enough digits for any 64-bit amount many times
#: over, half-even, and no silent NaN or infinity.
MONEY = Context(prec=60, rounding=ROUND_HALF_EVEN, Emax=999_999, Emin=-999_999,
                traps=[InvalidOperation, DivisionByZero, Overflow])
#: The same, but any rounding at all traps: conversions that must be exact.
EXACT = Context(prec=60, rounding=ROUND_HALF_EVEN, Emax=999_999, Emin=-999_999,
                traps=[InvalidOperation, DivisionByZero, Overflow, Inexact, Rounded])


def money_context() -> AbstractContextManager[Context]:
    """``with money_context():`` — the ledger's own decimal context, whatever the caller's."""
    return localcontext(MONEY)


def in_money_context(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` in :func:`money_context` (not for generators: wrap what they compute)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with localcontext(MONEY):
            return fn(*args, **kwargs)

    return wrapper


def to_decimal(value: object, field: str = "amount") -> Decimal:
    """Make a Decimal from a Decimal, int or numeric string; floats raise TypeError."""
    if isinstance(value, (bool, float)):
        raise TypeError(
            f"{field} must be a Decimal, int or str, not {type(value).__name__} "
            f"(floats cannot hold money exactly: use Decimal('...'))"
        )
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip().lstrip("$"))
        except InvalidOperation:
            raise InvalidInput(f"{field} must be a number, got {value!r}") from None
    else:
        raise TypeError(f"{field} must be a Decimal, int or str, not {type(value).__name__}")
    if not result.is_finite():
        raise InvalidInput(f"{field} must be a finite number, got {value!r}")
    return result


def _scaled(amount: Decimal, places: int, field: str) -> int:
    """``amount × 10^places`` as an exact int; refused if not exact or not storable."""
    try:
        with localcontext(EXACT):
            scaled = amount.scaleb(places)
            integral = scaled == scaled.to_integral_value()
    except DecimalException:
        raise InvalidInput(f"{field} has more digits than the ledger can store exactly: "
                           f"{amount}") from None
    if not integral:
        raise InvalidInput(f"{field} has more than {places} decimal places: {amount}")
    units = int(scaled)
    if abs(units) > MAX_UNITS:
        raise InvalidInput(f"{field} is too large to be stored exactly: {amount}")
    return units


def to_units(value: object, field: str = "amount") -> int:
    """An amount as an exact integer count of UNIT; more than 10 decimal places is refused."""
    return _scaled(to_decimal(value, field), AMOUNT_PLACES, field)


def from_units(units: int) -> Decimal:
    """The exact Decimal for an integer count of UNIT, with at least cent precision."""
    with localcontext(MONEY):
        return _tidy(Decimal(int(units)).scaleb(-AMOUNT_PLACES))


def price_to_units(value: object, field: str = "price per 1K tokens") -> int:
    """A price per 1K tokens as an integer count of PRICE_UNIT (at most 7 decimal places)."""
    price = to_decimal(value, field)
    if price < 0:
        raise InvalidInput(f"{field} must not be negative, got {price}")
    if price > MAX_PRICE_PER_1K:
        raise InvalidInput(f"{field} must be at most {MAX_PRICE_PER_1K}, got {price}")
    return _scaled(price, PRICE_PLACES, field)


def price_from_units(units: int) -> Decimal:
    """The exact Decimal price per 1K tokens for an integer count of PRICE_UNIT."""
    with localcontext(MONEY):
        return _tidy(Decimal(int(units)).scaleb(-PRICE_PLACES), places=3)


def check_tokens(value: object, field: str) -> int:
    """A token count: a non-negative int no larger than MAX_TOKENS."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field} must be an int, not {type(value).__name__}")
    if value < 0:
        raise InvalidInput(f"{field} must not be negative, got {value}")
    if value > MAX_TOKENS:
        raise InvalidInput(f"{field} is implausibly large ({value} > {MAX_TOKENS})")
    return value


def round_half_even_to_cent(amount: Decimal) -> Decimal:
    """The only rounding in the ledger: half-even (banker's) to the cent, for invoice lines."""
    with localcontext(MONEY):
        return to_decimal(amount).quantize(CENT, rounding=ROUND_HALF_EVEN)


def _tidy(value: Decimal, places: int = 2) -> Decimal:
    """Drop trailing zeros beyond ``places`` decimals without changing the value (call it in
    :func:`money_context`: ``normalize`` and ``quantize`` use the context)."""
    exact = value.normalize()
    if exact.as_tuple().exponent > -places:  # type: ignore[operator]
        return value.quantize(Decimal(1).scaleb(-places))
    return exact


def money_str(amount: Decimal) -> str:
    """An exact amount as a plain decimal string ("0.0000000001", never "1E-10")."""
    return format(to_decimal(amount), "f")


_UNIT_SCALE = 10**AMOUNT_PLACES


def units_str(units: int) -> str:
    """``money_str(from_units(units))`` without a Decimal: the exact decimal string of an
    integer count of UNIT (at least two decimals, trailing zeros beyond them dropped), by
    integer arithmetic alone (for exports of millions of rows)."""
    whole, frac = divmod(-units if units < 0 else units, _UNIT_SCALE)
    digits = f"{frac:010d}".rstrip("0")
    if len(digits) < 2:
        digits = (digits + "00")[:2]
    return f"{'-' if units < 0 else ''}{whole}.{digits}"
