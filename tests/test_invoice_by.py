"""Issue 11: invoice lines split per end user or tag (``by=``, ``--by``), the total unchanged."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from click.testing import CliRunner

from ledger import InvalidInput, Ledger, ManualClock
from ledger.cli import main
from ledger.cli.options import CliState
from ledger.invoice import InvoiceLine
from ledger.records import Attribution, Outcome

NOV = datetime(2026, 11, 1, tzinfo=UTC)
LATER = datetime(2027, 1, 5, tzinfo=UTC)


def at(day: int) -> datetime:
    return NOV + timedelta(days=day - 1, hours=12)


def call(book: Ledger, model: str, prompt: int, day: int, user: str | None = None,
         tags: dict[str, str] | None = None, project: str = "acme") -> None:
    """Record a call attributed to an end user and tags (the store's attribution)."""
    book.store.record(project, model, Outcome("ok", prompt, 0, 0), at(day), book.now(), None,
                      Attribution.of(user=user, tags=tags))


@pytest.fixture
def attributed(any_book: Ledger, clock: ManualClock) -> Ledger:
    """Model "m" at $0.010 per 1K: alice 0.005, bob 0.005, nobody 0.0025 (the unsplit line
    0.0125 rounds to 0.01); model "n" at $0.030 per 1K: alice 0.015, bob (prod) 0.0075 (the
    line 0.0225 rounds to 0.02)."""
    any_book.set_price("m", Decimal("0.010"), effective_from=NOV)
    any_book.set_price("n", Decimal("0.030"), effective_from=NOV)
    call(any_book, "m", 500, 2, "alice", {"env": "prod", "team": "a"})
    call(any_book, "m", 500, 3, "bob", {"env": "dev"})
    call(any_book, "m", 250, 4)
    call(any_book, "n", 500, 5, "alice", {"env": "prod", "team": "a"})
    call(any_book, "n", 250, 6, "bob", {"env": "prod"})
    clock.set(LATER)
    return any_book


def by_model(lines: Iterable[InvoiceLine]) -> dict[str, Decimal]:
    """Each model's billed amount, over all its lines."""
    sums: dict[str, Decimal] = defaultdict(Decimal)
    for line in lines:
        sums[line.model] += line.amount
    return dict(sums)


def test_lines_split_per_end_user_with_the_total_unchanged(attributed: Ledger) -> None:
    """One line per end user, model and price period, each with its own calls and exact
    amount; the line's cents are shared out (largest remainder) so that each model's split
    lines add up to its unsplit line, and subtotal, tax and total are those of the invoice."""
    whole = attributed.invoice("acme", "2026-11")
    split = attributed.invoice("acme", "2026-11", by="user")
    assert [(ln.group, ln.model, ln.calls, ln.exact_amount, ln.amount) for ln in split.lines] == [
        ("alice", "m", 1, Decimal("0.005"), Decimal("0.01")),
        ("alice", "n", 1, Decimal("0.015"), Decimal("0.01")),     # 2 cents: 1.33 and 0.67
        ("bob", "m", 1, Decimal("0.005"), Decimal("0.00")),
        ("bob", "n", 1, Decimal("0.0075"), Decimal("0.01")),
        (None, "m", 1, Decimal("0.0025"), Decimal("0.00")),
    ]
    assert by_model(split.lines) == by_model(whole.lines) == {"m": Decimal("0.01"),
                                                             "n": Decimal("0.02")}
    assert (split.subtotal, split.tax, split.total, split.number) == (
        whole.subtotal, whole.tax, whole.total, whole.number)
    assert split.total == sum(ln.amount for ln in split.lines)
    assert split.by == "user" and whole.by is None
    # the split of an issued invoice is frozen with it: late usage does not change it
    call(attributed, "m", 5000, 20, "carol")
    assert attributed.invoice("acme", "2026-11", by="user") == split
    assert attributed.invoice("acme", "2026-11") == whole


def test_lines_split_per_tag_or_per_value_of_one_tag(attributed: Ledger) -> None:
    """``by="tag"``: one group per set of tags a call carries (each call in one group, so
    nothing counts twice); ``by="tag:env"``: one group per value of that tag."""
    whole = attributed.invoice("acme", "2026-11", draft=True)
    tags = attributed.invoice("acme", "2026-11", draft=True, by="tag")
    assert [(ln.group, ln.model, ln.exact_amount) for ln in tags.lines] == [
        ("env=dev", "m", Decimal("0.005")),
        ("env=prod", "n", Decimal("0.0075")),
        ("env=prod,team=a", "m", Decimal("0.005")),
        ("env=prod,team=a", "n", Decimal("0.015")),
        (None, "m", Decimal("0.0025")),
    ]
    env = attributed.invoice("acme", "2026-11", draft=True, by="tag:env")
    assert [(ln.group, ln.model, ln.exact_amount) for ln in env.lines] == [
        ("env=dev", "m", Decimal("0.005")),
        ("env=prod", "m", Decimal("0.005")),
        ("env=prod", "n", Decimal("0.0225")),
        (None, "m", Decimal("0.0025")),
    ]
    for inv in (tags, env):
        assert by_model(inv.lines) == by_model(whole.lines)
        assert (inv.subtotal, inv.tax, inv.total) == (whole.subtotal, whole.tax, whole.total)
    with pytest.raises(InvalidInput, match="user, tag or tag:KEY"):
        attributed.invoice("acme", "2026-11", draft=True, by="model")


def test_cli_by_user_and_tag(attributed: Ledger, any_url: str, clock: ManualClock) -> None:
    """``ledger invoice PROJECT --month M --by user|tag``: the lines grouped, named in every
    format, the total unchanged; an unknown grouping is one line, exit 2."""
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(main, list(args), obj=CliState(db=any_url, clock=clock))
        return result.exit_code, result.stdout, result.stderr

    code, out, _ = run("invoice", "acme", "--month", "2026-11", "--format", "json")
    total = json.loads(out)["total"]
    code, out, err = run("invoice", "acme", "--month", "2026-11", "--by", "user", "--format",
                         "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["by"] == "user" and data["total"] == total
    assert [ln["group"] for ln in data["lines"]] == ["alice", "alice", "bob", "bob", None]
    code, out, err = run("invoice", "acme", "--month", "2026-11", "--by", "tag",
                         "--format", "html")
    assert code == 0 and "env=prod,team=a" in out and "No tags" in out, err
    code, out, err = run("invoice", "acme", "--month", "2026-11", "--by", "team")
    assert code == 2 and out == "" and "user, tag or tag:KEY" in err
