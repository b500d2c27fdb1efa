"""``ledger invoice``: monthly invoices (issued, frozen, or drafted), the list, and voids."""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from ..invoice import CreditNote, Invoice, check_by, issued_invoices, projects_to_invoice
from ..invoice import invoice as make_invoice
from ..money import money_context, money_str
from ..render import csv as render_csv
from ..render import json as render_json
from ..render import table as render_table
from .options import (
    CliState,
    format_option,
    month_option,
    output_option,
    pass_state,
    show_progress,
    text_output,
    tracked,
    write_bytes,
)


class InvoiceGroup(click.Group):
    """``ledger invoice PROJECT ...`` issues (the ``issue`` subcommand is the default);
    ``ledger invoice list`` and ``ledger invoice void`` are subcommands. A project named like
    a subcommand is issued with ``ledger invoice issue list --month ...``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or args[0] not in self.commands:  # `ledger invoice --help`: issue's help
            args = ["issue", *args]
        return super().parse_args(ctx, args)


@click.group(cls=InvoiceGroup)
def invoice() -> None:
    """Issue, list and void invoices.

    `ledger invoice PROJECT --month M` issues PROJECT's invoice for month M (see `ledger
    invoice issue --help`); `ledger invoice list` shows every invoice; `ledger invoice void
    NUMBER --reason TEXT` cancels one with a credit note.

    \b
    Example:
      ledger invoice acme --month 2026-11 --format pdf --output acme-2026-11.pdf
      ledger invoice list
      ledger invoice void INV-000005 --reason "billed the wrong project"
    """


@invoice.command("issue")
@click.argument("project", required=False)
@click.option("--all", "all_projects", is_flag=True,
              help="Every project with something to bill for the month.")
@month_option(required=True, help_text="The UTC calendar month to invoice.")
@format_option("table", "json", "csv", "html", "pdf")
@output_option("Write to FILE instead of standard output (needed for pdf on a terminal).")
@click.option("--draft", is_flag=True,
              help="Show what would be billed now, without issuing (never frozen, no number); "
                   "works for any month.")
@click.option("--include-empty", is_flag=True,
              help="Number and freeze a $0.00 invoice too (otherwise it is shown unnumbered).")
@click.option("--by", "by", metavar="user|tag|tag:KEY",
              help="Split the lines per end user, per set of tags, or per value of tag KEY "
                   "(the total unchanged).")
@pass_state
def issue(state: CliState, project: str | None, all_projects: bool, month: str, fmt: str,
          output: Path | None, draft: bool, include_empty: bool, by: str | None) -> None:
    """Issue PROJECT's invoice for a month that is over (or every project's, with --all).

    The document has the issuer and bill-to blocks (`ledger issuer set`, `ledger customer
    set`), the invoice number, issue and due dates, the billing period, one line per model
    and unit price with its dates and its input, cached-input and output sub-lines, the
    subtotal, the customer's tax (rounded half-even once on the subtotal) and the total.
    Issuing freezes the invoice: issuing it again returns the same document, and usage
    recorded later for that month appears as an adjustment line on the project's next
    invoice. A month that is not over, a future month and a project with no usage and no
    customer record are refused; --draft always works and never freezes. --by user, --by
    tag or --by tag:KEY splits every line per end user, per set of tags or per value of one
    tag; each model's split lines add up to its line, and the total is unchanged. See also
    `ledger invoice list` and `ledger invoice void NUMBER --reason TEXT` (a credit note).

    \b
    Example:
      ledger invoice acme --month 2026-11
      ledger invoice acme --month 2026-11 --format pdf --output acme-2026-11.pdf
      ledger invoice --all --month 2026-11 --format json
      ledger invoice acme --month 2026-12 --draft
      ledger invoice acme --month 2026-11 --by user
      ledger invoice acme --month 2026-11 --by tag:team --format csv
    """
    if all_projects == (project is not None):
        raise click.UsageError("give a PROJECT or --all (not both)")
    by = check_by(by)
    book = state.open()
    projects = projects_to_invoice(book.store, month) if all_projects else [project or ""]
    now = book.now()
    invs = [make_invoice(book.store, now, p, month, draft=draft, include_empty=include_empty,
                         by=by)
            for p in tracked(projects, f"invoices for {month}", total=len(projects),
                             enabled=all_projects and show_progress(output))]
    if not draft:
        for inv in invs:
            if inv.number is None:
                click.echo(f"note: nothing to bill for {inv.project} in {month} ($0.00): not "
                           "numbered (--include-empty issues a zero invoice)", err=True)
    _write(invs, month, fmt, output, single=not all_projects)


def _write(invs: list[Invoice], month: str, fmt: str, output: Path | None,
           single: bool) -> None:
    if fmt == "pdf":
        from ..render import pdf

        write_bytes(output, pdf.invoices(invs))
        return
    with text_output(output) as out:
        if fmt == "json":
            if single:
                render_json.write(invs[0].to_dict(), out)
            else:
                with money_context():
                    total = sum((i.total for i in invs), Decimal("0.00"))
                render_json.write({"month": month, "invoices": [i.to_dict() for i in invs],
                                   "total": money_str(total)}, out)
        elif fmt == "csv":
            render_csv.invoices(out, invs)
        elif fmt == "html":
            from ..render import html

            out.write(html.invoice(invs[0]) if single else html.invoices(invs, month))
        else:
            console = render_table.console(out, terminal=None if output is None else False)
            for inv in invs:
                console.print(render_table.invoice(inv))
            if not invs:
                print(f"nothing to invoice for {month}", file=sys.stderr)


@invoice.command("list")
@month_option(help_text="Only invoices for this month.")
@format_option("table", "json", "csv")
@output_option()
@pass_state
def list_(state: CliState, month: str | None, fmt: str, output: Path | None) -> None:
    """Every invoice: number, project, month, issue and due dates, total and state
    (issued, or void with the credit note that cancelled it), by number.

    \b
    Example:
      ledger invoice list
      ledger invoice list --month 2026-11 --format json
    """
    invs = issued_invoices(state.open().store, month, include_void=True)
    rows: list[dict[str, Any]] = [{
        "number": i.label, "project": i.project, "month": i.month,
        "issued_at": i.issued_at.isoformat(),
        "due_at": None if i.due_at is None else i.due_at.isoformat(),
        "total": money_str(i.total), "currency": i.currency, "state": i.state,
        "credit_note": i.credit_note} for i in invs]
    with text_output(output) as out:
        if fmt == "json":
            render_json.write({"invoices": rows}, out)
        elif fmt == "csv":
            render_csv.write_rows(out, ("number", "project", "month", "issued_at", "due_at",
                                        "total", "currency", "state", "credit_note"),
                                  ([r[k] for k in r] for r in rows))
        else:
            console = render_table.console(out, terminal=None if output is None else False)
            console.print(render_table.invoice_list(invs))


@invoice.command("void")
@click.argument("number")
@click.option("--reason", required=True, help="Why the invoice is cancelled (printed on the "
                                              "credit note).")
@format_option("table", "json", "csv", "html", "pdf")
@output_option("Write the credit note to FILE (needed for pdf on a terminal).")
@pass_state
def void(state: CliState, number: str, reason: str, fmt: str, output: Path | None) -> None:
    """Void invoice NUMBER with a credit note (its own sequence, CN-000001...) for its full
    amount. The month can then be issued again, and the late usage the invoice billed goes
    back to the pending pool.

    \b
    Example:
      ledger invoice void INV-000005 --reason "billed the wrong project"
      ledger invoice void INV-000005 --reason typo --format pdf --output CN.pdf
    """
    note = state.open().void_invoice(number, reason=reason)
    write_credit_note(note, fmt, output)


def write_credit_note(note: CreditNote, fmt: str, output: Path | None) -> None:
    if fmt == "pdf":
        from ..render import pdf

        write_bytes(output, pdf.credit_note(note))
        return
    with text_output(output) as out:
        if fmt == "json":
            render_json.write(note.to_dict(), out)
        elif fmt == "csv":
            render_csv.credit_note(out, note)
        elif fmt == "html":
            from ..render import html

            out.write(html.credit_note(note))
        else:
            console = render_table.console(out, terminal=None if output is None else False)
            console.print(render_table.credit_note(note))
