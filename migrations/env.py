"""Alembic environment for the ledger. Normally driven by ``ledger.store.engine.upgrade`` with an
open connection; also runs from the ``alembic`` command line with ``-x url=...`` or
``$LEDGER_DATABASE_URL``."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from ledger.store.schema import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,  # SQLite: ALTER through table copies
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


given = config.attributes.get("connection")
if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or os.environ.get("LEDGER_DATABASE_URL"),
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()
elif given is not None:
    _run(given)
else:
    from ledger.store.engine import DEFAULT_URL, make_engine

    url = (context.get_x_argument(as_dictionary=True).get("url")
           or config.get_main_option("sqlalchemy.url")
           or os.environ.get("LEDGER_DATABASE_URL", DEFAULT_URL))
    engine = make_engine(url)
    with engine.begin() as conn:
        _run(conn)
