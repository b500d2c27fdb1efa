"""The append-only fallback for usage the database would not take.

When settling a call that succeeded fails because the database is down, the call's outcome is
appended to a local JSON-lines file (fsynced before the caller gets its response). ``replay``
applies the file's entries to the ledger and then empties it. Each entry carries the call's id,
and settling is idempotent by that id, so an entry applied twice (a replay interrupted by a
crash and run again) is still recorded exactly once. Entries hold ids, names, token counts and
error text: never headers, API keys, prompts or completions.

* **Where.** The path is absolute, fixed when the ledger opens (a process that changes
  directory later still spools where the next open replays), and checked then: a spool that
  cannot be written is an error when the ledger opens, naming the path, not a surprise during
  an outage. A full disk is not such an error (the ledger still opens; see below).
* **Files.** The spool and its ``.rejected`` companion are created ``0600`` (usage is
  business data) and their directory is fsynced when a file is created, so the file itself
  survives a power cut, not only its content.
* **Torn lines.** An append cut short (a full disk, a kill mid-write) leaves a fragment with no
  line end. Every append starts on a fresh line (it checks the file's last byte under the
  lock), a failed append cuts its own fragment off again, and replay salvages an entry glued
  onto a fragment by older versions: the fragment is set aside, the entry applied.
* **Rejected entries are never silent.** A line the ledger refuses (unparseable, or an entry
  the database rejects for good) is moved to ``<spool>.rejected``; ``replay`` reports how many
  wait there, and ``replay(rejected=True)`` (``ledger replay --rejected``) tries them again.
  A database that is *unavailable* (down, locked, read-only after a failover) rejects nothing:
  the replay stops and keeps every line for the next one.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from .errors import InvalidInput, LedgerUnavailable
from .records import Attribution
from .store.ops import Outcome, Store
from .store.schema import from_micros, to_micros

VERSION = 1
log = logging.getLogger("ledger.spool")
FILE_MODE = 0o600
#: Where an entry starts: a glued line is salvaged from its last such start.
_ENTRY_START = re.compile(rb'\{"v":')
#: "The disk is full": not a misconfiguration, the ledger opens anyway.
_FULL = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class ReplayResult:
    """What one replay did: entries applied, lines newly set aside, and how many lines wait
    in ``rejected_path`` after it (including earlier ones)."""

    applied: int
    rejected: int
    rejected_waiting: int
    path: Path
    rejected_path: Path


class Spool:
    """A JSON-lines spool file, safe to share between threads and processes (flock)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(os.path.abspath(Path(path).expanduser()))

    @property
    def rejected_path(self) -> Path:
        """Where lines the ledger refused are kept (``<spool>.rejected``)."""
        return Path(str(self.path) + ".rejected")

    @staticmethod
    def default_path(url: str) -> Path:
        """Beside a SQLite file; else under ``$LEDGER_SPOOL_DIR`` (default ~/.local/state).
        Always absolute (resolved against the working directory now)."""
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            database = Path(str(parsed.database)).expanduser()
            return Path(os.path.abspath(str(database) + ".spool"))
        base = Path(os.environ.get("LEDGER_SPOOL_DIR")
                    or Path.home() / ".local" / "state" / "runapi-ledger").expanduser()
        key = hashlib.sha256(parsed.render_as_string(hide_password=True).encode()).hexdigest()
        return Path(os.path.abspath(base / f"{key[:16]}.spool"))

    def check_writable(self) -> None:
        """Refuse, naming the path, a spool that could not be written (its directory cannot
        be made, or it is not a writable file in a writable directory); a full disk passes."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if exc.errno in _FULL:
                log.warning("the disk of spool %s is full", self.path)
                return
            raise self._unwritable(exc.strerror or str(exc)) from exc
        if not self.path.parent.is_dir():
            raise self._unwritable(f"{self.path.parent} is not a directory")
        for target in (self.path, self.rejected_path):
            if target.exists() and not target.is_file():
                raise self._unwritable(f"{target} is not a regular file")
        target = self.path if self.path.exists() else self.path.parent
        mode = os.W_OK if target == self.path else os.W_OK | os.X_OK
        if not os.access(target, mode):
            raise self._unwritable("permission denied")

    def _unwritable(self, reason: str) -> InvalidInput:
        return InvalidInput(
            f"the spool {self.path} cannot be written ({reason}); usage would be lost if the "
            f"database failed. Give Ledger(spool_path=...) a writable file (or set "
            f"LEDGER_SPOOL_DIR)")

    def exists(self) -> bool:
        try:
            return self.path.stat().st_size > 0
        except FileNotFoundError:
            return False

    @contextmanager
    def _locked(self) -> Iterator[int]:
        """The spool's file descriptor (read-write, append), created 0600, under flock."""
        fd = _open(self.path, os.O_RDWR | os.O_APPEND)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # releases the lock

    def append(self, call_id: str, project: str, model: str, started_at: datetime,
               outcome: Outcome, *, attribution: Attribution | None = None) -> None:
        """Durably append one call's outcome (fsync before returning), on a fresh line; its
        end user and tags go with it (a call that was never held is attributed from them)."""
        entry: dict[str, Any] = {
            "v": VERSION, "call_id": call_id, "project": project, "model": model,
            "started_at": to_micros(started_at), "outcome": asdict(outcome),
        }
        if attribution is not None and attribution.user is not None:
            entry["user"] = attribution.user
        if attribution is not None and attribution.tags:
            entry["tags"] = dict(attribution.tags)
        data = json.dumps(entry, separators=(",", ":")).encode() + b"\n"
        with self._locked() as fd:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # a torn line before this one: never glue onto it
            try:
                _write_all(fd, data)
                os.fsync(fd)
            except BaseException:
                with suppress(OSError):  # leave no fragment of our own (needs no space)
                    os.ftruncate(fd, size)
                raise

    def entries(self) -> list[dict[str, Any]]:
        """The spooled entries (torn fragments are skipped, glued entries salvaged)."""
        if not self.path.exists():
            return []
        with self._locked() as fd:
            entries, _ = _parse_all(_read_all(fd))
        return entries

    def rejected_count(self) -> int:
        """How many lines wait in the ``.rejected`` file."""
        try:
            return sum(1 for line in self.rejected_path.read_bytes().split(b"\n")
                       if line.strip())
        except FileNotFoundError:
            return 0

    def replay(self, store: Store, now: datetime, *, rejected: bool = False) -> ReplayResult:
        """Apply every entry, then empty the spool (``rejected``: retry the ``.rejected``
        lines instead, keeping those refused again).

        Stops at the first database unavailability and keeps the file: what was applied is
        idempotent, so the next replay finishes the job without counting anything twice. An
        entry refused for good is moved to the ``.rejected`` file (fsynced before the spool is
        emptied); an ``OSError`` writing it (a full disk) leaves the spool as it was.
        """
        source = self.rejected_path if rejected else self.path
        if not (source.exists() and source.stat().st_size > 0):
            return self._result(0, 0)
        with self._locked() as fd:  # also serialises with appends and other replays
            lines = _split(source.read_bytes() if rejected else _read_all(fd))
            applied, refused = 0, []
            for line in lines:
                entries, fragments = _salvage(line)
                for fragment in fragments:
                    log.error("unreadable spool line set aside in %s: %r",
                              self.rejected_path, fragment)
                refused.extend(fragments)
                for entry in entries:
                    try:
                        store.settle(
                            entry["call_id"], Outcome(**entry["outcome"]), now,
                            fallback=(entry["project"], entry["model"],
                                      from_micros(entry["started_at"]),
                                      Attribution.of(entry.get("user"), entry.get("tags"))),
                        )
                    except LedgerUnavailable:
                        raise  # keep the whole file; what was applied is idempotent
                    except Exception:  # an entry the ledger refuses: set it aside, go on
                        log.error("spool entry rejected: %r", line, exc_info=True)
                        refused.append(line)
                        continue
                    applied += 1
            if rejected:
                _rewrite(self.rejected_path, refused)
            else:
                if refused:
                    _append_lines(self.rejected_path, refused)
                os.ftruncate(fd, 0)
                os.fsync(fd)
        return self._result(applied, 0 if rejected else len(refused))

    def _result(self, applied: int, rejected: int) -> ReplayResult:
        return ReplayResult(applied, rejected, self.rejected_count(), self.path,
                            self.rejected_path)


# -- file plumbing -------------------------------------------------------------------------------


def _open(path: Path, flags: int) -> int:
    """Open ``path``, creating it ``0600`` (and fsyncing its directory) if it is new."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return os.open(path, flags)
    try:
        _fsync_dir(path.parent)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""


def _append_lines(path: Path, lines: list[bytes]) -> None:
    """Append whole lines (each on a fresh line), durably."""
    fd = _open(path, os.O_RDWR | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        lead = b"\n" if size and os.pread(fd, 1, size - 1) != b"\n" else b""
        try:
            _write_all(fd, lead + b"".join(line + b"\n" for line in lines))
            os.fsync(fd)
        except BaseException:
            with suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def _rewrite(path: Path, lines: list[bytes]) -> None:
    """Replace ``path``'s content with ``lines``, atomically (a new file renamed over it);
    no lines: remove it."""
    if not lines:
        with suppress(FileNotFoundError):
            path.unlink()
            _fsync_dir(path.parent)
        return
    tmp = path.with_name(path.name + ".tmp")
    with suppress(FileNotFoundError):
        tmp.unlink()
    fd = _open(tmp, os.O_WRONLY)
    try:
        _write_all(fd, b"".join(line + b"\n" for line in lines))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _split(raw: bytes) -> list[bytes]:
    return [line.rstrip(b"\r") for line in raw.split(b"\n") if line.strip()]


def _salvage(line: bytes) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The entries a line holds, and what is left over: a whole entry, or an entry glued
    after a torn fragment (the fragment is left over), or nothing usable (all left over)."""
    entry = _parse(line)
    if entry is not None:
        return [entry], []
    for match in reversed(list(_ENTRY_START.finditer(line))):
        if match.start() == 0:
            break
        entry = _parse(line[match.start():])
        if entry is not None:
            return [entry], [line[:match.start()]]
    return [], [line]


def _parse_all(raw: bytes) -> tuple[list[dict[str, Any]], list[bytes]]:
    entries: list[dict[str, Any]] = []
    left: list[bytes] = []
    for line in _split(raw):
        found, rest = _salvage(line)
        entries.extend(found)
        left.extend(rest)
    return entries, left


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(entry, dict) or entry.get("v") != VERSION or "call_id" not in entry:
        return None
    return entry
