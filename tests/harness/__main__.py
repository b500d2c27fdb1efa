"""The crash child's entry point: ``python -m tests.harness crash-child '<json spec>'``, run
from the repository root (or with it on ``PYTHONPATH``) and killed wherever ``LEDGER_FAULT``
says (see :func:`tests.harness.crash.crash_child`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from .crash import crash_child


def main(argv: Sequence[str]) -> int:
    if len(argv) == 2 and argv[0] == "crash-child":
        crash_child(json.loads(argv[1]))
        return 0
    print("usage: python -m tests.harness crash-child '<json spec>'", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
