"""The spool: torn lines, full disks, a read-only PostgreSQL, where the file lives and how it is
created (issue 9 items 12, 13 and 14)."""

from __future__ import annotations

import builtins
import errno
import json
import os
import stat
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import psycopg
import pytest
from click.testing import CliRunner
from helpers import MESSAGES, cost
from sqlalchemy import exc as sa_exc

from ledger import Ledger, LedgerUnavailable, ManualClock
from ledger.cli import main
from ledger.cli.options import CliState
from ledger.errors import InvalidInput
from ledger.store.ops import Outcome
from ledger.testing.simulator import RunAPISimulator


def _hold(book: Ledger, project: str = "acme") -> Any:
    return book.hold(project, "kimi-k2.5", 10, 100)


def _spool_ok(book: Ledger, hold: Any, prompt: int = 10, completion: int = 20) -> None:
    book.spool.append(hold.call_id, hold.project, hold.model, hold.created_at,
                      Outcome("ok", prompt, completion))


class FullDisk:
    """Fault injection: every write to a file under ``root`` stores half its bytes and then
    fails with ENOSPC, as on a full disk (os.write and files opened by ``open``)."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = str(root)
        self.monkeypatch = monkeypatch
        self.real_write = os.write
        self.real_open = builtins.open

    def _under(self, path: str) -> bool:
        return os.path.abspath(path).startswith(self.root + os.sep)

    def _fd_under(self, fd: int) -> bool:
        try:
            return self._under(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            return False

    def write(self, fd: int, data: Any) -> int:
        if not self._fd_under(fd):
            return self.real_write(fd, data)
        half = bytes(data)[: max(len(data) // 2, 1)]
        self.real_write(fd, half)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def open(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = self.real_open(file, mode, *args, **kwargs)
        if isinstance(file, (str, os.PathLike)) and self._under(os.fspath(file)) \
                and any(c in mode for c in "wa+"):
            return _FullFile(fh)
        return fh

    def __enter__(self) -> FullDisk:
        self.monkeypatch.setattr(os, "write", self.write)
        self.monkeypatch.setattr(builtins, "open", self.open)
        return self

    def __exit__(self, *exc: object) -> None:
        self.monkeypatch.setattr(os, "write", self.real_write)
        self.monkeypatch.setattr(builtins, "open", self.real_open)


class _FullFile:
    """A file whose writes store half their text, then fail with ENOSPC."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh

    def write(self, text: Any) -> int:
        self._fh.write(text[: max(len(text) // 2, 1)])
        self._fh.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def writelines(self, lines: Any) -> None:
        self.write("".join(lines))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._fh)

    def __enter__(self) -> _FullFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    path = tmp_path / "spooldir"
    path.mkdir()
    return path


# -- item 12: torn lines and full disks --------------------------------------------------------
class TestTornLines:
    def test_append_after_a_torn_fragment_starts_a_fresh_line(
            self, book: Ledger) -> None:
        """Issue 9 item 12: an entry appended after a torn fragment (a kill mid-append) is
        not glued onto it: replay bills it, and the fragment is kept in .rejected."""
        h = _hold(book)
        book.spool.path.write_bytes(b'{"v":1,"call_id":"dead","project":"ac')  # no line end
        _spool_ok(book, h)
        assert [e["call_id"] for e in book.spool.entries()] == [h.call_id]
        assert book.replay() == 1
        assert book.spend("acme") == cost(30)
        assert book.spool.rejected_path.read_bytes() == b'{"v":1,"call_id":"dead","project":"ac\n'

    def test_an_entry_glued_onto_a_fragment_is_salvaged(self, book: Ledger) -> None:
        """Issue 9 item 12: a spool written by older versions, with an entry glued onto a
        torn fragment on one line, still bills the entry on replay."""
        h = _hold(book)
        _spool_ok(book, h)
        good = book.spool.path.read_bytes()
        book.spool.path.write_bytes(b'{"v":1,"call_id":"dead","pro' + good)
        assert book.replay() == 1
        assert book.spend("acme") == cost(30)
        assert book.spool.rejected_count() == 1  # the fragment, never silently dropped

    def test_an_append_failing_on_a_full_disk_leaves_no_fragment(
            self, sqlite_url: str, clock: ManualClock, spool_dir: Path,
            monkeypatch: pytest.MonkeyPatch) -> None:
        """Issue 9 item 12: an append that fails half-way (ENOSPC) leaves no fragment, so the
        next append, once there is space, is replayed and billed."""
        with Ledger(sqlite_url, clock=clock, spool_path=spool_dir / "s.spool") as book:
            first, second = _hold(book), _hold(book)
            _spool_ok(book, first)
            with FullDisk(spool_dir, monkeypatch), pytest.raises(OSError):
                _spool_ok(book, second, completion=5)
            third = _hold(book)
            _spool_ok(book, third, completion=40)
            assert book.replay() == 2
            assert book.spend("acme") == cost(30) + cost(50)
            assert book.spool.rejected_count() == 0

    def test_the_ledger_opens_on_a_full_disk_and_keeps_the_spool(
            self, sqlite_url: str, clock: ManualClock, spool_dir: Path,
            monkeypatch: pytest.MonkeyPatch) -> None:
        """Issue 9 item 12: Ledger(...) opens while the spool's disk is full (its replay
        cannot set a bad line aside), loses nothing, and replays once there is space."""
        spool = spool_dir / "s.spool"
        with Ledger(sqlite_url, clock=clock, spool_path=spool) as book:
            h = _hold(book)
            _spool_ok(book, h)
        with spool.open("ab") as fh:
            fh.write(b"not json at all\n")
        before = spool.read_bytes()
        with FullDisk(spool_dir, monkeypatch):
            with Ledger(sqlite_url, clock=clock, spool_path=spool) as book:
                assert book.spend("acme") == cost(30)  # the good entry was applied
            assert spool.read_bytes() == before  # nothing lost, nothing half-written
        with Ledger(sqlite_url, clock=clock, spool_path=spool) as book:
            assert book.spend("acme") == cost(30)  # applied again: still once
            assert not book.spool.exists()
            assert book.spool.rejected_path.read_bytes() == b"not json at all\n"


# -- item 13: a read-only PostgreSQL is unavailable, never a reason to reject ------------------
def _read_only(url: str) -> str:
    """The same schema through connections whose transactions are read-only (what a hot
    standby or a failover in progress gives), per connection only."""
    assert "options=-c" in url
    return url.replace("options=-c", "options=-cdefault_transaction_read_only%3Don%20-c", 1)


class TestReadOnlyPostgres:
    def test_is_unavailable_knows_read_only(self) -> None:
        """Issue 9 item 13: ReadOnlySqlTransaction (an InternalError, SQLSTATE 25006), raw
        or wrapped by SQLAlchemy, is unavailability; a constraint violation is not."""
        from ledger.store.unavailable import is_unavailable

        raw = psycopg.errors.ReadOnlySqlTransaction("cannot execute UPDATE in a read-only "
                                                    "transaction")
        assert isinstance(raw, psycopg.InternalError)
        assert is_unavailable(raw)
        assert is_unavailable(sa_exc.InternalError("UPDATE ...", {}, raw))
        assert not is_unavailable(psycopg.errors.UniqueViolation("duplicate key"))
        assert not is_unavailable(sa_exc.IntegrityError("INSERT ...", {}, Exception("dup")))

    def test_replay_on_a_read_only_server_keeps_every_entry(
            self, pg_url: str, clock: ManualClock, tmp_path: Path) -> None:
        """Issue 9 item 13: replaying into a read-only PostgreSQL raises LedgerUnavailable
        and keeps the spool whole (nothing moved to .rejected); a writable one bills it."""
        spool = tmp_path / "pg.spool"
        with Ledger(pg_url, clock=clock, spool_path=spool) as book:
            book.set_budget("acme", "5.00")
            held = [_hold(book) for _ in range(3)]
            for h in held:
                _spool_ok(book, h)
        with Ledger(_read_only(pg_url), clock=clock, spool_path=spool) as standby:
            assert len(standby.spool.entries()) == 3  # the replay on open kept them
            with pytest.raises(LedgerUnavailable, match="read-only"):
                standby.replay()
            assert len(standby.spool.entries()) == 3
            assert standby.spool.rejected_count() == 0
            assert not standby.spool.rejected_path.exists()
        with Ledger(pg_url, clock=clock, spool_path=spool) as book:
            assert book.spend("acme") == 3 * cost(30)
            assert not book.spool.exists()

    def test_calls_on_a_read_only_server_get_503(
            self, pg_url: str, clock: ManualClock, tmp_path: Path,
            sim: RunAPISimulator) -> None:
        """Issue 9 item 13: on a read-only PostgreSQL, hold and record raise LedgerUnavailable
        and a metered SDK call gets 503 ledger_unavailable, never a raw psycopg error."""
        with Ledger(pg_url, clock=clock, spool_path=tmp_path / "a.spool") as book:
            book.set_budget("acme", "5.00")
        with Ledger(_read_only(pg_url), clock=clock,
                    spool_path=tmp_path / "b.spool") as standby:
            with pytest.raises(LedgerUnavailable):
                _hold(standby)
            with pytest.raises(LedgerUnavailable):
                standby.record("acme", "kimi-k2.5", 1, 1)
            client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-test-0123456789",
                                   max_retries=0, http_client=standby.httpx_client("acme"))
            with pytest.raises(openai.InternalServerError) as caught:
                client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES)
            assert caught.value.status_code == 503
            assert isinstance(caught.value.body, dict)
            assert caught.value.body["type"] == "ledger_unavailable"
            assert sim.request_count == 0


class TestRejectedAreReported:
    def _cli(self, sqlite_url: str, clock: ManualClock, *args: str) -> Any:
        return CliRunner().invoke(main, list(args), obj=CliState(db=sqlite_url, clock=clock))

    def test_replay_reports_rejected_lines_and_retries_them(
            self, sqlite_url: str, clock: ManualClock) -> None:
        """Issue 9 item 13: `ledger replay` says how many lines were rejected and where
        (exit 1), and `ledger replay --rejected` applies them once they can be."""
        with Ledger(sqlite_url, clock=clock) as book:
            h = _hold(book)
            _spool_ok(book, h)
            # a call of a model with no price yet (fail-open, never held): refused for now
            book.spool.append("unpriced-1", "acme", "new-model", h.created_at,
                              Outcome("ok", 100, 100))
            spool, rejected = book.spool.path, book.spool.rejected_path
        result = self._cli(sqlite_url, clock, "replay")
        assert result.exit_code == 1, (result.stdout, result.stderr)
        assert result.stdout.startswith("replayed 1 spooled entry")
        assert f"1 entry rejected, kept in {rejected}" in result.stderr
        assert json.loads(rejected.read_bytes())["call_id"] == "unpriced-1"
        assert spool.stat().st_size == 0
        with Ledger(sqlite_url, clock=clock) as book:
            book.set_price("new-model", "0.010", effective_from=h.created_at - timedelta(days=1))
        result = self._cli(sqlite_url, clock, "replay", "--rejected")
        assert result.exit_code == 0, (result.stdout, result.stderr)
        assert result.stdout.startswith(f"replayed 1 spooled entry from {rejected}")
        assert result.stderr == ""
        assert not rejected.exists()
        with Ledger(sqlite_url, clock=clock) as book:
            assert book.spend("acme") == cost(30) + Decimal("0.002")
            result = self._cli(sqlite_url, clock, "replay", "--rejected")
            assert result.exit_code == 0 and book.spend("acme") == cost(30) + Decimal("0.002")


# -- item 14: where the spool lives, and how it is created -------------------------------------
class TestSpoolFile:
    def test_a_relative_sqlite_url_gives_an_absolute_spool(
            self, tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
        """Issue 9 item 14: a relative SQLite URL pins the spool beside the database, even
        after the process changes directory."""
        (tmp_path / "app").mkdir()
        (tmp_path / "elsewhere").mkdir()
        monkeypatch.chdir(tmp_path / "app")
        with Ledger("sqlite:///usage.db", clock=clock) as book:
            assert book.spool.path == tmp_path / "app" / "usage.db.spool"
            h = _hold(book)
            monkeypatch.chdir(tmp_path / "elsewhere")
            _spool_ok(book, h)
        assert (tmp_path / "app" / "usage.db.spool").stat().st_size > 0
        assert not (tmp_path / "elsewhere" / "usage.db.spool").exists()
        monkeypatch.chdir(tmp_path / "app")
        with Ledger("sqlite:///usage.db", clock=clock) as book:
            assert book.spend("acme") == cost(30)

    def test_a_relative_spool_path_is_made_absolute_at_open(
            self, tmp_path: Path, sqlite_url: str, clock: ManualClock,
            monkeypatch: pytest.MonkeyPatch) -> None:
        """Issue 9 item 14: Ledger(spool_path="relative") is resolved when the ledger opens."""
        monkeypatch.chdir(tmp_path)
        with Ledger(sqlite_url, clock=clock, spool_path="spools/x.spool") as book:
            assert book.spool.path == tmp_path / "spools" / "x.spool"

    def test_an_unwritable_spool_is_refused_at_open(
            self, tmp_path: Path, sqlite_url: str, clock: ManualClock) -> None:
        """Issue 9 item 14: a spool that cannot be written is an error when the ledger opens,
        naming the path (not a surprise during an outage)."""
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        bad = blocker / "ledger.spool"
        with pytest.raises(InvalidInput, match=str(bad)):
            Ledger(sqlite_url, clock=clock, spool_path=bad)
        (tmp_path / "dir.spool").mkdir()
        with pytest.raises(InvalidInput, match="not a regular file"):
            Ledger(sqlite_url, clock=clock, spool_path=tmp_path / "dir.spool")

    def test_the_cli_names_an_unwritable_spool(
            self, tmp_path: Path, pg_url: str, clock: ManualClock) -> None:
        """Issue 9 item 14: the command line says which spool cannot be written (one line on
        stderr, exit 2), here a $LEDGER_SPOOL_DIR under a regular file."""
        blocker = tmp_path / "a-file"
        blocker.write_text("x")
        result = CliRunner().invoke(main, ["usage"], obj=CliState(db=pg_url, clock=clock),
                                    env={"LEDGER_SPOOL_DIR": str(blocker / "spools")})
        assert result.exit_code == 2, (result.stdout, result.stderr)
        line = result.stderr.strip()
        assert "\n" not in line and "Traceback" not in line
        assert f"the spool {blocker / 'spools'}" in line and "cannot be written" in line

    def test_spool_files_are_created_0600(self, book: Ledger) -> None:
        """Issue 9 item 14: the spool and its .rejected file are created with mode 0600."""
        h = _hold(book)
        _spool_ok(book, h)
        with book.spool.path.open("ab") as fh:
            fh.write(b"garbage\n")
        assert stat.S_IMODE(book.spool.path.stat().st_mode) == 0o600
        book.replay()
        assert stat.S_IMODE(book.spool.rejected_path.stat().st_mode) == 0o600

    def test_the_directory_is_fsynced_when_the_spool_is_created(
            self, book: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
        """Issue 9 item 14: creating the spool fsyncs its directory (the new name survives a
        power cut), and the file itself is fsynced too."""
        synced: list[tuple[bool, int]] = []
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            info = os.fstat(fd)
            synced.append((stat.S_ISDIR(info.st_mode), info.st_ino))
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        assert not book.spool.path.exists()
        _spool_ok(book, _hold(book))
        directory = book.spool.path.parent.stat().st_ino
        assert (True, directory) in synced
        assert (False, book.spool.path.stat().st_ino) in synced
        synced.clear()
        _spool_ok(book, _hold(book))  # an existing file: no directory fsync needed
        assert synced == [(False, book.spool.path.stat().st_ino)]
