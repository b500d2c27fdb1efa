"""A metered call killed with SIGKILL at every step (issue 5, "crash at every step").

Each case runs one real metered call (through the transport or ``metered_call``, against the
loopback simulator) in a child process started with ``LEDGER_FAULT=<point>``; the process
kills itself there. A restarted ledger (a new engine on the same database, its clock past the
hold TTL) must then find: settled usage kept, nothing charged twice, every hold settled or
expired, totals equal to the events, and the project open for its next call. The full run
(every driver, both backends) is ``scripts/reliability.py --only crash``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.faults import POINTS
from tests.harness.crash import NO_FAULT, CrashCase, crash_suite

#: Where each point leaves the crashed call's hold once the restarted ledger ran expiry.
HOLD_AFTER = {
    "call:before-hold": None,
    "hold:before-commit": None,      # the hold's transaction died with the process
    "call:after-hold": "expired",
    "call:after-response": "expired",
    "settle:before-commit": "expired",  # the settle's transaction died: the hold stays pending
    "settle:after-commit": "posted",
    NO_FAULT: "posted",
}


def by_point(cases: list[CrashCase], driver: str) -> dict[str, CrashCase]:
    return {c.point: c for c in cases if c.driver == driver}


def check_suite(url: str, tmp_path: Path, drivers: tuple[str, ...]) -> None:
    figures, cases = crash_suite(url, tmp_path, drivers=drivers)
    assert figures.problems == []
    assert (figures.usage_lost, figures.charged_twice, figures.unresolved_holds) == (0, 0, 0)
    for driver in drivers:
        seen = by_point(cases, driver)
        assert set(seen) == {*POINTS, NO_FAULT}
        for point, case in seen.items():
            assert case.killed == (point != NO_FAULT), (driver, point)
            assert case.hold_state == HOLD_AFTER[point], (driver, point)
            assert case.events == (1 if HOLD_AFTER[point] == "posted" else 0), (driver, point)
            assert case.follow_up_admitted, (driver, point)
        # A dead call's hold counted until its TTL, then stopped blocking the project.
        assert [p for p, c in seen.items() if c.blocked_before_ttl] == [
            "call:after-hold", "call:after-response", "settle:before-commit"]
    replays = by_point(cases, "replay")
    assert set(replays) == {"settle:before-commit", "settle:after-commit"}
    assert all(c.killed and c.events == 3 and c.hold_state == "posted" for c in replays.values())


class TestCrashAtEveryStep:
    @pytest.mark.timeout(300)
    def test_sqlite_sync_and_async_calls_killed_at_every_point(self, sqlite_url: str,
                                                               tmp_path: Path) -> None:
        """SQLite: sync httpx and async httpx2 streaming calls survive a kill at each point."""
        check_suite(sqlite_url, tmp_path, ("openai", "anthropic-async-stream"))

    @pytest.mark.timeout(300)
    def test_postgres_stream_and_metered_call_killed_at_every_point(self, pg_url: str,
                                                                    tmp_path: Path) -> None:
        """PostgreSQL: a streamed call and a ``metered_call`` block survive a kill anywhere."""
        check_suite(pg_url, tmp_path, ("openai-stream", "metered-call"))


class TestFaultPoints:
    def test_every_point_of_the_call_path_is_armed_somewhere(self) -> None:
        """Each documented fault point is called from the ledger's code."""
        root = Path(__file__).resolve().parent.parent / "ledger"
        code = "\n".join(p.read_text() for p in root.rglob("*.py") if p.name != "faults.py")
        for point in POINTS:
            assert f'fault_point("{point}")' in code, point

    def test_an_armed_point_kills_only_when_reached(self, tmp_path: Path) -> None:
        """LEDGER_FAULT kills the process at its point with SIGKILL, and nowhere else."""
        script = ("from ledger.faults import fault_point\n"
                  "fault_point('call:after-hold')\nprint('passed', flush=True)\n"
                  "fault_point('settle:after-commit')\nprint('not reached')\n")
        env = {**os.environ, "LEDGER_FAULT": "settle:after-commit"}
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                              text=True, timeout=60, check=False)
        assert proc.returncode == -9
        assert proc.stdout == "passed\n"
