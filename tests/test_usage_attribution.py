"""Usage rows carry their end user and tags (issue 10): ``book.usage(user=, tag=)`` and
``ledger usage --user U --tag k=v``, in every output format."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable

import pytest
from click.testing import CliRunner, Result

from ledger import Ledger, ManualClock
from ledger.cli import main
from ledger.cli.options import CliState
from ledger.errors import InvalidInput

MODEL = "kimi-k2.5"
Run = Callable[..., Result]


def fill(book: Ledger) -> None:
    book.record("acme", MODEL, prompt_tokens=1, completion_tokens=1, user="alice",
                tags={"feature": "search", "env": "prod"})
    book.record("acme", MODEL, prompt_tokens=2, completion_tokens=1, user="bob",
                tags={"feature": "searchx"})
    book.record("acme", MODEL, prompt_tokens=3, completion_tokens=1, tags={"xfeature": "search"})
    book.record("acme", MODEL, prompt_tokens=4, completion_tokens=1, user="alice")
    book.record("beta", MODEL, prompt_tokens=5, completion_tokens=1, tags={"k": "abc"})
    book.record("beta", MODEL, prompt_tokens=6, completion_tokens=1, tags={"k": "a_c%"})


@pytest.fixture
def run(sqlite_url: str, clock: ManualClock) -> Run:
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(main, list(args), obj=CliState(db=sqlite_url, clock=clock))

    return invoke


class TestUsageRows:
    def test_rows_carry_user_and_tags(self, any_book: Ledger) -> None:
        """Each row says its user and its tags (sorted "k=v,..."), None when it has none."""
        fill(any_book)
        rows = list(any_book.usage(project="acme"))
        assert [(r.user, r.tags) for r in rows] == [
            ("alice", "env=prod,feature=search"), ("bob", "feature=searchx"),
            (None, "xfeature=search"), ("alice", None)]
        assert rows[0].to_dict()["user"] == "alice"

    def test_filter_by_user_and_exact_tag(self, any_book: Ledger) -> None:
        """--user and --tag match exactly: feature=search is not feature=searchx nor
        xfeature=search; LIKE wildcards in a tag are literal."""
        fill(any_book)
        assert [r.prompt_tokens for r in any_book.usage(user="alice")] == [1, 4]
        assert [r.prompt_tokens for r in any_book.usage(tag="feature=search")] == [1]
        assert [r.prompt_tokens for r in any_book.usage(tag="env=prod", user="alice")] == [1]
        assert [r.prompt_tokens for r in any_book.usage(tag="k=a_c%")] == [6]
        assert [r.prompt_tokens for r in any_book.usage(tag="k=a%")] == []
        assert list(any_book.usage(user="nobody")) == []

    @pytest.mark.parametrize("tag", ["feature", "a=1,b=2", "=x", ""])
    def test_bad_tag_filter(self, book: Ledger, tag: str) -> None:
        """A tag filter is one key=value."""
        with pytest.raises(InvalidInput):
            book.usage(tag=tag)


class TestUsageCli:
    def test_csv_and_json_carry_user_and_tags(self, book: Ledger, run: Run) -> None:
        """csv and json rows have user and tags columns; the filters apply."""
        fill(book)
        out = run("usage", "--user", "alice", "--tag", "feature=search", "--format", "csv")
        assert out.exit_code == 0, out.output
        rows = list(csv.DictReader(io.StringIO(out.stdout)))
        assert [(r["user"], r["tags"]) for r in rows] == [("alice", "env=prod,feature=search")]
        out = run("usage", "--project", "acme", "--format", "json")
        assert [(r["user"], r["tags"]) for r in json.loads(out.stdout)][-1] == ("alice", None)

    def test_table_shows_user_and_tags(self, book: Ledger, run: Run) -> None:
        """The table gets User and Tags columns when some call carries them."""
        fill(book)
        out = run("usage", "--project", "acme")
        assert out.exit_code == 0 and "User" in out.stdout and "Tags" in out.stdout
        assert "alice" in out.stdout and "feature=search" in out.stdout

    def test_table_unchanged_without_attribution(self, book: Ledger, run: Run) -> None:
        """Calls with neither user nor tags are listed without those columns."""
        book.record("acme", MODEL, prompt_tokens=1, completion_tokens=1)
        out = run("usage")
        assert out.exit_code == 0 and "User" not in out.stdout and "Tags" not in out.stdout

    def test_bad_tag_is_a_usage_error(self, book: Ledger, run: Run) -> None:
        """--tag without '=' exits 2 with one line, no traceback."""
        out = run("usage", "--tag", "feature")
        assert out.exit_code == 2 and "Traceback" not in out.stderr
        assert "key=value" in out.stderr
