"""The one way to make an amount of money, and the only rounding rule.

* Money is ``decimal.Decimal`` from end to end. ``to_decimal`` refuses floats with ``TypeError``
  (a float has already lost the exact value), and NaN or infinities with ``InvalidInput``.
* In the database an amount is an integer count of ``UNIT`` (10⁻¹⁰ USD), a price an integer
  count of ``PRICE_UNIT`` (10⁻⁷ USD) per 1K tokens. Then the cost of a call is the exact
  integer product ``tokens × price_units`` in ``UNIT`` — no division, SQL sums stay exact and
  fast on every backend, and 64-bit totals hold up to $922,337,203 per row.
* Amounts are never rounded while stored or summed. ``round_half_even_to_cent`` is the single
  place that rounds, used only when an invoice line is rendered.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from .errors import InvalidInput

AMOUNT_PLACES = 10
PRICE_PLACES = 7
UNIT = Decimal(1).scaleb(-AMOUNT_PLACES)          # 0.0000000001 USD
PRICE_UNIT = Decimal(1).scaleb(-PRICE_PLACES)     # 0.0000001 USD per 1K tokens
CENT = Decimal("0.01")
MAX_TOKENS = 100_000_000                          # per call; larger counts are not believed
MAX_PRICE_PER_1K = Decimal(1000)
MAX_AMOUNT = Decimal(100_000_000)                 # a budget limit, at most
CURRENCY = "USD"


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


def to_units(value: object, field: str = "amount") -> int:
    """An amount as an exact integer count of UNIT; more than 10 decimal places is refused."""
    amount = to_decimal(value, field)
    scaled = amount.scaleb(AMOUNT_PLACES)
    if scaled != scaled.to_integral_value():
        raise InvalidInput(f"{field} has more than {AMOUNT_PLACES} decimal places: {amount}")
    return int(scaled)


def from_units(units: int) -> Decimal:
    """The exact Decimal for an integer count of UNIT, with at least cent precision."""
    return _tidy(Decimal(int(units)).scaleb(-AMOUNT_PLACES))


def price_to_units(value: object, field: str = "price per 1K tokens") -> int:
    """A price per 1K tokens as an integer count of PRICE_UNIT (at most 7 decimal places)."""
    price = to_decimal(value, field)
    if price < 0:
        raise InvalidInput(f"{field} must not be negative, got {price}")
    if price > MAX_PRICE_PER_1K:
        raise InvalidInput(f"{field} must be at most {MAX_PRICE_PER_1K}, got {price}")
    scaled = price.scaleb(PRICE_PLACES)
    if scaled != scaled.to_integral_value():
        raise InvalidInput(f"{field} has more than {PRICE_PLACES} decimal places: {price}")
    return int(scaled)


def price_from_units(units: int) -> Decimal:
    """The exact Decimal price per 1K tokens for an integer count of PRICE_UNIT."""
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
    return to_decimal(amount).quantize(CENT, rounding=ROUND_HALF_EVEN)


def _tidy(value: Decimal, places: int = 2) -> Decimal:
    """Drop trailing zeros beyond ``places`` decimals without changing the value."""
    exact = value.normalize()
    if exact.as_tuple().exponent > -places:  # type: ignore[operator]
        return value.quantize(Decimal(1).scaleb(-places))
    return exact


def money_str(amount: Decimal) -> str:
    """An exact amount as a plain decimal string ("0.0000000001", never "1E-10")."""
    return format(to_decimal(amount), "f")
