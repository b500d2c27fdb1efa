"""The dated price catalog's pure rules: which price is in force, and what usage costs.

A price is per 1K tokens, for input, output and (optionally) cached input; the cost of a call is
the exact product ``tokens × price / 1000``, never rounded (see ``ledger.money``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from .money import from_units, price_from_units

#: RunAPI's published list: one price per model for input and output, per 1K tokens.
RUNAPI_PRICES: dict[str, str] = {"kimi-k2.5": "0.020", "kimi-k2.6": "0.020"}
#: The built-in prices are in force from the beginning of time.
BUILTIN_FROM = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Price:
    """A model's price per 1K tokens from ``effective_from`` on; amounts in ``PRICE_UNIT``."""

    model: str
    effective_from: datetime
    input_units: int
    output_units: int
    cached_units: int | None = None

    @property
    def input_per_1k(self) -> Decimal:
        return price_from_units(self.input_units)

    @property
    def output_per_1k(self) -> Decimal:
        return price_from_units(self.output_units)

    @property
    def cached_input_per_1k(self) -> Decimal | None:
        return None if self.cached_units is None else price_from_units(self.cached_units)

    def cost_units(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> int:
        return cost_units(
            self.input_units, self.output_units, self.cached_units,
            prompt_tokens, completion_tokens, cached_tokens,
        )

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> Decimal:
        """The exact cost of a usage at this price."""
        return from_units(self.cost_units(prompt_tokens, completion_tokens, cached_tokens))


def cost_units(
    input_units: int,
    output_units: int,
    cached_units: int | None,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
) -> int:
    """Exact cost in ``UNIT`` (10⁻¹⁰ USD): tokens × price-units, no division, no rounding.

    ``prompt_tokens`` counts all input tokens; ``cached_tokens`` of them are billed at the cached
    price when the model has one (else at the input price).
    """
    cached = min(max(cached_tokens, 0), prompt_tokens)
    cached_price = input_units if cached_units is None else cached_units
    return (prompt_tokens - cached) * input_units + cached * cached_price + completion_tokens * output_units


def price_in_force(catalog: Iterable[Price], model: str, at: datetime) -> Price | None:
    """The newest price of ``model`` whose ``effective_from`` is at or before ``at``."""
    best: Price | None = None
    for price in catalog:
        eligible = price.model == model and price.effective_from <= at
        if eligible and (best is None or price.effective_from > best.effective_from):
            best = price
    return best


def worst_case_units(price: Price, prompt_tokens: int, max_completion_tokens: int) -> int:
    """The most a call can cost: every prompt token uncached, every allowed output token used."""
    return prompt_tokens * price.input_units + max_completion_tokens * price.output_units
