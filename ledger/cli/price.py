"""``ledger price``: the dated price catalog."""

from __future__ import annotations

import click

from ..money import money_str
from ..render import csv as render_csv
from ..render import json as render_json
from ..render import table as render_table
from .options import CliState, echo, format_option, parse_instant, pass_state, stdout_text


@click.group()
def price() -> None:
    """Set and list model prices (USD per 1K tokens, dated).

    \b
    Example:
      ledger price set kimi-k2.5 0.020
      ledger price list --format json
    """


@price.command("set")
@click.argument("model")
@click.argument("per_1k", required=False, metavar="[PER_1K]")
@click.option("--input-per-1k", metavar="X", help="Price of 1K input (prompt) tokens.")
@click.option("--output-per-1k", metavar="Y", help="Price of 1K output (completion) tokens.")
@click.option("--cached-input-per-1k", metavar="Z",
              help="Price of 1K cached input tokens (default: the input price).")
@click.option("--from", "effective_from", metavar="DATE",
              help="When the price takes effect: a date or ISO date-time, UTC unless an "
                   "offset is given (default: now). Calls are priced at the price in force "
                   "when they started.")
@pass_state
def set_price(state: CliState, model: str, per_1k: str | None, input_per_1k: str | None,
              output_per_1k: str | None, cached_input_per_1k: str | None,
              effective_from: str | None) -> None:
    """Set MODEL's price per 1K tokens: PER_1K for input and output alike, or separate
    --input-per-1k and --output-per-1k.

    \b
    Example:
      ledger price set kimi-k2.5 0.020
      ledger price set some-model --input-per-1k 0.010 --output-per-1k 0.030 --from 2026-11-15
    """
    when = None if effective_from is None else parse_instant(effective_from)
    book = state.open()
    p = book.set_price(model, per_1k, input_per_1k=input_per_1k, output_per_1k=output_per_1k,
                       cached_input_per_1k=cached_input_per_1k, effective_from=when)
    cached = ("" if p.cached_input_per_1k is None
              else f", cached input ${money_str(p.cached_input_per_1k)}")
    echo(f"{model}: input ${money_str(p.input_per_1k)}, output "
               f"${money_str(p.output_per_1k)}{cached} per 1K tokens, from "
               f"{p.effective_from.isoformat()}")


@price.command("list")
@format_option("table", "json", "csv")
@pass_state
def list_prices(state: CliState, fmt: str) -> None:
    """List every price in the catalog, by model and date.

    \b
    Example:
      ledger price list
      ledger price list --format csv > prices.csv
    """
    items = state.open().prices()
    out = stdout_text()
    if fmt == "json":
        render_json.write({"prices": [
            {"model": p.model, "effective_from": p.effective_from.isoformat(),
             "input_per_1k": money_str(p.input_per_1k),
             "output_per_1k": money_str(p.output_per_1k),
             "cached_input_per_1k": None if p.cached_input_per_1k is None
             else money_str(p.cached_input_per_1k)} for p in items]}, out)
    elif fmt == "csv":
        render_csv.prices(out, items)
    else:
        render_table.console(out).print(render_table.prices(items))
