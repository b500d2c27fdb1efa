"""Named fault points, for crash tests: the process kills itself (SIGKILL) at a chosen step.

Armed only by the environment variable ``LEDGER_FAULT`` (read once at import), e.g.
``LEDGER_FAULT=settle:before-commit``; unarmed, a fault point is one string comparison.

Points in the call path, in order:
``call:before-hold``, ``hold:before-commit``, ``call:after-hold``, ``call:after-response``,
``settle:before-commit``, ``settle:after-commit``.
"""

from __future__ import annotations

import os
import signal

ARMED = os.environ.get("LEDGER_FAULT") or None
POINTS = (
    "call:before-hold",
    "hold:before-commit",
    "call:after-hold",
    "call:after-response",
    "settle:before-commit",
    "settle:after-commit",
)


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL if ``LEDGER_FAULT`` names this point."""
    if ARMED is not None and name == ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
