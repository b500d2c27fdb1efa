"""Every command documents itself: help (-h and --help) with an example, no database needed."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from ledger.cli import main
from ledger.cli.options import CliState

NO_DB = "sqlite:////nonexistent/never/opened.db"


def command_paths(group: click.Group = main, prefix: tuple[str, ...] = ()
                  ) -> Iterator[tuple[str, ...]]:
    yield prefix
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from command_paths(command, (*prefix, name))
        else:
            yield (*prefix, name)


PATHS = list(command_paths())


def test_the_contract_commands_exist() -> None:
    names = {" ".join(p) for p in PATHS}
    assert {"db upgrade", "price set", "price list", "budget set", "budget list",
            "budget report", "budget remove", "alerts list", "alerts deliver", "estimate",
            "invoice", "usage", "replay"} <= names


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "ledger")
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help_with_an_example(path: tuple[str, ...], flag: str) -> None:
    result = CliRunner().invoke(main, [*path, flag], obj=CliState(db=NO_DB))
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert out.startswith("Usage: ledger")
    assert "Example:" in out
    example = out.split("Example:", 1)[1]
    assert "ledger " in example  # the example shows a real command line
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group)
        found = command.get_command(click.Context(command), name)
        assert found is not None
        command = found
    for param in command.params:  # every option is explained
        if isinstance(param, click.Option) and param.name not in ("help", "version"):
            assert param.help, f"{' '.join(path)} {param.opts} has no help text"


def test_format_option_is_shared_and_documented() -> None:
    result = CliRunner().invoke(main, ["invoice", "--help"])
    assert "table|json|csv|html|pdf" in result.stdout
    result = CliRunner().invoke(main, ["budget", "report", "--help"])
    assert "table|json|csv|html" in result.stdout
