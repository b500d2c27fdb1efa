"""A short soak (issue 5, "soak"): the same code as ``scripts/soak.py --minutes N``, for seconds.

A mixed workload (sync and async clients of httpx and httpx2, streamed and not, and
``metered_call``; server errors, error events, cut streams, missing usage, malformed bodies;
refusals by a hard budget; price changes; the month boundary crossed half-way on a manual
clock), then every call checked against the ledger and the books audited.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.common import Figures
from tests.harness.soak import soak


def assert_soaked(figures: Figures) -> None:
    assert figures.problems == []
    assert (figures.usage_lost, figures.charged_twice, figures.unresolved_holds) == (0, 0, 0)
    assert figures.overspend == 0
    kinds = figures.extra["by_kind"]
    # Every branch of the workload really happened.
    assert figures.refused > 0 and figures.failed > 0
    assert kinds["ok-exact"] > 0 and kinds["ok-estimated"] > 0 and kinds["cancelled"] > 0
    assert figures.extra["price_changes"] > 0


@pytest.mark.timeout(300)
def test_short_soak_on_sqlite(sqlite_url: str, tmp_path: Path) -> None:
    """15 s of mixed traffic over a month boundary on SQLite: every call booked exactly."""
    figures = soak(sqlite_url, 15, spool_path=tmp_path / "soak.spool")
    assert_soaked(figures)
    assert figures.calls > 500


@pytest.mark.timeout(300)
def test_short_soak_on_postgres(pg_url: str, tmp_path: Path) -> None:
    """8 s of the same mixed traffic on PostgreSQL."""
    figures = soak(pg_url, 8, spool_path=tmp_path / "soak.spool")
    assert_soaked(figures)
    assert figures.calls > 200
