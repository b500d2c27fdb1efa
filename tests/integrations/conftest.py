"""Fixtures for the framework recipes (docs/INTEGRATIONS.md): run only by scripts/test, in
the separate ``.venv-integrations`` (the frameworks pin openai<3). The main suite does not
collect this directory (``norecursedirs`` in pyproject.toml). The fixtures of tests/conftest.py
(``book``, ``sim``, ``ledger_events``...) apply here too."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:  # every recipe runs against the loopback simulator: bound it
        item.add_marker(pytest.mark.timeout(60))
