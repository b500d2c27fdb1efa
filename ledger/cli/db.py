"""``ledger db``: the ledger database itself."""

from __future__ import annotations

import click

from .options import CliState, pass_state


@click.group()
def db() -> None:
    """Manage the ledger database.

    \b
    Example:
      ledger --db sqlite:///usage.db db upgrade
    """


@db.command("upgrade")
@pass_state
def upgrade(state: CliState) -> None:
    """Bring the database schema to the latest revision (creating it if needed).

    Opening a ledger does this by itself; this command does it explicitly, e.g. before
    starting many workers. Safe to run concurrently: the schema is migrated once.

    \b
    Example:
      ledger --db postgresql://app@db.internal/billing db upgrade
    """
    from ..store.engine import head_revision
    from ..store.engine import upgrade as run_upgrade

    book = state.open(migrate=False, replay_spool=False)
    ran = run_upgrade(book.engine)
    head = head_revision()
    click.echo(f"upgraded to revision {head}" if ran else f"already at revision {head}")
