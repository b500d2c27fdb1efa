"""The rows behind ``ledger.parties``: the issuer (one row, ``id = 1``) and customers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select

from ..parties import Customer, Issuer, tax_rate_from_units, tax_rate_to_units
from .ops import Store, _translate
from .schema import customers, issuer, to_micros

NO_TAX = -1  # tax_rate column value for "no tax rate recorded"


@_translate
def set_issuer(store: Store, who: Issuer, now: datetime) -> None:
    with store.write() as conn:
        conn.execute(delete(issuer).where(issuer.c.id == 1))
        conn.execute(issuer.insert().values(
            id=1, name=who.name, address=who.address, tax_id=who.tax_id,
            payment_terms_days=who.payment_terms_days, payment_details=who.payment_details,
            updated_at=to_micros(now)))


@_translate
def get_issuer(store: Store) -> Issuer | None:
    with store.read() as conn:
        row = conn.execute(select(issuer.c.name, issuer.c.address, issuer.c.tax_id,
                                  issuer.c.payment_terms_days, issuer.c.payment_details)
                           .where(issuer.c.id == 1)).first()
    return None if row is None else Issuer(row[0], row[1], row[2], int(row[3]), row[4])


@_translate
def set_customer(store: Store, who: Customer, now: datetime) -> None:
    rate = NO_TAX if who.tax_rate is None else tax_rate_to_units(who.tax_rate)
    with store.write() as conn:
        conn.execute(delete(customers).where(customers.c.project == who.project))
        conn.execute(customers.insert().values(
            project=who.project, name=who.name, address=who.address, email=who.email,
            tax_id=who.tax_id, tax_rate=rate, tax_name=who.tax_name,
            updated_at=to_micros(now)))


@_translate
def get_customer(store: Store, project: str) -> Customer | None:
    with store.read() as conn:
        row = conn.execute(select(customers.c.name, customers.c.address, customers.c.email,
                                  customers.c.tax_id, customers.c.tax_rate,
                                  customers.c.tax_name)
                           .where(customers.c.project == project)).first()
    if row is None:
        return None
    rate = None if int(row[4]) == NO_TAX else tax_rate_from_units(int(row[4]))
    return Customer(project, row[0], row[1], row[2], row[3], rate, row[5])
