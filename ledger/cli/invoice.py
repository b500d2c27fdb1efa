"""``ledger invoice``: monthly invoices, issued (frozen) or drafted."""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path

import click

from ..clock import month_bounds
from ..invoice import Invoice, is_issued, projects_to_invoice
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


@click.command()
@click.argument("project", required=False)
@click.option("--all", "all_projects", is_flag=True,
              help="Every project with something to bill for the month.")
@month_option(required=True, help_text="The UTC calendar month to invoice.")
@format_option("table", "json", "csv", "html", "pdf")
@output_option("Write to FILE instead of standard output (needed for pdf on a terminal).")
@click.option("--draft", is_flag=True,
              help="Show what would be billed now, without issuing (never frozen, no number).")
@pass_state
def invoice(state: CliState, project: str | None, all_projects: bool, month: str, fmt: str,
            output: Path | None, draft: bool) -> None:
    """Issue PROJECT's invoice for a month (or every project's, with --all).

    One line per model and unit price (a mid-month price change gives two lines, each with
    its price), with tokens in and out; each amount is rounded half-even to the cent and the
    total is the sum of the lines. Invoices are numbered in sequence. Issuing freezes the
    invoice: issuing it again returns the same document, and usage recorded later for that
    month appears as an adjustment line on the project's next invoice. --draft never
    freezes. Failed and refused calls are never charged.

    \b
    Example:
      ledger invoice acme --month 2026-11
      ledger invoice acme --month 2026-11 --format pdf --output acme-2026-11.pdf
      ledger invoice --all --month 2026-11 --format json
      ledger invoice acme --month 2026-12 --draft
    """
    if all_projects == (project is not None):
        raise click.UsageError("give a PROJECT or --all (not both)")
    book = state.open()
    projects = projects_to_invoice(book.store, month) if all_projects else [project or ""]
    unfinished = book.now() < month_bounds(month)[1]
    freezing = not draft and unfinished and any(not is_issued(book.store, p, month) for p in projects
                                                if p)
    invs = [make_invoice(book.store, book.now(), p, month, draft=draft)
            for p in tracked(projects, f"invoices for {month}", total=len(projects),
                             enabled=all_projects and show_progress(output))]
    if freezing:
        click.echo(f"note: {month} is not over yet; usage recorded from now on for {month} "
                   "will be billed as an adjustment on the next invoice (--draft previews "
                   "without freezing)", err=True)
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
