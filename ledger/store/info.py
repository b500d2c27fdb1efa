"""Which ledger is this? The database (password hidden), its schema revision, the spool and a
few counts, so two processes that disagree about where the ledger lives can be told apart
(``ledger db info``).

Reading never migrates, never replays the spool and never creates a SQLite file that is not
there: a ledger that does not exist yet is reported as such.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, inspect, select
from sqlalchemy.engine import make_url

from .engine import current_revision, head_revision
from .schema import budgets, events, holds, invoices

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from ..spool import Spool


@dataclass(frozen=True)
class LedgerInfo:
    """What ``ledger db info`` prints."""

    url: str                 # the database URL, any password shown as ***
    backend: str             # "sqlite" or "postgresql"
    path: str | None         # the SQLite file (None on a server or in memory)
    exists: bool             # False: a SQLite file that is not there yet (nothing was created)
    revision: str | None     # the schema's Alembic revision (None: not migrated)
    head: str                # the revision this version of the ledger expects
    spool_path: str
    spooled: int             # usage entries waiting in the spool for a replay
    events: int
    holds_pending: int
    budgets: int
    invoices: int

    @property
    def at_head(self) -> bool:
        return self.revision == self.head

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``ledger db info --format json``)."""
        return {
            "database": self.url, "backend": self.backend, "path": self.path,
            "exists": self.exists, "revision": self.revision, "head": self.head,
            "at_head": self.at_head,
            "spool": {"path": self.spool_path, "entries": self.spooled},
            "counts": {"events": self.events, "holds_pending": self.holds_pending,
                       "budgets": self.budgets, "invoices": self.invoices},
        }


def ledger_info(url: str, engine: Engine, spool: Spool) -> LedgerInfo:
    """Describe the ledger at ``url`` (its ``engine`` and ``spool``), read-only."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    path: str | None = None
    exists = True
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:") \
            and "mode=memory" not in url:
        resolved = Path(str(parsed.database)).expanduser().resolve()
        path = str(resolved)
        exists = resolved.exists()
    counts = {"events": 0, "holds_pending": 0, "budgets": 0, "invoices": 0}
    revision: str | None = None
    if exists:
        with engine.connect().execution_options(ledger_read_only=True) as conn:
            present = set(inspect(conn).get_table_names())
            if "alembic_version" in present:
                revision = current_revision(conn)
            queries = {
                "events": (events, select(func.count()).select_from(events)),
                "holds_pending": (holds, select(func.count()).select_from(holds)
                                  .where(holds.c.state == "pending")),
                "budgets": (budgets, select(func.count()).select_from(budgets)),
                "invoices": (invoices, select(func.count()).select_from(invoices)),
            }
            for key, (table, query) in queries.items():
                if table.name in present:
                    counts[key] = int(conn.execute(query).scalar_one())
    return LedgerInfo(
        url=parsed.render_as_string(hide_password=True), backend=backend, path=path,
        exists=exists, revision=revision, head=head_revision(),
        spool_path=os.path.abspath(spool.path.expanduser()), spooled=len(spool.entries()),
        **counts)
