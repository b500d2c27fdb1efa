"""``ledger replay``: apply the spool of usage written while the database was failing."""

from __future__ import annotations

import click

from .options import CliState, echo, pass_state


def _entries(count: int) -> str:
    return f"{count} {'entry' if count == 1 else 'entries'}"


@click.command()
@click.option("--rejected", is_flag=True,
              help="Retry the lines set aside in <spool>.rejected instead (those refused "
                   "again stay there).")
@pass_state
def replay(state: CliState, rejected: bool) -> None:
    """Apply spooled usage to the ledger, exactly once, then empty the spool.

    When the database fails while a call is settled, its usage is appended to a local spool
    file; opening the ledger replays it, and so does this command. Each entry is applied once
    however often replay runs (entries are keyed by call id). A line the ledger refuses is
    moved to <spool>.rejected, never dropped: this command says how many wait there, exits 1
    while any do, and `--rejected` tries them again.

    \b
    Example:
      ledger --db sqlite:///usage.db replay
      ledger --db sqlite:///usage.db replay --rejected
    """
    book = state.open(replay_spool=False)
    result = book.replay_details(rejected=rejected)
    source = result.rejected_path if rejected else result.path
    echo(f"replayed {result.applied} spooled "
         f"{'entry' if result.applied == 1 else 'entries'} from {source}")
    if result.rejected_waiting:
        echo(f"{_entries(result.rejected_waiting)} rejected, kept in "
             f"{result.rejected_path} (retry: ledger replay --rejected)", err=True)
        raise click.exceptions.Exit(1)
