"""What every command shares: the lazily opened ledger, ``--format``, ``--output``,
``--month``, writing results, and progress on a terminal."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click

from ..clock import Clock, parse_month
from ..errors import InvalidInput
from ..render.safe import terminal_text

if TYPE_CHECKING:
    from ..core import Ledger

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


@dataclass
class CliState:
    """The command line's context object: where the ledger is, and the ledger once opened.

    Tests may pass ``obj=CliState(clock=ManualClock(...))`` to ``CliRunner.invoke``.
    """

    db: str | None = None
    clock: Clock | None = None
    book: Ledger | None = field(default=None, repr=False)

    def open(self, *, migrate: bool = True, replay_spool: bool = True,
             create: bool = False) -> Ledger:
        """The ledger, opened on first use (so ``--help`` never touches a database).

        A SQLite file's directory must exist unless ``create`` (``ledger db upgrade --create``).
        """
        if self.book is None:
            from ..core import Ledger

            self.book = Ledger(self.db, clock=self.clock, migrate=migrate,
                               replay_spool=replay_spool, create=create)
        return self.book

    def check_output(self, path: Path) -> None:
        """Refuse an ``--output`` that is one of the ledger's own files (its database, the
        database's -wal/-shm/-journal, its spool): writing there would destroy the ledger."""
        from sqlalchemy.exc import ArgumentError

        from ..files import check_output
        from ..store.engine import DEFAULT_URL

        book = self.book
        url = book.url if book is not None else (
            self.db or os.environ.get("LEDGER_DATABASE_URL") or DEFAULT_URL)
        try:
            check_output(path, url, None if book is None else book.spool.path)
        except InvalidInput as exc:
            raise click.BadParameter(str(exc)) from None
        except ArgumentError:  # a malformed --db: opening the ledger says so
            pass

    def close(self) -> None:
        if self.book is not None:
            self.book.close()
            self.book = None


pass_state = click.make_pass_decorator(CliState, ensure=True)


def format_option(*choices: str, default: str = "table") -> Callable[[F], F]:
    """The shared ``--format`` option (``table`` for people; ``json``/``csv`` for machines)."""
    return click.option(
        "--format", "fmt", type=click.Choice(choices, case_sensitive=False), default=default,
        show_default=True,
        help="Output format: " + ", ".join(choices) + ". Money in json/csv is an exact "
             "decimal string.")


def _writable(_ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path | None:
    """Check ``--output`` before any work is done (an invoice is not issued for nothing)."""
    if value is None:
        return None
    path = value.expanduser()
    parent = path.parent
    if path.is_dir():
        raise click.BadParameter(f"{value} is a directory")
    if not parent.is_dir():
        raise click.BadParameter(f"cannot write {value}: No such file or directory "
                                 f"({parent} does not exist)")
    if not os.access(parent, os.W_OK):
        raise click.BadParameter(f"cannot write {value}: Permission denied")
    state = _ctx.find_object(CliState)
    if state is not None:
        state.check_output(path)
    return path


def output_option(help_text: str = "Write to FILE instead of standard output.") -> Callable[[F], F]:
    return click.option("--output", "-o", "output", metavar="FILE", callback=_writable,
                        type=click.Path(path_type=Path), help=help_text)


def _month(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return parse_month(value)
    except InvalidInput as exc:
        raise click.BadParameter(str(exc)) from None


def month_option(*, required: bool = False,
                 help_text: str = "The UTC calendar month (default: the current one).",
                 ) -> Callable[[F], F]:
    return click.option("--month", metavar="YYYY-MM", callback=_month, required=required,
                        help=help_text)


def parse_instant(value: str, field_name: str = "--from") -> datetime:
    """``YYYY-MM-DD`` or an ISO 8601 date-time; without an offset it is UTC."""
    text = value.strip()
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{field_name} must be a date (2026-11-15) or an ISO 8601 date-time "
            f"(2026-11-15T09:00:00+00:00), got {value!r}") from None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when


# -- writing results ---------------------------------------------------------------------------
def echo(message: str, *, err: bool = False) -> None:
    """A message for people: control characters that came with the data (a project name, a
    path) are shown as escapes, never sent to the terminal (see ``ledger.render.safe``)."""
    click.echo(terminal_text(message), err=err)


def stdout_text() -> IO[str]:
    return sys.stdout


@contextmanager
def text_output(path: Path | None) -> Iterator[IO[str]]:
    """Standard output, or ``path`` written atomically (complete, or not at all)."""
    if path is None:
        yield sys.stdout
        return
    with _atomic(path, "w") as fh:
        yield fh


def write_bytes(path: Path | None, data: bytes) -> None:
    """Binary output (a PDF): to ``path``, or to standard output unless that is a terminal."""
    if path is None:
        if sys.stdout.isatty():
            raise click.UsageError("a PDF is binary: give --output FILE or redirect stdout")
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    with _atomic(path, "wb") as fh:
        fh.write(data)


@contextmanager
def _atomic(path: Path, mode: str) -> Iterator[IO[Any]]:
    path = path.expanduser()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        kwargs: dict[str, Any] = {"encoding": "utf-8", "newline": ""} if "b" not in mode else {}
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# -- progress ----------------------------------------------------------------------------------
def show_progress(output: Path | None) -> bool:
    """Progress bars only on an interactive terminal, and only when the results themselves are
    not printed there (they go to a file or a pipe); never when stderr is piped or captured."""
    try:
        interactive = sys.stderr.isatty()
        results_on_terminal = output is None and sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False
    return interactive and not results_on_terminal and not os.environ.get("LEDGER_NO_PROGRESS")


def tracked(items: Iterable[T], label: str, *, total: int | None = None,
            enabled: bool = False, every: int = 1) -> Iterator[T]:
    """Iterate ``items``, showing a transient progress bar on stderr when ``enabled`` (else
    ``items``' own iterator: no extra step per item)."""
    if not enabled:
        return iter(items)
    return _tracked(items, label, total, every)


def _tracked(items: Iterable[T], label: str, total: int | None, every: int) -> Iterator[T]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = [SpinnerColumn(), TextColumn("{task.description}"),
               *((BarColumn(), MofNCompleteColumn()) if total is not None
                 else (TextColumn("{task.completed:,}"),)),
               TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(label, total=total)
        pending = 0
        for item in items:
            yield item
            pending += 1
            if pending >= every:
                progress.advance(task, pending)
                pending = 0
        progress.advance(task, pending)
