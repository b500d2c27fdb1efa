"""``ledger issuer`` and ``ledger customer``: who invoices are from and to."""

from __future__ import annotations

import sys

import click

from ..render import json as render_json
from .options import CliState, format_option, pass_state


@click.group()
def issuer() -> None:
    """The seller printed on every invoice and credit note.

    \b
    Example:
      ledger issuer set --name "Seller Ltd" --address "1 Main St, London" --tax-id GB123
      ledger issuer show --format json
    """


@issuer.command("set")
@click.option("--name", required=True, help="The seller's legal name.")
@click.option("--address", default="", help="Postal address (use \\n for new lines).")
@click.option("--tax-id", default="", help="VAT / tax registration number.")
@click.option("--payment-terms-days", type=click.IntRange(0, 365), default=30,
              show_default=True, help="Due date = issue date + this many days.")
@click.option("--payment-details", default="", help="How to pay (bank account, IBAN...).")
@pass_state
def issuer_set(state: CliState, name: str, address: str, tax_id: str,
               payment_terms_days: int, payment_details: str) -> None:
    """Record the seller; invoices issued from now on carry it.

    \b
    Example:
      ledger issuer set --name "Seller Ltd" --payment-terms-days 14 --payment-details "IBAN ..."
    """
    state.open().set_issuer(name=name, address=_lines(address), tax_id=tax_id,
                            payment_terms_days=payment_terms_days,
                            payment_details=_lines(payment_details))
    click.echo(f"issuer set: {name}")


@issuer.command("show")
@format_option("table", "json")
@pass_state
def issuer_show(state: CliState, fmt: str) -> None:
    """Show the recorded seller.

    \b
    Example:
      ledger issuer show
    """
    who = state.open().issuer()
    data = None if who is None else who.to_dict()
    if fmt == "json":
        render_json.write({"issuer": data}, sys.stdout)
    elif data is None:
        click.echo("no issuer recorded (ledger issuer set --name ...)")
    else:
        for key, value in data.items():
            click.echo(f"{key}: {value}")


@click.group()
def customer() -> None:
    """A project's bill-to party and tax rate.

    \b
    Example:
      ledger customer set acme --name "Acme Inc." --email billing@acme.test --tax-rate 0.20
      ledger customer show acme
    """


@customer.command("set")
@click.argument("project")
@click.option("--name", required=True, help="The customer's legal name.")
@click.option("--address", default="", help="Postal address (use \\n for new lines).")
@click.option("--email", default="", help="Where invoices go.")
@click.option("--tax-id", default="", help="The customer's VAT / tax number.")
@click.option("--tax-rate", default=None, metavar="RATE",
              help="Tax as a fraction (0.20 is 20%); none: no tax line.")
@click.option("--tax-name", default="Tax", show_default=True, help="The tax's name (VAT, GST...).")
@pass_state
def customer_set(state: CliState, project: str, name: str, address: str, email: str,
                 tax_id: str, tax_rate: str | None, tax_name: str) -> None:
    """Record PROJECT's customer; invoices issued from now on bill it.

    \b
    Example:
      ledger customer set acme --name "Acme Inc." --tax-rate 0.20 --tax-name VAT
    """
    state.open().set_customer(project, name=name, address=_lines(address), email=email,
                              tax_id=tax_id,
                              tax_rate=tax_rate,
                              tax_name=tax_name)
    click.echo(f"customer set for {project}: {name}")


@customer.command("show")
@click.argument("project")
@format_option("table", "json")
@pass_state
def customer_show(state: CliState, project: str, fmt: str) -> None:
    """Show PROJECT's customer record.

    \b
    Example:
      ledger customer show acme --format json
    """
    who = state.open().customer(project)
    data = None if who is None else who.to_dict()
    if fmt == "json":
        render_json.write({"customer": data}, sys.stdout)
    elif data is None:
        click.echo(f"no customer recorded for {project}")
    else:
        for key, value in data.items():
            click.echo(f"{key}: {value}")


def _lines(text: str) -> str:
    return text.replace("\\n", "\n")

