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
* A cap sent as null (the SDKs' ``max_tokens=None``) is sent as the held default cap even with
  ``send_default_cap=False``: zero (issue 9 item 2).
* Calls moved to the raced project by ``X-Ledger-Project`` (a client allowed to bill it), Chat
  Completions and Responses mixed: zero, and every header naming a project the client is not
  allowed is refused, never sent (issue 9 items 1, 3).
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


class TestRacesOfIssue9:
    """Null caps, project headers and the Responses API under the same race (SQLite and
    PostgreSQL)."""

    @pytest.mark.timeout(600)
    def test_null_caps_never_overspend_even_with_send_default_cap_off(
            self, any_url: str, tmp_path: Path) -> None:
        """Issue 9 item 2: "max_tokens": null with send_default_cap=False, replies of 2 × the
        cap: the held cap is what is sent, so overspend is exactly zero."""
        figures = race_suite(any_url, with_max_tokens=False, send_default_cap=False,
                             null_caps=True, calls=CALLS, spool_dir=tmp_path)
        assert_exact_books(figures)
        assert figures.extra["overspend_bound"] == 0 and figures.overspend == 0

    @pytest.mark.timeout(600)
    def test_calls_moved_by_the_project_header_race_on_that_budget(
            self, any_url: str, tmp_path: Path) -> None:
        """Issue 9 items 1, 3: Chat Completions and Responses calls billed to the raced project
        through X-Ledger-Project never overspend it; headers naming a project the client is not
        allowed are refused (400 project_not_allowed) and never sent."""
        figures = race_suite(any_url, with_max_tokens=True, via_header=True,
                             shapes=("openai", "responses"), calls=CALLS, spool_dir=tmp_path)
        assert figures.problems == []
        assert figures.extra["bad_headers_refused"] > 0
        assert figures.calls == 4 * 8 * CALLS
        assert figures.refused > 0 and figures.admitted > 0 and figures.failed == 0
        assert (figures.usage_lost, figures.charged_twice, figures.unresolved_holds) == (0, 0, 0)
        assert figures.overspend == 0
