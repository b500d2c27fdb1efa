"""The ``ledger`` command line (``python -m ledger`` too).

Thin by design: every command parses its options, calls the library (``ledger.Ledger``,
``ledger.invoice``, ``ledger.reports``) and renders the result (``ledger.render``). One
command group per module. Errors become exit codes in one place, :func:`cli_error`:

====  =============================================================================
code  meaning
====  =============================================================================
0     done (``estimate --project``: the call fits the budget)
1     ``estimate --project``: the call would not fit the budget
2     bad input or environment: a malformed month or amount, an unknown format or
      model, an unreadable or unwritable file, a database that cannot be opened.
      One line on stderr, never a traceback.
70    an internal error (a bug): one line; ``LEDGER_DEBUG=1`` shows the traceback
130   interrupted
141   the reader of standard output went away (``ledger usage | head``); quiet
====  =============================================================================
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any, NoReturn

import click

from .. import __version__
from ..errors import (
    BudgetExceeded,
    LedgerError,
    LedgerUnavailable,
)
from ..render.safe import terminal_text
from .options import CliState

EXIT_NO = 1
EXIT_INPUT = 2
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


class CliError(click.ClickException):
    """Bad input or environment: one line on stderr, exit code 2."""

    exit_code = EXIT_INPUT

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))

    def show(self, file: Any = None) -> None:
        click.echo(terminal_text(f"Error: {self.format_message()}"), err=True)


class RefusedError(CliError):
    """A budget says no: exit code 1."""

    exit_code = EXIT_NO


class InternalError(CliError):
    """A bug: exit code 70."""

    exit_code = EXIT_INTERNAL


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else "unknown error"


def cli_error(exc: BaseException) -> CliError:
    """The one place where exceptions become messages and exit codes."""
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, BudgetExceeded):
        return RefusedError(str(exc))
    if isinstance(exc, LedgerUnavailable):
        return CliError(str(exc) if exc.opening else
                        f"cannot reach the ledger database: {exc.reason}")
    if isinstance(exc, LedgerError):
        return CliError(str(exc))
    if isinstance(exc, sa_exc.NoSuchModuleError):
        return CliError(f"unsupported database URL: {exc}")
    if isinstance(exc, sa_exc.ArgumentError):
        return CliError(f"invalid database URL: {exc} (e.g. sqlite:///ledger.db or "
                        "postgresql://user@host/db)")
    if isinstance(exc, sa_exc.DBAPIError):
        reason = exc.orig if exc.orig is not None else exc
        return CliError(f"cannot open the ledger database: {_one_line(str(reason))}")
    if isinstance(exc, sa_exc.SQLAlchemyError):
        return CliError(f"database error: {exc}")
    if isinstance(exc, ModuleNotFoundError) and not (exc.name or "").startswith("ledger"):
        if (exc.name or "").startswith("psycopg"):
            return CliError("PostgreSQL needs the postgres extra: "
                            "pip install 'runapi-ledger[postgres]'")
        return CliError(f"the database driver is not installed ({exc}); the ledger runs on "
                        "SQLite and PostgreSQL")
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return CliError(f"{where}{exc.strerror or exc}")
    if isinstance(exc, (ValueError, UnicodeError)):
        return CliError(str(exc))
    if os.environ.get("LEDGER_DEBUG"):
        traceback.print_exception(exc, file=sys.stderr)
    return InternalError(f"internal error: {type(exc).__name__}: {exc} "
                         "(set LEDGER_DEBUG=1 to see the traceback)")


class LedgerGroup(click.Group):
    """The top-level group: one-line usage errors and the error translation above."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            raise click.Abort() from None
        except BrokenPipeError:  # the reader went away (`ledger usage | head`): stop quietly
            _silence_stdout()
            raise click.exceptions.Exit(EXIT_BROKEN_PIPE) from None
        except Exception as exc:
            raise cli_error(exc) from exc

    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name or "ledger", complete_var,
                              standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(terminal_text(f"Error: {_one_line(exc.format_message())}{hint}"), err=True)
            _exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            _exit(exc.exit_code)
        except click.Abort:
            click.echo("Interrupted.", err=True)
            _exit(EXIT_INTERRUPTED)
        _exit(rv if isinstance(rv, int) else 0)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (e.g. under CliRunner)
        pass


def _exit(code: int) -> NoReturn:
    sys.exit(code)


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group("ledger", cls=LedgerGroup, context_settings=CONTEXT)
@click.option("--db", "db", metavar="URL", envvar="LEDGER_DATABASE_URL",
              help="The ledger database (default: $LEDGER_DATABASE_URL, else "
                   "sqlite:///ledger.db in the current directory).")
@click.version_option(__version__, "--version", prog_name="ledger",
                      message="%(prog)s %(version)s")
@click.pass_context
def main(ctx: click.Context, db: str | None) -> None:
    """Cost ledger for RunAPI calls: prices, budgets, pre-flight estimates, usage, budget
    reports and monthly invoices.

    Exit codes: 0 done; 1 "no" (estimate --project: does not fit); 2 bad input or a
    database that cannot be opened (one line on stderr); 70 internal error.

    \b
    Example:
      ledger --db sqlite:///usage.db budget set acme 50.00
      ledger budget report --month 2026-11
      ledger invoice acme --month 2026-11 --format pdf --output acme-2026-11.pdf
    """
    state = ctx.ensure_object(CliState)
    if db:
        state.db = db
    ctx.call_on_close(state.close)


def _register() -> None:
    from .alerts import alerts
    from .budget import budget
    from .db import db
    from .estimate import estimate
    from .invoice import invoice
    from .key import key
    from .parties import customer, issuer
    from .price import price
    from .replay import replay
    from .serve import serve
    from .usage import usage

    for command in (db, price, budget, alerts, estimate, usage, invoice, issuer, customer,
                    replay, key, serve):
        main.add_command(command)


_register()

__all__ = ["CliError", "CliState", "cli_error", "main"]
