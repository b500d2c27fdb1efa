"""``ledger replay``: apply the spool of usage written while the database was failing."""

from __future__ import annotations

import click

from .options import CliState, echo, pass_state


@click.command()
@pass_state
def replay(state: CliState) -> None:
    """Apply spooled usage to the ledger, exactly once, then empty the spool.

    When the database fails while a call is settled, its usage is appended to a local spool
    file; opening the ledger replays it, and so does this command. Each entry is applied once
    however often replay runs (entries are keyed by call id).

    \b
    Example:
      ledger --db sqlite:///usage.db replay
    """
    book = state.open(replay_spool=False)
    count = book.replay()
    echo(f"replayed {count} spooled {'entry' if count == 1 else 'entries'} "
               f"from {book.spool.path}")
