"""4 processes × 8 threads of metered calls against one hard budget (issue 5, "races").

Unlike ``tests/test_races.py`` (which races ``hold``/``settle`` directly), every call here goes
through the real ``MeteredTransport`` to the loopback simulator, half of them streamed, and the
simulator answers replies of twice the default cap, cut at the ``max_tokens`` it receives.

* With ``max_tokens`` the hold covers the reply: overspend is exactly zero.
* Without it the ledger holds the default cap (``Ledger(default_max_tokens=)``, 4096) and sends
  that cap with the call, so again zero.
* With ``send_default_cap=False`` the call goes uncapped and each call in flight can overshoot
  its hold by (reply − default cap): overspend ≤ 32 × 4096 tokens × price, reported by
  ``scripts/reliability.py --only races``.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tests.harness.common import Figures
from tests.harness.races import race_suite

CALLS = 4  # per thread: 4 × 8 × 4 = 128 calls per run


def assert_exact_books(figures: Figures) -> None:
    assert figures.problems == []
    assert figures.calls == 4 * 8 * CALLS
    assert figures.refused > 0 and figures.admitted > 0  # the budget was contended
    assert figures.failed == 0
    assert (figures.usage_lost, figures.charged_twice, figures.unresolved_holds) == (0, 0, 0)


class TestHardBudgetRace:
    """On SQLite and on PostgreSQL (``any_url``)."""

    @pytest.mark.timeout(600)
    def test_with_max_tokens_never_overspends(self, any_url: str, tmp_path: Path) -> None:
        """Calls that set max_tokens: settled spend never passes the hard limit, not by 1e-10."""
        figures = race_suite(any_url, with_max_tokens=True, calls=CALLS, spool_dir=tmp_path)
        assert_exact_books(figures)
        assert figures.overspend == 0
        assert figures.extra["spent"] <= figures.extra["limit"]

    @pytest.mark.timeout(600)
    def test_without_max_tokens_the_default_cap_is_sent_and_never_overspent(
            self, any_url: str, tmp_path: Path) -> None:
        """No max_tokens: the ledger sends its default cap, so long replies cannot overspend."""
        figures = race_suite(any_url, with_max_tokens=False, calls=CALLS, spool_dir=tmp_path)
        assert_exact_books(figures)
        assert figures.overspend == 0

    @pytest.mark.timeout(600)
    def test_uncapped_calls_overspend_at_most_one_default_cap_per_call_in_flight(
            self, any_url: str, tmp_path: Path) -> None:
        """send_default_cap=False, replies of 2 × the cap: overspend ≤ 32 × one default cap."""
        figures = race_suite(any_url, with_max_tokens=False, send_default_cap=False,
                             calls=CALLS, spool_dir=tmp_path)
        assert_exact_books(figures)
        bound = 4 * 8 * 4096 * Decimal("0.020") / 1000
        assert figures.extra["overspend_bound"] == bound
        assert 0 <= figures.overspend <= bound
