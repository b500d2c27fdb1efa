"""The files a ledger keeps on this machine, so that no output is ever written over them.

A SQLite ledger is its database file and the ``-wal``, ``-shm`` and ``-journal`` files beside
it; every ledger has a spool (and its ``.rejected`` file). ``ledger invoice ... --output
ledger.db`` would replace the database with an invoice: :func:`check_output` refuses any
output path that is one of them, comparing real paths (symlinks, ``..``, ``./ledger.db``
against ``/abs/ledger.db``) and, for files that exist, their identity (hard links).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url

from .errors import InvalidInput

__all__ = ["SQLITE_SIDE_FILES", "check_output", "own_files"]

SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def _sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database.startswith("file:"):  # a SQLite URI (?uri=true): file:path?mode=...
        database = database.removeprefix("file:").split("?", 1)[0]
        if parsed.query.get("mode") == "memory":
            return None
    if database in ("", ":memory:"):
        return None
    return Path(database).expanduser()


def _owned(url: str, spool_path: str | os.PathLike[str] | None) -> list[tuple[str, Path]]:
    from .spool import Spool
    from .store.engine import normalise_url

    url = normalise_url(url)
    files: list[tuple[str, Path]] = []
    database = _sqlite_file(url)
    if database is not None:
        files.append(("database", database))
        files.extend(("database", Path(f"{database}{suffix}")) for suffix in SQLITE_SIDE_FILES)
    spool = Path(spool_path) if spool_path is not None else Spool.default_path(url)
    files.extend((("spool", spool), ("spool", Path(f"{spool}.rejected"))))
    return files


def own_files(url: str, spool_path: str | os.PathLike[str] | None = None) -> tuple[Path, ...]:
    """The files of the ledger at ``url`` (its spool at ``spool_path``, else the default)."""
    return tuple(path for _kind, path in _owned(url, spool_path))


def _same(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def check_output(path: str | os.PathLike[str], url: str,
                 spool_path: str | os.PathLike[str] | None = None) -> None:
    """Raise :class:`InvalidInput` if ``path`` is one of the ledger's own files."""
    target = Path(path).expanduser()
    for kind, own in _owned(url, spool_path):
        if _same(target, own):
            raise InvalidInput(f"refusing to write over the ledger's own {kind} file "
                               f"{os.path.realpath(own)}; choose another output file")
