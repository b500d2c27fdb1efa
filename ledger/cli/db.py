"""``ledger db``: the ledger database itself."""

from __future__ import annotations

import click

from ..render import json as render_json
from ..render import table as render_table
from .options import CliState, format_option, pass_state, stdout_text


@click.group()
def db() -> None:
    """Manage the ledger database.

    \b
    Example:
      ledger --db sqlite:///usage.db db upgrade
      ledger db info --format json
    """


@db.command("upgrade")
@click.option("--create", is_flag=True,
              help="Make a SQLite file's missing directory (without it, a directory that does "
                   "not exist is an error: a typo is not a new, empty ledger).")
@pass_state
def upgrade(state: CliState, create: bool) -> None:
    """Bring the database schema to the latest revision (creating it if needed).

    Opening a ledger does this by itself; this command does it explicitly, e.g. before
    starting many workers. Safe to run concurrently: the schema is migrated once.

    \b
    Example:
      ledger --db postgresql://app@db.internal/billing db upgrade
      ledger --db sqlite:////var/lib/billing/ledger.db db upgrade --create
    """
    from ..store.engine import head_revision
    from ..store.engine import upgrade as run_upgrade

    book = state.open(migrate=False, replay_spool=False, create=create)
    ran = run_upgrade(book.engine)
    head = head_revision()
    click.echo(f"upgraded to revision {head}" if ran else f"already at revision {head}")


@db.command("info")
@format_option("table", "json")
@pass_state
def info(state: CliState, fmt: str) -> None:
    """Show which ledger is in use: the database (password hidden), its schema revision and
    whether it is at head, the spool file, and counts of events, pending holds, budgets and
    invoices. Never migrates, replays or creates anything.

    \b
    Example:
      ledger db info
      LEDGER_DATABASE_URL=postgresql://app@db.internal/billing ledger db info --format json
    """
    from ..store.info import ledger_info

    book = state.open(migrate=False, replay_spool=False)
    facts = ledger_info(book.url, book.engine, book.spool)
    out = stdout_text()
    if fmt == "json":
        render_json.write(facts.as_dict(), out)
    else:
        render_table.console(out).print(render_table.ledger_info(facts))
