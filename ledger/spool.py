"""The append-only fallback for usage the database would not take.

When settling a call that succeeded fails because the database is down, the call's outcome is
appended to a local JSON-lines file (fsynced before the caller gets its response). ``replay``
applies the file's entries to the ledger and then empties it. Each entry carries the call's id,
and settling is idempotent by that id, so an entry applied twice (a replay interrupted by a
crash and run again) is still recorded exactly once. Entries hold ids, names, token counts and
error text: never headers, API keys, prompts or completions.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy.engine import make_url

from .errors import LedgerUnavailable
from .store.ops import Outcome, Store
from .store.schema import from_micros, to_micros

VERSION = 1
log = logging.getLogger("ledger.spool")


class Spool:
    """A JSON-lines spool file, safe to share between threads and processes (flock)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @staticmethod
    def default_path(url: str) -> Path:
        """Beside a SQLite file; else under ``$LEDGER_SPOOL_DIR`` (default ~/.local/state)."""
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            return Path(str(parsed.database) + ".spool")
        base = Path(os.environ.get("LEDGER_SPOOL_DIR")
                    or Path.home() / ".local" / "state" / "runapi-ledger")
        key = hashlib.sha256(parsed.render_as_string(hide_password=True).encode()).hexdigest()
        return base / f"{key[:16]}.spool"

    def exists(self) -> bool:
        try:
            return self.path.stat().st_size > 0
        except FileNotFoundError:
            return False

    @contextmanager
    def _locked(self, mode: str) -> Iterator[IO[str]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, mode, encoding="utf-8") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield fh
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def append(self, call_id: str, project: str, model: str, started_at: datetime,
               outcome: Outcome) -> None:
        """Durably append one call's outcome (fsync before returning)."""
        line = json.dumps({
            "v": VERSION, "call_id": call_id, "project": project, "model": model,
            "started_at": to_micros(started_at), "outcome": asdict(outcome),
        }, separators=(",", ":"))
        with self._locked("a") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def entries(self) -> list[dict[str, Any]]:
        """The spooled entries (a torn last line from a crash mid-write is skipped)."""
        if not self.path.exists():
            return []
        with self._locked("r") as fh:
            return [e for e in (_parse(line) for line in fh) if e is not None]

    def replay(self, store: Store, now: datetime) -> int:
        """Apply every entry, then empty the spool; returns how many entries were applied.

        Stops at the first database failure and keeps the file: what was applied is
        idempotent, so the next replay finishes the job without counting anything twice.
        """
        if not self.exists():
            return 0
        applied = 0
        with self._locked("r+") as fh:
            lines = fh.readlines()
            rejected = []
            for line in lines:
                entry = _parse(line)
                if entry is None:
                    if line.strip():
                        rejected.append(line)
                    continue
                try:
                    store.settle(
                        entry["call_id"], Outcome(**entry["outcome"]), now,
                        fallback=(entry["project"], entry["model"],
                                  from_micros(entry["started_at"])),
                    )
                except LedgerUnavailable:
                    raise  # keep the whole file; what was applied is idempotent
                except Exception:  # an entry the ledger refuses: set it aside, go on
                    log.error("spool entry rejected: %s", line.strip(), exc_info=True)
                    rejected.append(line)
                    continue
                applied += 1
            if rejected:
                with open(str(self.path) + ".rejected", "a", encoding="utf-8") as bad:
                    bad.writelines(rejected)
            fh.seek(0)
            fh.truncate()
            fh.flush()
            os.fsync(fh.fileno())
        return applied


def _parse(line: str) -> dict[str, Any] | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or entry.get("v") != VERSION or "call_id" not in entry:
        return None
    return entry
