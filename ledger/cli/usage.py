"""``ledger usage``: the recorded calls, streamed."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import click

from ..render import csv as render_csv
from ..render import json as render_json
from ..render import table as render_table
from ..reports import (
    USAGE_STATUSES,
    UsageRecord,
    calibration,
    count_usage,
    usage_dicts,
    usage_records,
    usage_rows,
)
from .options import (
    CliState,
    format_option,
    month_option,
    output_option,
    pass_state,
    show_progress,
    text_output,
    tracked,
)

TABLE_LIMIT = 200


@click.command()
@click.option("--project", metavar="P", help="Only this project.")
@month_option(help_text="Only this UTC calendar month.")
@click.option("--model", metavar="MODEL", help="Only this model.")
@click.option("--user", metavar="U", help="Only calls for this end user.")
@click.option("--tag", metavar="K=V", help="Only calls carrying this tag (key=value).")
@click.option("--status", type=click.Choice(USAGE_STATUSES),
              help="Only calls that ended so (estimated: the server reported no usage and "
                   "the ledger's estimate was charged).")
@format_option("table", "json", "jsonl", "csv")
@output_option()
@click.option("--limit", type=click.IntRange(min=0), metavar="N",
              help=f"At most N rows (default: all; {TABLE_LIMIT} for --format table).")
@click.option("--calibration", "show_calibration", is_flag=True,
              help="Instead of rows: estimated vs reported prompt tokens per model.")
@pass_state
def usage(state: CliState, project: str | None, month: str | None, model: str | None,
          user: str | None, tag: str | None, status: str | None, fmt: str,
          output: Path | None, limit: int | None, show_calibration: bool) -> None:
    """List recorded calls, oldest first, filtered by project, month, model, end user, tag
    and status.

    Rows are streamed from the database, so memory stays flat at millions of rows. --format
    json writes one JSON array, element by element (valid JSON for json.load and jq);
    --format jsonl writes one object per line; csv has a header row. Money is an exact
    decimal string. Each row carries its end user and tags (csv/json columns user, tags:
    "env=prod,feature=search"). --calibration summarises how the pre-flight estimates
    compared with the prompt tokens the server reported, per model.

    \b
    Example:
      ledger usage --project acme --month 2026-11
      ledger usage --project acme --user alice --tag feature=search
      ledger usage --status failed --format json
      ledger usage --month 2026-11 --format csv --output usage-2026-11.csv
      ledger usage --calibration
    """
    book = state.open()
    if show_calibration:
        rows = calibration(book.store, project=project, month=month, model=model)
        with text_output(output) as out:
            if fmt in ("json", "jsonl"):
                if fmt == "json":
                    render_json.write({"calibration": [c.to_dict() for c in rows]}, out)
                else:
                    render_json.stream_lines((c.to_dict() for c in rows), out)
            elif fmt == "csv":
                render_csv.calibration(out, rows)
            else:
                render_table.console(out).print(render_table.calibration(rows))
        return
    if fmt == "table" and limit is None:
        limit = TABLE_LIMIT
    progress = show_progress(output)
    filters: dict[str, Any] = {"project": project, "month": month, "model": model,
                               "status": status, "user": user, "tag": tag}
    total = count_usage(book.store, **filters) if progress else None
    if total is not None and limit is not None:
        total = min(total, limit)
    if fmt == "table":
        rows_stream = usage_rows(book.store, **filters)
        try:
            shown = list(tracked(islice(rows_stream, limit), "usage rows", total=total,
                                 enabled=progress, every=1000))
        finally:
            rows_stream.close()
        with text_output(output) as out:
            console = render_table.console(out, terminal=None if output is None else False)
            console.print(render_table.usage(shown))
        if limit is not None and len(shown) == limit:
            more = count_usage(book.store, **filters) - limit
            if more > 0:
                click.echo(f"... {more:,} more; use --limit N, or --format csv/json for all",
                           err=True)
        return
    # Exports: raw records from the DBAPI cursor, rendered without an object per row.
    stream = usage_records(book.store, **filters)
    try:
        records: Iterator[UsageRecord] = stream if limit is None else islice(stream, limit)
        records = tracked(records, "usage rows", total=total, enabled=progress, every=1000)
        with text_output(output) as out:
            if fmt == "json":
                render_json.stream_array(usage_dicts(records), out)
            elif fmt == "jsonl":
                render_json.stream_lines(usage_dicts(records), out)
            else:
                render_csv.usage_records(out, records)
    finally:
        stream.close()
