"""Who an invoice is from and who it is to: the issuer (seller) and a project's customer.

Pure rules (``make_issuer`` / ``make_customer`` check what is given); the rows live in
``ledger.store.parties``. Every text field is kept literally
(names may carry accents, CJK, ``<`` or quotes: the renderers escape them). A tax rate is a
``Decimal`` fraction between 0 and 1 with at most 6 decimal places (``Decimal("0.20")`` is
20 %); floats raise ``TypeError`` like every amount.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .errors import InvalidInput
from .money import in_money_context, to_decimal
from .names import check_name

__all__ = ["DEFAULT_PAYMENT_TERMS_DAYS", "TAX_PLACES", "Customer", "Issuer", "check_text",
           "make_customer", "make_issuer", "parse_tax_rate", "tax_rate_from_units",
           "tax_rate_to_units"]

DEFAULT_PAYMENT_TERMS_DAYS = 30
TAX_PLACES = 6
MAX_TEXT = {"name": 200, "tax_id": 100, "email": 320, "tax_name": 50, "address": 2000,
            "payment_details": 2000}


def check_text(value: object, field: str, *, required: bool = False) -> str:
    """A printable text field: a str (``None`` is empty), bounded, without NUL characters."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a str, not {type(value).__name__}")
    text = value.strip()
    if required and not text:
        raise InvalidInput(f"{field} must not be empty")
    limit = MAX_TEXT.get(field, 2000)
    if len(text) > limit:
        raise InvalidInput(f"{field} must be at most {limit} characters")
    if "\x00" in text:
        raise InvalidInput(f"{field} must not contain NUL characters")
    if field == "email" and text and ("@" not in text or any(c.isspace() for c in text)):
        raise InvalidInput(f"email must look like name@example.com, got {text!r}")
    return text


@in_money_context
def parse_tax_rate(value: object) -> Decimal:
    """A tax rate as a fraction: 0 <= rate <= 1, at most 6 decimal places."""
    rate = to_decimal(value, "tax_rate")
    if rate < 0 or rate > 1:
        raise InvalidInput(f"tax_rate is a fraction between 0 and 1 (0.20 is 20%), got {rate}")
    scaled = rate.scaleb(TAX_PLACES)
    if scaled != scaled.to_integral_value():
        raise InvalidInput(f"tax_rate has more than {TAX_PLACES} decimal places: {rate}")
    return rate


@in_money_context
def tax_rate_to_units(rate: Decimal) -> int:
    return int(parse_tax_rate(rate).scaleb(TAX_PLACES))


@in_money_context
def tax_rate_from_units(units: int) -> Decimal:
    rate = Decimal(int(units)).scaleb(-TAX_PLACES).normalize()
    return rate.quantize(Decimal("0.01")) if rate.as_tuple().exponent > -2 else rate  # type: ignore[operator]


@dataclass(frozen=True)
class Issuer:
    """The seller: printed at the top of every invoice and credit note."""

    name: str
    address: str = ""
    tax_id: str = ""
    payment_terms_days: int = DEFAULT_PAYMENT_TERMS_DAYS
    payment_details: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address, "tax_id": self.tax_id,
                "payment_terms_days": self.payment_terms_days,
                "payment_details": self.payment_details}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Issuer:
        return cls(str(data["name"]), str(data.get("address", "")), str(data.get("tax_id", "")),
                   int(data.get("payment_terms_days", DEFAULT_PAYMENT_TERMS_DAYS)),
                   str(data.get("payment_details", "")))


@dataclass(frozen=True)
class Customer:
    """A project's bill-to party and its tax rate (``None``: no tax line)."""

    project: str
    name: str
    address: str = ""
    email: str = ""
    tax_id: str = ""
    tax_rate: Decimal | None = None
    tax_name: str = "Tax"

    def to_dict(self) -> dict[str, Any]:
        return {"project": self.project, "name": self.name, "address": self.address,
                "email": self.email, "tax_id": self.tax_id,
                "tax_rate": None if self.tax_rate is None else format(self.tax_rate, "f"),
                "tax_name": self.tax_name}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Customer:
        rate = data.get("tax_rate")
        return cls(str(data["project"]), str(data["name"]), str(data.get("address", "")),
                   str(data.get("email", "")), str(data.get("tax_id", "")),
                   None if rate is None else Decimal(str(rate)),
                   str(data.get("tax_name") or "Tax"))


def check_terms(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"payment_terms_days must be an int, not {type(value).__name__}")
    if not 0 <= value <= 365:
        raise InvalidInput(f"payment_terms_days must be between 0 and 365, got {value}")
    return value


def make_issuer(name: str, address: str = "", tax_id: str = "", *,
                payment_terms_days: int = DEFAULT_PAYMENT_TERMS_DAYS,
                payment_details: str = "") -> Issuer:
    """The seller, checked (the ``Ledger`` stores it, replacing any earlier one; invoices
    issued before keep theirs)."""
    return Issuer(check_text(name, "name", required=True), check_text(address, "address"),
                  check_text(tax_id, "tax_id"), check_terms(payment_terms_days),
                  check_text(payment_details, "payment_details"))


def make_customer(project: str, name: str, address: str = "", email: str = "",
                  tax_id: str = "", *, tax_rate: object = None,
                  tax_name: str = "Tax") -> Customer:
    """``project``'s bill-to party, checked (the ``Ledger`` stores it, replacing any earlier
    one)."""
    return Customer(check_name(project, "project"), check_text(name, "name", required=True),
                    check_text(address, "address"), check_text(email, "email"),
                    check_text(tax_id, "tax_id"),
                    None if tax_rate is None else parse_tax_rate(tax_rate),
                    check_text(tax_name, "tax_name") or "Tax")
