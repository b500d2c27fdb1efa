"""Chart axes: nice round ticks (1, 2 or 5 × 10^k) from zero to just above the highest value.

Pure ``Decimal`` arithmetic in the ledger's money context: no floats, no caller's context.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

from ..money import in_money_context

__all__ = ["nice_step", "nice_ticks", "tick_label"]

MANTISSAS = (Decimal(1), Decimal(2), Decimal(5), Decimal(10))
SMALLEST = Decimal("0.01")  # a cent: an axis of money never needs finer ticks


@in_money_context
def nice_step(span: Decimal, intervals: int = 4) -> Decimal:
    """The smallest 1, 2 or 5 × 10^k that is at least ``span / intervals`` (and at least a
    cent), so that ``intervals`` such steps reach ``span``."""
    if intervals < 1:
        raise ValueError("intervals must be at least 1")
    raw = max(span / intervals, SMALLEST)
    power = Decimal(1).scaleb(raw.adjusted())          # 10^k <= raw < 10^(k+1)
    for mantissa in MANTISSAS:
        step = (mantissa * power).normalize()
        if step >= raw:
            return step
    raise AssertionError("unreachable: 10 × 10^k > raw")  # pragma: no cover


@in_money_context
def nice_ticks(high: Decimal, intervals: int = 4) -> list[Decimal]:
    """Ticks 0, s, 2s, … up to the first multiple of the nice step ``s`` at or above
    ``high`` (a value on the top tick gets one more, so nothing is drawn on the frame)."""
    top = max(high, Decimal(0))
    step = nice_step(top, intervals)
    count = int((top / step).to_integral_value(rounding=ROUND_CEILING))
    if count * step <= top:
        count += 1
    places = Decimal(1).scaleb(min(_exponent(step), 0))  # plain digits, never "1.5E+3"
    return [(step * i).quantize(places) for i in range(count + 1)]


def _exponent(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return exponent


@in_money_context
def tick_label(value: Decimal, step: Decimal) -> str:
    """``$1,500``, ``$0.05``: every tick of one axis with the step's decimals, grouped."""
    return "$" + format(value.quantize(Decimal(1).scaleb(min(_exponent(step), 0))), ",f")
